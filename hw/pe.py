"""Processing element: operand decoders, a multiplier, and an accumulator.

The hardware twin of :class:`mixpe.sw.pe.PEConfig` / :func:`mixpe.sw.pe.pe_mac`, built to sit
unchanged in a systolic array (Gemmini ``PE.scala``): operands and control pass through to the
neighbours *combinationally* (``out_a = in_a`` …), so a Tile chains PEs by wires and the Mesh
puts registers between tiles. The accumulator is output-stationary: it sits in the PE, a
``load`` takes ``in_d`` (for preloading a bias, or for shifting results out through a chain of
``out_c → in_d``), a ``clear`` restarts from zero.

Datapath, with the optional registers of ``pipeline``::

    in_a ─ decode_a ─┐ [pipeline ≥ 2] ┌ core(m_a, m_b) << (e_a + e_b) ─ [pipeline ≥ 1] ─ acc
    in_b ─ decode_b ─┘                                                                  │
    in_valid, in_clear, in_load, in_d, in_mode ── delayed alongside ─────────────────────┘

The decoders exist only when the config has number formats (otherwise the operand codes go to
the core as they are). Control and ``in_d`` are delayed with the operands, so a ``clear`` or
``load`` acts on the same cycle's product: in the accumulate cycle::

    base = in_d if load else (0 if clear else acc)
    acc  = overflow_policy(base + product) if valid else base       (when valid, clear or load)
    overflow = (0 if clear or load else overflow) | (valid and base + product out of range)

which is :func:`~mixpe.sw.pe.pe_mac` applied to ``base``. The result shows on ``out_c``
``latency`` cycles after the operands were presented (``1 + pipeline``, plus the core's own
latency for a pipelined core; 0 for every shipped family).
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from mixpe.sw.pe import PEConfig

from . import mult as hw_mult
from .formats import _core_extra_inputs, decoder, mantissa_code

__all__ = ["ProcessingElement", "OVERFLOW_POLICIES"]


def _wrap(total, bits):
    """Two's-complement wrap-around: keep the low ``bits``."""
    return total[:bits].as_signed()


def _fits(total, bits):
    """``total`` lies in ``[-2**(bits-1), 2**(bits-1) - 1]``: its bits from ``bits - 1`` up
    are all equal (one LUT for ``total`` one bit wider than ``bits``, instead of two
    magnitude comparators on the adder's carry chain)."""
    if len(total) <= bits:
        return Const(1, 1)
    top = total[bits - 1:]
    return (top == 0) | (top == (1 << len(top)) - 1)


def _saturate(total, bits):
    """Clamp to ``[-2**(bits-1), 2**(bits-1) - 1]`` (the sign of ``total`` picks the bound
    when it does not fit)."""
    if len(total) <= bits:
        return total
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(_fits(total, bits), total[:bits].as_signed(), Mux(total[-1], lo, hi))


#: Accumulator overflow policies (``PEConfig.overflow`` → ``f(total, bits) -> Value``).
OVERFLOW_POLICIES = {"wrap": _wrap, "saturate": _saturate}


