"""Emulation policies: how each multiplier family decomposes into exact integer GEMMs.

:func:`decompositions` is a :func:`functools.singledispatch` registry keyed by the multiplier
class. A policy returns a list of :class:`~._engine.Decomposition` alternatives written with
the family's own vectorized functions; the planner (:func:`~._engine.build_plan`) proves each
against ``mul`` over every operand pair, factorizes the residual of partial ones, merges terms
and keeps the cheapest. A new family registers its policy with::

    @decompositions.register
    def _(m: MyMultiplier):
        return [Decomposition((Term(Transform(f_a), Transform(f_b)),), name="mine")]

A family without a policy still runs (generic table factorization, one-hot GEMMs, gather).
"""

from __future__ import annotations

import functools

import torch

from ..mult.axbxp import AxBxPMultiplier
from ..mult.base import Multiplier
from ..mult.decoded import DecodedMultiplier
from ..mult.exact import ExactMultiplier
from ..mult.lutna import LutNaMultiplier
from ..mult.roup import RoupMultiplier, booth_digits
from ..numerics import round_to_multiple_half_up
from ._engine import IDENTITY, Decomposition, Term, Transform

__all__ = ["decompositions"]


@functools.singledispatch
def decompositions(mult: Multiplier) -> list[Decomposition]:
    """Decompositions of ``mult`` (none for an unknown family: the generic paths apply)."""
    return []


@decompositions.register
def _exact(m: ExactMultiplier) -> list[Decomposition]:
    # a·b: one GEMM on the operand values
    return [Decomposition((Term(IDENTITY, IDENTITY),), name="exact")]


@decompositions.register
def _axbxp(m: AxBxPMultiplier) -> list[Decomposition]:
    # seed spec §1.3: P~ = sign(a)|a|~ · sign(b)|b|~, the product of the truncated operands
    # (composable mode composes exact products: approximate() is the identity there)
    if m.kept >= m.blocks:
        return [Decomposition((Term(IDENTITY, IDENTITY),), name="axbxp: all blocks")]
    t = Transform(m.approximate, "axbxp truncated operand")
    return [Decomposition((Term(t, t),), name="axbxp: truncated operands")]


def _round(r: int) -> Transform:
    if r == 0:
        return IDENTITY
    return Transform(lambda v: round_to_multiple_half_up(v, r), f"round half up at bit {r}")


def _perforate(m: RoupMultiplier, j: int) -> Transform:
    """``Y`` rounded half-up to ``4**j`` = the Booth rows ``>= j`` (seed spec §4.5)."""
    if j == 0:
        return IDENTITY
    return Transform(lambda v: round_to_multiple_half_up(v, 2 * j), f"Booth rows >= {j}")


def _digit_is(m: RoupMultiplier, j: int, d: int) -> Transform:
    return Transform(lambda v: (booth_digits(v, m.booth_bits)[j] == d).to(torch.int64),
                     f"Booth digit {j} == {d}")


def _row_error(r: int, j: int, d: int) -> Transform:
    def err(x):
        row = (d * x) << (2 * j)
        return round_to_multiple_half_up(row, r) - row
    return Transform(err, f"rounding error of row {j} digit {d}")


@decompositions.register
def _roup(m: RoupMultiplier) -> list[Decomposition]:
    def term(fx: Transform, fy: Transform, shift: int = 0) -> Term:
        # X is the rounded operand, Y the Booth-encoded one (booth=b: X = a, Y = b)
        return Term(fx, fy, shift) if m.booth == "b" else Term(fy, fx, shift)

    if m.round == "operand":
        # R-A: P = X_r · Y_p (seed spec §4.6)
        return [Decomposition((term(_round(m.r), _perforate(m, m.p)),), name="roup: X_r·Y_p")]
    # R-PP: rows 2j >= r are exact, so P = X·Y_p + Σ_{p<=j<r/2} Σ_d [d_j = d]·e_r(d·X·4^j)
    main = term(IDENTITY, _perforate(m, m.p))
    rows = range(m.p, min(-(-m.r // 2), m.booth_bits // 2))
    errors = tuple(term(_row_error(m.r, j, d), _digit_is(m, j, d))
                   for j in rows for d in (-2, -1, 1, 2))
    return [
        Decomposition((main,) + errors, name="roup pp_row: X·Y_p + row rounding errors"),
        Decomposition((main,), complete=False, name="roup pp_row: X·Y_p"),
    ]


@decompositions.register
def _lutna(m: LutNaMultiplier) -> list[Decomposition]:
    c = m.c
    wchunk = c if m.split == "both" else m.nb - 1

    def a_chunk(p):
        return Transform(lambda v: (v >> (c * p)) & ((1 << c) - 1), f"a chunk {p}")

    def w_chunk(q):
        def f(v):
            w = (v.abs() >> (c * q)) & ((1 << wchunk) - 1)
            return torch.where(v < 0, -w, w)
        return Transform(f, f"signed weight chunk {q}")

    # P = sign(b) Σ_{(p,q) kept} a_p·w_q·2^(c(p+q)) (seed spec §3.3); the planner merges the
    # chunk terms that share an operand (e.g. all p of one q: the activation itself)
    terms = tuple(Term(a_chunk(p), w_chunk(q), c * (p + q)) for p, q in m.terms)
    if m.trunc == 0:
        return [Decomposition(terms, name="lutna: kept chunk products")]
    # truncated LUT entries: the chunk products minus their low bits (residual factorized)
    return [Decomposition(terms, complete=False, name="lutna: chunk products")]


def _compose(fmt, tr: Transform) -> Transform:
    """``value -> tr(m) << e`` for the ``(m, e)`` that ``fmt`` decodes the value's code to."""
    if tr.is_identity:
        return IDENTITY  # m << e is the value

    def f(v):
        mm, e = fmt.decode(fmt.encode(v.contiguous()))
        return tr(mm) << e
    return Transform(f, f"{tr.name} on the {fmt.spec} mantissa")


@decompositions.register
def _decoded(m: DecodedMultiplier) -> list[Decomposition]:
    # product = core(m_a, m_b) << (e_a + e_b) = Σ_t (f_t(m_a) << e_a)(g_t(m_b) << e_b) << s_t
    out = []
    for d in decompositions(m.core):
        if d.complete:
            terms = tuple(Term(_compose(m.a_format, t.fa), _compose(m.b_format, t.fb), t.shift)
                          for t in d.terms)
            out.append(Decomposition(terms, name=f"decoded {d.name}"))
    return out
