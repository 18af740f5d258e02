"""Number formats: int, PoT, float and flint as policy objects, code ↔ value ↔ (m, e).

Each format is a frozen dataclass registered under ``kind="format"`` (see :mod:`mixpe.sw.spec`),
so ``number_format("flint:bits=4")`` names the 4-bit unsigned flint of ANT (Guo et al., MICRO'22).
Every format answers the same questions, so no code outside this module branches on the family:

* ``values()``: the value of every code (index = code), in **integer units**: the smallest
  step of the format is an integer, so e.g. unsigned 4-bit flint is ``{0, 1, …, 7, 8, 10, 12,
  14, 16, 24, 32, 64}`` (real ANT values × 8).
* ``grid()``: the distinct values, ascending (ANT's ``*_value()`` grids up to a constant factor).
* ``decode(code) -> (m, e)``: what a hardware decoder emits; ``value = m << e``, ``m`` carries
  the sign, ``e >= 0``. ``m_bits``/``m_signed``/``e_max`` size the decoder and the shifter.
* ``encode(value)``: the code of a grid value (the canonical, smallest code for ±0).
* ``quantize(x, alpha)`` / ``dequantize(codes, alpha)``: ANT's float32 quantizer.

Code layouts (the bit-level spec, ``seed-methods.md`` §5.2–5.3):

* ``int``: two's complement when signed, plain binary otherwise.
* ``pot``, ``float``, ``flint``: signed = sign bit (MSB) + ``B = bits-1`` magnitude bits
  (sign-magnitude; the code ``100…0`` is −0 and duplicates 0, the role of the extra 0.0 that
  ANT pads its grids with). Unsigned: ``B = bits`` magnitude bits.

  - pot: magnitude code ``c`` → 0 if ``c == 0`` else ``2**(c-1)``, so ``(m, e) = (1, c-1)``.
  - float ``EeMm`` (``M = B - E``), with subnormals: field ``f = c >> M``, ``t = c mod 2**M``;
    ``f == 0`` → ``t`` (subnormal), else ``(2**M + t) << (f-1)``.
  - flint: the run of ``o`` leading ones is a unary exponent. ``o == 0`` → the code itself
    (an integer); ``o == B`` → ``2**(2B-2)``; else ``(2**mb + t) << (2o-1)`` with
    ``mb = B-1-o`` mantissa bits ``t``. The decoder left-aligns the mantissa in ``B-1`` bits:
    ``m = (2**mb + t) << (o-1)``, ``e = o``.

Quantizer (ANT ``quant_modules.py`` + ``quant_kernel.cu``, float32 throughout): the grid is
normalised to max 10.0 as ANT's ``convert_tensor`` does (``g * (10.0 / max(g))`` with torch's
``reciprocal`` semantics of ``scalar / tensor``), ``scale = alpha / max(grid)``, and
``x / scale`` goes to the nearest grid point; ties go to the LARGER grid value (the kernel's
``<=`` scan), values beyond the grid clamp to its ends, NaN gives 0 (the kernel's initial
``z_min``).

>>> f = number_format("flint:bits=4")
>>> f.grid().tolist()
[0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 24, 32, 64]
>>> [t.item() for t in f.decode(0b1101)], f.value(0b1101).item()
([6, 2], 24)
>>> f.quantize(torch.tensor([0.05, 2.0]), 6.4).tolist()
[1, 13]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, Optional

import torch

from .mult.base import OperandFormat
from .numerics import as_int64, check_range, from_code, to_code
from .spec import from_spec, register, registry, to_spec

__all__ = [
    "NumberFormat",
    "IntFormat",
    "PotFormat",
    "FloatFormat",
    "FlintFormat",
    "number_format",
    "number_format_from",
    "nearest_grid_index",
    "GRID_MAX",
]

#: ANT's ``convert_tensor`` scales every grid to this maximum before quantizing.
GRID_MAX = 10.0


def nearest_grid_index(d: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Index of the grid point nearest to each ``d`` (float32), ties to the larger grid value.

    This is ANT's CUDA kernel (``|d - g_i| <= best`` over ascending ``g_i``) evaluated on the
    two neighbours of ``d``: the distances are the same float32 differences the kernel takes,
    so an exact midpoint picks the upper neighbour. ``d`` outside the grid clamps to its ends;
    NaN (``0/0`` when ``alpha == 0``) gives the index of the grid point 0, the kernel's
    initial ``z_min``.

    >>> g = torch.tensor([0.0, 2.5, 3.75])
    >>> nearest_grid_index(torch.tensor([3.125, 1.0, -7.0, 99.0]), g).tolist()
    [2, 0, 0, 2]
    """
    d = d.to(torch.float32).contiguous()
    n = grid.numel()
    k = torch.searchsorted(grid, d)  # first grid point >= d
    hi = k.clamp(max=n - 1)
    lo = (k - 1).clamp(min=0)
    d_hi = (d - grid[hi]).abs()
    d_lo = (d - grid[lo]).abs()
    idx = torch.where(d_hi <= d_lo, hi, lo)
    nan = torch.isnan(d)
    if bool(nan.any()):
        zero = int(torch.nonzero(grid == 0)[0, 0]) if bool((grid == 0).any()) else 0
        idx = torch.where(nan, torch.full_like(idx, zero), idx)
    return idx


