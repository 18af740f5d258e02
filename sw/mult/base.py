"""The multiplier contract shared by every family, its hardware twin and the emulator.

A multiplier is a frozen, validated dataclass registered under a family name (see
:mod:`mixpe.sw.spec`). Operand ``a`` is the activation (the streaming operand of the array),
operand ``b`` the weight (the stationary one).

Values and codes
    ``mul(a, b)`` takes operand *values* (plain integers; signed values are negative numbers)
    and returns the integer product the hardware computes, as ``torch.int64``, with
    broadcasting. The operand *codes* are the bit patterns on the hardware ports; the two
    :class:`OperandFormat` objects ``a_format``/``b_format`` map one to the other. ``table()``
    is the full product table ``T[i, j] = mul(value(code i), value(code j))``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..numerics import as_int64, check_range, from_code, int_range, to_code
from ..spec import from_spec, to_spec

__all__ = [
    "OperandFormat",
    "Multiplier",
    "multiplier",
    "TABLE_MAX_BITS",
    "check_int_param",
    "check_bool_param",
    "check_choice_param",
]

#: ``table()`` is offered when both operands have at most this many bits.
TABLE_MAX_BITS = 10


@dataclass(frozen=True)
class OperandFormat:
    """Bit layout of one integer operand port.

    ``encoding`` is ``"unsigned"``, ``"twos"`` (two's complement) or ``"sm"`` (sign-magnitude:
    the MSB is the sign, the other ``bits-1`` bits the magnitude; code ``100…0`` is −0).
    """

    bits: int
    encoding: str = "twos"

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 32:
            raise ValueError(f"operand bits must be an integer in [1, 32], not {self.bits!r}")
        if self.encoding not in ("unsigned", "twos", "sm"):
            raise ValueError(
                f"operand encoding must be one of 'unsigned', 'twos', 'sm', not {self.encoding!r}"
            )
        if self.encoding == "sm" and self.bits < 2:
            raise ValueError("a sign-magnitude operand needs at least 2 bits")

    @property
    def signed(self) -> bool:
        return self.encoding != "unsigned"

    @property
    def range(self) -> tuple[int, int]:
        """Inclusive range of values."""
        if self.encoding == "sm":
            m = (1 << (self.bits - 1)) - 1
            return -m, m
        return int_range(self.bits, self.signed)

    def decode(self, code) -> torch.Tensor:
        """Value of each code (codes are taken modulo ``2**bits``)."""
        code = as_int64(code) & ((1 << self.bits) - 1)
        if self.encoding == "sm":
            mag = code & ((1 << (self.bits - 1)) - 1)
            return torch.where((code >> (self.bits - 1)) & 1 == 1, -mag, mag)
        return from_code(code, self.bits, self.signed)

    def encode(self, value) -> torch.Tensor:
        """Code of each value; ``ValueError`` when a value is out of range."""
        lo, hi = self.range
        value = check_range(value, lo, hi, "operand value")
        if self.encoding == "sm":
            return torch.where(value < 0, (1 << (self.bits - 1)) | -value, value)
        return to_code(value, self.bits)

    def codes(self) -> torch.Tensor:
        """All ``2**bits`` codes in order."""
        return torch.arange(1 << self.bits, dtype=torch.int64)

    def values(self) -> torch.Tensor:
        """Value of every code, indexed by code."""
        return self.decode(self.codes())


def check_int_param(family: str, name: str, value, lo: int, hi: int, why: str = "") -> int:
    """Return ``value`` if it is an integer in ``[lo, hi]``, else raise a ``ValueError`` that
    names the family, the parameter and the allowed range (``why`` adds the reason).

    >>> check_int_param("roup", "p", 5, 0, 4, "p <= n/2")
    Traceback (most recent call last):
    ...
    ValueError: roup: p=5 is out of range; allowed: p in [0, 4] (p <= n/2)
    """
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        why = f" ({why})" if why else ""
        raise ValueError(f"{family}: {name}={value!r} is out of range; allowed: {name} in "
                         f"[{lo}, {hi}]{why}")
    return value


def check_bool_param(family: str, name: str, value) -> bool:
    """Return ``value`` as a ``bool`` (accepts ``0``/``1``), else raise ``ValueError``."""
    if value in (0, 1) and isinstance(value, (bool, int)):
        return bool(value)
    raise ValueError(f"{family}: {name}={value!r} is out of range; allowed: {name} in {{0, 1}}")


def check_choice_param(family: str, name: str, value, choices) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{family}: unknown {name}={value!r}; allowed: {name} in "
                         f"{{{', '.join(choices)}}}")
    return value


class Multiplier:
    """Base class of every multiplier family (mix into a frozen dataclass and ``register``).

    Subclasses provide ``a_format``, ``b_format`` (properties returning :class:`OperandFormat`)
    and ``_mul(a, b)`` on range-checked int64 value tensors.
    """

    family: ClassVar[str]

    # -- interface every family implements ------------------------------------------------
    @property
    def a_format(self) -> OperandFormat:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def b_format(self) -> OperandFormat:  # pragma: no cover - abstract
        raise NotImplementedError

    def _mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- shared behaviour ----------------------------------------------------------------
    @property
    def spec(self) -> str:
        """Canonical spec string (family plus the keys that differ from the defaults)."""
        return to_spec(self)

    @property
    def product_range(self) -> tuple[int, int]:
        """Inclusive bounds of the products over all operand pairs."""
        t = self.table() if self.has_table else None
        if t is not None:
            return int(t.min()), int(t.max())
        alo, ahi = self.a_format.range
        blo, bhi = self.b_format.range
        corners = [x * y for x in (alo, ahi) for y in (blo, bhi)]
        return min(corners), max(corners)

    @property
    def out_bits(self) -> int:
        """Width of a two's-complement signal that holds every product."""
        lo, hi = self.product_range
        bits = 1
        while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
            bits += 1
        return bits

    def mul(self, a, b) -> torch.Tensor:
        """Products of operand values ``a`` and ``b`` (broadcast), as int64."""
        alo, ahi = self.a_format.range
        blo, bhi = self.b_format.range
        a = check_range(a, alo, ahi, f"{self.family}: operand a")
        b = check_range(b, blo, bhi, f"{self.family}: operand b")
        a, b = torch.broadcast_tensors(a, b)
        return self._mul(a, b)

    def mul_codes(self, ca, cb) -> torch.Tensor:
        """Products of operand *codes* (the hardware port bit patterns)."""
        return self.mul(self.a_format.decode(ca), self.b_format.decode(cb))

    @property
    def has_table(self) -> bool:
        return max(self.a_format.bits, self.b_format.bits) <= TABLE_MAX_BITS

    def table(self) -> torch.Tensor:
        """``T[i, j]``: the product of the operands whose codes are ``i`` and ``j`` (int64)."""
        if not self.has_table:
            raise ValueError(
                f"{self.spec}: table() needs operands of at most {TABLE_MAX_BITS} bits, "
                f"got {self.a_format.bits} and {self.b_format.bits}"
            )
        cached = self.__dict__.get("_table_cache")
        if cached is None:
            a = self.a_format.values()[:, None]
            b = self.b_format.values()[None, :]
            cached = self.mul(a, b)
            object.__setattr__(self, "_table_cache", cached)
        return cached.clone()

    def exact(self, a, b) -> torch.Tensor:
        """The exact product of the same operand values (the error reference)."""
        return as_int64(a) * as_int64(b)

    def __str__(self):
        return self.spec


def multiplier(spec: str) -> Multiplier:
    """The multiplier named by ``spec``, e.g. ``multiplier("roup:n=8,p=1,r=4")``."""
    from . import families  # noqa: F401  (registers every family)

    return from_spec(spec, kind="mult")


def replace(m: Multiplier, **changes) -> Multiplier:
    """``dataclasses.replace`` for multipliers (re-validates)."""
    return dataclasses.replace(m, **changes)
