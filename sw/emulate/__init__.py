"""Bit-exact emulation of whole layers: matmul, linear and conv2d through any multiplier.

Every function takes integer operand **values** (``a``/``x``: activations, ``b``/``w``: weights,
in the ranges of ``mult.a_format``/``mult.b_format``) and returns, as ``torch.int64``, exactly
what the hardware accumulator holds after adding the products ``mult.mul(a, b)``:

* the accumulator is an ``acc_bits``-wide two's-complement register (2 … 64 bits), preloaded
  with the bias (0 without one; bias values must lie in the accumulator range), to which the
  products are added in k order ``k = 0 … K-1`` (for :func:`conv2d` the im2col order
  ``ic, kh, kw``);
* ``overflow="wrap"``: every addition wraps around (the result is the exact sum modulo
  ``2**acc_bits``, whatever the order); ``overflow="saturate"``: every addition clamps to the
  range, so the order matters;
* ``return_overflow=True`` also returns the sticky overflow flag per output: some addition
  left the range (in both modes: some exact prefix sum ``bias + Σ_{k<=j} p_k`` is out of range).

How it is fast: the multiplier is decomposed into a few exact integer GEMMs on transformed
operands (:mod:`.policies`, :mod:`._engine`); ``saturate`` and the flag only re-evaluate, product
by product, the outputs whose proven magnitude bound does not rule out an overflow. The same
code runs on CUDA tensors. :func:`matmul_naive` and :func:`conv2d_naive` are the independent
references the tests compare against.

>>> from mixpe.sw.mult import multiplier
>>> a = torch.tensor([[109, -128, 5]]); b = torch.tensor([[23], [1], [3]])
>>> matmul(a, b, multiplier("axbxp:l=2")).tolist()      # 96·20 - 128·1 + 5·3
[[1807]]
>>> matmul(a, b, multiplier("exact"), acc_bits=12, overflow="saturate",
...        return_overflow=True)                         # 2507 -> 2047, -128, +15
(tensor([[1934]]), tensor([[True]]))
"""

from __future__ import annotations

import math
import threading

import torch

from ..mult.base import Multiplier
from ..numerics import as_int64, int_range
from . import _gemm  # noqa: F401  (exact_float_matmul etc. for callers)
from ._engine import (
    IDENTITY,
    Decomposition,
    Im2colSource,
    Plan,
    Term,
    Transform,
    build_plan,
    gather_matmul,
)
from ._overflow import magnitude_bounds, prefix_eval, unsafe_outputs
from .policies import decompositions
from .reference import conv2d_naive, matmul_naive

__all__ = [
    "matmul",
    "linear",
    "conv2d",
    "matmul_naive",
    "conv2d_naive",
    "plan",
    "describe",
    "register_policy",
    "decompositions",
    "Decomposition",
    "Term",
    "Transform",
    "IDENTITY",
    "OVERFLOW_MODES",
    "ACC_BITS_RANGE",
    "METHODS",
    "gather_matmul",
]

#: Accumulator behaviours.
OVERFLOW_MODES = ("wrap", "saturate")
#: Inclusive accumulator width range.
ACC_BITS_RANGE = (2, 64)
#: Ways to compute the exact sum (``None`` picks the cheapest): GEMM decomposition, one-hot
#: GEMMs over the table rows, chunked table gather, product by product.
METHODS = ("terms", "onehot", "gather", "mul")

#: ``register_policy(cls)`` registers a decomposition policy for a multiplier class.
register_policy = decompositions.register

_PLANS: dict = {}
_LOCK = threading.Lock()


