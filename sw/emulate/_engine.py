"""Multiplier decompositions into exact integer GEMMs, their planning and their execution.

A *decomposition* writes the product of a multiplier as a short sum of separable terms,

    mul(a, b) = Σ_t 2**s_t · f_t(a) · g_t(b),

so a whole matmul is ``Σ_t 2**s_t · f_t(A) @ g_t(B)``: one exact integer GEMM per term on
transformed operands. Family policies (:mod:`.policies`) supply decompositions from their
definitions; this module checks them against the multiplier's own ``mul`` over every operand
pair (when the table is small enough, else on a random sample), completes partial ones with an
exact integer factorization of the residual table, merges terms that share an operand
transform, and prices each alternative:

* every transformed operand is stored as int8 *limbs* (balanced base-256 digits plus an
  offset handled by row/column sums), so each term costs ``limbs(f)·limbs(g)`` int8 GEMMs
  (``torch._int_mm``, int32 out, exact below ``2**31``); float32/float64/int64 GEMMs are used
  per term instead when cheaper and proven exact by the bound ``K·max|f|·max|g|``;
* tables without a cheap decomposition run as one-hot GEMMs over the distinct table rows,
  and as a chunked table gather (the AdaPT/TFApprox method) when that is cheaper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..numerics import as_int64
from . import _gemm
from ._factor import factor_exact
from ._space import Space

__all__ = ["Transform", "Term", "Decomposition", "IDENTITY", "Plan", "build_plan"]

#: Largest product table (entries) the planner builds to verify and factorize.
TABLE_MAX_ENTRIES = 1 << 22


# -- declarative decompositions (what policies return) ----------------------------------------


@dataclass(frozen=True)
class Transform:
    """An operand transform ``values -> int64`` (``fn=None``: the identity)."""

    fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    name: str = "id"

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.fn is None else as_int64(self.fn(v))

    @property
    def is_identity(self) -> bool:
        return self.fn is None


IDENTITY = Transform()


@dataclass(frozen=True)
class Term:
    """``2**shift · fa(a) · fb(b)``."""

    fa: Transform
    fb: Transform
    shift: int = 0


@dataclass(frozen=True)
class Decomposition:
    """A list of terms; ``complete=False`` marks a main part whose residual the planner
    factorizes from the product table."""

    terms: tuple
    complete: bool = True
    name: str = ""


# -- int8 limb representation ------------------------------------------------------------------


def _trailing_zeros(x: torch.Tensor) -> int:
    nz = x[x != 0]
    if not nz.numel():
        return 0
    low = nz & -nz  # lowest set bit of every entry
    return int(low.min()).bit_length() - 1


def int8_rep(lo: int, hi: int) -> tuple[int, int]:
    """``(offset, limbs)``: ``x - offset`` is written with ``limbs`` balanced base-256 digits.

    >>> int8_rep(-128, 127), int8_rep(0, 255), int8_rep(-255, 255), int8_rep(5, 5)
    ((0, 1), (128, 1), (0, 2), (5, 0))
    """
    if lo == hi:
        return lo, 0
    if hi - lo <= 255:
        return (0 if lo >= -128 and hi <= 127 else lo + 128), 1
    c = (lo + hi) // 2
    n = 1
    while True:
        span = ((1 << (8 * n)) - 1) // 255
        if lo - c >= -128 * span and hi - c <= 127 * span:
            return c, n
        n += 1


def digits(x: torch.Tensor, c: int, n: int) -> list[torch.Tensor]:
    """The ``n`` balanced base-256 digits (int8, least significant first) of ``x - c``."""
    if n == 1:
        # (x - c) fits int8: wrap-around int8 arithmetic gives the same bits
        d = x.to(torch.int8)
        if c:
            d = d.sub_(((c + 128) & 255) - 128)
        return [d]
    r = x - c
    out = []
    for _ in range(n):
        d = ((r + 128) & 255) - 128
        out.append(d.to(torch.int8))
        r = (r - d) >> 8
    return out


# -- planned sides and terms -------------------------------------------------------------------


class Side:
    """One operand of a planned term: ``F = 2**shift · (offset + Σ_l 256**l · L_l)``.

    ``kind`` is ``"id"`` (the operand values themselves), ``"lut"`` (a table over the value
    index of the space) or ``"fn"`` (a transform evaluated on the values at run time, for
    spaces too wide for a table).
    """

    def __init__(self, space: Space, kind: str, *, lut=None, fn: Transform = IDENTITY,
                 shift: int = 0):
        self.space, self.kind, self.fn, self.shift = space, kind, fn, shift
        self.lut = lut
        self.lo = self.hi = None
        if kind == "id":
            self.lo, self.hi = space.lo, space.hi
        elif kind == "lut":
            vals = lut if space.valid is None else lut[space.valid]
            self.lo, self.hi = int(vals.min()), int(vals.max())
        if self.lo is not None:
            self.offset, self.nlimbs = int8_rep(self.lo, self.hi)
        else:  # "fn": decided per call from the data
            self.offset, self.nlimbs = 0, 1
        self.limb_luts = None
        if kind == "lut":
            self.limb_luts = digits(lut, self.offset, self.nlimbs)
        self._dev: dict = {}

    @property
    def key(self):
        return (self.kind, id(self.lut) if self.kind == "lut" else id(self.fn))

    @property
    def maxabs(self) -> int | None:
        return None if self.lo is None else max(abs(self.lo), abs(self.hi))

    def on(self, t: torch.Tensor, device) -> torch.Tensor:
        if t.device == device:
            return t
        hit = self._dev.get((id(t), device))
        if hit is None:
            hit = self._dev[(id(t), device)] = t.to(device)
        return hit


def _side_from_lut(space: Space, lut: torch.Tensor) -> tuple[Side | None, int]:
    """Normalized side for a LUT (power of two factored out) and that power; ``None`` if 0."""
    lut = lut.clone()
    vals = lut if space.valid is None else lut[space.valid]
    if not bool(vals.any()):
        return None, 0
    if space.valid is not None:
        lut[~space.valid] = vals[0]
    s = _trailing_zeros(vals)
    lut = lut >> s
    if space.mode == "dense" and s == 0:
        same = lut == space.values
        if bool((same if space.valid is None else same[space.valid]).all()):
            return Side(space, "id"), 0
    return Side(space, "lut", lut=lut), s


@dataclass
class TermPlan:
    a: Side
    b: Side
    shift: int

    def cost(self, dev_costs: dict, int8: bool) -> float:
        la, lb = self.a.nlimbs, self.b.nlimbs
        if la == 0 or lb == 0:
            return 0.02
        if int8:
            return la * lb * dev_costs["int8"] + 0.1 * (la + lb)
        if self.a.maxabs is None or self.b.maxabs is None:
            return dev_costs["float64"]
        bound = 1024 * self.a.maxabs * self.b.maxabs
        dt = _gemm.float_dtype_for(bound)
        key = "float32" if dt == torch.float32 else "float64" if dt == torch.float64 else "int64"
        return dev_costs[key]


def _plans_cost(terms: list[TermPlan], dev_costs: dict, int8: bool) -> float:
    return sum(t.cost(dev_costs, int8) for t in terms)


# -- merging -----------------------------------------------------------------------------------


def _normalize(lut_a, lut_b, shift):
    """Factor powers of two into the shift; make the b LUT's last non-zero entry positive."""
    sa, sb = _trailing_zeros(lut_a), _trailing_zeros(lut_b)
    lut_a, lut_b = lut_a >> sa, lut_b >> sb
    nz = lut_b[lut_b != 0]
    if nz.numel() and int(nz[-1]) < 0:  # canonical sign (keeps identity LUTs as they are)
        lut_a, lut_b = -lut_a, -lut_b
    return lut_a, lut_b, shift + sa + sb


