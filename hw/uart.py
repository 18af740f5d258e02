"""8N1 UART receiver and transmitter with stream interfaces.

The host link (``hw/link.py``) talks to the host through these two components; the baud rate
is a build parameter given as ``divisor`` = clock cycles per bit (``clk_hz // baud``, e.g.
48 MHz / 3 Mbaud → 16; the simulated board uses ``HostConfig.sim_clocks_per_bit``).

Frame format on the line: idle high, one start bit (0), 8 data bits LSB first, one stop bit
(1). :class:`UARTRx` synchronizes ``rx`` with two flip-flops, finds the start bit's falling
edge, samples each bit in its middle (``divisor // 2`` cycles after the edge, then every
``divisor`` cycles) and returns to idle right after sampling the stop bit's middle, so it
re-synchronizes on the next falling edge even when the sender's clock runs up to ~4 % fast.
A byte whose stop bit is 0 is dropped (``frame_error`` pulses); a byte that finds the
receive FIFO full is dropped (``overrun`` pulses). The framed protocol above detects both
(CRC-32, lengths, timeouts).
"""


from amaranth.hdl import C, Cat, Module, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

__all__ = ["UARTRx", "UARTTx", "MIN_DIVISOR", "MAX_DIVISOR", "divisor_for"]

#: Smallest clocks-per-bit (the receiver needs a start-bit middle and a few cycles per bit).
MIN_DIVISOR = 4
#: Largest clocks-per-bit (e.g. 9600 baud at 600 MHz).
MAX_DIVISOR = 1 << 16


def _check_divisor(divisor) -> int:
    if isinstance(divisor, bool) or not isinstance(divisor, int) or not (
            MIN_DIVISOR <= divisor <= MAX_DIVISOR):
        raise ValueError(f"divisor (clocks per bit) must be an integer in "
                         f"[{MIN_DIVISOR}, {MAX_DIVISOR}], not {divisor!r}")
    return divisor


def divisor_for(clk_hz: int, baud: int) -> int:
    """Return the clocks-per-bit divisor for ``clk_hz`` and ``baud`` (rounded to nearest).

    Raises ``ValueError`` when the rate error exceeds 3 % or the divisor is out of range.

    >>> divisor_for(48_000_000, 3_000_000)
    16
    """
    for name, v in (("clk_hz", clk_hz), ("baud", baud)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, not {v!r}")
    div = max(1, round(clk_hz / baud))
    err = abs(clk_hz / div - baud) / baud
    if err > 0.03:
        raise ValueError(f"baud {baud} is {err:.1%} off with clk_hz {clk_hz} (divisor {div}); "
                         f"the error must be at most 3 %")
    return _check_divisor(div)


class UARTRx(wiring.Component):
    """8N1 UART receiver with a small receive FIFO.

    Parameters
    ----------
    divisor : int (keyword-only)
        Clock cycles per bit, in ``[MIN_DIVISOR, MAX_DIVISOR]``.
    fifo_depth : int (keyword-only)
        Bytes the receive FIFO holds (``SyncFIFOBuffered``), in ``[2, 4096]``; default 16.

    Members
    -------
    rx : In(1, init=1)
        The serial line (asynchronous; synchronized inside).
    o_stream : Out(stream.Signature(8))
        Received bytes, in order.
    frame_error : Out(1)
        One-cycle pulse: a byte with a 0 stop bit was dropped.
    overrun : Out(1)
        One-cycle pulse: a byte was dropped because the FIFO was full.
    """

    rx: In(1, init=1)
    o_stream: Out(stream.Signature(8))
    frame_error: Out(1)
    overrun: Out(1)

    def __init__(self, *, divisor: int, fifo_depth: int = 16):
        try:
            self._divisor = _check_divisor(divisor)
            if isinstance(fifo_depth, bool) or not isinstance(fifo_depth, int) or not (
                    2 <= fifo_depth <= 4096):
                raise ValueError(f"fifo_depth must be an integer in [2, 4096], not "
                                 f"{fifo_depth!r}")
        except Exception:
            self._MustUse__silence = True
            raise
        self._fifo_depth = fifo_depth
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    @property
    def fifo_depth(self) -> int:
        return self._fifo_depth

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=8, depth=self._fifo_depth)
        connect(m, q.r_stream, flipped(self.o_stream))

        # Two-flop synchronizer (the line idles high).
        s1 = Signal(init=1)
        s2 = Signal(init=1)
        m.d.sync += [s1.eq(self.rx), s2.eq(s1)]

        div = self._divisor
        timer = Signal(range(div + 1))
        bit = Signal(range(9))
        shreg = Signal(8)

        m.d.comb += q.w_stream.payload.eq(shreg)
        with m.FSM(name="rx_fsm"):
            with m.State("Idle"):
                with m.If(~s2):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "Start"
            with m.State("Start"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(s2):
                    m.next = "Idle"  # a glitch, not a start bit
                with m.Else():
                    m.d.sync += [timer.eq(div - 1), bit.eq(0)]
                    m.next = "Data"
            with m.State("Data"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], s2)), timer.eq(div - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "Stop"
            with m.State("Stop"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    with m.If(s2):
                        m.d.comb += q.w_stream.valid.eq(1)
                        with m.If(~q.w_stream.ready):
                            m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                    m.next = "Idle"
        return m


class UARTTx(wiring.Component):
    """8N1 UART transmitter.

    Parameters
    ----------
    divisor : int (keyword-only)
        Clock cycles per bit, in ``[MIN_DIVISOR, MAX_DIVISOR]``.

    Members
    -------
    i_stream : In(stream.Signature(8))
        Bytes to send; one is taken whenever the transmitter is idle, and the next byte's
        start bit follows the previous stop bit without a gap (line rate: 10 bits per byte).
    tx : Out(1, init=1)
        The serial line (registered).
    busy : Out(1)
        A byte is being sent.
    """

    i_stream: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, *, divisor: int):
        try:
            self._divisor = _check_divisor(divisor)
        except Exception:
            self._MustUse__silence = True
            raise
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(range(div))
        bits = Signal(range(11))  # bits left to send, including the current one
        shreg = Signal(10, init=0x3FF)

        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(bits != 0)]
        # Accept a byte when idle, or exactly when the stop bit ends (back-to-back bytes).
        last_tick = (bits == 1) & (timer == 0)
        m.d.comb += self.i_stream.ready.eq((bits == 0) | last_tick)
        with m.If(self.i_stream.valid & self.i_stream.ready):
            m.d.sync += [shreg.eq(Cat(C(0, 1), self.i_stream.payload, C(1, 1))),
                         bits.eq(10), timer.eq(div - 1)]
        with m.Elif(bits != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [shreg.eq(Cat(shreg[1:], C(1, 1))), bits.eq(bits - 1),
                             timer.eq(div - 1)]
        return m
