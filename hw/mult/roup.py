"""ROUP multiplier: radix-4 Booth with perforation (P) and rounding (R), built bit by bit.

The hardware twin of :class:`mixpe.sw.mult.roup.RoupMultiplier`. It is a real partial-product
(PP) multiplier, not ``a * b`` followed by masking, so that P and R remove logic:

* **Booth encoder** per digit ``j``: ``y_j = -2·e_{2j+1} + e_{2j} + e_{2j-1}``
  (``e_{-1} = 0``) gives ``one = e_{2j} ^ e_{2j-1}``,
  ``two = e_{2j+1}·~e_{2j}·~e_{2j-1} + ~e_{2j+1}·e_{2j}·e_{2j-1}`` and ``neg = e_{2j+1}``.
* **PP row** ``j`` (weight ``4^j``): ``S_i = (one·x_i | two·x_{i-1}) ^ neg`` over the ``w+1`` bits
  of ``{0, X, 2X}``; the row is ``y_j·X = S + neg`` (``S`` two's complement, ``neg`` added at the
  row's LSB column).
* **Sign-extension prevention**: every row's sign bit ``s`` is inverted and the constant
  ``-2^t`` (``t`` = the sign column) is added; all the constants are folded into the row whose
  sign column is lowest, whose top then holds only ``s``, ``~s`` and constant bits (the
  generalised ``~s s s`` / ``1 ~s`` pattern).
* **Adder tree** (:class:`ColumnSum`): a balanced tree of two-operand (carry-chain) adders over
  the column ranges where both operands have bits; lower columns pass through as wires. The
  ``neg`` (and rounding) bits fill holes of other rows, or become adder carry-ins (free on a
  carry chain), or are placed under the next row (the textbook placement), whichever needs the
  fewest adder columns; the one bit left over for ``n/2`` rows and ``n/2 - 1`` adders costs an
  incrementer. Every adder output carries ``keep`` so that Yosys maps each adder to a carry
  chain instead of merging the tree into one ``$macc`` (which it would build from LUT full
  adders). The result is taken modulo ``2^W`` with ``W = out_bits`` (every product fits).

Approximations, with ``X`` the non-encoded operand and ``E`` the Booth-encoded one:

* **Perforation** ``P``: the rows ``j < P`` do not exist: no encoder, no row, no adder input.
  The product is ``X·E_P`` with ``E_P = Σ_{j≥P} y_j 4^j`` (``E`` rounded half up to a multiple
  of ``4^P``).
* **Rounding** ``R``, ``round="operand"`` (R-A): ``X`` is rounded once,
  ``X_R = ((X + 2^{R-1}) >> R) << R``, by one ``(w-R)``-bit incrementer
  ``X' = (X >> R) + x_{R-1}``; the rows are built from ``X'`` and start at column ``2j + R``:
  their ``R`` low columns are never generated.
* **Rounding** ``R``, ``round="pp_row"`` (R-PP): each surviving row with ``2j < R`` is
  rounded half up at absolute column ``R``:
  ``round_R(y_j X 4^j) = ⌊(y_j X 4^j + 2^{R-1}) / 2^R⌋·2^R``. With ``r = R - 2j`` the row keeps
  ``S >> r`` (from column ``R`` up) plus one rounding bit at column ``R``,
  ``c = S_{r-1} | (neg · ~(p_0 | … | p_{r-2}))`` (``p_i`` = the row bits before the ``neg``
  inversion): the columns below ``R`` never reach the adder tree.

``signed=0`` is the unsigned wrapper: both codes are zero-extended (``X`` to ``n+1`` bits,
``E`` to ``n+2`` bits, i.e. ``n/2+1`` Booth digits whose top one is ``0`` or ``+1``).
``booth="a"`` swaps the roles (``E = a``, ``X = b``).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import hdl
from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from mixpe.sw.mult.roup import RoupMultiplier as _SwRoup

from . import register

__all__ = ["RoupMultiplier", "ColumnSum", "booth_rows"]


class ColumnSum:
    """A bit matrix summed modulo ``2^width`` by a balanced tree of two-operand adders.

    Operands are sparse ``{column: bit}`` maps whose bits are 1-bit Amaranth values or the
    integers 0/1. Signed rows get sign-extension prevention (:meth:`add_signed`); single bits
    (negation and rounding bits, :meth:`add_bit`) go into holes, carry-ins or under other rows
    (see :meth:`elaborate`). Also used by the LUT-NA shift-add recombination.

    Parameters
    ----------
    width : int
        Result width ``W``; everything is computed modulo ``2^W``.
    """

    def __init__(self, *, width):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"Width must be a positive integer, not {width!r}")
        self._width = width
        self._rows = []       # unsigned operands: dict column -> bit
        self._signed = []     # (row dict, sign column) before the sign trick
        self._bits = []       # (column, bit)

    @property
    def width(self):
        return self._width

    def add_unsigned(self, offset, bits):
        """Add an unsigned vector whose bit ``i`` sits at column ``offset + i``."""
        row = {offset + i: b for i, b in enumerate(bits) if offset + i < self._width}
        row = {c: b for c, b in row.items() if not (isinstance(b, int) and b == 0)}
        if row:
            self._rows.append(row)

    def add_signed(self, offset, bits):
        """Add a two's-complement vector (last bit = sign) at column ``offset``."""
        top = offset + len(bits) - 1
        if top >= self._width:  # the sign weight vanishes modulo 2^W: plain bits
            self.add_unsigned(offset, bits)
            return
        row = {offset + i: b for i, b in enumerate(bits)}
        self._signed.append((row, top))

    def add_bit(self, column, bit):
        """Add one bit at ``column``."""
        if column < self._width and not (isinstance(bit, int) and bit == 0):
            self._bits.append((column, bit))

    # -- construction -------------------------------------------------------------------
    def _fold_signs(self):
        W = self._width
        mask = (1 << W) - 1
        if not self._signed:
            return
        const = 0
        for row, top in self._signed:
            s = row[top]
            row[top] = (1 - s) if isinstance(s, int) else ~s
            const -= 1 << top
        # The row with the lowest sign column absorbs the constant: its top becomes
        # (~s)·2^t + K, which is bitwise a function of s alone (K is a multiple of 2^t).
        row, t = min(self._signed, key=lambda rt: rt[1])
        s_inv = row.pop(t)
        K = const & mask
        v_s0 = (K + (1 << t)) & mask   # s = 0 -> ~s = 1
        v_s1 = K                       # s = 1 -> ~s = 0
        for c in range(t, W):
            b0, b1 = (v_s0 >> c) & 1, (v_s1 >> c) & 1
            if b0 == b1:
                if b0:
                    row[c] = 1
            elif b0 == 0:   # 0 when s = 0, 1 when s = 1: the sign itself
                row[c] = ~s_inv if not isinstance(s_inv, int) else 1 - s_inv
            else:
                row[c] = s_inv
        for row, _ in self._signed:
            row = {c: b for c, b in row.items() if c < W and not (isinstance(b, int) and b == 0)}
            if row:
                self._rows.append(row)
        self._signed = []

    def elaborate(self, m, name="pp"):
        """Build the tree in module ``m``; return the ``W``-bit unsigned result value.

        Single bits (``neg`` and rounding bits) first fill holes inside an operand's column
        span (free wiring). The rest are placed by one of two strategies, whichever has the
        fewer adder columns (+2 per full/half adder):

        * ``"carry"``: each two-operand adder takes one bit at or below its lowest column as
          its carry-in (free on a carry chain); surplus bits are first compressed by full
          adders (a carry-save step);
        * ``"extend"``: bits extend operands downward by up to two columns (the classic
          ``neg`` placement under the next row), surplus ones compressed by full/half adders.
        """
        self._fold_signs()
        rows, bits = self._rows, self._bits
        plans = []
        for k, (strategy, pick) in enumerate([("carry", "high"), ("carry", "low"),
                                              ("extend", "high")]):
            trial = _Tree(self._width, [dict(r) for r in rows], list(bits), _DryRun(), name)
            trial.build(strategy, pick)
            plans.append((trial.cost, k, strategy, pick))
        _, _, strategy, pick = min(plans)
        tree = _Tree(self._width, [dict(r) for r in rows], list(bits), m, name)
        row = tree.build(strategy, pick)
        return Cat(*(_bit(row.get(c, 0)) for c in range(self._width)))


