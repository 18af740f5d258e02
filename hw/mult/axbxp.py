"""Ax-BxP block-composed multiplier, the twin of :class:`mixpe.sw.mult.axbxp.AxBxPMultiplier`.

The unit is composed of real ``k``×``k`` block multipliers (:class:`BlockMultiplier`), shifters
and adders, in the two flavours of the sw twin.

Fixed mode (``mode=fixed``)
    An ``n``-bit operand magnitude ``X`` is cut into ``B = n/k`` blocks ``X_i`` of ``k`` bits.
    Each operand goes through

    1. **sign-magnitude conversion** (``sa``/``sb``): ``s = x[n-1]``, ``|x| = s ? -x : x`` on
       ``n`` bits (``|x| ≤ 2^(n-1)`` fits);
    2. a **block selector** (:class:`BlockSelector`), only when ``l`` keeps fewer than ``B``
       blocks: the kept field ``F = |x| >> k·lo`` (``l·k`` bits) and its block index ``lo``.
       ``select=static``: ``lo = B - l`` (wiring only). ``select=dynamic``: a **leading-block
       detector** (:class:`LeadingBlockDetector`) finds ``top``, the index of the most
       significant non-zero block; ``lo = max(top - l + 1, 0)`` drives a ``(B-l+1)``-way window
       multiplexer. ``round=1`` adds bit ``k·lo - 1`` of ``|x|`` to ``F``, saturating at all ones.

    Only the ``l²`` kept block products are built: ``blk_{i}_{j}`` multiplies block ``i`` of
    ``F_a`` by block ``j`` of ``F_b`` (``i, j < l``) and an adder tree sums them,
    ``Π = Σ_ij F_a,i·F_b,j·2^(k(i+j)) = F_a·F_b``. The products of one diagonal ``j - i = d``
    do not overlap, so each diagonal is a concatenation and only the ``2l - 1`` diagonal rows
    are added (:func:`_diagonal_sum`). A **block shifter** moves ``Π`` left by
    ``k·(lo_a + lo_b)`` (dynamic selection only; static is a constant shift), and the sign
    ``s_a ^ s_b`` is applied at the end: ``p = ±(Π << k(lo_a + lo_b)) = sign·|a|~·|b|~``.
    With ``l = 0`` (or ``l = B``) all ``B²`` blocks are kept and the product is exact.

Composable mode (``mode=composable``, Bit Fusion style)
    One shared set of ``B²`` block multipliers runs, per the ``mode`` input, at a precision
    ``q = k·2^mode`` ∈ ``config.precisions`` (``mode`` ≥ the last index selects ``q = n``). At
    precision ``q`` the unit computes ``(n/q)²`` independent exact ``q``×``q`` lane products.

    **Lane packing** (both operands, and ``out=lanes`` products): lane ``t`` at precision ``q``
    is ``a[q·t : q·t + q]`` / ``b[q·t : q·t + q]`` (``q``-bit two's complement when
    ``sa``/``sb``, else unsigned); lane ``t`` is lane ``t`` of the sw twin's
    :meth:`~mixpe.sw.mult.axbxp.AxBxPMultiplier.mul_lanes`. The operands are ``n²/k`` bits, the
    ``out=lanes`` vector ``2n²/k`` bits with lane ``t``'s ``2q``-bit product at
    ``lanes[2q·t : 2q·t + 2q]``. At ``q = n`` the operands sit in bits ``[0, n)`` (the upper
    bits are ignored) and the product in ``lanes[0 : 2n]``; in every mode the bits above the
    last lane are unspecified.

    **Structure** (a quad tree, :func:`composable_routing`): a unit of ``s`` blocks (precision
    ``s·k``) is four units of ``s/2`` blocks, ``D0 = lo×lo``, ``D1 = hi×hi``, ``X0 = lo×hi``,
    ``X1 = hi×lo``; the leaves are the block multipliers. When the unit is *fused* (``q ≥ s·k``)
    its product is ``{D1, D0} + (X0 + X1)·2^(s·k/2)``: the two diagonal products are simply
    concatenated (``D0`` is unsigned and below ``2^(s·k)``), only the cross terms are added.
    When it is *split* (``q < s·k``) its port is cut into segments of ``s/2`` blocks and child
    ``c``'s segment ``g`` is the unit's segment ``4g + c``: a fixed wiring, so the lanes of the
    diagonal children sit where the fused operand halves sit and **only the cross children's
    first segment needs a 2:1 multiplexer** per fusion level (the minimum for this packing).
    Lane products land in place: the concatenation ``{D1, D0}`` *is* the split-mode lane vector.
    ``out=dot`` adds ``Mux(fused, {D1, D0}, D0 + D1) + Mux(fused, X·2^(s·k/2), X)`` with
    ``X = X0 + X1`` at every node, a shift-or-not adder tree.

    **Signed lanes** are not converted to sign-magnitude (that would cost a negation per lane
    and per mode): as the sw twin specifies, the top block of a lane is a *signed* block. Each
    block multiplier takes ``(k+1)``-bit operands whose extension bit is the block's MSB when
    the block is the top block of its lane in the current mode (``a_top``/``b_top``, decoded
    from ``mode``), else 0. The composition is then exact two's complement arithmetic. (A
    Baugh-Wooley variant, unsigned biased blocks plus one constant per mode subtracted from the
    dot, measured 459 LUT4 on iCE40 against 379 for signed blocks.)

Measured cost (Yosys 0.70 ``synth_ice40``, LUT4 + carry; exact ``a*b`` 8×8: unsigned 158 + 12,
signed 177 + 11)
    exact blocks (``l=0``): unsigned 127 + 36, signed 189 + 55; ``l=2`` dynamic: 82 + 6 /
    141 + 31; composable 8↔4↔2 ``out=lanes``: unsigned 194 + 55 (1.23×), signed 281 + 56;
    ``out=dot``: unsigned 289 + 91, signed 379 + 93 (the split-mode lane sums need an adder and
    two shift-or-not multiplexers per tree node). Of the composable unit, the 16 blocks and the
    24 operand multiplexers (2-bit, 2:1 or 3:1) are about 117 LUT4 unsigned. Other tree nodes
    measured worse for the signed dot (LUT4): ``Z = Mux(f, D1·2^(q/2), D1) + X`` then
    ``D0 + Mux(f, Z·2^(q/2), Z)`` 419; ``D0 + Mux(f, D1·2^q, D1) + Mux(f, X·2^(q/2), X)`` 454;
    ``Mux(f, {D1, D0} + X·2^(q/2), D0 + D1 + X)`` 437; the sign-extension bit computed once per
    port block and routed with it (3-bit blocks) 390; a signed correction term on unsigned
    lanes needs a popcount of 32 bits at ``q = 2`` alone (estimated > 440). Why ≤ 1.3× the
    exact signed ``a*b`` (230 LUT4) is out of reach for this structure: the 16 signed blocks
    and the operand routing alone, with no adder at all, measure 171 LUT4 (unsigned: 117), and
    the ``q = 2`` lane sum of 16 products needs about 60 more.

Members (fixed)
    ``a: In(n)``, ``b: In(n)`` operand codes; ``p: Out(signed(out_bits))`` the product, equal to
    ``config.table()[a, b]``.

Members (composable)
    ``a: In(n²/k)``, ``b: In(n²/k)`` lane-packed operands; ``mode: In(range(len(precisions)))``;
    ``out=dot``: ``p: Out(signed(w))`` the sum of the lane products (``w ≥ out_bits``, wide
    enough for every mode). ``out=lanes``: ``lanes: Out(2n²/k)`` the lane products, and ``p``
    the ``q = n`` product (a view of ``lanes[0 : 2n]``). ``table_inputs = {"mode": m}`` (``q = n``)
    makes ``p`` equal to ``config.table()`` for operands in bits ``[0, n)``.

>>> from mixpe.hw.mult import create
>>> create("axbxp:l=2").signature.members["p"].shape
signed(16)
>>> sorted(create("axbxp:mode=composable,out=lanes").signature.members)
['a', 'b', 'lanes', 'mode', 'p']
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2
from mixpe.sw.mult.axbxp import AxBxPMultiplier as _SwAxBxP

from . import register

__all__ = [
    "AxBxPMultiplier",
    "BlockMultiplier",
    "LeadingBlockDetector",
    "BlockSelector",
    "composable_routing",
]


#: Block multipliers of at most this many bits are truth tables (one LUT function per product
#: bit), wider ones ``*`` (measured on iCE40: 2×2 table 4 LUT4 vs 6 + 2 carries; from 3×3 on
#: Yosys's adders win).
TABLE_BLOCK_BITS = 2


def _add_aligned(x, y):
    """Sum of two unsigned ``(value, offset)`` terms; bits below the higher offset are wires."""
    (a, oa), (b, ob) = sorted([x, y], key=lambda t: t[1])
    gap = ob - oa
    if len(a) <= gap:
        return Cat(a, Const(0, gap - len(a)), b), oa
    return Cat(a[:gap], a[gap:] + b), oa


def _diagonal_sum(products, L, k):
    """``Σ_ij P_ij·2^(k(i+j))`` of an ``L``×``L`` grid of unsigned ``2k``-bit block products.

    The products on one diagonal ``j - i = d`` do not overlap (``P_{i,i+d}`` sits at
    ``k(2i+d)``, ``2k`` bits apart), so each diagonal is a plain concatenation and only the
    ``2L-1`` diagonal rows go through adders (a balanced tree of aligned adds). ``products`` is
    row-major (``P_ij`` at ``i·L + j``).
    """
    rows = []
    for d in range(-(L - 1), L):
        cells = [products[i * L + i + d] for i in range(L) if 0 <= i + d < L]
        rows.append((Cat(*(c[: 2 * k] for c in cells)), k * abs(d)))
    rows.sort(key=lambda r: (r[1], -len(r[0])))
    while len(rows) > 1:
        nxt = [_add_aligned(rows[i], rows[i + 1]) for i in range(0, len(rows) - 1, 2)]
        if len(rows) % 2:
            nxt.append(rows[-1])
        rows = nxt
    value, offset = rows[0]
    return Cat(Const(0, offset), value) if offset else value


class BlockMultiplier(wiring.Component):
    """Exact ``k``×``k`` block multiplier, optionally with signed (top) blocks.

    An unsigned block ``X_i ∈ [0, 2^k)``; a *signed* block (the top block of a two's-complement
    operand) ``X_i - 2^k·x_{k-1} ∈ [-2^(k-1), 2^(k-1))``. The product is ``a·b`` of the two block
    values: a truth table for ``k ≤`` :data:`TABLE_BLOCK_BITS` (each product bit one LUT
    function of the operand bits), else a ``k``×``k`` (``(k+1)``×``(k+1)`` signed) ``*``. This
    is the block multiplier the Ax-BxP and Bit Fusion papers compose.

    Parameters
    ----------
    k : int
        Block width, 1 … 32.
    sa, sb : bool
        Operand ``a`` / ``b`` may be a signed block (adds the ``a_top`` / ``b_top`` input).

    Members
    -------
    a : In(k)
        Block ``a`` bits.
    b : In(k)
        Block ``b`` bits.
    a_top : In(1)
        Only when ``sa``: ``a`` is a signed block.
    b_top : In(1)
        Only when ``sb``: ``b`` is a signed block.
    p : Out(unsigned(2k)) or Out(signed(2k+1))
        The block product (signed when ``sa`` or ``sb``).
    """

    def __init__(self, *, k, sa=False, sb=False):
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 32:
            raise TypeError(f"Block width must be an integer in [1, 32], not {k!r}")
        self._k = k
        self._sa = bool(sa)
        self._sb = bool(sb)
        members = {"a": In(k), "b": In(k)}
        if self._sa:
            members["a_top"] = In(1)
        if self._sb:
            members["b_top"] = In(1)
        members["p"] = Out(signed(2 * k + 1) if (self._sa or self._sb) else unsigned(2 * k))
        super().__init__(members)

    @property
    def k(self):
        return self._k

    def elaborate(self, platform):
        m = Module()
        k = self._k
        ops = []
        for x, s in ((self.a, self._sa), (self.b, self._sb)):
            if s:
                v = Signal(signed(k + 1), name=f"{x.name}_val")
                m.d.comb += v.eq(Cat(x, x[k - 1] & getattr(self, f"{x.name}_top")))
            else:
                v = x
            ops.append(v)
        if k > TABLE_BLOCK_BITS:
            m.d.comb += self.p.eq(ops[0] * ops[1])
            return m
        # a truth table: every output bit becomes one LUT function of the few input bits
        # (Yosys maps a tiny `*` onto carry-chain adders, 6 LUT4 + 2 carries for 2×2)
        wa, wb = len(ops[0]), len(ops[1])
        sa, sb = ops[0].shape().signed, ops[1].shape().signed
        with m.Switch(Cat(ops[0], ops[1])):
            for code in range(1 << (wa + wb)):
                va, vb = code & ((1 << wa) - 1), code >> wa
                if sa and va >> (wa - 1):
                    va -= 1 << wa
                if sb and vb >> (wb - 1):
                    vb -= 1 << wb
                with m.Case(code):
                    m.d.comb += self.p.eq(va * vb)
        return m


class LeadingBlockDetector(wiring.Component):
    """Index of the most significant non-zero ``k``-bit block of an ``n``-bit magnitude.

    ``top = max{i : X_i ≠ 0}`` (0 when ``X = 0``), a priority encoder over the ``B = n/k``
    block-non-zero flags.

    Members
    -------
    x : In(n)
        The magnitude.
    top : Out(range(B))
        Leading block index.
    """

    def __init__(self, *, n, k):
        if not isinstance(n, int) or not isinstance(k, int) or k < 1 or n < k or n % k:
            raise ValueError(f"Block width {k!r} must divide the width {n!r}")
        self._n, self._k = n, k
        super().__init__({"x": In(n), "top": Out(range(max(n // k, 2)))})

    def elaborate(self, platform):
        m = Module()
        k, blocks = self._k, self._n // self._k
        top = Const(0, self.top.shape())
        for i in range(1, blocks):
            top = Mux(self.x[k * i :].any(), i, top)
        m.d.comb += self.top.eq(top)
        return m


class BlockSelector(wiring.Component):
    """Ax-BxP operand approximation: keep ``l`` consecutive ``k``-bit blocks of a magnitude.

    ``F = X >> k·lo`` on ``l·k`` bits with ``lo = B - l`` (``static``) or
    ``lo = max(top - l + 1, 0)`` from a :class:`LeadingBlockDetector` (``dynamic``). With
    ``round``: ``F ← min(F + X[k·lo - 1], 2^(l·k) - 1)`` when ``lo > 0``. The operand the field
    stands for is ``X~ = F << k·lo``.

    Parameters
    ----------
    n, k, l : int
        Magnitude width, block width, kept blocks (``1 ≤ l < n/k``).
    select : str
        ``"dynamic"`` or ``"static"``.
    round : bool
        Saturating round-half-up of the kept field.

    Members
    -------
    x : In(n)
        The magnitude.
    field : Out(l*k)
        The kept blocks ``F``.
    lo : Out(range(n/k - l + 1))
        Index of the lowest kept block (a constant ``B - l`` when ``static``).
    """

    def __init__(self, *, n, k, l, select="dynamic", round=False):
        if not isinstance(n, int) or not isinstance(k, int) or k < 1 or n < k or n % k:
            raise ValueError(f"Block width {k!r} must divide the width {n!r}")
        if not isinstance(l, int) or not 1 <= l < n // k:
            raise ValueError(f"Kept blocks must be an integer in [1, {n // k - 1}], not {l!r}")
        if select not in ("dynamic", "static"):
            raise ValueError(f"Selection must be 'dynamic' or 'static', not {select!r}")
        self._n, self._k, self._l = n, k, l
        self._select, self._round = select, bool(round)
        super().__init__({
            "x": In(n),
            "field": Out(l * k),
            "lo": Out(range(n // k - l + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        n, k, L = self._n, self._k, self._l
        B = n // k
        w = L * k
        field = Signal(w)
        rbit = Signal()
        if self._select == "static":
            lo = B - L
            m.d.comb += [field.eq(self.x[k * lo :]), rbit.eq(self.x[k * lo - 1])]
            m.d.comb += self.lo.eq(lo)
        else:
            m.submodules.lbd = lbd = LeadingBlockDetector(n=n, k=k)
            m.d.comb += lbd.x.eq(self.x)
            with m.Switch(lbd.top):
                for top in range(B):
                    lo = max(top - L + 1, 0)
                    with m.Case(top):
                        m.d.comb += [self.lo.eq(lo), field.eq(self.x[k * lo : k * lo + w])]
                        if lo > 0:
                            m.d.comb += rbit.eq(self.x[k * lo - 1])
        if self._round:
            # saturating increment: the carry never leaves the field
            m.d.comb += self.field.eq(field + (rbit & ~field.all()))
        else:
            m.d.comb += self.field.eq(field)
        return m


def composable_routing(n, k):
    """Operand routing of the composable quad tree: which port block feeds each block multiplier.

    Returns ``{path: [(a_chunk, b_chunk, a_top, b_top) per mode]}`` where ``path`` is the tuple
    of child indices from the root (``0 = D0 lo×lo``, ``1 = D1 hi×hi``, ``2 = X0 lo×hi``,
    ``3 = X1 hi×lo``), mode ``e`` is precision ``q = k·2^e``, ``*_chunk`` is the index of the
    ``k``-bit port block (``a[k·c : k·c + k]``) and ``*_top`` tells whether that block is the
    top (signed) block of its lane at that precision.

    >>> r = composable_routing(4, 2)       # 4-bit unit of 2-bit blocks, modes q = 2, 4
    >>> r[(0,)], r[(2,)]
    ([(0, 0, True, True), (0, 0, False, False)], [(2, 2, True, True), (0, 1, False, True)])
    """
    B = n // k
    levels = exact_log2(B)
    modes = levels + 1
    routes = {}

    def walk(path, size, a_src, b_src):
        # a_src[e][x]: global chunk feeding port chunk x of this unit in mode e (None: unused)
        if size == 1:
            routes[path] = [
                (a_src[e][0], b_src[e][0],
                 a_src[e][0] is not None and (a_src[e][0] + 1) % (1 << e) == 0,
                 b_src[e][0] is not None and (b_src[e][0] + 1) % (1 << e) == 0)
                for e in range(modes)
            ]
            return
        h = size // 2
        fused_from = exact_log2(size)
        for c in range(4):
            ca, cb = [], []
            for e in range(modes):
                row_a, row_b = [], []
                for x in range(h * h):
                    seg, off = divmod(x, h)
                    split = (4 * seg + c) * h + off
                    if e >= fused_from and seg == 0:
                        ia = (0, 1, 0, 1)[c] * h + off
                        ib = (0, 1, 1, 0)[c] * h + off
                    else:
                        ia = ib = split
                    row_a.append(a_src[e][ia])
                    row_b.append(b_src[e][ib])
                ca.append(row_a)
                cb.append(row_b)
            walk(path + (c,), h, ca, cb)

    full = [list(range(B * B)) for _ in range(modes)]
    walk((), B, full, [list(r) for r in full])
    return routes


@register("axbxp")
class AxBxPMultiplier(wiring.Component):
    """Ax-BxP multiplier built from ``k``×``k`` block multipliers (see the module docstring).

    Parameters
    ----------
    n : int
        Operand width.
    k : int
        Block width (divides ``n``).
    l : int
        Kept blocks per operand; ``0`` keeps all (exact).
    select : str
        ``"dynamic"`` (leading-block detector) or ``"static"`` (top blocks).
    round : bool
        Saturating rounding of the kept field.
    sa, sb : bool
        Signed (two's complement) operand ``a`` / ``b``.
    mode : str
        ``"fixed"`` or ``"composable"``.
    out : str
        Composable output: ``"dot"`` (lane sum on ``p``) or ``"lanes"`` (lane vector).

    Members
    -------
    a : In(n) or In(n*n//k)
        Operand ``a`` code (fixed) or lane-packed operands (composable).
    b : In(n) or In(n*n//k)
        Operand ``b``, likewise.
    mode : In(range(len(config.precisions)))
        Composable only: precision index, ``q = k·2^mode``.
    p : Out(signed(...))
        Product (fixed); lane sum (``out=dot``); the ``q = n`` product (``out=lanes``).
    lanes : Out(2*n*n//k)
        ``out=lanes`` only: lane ``t``'s product at bits ``[2q·t, 2q·t + 2q)``.

    Raises
    ------
    ValueError
        Parameters out of range, naming the parameter (the sw config validates them).
    """

    latency = 0

    def __init__(self, *, n=8, k=2, l=0, select="dynamic", round=False, sa=True, sb=True,
                 mode="fixed", out="dot"):
        self._config = cfg = _SwAxBxP(n=n, k=k, l=l, select=select, round=round, sa=sa, sb=sb,
                                      mode=mode, out=out)
        if cfg.mode == "fixed":
            members = {
                "a": In(cfg.a_format.bits),
                "b": In(cfg.b_format.bits),
                "p": Out(signed(cfg.out_bits)),
            }
        else:
            self._routes = composable_routing(cfg.n, cfg.k)
            self._ranges = self._dot_ranges()
            port = cfg.n * cfg.n // cfg.k
            members = {
                "a": In(port),
                "b": In(port),
                "mode": In(range(len(cfg.precisions))),
            }
            if cfg.out == "dot":
                lo = min(min(r[0] for r in self._ranges[()]), cfg.product_range[0])
                hi = max(max(r[1] for r in self._ranges[()]), cfg.product_range[1])
                members["p"] = Out(signed(Shape.cast(range(lo, hi + 1)).width + (lo >= 0)))
            else:
                members["p"] = Out(signed(cfg.out_bits))
                members["lanes"] = Out(2 * port)
        super().__init__(members)

    @property
    def config(self) -> _SwAxBxP:
        """The sw twin (validated, frozen)."""
        return self._config

    @property
    def table_inputs(self) -> dict:
        """Extra inputs under which ``p`` equals ``config.table()`` (``q = n``)."""
        if self._config.mode == "composable":
            return {"mode": len(self._config.precisions) - 1}
        return {}

    @property
    def block_count(self) -> int:
        """Number of ``k``×``k`` block multipliers instantiated."""
        cfg = self._config
        return (cfg.blocks if cfg.mode == "composable" else cfg.kept) ** 2

    # -- fixed ---------------------------------------------------------------------------
    def _elaborate_fixed(self, m):
        cfg = self._config
        n, k, B, L = cfg.n, cfg.k, cfg.blocks, cfg.kept
        fields, los, signs = [], [], []
        for name, s in (("a", cfg.sa), ("b", cfg.sb)):
            x = getattr(self, name)
            mag = Signal(n, name=f"{name}_mag")
            if s:
                sign = x[n - 1]
                m.d.comb += mag.eq(Mux(sign, -x.as_signed(), x))
                signs.append(sign)
            else:
                m.d.comb += mag.eq(x)
            if L < B:
                sel = m.submodules[f"sel_{name}"] = BlockSelector(
                    n=n, k=k, l=L, select=cfg.select, round=cfg.round)
                m.d.comb += sel.x.eq(mag)
                fields.append(sel.field)
                los.append(sel.lo)
            else:
                fields.append(mag)
        terms = []
        for i in range(L):
            for j in range(L):
                blk = m.submodules[f"blk_{i}_{j}"] = BlockMultiplier(k=k)
                m.d.comb += [
                    blk.a.eq(fields[0][k * i : k * i + k]),
                    blk.b.eq(fields[1][k * j : k * j + k]),
                ]
                terms.append(blk.p)
        prod = Signal(2 * L * k)
        m.d.comb += prod.eq(_diagonal_sum(terms, L, k))
        mag_p = Signal(2 * n)
        if L < B and cfg.select == "dynamic":
            shift = Signal(range(2 * (B - L) + 1))
            m.d.comb += shift.eq(los[0] + los[1])
            with m.Switch(shift):
                for s in range(2 * (B - L) + 1):
                    with m.Case(s):
                        m.d.comb += mag_p.eq(prod << (k * s))
        elif L < B:
            m.d.comb += mag_p.eq(prod << (2 * k * (B - L)))
        else:
            m.d.comb += mag_p.eq(prod)
        # sign-magnitude: the sign is applied last (negating before the shifter costs more, the
        # shifter then has to sign-extend)
        if signs:
            neg = signs[0] ^ signs[1] if len(signs) == 2 else signs[0]
            m.d.comb += self.p.eq(Mux(neg, -mag_p, mag_p))
        else:
            m.d.comb += self.p.eq(mag_p)

    # -- composable ----------------------------------------------------------------------
    def _mode_sel(self, values):
        """Expression equal to ``values[e]`` in mode ``e`` (mode ≥ last → last)."""
        expr = values[0]
        for e in range(1, len(values)):
            if values[e] is not values[e - 1] and not (
                    isinstance(values[e], int) and values[e] == values[e - 1]):
                expr = Mux(self.mode >= e, values[e], expr)
        return expr

    def _unit_info(self, path):
        """Blocks per operand of the unit at ``path`` and its fused-from mode."""
        size = self._config.blocks >> len(path)
        return size, exact_log2(size)

    def _dot_ranges(self):
        """``{path: [(lo, hi) per mode]}``: exact range of each unit's lane sum in each mode."""
        cfg = self._config
        k, modes = cfg.k, len(cfg.precisions)
        ranges = {}

        def operand(bits, signed_, top):
            if signed_ and top:
                return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            return 0, (1 << bits) - 1

        def rec(path):
            size, fused_from = self._unit_info(path)
            if size > 1:
                for c in range(4):
                    rec(path + (c,))
            # the top block of the unit's fused operands reaches the leaf D1, D1, …
            leaf_hi = path + (1,) * exact_log2(size)
            per_mode = []
            for e in range(modes):
                if e >= fused_from:
                    _, _, ta, tb = self._routes[leaf_hi][e]
                    al, ah = operand(size * k, cfg.sa, ta)
                    bl, bh = operand(size * k, cfg.sb, tb)
                    c = [al * bl, al * bh, ah * bl, ah * bh]
                    per_mode.append((min(c), max(c)))
                else:
                    per_mode.append((sum(ranges[path + (c,)][e][0] for c in range(4)),
                                     sum(ranges[path + (c,)][e][1] for c in range(4))))
            ranges[path] = per_mode

        rec(())
        return ranges

    def _shape_of(self, path):
        per_mode = self._ranges[path]
        lo = min(r[0] for r in per_mode)
        hi = max(r[1] for r in per_mode)
        return Shape.cast(range(lo, hi + 1))

    def _leaf(self, m, path, a_port, b_port):
        cfg = self._config
        route = self._routes[path]
        blk = m.submodules["blk_" + "_".join(map(str, path))] = BlockMultiplier(
            k=cfg.k, sa=cfg.sa, sb=cfg.sb)
        m.d.comb += [blk.a.eq(a_port[0]), blk.b.eq(b_port[0])]
        for x, idx in (("a", 2), ("b", 3)):
            if getattr(cfg, "s" + x):
                tops = [int(r[idx]) for r in route]
                m.d.comb += getattr(blk, f"{x}_top").eq(self._mode_sel(tops))
        return blk.p

    def _child_ports(self, m, path, a_port, b_port):
        """Port chunks of the four children: fixed split wiring, a 2:1 mux where fusion differs."""
        size, fused_from = self._unit_info(path)
        h = size // 2
        fused = self.mode >= fused_from
        out = []
        for c in range(4):
            ports = []
            for port, sel, x in ((a_port, (0, 1, 0, 1)[c], "a"), (b_port, (0, 1, 1, 0)[c], "b")):
                chunks = []
                for i in range(h * h):
                    seg, off = divmod(i, h)
                    split = (4 * seg + c) * h + off
                    fsrc = sel * h + off if seg == 0 else split
                    if fsrc == split:
                        chunks.append(port[split])
                    else:
                        v = Signal(self._config.k, name=f"{x}_{self._pname(path + (c,))}_{i}")
                        m.d.comb += v.eq(Mux(fused, port[fsrc], port[split]))
                        chunks.append(v)
                ports.append(chunks)
            out.append(ports)
        return out

    def _ports(self):
        k, chunks = self._config.k, self._config.blocks ** 2
        return ([self.a[k * c : k * c + k] for c in range(chunks)],
                [self.b[k * c : k * c + k] for c in range(chunks)])

    def _unit_dot(self, m, path, a_port, b_port):
        cfg = self._config
        size, fused_from = self._unit_info(path)
        if size == 1:
            return self._leaf(m, path, a_port, b_port)
        kids = [self._unit_dot(m, path + (c,), *pp)
                for c, pp in enumerate(self._child_ports(m, path, a_port, b_port))]
        q = size * cfg.k
        fused = self.mode >= fused_from
        x = Signal(Shape.cast(range(*self._sum_bounds(path, (2, 3)))),
                   name=f"x_{self._pname(path)}")
        m.d.comb += x.eq(kids[2] + kids[3])
        d0, d1 = kids[0], kids[1]
        cat = Cat(d0[:q], d1)
        if d1.shape().signed:
            cat = cat.as_signed()
        diag = Mux(fused, cat, d0 + d1)
        cross = Mux(fused, x << (q // 2), x)
        out = Signal(self._shape_of(path) if path else self.p.shape(),
                     name=f"dot_{self._pname(path)}")
        m.d.comb += out.eq(diag + cross)
        return out

    def _sum_bounds(self, path, children):
        modes = len(self._config.precisions)
        lo = hi = None
        for e in range(modes):
            slo = sum(self._ranges[path + (c,)][e][0] for c in children)
            shi = sum(self._ranges[path + (c,)][e][1] for c in children)
            lo = slo if lo is None else min(lo, slo)
            hi = shi if hi is None else max(hi, shi)
        return lo, hi + 1

    @staticmethod
    def _pname(path):
        return "_".join(map(str, path)) or "root"

    def _unit_lanes(self, m, path, a_port, b_port):
        """Lane vector (``2k·size²`` bits, packed as documented) and fused product of a unit.

        The product is ``signed(2q+1)`` (``unsigned(2q)`` for unsigned operands), valid when
        the unit is fused; its low ``2q`` bits are the vector's first two segments.
        """
        cfg = self._config
        size, fused_from = self._unit_info(path)
        if size == 1:
            p = self._leaf(m, path, a_port, b_port)
            return p[: 2 * cfg.k], p
        h = size // 2
        q = size * cfg.k
        seg = q                                 # bits of one child output segment (2·h·k)
        kids = [self._unit_lanes(m, path + (c,), *pp)
                for c, pp in enumerate(self._child_ports(m, path, a_port, b_port))]
        signed_ = cfg.sa or cfg.sb
        name = self._pname(path)
        x = Signal(signed(q + 2) if signed_ else unsigned(q + 1), name=f"x_{name}")
        m.d.comb += x.eq(kids[2][1] + kids[3][1])
        fused = self.mode >= fused_from
        # {D1, D0}: D0 is the unsigned lo×lo product (< 2^q) when fused
        diag = Cat(kids[0][0][:seg], kids[1][1])
        if signed_:
            diag = diag.as_signed()
        top = Signal(signed(3 * q // 2 + 1) if signed_ else unsigned(3 * q // 2),
                     name=f"hi_{name}")
        m.d.comb += top.eq(diag[q // 2 :] + Mux(fused, x, 0))
        prod = Cat(kids[0][0][: q // 2], top)
        if signed_:
            prod = prod.as_signed()
        segs = [prod[: 2 * seg], kids[2][0][:seg], kids[3][0][:seg]]
        for g in range(1, h):
            for c in range(4):
                segs.append(kids[c][0][g * seg : (g + 1) * seg])
        vec = Signal(2 * cfg.k * size * size, name=f"lanes_{name}")
        m.d.comb += vec.eq(Cat(*segs))
        return vec, prod

    def _elaborate_composable(self, m):
        cfg = self._config
        if cfg.out == "dot":
            m.d.comb += self.p.eq(self._unit_dot(m, (), *self._ports()))
        else:
            lanes, _ = self._unit_lanes(m, (), *self._ports())
            m.d.comb += self.lanes.eq(lanes)
            prod = lanes[: 2 * cfg.n]
            m.d.comb += self.p.eq(prod.as_signed() if (cfg.sa or cfg.sb) else prod)

    def elaborate(self, platform):
        m = Module()
        if self._config.mode == "fixed":
            self._elaborate_fixed(m)
        else:
            self._elaborate_composable(m)
        return m