def _merge(raw: list[tuple], by: str) -> list[tuple]:
    """Merge terms whose ``by`` LUT (``"a"`` or ``"b"``) is identical."""
    groups: dict[bytes, list] = {}
    order = []
    for la, lb, s in raw:
        key_t = lb if by == "b" else la
        key = key_t.numpy().tobytes()
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append((la, lb, s))
    out = []
    for key in order:
        g = groups[key]
        if len(g) == 1:
            out.append(g[0])
            continue
        smin = min(s for _, _, s in g)
        if by == "b":
            la = sum(x << (s - smin) for x, _, s in g)
            lb = g[0][1]
        else:
            lb = sum(y << (s - smin) for _, y, s in g)
            la = g[0][0]
        if bool(la.any()) and bool(lb.any()):
            out.append(_normalize(la, lb, smin))
    return out


# -- plans -------------------------------------------------------------------------------------


@dataclass
class Plan:
    """How one multiplier is emulated; :meth:`run` computes exact ``Σ_k mul(a_mk, b_kn)``."""

    mult: object
    a_space: Space
    b_space: Space
    terms: list[TermPlan] | None = None  # the GEMM decomposition (None: none found)
    table: torch.Tensor | None = None  # T[i_a, i_b] over the value indices (when built)
    onehot: dict | None = None  # one-hot data: classes over a or b
    description: str = ""
    _dev: dict = field(default_factory=dict)

    # -- choosing --------------------------------------------------------------------------
    def estimate(self, method: str, m: int, k: int, n: int, device) -> float:
        c = _gemm.costs(device)
        int8 = _gemm.int8_available(device)
        mkn = m * k * n
        if method == "terms":
            if self.terms is None:
                return math.inf
            total = 0.0
            for t in self.terms:
                total += t.cost(c, int8) * mkn
                total += c["elem"] * (t.a.nlimbs * m * k + t.b.nlimbs * k * n + m * n)
            return total
        if method == "onehot":
            if self.onehot is None:
                return math.inf
            cls, lt = self.onehot["classes"], self.onehot["limbs"]
            gemm = cls * lt * (c["int8"] if int8 else c["float32"]) * mkn
            build = c["elem"] * 0.3 * cls * (m * k + lt * k * n)
            return gemm + build
        if method == "gather":
            return math.inf if self.table is None else c["gather"] * mkn
        if method == "mul":
            return 1e6 * mkn
        raise ValueError(method)

    def choose(self, m: int, k: int, n: int, device) -> str:
        key = ("choice", m, k, n, device)
        hit = self._dev.get(key)
        if hit is None:
            methods = ("terms", "onehot", "gather", "mul")
            hit = min(methods, key=lambda meth: self.estimate(meth, m, k, n, device))
            if len(self._dev) < 4096:
                self._dev[key] = hit
        return hit

    def packed_ok(self, device) -> bool:
        """Whether :meth:`run` takes the packed int8 path on ``device``."""
        return (self.terms is not None and _gemm.int8_available(device) and
                self.a_space.has_lut and self.b_space.has_lut)

    def table_on(self, device) -> torch.Tensor:
        key = ("table", device)
        if key not in self._dev:
            self._dev[key] = self.table.to(device)
        return self._dev[key]

    # -- running ---------------------------------------------------------------------------
    def run(self, a: torch.Tensor, b: torch.Tensor, method: str | None = None,
            ia: torch.Tensor | None = None,
            ib: torch.Tensor | None = None) -> tuple[torch.Tensor, int | None]:
        """Exact ``S = Σ_k mul(a[m, k], b[k, n])`` (int64, modulo 2**64) of checked 2-D values,
        and a proven bound on ``|S|`` (``None`` when the method gives none). ``ia``/``ib``:
        the table indices of ``a``/``b`` when the caller has them already."""
        src = None
        if not isinstance(a, torch.Tensor):  # an im2col source: values only on demand
            src = a
            m, k = src.m, src.k
            dev = src.device
        else:
            m, k = a.shape
            dev = a.device
        n = b.shape[1]
        if method is None:
            method = self.choose(m, k, n, dev)
        if m == 0 or n == 0 or k == 0:
            return torch.zeros(m, n, dtype=torch.int64, device=dev), 0
        if method == "terms":
            if self.terms is None:
                raise ValueError(f"{self.mult.spec}: no GEMM decomposition; "
                                 f"method='terms' is not available")
            if src is not None and self.packed_ok(dev):
                perm = getattr(src, "k_perm", None)  # the GEMM's column order of src
                return _run_packed(self, src, b if perm is None else b.index_select(0, perm))
            return _run_terms(self, a if src is None else src.values(), b, ia, ib)
        if src is not None:
            a = src.values()
        if method == "onehot":
            if self.onehot is None:
                raise ValueError(f"{self.mult.spec}: no table; method='onehot' is not available")
            return _run_onehot(self, a, b), None
        if method == "gather":
            if self.table is None:
                raise ValueError(f"{self.mult.spec}: no table; method='gather' is not available")
            return gather_matmul(self.table_on(a.device), self.a_space.index(a),
                                 self.b_space.index(b)), None
        if method == "mul":
            return _run_mul(self.mult, a, b), None
        raise ValueError(f"method must be one of terms, onehot, gather, mul, not {method!r}")


# -- execution ---------------------------------------------------------------------------------


