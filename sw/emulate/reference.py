"""Naive references for the emulator: every product through ``mult.mul``, summed in k order.

These loops share no code with the fast paths (no decomposition, no table, no bound): each
step adds one product per output to the accumulator and applies the overflow rule, exactly as
the hardware accumulator does. They are slow and meant for tests.
"""

from __future__ import annotations

import torch

from ..numerics import as_int64, int_range, wrap

__all__ = ["matmul_naive", "conv2d_naive", "accumulate"]


def accumulate(acc: torch.Tensor, p: torch.Tensor, flag: torch.Tensor, acc_bits: int,
               overflow: str) -> torch.Tensor:
    """One accumulator step ``acc + p`` with the overflow rule; sets ``flag`` in place.

    >>> f = torch.zeros(2, dtype=torch.bool)
    >>> acc = accumulate(torch.tensor([100, -100]), torch.tensor([50, -50]), f, 8, "saturate")
    >>> acc.tolist(), f.tolist()
    ([127, -128], [True, True])
    """
    lo, hi = int_range(acc_bits, True)
    t = acc + p  # may wrap in int64: detect it
    wrapped = ((acc ^ t) & (p ^ t)) < 0
    flag |= wrapped | (t < lo) | (t > hi)
    if overflow == "wrap":
        return wrap(t, acc_bits)  # t is exact modulo 2**64, hence modulo 2**acc_bits
    sat = t.clamp(lo, hi)
    return torch.where(wrapped, torch.where(p > 0, hi, lo), sat)


def _start(bias, shape, acc_bits: int, device=None) -> torch.Tensor:
    if bias is None:
        return torch.zeros(shape, dtype=torch.int64, device=device)
    bias = as_int64(bias).to(device)
    lo, hi = int_range(acc_bits, True)
    if bias.numel() and (int(bias.min()) < lo or int(bias.max()) > hi):
        raise ValueError(f"bias values must lie in the accumulator range [{lo}, {hi}]")
    return bias.expand(shape).clone()


def matmul_naive(a, b, mult, *, bias=None, acc_bits: int = 32, overflow: str = "wrap",
                 return_overflow: bool = False):
    """``acc = bias; for k in 0..K-1: acc = rule(acc + mult.mul(a[..., :, k], b[..., k, :]))``.

    >>> from mixpe.sw.mult import multiplier
    >>> matmul_naive([[100, 100]], [[1], [1]], multiplier("exact"), acc_bits=8,
    ...              overflow="saturate", return_overflow=True)
    (tensor([[127]]), tensor([[True]]))
    """
    a, b = as_int64(a), as_int64(b)
    shape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    acc = _start(bias, shape, acc_bits, a.device)
    flag = torch.zeros(shape, dtype=torch.bool, device=a.device)
    for k in range(a.shape[-1]):
        p = mult.mul(a[..., :, k : k + 1].contiguous(),
                     b[..., k : k + 1, :].contiguous()).expand(shape)
        acc = accumulate(acc, p, flag, acc_bits, overflow)
    return (acc, flag) if return_overflow else acc


def conv2d_naive(x, w, mult, bias=None, *, stride=1, padding=0, groups: int = 1,
                 acc_bits: int = 32, overflow: str = "wrap", return_overflow: bool = False):
    """Direct convolution: for each output, products in the order ``ic, kh, kw``.

    ``x`` ``[N, C, H, W]`` activation values, ``w`` ``[OC, C/groups, KH, KW]`` weight values,
    zero padding (value 0).
    """
    x, w = as_int64(x), as_int64(w)
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    ocg = oc // groups
    xp = torch.zeros(n, c, h + 2 * ph, wd + 2 * pw, dtype=torch.int64, device=x.device)
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (wd + 2 * pw - kw) // sw + 1
    shape = (n, oc, oh, ow)
    acc = _start(None if bias is None else as_int64(bias)[None, :, None, None], shape, acc_bits,
                 x.device)
    flag = torch.zeros(shape, dtype=torch.bool, device=x.device)
    for g in range(groups):
        sl = slice(g * ocg, (g + 1) * ocg)
        for ic in range(cg):
            for i in range(kh):
                for j in range(kw):
                    patch = xp[:, g * cg + ic, i : i + sh * (oh - 1) + 1 : sh,
                               j : j + sw * (ow - 1) + 1 : sw]  # [N, OH, OW]
                    wk = w[sl, ic, i, j]  # [OCg]
                    p = mult.mul(patch[:, None, :, :].contiguous(),
                                 wk[None, :, None, None].contiguous())
                    acc[:, sl] = accumulate(acc[:, sl], p, flag[:, sl], acc_bits, overflow)
    return (acc, flag) if return_overflow else acc
