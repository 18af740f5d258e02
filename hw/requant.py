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

Pipeline (one value per cycle, :attr:`Requantizer.latency` = 5 register stages, all stalled
together by ``o_stream.ready``)::

    S1  x = acc + bias, mult, sa = max(shift - 1, 0), round = shift != 0
    S2  p_lo = x · mult[0:16] (unsigned),  p_hi = x · mult[16:32] (signed)    two DSP-sized
    S3  t = (p_hi << 16) + p_lo                                                products
    S4  u = clamp(t >> sa, -2^19, 2^19 - 1);  v = round ? (u + 1) >> 1 : u
    S5  y = clamp((relu ? max(v, 0) : v) + zp, lo, hi)

The core (``hw/core.py``) instantiates ``min(rows, cols)`` of them side by side, so a REQUANT
converts one accumulator row per cycle.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Requantizer", "REQUANT_LATENCY", "OUT_BITS", "MULT_BITS", "SHIFT_BITS"]

#: Pipeline stages from an accepted input to its output beat (with ``o_stream.ready`` high).
REQUANT_LATENCY = 5
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

    def __init__(self, *, acc_bits: int = 32, tag_bits: int = 0):
        if isinstance(acc_bits, bool) or not isinstance(acc_bits, int) or not 2 <= acc_bits <= 48:
            self._MustUse__silence = True  # no UnusedElaboratable warning for a rejected one
            raise TypeError(f"Accumulator width must be an integer in [2, 48], not {acc_bits!r}")
        if isinstance(tag_bits, bool) or not isinstance(tag_bits, int) or tag_bits < 0:
            self._MustUse__silence = True
            raise TypeError(f"Tag width must be a non-negative integer, not {tag_bits!r}")
        self._acc_bits = acc_bits
        self._tag_bits = tag_bits
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
    def latency(self) -> int:
        """Cycles from an accepted input to its output beat (``o_stream.ready`` held high)."""
        return REQUANT_LATENCY

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
        en = Signal()  # the whole pipeline advances
        m.d.comb += [en.eq(~o.valid | o.ready), i.ready.eq(en)]

        valid = [Signal(name=f"valid{k}") for k in range(1, REQUANT_LATENCY + 1)]
        tags = [Signal(self._tag_bits, name=f"tag{k}") for k in range(1, REQUANT_LATENCY + 1)]
        with m.If(en):
            m.d.sync += valid[0].eq(i.valid)
            m.d.sync += [valid[k].eq(valid[k - 1]) for k in range(1, REQUANT_LATENCY)]
            if self._tag_bits:
                m.d.sync += tags[0].eq(i.payload.tag)
                m.d.sync += [tags[k].eq(tags[k - 1]) for k in range(1, REQUANT_LATENCY)]

        # S1: x = acc + bias; the shift before the rounding bit, sa = max(shift - 1, 0)
        x1 = Signal(signed(A + 1))
        mult1 = Signal(signed(MULT_BITS))
        sa1 = Signal(SHIFT_BITS)
        round1 = Signal()
        with m.If(en):
            m.d.sync += [
                x1.eq(i.payload.acc + i.payload.bias),
                mult1.eq(i.payload.mult),
                sa1.eq(Mux(i.payload.shift == 0, 0, i.payload.shift - 1)),
                round1.eq(i.payload.shift != 0),
            ]
        # S2: two partial products of DSP size (x · 16 bits each)
        p_lo = Signal(signed(A + 1 + 17))
        p_hi = Signal(signed(A + 1 + 16))
        sa2 = Signal(SHIFT_BITS)
        round2 = Signal()
        with m.If(en):
            m.d.sync += [
                p_lo.eq(x1 * Cat(mult1[:16], 0).as_signed()),
                p_hi.eq(x1 * mult1[16:].as_signed()),
                sa2.eq(sa1),
                round2.eq(round1),
            ]
        # S3: the exact product t = x · mult
        t_bits = A + 1 + MULT_BITS
        t3 = Signal(signed(t_bits))
        sa3 = Signal(SHIFT_BITS)
        round3 = Signal()
        with m.If(en):
            m.d.sync += [t3.eq((p_hi << 16) + p_lo), sa3.eq(sa2), round3.eq(round2)]
        # S4: u = t >> (shift - 1), clamped to 20 bits, then the rounding bit:
        # floor((t + 2^(s-1)) / 2^s) = (floor(t / 2^(s-1)) + 1) >> 1 for s >= 1
        u_lo, u_hi = -(1 << (_U_BITS - 1)), (1 << (_U_BITS - 1)) - 1
        u = Signal(signed(t_bits))
        u_sat = Signal(signed(_U_BITS))
        m.d.comb += [
            u.eq(t3 >> sa3),
            u_sat.eq(Mux(u < u_lo, u_lo, Mux(u > u_hi, u_hi, u))),
        ]
        v4 = Signal(signed(_U_BITS))
        with m.If(en):
            m.d.sync += v4.eq(Mux(round3, (u_sat + 1) >> 1, u_sat))
        # S5: ReLU, zero point, clamp (torch.clamp order: max with lo, then min with hi)
        r = Signal(signed(_U_BITS))
        z = Signal(signed(_U_BITS + 1))
        zl = Signal(signed(_U_BITS + 1))
        y5 = Signal(signed(OUT_BITS))
        m.d.comb += [
            r.eq(Mux(self.relu & (v4 < 0), 0, v4)),
            z.eq(r + self.zp),
            zl.eq(Mux(z < self.lo, self.lo, z)),
        ]
        with m.If(en):
            m.d.sync += y5.eq(Mux(zl > self.hi, self.hi, zl))

        m.d.comb += [o.valid.eq(valid[-1]), o.payload.y.eq(y5)]
        if self._tag_bits:
            m.d.comb += o.payload.tag.eq(tags[-1])
        return m