class _Acc:
    """Sum of int32/int64 pieces: int32 while the proven bound allows, then int64.

    Row and column vectors (offset corrections) are kept apart and broadcast once at the end.
    """

    def __init__(self, shape, device):
        self.shape, self.device = shape, device
        self.i32 = None
        self.b32 = 0
        self.i64 = None
        self.vecs: dict = {}
        self.bound = 0  # proven bound on |result| (None: unknown)

    def _track(self, scale: int, bound: int | None) -> None:
        if self.bound is not None:
            self.bound = None if bound is None else self.bound + abs(scale) * bound

    def add32(self, r: torch.Tensor, scale: int, bound: int) -> None:
        """Add ``scale · r`` for an int32 ``r`` with ``|r| <= bound``."""
        if abs(scale) * bound + self.b32 <= _gemm.INT32_LIMIT:
            if self.i32 is None:
                self.i32 = r.clone() if scale == 1 and not r.is_contiguous() else \
                    r if scale == 1 else r * scale
            else:
                self.i32.add_(r, alpha=scale)
            self.b32 += abs(scale) * bound
            self._track(scale, bound)
        else:
            self.add64(r.to(torch.int64), scale, bound)

    def add64(self, r: torch.Tensor, scale: int = 1, bound: int | None = None) -> None:
        """Add ``scale · r`` (``r`` of the output shape, or a row/column vector to broadcast);
        ``bound`` bounds ``|r|`` (``None``: unknown)."""
        self._track(scale, bound)
        if scale != 1:
            r = _scaled(r, scale)
        if r.shape != self.shape:
            key = tuple(r.shape)
            self.vecs[key] = r if key not in self.vecs else self.vecs[key] + r
            return
        if self.i64 is None:
            self.i64 = r
        else:
            self.i64.add_(r)

    def result(self) -> torch.Tensor:
        vecs = list(self.vecs.values())
        if self.i32 is not None and vecs and self.bound is not None and \
                self.bound <= _gemm.INT32_LIMIT:
            # everything fits int32: broadcast the vectors there (cheaper than in int64)
            out = self.i32
            for v in vecs:
                out = out.add_(v.to(torch.int32))
            vecs = []
            out = out.to(torch.int64)
        elif self.i32 is not None:
            out = self.i32.to(torch.int64)
        else:
            out = None
        if self.i64 is not None:
            out = self.i64 if out is None else out.add_(self.i64)
        if out is None:
            out = torch.zeros(self.shape, dtype=torch.int64, device=self.device)
        for v in vecs:
            out = out.add_(v) if out.shape == self.shape and out.is_contiguous() else out + v
        return out


def wrap64(x: int) -> int:
    """``x`` modulo ``2**64`` as a signed int64 value (int64 tensor arithmetic wraps alike)."""
    return ((x + (1 << 63)) % (1 << 64)) - (1 << 63)


def _scaled(r: torch.Tensor, scale: int) -> torch.Tensor:
    return r * wrap64(scale)


class _Operand:
    """One checked operand matrix and the transformed versions the terms ask for."""

    def __init__(self, space: Space, vals: torch.Tensor, axis: int, idx=None):
        self.space, self.vals, self.axis = space, vals, axis  # axis: the K axis (1 for a, 0 for b)
        self._idx = idx
        self._cache: dict = {}

    @property
    def idx(self) -> torch.Tensor:
        if self._idx is None:
            self._idx = self.space.index(self.vals).contiguous()
        return self._idx

    def gather(self, lut: torch.Tensor) -> torch.Tensor:
        idx = self.idx
        return lut.index_select(0, idx.reshape(-1)).view(idx.shape)

    def full(self, side: Side) -> torch.Tensor:
        """The transformed operand ``F / 2**shift`` as int64."""
        key = ("full",) + side.key
        if key not in self._cache:
            if side.kind == "id":
                v = self.vals
            elif side.kind == "lut":
                v = self.gather(side.on(side.lut, self.vals.device))
            else:
                v = side.fn(self.vals)
            self._cache[key] = v
        return self._cache[key]

    def rep(self, side: Side) -> tuple[int, list[torch.Tensor], int, int]:
        """``(offset, limbs, lo, hi)`` of the transformed operand."""
        key = ("rep",) + side.key
        if key not in self._cache:
            if side.kind == "lut":
                dev = self.vals.device
                limbs = [self.gather(side.on(t, dev)) for t in side.limb_luts]
                self._cache[key] = (side.offset, limbs, side.lo, side.hi)
            elif side.kind == "id":
                self._cache[key] = (side.offset, digits(self.vals, side.offset, side.nlimbs),
                                    side.lo, side.hi)
            else:
                f = self.full(side)
                lo, hi = (int(x) for x in torch.aminmax(f)) if f.numel() else (0, 0)
                c, n = int8_rep(lo, hi)
                self._cache[key] = (c, digits(f, c, n), lo, hi)
        return self._cache[key]

    def limb_sums(self, side: Side) -> torch.Tensor:
        """``Σ_l 256**l · Σ_k L_l`` (int64), the K-sums of ``F - offset``."""
        key = ("sums",) + side.key
        if key not in self._cache:
            _, limbs, _, _ = self.rep(side)
            total = None
            for l, t in enumerate(limbs):
                s = t.sum(self.axis, dtype=torch.int64) << (8 * l)
                total = s if total is None else total + s
            self._cache[key] = total
        return self._cache[key]

    def range(self, side: Side) -> tuple[int, int]:
        if side.lo is not None:
            return side.lo, side.hi
        _, _, lo, hi = self.rep(side)
        return lo, hi


def _run_terms(plan: Plan, a: torch.Tensor, b: torch.Tensor, ia=None,
               ib=None) -> tuple[torch.Tensor, int | None]:
    """``Σ_t 2**s_t · f_t(A) @ g_t(B)``: packed int8 GEMMs when the spaces have tables and
    ``_int_mm`` runs here, else one GEMM (int8 limbs, float or int64) per term."""
    dev = a.device
    if plan.packed_ok(dev):
        return _run_packed(plan, a, b, ia, ib)
    m, k = a.shape
    n = b.shape[1]
    A = _Operand(plan.a_space, a, 1, ia)
    B = _Operand(plan.b_space, b, 0, ib)
    acc = _Acc((m, n), dev)
    for t in plan.terms:
        _term_into(acc, t, A, B, k)
    return acc.result(), acc.bound


