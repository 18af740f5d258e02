"""The requantizer: accumulator values to output codes, bit-identical to ``sw/requant.py``.

:class:`Requantizer` is the hardware twin of :func:`mixpe.sw.requant.requantize`::

    x = acc + bias                                   (acc_bits + 1 bits, exact)
    v = (x · mult + 2^(shift-1)) >> shift            (no rounding term when shift = 0;
                                                      arithmetic shift: round half up)
    y = clamp((max(v, 0) if relu else v) + zp, lo, hi)

Every intermediate is exact: the product ``t = x · mult`` is ``acc_bits + 33`` bits wide, so
there is no int64 corner to reproduce (the reference splits its product only to stay inside
int64; the result is the exact floor). The rounding term is added after a first shift, with
no wide adder: for ``shift = s >= 1``, ``floor((t + 2^(s-1)) / 2^s) = (floor(t / 2^(s-1)) +
1) >> 1``. ``t >> (s - 1)`` is clamped to 20 bits first: ``zp``, ``lo``, ``hi`` are 16-bit
values, so any value outside that window ends at the same ``lo``/``hi`` whatever the zero point
(the same argument the reference uses for its ``±2^40`` clamp).

Pipeline (one value per cycle, :attr:`Requantizer.latency` = 8 register stages, all stalled
together by ``o_stream.ready``; split so that every stage holds one multiplier, one carry
chain or one shifter and the unit meets 100 MHz on the ECP5)::

    S1  x = acc + bias, mult, sa = max(shift - 1, 0), round = shift != 0
    S2  xh·mh, xh·ml, xl·mh, xl·ml      x = xh·2^17 + xl, mult = mh·2^16 + ml (xl, ml
                                        unsigned): four products of <= 18 × 18 bits (DSPs)
    S3  hi = (xh·mh << 16) + xh·ml,  lo = (xl·mh << 16) + xl·ml
    S4  t = (hi << 17) + lo             = x · mult, exact
    S5  u = clamp(t >> sa, -2^19, 2^19 - 1)
    S6  v = round ? (u + 1) >> 1 : u;  r = relu ? max(v, 0) : v
    S7  z = r + zp
    S8  y = clamp(z, lo, hi)            (max with lo, then min with hi)

S5 uses a shifter that narrows at each stage (only ``20 + 2^b - 1`` bits can matter after the
shift by ``2^b``; wider values have overflowed).

``serial=True`` (small FPGAs: no DSP block, ~a quarter of the logic) replaces S2–S5 by two
16-cycle stages that overlap for consecutive values: 16 radix-4 Horner steps build ``t`` from
the 2-bit digits of ``mult`` (``x·d`` is one of ``0, x, 2x, 3x``; the sign of ``mult`` is the
start value ``-x``), then 16 steps shift it right by 4 bits at a time and the last one shifts
the remaining 0 … 3 bits and clamps. One value every :data:`SERIAL_INTERVAL` = 16 cycles,
latency :data:`SERIAL_LATENCY` = 36.

The core (``hw/core.py``) instantiates ``min(rows, cols)`` of them side by side, so a REQUANT
converts one accumulator row per cycle (or one serial requantizer on small FPGAs).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Requantizer", "REQUANT_LATENCY", "SERIAL_LATENCY", "SERIAL_INTERVAL", "OUT_BITS",
           "MULT_BITS", "SHIFT_BITS"]

#: Pipeline stages from an accepted input to its output beat (with ``o_stream.ready`` high).
REQUANT_LATENCY = 8
#: The same for ``serial=True`` (load, 16 multiply steps, 16 shift steps, S5 … S8).
SERIAL_LATENCY = 36
#: Cycles between accepted inputs of a ``serial`` requantizer.
SERIAL_INTERVAL = 16
#: Width of the signed result (``zp``, ``lo``, ``hi`` are 16-bit CONFIG fields).
OUT_BITS = 16
#: Width of the signed per-channel multiplier.
MULT_BITS = 32
#: Width of the per-channel shift (the reference allows 0 … 62).
SHIFT_BITS = 6
_U_BITS = 20  # t >> (shift - 1) is clamped into 20 bits: beyond, y is lo or hi anyway


class Requantizer(wiring.Component):
    """Pipelined requantizer, bit-identical to :func:`mixpe.sw.requant.requantize`.

    Parameters (keyword-only, checked eagerly)
    ----------
    acc_bits : int
        Width of the accumulator values and the bias (two's complement), 2 … 48.
    tag_bits : int
        Width of an opaque ``tag`` carried from input to output with each value (0: none).
    serial : bool
        Serial radix-4 multiplier and shifter (no DSP; one value per 16 cycles) instead of
        two DSP-sized partial products and a barrel shifter (one value per cycle).

    Members
    -------
    i_stream : In(stream.Signature(StructLayout({"acc": signed(acc_bits),
            "bias": signed(acc_bits), "mult": signed(32), "shift": unsigned(6),
            ["tag": tag_bits]})))
        One value to requantize and its channel's parameters.
    o_stream : Out(stream.Signature(StructLayout({"y": signed(16), ["tag": tag_bits]})))
        The result, :attr:`latency` cycles after its input was accepted (in order). ``ready``
        stalls the whole pipeline; hold it high for one result per cycle.
    zp, lo, hi : In(signed(16))
        Zero point and clamp bounds (CONFIG fields); hold them while values are in flight.
    relu : In(1)
        ReLU before the zero point.

    Raises
    ------
    TypeError
        ``acc_bits`` or ``tag_bits`` is not an integer in range.
    """

    def __init__(self, *, acc_bits: int = 32, tag_bits: int = 0, serial: bool = False):
        if isinstance(acc_bits, bool) or not isinstance(acc_bits, int) or not 2 <= acc_bits <= 48:
            self._MustUse__silence = True  # no UnusedElaboratable warning for a rejected one
            raise TypeError(f"Accumulator width must be an integer in [2, 48], not {acc_bits!r}")
        if isinstance(tag_bits, bool) or not isinstance(tag_bits, int) or tag_bits < 0:
            self._MustUse__silence = True
            raise TypeError(f"Tag width must be a non-negative integer, not {tag_bits!r}")
        if not isinstance(serial, bool):
            self._MustUse__silence = True
            raise TypeError(f"serial must be a bool, not {serial!r}")
        self._acc_bits = acc_bits
        self._tag_bits = tag_bits
        self._serial = serial
        i_fields = {"acc": signed(acc_bits), "bias": signed(acc_bits), "mult": signed(MULT_BITS),
                    "shift": SHIFT_BITS}
        o_fields = {"y": signed(OUT_BITS)}
        if tag_bits:
            i_fields["tag"] = tag_bits
            o_fields["tag"] = tag_bits
        self._i_layout = data.StructLayout(i_fields)
        self._o_layout = data.StructLayout(o_fields)
        super().__init__({
            "i_stream": In(stream.Signature(self._i_layout)),
            "o_stream": Out(stream.Signature(self._o_layout)),
            "zp": In(signed(OUT_BITS)),
            "lo": In(signed(OUT_BITS)),
            "hi": In(signed(OUT_BITS)),
            "relu": In(1),
        })

    @property
    def acc_bits(self) -> int:
        return self._acc_bits

    @property
    def tag_bits(self) -> int:
        return self._tag_bits

    @property
    def serial(self) -> bool:
        return self._serial

    @property
    def latency(self) -> int:
        """Cycles from an accepted input to its output beat (``o_stream.ready`` held high)."""
        return SERIAL_LATENCY if self._serial else REQUANT_LATENCY

    @property
    def interval(self) -> int:
        """Cycles between accepted inputs at full rate (1, or 16 when ``serial``)."""
        return SERIAL_INTERVAL if self._serial else 1

    @property
    def i_layout(self) -> data.StructLayout:
        return self._i_layout

    @property
    def o_layout(self) -> data.StructLayout:
        return self._o_layout

    def elaborate(self, platform):
        m = Module()
        A = self._acc_bits
        i, o = self.i_stream, self.o_stream
        en = Signal()  # the whole unit advances (o_stream back-pressure stalls everything)
        m.d.comb += en.eq(~o.valid | o.ready)
        if self._serial:
            u_sat, round3, valid3, tag3 = self._serial_path(m, en)
        else:
            t_bits = A + 1 + MULT_BITS
            t3 = Signal(signed(t_bits))   # the exact product x · mult
            sa3 = Signal(SHIFT_BITS)
            round3 = Signal()
            valid3 = Signal()
            tag3 = Signal(self._tag_bits)
            self._multiply_parallel(m, en, t3, sa3, round3, valid3, tag3)
            # S5: u = t >> (shift - 1), clamped to 20 bits
            u_sat = _shift_clamp(m, t3, sa3, _U_BITS)
        # S5 registers the clamped shift (the shifter's mux levels and the rounding adder do
        # not fit one ECP5 cycle at 100 MHz together)
        u4 = Signal(signed(_U_BITS))
        round4 = Signal()
        valid4 = Signal()
        tag4 = Signal(self._tag_bits)
        with m.If(en):
            m.d.sync += [u4.eq(u_sat), round4.eq(round3), valid4.eq(valid3), tag4.eq(tag3)]
        # S6: the rounding bit, floor((t + 2^(s-1)) / 2^s) = (floor(t / 2^(s-1)) + 1) >> 1
        # for s >= 1, then ReLU
        v = Signal(signed(_U_BITS))
        r5 = Signal(signed(_U_BITS))
        valid5 = Signal()
        tag5 = Signal(self._tag_bits)
        m.d.comb += v.eq(Mux(round4, (u4 + 1) >> 1, u4))
        with m.If(en):
            m.d.sync += [r5.eq(Mux(self.relu & v[-1], 0, v)), valid5.eq(valid4),
                         tag5.eq(tag4)]
        # S7: zero point
        z6 = Signal(signed(_U_BITS + 1))
        valid6 = Signal()
        tag6 = Signal(self._tag_bits)
        with m.If(en):
            m.d.sync += [z6.eq(r5 + self.zp), valid6.eq(valid5), tag6.eq(tag5)]
        # S8: clamp in torch.clamp order, min(max(z, lo), hi), with the three comparisons
        # side by side: z < lo gives lo, or hi when lo > hi; else z > hi gives hi
        y7 = Signal(signed(OUT_BITS))
        valid7 = Signal()
        tag7 = Signal(self._tag_bits)
        clamped = Mux(z6 < self.lo, Mux(self.lo > self.hi, self.hi, self.lo),
                      Mux(z6 > self.hi, self.hi, z6))
        with m.If(en):
            m.d.sync += [y7.eq(clamped), valid7.eq(valid6), tag7.eq(tag6)]
        y5, valid5, tag5 = y7, valid7, tag7
        m.d.comb += [o.valid.eq(valid5), o.payload.y.eq(y5)]
        if self._tag_bits:
            m.d.comb += o.payload.tag.eq(tag5)
        return m

    def _stage1(self, m, load):
        """S1 registers: ``x = acc + bias``, ``sa = max(shift - 1, 0)``, ``round``, the tag."""
        i = self.i_stream
        x1 = Signal(signed(self._acc_bits + 1))
        sa1 = Signal(SHIFT_BITS)
        round1 = Signal()
        tag1 = Signal(self._tag_bits)
        with m.If(load):
            m.d.sync += [
                x1.eq(i.payload.acc + i.payload.bias),
                sa1.eq(Mux(i.payload.shift == 0, 0, i.payload.shift - 1)),
                round1.eq(i.payload.shift != 0),
            ]
            if self._tag_bits:
                m.d.sync += tag1.eq(i.payload.tag)
        return x1, sa1, round1, tag1

    def _multiply_parallel(self, m, en, t3, sa3, round3, valid3, tag3):
        """S1–S4, one value per cycle: four partial products of at most 18 × 18 bits (one
        ECP5 MULT18X18D each, registered), then two levels of adders.

        With ``x = xh·2^17 + xl`` (``xl`` = the low 17 bits, unsigned) and ``mult = mh·2^16 +
        ml`` (``ml`` = the low 16 bits, unsigned): ``x·mult = (((xh·mh)·2^16 + xh·ml)·2^17) +
        (xl·mh)·2^16 + xl·ml``; the results ``t3``, ``sa3``, … are the S4 registers."""
        i = self.i_stream
        m.d.comb += i.ready.eq(en)
        x1, sa1, round1, tag1 = self._stage1(m, en)
        mult1 = Signal(signed(MULT_BITS))
        valid1 = Signal()
        with m.If(en):
            m.d.sync += [mult1.eq(i.payload.mult), valid1.eq(i.valid)]
        xw = Signal(signed(max(len(x1), 18)))  # sign-extended: the split needs >= 18 bits
        m.d.comb += xw.eq(x1)
        xl = Cat(xw[:17], 0).as_signed()
        xh = xw[17:].as_signed()
        ml = Cat(mult1[:16], 0).as_signed()
        mh = mult1[16:].as_signed()
        prods = {}
        for name, (u, v) in {"hh": (xh, mh), "hl": (xh, ml), "lh": (xl, mh),
                             "ll": (xl, ml)}.items():
            prods[name] = Signal(signed(len(u) + len(v)), name=f"p_{name}")
        sa2, round2, valid2, tag2 = (Signal(SHIFT_BITS), Signal(), Signal(),
                                     Signal(self._tag_bits))
        hi3 = Signal(signed(len(xh) + 17 + 17 + 1))
        lo3 = Signal(signed(18 + 17 + 16 + 1))
        sa_, round_, valid_, tag_ = (Signal(SHIFT_BITS), Signal(), Signal(),
                                     Signal(self._tag_bits))
        with m.If(en):
            m.d.sync += [
                # S2: the four products
                prods["hh"].eq(xh * mh), prods["hl"].eq(xh * ml),
                prods["lh"].eq(xl * mh), prods["ll"].eq(xl * ml),
                sa2.eq(sa1), round2.eq(round1), valid2.eq(valid1), tag2.eq(tag1),
                # S3: two partial sums side by side
                hi3.eq((prods["hh"] << 16) + prods["hl"]),
                lo3.eq((prods["lh"] << 16) + prods["ll"]),
                sa_.eq(sa2), round_.eq(round2), valid_.eq(valid2), tag_.eq(tag2),
                # S4: the exact product
                t3.eq((hi3 << 17) + lo3), sa3.eq(sa_), round3.eq(round_), valid3.eq(valid_),
                tag3.eq(tag_),
            ]

    def _serial_path(self, m, en):
        """The DSP-free path: M, 16 radix-4 Horner steps ``t = 4·t + x·d`` over the 2-bit
        digits ``d`` of ``mult`` read as unsigned (``t`` starts at ``-x`` when ``mult < 0``:
        ``x·mult = x·mult_u - x·2^32·[mult < 0]``; ``x·d`` is a choice of ``0, x, 2x, 3x``);
        then S, 16 cycles shifting ``t`` right by 4 while ``4·k < shift - 1`` and, in the
        last one, the remaining 0 … 3 bits with the 20-bit clamp. M and S overlap for
        consecutive values: one value per 16 cycles. Returns ``(u_sat, round, valid, tag)``
        of the S stage's last cycle."""
        A = self._acc_bits
        i = self.i_stream
        steps = MULT_BITS // 2
        t_bits = A + 1 + MULT_BITS
        # M stage
        m_busy = Signal()
        m_step = Signal(range(steps))
        m_done = Signal()
        load = Signal()
        m.d.comb += [m_done.eq(m_busy & (m_step == steps - 1)),
                     i.ready.eq(en & (~m_busy | m_done)),
                     load.eq(i.valid & i.ready)]
        x = Signal(signed(A + 1))
        m.d.comb += x.eq(i.payload.acc + i.payload.bias)
        x1 = Signal(signed(A + 1))
        x3 = Signal(signed(A + 3))
        m_sr = Signal(MULT_BITS)
        acc = Signal(signed(t_bits))
        sa1 = Signal(SHIFT_BITS)
        round1 = Signal()
        tag1 = Signal(self._tag_bits)
        add = Signal(signed(A + 3))
        nxt = Signal(signed(t_bits))
        with m.Switch(m_sr[-2:]):
            for d, val in enumerate((0, x1, x1 << 1, x3)):
                with m.Case(d):
                    m.d.comb += add.eq(val)
        m.d.comb += nxt.eq((acc << 2) + add)
        # S stage
        s_busy = Signal()
        s_cnt = Signal(range(steps))
        s_last = Signal()
        u = Signal(signed(t_bits))
        u_next = Signal(signed(t_bits))
        s_sa = Signal(SHIFT_BITS)
        s_round = Signal()
        s_tag = Signal(self._tag_bits)
        m.d.comb += [
            s_last.eq(s_busy & (s_cnt == steps - 1)),
            u_next.eq(Mux(s_cnt < s_sa[2:], u >> 4, u)),
        ]
        pre = _saturate(m, u_next, _U_BITS + 3)
        u_sat = _shift_clamp(m, pre, s_sa[:2], _U_BITS)
        valid = Signal()
        m.d.comb += valid.eq(s_last)
        with m.If(en):
            with m.If(s_busy):
                m.d.sync += [u.eq(u_next), s_cnt.eq(s_cnt + 1)]
                with m.If(s_last):
                    m.d.sync += [s_busy.eq(0), s_cnt.eq(0)]
            with m.If(m_busy):
                m.d.sync += [acc.eq(nxt), m_sr.eq(m_sr << 2), m_step.eq(m_step + 1)]
                with m.If(m_done):
                    m.d.sync += [m_busy.eq(0), m_step.eq(0), u.eq(nxt), s_busy.eq(1),
                                 s_cnt.eq(0), s_sa.eq(sa1), s_round.eq(round1), s_tag.eq(tag1)]
            with m.If(load):
                m.d.sync += [
                    m_busy.eq(1), m_step.eq(0), x1.eq(x), x3.eq(x + (x << 1)),
                    m_sr.eq(i.payload.mult), acc.eq(Mux(i.payload.mult[-1], -x, 0)),
                    sa1.eq(Mux(i.payload.shift == 0, 0, i.payload.shift - 1)),
                    round1.eq(i.payload.shift != 0),
                ]
                if self._tag_bits:
                    m.d.sync += tag1.eq(i.payload.tag)
        return u_sat, s_round, valid, s_tag


def _saturate(m, v, bits: int):
    """``v`` clamped to ``bits``-bit two's complement."""
    out = Signal(signed(bits))
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if len(v) <= bits:
        m.d.comb += out.eq(v)
    else:
        top = v[bits - 1:]
        fits = (top == 0) | (top == (1 << len(top)) - 1)
        m.d.comb += out.eq(Mux(fits, v[:bits].as_signed(), Mux(v[-1], lo, hi)))
    return out


def _shift_clamp(m, t, sa, keep: int):
    """``clamp(t >> sa, -2^(keep-1), 2^(keep-1) - 1)`` (arithmetic shift) with a shifter that
    narrows at every stage: after shifting by the bits ``>= 2^b`` of ``sa`` only
    ``keep + 2^b - 1`` bits can still matter, anything wider has overflowed (same sign)."""
    cur = t
    ovf = Const(0, 1)
    for b in reversed(range(len(sa))):
        amt = 1 << b
        shifted = Mux(sa[b], cur >> amt, cur)
        width = keep + amt - 1
        if len(cur) > width:
            top = shifted[width - 1:]
            ovf = ovf | ~((top == 0) | (top == (1 << len(top)) - 1))
            cur = shifted[:width].as_signed()
        else:
            cur = shifted
    out = Signal(signed(keep))
    lo, hi = -(1 << (keep - 1)), (1 << (keep - 1)) - 1
    m.d.comb += out.eq(Mux(ovf, Mux(t < 0, lo, hi), cur))
    return out