@dataclass(frozen=True)
class NumberFormat:
    """Base class of the number formats (fields ``bits``, ``signed``; see the module doc).

    Subclasses set ``_BITS``/``_BITS_SIGNED`` (allowed ``bits``) and implement ``_decode``
    on range-checked int64 codes, plus the ``m_bits``/``e_max`` properties.
    """

    bits: int = 4
    signed: bool = False

    family: ClassVar[str]
    _BITS: ClassVar[tuple[int, int]] = (2, 16)
    _BITS_SIGNED: ClassVar[tuple[int, int]] = (2, 16)

    def __post_init__(self):
        if not (isinstance(self.signed, (bool, int)) and self.signed in (0, 1)):
            raise ValueError(
                f"{self.family}: signed={self.signed!r} is out of range; "
                f"allowed: signed in {{0, 1}}"
            )
        object.__setattr__(self, "signed", bool(self.signed))
        lo, hi = self.bits_range(self.signed)
        bits = self.bits
        if isinstance(bits, bool) or not isinstance(bits, int) or not lo <= bits <= hi:
            kind = "a signed" if self.signed else "an unsigned"
            raise ValueError(
                f"{self.family}: bits={self.bits!r} is out of range; allowed: bits in "
                f"[{lo}, {hi}] for {kind} format"
            )

    @classmethod
    def bits_range(cls, signed: bool) -> tuple[int, int]:
        """Inclusive range of ``bits`` this family allows."""
        return cls._BITS_SIGNED if signed else cls._BITS

    # -- sizes -------------------------------------------------------------------------------
    @property
    def mag_bits(self) -> int:
        """``B``: magnitude bits (``bits - 1`` when signed)."""
        return self.bits - int(self.signed)

    @property
    def m_signed(self) -> bool:
        """Whether ``decode`` can give a negative mantissa."""
        return self.signed

    @property
    def m_bits(self) -> int:  # pragma: no cover - abstract
        """Width of the mantissa signal (two's complement when ``m_signed``)."""
        raise NotImplementedError

    @property
    def e_max(self) -> int:  # pragma: no cover - abstract
        """Largest shift ``e`` that ``decode`` gives."""
        raise NotImplementedError

    @property
    def e_bits(self) -> int:
        """Width of the unsigned shift signal (at least 1)."""
        return max(1, self.e_max.bit_length())

    def m_format(self) -> OperandFormat:
        """The mantissa port of the decoder as an :class:`OperandFormat`."""
        return OperandFormat(self.m_bits, "twos" if self.m_signed else "unsigned")

    @property
    def spec(self) -> str:
        """Canonical spec string, e.g. ``'flint:signed=1'``."""
        return to_spec(self)

    def __str__(self):
        return self.spec

    # -- codes and values --------------------------------------------------------------------
    def codes(self) -> torch.Tensor:
        """All ``2**bits`` codes in order."""
        return torch.arange(1 << self.bits, dtype=torch.int64)

    def _check_codes(self, code) -> torch.Tensor:
        return check_range(code, 0, (1 << self.bits) - 1, f"{self.spec}: code")

    def _decode(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def decode(self, code) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, e)`` int64 tensors with ``value = m << e`` (``m`` signed, ``e >= 0``).

        ``ValueError`` for codes outside ``[0, 2**bits)``.
        """
        return self._decode(self._check_codes(code))

    def value(self, code) -> torch.Tensor:
        """Value of each code in integer units: ``m << e``."""
        m, e = self.decode(code)
        return m << e

    @cached_property
    def _values(self) -> torch.Tensor:
        return self.value(self.codes())

    @cached_property
    def _grid_and_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        v = self._values
        grid = torch.unique(v)  # sorted ascending
        # canonical code = smallest code with that value (0, not the -0 code 100…0)
        codes = self.codes()
        first = torch.full_like(grid, 1 << self.bits)
        first = first.scatter_reduce(0, torch.searchsorted(grid, v), codes, reduce="amin")
        return grid, first

    def values(self) -> torch.Tensor:
        """Value of every code (index = code), length ``2**bits``.

        >>> PotFormat(bits=3, signed=True).values().tolist()
        [0, 1, 2, 4, 0, -1, -2, -4]
        """
        return self._values.clone()

    def grid(self) -> torch.Tensor:
        """Distinct values, ascending (int64)."""
        return self._grid_and_codes[0].clone()

    @property
    def range(self) -> tuple[int, int]:
        """Smallest and largest value."""
        g = self._grid_and_codes[0]
        return int(g[0]), int(g[-1])

    def encode(self, value) -> torch.Tensor:
        """Code of each grid value (canonical code for ±0); ``ValueError`` for values off the grid.

        >>> FlintFormat(bits=4).encode([24, 64]).tolist()
        [13, 15]
        """
        value = as_int64(value)
        grid, codes = self._grid_and_codes
        idx = torch.searchsorted(grid, value).clamp(max=grid.numel() - 1)
        bad = grid[idx] != value
        if bool(bad.any()):
            v = int(value[bad].flatten()[0])
            raise ValueError(
                f"{self.spec}: value {v} is not on the grid (values in [{int(grid[0])}, "
                f"{int(grid[-1])}], see grid())"
            )
        return codes[idx]

    # -- ANT quantizer -----------------------------------------------------------------------
    @cached_property
    def _norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        # ANT: values.mul(10.0 / torch.max(values)) on the float32 grid; keep the same torch
        # expression so that `scalar / tensor` rounds as there (reciprocal, then multiply).
        g = self._grid_and_codes[0].to(torch.float32)
        factor = GRID_MAX / torch.max(g)
        return g.mul(factor), self._values.to(torch.float32).mul(factor)

    def normalized_grid(self) -> torch.Tensor:
        """ANT's float32 grid: ``grid()`` scaled so that its maximum is 10.0."""
        return self._norm[0].clone()

    def scale(self, alpha) -> torch.Tensor:
        """``alpha / max(normalized_grid())`` (float32): the real size of one normalized unit."""
        alpha = torch.as_tensor(alpha, dtype=torch.float32)
        return alpha / torch.max(self._norm[0])

    def quantize(self, x, alpha) -> torch.Tensor:
        """Codes of the grid points nearest to ``x / scale`` (float32, ties to the larger value).

        ``alpha`` (the clipping value, real units) broadcasts against ``x``: a scalar per
        tensor, ``[C, 1]`` per output channel of a ``[C, K]`` weight. Values beyond ``±alpha``
        clamp to the grid ends.

        >>> FlintFormat(bits=4).quantize(torch.tensor([0.33, 1.7, 4.8, 7.5, -0.2]), 6.4).tolist()
        [3, 12, 15, 15, 0]
        """
        x = torch.as_tensor(x).to(torch.float32)
        d = x / self.scale(alpha)
        return self._grid_and_codes[1][nearest_grid_index(d, self._norm[0])]

    def dequantize(self, codes, alpha) -> torch.Tensor:
        """Real value of each code: ``normalized value * scale`` in float32.

        >>> FlintFormat(bits=4).dequantize(torch.tensor([13, 1]), 6.4).tolist()
        [2.3999998569488525, 0.09999999403953552]
        """
        codes = self._check_codes(codes)
        return self._norm[1][codes] * self.scale(alpha)


