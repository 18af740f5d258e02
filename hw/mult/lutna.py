"""LUT-NA multiply element: product look-up tables with shift-add recombination.

The hardware twin of :class:`mixpe.sw.mult.lutna.LutNaMultiplier`. The activation ``a`` is
``n``-bit unsigned, the weight ``b`` is ``nb``-bit sign-magnitude (sign = MSB). With chunk
width ``c``, ``a = Σ_p a_p 2^{cp}`` and ``|b| = Σ_q w_q 2^{cq}``:

``split="both"`` (:class:`LutNaMultiplier`, combinational)
    one ``2^c × 2^c`` product ROM ``LUT_c[u][v] = u·v`` per *kept* term ``(p, q)``, addressed
    by ``{a_p, w_q}``; the entries are added at column ``c(p+q)`` by the adder tree of
    :class:`~mixpe.hw.mult.roup.ColumnSum`, and the weight's sign conditionally negates the
    magnitude: ``P = s ? -M : M`` with ``M = Σ_{(p,q) kept} LUT_c[a_p][w_q] << c(p+q)``.
    Terms in ``drop`` or with ``p + q < tau`` are not built at all (no ROM, no adder input).
    With ``trunc = t`` each ROM stores ``⌊u·v / 2^t⌋`` (``2c - t`` bits) and its word sits at
    column ``c(p+q) + t``: the ``t`` low columns do not exist.

``split="act"`` (:class:`LutNaMultiplier`, clocked)
    one *programmable* ``2^c``-entry LUT per weight, ``LUT_w[k] = |w|·k`` (entries of
    ``c + nb - 1 - t`` bits, truncated like above), written at weight-load time by a single
    adder (``LUT_w[k] = LUT_w[k-1] + |w|``, one entry per cycle). The product needs ``n/c``
    look-ups: ``M = Σ_{p kept} LUT_w[a_p] << cp``.

``LutNaMac`` (the MAC tile)
    ``lanes`` such elements and an accumulator in one adder tree: each lane's look-up words
    enter the tree directly, with the weight sign folded in (``-d = ~d + 1``), so no lane has
    its own negation adder.

How a product table is built (``rom``, a hardware-only choice; the table is the same):

* ``"memory"``: an :class:`amaranth.lib.memory.Memory` with an asynchronous
  (``domain="comb"``) read port. Why not block RAM: iCE40 EBR and ECP5 DP16KD only read
  synchronously, and a 256×8 ROM would waste a 4 Kbit EBR per term; Yosys maps an async-read
  constant memory to logic (``memory_map``), where ABC minimises each output bit as a function
  of the 2c address bits, exactly as it does for a ``Switch``/``Case`` ROM (the two give the
  same LUT counts, see ``tests/test_hw_lutna.py``). With ``2c ≤ 4`` address bits every entry
  bit is one LUT4: the table *is* the FPGA's look-up table.
* ``"logic"``: the table's function written as ``(u·v) >> trunc``, which Yosys builds as a
  small ``c``×``c`` array multiplier. For ``c = 4`` ABC's minimisation of the flat 8-input ROM
  is far from this (iCE40: one 4×4 table 70-odd LUT4 as a ROM, 28 LUT4 + 5 carries as logic;
  the whole exact ``lutna`` unit 373 vs 198 LUT4).
* ``"auto"`` (default): ``"memory"`` when ``2c ≤ 4`` (one LUT4 per entry bit), else
  ``"logic"``. The programmable LUT of ``split="act"`` has a write
port and maps to distributed RAM on ECP5 (``TRELLIS_DPR16X4``) and to flip-flops plus read
multiplexers on iCE40 (which has no LUT RAM).
"""

from __future__ import annotations

from amaranth import hdl
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from mixpe.sw.mult.lutna import LutNaMultiplier as _SwLutNa

from . import register
from .roup import ColumnSum

__all__ = ["LutNaMultiplier", "LutNaMac", "product_rom_init"]


def product_rom_init(c, trunc=0):
    """Contents of ``LUT_c`` at address ``u·2^c + v``: ``⌊u·v / 2^trunc⌋``.

    >>> product_rom_init(2)[0b1011]   # u = 2, v = 3
    6
    """
    return [((u * v) >> trunc) for u in range(1 << c) for v in range(1 << c)]