class _DryRun:
    """Stands in for a ``Module`` while a tree strategy is only costed."""

    def __init__(self):
        self.d = SimpleNamespace(comb=[])


def _bit(b):
    return Const(b, 1) if isinstance(b, int) else b


class _Tree:
    """One construction of a :class:`ColumnSum` adder tree (see ``ColumnSum.elaborate``)."""

    def __init__(self, width, rows, bits, m, name):
        self.width, self.rows, self.bits, self.m, self.name = width, rows, bits, m, name
        self.cost = 0
        self._n = 0

    def _signal(self, width, tag):
        self._n += 1
        return Signal(width, name=f"{self.name}_{tag}{self._n}", attrs={"keep": 1})

    def _compress(self, bits):
        """Full adder on three bits (or half adder on two): ``(sum, carry)``."""
        s, c = self._signal(1, "cs_s"), self._signal(1, "cs_c")
        if len(bits) == 3:
            x, y, z = bits
            self.m.d.comb += [s.eq(x ^ y ^ z), c.eq((x & y) | (x & z) | (y & z))]
        else:
            x, y = bits
            self.m.d.comb += [s.eq(x ^ y), c.eq(x & y)]
        self.cost += 2
        return s, c

    def _holes(self, bits):
        left = []
        for col, bit in sorted(bits, key=lambda cb: cb[0]):
            for row in self.rows:
                if col not in row and min(row) < col < max(row):
                    row[col] = bit
                    break
            else:
                left.append((col, bit))
        return left

    def build(self, strategy, pick="high"):
        W = self.width
        pool = self._holes(self.bits)
        if strategy == "extend":
            pool = self._extend(pool)
        else:
            # carry-ins: one per adder; compress the lowest surplus bits three at a time
            while len(pool) > max(len(self.rows) - 1, 0):
                cols = {}
                for col, bit in pool:
                    cols.setdefault(col, []).append(bit)
                trip = [c for c in sorted(cols) if len(cols[c]) >= 3]
                if not trip:
                    break
                col = trip[0]
                s, c = self._compress(cols[col][:3])
                done = set(map(id, cols[col][:3]))
                pool = [cb for cb in pool if id(cb[1]) not in done] + [(col, s)]
                if col + 1 < W:
                    pool.append((col + 1, c))
                pool = self._holes(pool)
            pool.sort(key=lambda cb: cb[0])
        rows = sorted(self.rows, key=min)
        if not rows and pool:
            col, bit = pool.pop(0)
            rows = [{col: bit}]
        while len(rows) > 1 or (rows and pool):
            if len(rows) == 1:  # bits that no adder could take: one incrementer each
                col, bit = pool.pop()  # the highest first: the shortest incrementer
                rows = [rows[0], {col: bit}]
            nxt = [self._add(rows[i], rows[i + 1], pool, pick)
                   for i in range(0, len(rows) - 1, 2)]
            if len(rows) % 2:
                nxt.append(rows[-1])
            rows = nxt
        return rows[0] if rows else {}

    def _extend(self, pool):
        """Place bits by extending operands down (or up) by at most two columns; compress
        the bits that find no room with full/half adders; open new operands as a last resort."""
        W = self.width
        cols = {}
        for col, bit in pool:
            cols.setdefault(col, []).append(bit)

        def room(row, col):
            return col not in row and min(row) - 2 <= col <= max(row) + 2

        while cols:
            col = min(cols)
            bits = cols.pop(col)
            slots = max(sum(1 for row in self.rows if room(row, col)), 1)
            while len(bits) > slots:
                take = 3 if len(bits) - slots >= 2 else 2
                s, c = self._compress(bits[:take])
                bits = bits[take:] + [s]
                if col + 1 < W:
                    cols.setdefault(col + 1, []).append(c)
            for bit in bits:
                best = None
                for row in self.rows:
                    if room(row, col):
                        lo, hi = min(row), max(row)
                        cost = lo - col if col < lo else max(col - hi, 0)
                        if best is None or cost < best[0]:
                            best = (cost, row)
                if best is None:
                    self.rows.append({col: bit})
                else:
                    best[1][col] = bit
        return []

    def _add(self, r1, r2, pool, pick="high"):
        W = self.width
        both = set(r1) & set(r2)
        if not both and not pool:  # disjoint columns: concatenation, no adder
            return {**r1, **r2}
        lo = min(min(r1), min(r2))
        c0 = min(both) if both else max(max(r1), max(r2)) + 1
        # the carry-in: a pooled bit at or below c0 that no operand bit collides with, the
        # closest to c0 ("high": shortest adder) or the lowest ("low": keeps the high bits,
        # which make the shortest incrementers, for later)
        cin, start = None, c0
        for k, (col, bit) in enumerate(pool):
            if lo <= col <= c0 and not (col in r1 and col in r2):
                better = col > start if pick == "high" else col < start
                if cin is None or better:
                    cin, start = k, col
        if cin is None:
            if not both:
                return {**r1, **r2}
            cbit = Const(0, 1)
        else:
            cbit = pool.pop(cin)[1]
        out = {c: b for r in (r1, r2) for c, b in r.items() if c < start}
        hi = max(max(r1), max(r2))
        width = min(hi + 2, W) - start
        v1 = Cat(*(_bit(r1.get(c, 0)) for c in range(start, hi + 1)))
        v2 = Cat(*(_bit(r2.get(c, 0)) for c in range(start, hi + 1)))
        s = self._signal(width, "sum")
        self.m.d.comb += [s.eq(v1 + v2 + cbit)]
        self.cost += width
        for i in range(width):
            out[start + i] = s[i]
        return out