# -- families ----------------------------------------------------------------------------------


@register("int", kind="format")
@dataclass(frozen=True)
class IntFormat(NumberFormat):
    """Integer: two's complement ``[-2**(bits-1), 2**(bits-1))`` or unsigned ``[0, 2**bits)``.

    ``decode`` is ``(m, e) = (value, 0)``.

    >>> IntFormat(bits=3, signed=True).grid().tolist()
    [-4, -3, -2, -1, 0, 1, 2, 3]
    """

    _BITS: ClassVar[tuple[int, int]] = (2, 16)
    _BITS_SIGNED: ClassVar[tuple[int, int]] = (2, 16)

    @property
    def m_bits(self) -> int:
        return self.bits

    @property
    def e_max(self) -> int:
        return 0

    def _decode(self, code):
        return from_code(code, self.bits, self.signed), torch.zeros_like(code)

    def encode(self, value) -> torch.Tensor:
        """Two's-complement (or unsigned) code; ``ValueError`` outside the range."""
        lo, hi = self.range
        return to_code(check_range(value, lo, hi, f"{self.spec}: value"), self.bits)

    def operand_format(self) -> OperandFormat:
        """The same integer as a multiplier port (:class:`~mixpe.sw.mult.base.OperandFormat`)."""
        return OperandFormat(self.bits, "twos" if self.signed else "unsigned")


