"""A UART loopback SoC with the pins of ``AcceleratorSoC`` (``rx``, ``tx``, ``busy``).

Used to test the simulated board's C++ bridge and the board flow on something that builds in
seconds: every byte received on ``rx`` goes back out on ``tx``.

>>> EchoSoC(clocks_per_bit=4).config
{'kind': 'echo-soc', 'clocks_per_bit': 4}
"""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect
from mixpe.hw.uart import UARTRx, UARTTx

__all__ = ["EchoSoC"]


class EchoSoC(wiring.Component):
    """UART loopback: ``rx`` → receive FIFO → ``tx``.

    Parameters
    ----------
    clocks_per_bit : int
        UART divisor (clocks per bit), at least 4.

    Members
    -------
    rx : In(1, init=1)
        Serial input (idle high).
    tx : Out(1, init=1)
        Serial output (idle high).
    busy : Out(1)
        High while a received byte waits or a byte is being sent.
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)

    def __init__(self, *, clocks_per_bit: int):
        if isinstance(clocks_per_bit, bool) or not isinstance(clocks_per_bit, int) or \
                clocks_per_bit < 4:
            raise ValueError(f"clocks_per_bit must be an integer >= 4, not {clocks_per_bit!r}")
        self._cpb = clocks_per_bit
        self.config = {"kind": "echo-soc", "clocks_per_bit": clocks_per_bit}
        super().__init__()

    @property
    def clocks_per_bit(self) -> int:
        return self._cpb

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UARTRx(divisor=self._cpb)
        m.submodules.utx = utx = UARTTx(divisor=self._cpb)
        connect(m, urx.o_stream, utx.i_stream)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx),
                     self.busy.eq(utx.busy | urx.o_stream.valid)]
        return m