def booth_rows(m, x, e, *, p, r, round, width, name="roup"):
    """Partial products of ``x · e`` as a :class:`ColumnSum` (see the module docstring).

    ``x`` and ``e`` are lists of 1-bit values (two's complement, LSB first; ``len(e)`` even).
    Returns the ``ColumnSum``; call ``elaborate(m)`` on it for the product bits.
    """
    nd = len(e) // 2
    cs = ColumnSum(width=width)
    shift = 0
    if round == "operand" and r > 0:
        if r >= len(x):  # (X + 2^{R-1}) >> R == 0 for every X: no rows at all
            return cs
        # X' = (X >> R) + x_{R-1}: one incrementer over the w-R kept bits (+1 bit of range)
        w = len(x) - r
        xr = Signal(hdl.signed(w + 1), name=f"{name}_xr")
        m.d.comb += xr.eq(Cat(*x[r:]).as_signed() + x[r - 1])
        x = list(xr)
        shift = r
    w = len(x)
    for j in range(p, nd):
        e2, e1 = e[2 * j + 1], e[2 * j]
        e0 = e[2 * j - 1] if j > 0 else Const(0, 1)
        one = Signal(name=f"{name}_one{j}")
        two = Signal(name=f"{name}_two{j}")
        neg = Signal(name=f"{name}_neg{j}")
        m.d.comb += [
            one.eq(e1 ^ e0),
            two.eq((e2 & ~e1 & ~e0) | (~e2 & e1 & e0)),
            neg.eq(e2),
        ]
        # the w+1 bits of {0, X, 2X} before and after the conditional inversion
        sel = []
        for i in range(w + 1):
            xi = x[min(i, w - 1)]
            xl = x[i - 1] if i > 0 else Const(0, 1)
            sel.append((one & xi) | (two & xl))
        row = Signal(w + 1, name=f"{name}_pp{j}")
        m.d.comb += row.eq(Cat(*sel) ^ neg.replicate(w + 1))
        bits = list(row)
        col = 2 * j + shift
        rr = r - 2 * j if round == "pp_row" else 0
        if rr <= 0:
            cs.add_signed(col, bits)
            cs.add_bit(col, neg)
            continue
        # round y_j·X at local bit rr: keep S >> rr, add c = S_{rr-1} | neg·(p_0..p_{rr-2} == 0)
        ext = bits + [bits[-1]] * max(0, rr + 1 - len(bits))
        # (sel[: rr - 1] stops at the row's top; the sign-extension bits repeat sel_w)
        low_zero = ~Cat(*sel[: rr - 1]).any() if rr > 1 else Const(1, 1)
        rnd = Signal(name=f"{name}_rnd{j}")
        m.d.comb += rnd.eq(ext[rr - 1] | (neg & low_zero))
        cs.add_signed(col + rr, ext[rr:])
        cs.add_bit(col + rr, rnd)
    return cs


