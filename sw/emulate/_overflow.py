"""Accumulator overflow: product-magnitude bounds, exact prefix evaluation, saturation.

The accumulator starts at the bias (0 without one) and adds the products in k order. Its
sticky overflow flag is set when some addition leaves ``[lo, hi]``; before the first such
addition the accumulator holds the exact prefix sum, so in both modes the flag is
"some exact prefix sum ``bias + Σ_{k<=j} p_k`` lies outside the range".

Fast path: ``|prefix| <= |bias| + Σ_k |p_k|`` and ``|p(a, b)| <= α(a)·β(b)``, so an output whose
bound stays in range cannot overflow: its value is the exact sum. Only the other outputs get
their products evaluated one by one (prefix sums for the flag, a saturating scan for the value).
"""

from __future__ import annotations

import torch

from ..numerics import int_range

__all__ = ["magnitude_bounds", "unsafe_outputs", "prefix_eval", "saturating_sum"]

_MARGIN = 1.0 + 2.0 ** -30  # float64 sums of non-negative terms: relative error << 2**-30


def magnitude_bounds(table: torch.Tensor, valid_a=None, valid_b=None, rounds: int = 3):
    """Float64 ``(α, β)`` with ``|table[i, j]| <= α[i]·β[j]`` (tight for product-like tables).

    >>> a, b = magnitude_bounds(torch.tensor([[2, -4], [3, 6]]))
    >>> bool((torch.outer(a, b) >= torch.tensor([[2, 4], [3, 6]])).all())
    True
    """
    t = table.abs().to(torch.float64)
    if valid_a is not None:
        t = t * valid_a[:, None]
    if valid_b is not None:
        t = t * valid_b[None, :]
    beta = t.amax(0).clamp(min=1.0)
    alpha = (t / beta).amax(1)
    for _ in range(rounds):
        alpha_s = alpha.clamp(min=1e-300)
        beta = (t / alpha_s[:, None]).amax(0)
        beta = torch.where(alpha.amax() > 0, beta, torch.zeros_like(beta))
        alpha = (t / beta.clamp(min=1e-300)[None, :]).amax(1)
    # make the inequality safe against the rounding of the divisions
    return alpha * _MARGIN, beta * _MARGIN


def unsafe_outputs(alpha_a: torch.Tensor, beta_b: torch.Tensor, bias, acc_bits: int,
                   gemm_ok: bool = True) -> torch.Tensor:
    """Boolean ``[M, N]``: outputs whose prefix sums might leave the accumulator range.

    ``alpha_a`` is ``α(a)`` ``[M, K]`` and ``beta_b`` is ``β(b)`` ``[K, N]`` (float64).
    """
    lo, hi = int_range(acc_bits, True)
    room_hi = float(hi) * (1 - 2.0 ** -40)
    room_lo = float(lo) * (1 - 2.0 ** -40)
    bias_f = bias.to(torch.float64) if isinstance(bias, torch.Tensor) else float(bias)

    def check(bound):
        bound = bound * _MARGIN + 1.0
        return (bias_f + bound > room_hi) | (bias_f - bound < room_lo)

    if alpha_a.shape[1] == 0:
        # K = 0: nothing is added, and the start value (bias) is checked to be in range
        return torch.zeros(alpha_a.shape[0], beta_b.shape[1], dtype=torch.bool)
    row = alpha_a.sum(1, keepdim=True) * beta_b.amax(0, keepdim=True)
    col = alpha_a.amax(1, keepdim=True) * beta_b.sum(0, keepdim=True)
    unsafe = check(torch.minimum(row, col))
    if gemm_ok and unsafe.numel() and int(unsafe.sum()) > 0.01 * unsafe.numel():
        unsafe = unsafe & check(torch.matmul(alpha_a, beta_b))
    return unsafe


