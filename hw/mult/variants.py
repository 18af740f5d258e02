"""Run-time multiplier variants: hardware twin of ``mixpe.sw.mult.variants.VariantsMultiplier``.

Every member multiplier is built (``variant_{i}``, each from :func:`mixpe.hw.mult.create`) on the
same operand ports, and a multiplexer picks the product of variant ``sel``::

    a, b ──┬─ variant_0 ─ p_0 ─┐
           ├─ variant_1 ─ p_1 ─┤ mux(sel) ── p        (sel ≥ last index: the last variant)
           └─ …                ┘

It is a plain combinational multiplier with one extra input, so a
:class:`~mixpe.hw.pe.ProcessingElement` hosts it unchanged (``in_sel``/``out_sel``, delayed
with its operands like ``mode``), with or without number-format decoders around it. Members
must share the latency (a pipelined member would need the others delayed; every shipped family
is combinational). A value unit's members share the operand formats (the sw twin checks); a
*code-port* unit (some member is a decoded spec ``'<core> a=<format> b=<format>'``) builds
such a member as :class:`mixpe.hw.formats.DecodedMultiplierComponent` (its own decoders and
core) and feeds every member the low bits of ``a``/``b`` of its code width, so each column of
an array can take its own number formats at run time (ANT-style per-tensor formats).

Members
    ``a: In(a_bits)``, ``b: In(b_bits)`` operand codes; ``sel: In(sel_bits)`` (``sel_bits`` =
    ``ceil(log2(len(of)))``, at least 1); ``p: Out(signed(out_bits))`` with ``out_bits`` wide
    enough for every member. ``table_inputs = {"sel": 0}``: then ``p`` is ``config.table()``.

>>> from mixpe.hw.mult import create
>>> import mixpe.hw.mult.variants  # noqa: F401
>>> unit = create("variants:of=exact|roup:p=1;r=4")
>>> sorted(unit.signature.members), unit.signature.members["sel"].shape
(['a', 'b', 'p', 'sel'], unsigned(1))
>>> from amaranth.back import rtlil
>>> "variant_1" in rtlil.convert(unit)
True
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from mixpe.sw.mult.variants import VariantsMultiplier as _SwVariants

from . import latency_of, register

__all__ = ["VariantsMultiplier"]


@register("variants")
class VariantsMultiplier(wiring.Component):
    """Several multipliers on one operand port pair, chosen by ``sel`` at run time.

    Parameters
    ----------
    of : tuple of str
        Member multiplier specs (variant ``i`` = ``of[i]``), same operand formats.

    Members
    -------
    a, b : In(a_bits), In(b_bits)
        Operand codes (shared by every member).
    sel : In(sel_bits)
        Variant index; past the last member, the last member.
    p : Out(signed(out_bits))
        Product of variant ``sel``, equal to ``config.mul_sel``.

    Raises
    ------
    ValueError
        Bad member specs (the sw config validates), a member without hardware, or members
        of different latencies.
    """

    table_inputs = {"sel": 0}

    def __init__(self, *, of=()):
        from . import create

        self._config = _SwVariants(of=of)
        cfg = self._config
        probes = [create(m) for m in cfg.members]  # built again in elaborate()
        for u in probes:
            u._MustUse__silence = True
            if hasattr(u, "_core"):  # a decoded member's own core
                u._core._MustUse__silence = True
        lat = {latency_of(u) for u in probes}
        if len(lat) != 1:
            self._MustUse__silence = True
            raise ValueError(f"variants: members have different latencies {sorted(lat)}; "
                             "allowed: equal latencies")
        self.latency = lat.pop()
        for u in probes:
            extra = [n for n, mb in u.signature.members.items()
                     if n not in ("a", "b") and mb.flow == In]
            if extra:
                self._MustUse__silence = True
                raise ValueError(f"variants: member {u.config.spec} has extra inputs {extra}; "
                                 "allowed: none")
        super().__init__({
            "a": In(cfg.a_format.bits),
            "b": In(cfg.b_format.bits),
            "sel": In(unsigned(max(1, cfg.sel_bits))),
            "p": Out(signed(cfg.out_bits)),
        })

    @property
    def config(self) -> _SwVariants:
        """The sw twin (validated, frozen)."""
        return self._config

    def elaborate(self, platform):
        from . import create

        m = Module()
        members = [create(spec) for spec in self._config.members]
        sel = self.sel
        for i in range(self.latency):  # align sel with the members' products
            reg = Signal.like(self.sel, name=f"sel_d{i}")
            m.d.sync += reg.eq(sel)
            sel = reg
        last = len(members) - 1
        with m.Switch(sel):
            for i, unit in enumerate(members):
                m.submodules[f"variant_{i}"] = unit
                # code-width rule: a member reads the low bits of its own code width
                m.d.comb += [unit.a.eq(self.a[:len(unit.a)]), unit.b.eq(self.b[:len(unit.b)])]
                if i < last:
                    with m.Case(i):
                        m.d.comb += self.p.eq(unit.p)
                else:
                    with m.Default():
                        m.d.comb += self.p.eq(unit.p)
        return m
