"""Exact integer factorizations of small integer tables: ``T = Σ_r u_r ⊗ v_r``.

The emulator turns a multiplier into a few exact GEMMs when its product table (or the residual
of a family's own decomposition) has low rank with *integer* factors. :func:`factor_exact` is a
greedy Wedderburn rank reduction whose pivots divide their column or row, so every factor stays
an integer and each step lowers the rank by exactly one: when it succeeds, the number of terms
is the rank of the table.
"""

from __future__ import annotations

import torch

__all__ = ["factor_exact", "unique_rows"]

#: Entries beyond this magnitude are not factorized (products must not overflow int64).
_MAX_ENTRY = 1 << 40


def _score(u: torch.Tensor, v: torch.Tensor) -> tuple:
    return (int(u.abs().max()) * int(v.abs().max()), int((u != 0).sum() + (v != 0).sum()))


def factor_exact(table: torch.Tensor, max_terms: int = 32,
                 candidates: int = 48) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Integer vectors ``(u_r, v_r)`` with ``table == Σ_r outer(u_r, v_r)``, or ``None``.

    ``None`` when the table needs more than ``max_terms`` terms or no pivot divides its row
    or column. Among the pivots of smallest magnitude the one that keeps the factors smallest
    is taken.

    >>> t = torch.tensor([[1, 2], [3, 6]]) + torch.tensor([[0, 0], [0, 1]])
    >>> terms = factor_exact(t)
    >>> len(terms), bool((sum(torch.outer(u, v) for u, v in terms) == t).all())
    (2, True)
    """
    R = table.to(torch.int64).clone()
    if R.numel() and int(R.abs().max()) >= _MAX_ENTRY:
        return None
    terms: list[tuple[torch.Tensor, torch.Tensor]] = []
    while bool(R.any()):
        if len(terms) >= max_terms:
            return None
        absR = R.abs()
        best = None
        for mag in torch.unique(absR[absR > 0])[:4].tolist():
            ii, jj = torch.nonzero(absR == mag, as_tuple=True)
            if ii.numel() > candidates:
                pick = torch.linspace(0, ii.numel() - 1, candidates).round().long()
                ii, jj = ii[pick], jj[pick]
            for i, j in zip(ii.tolist(), jj.tolist()):
                p = int(R[i, j])
                col, row = R[:, j], R[i, :]
                for u, v in ((col // p, row), (col, row // p)):
                    ok = bool((u * p == col).all()) if v is row else bool((v * p == row).all())
                    if not ok:
                        continue
                    s = _score(u, v)
                    if best is None or s < best[0]:
                        best = (s, u.clone(), v.clone())
            if best is not None:
                break
        if best is None:
            return None
        _, u, v = best
        R -= torch.outer(u, v)
        terms.append((u, v))
    return terms


def unique_rows(table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cls)``: the distinct rows of ``table`` and the class of every row.

    >>> rows, cls = unique_rows(torch.tensor([[1, 2], [3, 4], [1, 2]]))
    >>> rows.tolist(), cls.tolist()
    ([[1, 2], [3, 4]], [0, 1, 0])
    """
    rows, cls = torch.unique(table, dim=0, return_inverse=True)
    return rows, cls