def plan(mult: Multiplier, device="cpu") -> Plan:
    """The (cached) emulation plan of ``mult`` for a device type."""
    if not isinstance(mult, Multiplier):
        raise TypeError(f"mult must be a Multiplier, not {type(mult).__name__}")
    dtype = torch.device(device).type
    mine = getattr(mult, "__dict__", {}).get("_emulate_plans")
    if mine is not None and dtype in mine:  # fast path: cached on the object itself
        return mine[dtype]
    params = getattr(mult, "__dataclass_params__", None)
    try:
        # frozen dataclasses compare by value; others (eq=False) are named by their spec
        key = (type(mult), mult if params is not None and params.eq else mult.spec, dtype)
        hash(key)
    except TypeError:
        key = (type(mult), mult.spec, dtype)
    with _LOCK:
        p = _PLANS.get(key)
        if p is None:
            p = _PLANS[key] = build_plan(mult, decompositions(mult), dtype)
    try:  # frozen dataclass: the same trick as Multiplier.table()'s cache
        object.__setattr__(mult, "_emulate_plans", {**(mine or {}), dtype: p})
    except (AttributeError, TypeError):
        pass
    return p


def describe(mult: Multiplier, device="cpu") -> str:
    """One line: how ``mult`` is emulated (decomposition, number of terms and int8 GEMMs)."""
    return plan(mult, device).description


# -- validation --------------------------------------------------------------------------------


def _check_common(acc_bits, overflow, method) -> None:
    lo, hi = ACC_BITS_RANGE
    if isinstance(acc_bits, bool) or not isinstance(acc_bits, int) or not lo <= acc_bits <= hi:
        raise ValueError(f"acc_bits must be an integer in [{lo}, {hi}], not {acc_bits!r}")
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow must be one of {', '.join(map(repr, OVERFLOW_MODES))}, "
                         f"not {overflow!r}")
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be None or one of {', '.join(METHODS)}, not {method!r}")


def _as_operand(x, name: str) -> torch.Tensor:
    try:
        return as_int64(x)
    except TypeError:
        raise TypeError(f"{name} must hold integer operand values, not "
                        f"{getattr(x, 'dtype', type(x).__name__)}") from None


def _bias(bias, shape, acc_bits: int, device, name: str = "bias") -> torch.Tensor | None:
    if bias is None:
        return None
    bias = _as_operand(bias, name).to(device)
    try:
        torch.broadcast_shapes(bias.shape, shape)
    except RuntimeError:
        raise ValueError(f"{name}: shape {tuple(bias.shape)} does not broadcast to the output "
                         f"shape {tuple(shape)}") from None
    lo, hi = int_range(acc_bits, True)
    if bias.numel():
        bmin, bmax = (int(v) for v in torch.aminmax(bias))
        if bmin < lo or bmax > hi:
            raise ValueError(f"{name} values must lie in the accumulator range [{lo}, {hi}] "
                             f"(acc_bits={acc_bits}), got {bmin if bmin < lo else bmax}")
    return bias


# -- the 2-D core ------------------------------------------------------------------------------


def _bound_luts(p: Plan):
    hit = p._dev.get("bounds")
    if hit is None:
        if p.table is not None:
            hit = magnitude_bounds(p.table, p.a_space.valid, p.b_space.valid)
        elif p.terms is not None and p.a_space.has_lut and p.b_space.has_lut:
            alpha = torch.zeros(p.a_space.size, dtype=torch.float64)
            beta = torch.zeros(p.b_space.size, dtype=torch.float64)
            for t in p.terms:
                fa = _side_lut(t.a).abs().to(torch.float64) * 2.0 ** (t.shift + t.a.shift)
                gb = _side_lut(t.b).abs().to(torch.float64) * 2.0 ** t.b.shift
                alpha += fa
                beta = torch.maximum(beta, gb)
            hit = (alpha * (1 + 2.0 ** -30), beta * (1 + 2.0 ** -30))
        else:
            hit = "runtime"
        p._dev["bounds"] = hit
    return hit


def _pmax(p: Plan) -> int | None:
    """``max |mul(a, b)|`` over all operand pairs, when known without data."""
    hit = p._dev.get("pmax", "unset")
    if hit == "unset":
        hit = None
        if p.table is not None:
            hit = int(p.table.abs().max())
        elif p.terms is not None and p.a_space.has_lut and p.b_space.has_lut:
            hit = 0
            for t in p.terms:
                fa = int(_side_lut(t.a).abs().max()) << (t.shift + t.a.shift)
                gb = int(_side_lut(t.b).abs().max()) << t.b.shift
                hit += fa * gb
        p._dev["pmax"] = hit
    return hit