class ProcessingElement(wiring.Component):
    """Multiply-accumulate processing element.

    Parameters (keyword-only; the fields of :class:`~mixpe.sw.pe.PEConfig`)
    ----------
    mult : str
        Multiplier spec (the core when formats are given).
    a_format, b_format : str or None
        Number-format specs of the operands (both or neither).
    acc_bits : int
        Accumulator width.
    overflow : str
        ``"wrap"`` or ``"saturate"``.
    pipeline : int
        Optional register stages, 0 … 2.

    Members
    -------
    in_a, out_a : In(a_bits), Out(a_bits)
        Activation code, and the same code passed on to the next PE in the row
        (``config.port_bits``: lane-packed ``n²/k`` bits for a composable multiplier).
    in_b, out_b : In(b_bits), Out(b_bits)
        Weight code, passed on to the next PE in the column.
    in_d : In(signed(acc_bits))
        Value the accumulator takes on ``load``.
    out_c : Out(signed(acc_bits))
        The accumulator.
    in_valid, out_valid : In(1), Out(1)
        The operand pair is valid (accumulate it); passed on.
    in_clear, out_clear : In(1), Out(1)
        Restart the accumulation from 0 (with this cycle's product when valid); passed on.
    in_load, out_load : In(1), Out(1)
        Restart the accumulation from ``in_d`` (takes precedence over clear); passed on.
    in_mode, out_mode : In(mode shape), Out(mode shape)
        Only for a core with a ``mode`` input (composable axbxp): the precision, passed to the
        core and on. Any other extra input ``x`` of the core becomes ``in_x``/``out_x`` alike.
    out_overflow : Out(1)
        Sticky: some accumulation since the last clear/load left the accumulator range.

    Raises
    ------
    ValueError
        A parameter out of range (``PEConfig`` validates; the message names it).
    """

    def __init__(self, *, mult="exact:n=8", a_format=None, b_format=None, acc_bits=32,
                 overflow="wrap", pipeline=0):
        try:
            self._config = PEConfig(mult=mult, a_format=a_format, b_format=b_format,
                                    acc_bits=acc_bits, overflow=overflow, pipeline=pipeline)
            self._core = hw_mult.create(self._config.core)
        except Exception:
            self._MustUse__silence = True  # no UnusedElaboratable warning for a rejected config
            raise
        cfg = self._config
        a_bits, b_bits = cfg.port_bits
        self._extra = _core_extra_inputs(self._core)
        members = {
            "in_a": In(a_bits),
            "out_a": Out(a_bits),
            "in_b": In(b_bits),
            "out_b": Out(b_bits),
            "in_d": In(signed(cfg.acc_bits)),
            "out_c": Out(signed(cfg.acc_bits)),
            "in_valid": In(1),
            "out_valid": Out(1),
            "in_clear": In(1),
            "out_clear": Out(1),
            "in_load": In(1),
            "out_load": Out(1),
        }
        for name, member in self._extra.items():
            members[f"in_{name}"] = In(member.shape)
            members[f"out_{name}"] = Out(member.shape)
        members["out_overflow"] = Out(1)
        super().__init__(members)

    @classmethod
    def from_config(cls, config: PEConfig) -> "ProcessingElement":
        """Build the PE of a :class:`~mixpe.sw.pe.PEConfig`."""
        if not isinstance(config, PEConfig):
            raise TypeError(f"Expected a PEConfig, not {config!r}")
        return cls(**config.to_dict())

    @property
    def config(self) -> PEConfig:
        """The frozen configuration (drives the reference and the host)."""
        return self._config

    @property
    def core_latency(self) -> int:
        """Clock cycles of the core multiplier itself (0: combinational)."""
        return hw_mult.latency_of(self._core)

    @property
    def latency(self) -> int:
        """Cycles from operands on ``in_a``/``in_b`` to their sum in ``out_c``."""
        return self._config.latency + self.core_latency

    @property
    def extra_inputs(self) -> tuple[str, ...]:
        """Names of the core's extra inputs (``("mode",)`` for composable axbxp)."""
        return tuple(self._extra)

    @property
    def table_inputs(self) -> dict:
        """Extra-input values under which the core computes its sw table (e.g. full precision)."""
        return hw_mult.table_inputs_of(self._core)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        sw = cfg.multiplier

        # systolic pass-through (combinational: the Mesh registers between tiles)
        m.d.comb += [
            self.out_a.eq(self.in_a),
            self.out_b.eq(self.in_b),
            self.out_valid.eq(self.in_valid),
            self.out_clear.eq(self.in_clear),
            self.out_load.eq(self.in_load),
        ]
        for name in self._extra:
            m.d.comb += getattr(self, f"out_{name}").eq(getattr(self, f"in_{name}"))

        # stage 0: operand decode (policy objects from the format registry)
        if cfg.formats is None:
            ops = {"a": self.in_a, "b": self.in_b}
        else:
            m.submodules.dec_a = dec_a = decoder(sw.a_format)
            m.submodules.dec_b = dec_b = decoder(sw.b_format)
            m.d.comb += [dec_a.code.eq(self.in_a), dec_b.code.eq(self.in_b)]
            ops = {"a": dec_a.m, "b": dec_b.m, "e_a": dec_a.e, "e_b": dec_b.e}
        ctrl = {"valid": self.in_valid, "clear": self.in_clear, "load": self.in_load,
                "d": self.in_d}
        extra = {name: getattr(self, f"in_{name}") for name in self._extra}

        if cfg.pipeline >= 2:
            ops = self._register(m, ops, "s0")
            ctrl = self._register(m, ctrl, "s0")
            extra = self._register(m, extra, "s0")

        # stage 1: core multiplier on the mantissas, then the exponent shift
        m.submodules.core = core = self._core
        if cfg.formats is None:
            m.d.comb += [core.a.eq(ops["a"]), core.b.eq(ops["b"])]
            product = core.p
        else:
            m.d.comb += [
                core.a.eq(mantissa_code(ops["a"], cfg.core.a_format)),
                core.b.eq(mantissa_code(ops["b"], cfg.core.b_format)),
            ]
            shift = Signal(range(sw.a_format.e_max + sw.b_format.e_max + 1))
            m.d.comb += shift.eq(ops["e_a"] + ops["e_b"])
            for i in range(self.core_latency):
                shift = self._register(m, {"shift": shift}, f"core{i}")["shift"]
            product = core.p << shift
        for name, value in extra.items():
            m.d.comb += getattr(core, name).eq(value)
        for i in range(self.core_latency):
            ctrl = self._register(m, ctrl, f"core{i}")

        p = Signal(signed(self._product_bits()), name="product")
        m.d.comb += p.eq(product)

        if cfg.pipeline >= 1:
            p = self._register(m, {"product": p}, "s1")["product"]
            ctrl = self._register(m, ctrl, "s1")

        # stage 2: accumulate
        acc = Signal(signed(cfg.acc_bits), name="acc")
        ovf = Signal(name="ovf")
        restart = ctrl["clear"] | ctrl["load"]
        base = Signal(signed(cfg.acc_bits), name="base")
        m.d.comb += base.eq(Mux(ctrl["load"], ctrl["d"], Mux(ctrl["clear"], 0, acc)))
        total = Signal(signed(max(cfg.acc_bits, len(p)) + 1), name="total")
        m.d.comb += total.eq(base + p)
        out_of_range = ~_fits(total, cfg.acc_bits)
        with m.If(ctrl["valid"]):
            m.d.sync += [
                acc.eq(OVERFLOW_POLICIES[cfg.overflow](total, cfg.acc_bits)),
                ovf.eq((ovf & ~restart) | out_of_range),
            ]
        with m.Elif(restart):
            m.d.sync += [acc.eq(base), ovf.eq(0)]
        m.d.comb += [self.out_c.eq(acc), self.out_overflow.eq(ovf)]
        return m

    def _product_bits(self) -> int:
        cfg = self._config
        if cfg.formats is None:
            return len(self._core.p)  # a composable dot output may be wider than the sw table
        if cfg.selectable:
            # the sw table (and so out_bits) is variant 0's; another variant may need more
            fa, fb = cfg.formats
            return len(self._core.p) + fa.e_max + fb.e_max
        return cfg.multiplier.out_bits

    @staticmethod
    def _register(m: Module, values: dict, stage: str) -> dict:
        """One pipeline register for each value, named ``<stage>_<key>``."""
        out = {}
        for key, value in values.items():
            reg = Signal.like(value, name=f"{stage}_{key}") if isinstance(value, Signal) else \
                Signal(value.shape(), name=f"{stage}_{key}")
            m.d.sync += reg.eq(value)
            out[key] = reg
        return out

