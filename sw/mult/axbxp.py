"""Ax-BxP: approximate blocked fixed-point multiplication (Elangovan, Jain, Raghunathan).

Seed spec §1.3. An operand magnitude ``X`` of ``n`` bits is cut into ``B = n/k`` blocks of ``k``
bits, ``X = Σ_i X_i·2^(k·i)`` with ``X_i = (X >> k·i) & (2^k - 1)``. The exact product is the sum
of all ``B²`` block products ``X_i·W_j·2^(k(i+j))``. Ax-BxP keeps ``l`` blocks per operand and
computes only the ``l²`` products of kept blocks:

    X~ = Σ_{i∈S_X} X_i·2^(k·i),   P~ = Σ_{i∈S_X} Σ_{j∈S_W} X_i·W_j·2^(k(i+j)) = X~ · W~.

The last identity (the product of the truncated operands equals the sum of the kept block
products) is what the vectorized model uses; ``tests/naive_models.py`` enumerates the block pairs.

Block selection (``select``, [ASSUME] in the spec):

* ``dynamic`` (default): per value, ``top`` is the index of the most significant non-zero block and
  ``S = {top, top-1, …, top-l+1} ∩ [0, B)``; the value 0 keeps nothing. The hardware stores the
  ``l·k`` kept bits plus the ``⌈log2 B⌉``-bit index ``top``: a float with a block exponent.
* ``static``: ``S = {B-1, …, B-l}`` for every value (truncation to the ``l·k`` MSBs).

Rounding (``round=1``, [ASSUME], default off): when blocks below the kept ones were dropped
(``lo = min S > 0``), the kept field ``F = X >> k·lo`` (``l·k`` bits) is incremented by the MSB
of the first dropped block, bit ``k·lo - 1`` of ``X``. The carry ripples through the kept blocks
only; **if it would leave the field** (``F = 2^(l·k) - 1``) **the field saturates** at all ones,
so the kept block positions never change and no renormalization is needed:

    X~ = min(F + X[k·lo - 1], 2^(l·k) - 1) << k·lo.

Signed operands (``sa``/``sb``, [ASSUME]): two's complement on the port, sign-magnitude inside. The
magnitude ``|x| ≤ 2^(n-1)`` is blocked over ``n`` bits and ``P~ = sign(a)·sign(b)·|a|~·|b|~``.

Composable mode (``mode=composable``, Bit-Fusion style): an ``n``×``n`` multiplier built from
``k``×``k`` blocks that runs either as one exact ``n``×``n`` product or, at precision
``q ∈ {k, 2k, 4k, …, n}``, as ``(n/q)²`` independent exact ``q``×``q`` lane products
(:meth:`AxBxPMultiplier.mul_lanes`) or their sum (:meth:`AxBxPMultiplier.mul_dot`). Lane operands
are ``q``-bit two's complement when ``sa``/``sb`` (the top block of a lane is a signed block), else
unsigned. Composition is exact, so ``l`` must be 0 and ``round`` 0 in this mode. ``out`` tells
the hardware twin whether to output the lane sum (``dot``) or every lane product (``lanes``).

>>> from mixpe.sw.mult import multiplier
>>> multiplier("axbxp:n=8,k=2,l=2").mul(109, 23).item()      # seed spec §1.4, row 1
1920
>>> multiplier("axbxp:n=8,k=2,l=2,sa=0,sb=0").mul(200, 77).item()
12288
>>> m = multiplier("axbxp:mode=composable")
>>> m.precisions, m.lanes(4), m.mul_dot([[1, -2, 3, 7]], [[5, 5, -8, -8]], 4).tolist()
((2, 4, 8), 4, [-85])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..numerics import as_int64, check_range
from ..spec import register
from .base import (
    Multiplier,
    OperandFormat,
    check_bool_param,
    check_choice_param,
    check_int_param,
)

__all__ = ["AxBxPMultiplier"]

SELECTS = ("dynamic", "static")
MODES = ("fixed", "composable")
OUTS = ("dot", "lanes")


@register("axbxp", kind="mult")
@dataclass(frozen=True)
class AxBxPMultiplier(Multiplier):
    """Ax-BxP ``n``-bit multiplier with ``k``-bit blocks keeping ``l`` blocks per operand.

    Parameters
    ----------
    n : int
        Operand width, 1 … 32 (both operands).
    k : int
        Block width; must divide ``n``.
    l : int
        Kept blocks per operand, ``0 … n/k``; ``0`` (or ``n/k``) keeps all blocks (exact).
    select : str
        ``dynamic`` (from the leading non-zero block) or ``static`` (the ``l`` top blocks).
    round : bool
        Round the lowest kept block with the MSB of the first dropped block (saturating).
    sa, sb : bool
        Operand ``a`` / ``b`` is signed (two's complement port, sign-magnitude inside).
    mode : str
        ``fixed`` or ``composable`` (Bit-Fusion style precisions ``k, 2k, …, n``).
    out : str
        Hardware output of a composable unit: ``dot`` (lane sum) or ``lanes``.
    """

    n: int = 8
    k: int = 2
    l: int = 0
    select: str = "dynamic"
    round: bool = False
    sa: bool = True
    sb: bool = True
    mode: str = "fixed"
    out: str = "dot"

    def __post_init__(self):
        fam = self.family
        check_int_param(fam, "n", self.n, 1, 32)
        check_int_param(fam, "k", self.k, 1, self.n, "k <= n")
        if self.n % self.k:
            divisors = ", ".join(str(d) for d in range(1, self.n + 1) if self.n % d == 0)
            raise ValueError(
                f"{fam}: k={self.k} does not divide n={self.n}; allowed: k in {{{divisors}}}"
            )
        check_int_param(fam, "l", self.l, 0, self.blocks, "l <= n/k; 0 keeps all blocks")
        check_choice_param(fam, "select", self.select, SELECTS)
        check_choice_param(fam, "mode", self.mode, MODES)
        check_choice_param(fam, "out", self.out, OUTS)
        for name in ("round", "sa", "sb"):
            object.__setattr__(self, name, check_bool_param(fam, name, getattr(self, name)))
        if not self.sa and not self.sb and self.n > 31:
            raise ValueError(f"{fam}: n={self.n} is out of range for two unsigned operands; "
                             f"allowed: n in [1, 31] (the product must fit in int64)")
        if self.mode == "composable":
            if self.l != 0:
                raise ValueError(
                    f"{fam}: l={self.l} is out of range for mode=composable; allowed: l in "
                    f"[0, 0] (composable mode composes exact products, it drops no blocks)"
                )
            if self.round:
                raise ValueError(f"{fam}: round=1 is not allowed with mode=composable; "
                                 f"allowed: round in {{0}} (composition is exact)")
            if self.blocks & (self.blocks - 1):
                raise ValueError(
                    f"{fam}: n/k={self.blocks} is out of range for mode=composable; allowed: "
                    f"n/k a power of two (precisions k, 2k, 4k, …, n)"
                )
        elif self.out != "dot":
            raise ValueError(f"{fam}: out={self.out!r} needs mode=composable; allowed with "
                             f"mode=fixed: out in {{dot}}")

    # -- geometry ------------------------------------------------------------------------
    @property
    def blocks(self) -> int:
        """``B = n/k``: blocks per operand."""
        return self.n // self.k

    @property
    def kept(self) -> int:
        """Blocks kept per operand (``l``, or ``B`` when ``l == 0``)."""
        return self.l or self.blocks

    @property
    def a_format(self) -> OperandFormat:
        return OperandFormat(self.n, "twos" if self.sa else "unsigned")

    @property
    def b_format(self) -> OperandFormat:
        return OperandFormat(self.n, "twos" if self.sb else "unsigned")

    # -- fixed mode ----------------------------------------------------------------------
    def approximate(self, x) -> torch.Tensor:
        """``sign(x)·|x|~``: the operand value as the kept (and rounded) blocks represent it.

        >>> from mixpe.sw.mult import multiplier
        >>> multiplier("axbxp:l=2").approximate([109, -23, 5, 0]).tolist()
        [96, -20, 5, 0]
        """
        x = as_int64(x)
        mag = x.abs()
        B, L, k = self.blocks, self.kept, self.k
        if L >= B:
            return x.clone()
        if self.select == "static":
            lo = torch.full_like(mag, B - L)
        else:
            top = torch.zeros_like(mag)
            for i in range(1, B):
                # some block at index >= i is non-zero, so the leading block is at least i
                top = torch.where((mag >> (k * i)) != 0, i, top)
            lo = (top - (L - 1)).clamp(min=0)
        shift = k * lo
        field = mag >> shift
        if self.round:
            rbit = torch.where(lo > 0, (mag >> (shift - 1).clamp(min=0)) & 1, 0)
            field = torch.minimum(field + rbit, torch.tensor((1 << (k * L)) - 1))
        kept = field << shift
        return torch.where(x < 0, -kept, kept)

    def _mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.approximate(a) * self.approximate(b)

    # -- composable mode -----------------------------------------------------------------
    @property
    def precisions(self) -> tuple[int, ...]:
        """Lane widths the unit supports: ``(k, 2k, …, n)`` when composable, else ``(n,)``."""
        if self.mode != "composable":
            return (self.n,)
        out, q = [], self.k
        while q <= self.n:
            out.append(q)
            q *= 2
        return tuple(out)

    def _check_precision(self, q) -> int:
        if q not in self.precisions:
            allowed = ", ".join(map(str, self.precisions))
            raise ValueError(f"{self.family}: precision q={q!r} is out of range; allowed: "
                             f"q in {{{allowed}}}")
        return q

    def lanes(self, q: int) -> int:
        """Number of independent lane products at precision ``q``: ``(n/q)²``."""
        return (self.n // self._check_precision(q)) ** 2

    def lane_formats(self, q: int) -> tuple[OperandFormat, OperandFormat]:
        """Formats of one ``a`` lane and one ``b`` lane at precision ``q``."""
        self._check_precision(q)
        return (OperandFormat(q, "twos" if self.sa else "unsigned"),
                OperandFormat(q, "twos" if self.sb else "unsigned"))

    def mul_lanes(self, a, b, q: int) -> torch.Tensor:
        """Lane products at precision ``q``: ``[..., lanes]`` × ``[..., lanes]`` → ``[..., lanes]``.

        Every lane is the exact product of its own ``q``-bit operands (values, broadcast over
        the leading dimensions).
        """
        n_lanes = self.lanes(q)
        fa, fb = self.lane_formats(q)
        a, b = as_int64(a), as_int64(b)
        for name, x in (("a", a), ("b", b)):
            if x.dim() == 0 or x.shape[-1] != n_lanes:
                raise ValueError(f"{self.family}: operand {name} must have a last dimension of "
                                 f"{n_lanes} lanes at q={q}, got shape {tuple(x.shape)}")
        check_range(a, *fa.range, f"{self.family}: lane operand a (q={q})")
        check_range(b, *fb.range, f"{self.family}: lane operand b (q={q})")
        a, b = torch.broadcast_tensors(a, b)
        return a * b

    def mul_dot(self, a, b, q: int) -> torch.Tensor:
        """Sum of the lane products at precision ``q``: ``[..., lanes]`` → ``[...]``."""
        return self.mul_lanes(a, b, q).sum(dim=-1)