@register("lutna")
class LutNaMultiplier(wiring.Component):
    """LUT-NA multiply element, twin of the sw ``lutna`` family.

    Parameters
    ----------
    n : int
        Activation width (unsigned); ``c`` divides it.
    nb : int
        Weight width (sign + ``nb-1`` magnitude bits); with ``split="both"``, ``c`` divides
        ``nb - 1``.
    c : int
        Chunk width.
    split : str
        ``"both"``: shared product ROMs, combinational. ``"act"``: per-weight programmable
        LUT, clocked weight load.
    drop : tuple of (p, q)
        Terms not built.
    tau : int
        Only terms with ``p + q >= tau`` are built.
    trunc : int
        LUT entries keep only their bits from ``trunc`` up.
    rom : str
        ``split="both"`` product tables: ``"auto"`` (default), ``"memory"`` or ``"logic"``
        (see the module docstring; hardware only, the products are the same).

    Members
    -------
    a : In(n)
        Activation code.
    b : In(nb)
        Weight code (sign-magnitude). With ``split="act"`` it is sampled by ``load``.
    p : Out(signed(out_bits))
        Product, equal to ``config.mul_codes(a, b)`` (``split="act"``: with the weight last
        loaded).
    load : In(1)
        ``split="act"`` only: load the weight on ``b``. A load is taken on a rising edge where
        ``load`` is high and no load is in progress; the LUT is then written on the next
        ``2^c - 1`` edges (entries 1 … 2^c-1; entry 0 is always 0), so ``p`` uses the new
        weight after ``load_cycles = 2^c`` rising edges, counting the one that takes the load.
        A ``load`` in that window is ignored, and ``b`` is not looked at outside the taking
        edge. (Fixed timing rather than a ``busy`` output: the generic batch testbench
        accepts no output besides ``p``.)

    Attributes
    ----------
    load_cycles : int
        ``split="act"``: clock edges from a taken load until ``p`` uses the new weight.
    latency : int
        0 for ``split="both"``. For ``split="act"``: with ``load`` held high, the number of
        clock cycles after which ``p`` is valid for a new ``b`` in the worst case
        (``2^{c+1}``: a load in progress completes, then the new one runs); ``a`` to ``p`` is
        combinational.
    table_inputs : dict
        ``{"load": 1}`` for ``split="act"``: the inputs under which ``p`` follows ``b`` (the
        generic testbench holds them).
    """

    def __init__(self, *, n=8, nb=9, c=4, split="both", drop=(), tau=0, trunc=0, rom="auto"):
        if isinstance(drop, str):
            from mixpe.sw.mult.lutna import parse_terms

            drop = parse_terms(drop)
        self._config = _SwLutNa(n=n, nb=nb, c=c, split=split, drop=drop, tau=tau, trunc=trunc)
        self._rom = _check_rom(rom, self._config)
        cfg = self._config
        members = {
            "a": In(cfg.a_format.bits),
            "b": In(cfg.b_format.bits),
            "p": Out(hdl.signed(cfg.out_bits)),
        }
        if cfg.split == "act":
            members["load"] = In(1)
            self.load_cycles = 1 << cfg.c
            self.latency = 2 << cfg.c
            self.table_inputs = {"load": 1}
        else:
            self.latency = 0
            self.table_inputs = {}
        super().__init__(members)

    @property
    def config(self) -> _SwLutNa:
        """The sw twin (validated, frozen)."""
        return self._config

    @property
    def luts(self) -> list[tuple[int, int]]:
        """The terms ``(p, q)`` that get a look-up (one ROM or one read port each)."""
        return list(self._config.terms)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        fill = _LoadSequencer(m, cfg.c, self.load) if cfg.split == "act" else None
        if fill is not None:
            self._busy = fill.busy
        terms, sign = _lane_lookups(m, cfg, self.a, self.b, fill, "", self._rom)
        if fill is not None:
            self._lut_w = m.submodules.lut_w
        # |b| < 2^(nb-1) and a < 2^n: the magnitude sum fits in n + nb - 1 bits
        acc = ColumnSum(width=cfg.n + cfg.nb - 1)
        for col, word in terms:
            acc.add_unsigned(col, list(word))
        mag = Signal(cfg.n + cfg.nb - 1)
        m.d.comb += mag.eq(acc.elaborate(m, name="acc"))
        # sign-magnitude -> two's complement: (M ^ s…s) + s, one adder
        m.d.comb += self.p.eq(Mux(sign, -mag, mag))
        return m


