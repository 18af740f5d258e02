"""The exact integer multiplier: the error-free baseline of every approximate family.

``exact:n=8`` is an 8×8 signed (two's complement) multiplier; ``nb`` gives the weight its own
width and ``sa``/``sb`` pick signed or unsigned operands independently:

    P = a · b,   a ∈ [-2^(n-1), 2^(n-1)-1] (sa=1) or [0, 2^n-1] (sa=0), likewise b with nb, sb.

>>> from mixpe.sw.mult import multiplier
>>> m = multiplier("exact:n=12,nb=10,sb=0")
>>> m.mul(-2048, 1023).item(), m.a_format, m.b_format.bits
(-2095104, OperandFormat(bits=12, encoding='twos'), 10)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..spec import register
from .base import Multiplier, OperandFormat, check_bool_param, check_int_param

__all__ = ["ExactMultiplier"]

#: Operand widths accepted by ``exact`` (``OperandFormat`` holds at most 32 bits).
MAX_BITS = 32


@register("exact", kind="mult")
@dataclass(frozen=True)
class ExactMultiplier(Multiplier):
    """Exact ``n``×``nb`` multiplier.

    Parameters
    ----------
    n : int
        Width of operand ``a`` (activation), 1 … 32.
    nb : int
        Width of operand ``b`` (weight), 1 … 32; ``0`` means "same as ``n``".
    sa, sb : bool
        Operand ``a`` / ``b`` is two's complement (``1``) or unsigned (``0``).
    """

    n: int = 8
    nb: int = 0
    sa: bool = True
    sb: bool = True

    def __post_init__(self):
        check_int_param(self.family, "n", self.n, 1, MAX_BITS)
        check_int_param(self.family, "nb", self.nb, 0, MAX_BITS, "0 means nb = n")
        object.__setattr__(self, "sa", check_bool_param(self.family, "sa", self.sa))
        object.__setattr__(self, "sb", check_bool_param(self.family, "sb", self.sb))
        # |a·b| < 2^(na+nb) only overflows int64 for two unsigned 32-bit operands
        if not self.sa and not self.sb and self.a_bits + self.b_bits > 63:
            raise ValueError(
                f"{self.family}: n={self.n}, nb={self.nb} is out of range for two unsigned "
                f"operands; allowed: n + nb <= 63 (the product must fit in int64)"
            )

    @property
    def a_bits(self) -> int:
        return self.n

    @property
    def b_bits(self) -> int:
        return self.nb or self.n

    @property
    def a_format(self) -> OperandFormat:
        return OperandFormat(self.a_bits, "twos" if self.sa else "unsigned")

    @property
    def b_format(self) -> OperandFormat:
        return OperandFormat(self.b_bits, "twos" if self.sb else "unsigned")

    def _mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b