def _side_lut(side) -> torch.Tensor:
    if side.kind == "id":
        return side.space.values
    return side.lut


def _bounds(p: Plan, a: torch.Tensor, b: torch.Tensor):
    """``α(a)`` ``[M, K]`` and ``β(b)`` ``[K, N]`` (float64) with ``|mul(a, b)| <= α·β``."""
    luts = _bound_luts(p)
    if luts != "runtime":
        key = ("bounds", a.device)
        if key not in p._dev:
            p._dev[key] = (luts[0].to(a.device), luts[1].to(a.device))
        la, lb = p._dev[key]
        ia, ib = p.a_space.index(a), p.b_space.index(b)
        return (la.index_select(0, ia.reshape(-1)).view(ia.shape),
                lb.index_select(0, ib.reshape(-1)).view(ib.shape))
    if p.terms is not None:
        alpha = torch.zeros(a.shape, dtype=torch.float64, device=a.device)
        beta = torch.zeros(b.shape, dtype=torch.float64, device=a.device)
        for t in p.terms:
            fa = a if t.a.kind == "id" else t.a.fn(a)
            gb = b if t.b.kind == "id" else t.b.fn(b)
            alpha += fa.abs().to(torch.float64) * 2.0 ** (t.shift + t.a.shift)
            beta = torch.maximum(beta, gb.abs().to(torch.float64) * 2.0 ** t.b.shift)
        return alpha * (1 + 2.0 ** -30), beta * (1 + 2.0 ** -30)
    # no decomposition: the bound of the format corners is not safe for approximate products
    inf = torch.full(a.shape, math.inf, dtype=torch.float64, device=a.device)
    return inf, torch.ones(b.shape, dtype=torch.float64, device=a.device)


def _products(p: Plan, a_rows: torch.Tensor, b_cols: torch.Tensor) -> torch.Tensor:
    """``[U, K]`` products ``mul(a_rows[u, k], b_cols[u, k])``."""
    if p.table is not None:
        t = p.table_on(a_rows.device)
        ia, ib = p.a_space.index(a_rows), p.b_space.index(b_cols)
        return t.reshape(-1).index_select(0, (ia * t.shape[1] + ib).reshape(-1)).view(ia.shape)
    return p.mult.mul(a_rows.contiguous(), b_cols.contiguous())


