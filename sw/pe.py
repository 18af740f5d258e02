"""Processing-element configuration and its bit-exact reference MAC.

One frozen :class:`PEConfig` drives the hardware (:class:`mixpe.hw.pe.ProcessingElement`), the
reference (:func:`pe_mac`) and the host (``to_json``/``from_json``, written beside the Verilog).

A PE multiplies operand ``a`` (activation) by operand ``b`` (weight) with the multiplier named
by ``mult``; when number formats are given, the operands are format codes, each decoded into a
``(m, e)`` pair, and the product is ``core(m_a, m_b) << (e_a + e_b)``
(:class:`mixpe.sw.mult.decoded.DecodedMultiplier`). The product is added to an ``acc_bits``-wide
two's-complement accumulator that either wraps or saturates, and a sticky flag records overflow.

This module never imports Amaranth.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

import torch

from .numerics import as_int64, int_range, overflowed, saturate, wrap
from .spec import from_spec, to_spec

__all__ = [
    "PEConfig",
    "DEFAULT",
    "PRESETS",
    "pe_mac",
    "pe_product",
    "pe_step",
    "pe_trace",
    "OVERFLOW_MODES",
    "ACC_BITS_RANGE",
    "PIPELINE_RANGE",
]

#: Accumulator behaviours: two's-complement wrap-around or clamping to the range.
OVERFLOW_MODES = ("wrap", "saturate")
#: Inclusive accumulator width range (int64 reference: acc + product must not overflow int64).
ACC_BITS_RANGE = (2, 48)
#: Inclusive number of optional pipeline register stages.
PIPELINE_RANGE = (0, 2)


@dataclass(frozen=True)
class PEConfig:
    """Frozen, validated configuration of one processing element.

    Parameters
    ----------
    mult : str
        Multiplier spec string (``kind="mult"``), e.g. ``"exact:n=8"`` or ``"roup:n=8,p=1,r=4"``.
        With formats it names the *core* multiplier that multiplies the decoded mantissas.
    a_format, b_format : str or None
        Number-format spec strings (``kind="format"``) of the two operands, e.g.
        ``"flint:bits=4"``. Give both or neither.
    acc_bits : int
        Accumulator width in bits (two's complement), in ``ACC_BITS_RANGE``.
    overflow : str
        ``"wrap"`` or ``"saturate"``; applied after every addition.
    pipeline : int
        Extra register stages, in ``PIPELINE_RANGE``: 0 = decode, multiply and accumulate in one
        cycle; 1 = a product register before the accumulator; 2 = also a register after the
        operand decoders (before the core multiplier).

    Examples
    --------
    >>> cfg = PEConfig(mult="exact:n=4", acc_bits=8, overflow="saturate", pipeline=1)
    >>> cfg.latency
    2
    >>> PEConfig.from_json(cfg.to_json()) == cfg
    True
    >>> PEConfig(acc_bits=1)
    Traceback (most recent call last):
    ...
    ValueError: acc_bits must be an integer in [2, 48], not 1
    """

    mult: str = "exact:n=8"
    a_format: Optional[str] = None
    b_format: Optional[str] = None
    acc_bits: int = 32
    overflow: str = "wrap"
    pipeline: int = 0

    def __post_init__(self):
        if not isinstance(self.mult, str):
            raise ValueError(f"mult must be a multiplier spec string, not {self.mult!r}")
        lo, hi = ACC_BITS_RANGE
        if isinstance(self.acc_bits, bool) or not isinstance(self.acc_bits, int) or not (
            lo <= self.acc_bits <= hi
        ):
            raise ValueError(f"acc_bits must be an integer in [{lo}, {hi}], not {self.acc_bits!r}")
        if self.overflow not in OVERFLOW_MODES:
            raise ValueError(
                f"overflow must be one of {', '.join(OVERFLOW_MODES)}, not {self.overflow!r}"
            )
        lo, hi = PIPELINE_RANGE
        if isinstance(self.pipeline, bool) or not isinstance(self.pipeline, int) or not (
            lo <= self.pipeline <= hi
        ):
            raise ValueError(f"pipeline must be an integer in [{lo}, {hi}], not {self.pipeline!r}")
        if (self.a_format is None) != (self.b_format is None):
            raise ValueError(
                "a_format and b_format must be given together (both format specs or neither), "
                f"not a_format={self.a_format!r}, b_format={self.b_format!r}"
            )
        # Parse every spec now (SpecError is a ValueError) and store canonical spellings, so
        # that equal configurations compare, hash and serialize equally.
        from .mult import multiplier

        try:
            object.__setattr__(self, "mult", multiplier(self.mult).spec)
        except ValueError as e:
            raise ValueError(f"mult: {e}") from None
        for name in ("a_format", "b_format"):
            spec = getattr(self, name)
            if spec is not None:
                if not isinstance(spec, str):
                    raise ValueError(f"{name} must be a format spec string or None, not {spec!r}")
                try:
                    object.__setattr__(self, name, to_spec(_format(spec)))
                except ValueError as e:
                    raise ValueError(f"{name}: {e}") from None
        if self.a_format is not None and getattr(self.core, "code_port", False):
            raise ValueError(f"a_format/b_format: {self.mult} decodes number formats per member "
                             "(a code-port variants unit); allowed: None")
        try:
            self.multiplier  # noqa: B018  (the formats' mantissas must fit the core multiplier)
        except ValueError as e:
            raise ValueError(f"mult: {e}") from None
        if getattr(self.core, "out", "dot") != "dot":
            raise ValueError(
                f"mult: {self.mult} has out=lanes; a PE accumulates one sum per cycle, "
                "allowed: out=dot"
            )
        if self.composable and self.a_format is not None:
            raise ValueError("a_format/b_format: a composable multiplier takes lane-packed "
                             "integer operands, not number formats; allowed: None")

    # -- derived -------------------------------------------------------------------------
    @property
    def core(self):
        """The sw multiplier named by ``mult`` (the core when formats are given)."""
        from .mult import multiplier

        return multiplier(self.mult)

    @property
    def formats(self):
        """``(a_format, b_format)`` as sw format objects, or ``None`` without formats."""
        if self.a_format is None:
            return None
        return _format(self.a_format), _format(self.b_format)

    @cached_property
    def multiplier(self):
        """The sw multiplier of the whole PE: the core, or a ``DecodedMultiplier`` over it."""
        if self.a_format is None:
            return self.core
        from .mult.decoded import DecodedMultiplier

        fa, fb = self.formats
        return DecodedMultiplier(fa, fb, self.core)

    @property
    def latency(self) -> int:
        """Cycles from presenting an operand pair (with ``valid``) to seeing it in ``out_c``."""
        return 1 + self.pipeline

    @property
    def composable(self) -> bool:
        """Whether the multiplier has a run-time precision ``mode`` (composable axbxp)."""
        return getattr(self.core, "mode", "fixed") == "composable"

    @property
    def selectable(self) -> bool:
        """Whether the multiplier has a run-time ``sel`` input (a ``variants`` unit)."""
        return hasattr(self.core, "mul_sel")

    @property
    def port_bits(self) -> tuple[int, int]:
        """Widths of the ``in_a``/``in_b`` ports: format or operand codes; for a composable
        multiplier the lane-packed operands of ``n²/k`` bits (every lane at the finest precision).
        """
        if self.composable:
            core = self.core
            return (core.n * core.blocks,) * 2
        mult = self.multiplier
        return mult.a_format.bits, mult.b_format.bits

    @property
    def modes(self) -> tuple[int, ...]:
        """Precision ``q`` of each value of the ``mode`` input (``()`` without one)."""
        return tuple(self.core.precisions) if self.composable else ()

    def port_operands(self, a_code, b_code, mode=None):
        """Operand values (and precision) of the codes on ``in_a``/``in_b`` under ``mode``.

        Returns ``(a, b, q)`` as :func:`pe_mac` takes them. Without a composable multiplier
        ``mode`` must be None and ``q`` is None. With one, ``mode`` indexes :attr:`modes`
        (an index past the last selects the full precision, as the hardware does); at precision
        ``q`` lane ``t`` of an operand is bits ``[q·t, q·t + q)`` of its code, so ``a`` and ``b``
        are ``[lanes]`` tensors of lane values (``q``-bit two's complement when signed).

        >>> cfg = PEConfig(mult="axbxp:mode=composable")
        >>> a, b, q = cfg.port_operands(0x3F1, 0x00E, mode=1); q, a.tolist(), b.tolist()
        (4, [1, -1, 3, 0], [-2, 0, 0, 0])
        """
        mult = self.multiplier
        if not self.composable:
            if mode is not None:
                raise ValueError(f"mode: {self.mult} has no mode input, got mode={mode!r}")
            return mult.a_format.values()[int(a_code)], mult.b_format.values()[int(b_code)], None
        if mode is None:
            mode = len(self.modes) - 1
        if isinstance(mode, bool) or not isinstance(mode, int) or mode < 0:
            raise ValueError(f"mode must be a non-negative integer, not {mode!r}")
        q = self.modes[min(mode, len(self.modes) - 1)]
        n_lanes = mult.lanes(q)
        fa, fb = mult.lane_formats(q)
        shifts = torch.arange(n_lanes, dtype=torch.int64) * q
        mask = (1 << q) - 1
        a = fa.decode((int(a_code) >> shifts) & mask)
        b = fb.decode((int(b_code) >> shifts) & mask)
        return a, b, q

    # -- serialization -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """JSON text of the configuration (written beside generated Verilog)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "PEConfig":
        """Inverse of :meth:`to_json`; unknown keys raise ``ValueError``."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"PE config JSON must be an object, not {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown PE config keys: {', '.join(unknown)}")
        return cls(**d)

    @property
    def name(self) -> str:
        """Short readable identifier, e.g. ``flint x int:signed=1 @ exact:n=4 acc24w p1``."""
        core = self.mult
        if self.a_format is not None:
            core = f"{self.a_format} x {self.b_format} @ {core}"
        pipe = f" p{self.pipeline}" if self.pipeline else ""
        return f"{core} acc{self.acc_bits}{'s' if self.overflow == 'saturate' else 'w'}{pipe}"


def _format(spec: str):
    from . import formats  # noqa: F401  (registers the format families)

    return from_spec(spec, kind="format")


def pe_product(a, b, cfg: PEConfig, *, q=None, sel=None) -> torch.Tensor:
    """The product the PE's multiplier feeds into the accumulator.

    ``q`` is the precision of a composable multiplier (then ``a``/``b`` are ``[..., lanes]``
    lane values and the product is their dot product); ``None`` is the full precision.
    ``sel`` picks the member of a run-time ``variants`` multiplier (``None``: variant 0), also
    behind number-format decoders: ``core.mul_sel(m_a, m_b, sel) << (e_a + e_b)``. A code-port
    variants unit (members with their own number formats) takes the port *codes* as ``a``/``b``
    (they are its operand values) and member ``sel`` decodes the low bits of its code width.

    >>> import mixpe.sw.mult.variants  # registers the family
    >>> cfg = PEConfig(mult="variants:of=exact|roup:p=1;r=4")
    >>> pe_product(100, 77, cfg, sel=0).item(), pe_product(100, 77, cfg, sel=1).item()
    (7700, 7296)
    >>> mixed = PEConfig(mult="variants:of=exact|exact:nb=4 a=int:bits=8;signed=1 b=int:signed=1")
    >>> pe_product(100, 0xFD, mixed, sel=0).item(), pe_product(100, 0xD, mixed, sel=1).item()
    (-300, -300)
    """
    mult = cfg.multiplier
    if q is not None:
        if sel is not None:
            raise ValueError("sel: a composable multiplier has no variants")
        if not cfg.composable:
            raise ValueError(f"q: {cfg.mult} is not composable, got q={q!r}")
        return mult.mul_dot(a, b, q)
    if sel is None:
        return mult.mul(a, b)
    core = cfg.core
    if not cfg.selectable:
        raise ValueError(f"sel: {cfg.mult} has no run-time variants, got sel={sel!r}")
    if cfg.formats is None:
        return core.mul_sel(a, b, sel)
    fa, fb = cfg.formats
    ma, ea = fa.decode(fa.encode(a))
    mb, eb = fb.decode(fb.encode(b))
    return core.mul_sel(ma, mb, sel) << (ea + eb)


def pe_mac(acc, a, b, cfg: PEConfig, *, q=None, sel=None):
    """One multiply-accumulate step of the PE: ``(acc', overflow)``.

    ``acc`` is the accumulator value (int64 tensor or int, within ``acc_bits``); ``a`` and
    ``b`` are operand *values* as ``cfg.multiplier.mul`` takes them (with formats: grid values
    in integer units). The sum ``acc + product`` is computed exactly, then wrapped or saturated
    to ``acc_bits`` (:func:`~mixpe.sw.numerics.wrap` / :func:`~mixpe.sw.numerics.saturate`);
    ``overflow`` is true where the exact sum lies outside the accumulator range. ``q`` selects
    a precision of a composable multiplier (lane values) and ``sel`` a member of a variants
    multiplier (see :func:`pe_product`).

    Examples
    --------
    >>> cfg = PEConfig(mult="exact:n=8", acc_bits=8, overflow="wrap")
    >>> acc, ovf = pe_mac(100, 5, 6, cfg); acc.item(), ovf.item()
    (-126, True)
    >>> acc, ovf = pe_mac(100, 5, 6, PEConfig(mult="exact:n=8", acc_bits=8, overflow="saturate"))
    >>> acc.item(), ovf.item()
    (127, True)
    >>> pe_mac(0, 24, -3, PEConfig(mult="exact:n=4", a_format="flint:bits=4",
    ...                             b_format="int:bits=4,signed=1", acc_bits=12))[0].item()
    -72
    """
    acc = as_int64(acc)
    lo, hi = int_range(cfg.acc_bits, True)
    if acc.numel() and (int(acc.min()) < lo or int(acc.max()) > hi):
        raise ValueError(f"acc must lie in the {cfg.acc_bits}-bit range [{lo}, {hi}]")
    total = acc + pe_product(a, b, cfg, q=q, sel=sel)
    ovf = overflowed(total, cfg.acc_bits, True)
    if cfg.overflow == "wrap":
        return wrap(total, cfg.acc_bits, True), ovf
    return saturate(total, cfg.acc_bits, True), ovf


def pe_step(acc: int, ovf: bool, cfg: PEConfig, *, valid, clear=0, load=0, d=0, a=0, b=0,
            mode=None, sel=None) -> tuple[int, bool]:
    """One clock of the PE with the values of its input *ports*: ``(acc', overflow')``.

    ``a``/``b`` are the codes on ``in_a``/``in_b``, ``mode`` the ``in_mode`` value
    (:meth:`PEConfig.port_operands` turns them into operand values) and ``sel`` the ``in_sel``
    value of a variants multiplier. ``load`` (takes
    precedence) restarts from ``d``, ``clear`` from 0; a valid operand pair is then accumulated
    with :func:`pe_mac`. The overflow flag is sticky until a restart.

    >>> cfg = PEConfig(mult="exact:n=4", acc_bits=6)
    >>> pe_step(0, False, cfg, valid=1, load=1, d=30, a=7, b=1)
    (-27, True)
    >>> pe_step(-27, True, cfg, valid=0, clear=1)
    (0, False)
    """
    restart = bool(clear) or bool(load)
    base = int(d) if load else (0 if clear else int(acc))
    if restart:
        ovf = False
    if valid:
        va, vb, q = cfg.port_operands(a, b, mode)
        new, o = pe_mac(base, va, vb, cfg, q=q, sel=sel)
        return int(new), bool(ovf) or bool(o)
    return base, bool(ovf)


def pe_trace(cfg: PEConfig, ops) -> list[tuple[int, bool]]:
    """``(acc, overflow)`` after each of ``ops`` (dicts of :func:`pe_step` keywords), from reset.

    >>> cfg = PEConfig(mult="exact:n=4", acc_bits=8, overflow="saturate")
    >>> pe_trace(cfg, [dict(valid=1, a=7, b=7), dict(valid=1, a=7, b=7), dict(valid=1, a=7, b=7)])
    [(49, False), (98, False), (127, True)]
    """
    acc, ovf, out = 0, False, []
    for op in ops:
        acc, ovf = pe_step(acc, ovf, cfg, **op)
        out.append((acc, ovf))
    return out


#: The default PE: exact signed 8×8 multiplier, 32-bit wrapping accumulator, no pipelining.
DEFAULT = PEConfig()

#: Named PE presets (``dataclasses.replace(DEFAULT, ...)``); the cost bench synthesizes each.
PRESETS: dict[str, PEConfig] = {
    "int8": DEFAULT,
    "int8_sat_p2": dataclasses.replace(DEFAULT, overflow="saturate", pipeline=2),
    "flint4_x_int4": dataclasses.replace(DEFAULT, mult="exact:n=4", a_format="flint:bits=4",
                                         b_format="int:bits=4,signed=1", acc_bits=24),
    "roup_p1_r4": dataclasses.replace(DEFAULT, mult="roup:p=1,r=4"),
    "axbxp_composable": dataclasses.replace(DEFAULT, mult="axbxp:mode=composable"),
}