@dataclass(frozen=True)
class _SignMagnitudeFormat(NumberFormat):
    """Sign bit (MSB, when signed) + ``B``-bit magnitude code decoded by ``_decode_mag``."""

    @property
    def _mag_m_bits(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def m_bits(self) -> int:
        # a negative mantissa needs one more bit in two's complement
        return self._mag_m_bits + int(self.signed)

    def _decode_mag(self, c):  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, code):
        B = self.mag_bits
        m, e = self._decode_mag(code & ((1 << B) - 1))
        if self.signed:
            m = torch.where((code >> B) & 1 == 1, -m, m)
        return m, e


@register("pot", kind="format")
@dataclass(frozen=True)
class PotFormat(_SignMagnitudeFormat):
    """Power of two: ``{0} ∪ {2**i : i = 0 … 2**B - 2}`` (± when signed), ANT's ``pot_value``.

    Magnitude code ``c``: 0 → 0, else ``2**(c-1)``, i.e. ``(m, e) = (1, c-1)``. ``B <= 6``
    keeps ``2**(2**B - 2)`` in int64.

    >>> PotFormat(bits=3).grid().tolist()
    [0, 1, 2, 4, 8, 16, 32, 64]
    """

    _BITS: ClassVar[tuple[int, int]] = (2, 6)
    _BITS_SIGNED: ClassVar[tuple[int, int]] = (2, 7)

    @property
    def _mag_m_bits(self) -> int:
        return 1

    @property
    def e_max(self) -> int:
        return (1 << self.mag_bits) - 2

    def _decode_mag(self, c):
        return (c != 0).to(torch.int64), (c - 1).clamp(min=0)


def _parse_optional_int(text: str):
    return None if text.strip().lower() in ("", "none") else int(text, 0)


@register("float", kind="format")
@dataclass(frozen=True)
class FloatFormat(_SignMagnitudeFormat):
    """Float ``E{e}M{B-e}`` with subnormals and no inf/NaN, ANT's second ``float_value(eb)``.

    ``e`` = exponent bits; ``None`` is ANT's choice ``min(3, B)`` (E3, and E2M0 for ``B = 2``).
    Integer units are ``2**-M`` of ANT's values: field ``f == 0`` → ``t``, else
    ``(2**M + t) << (f - 1)``, so ``(m, e) = (t, 0)`` or ``(2**M + t, f - 1)``.

    >>> FloatFormat(bits=4).grid().tolist()
    [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192]
    >>> FloatFormat(bits=4, e=2).grid().tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28]
    """

    e: Optional[int] = None

    _BITS: ClassVar[tuple[int, int]] = (2, 16)
    _BITS_SIGNED: ClassVar[tuple[int, int]] = (2, 16)
    _E_MAX: ClassVar[int] = 5  # (2**M+t) << (2**5 - 2) still fits int64 for B <= 16
    _spec_codecs: ClassVar[dict] = {"e": (_parse_optional_int, str)}

    def __post_init__(self):
        super().__post_init__()
        if self.e is not None:
            hi = min(self.mag_bits, self._E_MAX)
            if isinstance(self.e, bool) or not isinstance(self.e, int) or not 1 <= self.e <= hi:
                raise ValueError(
                    f"float: e={self.e!r} is out of range; allowed: e in [1, {hi}] (exponent "
                    f"bits, at most the {self.mag_bits} magnitude bits and {self._E_MAX})"
                )

    @property
    def exp_bits(self) -> int:
        """``E``: exponent bits (``e``, or ``min(3, B)`` when ``e`` is None)."""
        return self.e if self.e is not None else min(3, self.mag_bits)

    @property
    def man_bits(self) -> int:
        """``M = B - E``: mantissa bits."""
        return self.mag_bits - self.exp_bits

    @property
    def _mag_m_bits(self) -> int:
        return self.man_bits + 1

    @property
    def e_max(self) -> int:
        return (1 << self.exp_bits) - 2

    def _decode_mag(self, c):
        M = self.man_bits
        f = c >> M
        t = c & ((1 << M) - 1)
        normal = f > 0
        return torch.where(normal, t + (1 << M), t), torch.where(normal, f - 1, 0)


