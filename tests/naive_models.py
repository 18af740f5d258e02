"""Naive scalar models of every multiplier family, written from the papers' definitions.

Plain Python ints, one operand pair at a time, no torch and no code shared with ``sw/mult``:
Ax-BxP enumerates the kept block pairs and shift-adds them, ROUP builds each Booth partial-
product row, LUT-NA builds its look-up tables and looks the chunks up, Bit-Fusion lanes are
composed from k×k block products. They are slow on purpose; the vectorized models in
``sw/mult`` are checked against them.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = [
    "naive_exact",
    "naive_axbxp",
    "naive_roup",
    "naive_lutna",
    "naive_truncated_array",
    "naive_fused_lane",
    "naive_model",
]


def naive_exact(a: int, b: int) -> int:
    return a * b


# -- Ax-BxP (seed spec §1.3) ------------------------------------------------------------------
@lru_cache(maxsize=1 << 16)
def _kept_blocks(mag: int, n: int, k: int, l: int, select: str, rnd: bool) -> dict[int, int]:
    """``{block index: block value}`` of the blocks of ``mag`` that Ax-BxP keeps."""
    nblocks = n // k
    mask = (1 << k) - 1
    blocks = [(mag >> (k * i)) & mask for i in range(nblocks)]
    if l == 0 or l >= nblocks:
        return dict(enumerate(blocks))
    if select == "static":
        top = nblocks - 1
    else:
        nonzero = [i for i, v in enumerate(blocks) if v]
        if not nonzero:
            return {}
        top = max(nonzero)
    idx = [i for i in range(top, top - l, -1) if i >= 0]
    kept = {i: blocks[i] for i in idx}
    lo = min(idx)
    if rnd and lo > 0 and (blocks[lo - 1] >> (k - 1)) & 1:
        carry = 1
        for i in sorted(idx):  # ripple the increment through the kept blocks, lowest first
            v = kept[i] + carry
            kept[i], carry = v & mask, v >> k
        if carry:  # it would leave the kept field: saturate every kept block at all ones
            kept = {i: mask for i in idx}
    return kept


def naive_axbxp(a: int, b: int, *, n: int, k: int, l: int, select: str = "dynamic",
                round: bool = False) -> int:
    """Sign-magnitude Ax-BxP: Σ over kept block pairs of ``X_i·W_j << k(i+j)``."""
    xs = _kept_blocks(abs(a), n, k, l, select, bool(round))
    ws = _kept_blocks(abs(b), n, k, l, select, bool(round))
    total = 0
    for i, xi in xs.items():
        for j, wj in ws.items():
            total += (xi * wj) << (k * (i + j))
    return -total if (a < 0) != (b < 0) else total


def naive_fused_lane(a: int, b: int, *, q: int, k: int, sa: bool, sb: bool) -> int:
    """A ``q``×``q`` Bit-Fusion lane composed of ``k``×``k`` block products.

    The lane operand is cut into ``k``-bit blocks of its two's-complement code; the top block of
    a signed operand is a signed ``k``-bit block (Bit Fusion's signed BitBricks), the others
    unsigned.
    """

    def blocks(x, signed):
        code = x & ((1 << q) - 1)
        out = []
        for i in range(q // k):
            v = (code >> (k * i)) & ((1 << k) - 1)
            if signed and i == q // k - 1 and v >> (k - 1):
                v -= 1 << k
            out.append(v)
        return out

    total = 0
    for i, xi in enumerate(blocks(a, sa)):
        for j, wj in enumerate(blocks(b, sb)):
            total += (xi * wj) << (k * (i + j))
    return total


# -- ROUP (seed spec §4.4-4.6) -----------------------------------------------------------------
def naive_roup(a: int, b: int, *, n: int, p: int, r: int, round: str = "operand",
               booth: str = "b", signed: bool = True) -> int:
    """Radix-4 Booth rows ``d_j·X·4^j`` for ``j >= p``, rounded per operand or per row."""
    x, y = (a, b) if booth == "b" else (b, a)
    m = n if signed else n + 2  # the unsigned wrapper zero-extends by two bits
    code = y & ((1 << m) - 1)

    def bit(i):
        return 0 if i < 0 else (code >> i) & 1

    if round == "operand" and r > 0:
        x = ((x + (1 << (r - 1))) >> r) << r  # Python >> is a floor: round half up
    total = 0
    for j in range(m // 2):
        d = -2 * bit(2 * j + 1) + bit(2 * j) + bit(2 * j - 1)
        if j < p:
            continue  # perforated row
        row = d * x * 4**j
        if round == "pp_row" and r > 0:
            row = ((row + (1 << (r - 1))) >> r) << r
        total += row
    return total


# -- LUT-NA (seed spec §3.3) -------------------------------------------------------------------
@lru_cache(maxsize=None)
def _lut_c(c: int, trunc: int) -> tuple[tuple[int, ...], ...]:
    """The shared ``2^c × 2^c`` table of products, entries stored truncated."""
    return tuple(tuple((u * v) >> trunc << trunc for v in range(1 << c)) for u in range(1 << c))


@lru_cache(maxsize=4096)
def _lut_w(w: int, c: int, trunc: int) -> tuple[int, ...]:
    """The per-weight programmable table ``LUT_w[u] = w·u``."""
    return tuple((w * u) >> trunc << trunc for u in range(1 << c))


def naive_lutna(a: int, b: int, *, n: int, nb: int, c: int, split: str = "both", drop=(),
                tau: int = 0, trunc: int = 0) -> int:
    """Σ of looked-up chunk products shifted into place, with the weight's sign."""
    mag = abs(b)
    mask = (1 << c) - 1
    a_chunks = [(a >> (c * p)) & mask for p in range(n // c)]
    drop = set(map(tuple, drop))
    total = 0
    if split == "both":
        lut = _lut_c(c, trunc)
        w_chunks = [(mag >> (c * q)) & mask for q in range((nb - 1) // c)]
        for p, ap in enumerate(a_chunks):
            for q, wq in enumerate(w_chunks):
                if (p, q) not in drop and p + q >= tau:
                    total += lut[ap][wq] << (c * (p + q))
    else:
        lut = _lut_w(mag, c, trunc)
        for p, ap in enumerate(a_chunks):
            if (p, 0) not in drop and p >= tau:
                total += lut[ap] << (c * p)
    return -total if b < 0 else total


# -- truncated array multiplier (the shipped table) --------------------------------------------
def naive_truncated_array(a: int, b: int, *, n: int, t: int) -> int:
    """AND-array partial-product bits ``a_u·b_v`` summed only in the columns ``u + v >= t``."""
    return sum(((a >> u) & (b >> v) & 1) << (u + v)
               for u in range(n) for v in range(n) if u + v >= t)


# -- dispatch ----------------------------------------------------------------------------------
#: The naive model of each shipped table file: ``name -> (model, keywords)``.
TABLE_FILES = {"mul8u_trunc7.npy": (naive_truncated_array, {"n": 8, "t": 7})}


def naive_model(m):
    """``f(a, b) -> int`` for the config ``m`` of any family (reads its dataclass fields)."""
    family = type(m).family
    if family == "exact":
        return naive_exact
    if family == "axbxp":
        if m.mode == "composable":  # the n×n mode is one lane at q = n
            return lambda a, b: naive_fused_lane(a, b, q=m.n, k=m.k, sa=m.sa, sb=m.sb)
        return lambda a, b: naive_axbxp(a, b, n=m.n, k=m.k, l=m.l, select=m.select,
                                        round=m.round)
    if family == "roup":
        return lambda a, b: naive_roup(a, b, n=m.n, p=m.p, r=m.r, round=m.round,
                                       booth=m.booth, signed=m.signed)
    if family == "lutna":
        return lambda a, b: naive_lutna(a, b, n=m.n, nb=m.nb, c=m.c, split=m.split,
                                        drop=m.drop, tau=m.tau, trunc=m.trunc)
    if family == "table" and m.path in TABLE_FILES:
        fn, kw = TABLE_FILES[m.path]
        return lambda a, b: fn(a, b, **kw)
    raise KeyError(f"no naive model for {m.spec}")