class _LoadSequencer:
    """Shared write sequencer of programmable LUTs: a load taken when ``load`` is high and
    ``busy`` low writes entries ``k = 1 … 2^c-1``, one per cycle."""

    def __init__(self, m, c, load):
        self.busy = Signal(name="busy")
        self.k = Signal(c, name="k")
        self.take = Signal(name="take")
        m.d.comb += self.take.eq(load & ~self.busy)
        with m.If(self.busy):
            m.d.sync += self.k.eq(self.k + 1)
            with m.If(self.k == (1 << c) - 1):
                m.d.sync += self.busy.eq(0)
        with m.Elif(self.take):
            m.d.sync += [self.k.eq(1), self.busy.eq(1)]


ROMS = ("auto", "memory", "logic")


def _check_rom(rom, cfg):
    """The resolved product-table style (``"memory"`` or ``"logic"``) of ``rom``."""
    if rom not in ROMS:
        raise ValueError(f"rom={rom!r} is out of range; allowed: rom in {{{', '.join(ROMS)}}}")
    if rom == "auto":
        return "memory" if 2 * cfg.c <= 4 else "logic"
    return rom


def _lane_lookups(m, cfg, a, b, fill, suffix, rom="memory"):
    """Build one lane's look-ups; return ``([(column, unsigned data)], sign)``.

    ``split="both"``: a product table per kept term (a ``Memory`` ROM, or with
    ``rom="logic"`` the same function as ``(u·v) >> trunc``); ``split="act"``: the lane's
    programmable LUT (written under the shared ``fill`` sequencer) with a read port per kept
    term.
    """
    c, t = cfg.c, cfg.trunc
    mag_bits = cfg.nb - 1
    a_chunk = [a[c * i: c * (i + 1)] for i in range(cfg.a_chunks)]
    terms = []
    if cfg.split == "both":
        init = product_rom_init(c, t)
        for p, q in (cfg.terms if 2 * c > t else ()):  # trunc = 2c: every entry is 0
            w_q = b[c * q: c * (q + 1)]
            if rom == "logic":
                word = Signal(2 * c - t, name=f"lut{suffix}_{p}_{q}")
                m.d.comb += word.eq((a_chunk[p] * w_q)[t:])
                terms.append((c * (p + q) + t, word))
                continue
            table = memory.Memory(shape=2 * c - t, depth=1 << (2 * c), init=init)
            m.submodules[f"lut{suffix}_{p}_{q}"] = table
            port = table.read_port(domain="comb")
            m.d.comb += port.addr.eq(Cat(w_q, a_chunk[p]))
            terms.append((c * (p + q) + t, port.data))
        return terms, b[mag_bits]
    ebits = c + mag_bits - t
    lut = memory.Memory(shape=max(ebits, 1), depth=1 << c, init=[0] * (1 << c))
    m.submodules[f"lut_w{suffix}"] = lut
    wr = lut.write_port()
    w_mag = Signal(mag_bits, name=f"w_mag{suffix}")
    w_sign = Signal(name=f"w_sign{suffix}")
    run = Signal(c + mag_bits, name=f"run{suffix}")  # running multiple k·|w|: one adder
    m.d.comb += [wr.addr.eq(fill.k), wr.data.eq(run[t:]), wr.en.eq(fill.busy)]
    with m.If(fill.busy):
        m.d.sync += run.eq(run + w_mag)
    with m.Elif(fill.take):
        # LUT_w[0] = 0 stays as initialised; LUT_w[1] = |w| is written next
        m.d.sync += [w_mag.eq(b[:mag_bits]), w_sign.eq(b[mag_bits]), run.eq(b[:mag_bits])]
    for p, _ in (cfg.terms if ebits > 0 else ()):
        port = lut.read_port(domain="comb")
        m.d.comb += port.addr.eq(a_chunk[p])
        terms.append((c * p + t, port.data))
    return terms, w_sign


