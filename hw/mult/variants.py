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

    def core_groups(self) -> list[tuple[int, ...]]:
        """Member indices grouped by core multiplier spec: a group of several members shares
        one core (see :meth:`elaborate`), a single member keeps its own unit."""
        groups: dict[str, list[int]] = {}
        for i, mem in enumerate(self._config.members):
            groups.setdefault(_core_of(mem).spec, []).append(i)
        return [tuple(g) for g in groups.values()]

    def elaborate(self, platform):
        from . import create

        m = Module()
        cfg = self._config
        sel_in = self.sel
        sel = self.sel
        for i in range(self.latency):  # align sel with the members' products
            reg = Signal.like(self.sel, name=f"sel_d{i}")
            m.d.sync += reg.eq(sel)
            sel = reg
        products = {}
        for group in self.core_groups():
            if len(group) == 1:
                (i,) = group
                unit = create(cfg.members[i])
                m.submodules[f"variant_{i}"] = unit
                # code-width rule: a member reads the low bits of its own code width
                m.d.comb += [unit.a.eq(self.a[:len(unit.a)]), unit.b.eq(self.b[:len(unit.b)])]
                products[i] = unit.p
            else:
                p = self._shared(m, group, sel_in)
                for i in group:
                    products[i] = p
        last = len(cfg.members) - 1
        with m.Switch(sel):
            for i in range(last + 1):
                with (m.Case(i) if i < last else m.Default()):
                    m.d.comb += self.p.eq(products[i])
        return m

    def _shared(self, m: Module, group, sel):
        """One core for the members ``group`` (same core spec): the operand codes (a plain
        member's port bits, or a decoded member's mantissas) and the shift ``e_a + e_b`` are
        multiplexed by ``sel`` *before* the core, so ``core(m_a, m_b) << (e_a + e_b)`` is
        computed once instead of once per member (e.g. int8 × int8, int8 × int4 and
        int8 × flint4 on one 8×8 multiplier, one DSP). With an ``exact`` core, an operand
        whose values all fit the core port enters as its value ``m << e`` (:func:`_preshift`),
        so no shifter follows the core (flint4 weights in [-16, 16] on an int8 port)."""
        from mixpe.hw.formats import decoder, mantissa_code

        from . import create

        cfg = self._config
        core_cfg = _core_of(cfg.members[group[0]])
        name = "shared_" + "_".join(str(i) for i in group)
        core = create(core_cfg)
        m.submodules[name] = core
        ops, e_max = [], 0
        for i in group:
            mem = cfg.members[i]
            a_code = self.a[:mem.a_format.bits]
            b_code = self.b[:mem.b_format.bits]
            if not _is_decoded(mem):
                ops.append((a_code, b_code, 0))
                continue
            sides, e_sum, e_hi = [], 0, 0
            for side, fmt, port, code in (("a", mem.a_format, core_cfg.a_format, a_code),
                                          ("b", mem.b_format, core_cfg.b_format, b_code)):
                m.submodules[f"dec_{side}_{i}"] = dec = decoder(fmt)
                m.d.comb += dec.code.eq(code)
                if _preshift(core_cfg, fmt, port):
                    # exact core and every value fits its port: multiply m << e itself
                    sides.append(mantissa_code(dec.m << dec.e, port))
                else:
                    sides.append(mantissa_code(dec.m, port))
                    e_sum = e_sum + dec.e
                    e_hi += fmt.e_max
            e_max = max(e_max, e_hi)
            ops.append((sides[0], sides[1], e_sum))
        shift = Signal(range(e_max + 1), name=f"{name}_shift")
        with m.Switch(sel):
            for j, (i, (a, b, e)) in enumerate(zip(group, ops)):
                # sel values of other groups do not matter here (their product is not taken)
                with (m.Case(i) if j < len(group) - 1 else m.Default()):
                    m.d.comb += [core.a.eq(a), core.b.eq(b), shift.eq(e)]
        for i in range(latency_of(core)):  # a pipelined core: delay the shift alike
            reg = Signal.like(shift, name=f"{name}_shift_d{i}")
            m.d.sync += reg.eq(shift)
            shift = reg
        return core.p << shift


def _is_decoded(mem) -> bool:
    from mixpe.sw.mult.decoded import DecodedMultiplier

    return isinstance(mem, DecodedMultiplier)


def _preshift(core, fmt, port) -> bool:
    """Whether a decoded operand can enter the core as its value ``m << e`` (no shifter after
    the core): the core is the ``exact`` family, where ``core(m_a << e_a, m_b) =
    core(m_a, m_b) << e_a``, and every value of ``fmt`` lies in the port's range."""
    lo, hi = port.range
    vlo, vhi = fmt.range
    return core.family == "exact" and lo <= vlo and vhi <= hi


def _core_of(mem):
    """The core multiplier of a member (itself when it decodes no formats)."""
    return mem.core if _is_decoded(mem) else mem
