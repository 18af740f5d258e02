"""ROUP: radix-4 Booth multipliers with perforation and rounding (Leon et al., MAx-DNN).

Seed spec §4.4–4.6. The Booth-encoded operand ``Y`` (``m`` bits, two's complement, ``y_{-1} = 0``)
is recoded into ``m/2`` radix-4 digits

    d_j = -2·y_{2j+1} + y_{2j} + y_{2j-1} ∈ {-2, …, 2},   Y = Σ_j d_j·4^j,

and the product is the sum of the partial-product rows ``PP_j = d_j·X·4^j``.

Perforation ``p`` omits the ``p`` least significant rows. By the identity of §4.5 this equals
multiplying by ``Y`` rounded half-up to a multiple of ``4^p``:

    Σ_{j≥p} d_j·X·4^j = X·Y_p,   Y_p = ⌊Y / 4^p⌋·4^p + y_{2p-1}·4^p.

Rounding ``r`` ([REC]/[ASSUME], selected by ``round``):

* ``operand`` (R-A, default): the non-encoded operand is rounded half-up at bit ``r``,
  ``X_r = ⌊(X + 2^(r-1)) / 2^r⌋·2^r`` (it may need one more bit), and ``P = X_r·Y_p``.
* ``pp_row`` (R-PP): every surviving row is rounded half-up at absolute column ``r``,
  ``P = Σ_{j≥p} ⌊(d_j·X·4^j + 2^(r-1)) / 2^r⌋·2^r``; rows with ``2j ≥ r`` are unchanged.

Operand roles (``booth``, [ASSUME]): ``b`` (default) Booth-encodes the weight ``b`` and rounds the
activation ``a`` (``X = a``, ``Y = b``); ``a`` swaps them. ``signed=0`` is the unsigned wrapper
(§4.3): ``n``-bit unsigned operands, ``Y`` zero-extended to ``m = n + 2`` bits (``n/2 + 1``
digits, the top one ∈ {0, 1}); ``signed=1`` uses ``m = n``.

The vectorized model uses the ``Y_p`` / ``X_r`` identities (R-A) and a loop over the digit
positions on tensors (R-PP); ``tests/naive_models.py`` loops over Booth digits per operand pair.

>>> from mixpe.sw.mult import multiplier
>>> [multiplier(s).mul(93, -45).item() for s in ("roup:p=1", "roup:p=1,r=4",
...                                              "roup:p=1,r=4,round=pp_row")]
[-4092, -4224, -4096]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..numerics import round_to_multiple_half_up
from ..spec import register
from .base import (
    Multiplier,
    OperandFormat,
    check_bool_param,
    check_choice_param,
    check_int_param,
)

__all__ = ["RoupMultiplier", "booth_digits"]

ROUNDS = ("operand", "pp_row")
BOOTHS = ("b", "a")


def booth_digits(y, m: int) -> list[torch.Tensor]:
    """Radix-4 Booth digits ``d_0 … d_{m/2-1}`` of the ``m``-bit two's-complement code of ``y``.

    >>> [int(d) for d in booth_digits(torch.tensor(-45), 8)]
    [-1, 1, 1, -1]
    """
    y = torch.as_tensor(y, dtype=torch.int64)

    def bit(i):
        return (y >> i) & 1 if i >= 0 else torch.zeros_like(y)

    return [-2 * bit(2 * j + 1) + bit(2 * j) + bit(2 * j - 1) for j in range(m // 2)]


@register("roup", kind="mult")
@dataclass(frozen=True)
class RoupMultiplier(Multiplier):
    """ROUP(``p``, ``r``) ``n``×``n`` radix-4 Booth multiplier.

    Parameters
    ----------
    n : int
        Operand width, even, 2 … 32 (``signed=0``: 2 … 30).
    p : int
        Perforated least significant partial-product rows, ``0 … n/2``.
    r : int
        Rounding position, ``0 … n`` (``0``: no rounding).
    round : str
        ``operand`` (R-A: round the non-encoded operand) or ``pp_row`` (R-PP: round each row).
    booth : str
        Booth-encoded (perforated) operand: ``b`` (weight) or ``a`` (activation).
    signed : bool
        Two's-complement operands (``1``) or the unsigned wrapper (``0``).
    """

    n: int = 8
    p: int = 0
    r: int = 0
    round: str = "operand"
    booth: str = "b"
    signed: bool = True

    def __post_init__(self):
        fam = self.family
        object.__setattr__(self, "signed", check_bool_param(fam, "signed", self.signed))
        hi = 32 if self.signed else 30  # unsigned: X_r·Y_p < 2^(2n+1) must fit in int64
        check_int_param(fam, "n", self.n, 2, hi, "n even for radix-4 Booth")
        if self.n % 2:
            raise ValueError(f"{fam}: n={self.n} is odd; allowed: n even in [2, {hi}] "
                             f"(radix-4 Booth recodes bit pairs)")
        check_int_param(fam, "p", self.p, 0, self.n // 2, "p <= n/2 perforated rows")
        check_int_param(fam, "r", self.r, 0, self.n, "r <= n; 0 means no rounding")
        check_choice_param(fam, "round", self.round, ROUNDS)
        check_choice_param(fam, "booth", self.booth, BOOTHS)

    @property
    def booth_bits(self) -> int:
        """``m``: width of the Booth-encoded operand (``n``, or ``n + 2`` unsigned)."""
        return self.n if self.signed else self.n + 2

    @property
    def a_format(self) -> OperandFormat:
        return OperandFormat(self.n, "twos" if self.signed else "unsigned")

    @property
    def b_format(self) -> OperandFormat:
        return self.a_format

    def _mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x, y = (a, b) if self.booth == "b" else (b, a)
        if self.round == "operand":
            return round_to_multiple_half_up(x, self.r) * self.perforate(y)
        total = torch.zeros_like(x)
        for j, d in enumerate(booth_digits(y, self.booth_bits)):
            if j >= self.p:
                total += round_to_multiple_half_up(d * x << (2 * j), self.r)
        return total

    def perforate(self, y) -> torch.Tensor:
        """``Y_p``: the value the surviving Booth rows encode (``y`` rounded half-up to ``4^p``).

        >>> from mixpe.sw.mult import multiplier
        >>> multiplier("roup:p=1").perforate([-45, 127, -3]).tolist()
        [-44, 128, -4]
        """
        return round_to_multiple_half_up(y, 2 * self.p)
