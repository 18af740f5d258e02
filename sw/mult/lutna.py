"""LUT-NA: look-up-table multiplication split by divide-and-conquer (Sen et al.).

Seed spec §3.3 ([ASSUME] throughout). The activation ``a`` is ``n``-bit unsigned, the weight
``b`` is ``nb``-bit sign-magnitude (``|b| < 2^(nb-1)``, code ``100…0`` is −0). With chunk width
``c``:

    a = Σ_p a_p·2^(c·p),   |b| = Σ_q w_q·2^(c·q),   a_p, w_q ∈ [0, 2^c)

``split=both`` (default) looks up a shared ``2^c × 2^c`` table ``LUT_c[u][v] = u·v`` per term:

    a·|b| = Σ_p Σ_q LUT_c[a_p][w_q] << c(p+q),   P = (-1)^s · a·|b|.

``split=act`` splits only the activation and gives each (stationary) weight a programmable
table ``LUT_w[u] = |b|·u``: ``a·|b| = Σ_p LUT_w[a_p] << c·p``. The weight is then one chunk, so
its terms are written ``(p, 0)``.

A-LUT-NA (approximate, all off by default) removes terms or stored bits:

* ``drop``: the terms ``(p, q)`` that are not computed, written ``p.q`` joined by ``+``
  (``drop=0.0+1.0``);
* ``tau``: only terms with ``p + q ≥ tau`` are computed;
* ``trunc``: every LUT entry is stored truncated to a multiple of ``2^trunc``
  (``LUT[u][v] = (u·v) & ~(2^trunc - 1)``, round toward zero: the low bits are not stored).

The vectorized model computes each kept term as ``a_p·w_q`` (what the table holds);
``tests/naive_models.py`` builds the tables and looks them up.

>>> from mixpe.sw.mult import multiplier
>>> [multiplier(s).mul(183, -94).item() for s in ("lutna", "lutna:split=act", "lutna:drop=0.0")]
[-17202, -17202, -17104]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..spec import SpecError, register
from .base import Multiplier, OperandFormat, check_choice_param, check_int_param

__all__ = ["LutNaMultiplier", "parse_terms", "format_terms"]

SPLITS = ("both", "act")


def parse_terms(text: str) -> tuple[tuple[int, int], ...]:
    """Parse ``"p.q+p.q"`` into ``((p, q), …)`` (empty text: no terms).

    >>> parse_terms("0.0+1.0")
    ((0, 0), (1, 0))
    """
    text = text.strip()
    if not text:
        return ()
    terms = []
    for item in text.split("+"):
        p, dot, q = item.strip().partition(".")
        try:
            if not dot:
                raise ValueError
            terms.append((int(p), int(q)))
        except ValueError:
            raise SpecError(f"lutna: drop term {item!r} is not of the form p.q "
                            f"(e.g. drop=0.0+1.0)") from None
    return tuple(terms)


def format_terms(terms) -> str:
    """Inverse of :func:`parse_terms`.

    >>> format_terms(((0, 0), (0, 1)))
    '0.0+0.1'
    """
    return "+".join(f"{p}.{q}" for p, q in terms)


@register("lutna", kind="mult")
@dataclass(frozen=True)
class LutNaMultiplier(Multiplier):
    """LUT-NA ``n``-bit unsigned × ``nb``-bit sign-magnitude multiplier with chunk ``c``.

    Parameters
    ----------
    n : int
        Activation width (unsigned), 1 … 32; ``c`` must divide it.
    nb : int
        Weight width (sign + ``nb-1`` magnitude bits), 2 … 32; with ``split=both``, ``c``
        must divide ``nb - 1``.
    c : int
        Chunk width.
    split : str
        ``both`` (shared ``LUT_c``) or ``act`` (per-weight programmable LUT).
    drop : tuple of (p, q)
        Terms left out (A-LUT-NA); spec syntax ``p.q+p.q``.
    tau : int
        Keep only the terms with ``p + q >= tau``.
    trunc : int
        LUT entries are stored as multiples of ``2**trunc``.
    """

    n: int = 8
    nb: int = 9
    c: int = 4
    split: str = "both"
    drop: tuple = ()
    tau: int = 0
    trunc: int = 0

    _spec_codecs = {"drop": (parse_terms, format_terms)}

    def __post_init__(self):
        fam = self.family
        check_int_param(fam, "n", self.n, 1, 32)
        check_int_param(fam, "nb", self.nb, 2, 32, "sign bit + nb-1 magnitude bits")
        check_choice_param(fam, "split", self.split, SPLITS)
        check_int_param(fam, "c", self.c, 1, self.n, "c <= n")
        for name, width in (("n", self.n), ("nb-1", self.nb - 1)):
            if name == "nb-1" and self.split == "act":
                continue  # the weight is not split
            if width % self.c:
                divisors = ", ".join(str(d) for d in range(1, self.n + 1)
                                     if self.n % d == 0
                                     and (self.split == "act" or (self.nb - 1) % d == 0))
                raise ValueError(f"{fam}: c={self.c} does not divide {name}={width}; allowed: "
                                 f"c in {{{divisors}}}")
        P, Q = self.a_chunks, self.b_chunks
        try:
            terms = tuple(sorted({(int(p), int(q)) for p, q in self.drop}))
        except (TypeError, ValueError):
            raise ValueError(f"{fam}: drop={self.drop!r} must be a sequence of (p, q) terms"
                             ) from None
        for p, q in terms:
            if not (0 <= p < P and 0 <= q < Q):
                raise ValueError(
                    f"{fam}: drop term {p}.{q} is out of range; allowed: p in [0, {P - 1}], "
                    f"q in [0, {Q - 1}]" + (" (split=act: q = 0)" if self.split == "act" else "")
                )
        object.__setattr__(self, "drop", terms)
        check_int_param(fam, "tau", self.tau, 0, P + Q - 2, "tau <= max p + max q")
        check_int_param(fam, "trunc", self.trunc, 0, self.entry_bits,
                        "trunc <= LUT entry width")

    # -- geometry ------------------------------------------------------------------------
    @property
    def a_chunks(self) -> int:
        """Number of activation chunks ``n / c``."""
        return self.n // self.c

    @property
    def b_chunks(self) -> int:
        """Number of weight chunks: ``(nb - 1) / c`` (``split=both``) or 1 (``split=act``)."""
        return (self.nb - 1) // self.c if self.split == "both" else 1

    @property
    def entry_bits(self) -> int:
        """Width of one LUT entry: ``2c`` (``both``) or ``c + nb - 1`` (``act``)."""
        return 2 * self.c if self.split == "both" else self.c + self.nb - 1

    @property
    def terms(self) -> tuple[tuple[int, int], ...]:
        """The computed terms ``(p, q)``: all of them minus ``drop`` and those below ``tau``."""
        return tuple((p, q) for p in range(self.a_chunks) for q in range(self.b_chunks)
                     if (p, q) not in self.drop and p + q >= self.tau)

    @property
    def a_format(self) -> OperandFormat:
        return OperandFormat(self.n, "unsigned")

    @property
    def b_format(self) -> OperandFormat:
        return OperandFormat(self.nb, "sm")

    def _mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        c = self.c
        mag = b.abs()
        wchunk = c if self.split == "both" else self.nb - 1
        keep = ~((1 << self.trunc) - 1)
        total = torch.zeros_like(a)
        for p, q in self.terms:
            a_p = (a >> (c * p)) & ((1 << c) - 1)
            w_q = (mag >> (c * q)) & ((1 << wchunk) - 1)
            total += ((a_p * w_q) & keep) << (c * (p + q))
        return torch.where(b < 0, -total, total)