def wrap_fast(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Two's-complement wrap to ``bits`` by shifting out the high bits (torch shifts int64
    modulo ``2**64``), the same as :func:`mixpe.sw.numerics.wrap`.

    >>> wrap_fast(torch.tensor([2**40 + 5, 2**31, -2**31 - 1]), 32).tolist()
    [5, -2147483648, 2147483647]
    """
    if bits >= 64:
        return x
    s = 64 - bits
    return (x << s) >> s


def _matmul2d(p: Plan, a, b, start, acc_bits, overflow, want_flag, method, names=None):
    ia = ib = None
    if names is not None:  # the grid part of the operand check, on the indices we need anyway
        if p.a_space.gapped:
            ia = p.a_space.index(a)
            p.a_space.check_grid(a, ia, names[0])
        if p.b_space.gapped:
            ib = p.b_space.index(b)
            p.b_space.check_grid(b, ib, names[1])
    s, bound = p.run(a, b, method, ia, ib)
    lo, hi = int_range(acc_bits, True)
    if start is not None:
        s = s + start
        if bound is not None and start.numel():
            bmin, bmax = (int(v) for v in torch.aminmax(start))
            bound = bound + max(abs(bmin), abs(bmax))
    in_range = bound is not None and bound <= hi
    if in_range and (overflow == "saturate" or want_flag):
        # |every prefix| <= Σ|p| is not implied by |S| <= bound in general; use the bounds
        in_range = False
    if overflow == "wrap" and not want_flag:
        return (s if in_range else wrap_fast(s, acc_bits)), None
    m, n = s.shape
    k = a.shape[1] if isinstance(a, torch.Tensor) else a.k
    pmax = _pmax(p)
    if pmax is not None:  # every prefix is within K·max|p| (+ |bias|) of 0
        bmax = 0
        if start is not None and start.numel():
            bmax = max(abs(int(v)) for v in torch.aminmax(start))
        if k * pmax + bmax <= hi:
            return s, torch.zeros(m, n, dtype=torch.bool, device=s.device)
    if not isinstance(a, torch.Tensor):  # im2col source
        a = a.values()
    alpha, beta = _bounds(p, a, b)
    start_f = torch.zeros(()) if start is None else start.to(torch.float64)
    unsafe = unsafe_outputs(alpha, beta, start_f, acc_bits)
    flags = torch.zeros(m, n, dtype=torch.bool, device=s.device)
    out = wrap_fast(s, acc_bits) if overflow == "wrap" else s
    if unsafe.numel() and int(unsafe.view(torch.uint8).max()):
        mi, ni = torch.nonzero(unsafe, as_tuple=True)
        st = (torch.zeros(mi.numel(), dtype=torch.int64, device=s.device) if start is None
              else start.expand(m, n)[mi, ni])

        def products(u0, u1):
            return _products(p, a[mi[u0:u1]], b[:, ni[u0:u1]].t())

        vals, f = prefix_eval(products, st, acc_bits, overflow == "saturate")
        flags[mi, ni] = f
        if vals is not None:
            out = out.clone()
            out[mi, ni] = vals
    return out, flags


# -- public functions --------------------------------------------------------------------------


def matmul(a, b, mult: Multiplier, *, bias=None, acc_bits: int = 32, overflow: str = "wrap",
           return_overflow: bool = False, method: str | None = None):
    """Emulated ``a @ b`` with every product computed by ``mult``.

    Parameters
    ----------
    a : integer tensor ``[..., M, K]``
        Activation values (``mult.a_format``).
    b : integer tensor ``[..., K, N]``
        Weight values (``mult.b_format``); batch dimensions broadcast.
    mult : Multiplier
    bias : integer tensor broadcastable to ``[..., M, N]``, optional
        Accumulator preload (typically ``[N]``), within the accumulator range.
    acc_bits : int
        Accumulator width, 2 … 64.
    overflow : ``"wrap"`` or ``"saturate"``
    return_overflow : bool
        Also return the sticky overflow flag of every output.
    method : str, optional
        Force a computation path (tests/benchmarks), one of :data:`METHODS`.

    Returns
    -------
    int64 tensor ``[..., M, N]`` (and a bool tensor of flags when ``return_overflow``).

    Raises
    ------
    ValueError
        Operand values outside the multiplier's formats, bad ``acc_bits``/``overflow``/shape or
        bias. ``TypeError`` for non-integer operands or ``mult``.
    """
    return _matmul(a, b, mult, bias=bias, acc_bits=acc_bits, overflow=overflow,
                   return_overflow=return_overflow, method=method, names=("a", "b"))


def _matmul(a, b, mult, *, bias, acc_bits, overflow, return_overflow, method, names,
            checked=False):
    _check_common(acc_bits, overflow, method)
    if not checked:
        a, b = _operands(a, b, mult, names, grid=False)
    grid_names = None if checked else names
    if a.dim() < 2:
        raise ValueError(f"a must have at least 2 dimensions [..., M, K], got shape "
                         f"{tuple(a.shape)}")
    if b.dim() < 2:
        raise ValueError(f"b must have at least 2 dimensions [..., K, N], got shape "
                         f"{tuple(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"b: shape {tuple(b.shape)} does not match a: shape {tuple(a.shape)} "
                         f"(a[..., M, K] @ b[..., K, N] needs equal K)")
    try:
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(f"b: batch dimensions {tuple(b.shape[:-2])} do not broadcast with a's "
                         f"{tuple(a.shape[:-2])}") from None
    p = plan(mult, a.device)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    out_shape = batch + (m, n)
    start = _bias(bias, out_shape, acc_bits, a.device)
    want = return_overflow
    if b.dim() == 2:  # one weight matrix: fold the batch into M (one big GEMM)
        rows = math.prod(batch) * m
        a2 = a.expand(batch + (m, k)).reshape(rows, k)
        st = None if start is None else start.expand(out_shape).reshape(rows, n)
        out, flags = _matmul2d(p, a2, b, st, acc_bits, overflow, want, method, grid_names)
        out = out.reshape(out_shape)
        flags = None if flags is None else flags.reshape(out_shape)
    else:
        nb = math.prod(batch)
        ab = a.expand(batch + (m, k)).reshape(nb, m, k)
        bb = b.expand(batch + (k, n)).reshape(nb, k, n)
        st = None if start is None else start.expand(out_shape).reshape(nb, m, n)
        outs, fls = [], []
        for i in range(ab.shape[0]):
            o, f = _matmul2d(p, ab[i], bb[i], None if st is None else st[i], acc_bits,
                             overflow, want, method, grid_names)
            outs.append(o)
            fls.append(f)
        out = (torch.stack(outs) if outs else torch.zeros(0, m, n, dtype=torch.int64,
                                                          device=a.device)).reshape(out_shape)
        flags = (torch.stack(fls).reshape(out_shape) if want and fls else
                 torch.zeros(out_shape, dtype=torch.bool, device=a.device) if want else None)
    return (out, flags) if return_overflow else out


def _operands(a, b, mult, names=("a", "b"), grid: bool = True):
    if not isinstance(mult, Multiplier):
        raise TypeError(f"mult must be a Multiplier, not {type(mult).__name__}")
    a, b = _as_operand(a, names[0]), _as_operand(b, names[1])
    if a.device != b.device:
        raise ValueError(f"{names[1]} is on {b.device} but {names[0]} on {a.device}")
    p = plan(mult, a.device)
    p.a_space.check(a, names[0], grid)
    p.b_space.check(b, names[1], grid)
    return a, b


def linear(x, w, mult: Multiplier, bias=None, *, acc_bits: int = 32, overflow: str = "wrap",
           return_overflow: bool = False, method: str | None = None):
    """Emulated ``x @ w.T (+ bias preload)``: ``x`` ``[..., IN]``, ``w`` ``[OUT, IN]``,
    ``bias`` ``[OUT]``; returns ``[..., OUT]`` (see :func:`matmul`).

    >>> from mixpe.sw.mult import multiplier
    >>> linear(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1, 1], [0, 0, 2]]),
    ...        multiplier("exact"), bias=torch.tensor([10, 0])).tolist()
    [[16, 6]]
    """
    _check_common(acc_bits, overflow, method)
    x, w = _operands(x, w, mult, ("x", "w"))
    if x.dim() < 1:
        raise ValueError(f"x must have at least 1 dimension [..., IN], got shape {tuple(x.shape)}")
    if w.dim() != 2 or w.shape[1] != x.shape[-1]:
        raise ValueError(f"w: shape {tuple(w.shape)} must be [OUT, IN] with IN = "
                         f"{x.shape[-1]} (the last dimension of x)")
    if bias is not None and _as_operand(bias, "bias").shape not in ((w.shape[0],), ()):
        raise ValueError(f"bias: shape {tuple(torch.as_tensor(bias).shape)} must be "
                         f"[OUT] = [{w.shape[0]}]")
    lead = x.shape[:-1]
    r = _matmul(x.reshape(math.prod(lead), x.shape[-1]), w.t(), mult, bias=bias,
                acc_bits=acc_bits, overflow=overflow, return_overflow=return_overflow,
                method=method, names=("x", "w"), checked=True)
    if return_overflow:
        return r[0].reshape(lead + (w.shape[0],)), r[1].reshape(lead + (w.shape[0],))
    return r.reshape(lead + (w.shape[0],))


def _pair(v, name: str, lo: int) -> tuple[int, int]:
    t = (v, v) if isinstance(v, int) and not isinstance(v, bool) else tuple(v) if isinstance(
        v, (tuple, list)) else None
    if (t is None or len(t) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < lo
                                        for x in t)):
        raise ValueError(f"{name} must be an integer >= {lo} or a pair of them, not {v!r}")
    return t


def conv2d(x, w, mult: Multiplier, bias=None, *, stride=1, padding=0, groups: int = 1,
           acc_bits: int = 32, overflow: str = "wrap", return_overflow: bool = False,
           method: str | None = None):
    """Emulated 2-D convolution (cross-correlation, like ``torch.nn.functional.conv2d``).

    ``x`` ``[N, C, H, W]`` activation values, ``w`` ``[OC, C/groups, KH, KW]`` weight values,
    ``bias`` ``[OC]`` (accumulator preload), zero padding (value 0, which must be an activation
    value). Each output accumulates its products in the im2col order ``ic, kh, kw``. Returns
    ``[N, OC, OH, OW]`` int64 (and the overflow flags, see :func:`matmul`).

    >>> from mixpe.sw.mult import multiplier
    >>> x = torch.arange(9).reshape(1, 1, 3, 3); w = torch.ones(1, 1, 2, 2, dtype=torch.long)
    >>> conv2d(x, w, multiplier("exact")).tolist()
    [[[[8, 12], [20, 24]]]]
    """
    _check_common(acc_bits, overflow, method)
    x, w = _operands(x, w, mult, ("x", "w"))
    if x.dim() != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
    if w.dim() != 4:
        raise ValueError(f"w must be [OC, C/groups, KH, KW], got shape {tuple(w.shape)}")
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    n, c, h, wd = x.shape
    oc, cg, kh, kw = w.shape
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups or \
            oc % groups:
        raise ValueError(f"groups must be a positive integer dividing C={c} and OC={oc}, "
                         f"not {groups!r}")
    if cg != c // groups:
        raise ValueError(f"w: shape {tuple(w.shape)} needs C/groups = {c // groups} input "
                         f"channels in dimension 1, got {cg}")
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (wd + 2 * pw - kw) // sw + 1
    if kh > h + 2 * ph or kw > wd + 2 * pw or oh < 1 or ow < 1:
        raise ValueError(f"w: kernel {kh}x{kw} is larger than the padded input "
                         f"{h + 2 * ph}x{wd + 2 * pw}")
    if bias is not None and _as_operand(bias, "bias").shape not in ((oc,), ()):
        raise ValueError(f"bias: shape {tuple(torch.as_tensor(bias).shape)} must be [OC] = "
                         f"[{oc}]")
    p = plan(mult, x.device)
    if ph or pw:
        p.a_space.check(torch.zeros(1, dtype=torch.int64, device=x.device), "padding")
    # each group is a matmul of the im2col rows (n, oh, ow) x columns (ic, kh, kw) of its
    # channels by its [Cg·KH·KW, OC/groups] weights; the im2col matrix is built from packed
    # operand limbs where the plan allows (Im2colSource), not from int64 values
    ocg = oc // groups
    wg = w.reshape(groups, ocg, cg * kh * kw)
    start = None
    if bias is not None:
        start = _bias(as_int64(bias).expand(oc), (oc,), acc_bits, x.device)
    shared: dict = {}
    out = torch.empty(n, oc, oh, ow, dtype=torch.int64, device=x.device)
    fl = torch.empty(n, oc, oh, ow, dtype=torch.bool, device=x.device) if return_overflow \
        else None
    for g in range(groups):
        src = Im2colSource(p.a_space, x, kh, kw, (sh, sw), (ph, pw), groups, g, shared)
        st = None if start is None else start[g * ocg:(g + 1) * ocg][None, :]
        o, f = _matmul2d(p, src, wg[g].t(), st, acc_bits, overflow, return_overflow, method)
        # rows (n, oh, ow) x columns oc -> NCHW, one strided copy
        sl = slice(g * ocg, (g + 1) * ocg)
        out[:, sl].copy_(o.view(n, oh * ow, ocg).transpose(1, 2).view(n, ocg, oh, ow))
        if fl is not None:
            fl[:, sl].copy_(f.view(n, oh * ow, ocg).transpose(1, 2).view(n, ocg, oh, ow))
    return (out, fl) if return_overflow else out