def _term_into(acc: _Acc, t: TermPlan, A: _Operand, B: _Operand, k: int) -> None:
    """Add one term, on the cheapest exact GEMM for its operand ranges."""
    dev = A.vals.device
    c = _gemm.costs(dev)
    sh = t.shift + t.a.shift + t.b.shift
    alo, ahi = A.range(t.a)
    blo, bhi = B.range(t.b)
    fmax, gmax = max(abs(alo), abs(ahi)), max(abs(blo), abs(bhi))
    bound = k * fmax * gmax
    ca, la_n = int8_rep(alo, ahi)
    cb, lb_n = int8_rep(blo, bhi)
    options = []
    if la_n and lb_n:
        if _gemm.int8_available(dev):
            options.append((la_n * lb_n * c["int8"], "int8"))
        dt = _gemm.float_dtype_for(bound)
        if dt is not None:
            options.append((c["float32" if dt == torch.float32 else "float64"], dt))
        if dev.type == "cpu":
            options.append((c["int64"], "int64"))
    how = min(options, key=lambda o: o[0])[1] if options else "int8"
    if how in ("int64", torch.float32, torch.float64):
        F, G = A.full(t.a), B.full(t.b)
        r = torch.matmul(F, G) if how == "int64" else _gemm.mm_float(F, G, how)
        acc.add64(r, 1 << sh, bound)
        return
    # int8 limbs: F = ca + Σ 256^l L_l, G = cb + Σ 256^j M_j
    ca, la, _, _ = A.rep(t.a)
    cb, lb, _, _ = B.rep(t.b)
    if la and lb:
        lmax = 128 * 128
        kc = max(1, _gemm.INT32_LIMIT // lmax)
        for i, L in enumerate(la):
            for j, M in enumerate(lb):
                scale = 1 << (sh + 8 * (i + j))
                for k0 in range(0, k, kc):
                    k1 = min(k, k0 + kc)
                    Ls, Ms = (L, M) if (k0, k1) == (0, k) else (L[:, k0:k1], M[k0:k1])
                    acc.add32(_gemm.mm_int8(Ls, Ms), scale, (k1 - k0) * lmax)
    # offsets: F·G = F'·G' + ca·colsum(G') + cb·rowsum(F') + ca·cb·K
    if ca and lb:
        acc.add64(B.limb_sums(t.b)[None, :], ca << sh, k * (gmax + abs(cb)))
    if cb and la:
        acc.add64(A.limb_sums(t.a)[:, None], cb << sh, k * (fmax + abs(ca)))
    if ca and cb:
        const = wrap64(wrap64(ca * cb * k) << sh)
        acc.add64(torch.full((1, 1), const, dtype=torch.int64, device=dev), 1,
                  abs(ca * cb * k) << sh)


# -- packed int8 execution ---------------------------------------------------------------------

_PACK_DTYPES = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
#: Most limb pairs one packed GEMM sums (bigger groups have cache-unfriendly operands).
MAX_SLOTS = 4


def _pack(luts: list[torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Interleave int8 LUTs byte-wise into one wide LUT: one gather fetches them all."""
    j = len(luts)
    jp = 1 if j == 1 else 2 if j == 2 else 4 if j <= 4 else 8 * -(-j // 8)
    size = luts[0].numel()
    raw = torch.zeros(size, jp, dtype=torch.int8)
    for i, t in enumerate(luts):
        raw[:, i] = t
    if jp <= 8:
        return raw.view(_PACK_DTYPES[jp]).reshape(size), jp
    return raw.view(torch.int64), jp


def _limb_luts(side: Side) -> list[torch.Tensor]:
    if side.kind == "lut":
        return side.limb_luts
    return digits(side.space.values, side.offset, side.nlimbs)  # "id" on a table space


@dataclass
class _Group:
    """Limb pairs summed by one int8 GEMM: ``2**exp · Σ_slots A_slot @ B_slot``.

    The slots are interleaved along K (``jp`` bytes per k, zero padded), so one gather per side
    builds the operand of the whole group. Extra operand rows hold indicator patterns whose
    products are the K-sums of limbs, needed for the offsets.
    """

    exp: int
    slots: list  # (term index, a limb, b limb, a scale exp, b scale exp)
    a_lut: torch.Tensor = None
    b_lut: torch.Tensor = None
    jp: int = 1
    bound_k: int = 0  # Σ over the slots of max|a limb|·max|b limb|
    a_arith: Side | None = None  # a single unscaled "id" limb: computed from the values
    b_arith: Side | None = None
    sums_b: list = field(default_factory=list)  # slots whose B K-sums are read (extra A rows)
    sums_a: list = field(default_factory=list)  # slots whose A K-sums are read (extra B rows)


def _jp(j: int) -> int:
    return 1 if j == 1 else 2 if j == 2 else 4 if j <= 4 else 8 * -(-j // 8)


def _fits8(t: torch.Tensor, d: int) -> bool:
    lo, hi = int(t.min()) << d, int(t.max()) << d
    return -128 <= lo and hi <= 127


def _packed(plan: Plan) -> dict:
    hit = plan._dev.get("packed")
    if hit is not None:
        return hit
    pairs, const_terms = [], []
    for ti, t in enumerate(plan.terms):
        if t.a.nlimbs == 0 or t.b.nlimbs == 0:
            const_terms.append(ti)
            continue
        sh = t.shift + t.a.shift + t.b.shift
        for i in range(t.a.nlimbs):
            for j in range(t.b.nlimbs):
                pairs.append((sh + 8 * (i + j), ti, i, j))
    groups: list[_Group] = []
    for e, ti, i, j in sorted(pairs):
        t = plan.terms[ti]
        la, lb = _limb_luts(t.a)[i], _limb_luts(t.b)[j]
        placed = False
        for g in sorted((g for g in groups if g.exp <= e), key=lambda g: -g.exp):
            d = e - g.exp
            n_old = len(g.slots)
            if n_old >= MAX_SLOTS:
                continue
            if d and _jp(n_old + 1) - _jp(n_old) > 1:
                continue  # joining would pad more GEMM work than a separate group costs
            if d == 0:
                g.slots.append((ti, i, j, 0, 0))
            elif _fits8(la, d):
                g.slots.append((ti, i, j, d, 0))
            elif _fits8(lb, d):
                g.slots.append((ti, i, j, 0, d))
            else:
                continue
            placed = True
            break
        if not placed:
            groups.append(_Group(e, [(ti, i, j, 0, 0)]))
    groups.sort(key=lambda g: g.exp)
    # which (group, slot) gives the K-sums of each limb needed by an offset
    where_a, where_b = {}, {}
    for gi, g in enumerate(groups):
        for s, (ti, i, j, da, db) in enumerate(g.slots):
            t = plan.terms[ti]
            if t.b.offset and (ti, i) not in where_a:
                where_a[(ti, i)] = (gi, s, da)
            if t.a.offset and (ti, j) not in where_b:
                where_b[(ti, j)] = (gi, s, db)
    for gi, g in enumerate(groups):
        a_l, b_l = [], []
        for ti, i, j, da, db in g.slots:
            t = plan.terms[ti]
            la, lb = _limb_luts(t.a)[i] << da, _limb_luts(t.b)[j] << db
            a_l.append(la.to(torch.int8))
            b_l.append(lb.to(torch.int8))
            g.bound_k += int(la.abs().max()) * int(lb.abs().max())
        g.a_lut, g.jp = _pack(a_l)
        g.b_lut, _ = _pack(b_l)
        if len(g.slots) == 1:
            ti, i, j, da, db = g.slots[0]
            t = plan.terms[ti]
            if t.a.kind == "id" and t.a.nlimbs == 1 and not da:
                g.a_arith = t.a
            if t.b.kind == "id" and t.b.nlimbs == 1 and not db:
                g.b_arith = t.b
        g.sums_b = [s for (g1, s, _) in where_b.values() if g1 == gi]
        g.sums_a = [s for (g1, s, _) in where_a.values() if g1 == gi]
    hit = {"groups": groups, "const": const_terms, "where_a": where_a, "where_b": where_b,
           "dev": {}}
    plan._dev["packed"] = hit
    return hit


def _side_matrix(lut, idx_fn, vals_fn, rows: int, k: int, jp: int, extra: list,
                 arith: Side | None) -> torch.Tensor:
    """``[rows + len(extra), k·jp]`` int8: gathered interleaved limbs, then indicator rows
    (one per slot of ``extra``: 1 at that slot for every k)."""
    dev = lut.device
    if not extra:
        if arith is not None:
            return digits(vals_fn(), arith.offset, 1)[0]
        idx = idx_fn()
        return lut.index_select(0, idx.reshape(-1)).view(torch.int8).view(rows, k * jp)
    buf = torch.empty(rows + len(extra), k * jp, dtype=torch.int8, device=dev)
    if arith is not None:
        buf[:rows].copy_(digits(vals_fn(), arith.offset, 1)[0])
    else:
        idx = idx_fn().reshape(-1)
        if lut.dim() == 1:
            out = buf.view(-1).view(lut.dtype)[: rows * k]
        else:
            out = buf.view(-1).view(torch.int64).view(-1, lut.shape[1])[: rows * k]
        torch.index_select(lut, 0, idx, out=out)
    pat = buf[rows:].view(len(extra), k, jp)
    pat.zero_()
    for r, s in enumerate(extra):
        pat[r, :, s] = 1
    return buf


def _b_interleaved(lut, idx: torch.Tensor, k: int, n: int, jp: int, extra: list) -> torch.Tensor:
    """``[N + len(extra), K·jp]`` int8 from the ``[K, N]`` index (rows: n, then indicator
    rows): gather the packed limbs, transpose them as whole words."""
    g = lut.index_select(0, idx.reshape(-1))
    words = g.view(k, n, -1) if lut.dim() == 2 else g.view(k, n)
    if not extra:
        # an explicit buffer: .contiguous() keeps odd strides on size-1 dimensions
        t = torch.empty((n, k) + tuple(lut.shape[1:]), dtype=lut.dtype, device=lut.device)
        t.copy_(words.transpose(0, 1))
        return t.view(-1).view(torch.int8).view(n, k * jp)
    buf = torch.empty(n + len(extra), k * jp, dtype=torch.int8, device=lut.device)
    wv = buf.view(-1).view(lut.dtype).view((n + len(extra), k) + tuple(lut.shape[1:]))
    wv[:n].copy_(words.transpose(0, 1))
    pat = buf[n:].view(len(extra), k, jp)
    pat.zero_()
    for r, s in enumerate(extra):
        pat[r, :, s] = 1
    return buf


class MatrixSource:
    """Operand ``a`` given as a ``[M, K]`` value matrix."""

    def __init__(self, space: Space, a: torch.Tensor, ia: torch.Tensor | None = None):
        self.space, self.a = space, a
        self.m, self.k = a.shape
        self.device = a.device
        self._op = _Operand(space, a, 1, ia)

    def operand(self) -> _Operand:
        return self._op

    def values(self) -> torch.Tensor:
        return self.a

    def matrix(self, lut, jp: int, extra: list, arith: Side | None) -> torch.Tensor:
        return _side_matrix(lut, lambda: self._op.idx, lambda: self.a, self.m, self.k, jp,
                            extra, arith)


class Im2colSource:
    """Operand ``a`` of a convolution: the im2col matrix of ``x`` ``[N, C, H, W]`` (rows
    ``(n, oh, ow)``) for channel group ``g``, built from the packed limbs of the pixels (a few
    bytes each) instead of the int64 values.

    :meth:`values` has the columns in the accumulation order ``(ic, kh, kw)``; the GEMM matrices
    of :meth:`matrix` use ``(kh, kw, ic)`` (contiguous channel runs, much cheaper to build),
    and :attr:`k_perm` maps them: GEMM column ``j`` is value column ``k_perm[j]``.
    """

    def __init__(self, space: Space, x: torch.Tensor, kh: int, kw: int, stride, padding,
                 groups: int, g: int, shared: dict | None = None):
        self.space, self.x = space, x
        self.kh, self.kw = kh, kw
        self.sh, self.sw = stride
        self.ph, self.pw = padding
        n, c, h, w = x.shape
        self.cg = c // groups
        self.c0 = g * self.cg
        self.oh = (h + 2 * self.ph - kh) // self.sh + 1
        self.ow = (w + 2 * self.pw - kw) // self.sw + 1
        self.m, self.k = n * self.oh * self.ow, self.cg * kh * kw
        self.device = x.device
        self.shared = {} if shared is None else shared  # per-pixel tensors, shared by groups
        key = ("k_perm", self.cg, kh, kw)
        if key not in self.shared:  # value column of GEMM column (kh, kw, ic)
            std = torch.arange(self.k, device=x.device).view(self.cg, kh, kw)
            self.shared[key] = std.permute(1, 2, 0).reshape(-1)
        self.k_perm = self.shared[key]
        self._vals = None
        self._op = None

    def _cols(self, pix: torch.Tensor, pad_value, out: torch.Tensor) -> None:
        """im2col in ``(kh, kw, ic)`` column order of ``pix`` ``[N, C, H, W, *tail]``."""
        n, c, h, w = pix.shape[:4]
        tail = tuple(pix.shape[4:])
        nt = len(tail)
        # channels last and zero padded, in one copy: [N, H + 2ph, W + 2pw, Cg, *tail]
        hp, wp = h + 2 * self.ph, w + 2 * self.pw
        padded = torch.empty((n, hp, wp, self.cg) + tail, dtype=pix.dtype, device=pix.device)
        if self.ph or self.pw:
            if not isinstance(pad_value, torch.Tensor):
                pad_value = torch.tensor(pad_value, dtype=pix.dtype, device=pix.device)
            padded.copy_(pad_value.expand(padded.shape))
        perm = (0, 2, 3, 1) + tuple(range(4, 4 + nt))
        padded[:, self.ph:self.ph + h, self.pw:self.pw + w] = \
            pix[:, self.c0:self.c0 + self.cg].permute(perm)
        dst = out.view((n, self.oh, self.ow, self.kh, self.kw, self.cg) + tail)
        he, we = self.sh * (self.oh - 1) + 1, self.sw * (self.ow - 1) + 1
        for i in range(self.kh):
            for j in range(self.kw):
                dst[:, :, :, i, j] = padded[:, i:i + he:self.sh, j:j + we:self.sw]

    def values(self) -> torch.Tensor:
        """The int64 im2col matrix, columns in the accumulation order ``(ic, kh, kw)``."""
        if self._vals is None:
            out = torch.empty(self.m, self.k, dtype=torch.int64, device=self.device)
            self._cols(self.x, 0, out)
            inv = torch.empty_like(self.k_perm)
            inv[self.k_perm] = torch.arange(self.k, device=self.device)
            self._vals = out.index_select(1, inv)
        return self._vals

    def operand(self) -> _Operand:
        if self._op is None:
            self._op = _Operand(self.space, self.values(), 1)
        return self._op

    def matrix(self, lut, jp: int, extra: list, arith: Side | None) -> torch.Tensor:
        """``[M + len(extra), K·jp]`` int8 in the GEMM column order (see :class:`MatrixSource`)."""
        rows = self.m + len(extra)
        buf = torch.empty(rows, self.k * jp, dtype=torch.int8, device=self.device)
        if arith is not None:
            key = ("digits", arith.offset)
            pix = self.shared.get(key)
            if pix is None:
                pix = self.shared[key] = digits(self.x, arith.offset, 1)[0]
            pad = digits(torch.zeros((), dtype=torch.int64), arith.offset, 1)[0].to(self.device)
            self._cols(pix, pad, buf[:self.m])
        else:
            key = ("words", id(lut))
            pix = self.shared.get(key)
            if pix is None:
                idx = self.shared.get("idx")
                if idx is None:
                    idx = self.shared["idx"] = self.space.index(self.x)
                w = lut.index_select(0, idx.reshape(-1))
                pix = self.shared[key] = w.view(tuple(self.x.shape) + tuple(lut.shape[1:]))
            zero = torch.zeros(1, dtype=torch.int64, device=self.device)
            pad = lut.index_select(0, self.space.index(zero))[0]
            words = buf[:self.m].reshape(-1).view(lut.dtype)
            if lut.dim() == 2:
                words = words.view(-1, lut.shape[1])
            self._cols(pix, pad, words)
        if extra:
            pat = buf[self.m:].view(len(extra), self.k, jp)
            pat.zero_()
            for r, s_ in enumerate(extra):
                pat[r, :, s_] = 1
        return buf


def _run_packed(plan: Plan, src, b: torch.Tensor, ia=None,
                ib=None) -> tuple[torch.Tensor, int]:
    if isinstance(src, torch.Tensor):
        src = MatrixSource(plan.a_space, src, ia)
    m, k = src.m, src.k
    n = b.shape[1]
    dev = src.device
    pk = _packed(plan)
    cache = pk["dev"].setdefault(dev, {})
    B = _Operand(plan.b_space, b, 0, ib)
    bt = b.t()
    # weights stored [N, K] (e.g. linear's w): gather along the rows of b.t(), no transposes
    b_rows_t = bt.is_contiguous() and not b.is_contiguous()
    bt_idx = []

    def b_t_idx():
        if not bt_idx:
            bt_idx.append(plan.b_space.index(bt).contiguous())
        return bt_idx[0]

    acc = _Acc((m, n), dev)
    colsum, rowsum = {}, {}
    for gi, g in enumerate(pk["groups"]):
        luts = cache.get(gi)
        if luts is None:
            luts = cache[gi] = (g.a_lut.to(dev), g.b_lut.to(dev))
        ag = src.matrix(luts[0], g.jp, g.sums_b, g.a_arith)
        if g.jp == 1 and not g.sums_a and not b_rows_t:  # [K, N] as it comes
            bmat = (digits(b, g.b_arith.offset, 1)[0] if g.b_arith is not None else
                    luts[1].index_select(0, B.idx.reshape(-1)).view(k, n))
        elif b_rows_t or g.b_arith is not None:  # [N (+ indicator rows), K·jp], transposed
            bmat = _side_matrix(luts[1], b_t_idx, lambda: bt, n, k, g.jp, g.sums_a,
                                g.b_arith).t()
        else:  # gather [K, N] words, transpose to [N (+ indicator rows), K·jp]
            bmat = _b_interleaved(luts[1], B.idx, k, n, g.jp, g.sums_a).t()
        kc = max(1, _gemm.INT32_LIMIT // max(1, g.bound_k, 128))
        pieces = []
        for k0 in range(0, k, kc):
            k1 = min(k, k0 + kc)
            if (k0, k1) == (0, k):
                pieces.append((_gemm.mm_int8(ag, bmat), k))
            else:
                pieces.append((_gemm.mm_int8(ag[:, k0 * g.jp:k1 * g.jp].contiguous(),
                                             bmat[k0 * g.jp:k1 * g.jp].contiguous()), k1 - k0))
        for r, kk in pieces:
            main = r[:m, :n] if (g.sums_b or g.sums_a) else r
            acc.add32(main, 1 << g.exp, kk * g.bound_k)
        for x, s in enumerate(g.sums_b):  # K-sums of B slot s: the extra A rows
            colsum[(gi, s)] = sum(r[m + x, :n].to(torch.int64) for r, _ in pieces)
        for x, s in enumerate(g.sums_a):
            rowsum[(gi, s)] = sum(r[:m, n + x].to(torch.int64) for r, _ in pieces)
    # offsets: F·G = F'·G' + ca·colsum(G') + cb·rowsum(F') + ca·cb·K
    for ti, t in enumerate(plan.terms):
        if ti in pk["const"]:
            _term_into(acc, t, src.operand(), B, k)
            continue
        sh = t.shift + t.a.shift + t.b.shift
        ca, cb = t.a.offset, t.b.offset
        fmax, gmax = t.a.maxabs, t.b.maxabs
        if ca:
            cs = 0
            for j in range(t.b.nlimbs):
                gi, s, d = pk["where_b"][(ti, j)]
                cs = cs + ((colsum[(gi, s)] >> d) << (8 * j))
            acc.add64(cs[None, :], ca << sh, k * (gmax + abs(cb)))
        if cb:
            rs = 0
            for i in range(t.a.nlimbs):
                gi, s, d = pk["where_a"][(ti, i)]
                rs = rs + ((rowsum[(gi, s)] >> d) << (8 * i))
            acc.add64(rs[:, None], cb << sh, k * (fmax + abs(ca)))
        if ca and cb:
            const = wrap64(wrap64(ca * cb * k) << sh)
            acc.add64(torch.full((1, 1), const, dtype=torch.int64, device=dev), 1,
                      abs(ca * cb * k) << sh)
    return acc.result(), acc.bound


def gather_matmul(table: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor,
                  chunk_elems: int = 1 << 21) -> torch.Tensor:
    """``Σ_k table[ia[m, k], ib[k, n]]``: the LUT-gather method, chunked over K."""
    m, k = ia.shape
    n = ib.shape[1]
    rb = table.shape[1]
    flat = table.reshape(-1)
    a_off = (ia * rb).contiguous()
    out = torch.zeros(m, n, dtype=torch.int64, device=ia.device)
    kc = max(1, chunk_elems // max(1, m * n))
    for k0 in range(0, k, kc):
        k1 = min(k, k0 + kc)
        idx = a_off[:, k0:k1, None] + ib[None, k0:k1, :]
        out += flat.index_select(0, idx.reshape(-1)).view(m, k1 - k0, n).sum(1)
    return out


def _run_mul(mult, a: torch.Tensor, b: torch.Tensor, chunk_elems: int = 1 << 21) -> torch.Tensor:
    """``Σ_k mult.mul(a[:, k], b[k, :])`` evaluated product by product (no table, no policy)."""
    m, k = a.shape
    n = b.shape[1]
    out = torch.zeros(m, n, dtype=torch.int64, device=a.device)
    kc = max(1, chunk_elems // max(1, m * n))
    for k0 in range(0, k, kc):
        k1 = min(k, k0 + kc)
        out += mult.mul(a[:, k0:k1, None].contiguous(), b[None, k0:k1, :].contiguous()).sum(1)
    return out


def _run_onehot(plan: Plan, a: torch.Tensor, b: torch.Tensor,
                chunk_elems: int = 1 << 25) -> torch.Tensor:
    """One-hot GEMMs over the distinct table rows (or columns) of the operand with fewer."""
    oh = plan.onehot
    dev = a.device
    if oh["by"] == "b":  # classes over b: transpose the problem
        return _onehot_core(plan, oh, b.t(), a.t(), plan.b_space, plan.a_space, dev,
                            chunk_elems).t()
    return _onehot_core(plan, oh, a, b, plan.a_space, plan.b_space, dev, chunk_elems)


def _onehot_core(plan, oh, a, b, sa: Space, sb: Space, dev, chunk_elems) -> torch.Tensor:
    key = ("onehot", dev)
    if key not in plan._dev:
        plan._dev[key] = (oh["cls"].to(dev), oh["rows"].to(dev))
    cls_lut, rows = plan._dev[key]  # rows: [C, |b space|] (class C-1 may be the zero row)
    m, k = a.shape
    n = b.shape[1]
    cls = cls_lut.index_select(0, sa.index(a).reshape(-1)).view(m, k)
    ib = sb.index(b).contiguous()
    ncls = rows.shape[0]
    off, nl = oh["offset"], oh["limbs"]
    int8 = _gemm.int8_available(dev)
    acc = _Acc((m, n), dev)
    cc = max(1, min(ncls, chunk_elems // max(1, k * max(m, n))))
    for c0 in range(0, ncls, cc):
        c1 = min(ncls, c0 + cc)
        w = c1 - c0
        local = cls - c0
        inside = (local >= 0) & (local < w)
        x = torch.zeros(m, k, w, dtype=torch.int8, device=dev)
        x.scatter_(2, local.clamp(0, w - 1)[..., None], inside[..., None].to(torch.int8))
        x = x.view(m, k * w)
        y = rows[c0:c1].index_select(1, ib.reshape(-1)).view(w, k, n).transpose(0, 1)
        y = y.reshape(k * w, n)
        if not int8:
            bound = k * int(y.abs().max())
            dt = _gemm.float_dtype_for(bound)
            acc.add64(_gemm.mm_float(x.to(torch.int64), y, dt) if dt else
                      torch.matmul(x.to(torch.int64), y))
            continue
        for j, Y in enumerate(digits(y, off, nl)):
            acc.add32(_gemm.mm_int8(x, Y), 1 << (8 * j), k * 128)
        if off:
            acc.add64(inside.sum(1, dtype=torch.int64)[:, None], off)
    return acc.result()


# -- building ----------------------------------------------------------------------------------


def _eval_lut(tr: Transform, space: Space) -> torch.Tensor:
    vals = space.valid_values()
    out = tr(vals)
    if space.valid is None:
        return out.expand(space.size).clone() if out.shape != vals.shape else out
    full = torch.full((space.size,), int(out[0]) if out.numel() else 0, dtype=torch.int64)
    full[space.valid] = out
    return full


def _table(mult, sa: Space, sb: Space) -> torch.Tensor:
    va, vb = sa.valid_values(), sb.valid_values()
    t = mult.mul(va[:, None], vb[None, :])
    if sa.valid is None and sb.valid is None:
        return t
    full = torch.zeros(sa.size, sb.size, dtype=torch.int64)
    ia = torch.nonzero(sa.valid).reshape(-1) if sa.valid is not None else torch.arange(sa.size)
    ib = torch.nonzero(sb.valid).reshape(-1) if sb.valid is not None else torch.arange(sb.size)
    full[ia[:, None], ib[None, :]] = t
    return full


def _raw_luts(d: Decomposition, sa: Space, sb: Space) -> list[tuple]:
    raw = []
    for t in d.terms:
        la, lb = _eval_lut(t.fa, sa), _eval_lut(t.fb, sb)
        if bool(la.any()) and bool(lb.any()):
            raw.append(_normalize(la, lb, t.shift))
    return raw


def _raw_sum(raw, sa: Space, sb: Space) -> torch.Tensor:
    total = torch.zeros(sa.size, sb.size, dtype=torch.int64)
    for la, lb, s in raw:
        total += torch.outer(la, lb) << s
    return total


def _mask(t: torch.Tensor, sa: Space, sb: Space) -> torch.Tensor:
    if sa.valid is not None:
        t = t * sa.valid[:, None]
    if sb.valid is not None:
        t = t * sb.valid[None, :]
    return t


def _to_plans(raw, sa: Space, sb: Space) -> list[TermPlan]:
    out = []
    for la, lb, s in raw:
        side_a, s1 = _side_from_lut(sa, la)
        side_b, s2 = _side_from_lut(sb, lb)
        if side_a is None or side_b is None:
            continue
        side_a.shift, side_b.shift = s1, s2
        out.append(TermPlan(side_a, side_b, s))
    return out


def _best_merge(raw, sa, sb, dev_costs, int8) -> list[TermPlan]:
    variants = [raw, _merge(raw, "b"), _merge(raw, "a"), _merge(_merge(raw, "b"), "a"),
                _merge(_merge(raw, "a"), "b")]
    plans = [_to_plans(v, sa, sb) for v in variants]
    return min(plans, key=lambda p: _plans_cost(p, dev_costs, int8))


def _sample_check(mult, terms: tuple, sa: Space, sb: Space, n: int = 4096) -> bool:
    g = torch.Generator().manual_seed(1234)

    def sample(space: Space):
        if space.has_lut:
            v = space.valid_values()
            return v[torch.randint(0, v.numel(), (n,), generator=g)]
        return torch.randint(space.lo, space.hi + 1, (n,), generator=g, dtype=torch.int64)

    a, b = sample(sa), sample(sb)
    total = torch.zeros(n, dtype=torch.int64)
    for t in terms:
        total += (t.fa(a) * t.fb(b)) << t.shift
    return bool((total == mult.mul(a, b)).all())


class PolicyError(RuntimeError):
    """A family policy returned a decomposition that is not exact (a bug in the policy)."""


def build_plan(mult, decompositions: list[Decomposition], device_type: str = "cpu") -> Plan:
    """Check, complete, merge and price the decompositions of ``mult``; keep the best."""
    sa, sb = Space(mult.a_format), Space(mult.b_format)
    plan = Plan(mult, sa, sb)
    dev_costs = _gemm.COSTS.get(device_type, _gemm.COSTS["cpu"])
    int8 = _gemm.int8_available(torch.device(device_type))
    if not (sa.has_lut and sb.has_lut):
        for d in decompositions:
            if d.complete and _sample_check(mult, d.terms, sa, sb):
                plan.terms = [TermPlan(_fn_side(sa, t.fa), _fn_side(sb, t.fb), t.shift)
                              for t in d.terms]
                plan.description = f"{d.name}: {len(d.terms)} term(s), evaluated per call"
                return plan
            if d.complete:
                raise PolicyError(f"emulation policy {d.name!r} is not exact for {mult.spec}")
        plan.description = "mul: product by product (no decomposition)"
        return plan

    table = None
    if sa.size * sb.size <= TABLE_MAX_ENTRIES:
        table = _table(mult, sa, sb)
        plan.table = table
    candidates: list[tuple[str, list[tuple]]] = []
    for d in decompositions:
        raw = _raw_luts(d, sa, sb)
        if table is None:
            if d.complete:
                if not _sample_check(mult, d.terms, sa, sb):
                    raise PolicyError(f"emulation policy {d.name!r} is not exact for {mult.spec}")
                candidates.append((d.name, raw))
            continue
        resid = _mask(table - _raw_sum(raw, sa, sb), sa, sb)
        if d.complete:
            if bool(resid.any()):
                raise PolicyError(f"emulation policy {d.name!r} is not exact for {mult.spec}")
            candidates.append((d.name, raw))
        else:
            extra = factor_exact(resid)
            if extra is not None:
                candidates.append((f"{d.name} + residual rank {len(extra)}",
                                   raw + [_normalize(u, v, 0) for u, v in extra]))
    if table is not None:
        best_so_far = min((_plans_cost(_to_plans(r, sa, sb), dev_costs, int8)
                           for _, r in candidates), default=math.inf)
        if best_so_far > 1.5:  # worth a generic look at the table
            va, vb = _eval_lut(IDENTITY, sa), _eval_lut(IDENTITY, sb)
            exact_raw = [_normalize(va, vb, 0)]
            for name, base, resid in (
                ("table rank", [], _mask(table, sa, sb)),
                ("exact + table residual", exact_raw,
                 _mask(table - torch.outer(va, vb), sa, sb)),
            ):
                extra = factor_exact(resid)
                if extra is not None:
                    candidates.append((f"{name} {len(extra)}",
                                       base + [_normalize(u, v, 0) for u, v in extra
                                               if bool(u.any()) and bool(v.any())]))
        _onehot_setup(plan, table, sa, sb)
    if candidates:
        scored = []
        for name, raw in candidates:
            terms = _best_merge(raw, sa, sb, dev_costs, int8)
            scored.append((_plans_cost(terms, dev_costs, int8), name, terms))
        cost, name, terms = min(scored, key=lambda s: s[0])
        plan.terms = terms
        plan.description = (f"{name}: {len(terms)} term(s), "
                            f"{sum(t.a.nlimbs * t.b.nlimbs for t in terms)} int8 GEMM(s)")
    else:
        plan.description = "no decomposition"
    return plan


def _fn_side(space: Space, tr: Transform) -> Side:
    if tr.is_identity:
        return Side(space, "id")
    return Side(space, "fn", fn=tr)


def _onehot_setup(plan: Plan, table: torch.Tensor, sa: Space, sb: Space) -> None:
    best = None
    for by, t, space in (("a", table, sa), ("b", table.t(), sb)):
        rows, cls = torch.unique(t, dim=0, return_inverse=True)
        nz = rows.any(1)
        if not bool(nz.all()):  # move the zero row last and drop it (it adds nothing)
            keep = torch.nonzero(nz).reshape(-1)
            remap = torch.full((rows.shape[0],), keep.numel(), dtype=torch.int64)
            remap[keep] = torch.arange(keep.numel())
            rows, cls = rows[keep], remap[cls]
        if rows.numel() == 0:
            rows = torch.zeros(1, t.shape[1], dtype=torch.int64)
        lo, hi = int(rows.min()), int(rows.max())
        off, nl = int8_rep(lo, hi)
        nl = max(nl, 1)
        cand = {"by": by, "cls": cls, "rows": rows, "classes": rows.shape[0],
                "offset": off, "limbs": nl}
        if best is None or cand["classes"] * nl < best["classes"] * best["limbs"]:
            best = cand
    plan.onehot = best