@register("roup")
class RoupMultiplier(wiring.Component):
    """ROUP(P, R) radix-4 Booth multiplier (combinational), twin of the sw ``roup`` family.

    Parameters
    ----------
    n : int
        Operand width (even).
    p : int
        Perforated (omitted) least-significant Booth rows.
    r : int
        Rounding position.
    round : str
        ``"operand"`` (round the non-encoded operand once) or ``"pp_row"`` (round each row).
    booth : str
        The Booth-encoded operand, ``"b"`` (weight) or ``"a"`` (activation).
    signed : bool
        Two's-complement operands (``True``) or the unsigned wrapper.

    Members
    -------
    a : In(n)
        Activation code.
    b : In(n)
        Weight code.
    p : Out(signed(out_bits))
        Product, equal to ``config.mul_codes(a, b)``.
    """

    def __init__(self, *, n=8, p=0, r=0, round="operand", booth="b", signed=1):
        self._config = _SwRoup(n=n, p=p, r=r, round=round, booth=booth, signed=signed)
        cfg = self._config
        super().__init__({
            "a": In(cfg.a_format.bits),
            "b": In(cfg.b_format.bits),
            "p": Out(hdl.signed(cfg.out_bits)),
        })

    @property
    def config(self):
        return self._config

    def _operands(self, a, b):
        cfg = self._config
        n = cfg.n
        if cfg.signed:
            xa, xb = list(a), list(b)
        else:
            xa = list(a) + [Const(0, 1)]
            xb = list(b) + [Const(0, 1)]
        x, e = (xa, xb) if cfg.booth == "b" else (xb, xa)
        if len(e) % 2:
            e = e + [e[-1]]  # sign-extend the encoded operand to an even width
        assert len(x) == n + (0 if cfg.signed else 1)
        return x, e

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        x, e = self._operands(self.a, self.b)
        cs = booth_rows(m, x, e, p=cfg.p, r=cfg.r, round=cfg.round, width=len(self.p))
        m.d.comb += self.p.eq(cs.elaborate(m))
        return m
