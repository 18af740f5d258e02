"""The top a board (or the simulated board) instantiates: UART + frame engine + core."""

from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..sw.core_config import CoreConfig
from .core import AcceleratorCore
from .link import HostLink
from .uart import UARTRx, UARTTx, _check_divisor

__all__ = ["AcceleratorSoC"]


class AcceleratorSoC(wiring.Component):
    """The accelerator behind a UART: ``rx``/``tx`` speak the protocol of ``docs/protocol.md``.

    Structure: ``rx`` → :class:`~mixpe.hw.uart.UARTRx` (RX FIFO) →
    :class:`~mixpe.hw.link.HostLink` ⇄ :class:`~mixpe.hw.core.AcceleratorCore`;
    ``HostLink`` → :class:`~mixpe.hw.uart.UARTTx` → ``tx``. One clock domain (``sync``,
    ports ``clk``/``rst`` in Verilog); the line runs at ``clk_hz / clocks_per_bit`` baud.

    Parameters
    ----------
    config : CoreConfig
        The core; its ``hash`` is what IDENTIFY returns.
    clocks_per_bit : int (keyword-only)
        UART divisor (``HostConfig.clocks_per_bit`` on boards, ``sim_clocks_per_bit`` in
        simulation), in ``[4, 65536]``.
    core_kw : dict, optional (keyword-only)
        Extra keyword arguments of :class:`AcceleratorCore` (``requant``, ``tile_cols``, ...).
    link_kw : dict, optional (keyword-only)
        Extra keyword arguments of :class:`HostLink` (``max_payload``, ``in_words``,
        ``out_words``); ``timeout_cycles`` defaults to 256 byte times.
    rx_fifo_depth : int (keyword-only)
        Bytes of the UART receive FIFO (default 64): it holds the next frame's bytes while a
        frame executes or a response is sent.

    Members
    -------
    rx : In(1, init=1)
        UART line from the host (asynchronous, idles high).
    tx : Out(1, init=1)
        UART line to the host.
    led_running : Out(1)
        A RUN program executes.
    led_error : Out(1)
        Stretched (2**20 cycles) pulse after an error response or a UART receive error.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    led_running: Out(1)
    led_error: Out(1)

    def __init__(self, config: CoreConfig, *, clocks_per_bit: int, core_kw=None, link_kw=None,
                 rx_fifo_depth: int = 64):
        try:
            if not isinstance(config, CoreConfig):
                raise TypeError(f"config must be a CoreConfig, not {config!r}")
            self._cpb = _check_divisor(clocks_per_bit)
        except Exception:
            self._MustUse__silence = True
            raise
        self._config = config
        self._core_kw = dict(core_kw or {})
        link_kw = dict(link_kw or {})
        link_kw.setdefault("timeout_cycles", 256 * 10 * self._cpb)
        self._link_kw = link_kw
        self._rx_fifo_depth = rx_fifo_depth
        # built eagerly so that parameter errors surface here
        self.core = AcceleratorCore(config, **self._core_kw)
        self.link = HostLink(config, **link_kw)
        self.uart_rx = UARTRx(divisor=self._cpb, fifo_depth=rx_fifo_depth)
        self.uart_tx = UARTTx(divisor=self._cpb)
        super().__init__()

    @property
    def config(self) -> CoreConfig:
        return self._config

    @property
    def clocks_per_bit(self) -> int:
        return self._cpb

    def elaborate(self, platform):
        m = Module()
        core_rst = Signal()
        m.submodules.core = ResetInserter(core_rst)(self.core)
        m.submodules.link = link = self.link
        m.submodules.uart_rx = urx = self.uart_rx
        m.submodules.uart_tx = utx = self.uart_tx
        core = self.core
        connect(m, urx.o_stream, link.rx)
        connect(m, link.tx, utx.i_stream)
        connect(m, link.core_i, core.i_stream)
        connect(m, core.o_stream, link.core_o)
        m.d.comb += [
            urx.rx.eq(self.rx),
            self.tx.eq(utx.tx),
            link.rx_error.eq(urx.frame_error | urx.overrun),
            core.start.eq(link.core_start),
            link.core_busy.eq(core.busy),
            link.core_done.eq(core.done),
            core_rst.eq(link.core_rst),
            core.imem_addr.eq(link.imem_addr),
            core.imem_data.eq(link.imem_data),
            core.imem_we.eq(link.imem_we),
            self.led_running.eq(link.running),
        ]
        stretch = Signal(20)
        with m.If(link.error | link.rx_error):
            m.d.sync += stretch.eq(~0)
        with m.Elif(stretch != 0):
            m.d.sync += stretch.eq(stretch - 1)
        m.d.comb += self.led_error.eq(stretch != 0)
        return m


class _UARTHost(wiring.Component):
    """An AcceleratorSoC with a host-side UART pair: byte streams in and out (tests)."""

    def __init__(self, config: CoreConfig, *, clocks_per_bit: int, **kw):
        self.soc = AcceleratorSoC(config, clocks_per_bit=clocks_per_bit, **kw)
        self.link = self.soc.link
        self.core = self.soc.core
        self.h_tx = UARTTx(divisor=clocks_per_bit)
        self.h_rx = UARTRx(divisor=clocks_per_bit, fifo_depth=16)
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.soc = soc = self.soc
        m.submodules.h_tx = h_tx = self.h_tx
        m.submodules.h_rx = h_rx = self.h_rx
        connect(m, flipped(self.rx), h_tx.i_stream)
        connect(m, h_rx.o_stream, flipped(self.tx))
        m.d.comb += [soc.rx.eq(h_tx.tx), h_rx.rx.eq(soc.tx)]
        return m
