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

The ROMs are :class:`amaranth.lib.memory.Memory` instances with asynchronous
(``domain="comb"``) read ports. Why not block RAM: iCE40 EBR and ECP5 DP16KD only read
synchronously, and a 256×8 ROM would waste a 4 Kbit EBR per term; Yosys maps an async-read
constant memory to logic (``memory_map``), where ABC minimises each output bit as a function
of the 2c address bits, exactly as it does for a ``Switch``/``Case`` ROM (the two give the same
LUT counts, see ``tests/test_hw_lutna.py``). The programmable LUT of ``split="act"`` has a write
port and maps to distributed RAM on ECP5 (``TRELLIS_DPR16X4``) and to flip-flops plus read
multiplexers on iCE40 (which has no LUT RAM).
"""

from __future__ import annotations

from amaranth import hdl
from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
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
        ``split="act"`` only: start loading the weight on ``b`` (taken when ``busy`` is low).
    busy : Out(1)
        ``split="act"`` only: high while the LUT is being written (``2^c - 1`` cycles after
        the cycle ``load`` is taken); ``p`` is valid for the new weight when it falls.

    Attributes
    ----------
    latency : int
        0 for ``split="both"``. For ``split="act"``: with ``load`` held high, the number of
        clock cycles after which ``p`` is valid for a new ``b`` in the worst case
        (``2^{c+1}``: a load in progress completes, then the new one runs); ``a`` to ``p`` is
        combinational.
    table_inputs : dict
        ``{"load": 1}`` for ``split="act"``: the inputs under which ``p`` follows ``b`` (the
        generic testbench holds them).
    """

    def __init__(self, *, n=8, nb=9, c=4, split="both", drop=(), tau=0, trunc=0):
        if isinstance(drop, str):
            from mixpe.sw.mult.lutna import parse_terms

            drop = parse_terms(drop)
        self._config = _SwLutNa(n=n, nb=nb, c=c, split=split, drop=drop, tau=tau, trunc=trunc)
        cfg = self._config
        members = {
            "a": In(cfg.a_format.bits),
            "b": In(cfg.b_format.bits),
            "p": Out(hdl.signed(cfg.out_bits)),
        }
        if cfg.split == "act":
            members["load"] = In(1)
            members["busy"] = Out(1)
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
        c, t = cfg.c, cfg.trunc
        mag_bits = cfg.nb - 1
        sign = self.b[mag_bits]
        a_chunk = [self.a[c * i: c * (i + 1)] for i in range(cfg.a_chunks)]
        # |b| < 2^(nb-1) and a < 2^n: the magnitude sum fits in n + nb - 1 bits
        acc = ColumnSum(width=cfg.n + mag_bits)

        if cfg.split == "both":
            init = product_rom_init(c, t)
            for p, q in (cfg.terms if 2 * c > t else ()):  # trunc = 2c: every entry is 0
                rom = memory.Memory(shape=2 * c - t, depth=1 << (2 * c), init=init)
                m.submodules[f"lut_{p}_{q}"] = rom
                port = rom.read_port(domain="comb")
                m.d.comb += port.addr.eq(Cat(self.b[c * q: c * (q + 1)], a_chunk[p]))
                acc.add_unsigned(c * (p + q) + t, list(port.data))
            neg_sign = sign
        else:
            ebits = c + mag_bits - t
            lut = memory.Memory(shape=max(ebits, 1), depth=1 << c, init=[0] * (1 << c))
            self._lut_w = lut  # the last elaborated LUT (tests peek at its rows)
            m.submodules.lut_w = lut
            wr = lut.write_port()
            ports = {p: lut.read_port(domain="comb") for p, _ in cfg.terms if ebits > 0}
            w_mag = Signal(mag_bits)
            w_sign = Signal()
            run = Signal(c + mag_bits)        # running multiple k·|w|
            k = Signal(c)
            m.d.comb += [
                wr.addr.eq(k),
                wr.data.eq(run[t:]),
                wr.en.eq(self.busy),
            ]
            with m.If(self.busy):
                m.d.sync += [run.eq(run + w_mag), k.eq(k + 1)]
                with m.If(k == (1 << c) - 1):
                    m.d.sync += self.busy.eq(0)
            with m.Elif(self.load):
                # LUT_w[0] = 0 stays as initialised; entries 1 … 2^c-1 follow, one per cycle
                m.d.sync += [
                    w_mag.eq(self.b[:mag_bits]),
                    w_sign.eq(sign),
                    run.eq(self.b[:mag_bits]),
                    k.eq(1),
                    self.busy.eq(1),
                ]
            for p, port in ports.items():
                m.d.comb += port.addr.eq(a_chunk[p])
                acc.add_unsigned(c * p + t, list(port.data))
            neg_sign = w_sign

        mag = Signal(cfg.n + mag_bits)
        m.d.comb += mag.eq(acc.elaborate(m, name="acc"))
        # sign-magnitude -> two's complement: (M ^ s…s) + s, one adder
        m.d.comb += self.p.eq(Mux(neg_sign, -mag, mag))
        return m