def saturating_sum(p: torch.Tensor, start: torch.Tensor, acc_bits: int) -> torch.Tensor:
    """``s = start; for k: s = clamp(s + p[:, k], lo, hi)`` for every row of ``p`` ``[U, K]``.

    The clamp-add steps ``x -> clamp(x + c, l, h)`` compose into the same form, so the scan is
    a log-depth tree reduction. Falls back to a sequential, int64-overflow-safe loop when the
    partial sums could leave int64.

    >>> saturating_sum(torch.tensor([[100, 100, -50]]), torch.tensor([0]), 8).tolist()
    [77]
    """
    lo, hi = int_range(acc_bits, True)
    u, k = p.shape
    pmax = int(p.abs().max()) if p.numel() else 0
    if acc_bits > 62 or (k + 1) * pmax >= 1 << 61:
        return _saturating_loop(p, start, lo, hi)
    c = p.clone()
    lft = torch.full_like(p, lo)
    rgt = torch.full_like(p, hi)
    while c.shape[1] > 1:
        if c.shape[1] % 2:  # pad with the identity on in-range values
            pad = (0, 1)
            c = torch.nn.functional.pad(c, pad, value=0)
            lft = torch.nn.functional.pad(lft, pad, value=lo)
            rgt = torch.nn.functional.pad(rgt, pad, value=hi)
        c1, c2 = c[:, 0::2], c[:, 1::2]
        l1, l2 = lft[:, 0::2], lft[:, 1::2]
        h1, h2 = rgt[:, 0::2], rgt[:, 1::2]
        lft = torch.minimum(torch.maximum(l1 + c2, l2), h2)
        rgt = torch.minimum(torch.maximum(h1 + c2, l2), h2)
        c = c1 + c2
    if c.shape[1] == 0:
        return start.clone()
    return torch.minimum(torch.maximum(start + c[:, 0], lft[:, 0]), rgt[:, 0])


def _saturating_loop(p: torch.Tensor, start: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    s = start.clone()
    for j in range(p.shape[1]):
        x = p[:, j]
        t = s + x  # may wrap in int64
        wrapped = ((s ^ t) & (x ^ t)) < 0
        t = t.clamp(lo, hi)
        s = torch.where(wrapped, torch.where(x > 0, hi, lo), t)
    return s


def prefix_flags(p: torch.Tensor, start: torch.Tensor, acc_bits: int) -> torch.Tensor:
    """Whether some prefix ``start + Σ_{k<=j} p[:, k]`` leaves the range (int64-safe)."""
    lo, hi = int_range(acc_bits, True)
    k = p.shape[1]
    pmax = int(p.abs().max()) if p.numel() else 0
    if acc_bits <= 62 and (k + 1) * pmax < 1 << 61:
        cs = torch.cumsum(p, 1) + start[:, None]
        return ((cs < lo) | (cs > hi)).any(1) if k else torch.zeros_like(start, dtype=torch.bool)
    flag = torch.zeros(p.shape[0], dtype=torch.bool, device=p.device)
    s = start.clone()
    for j in range(k):
        x = p[:, j]
        t = s + x
        wrapped = ((s ^ t) & (x ^ t)) < 0
        flag |= wrapped | (t < lo) | (t > hi)
        s = torch.where(wrapped, torch.zeros_like(t), t)  # flag is sticky; the value is unused
    return flag


def prefix_eval(products, start: torch.Tensor, acc_bits: int, saturate: bool,
                chunk: int = 1 << 22) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(saturated values or None, flags)`` for ``U`` outputs whose products ``[U, K]`` are
    produced by ``products(u0, u1)``, chunked."""
    u = start.shape[0]
    flags = torch.zeros(u, dtype=torch.bool, device=start.device)
    values = start.clone() if saturate else None
    if u == 0:
        return values, flags
    first = products(0, 1)
    k = first.shape[1]
    uc = max(1, chunk // max(1, k))
    for u0 in range(0, u, uc):
        u1 = min(u, u0 + uc)
        p = products(u0, u1)
        f = prefix_flags(p, start[u0:u1], acc_bits)
        flags[u0:u1] = f
        if saturate:
            values[u0:u1] = saturating_sum(p, start[u0:u1], acc_bits)
    return values, flags
