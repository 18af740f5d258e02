"""Exact multiplier: the hardware twin of :class:`mixpe.sw.mult.exact.ExactMultiplier`.

The error-free baseline is written behaviourally (``a * b``), which *is* the exact product;
Yosys maps it to soft logic or to a DSP block. Approximate families build their partial
products bit by bit instead.
"""

from __future__ import annotations

from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from mixpe.sw.mult.exact import ExactMultiplier as _SwExact

from . import register

__all__ = ["ExactMultiplier"]


@register("exact")
class ExactMultiplier(wiring.Component):
    """Exact ``n``×``nb`` combinational multiplier.

    Parameters
    ----------
    n : int
        Width of operand ``a`` (activation), 1 … 32.
    nb : int
        Width of operand ``b`` (weight); ``0`` means ``n``.
    sa, sb : bool
        Operand ``a`` / ``b`` is two's complement (true) or unsigned (false).

    Members
    -------
    a : In(n)
        Activation code.
    b : In(nb or n)
        Weight code.
    p : Out(signed(out_bits))
        Product, equal to ``config.mul_codes(a, b)``.

    Raises
    ------
    ValueError
        Parameters out of range (the sw config validates them).
    """

    latency = 0

    def __init__(self, *, n=8, nb=0, sa=True, sb=True):
        self._config = _SwExact(n=n, nb=nb, sa=sa, sb=sb)
        cfg = self._config
        super().__init__({
            "a": In(cfg.a_format.bits),
            "b": In(cfg.b_format.bits),
            "p": Out(signed(cfg.out_bits)),
        })

    @property
    def config(self) -> _SwExact:
        """The sw twin (validated, frozen)."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        a = self.a.as_signed() if cfg.sa else self.a
        b = self.b.as_signed() if cfg.sb else self.b
        m.d.comb += self.p.eq(a * b)
        return m