class LutNaMac(wiring.Component):
    """LUT-NA MAC tile: a ``lanes``-term dot product of LUT-NA products, accumulated.

    Every lane has the look-ups of :class:`LutNaMultiplier` (product ROMs or a programmable
    per-weight LUT); instead of negating each lane's product, the weight sign is folded into
    one adder tree (:class:`~mixpe.hw.mult.roup.ColumnSum`) over all lanes' look-up words and
    the accumulator: a lane with sign ``s`` contributes each word ``d`` at column ``k`` as the
    signed row ``{s, d ^ s…s}`` plus the bit ``s`` at column ``k`` (``-d = ~d + 1``), so

        acc' = wrap_{acc_bits}((0 if clr else acc) + Σ_lanes (-1)^{s_l} Σ_terms d·2^k).

    Parameters
    ----------
    lanes : int
        Products per cycle (dot-product length).
    acc_bits : int
        Accumulator width (two's complement, wraps).
    n, nb, c, split, drop, tau, trunc :
        The LUT-NA configuration of every lane (see :class:`LutNaMultiplier`).
    rom : str
        Product-table style, as in :class:`LutNaMultiplier`.

    Members
    -------
    a : In(ArrayLayout(n, lanes))
        Activation codes.
    b : In(ArrayLayout(nb, lanes))
        Weight codes (``split="act"``: sampled by ``load``).
    load : In(1)
        ``split="act"`` only: load all lanes' weights (same timing as
        :class:`LutNaMultiplier`, ``load_cycles = 2^c``).
    en : In(1)
        Accumulate this cycle's dot product.
    clr : In(1)
        With ``en``: start a new sum (``acc' = dot``); without: clear.
    acc : Out(signed(acc_bits))
        The accumulator (registered; one cycle after ``en``).
    """

    def __init__(self, *, lanes=4, acc_bits=32, n=8, nb=9, c=4, split="both", drop=(), tau=0,
                 trunc=0, rom="auto"):
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes={lanes!r} must be a positive integer")
        if isinstance(drop, str):
            from mixpe.sw.mult.lutna import parse_terms

            drop = parse_terms(drop)
        self._config = _SwLutNa(n=n, nb=nb, c=c, split=split, drop=drop, tau=tau, trunc=trunc)
        self._rom = _check_rom(rom, self._config)
        cfg = self._config
        if isinstance(acc_bits, bool) or not isinstance(acc_bits, int) or \
                not cfg.out_bits <= acc_bits <= 64:
            raise ValueError(f"acc_bits={acc_bits!r} must be an integer in "
                             f"[{cfg.out_bits}, 64] (at least one product)")
        self._lanes, self._acc_bits = lanes, acc_bits
        members = {
            "a": In(data.ArrayLayout(cfg.n, lanes)),
            "b": In(data.ArrayLayout(cfg.nb, lanes)),
            "en": In(1),
            "clr": In(1),
            "acc": Out(hdl.signed(acc_bits)),
        }
        if cfg.split == "act":
            members["load"] = In(1)
            self.load_cycles = 1 << cfg.c
        super().__init__(members)

    @property
    def config(self) -> _SwLutNa:
        """The sw twin of one lane's multiplier."""
        return self._config

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def acc_bits(self) -> int:
        return self._acc_bits

    def elaborate(self, platform):
        m = Module()
        cfg, W = self._config, self._acc_bits
        fill = _LoadSequencer(m, cfg.c, self.load) if cfg.split == "act" else None
        tree = ColumnSum(width=W)
        for lane in range(self._lanes):
            terms, sign = _lane_lookups(m, cfg, self.a[lane], self.b[lane], fill, f"_{lane}",
                                        self._rom)
            for col, d in terms:
                if col >= W:
                    continue
                tree.add_signed(col, list(d ^ sign.replicate(len(d))) + [sign])
                tree.add_bit(col, sign)
        held = Signal(W)
        m.d.comb += held.eq(Mux(self.clr, 0, self.acc))
        tree.add_signed(0, list(held))
        total = Signal(W)
        m.d.comb += total.eq(tree.elaborate(m, name="mac"))
        with m.If(self.en):
            m.d.sync += self.acc.eq(total)
        with m.Elif(self.clr):
            m.d.sync += self.acc.eq(0)
        return m