@register("flint", kind="format")
@dataclass(frozen=True)
class FlintFormat(_SignMagnitudeFormat):
    """ANT's flint: a ``B-1``-bit integer below 1 (MSB 0), a float with unary exponent above.

    ``B`` magnitude bits (``B >= 2``, as ANT's ``flint_value`` asserts), values in units of
    ``2**-(B-1)`` of ANT's: ``2B - 1`` binades, max ``2**(2B-2)``. Hardware decode (§5.3):
    ``o`` = leading ones of the magnitude code;
    ``o = 0`` → ``(m, e) = (c, 0)``; ``0 < o < B`` → ``m = (1 t) << (o-1)`` (the ``B-1-o``
    bits ``t`` after the ``0`` that ends the run, behind a hidden 1, left-aligned in ``B-1``
    bits), ``e = o``; ``o = B`` → ``(2**(B-2), B)``.

    >>> f = FlintFormat(bits=4)
    >>> m, e = f.decode(torch.tensor([0b0101, 0b1011, 0b1101, 0b1111]))
    >>> list(zip(m.tolist(), e.tolist()))
    [(5, 0), (7, 1), (6, 2), (4, 4)]
    >>> FlintFormat(bits=4, signed=True).grid().tolist()
    [-16, -8, -6, -4, -3, -2, -1, 0, 1, 2, 3, 4, 6, 8, 16]
    """

    _BITS: ClassVar[tuple[int, int]] = (2, 8)
    _BITS_SIGNED: ClassVar[tuple[int, int]] = (3, 8)

    @property
    def _mag_m_bits(self) -> int:
        return self.mag_bits - 1

    @property
    def e_max(self) -> int:
        return self.mag_bits

    def _decode_mag(self, c):
        B = self.mag_bits
        # o = length of the run of ones from the MSB down
        run = torch.ones_like(c)
        o = torch.zeros_like(c)
        for k in range(B - 1, -1, -1):
            run = run & ((c >> k) & 1)
            o = o + run
        mb = (B - 1 - o).clamp(min=0)
        one = torch.ones_like(c)
        t = c & ((one << mb) - 1)
        m_float = ((one << mb) + t) << (o - 1).clamp(min=0)
        m = torch.where(o == 0, c, torch.where(o == B, one << (B - 2), m_float))
        return m, o


# -- construction ------------------------------------------------------------------------------


def number_format(spec: str) -> NumberFormat:
    """The format named by ``spec``, e.g. ``number_format("flint:bits=4,signed=1")``.

    >>> number_format("float:bits=5,e=2").spec
    'float:bits=5,e=2'
    """
    return from_spec(spec, kind="format")


def number_format_from(kind: str, bits: int, signed: bool = False, **fields) -> NumberFormat:
    """The format of family ``kind`` with ``bits`` and ``signed`` (plus e.g. ``e=`` for float).

    >>> number_format_from("pot", 4, True).spec
    'pot:signed=1'
    """
    reg = registry("format")
    if kind not in reg:
        raise ValueError(f"unknown format family {kind!r}; known: {', '.join(sorted(reg))}")
    cls = reg[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(fields) - names
    if unknown:
        raise ValueError(f"{kind}: unknown field(s) {sorted(unknown)}; fields: {sorted(names)}")
    return cls(bits=bits, signed=bool(signed), **fields)
