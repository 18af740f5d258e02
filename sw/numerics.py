"""Explicit rounding, overflow and code conversion on integer tensors.

Every function here is pure, works on ``torch.int64`` tensors (Python ints are accepted and
converted) and names its rounding or overflow rule, so that the reference never relies on
``torch.round`` (half to even) or on silent int64 wrap-around.
"""

from __future__ import annotations

import torch

__all__ = [
    "as_int64",
    "wrap",
    "saturate",
    "overflowed",
    "int_range",
    "to_code",
    "from_code",
    "shift_round_half_up",
    "round_to_multiple_half_up",
    "check_range",
]


def as_int64(x) -> torch.Tensor:
    """Return ``x`` as an int64 tensor (no copy when it already is one).

    >>> as_int64([1, -2]).dtype
    torch.int64
    """
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype.is_complex:
            raise TypeError(f"Expected an integer tensor, not {x.dtype}")
        return x if x.dtype == torch.int64 else x.to(torch.int64)
    return torch.as_tensor(x, dtype=torch.int64)


def int_range(bits: int, signed: bool) -> tuple[int, int]:
    """Inclusive range ``(lo, hi)`` of a ``bits``-wide two's-complement or unsigned integer.

    >>> int_range(8, True), int_range(8, False)
    ((-128, 127), (0, 255))
    """
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be a positive integer, not {bits!r}")
    if signed:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def wrap(x, bits: int, signed: bool = True) -> torch.Tensor:
    """Two's-complement wrap-around: ``x mod 2**bits``, read back as signed or unsigned.

    >>> wrap(torch.tensor([127 + 1, -129, 300]), 8).tolist()
    [-128, 127, 44]
    """
    x = as_int64(x)
    lo, _ = int_range(bits, signed)
    if bits >= 64:
        return x.clone()
    m = 1 << bits
    return torch.remainder(x - lo, m) + lo


def saturate(x, bits: int, signed: bool = True) -> torch.Tensor:
    """Clamp ``x`` to the range of a ``bits``-wide integer.

    >>> saturate(torch.tensor([200, -200, 5]), 8).tolist()
    [127, -128, 5]
    """
    x = as_int64(x)
    lo, hi = int_range(bits, signed)
    return x.clamp(lo, hi)


def overflowed(x, bits: int, signed: bool = True) -> torch.Tensor:
    """Boolean mask of elements outside the range of a ``bits``-wide integer.

    >>> overflowed(torch.tensor([127, 128]), 8).tolist()
    [False, True]
    """
    x = as_int64(x)
    lo, hi = int_range(bits, signed)
    return (x < lo) | (x > hi)


def to_code(x, bits: int) -> torch.Tensor:
    """Two's-complement code (``0 … 2**bits-1``) of an integer.

    >>> to_code(torch.tensor([-1, 5]), 4).tolist()
    [15, 5]
    """
    return as_int64(x) & ((1 << bits) - 1)


def from_code(c, bits: int, signed: bool) -> torch.Tensor:
    """Integer value of a ``bits``-wide code, two's complement when ``signed``.

    >>> from_code(torch.tensor([15, 5]), 4, True).tolist()
    [-1, 5]
    """
    c = as_int64(c) & ((1 << bits) - 1)
    if signed:
        return c - ((c >> (bits - 1)) & 1) * (1 << bits)
    return c


def shift_round_half_up(x, s: int) -> torch.Tensor:
    """``floor((x + 2**(s-1)) / 2**s)``: arithmetic right shift by ``s`` rounding half up.

    ``s == 0`` returns ``x`` unchanged.

    >>> shift_round_half_up(torch.tensor([5, 6, -5, -6]), 2).tolist()
    [1, 2, -1, -1]
    """
    x = as_int64(x)
    if s < 0:
        raise ValueError(f"shift must be non-negative, not {s}")
    if s == 0:
        return x.clone()
    return (x + (1 << (s - 1))) >> s


def round_to_multiple_half_up(x, s: int) -> torch.Tensor:
    """Round ``x`` to a multiple of ``2**s``, half up: ``shift_round_half_up(x, s) << s``.

    >>> round_to_multiple_half_up(torch.tensor([93, 94]), 2).tolist()
    [92, 96]
    """
    return shift_round_half_up(x, s) << s


def check_range(x, lo: int, hi: int, name: str) -> torch.Tensor:
    """Raise ``ValueError`` naming ``name`` when any element of ``x`` is outside ``[lo, hi]``."""
    x = as_int64(x)
    if x.numel():
        xmin, xmax = int(x.min()), int(x.max())
        if xmin < lo or xmax > hi:
            bad = xmin if xmin < lo else xmax
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got {bad}")
    return x
