"""Number-format decoders and the decoded multiplier: the hardware twins of ``sw/formats.py``.

Naming: a sw format ``<Family>Format`` (a *policy object* that describes codes and values) has
one hardware twin, the combinational Component ``<Family>Decoder`` (``IntDecoder``,
``PotDecoder``, ``FloatDecoder``, ``FlintDecoder``). A decoder is built from the same keyword
parameters as its sw format (``bits``, ``signed``, plus ``e`` for float), builds the sw format
to validate them and keeps it as ``.config``. Its interface::

    code: In(bits)                  format code
    m:    Out(m_shape)              mantissa; signed(m_bits) when the format is signed,
                                    unsigned(m_bits) otherwise (``config.m_format()``)
    e:    Out(e_bits)               left shift, 0 … e_max

with ``m << e`` equal to ``config.value(code)`` and ``(m, e)`` equal to ``config.decode(code)``
for every code.

Formats are plugged in through :func:`register` / :func:`decoder` (family → decoder class), so
no unit branches on the format family. :class:`DecodedMultiplierComponent` is the twin of
:class:`mixpe.sw.mult.decoded.DecodedMultiplier`: two decoders, any hardware core multiplier
(:func:`mixpe.hw.mult.create`) on the mantissas, and a left shift by ``e_a + e_b``.

>>> dec = decoder("flint:bits=4")
>>> type(dec).__name__, dec.signature.members["m"].shape, dec.signature.members["e"].shape
('FlintDecoder', unsigned(3), 3)
>>> from amaranth.back import verilog
>>> "input [3:0] code" in verilog.convert(dec, name="flint4")
True
"""

from __future__ import annotations

import dataclasses

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from mixpe.sw.formats import (
    FlintFormat,
    FloatFormat,
    IntFormat,
    NumberFormat,
    PotFormat,
    number_format,
)
from mixpe.sw.mult import Multiplier, multiplier
from mixpe.sw.mult.decoded import DecodedMultiplier

from . import mult as hw_mult

__all__ = [
    "register",
    "registry",
    "decoder",
    "Decoder",
    "IntDecoder",
    "PotDecoder",
    "FloatDecoder",
    "FlintDecoder",
    "DecodedMultiplierComponent",
    "mantissa_code",
]

_REGISTRY: dict[str, type] = {}


def register(family: str):
    """Class decorator: register the decoder Component of a sw format ``family``."""
    if not isinstance(family, str) or not family:
        raise TypeError(f"Family must be a non-empty string, not {family!r}")

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, Decoder)):
            raise TypeError(f"{cls!r} is not a Decoder subclass")
        old = _REGISTRY.get(family)
        if old is not None and old is not cls and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"format family {family!r} already has the decoder {old!r}")
        _REGISTRY[family] = cls
        return cls

    return deco


def registry() -> dict[str, type]:
    """``{format family: decoder class}`` (a copy)."""
    return dict(_REGISTRY)


def _as_format(fmt) -> NumberFormat:
    if isinstance(fmt, str):
        return number_format(fmt)
    if not isinstance(fmt, NumberFormat):
        raise TypeError(f"Expected a sw number format or a format spec string, not {fmt!r}")
    return fmt


def _format_kwargs(fmt: NumberFormat) -> dict:
    return {f.name: getattr(fmt, f.name) for f in dataclasses.fields(fmt) if f.init}


def decoder(fmt) -> "Decoder":
    """The decoder Component of a sw format (or format spec string).

    Raises ``ValueError`` for an unknown spec or a family without a registered decoder.
    """
    fmt = _as_format(fmt)
    cls = _REGISTRY.get(fmt.family)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ValueError(f"format family {fmt.family!r} has no hardware decoder; known: {known}")
    return cls(**_format_kwargs(fmt))


def _m_shape(fmt: NumberFormat) -> Shape:
    return signed(fmt.m_bits) if fmt.m_signed else unsigned(fmt.m_bits)


class Decoder(wiring.Component):
    """Base of the format decoders: combinational ``code`` → ``(m, e)``.

    Subclasses set ``_sw_class`` and implement :meth:`decode_magnitude`, which builds the
    unsigned mantissa and the shift of a ``B``-bit magnitude code; this base adds the sign of
    sign-magnitude formats (the two's-complement int decoder overrides :meth:`elaborate`).

    Members
    -------
    code : In(bits)
        Format code.
    m : Out(signed(m_bits)) or Out(unsigned(m_bits))
        Mantissa (carries the sign).
    e : Out(e_bits)
        Left shift amount.
    """

    _sw_class: type = NumberFormat
    latency = 0

    def __init__(self, config: NumberFormat):
        if not isinstance(config, self._sw_class):
            self._MustUse__silence = True
            raise TypeError(f"Expected a {self._sw_class.__name__}, not {config!r}")
        self._config = config
        super().__init__({
            "code": In(config.bits),
            "m": Out(_m_shape(config)),
            "e": Out(config.e_bits),
        })

    @property
    def config(self) -> NumberFormat:
        """The sw twin (validated, frozen)."""
        return self._config

    def _validated(self, cls, **params) -> NumberFormat:
        """Build the sw format ``cls(**params)``; on a bad parameter the half-built Component
        is silenced (no ``UnusedElaboratable`` warning) before the ``ValueError`` propagates."""
        try:
            return cls(**params)
        except Exception:
            self._MustUse__silence = True
            raise

    def decode_magnitude(self, m: Module, c) -> tuple:
        """Return ``(mag, e)`` Values for the ``B``-bit magnitude code ``c``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B = cfg.mag_bits
        mag, e = self.decode_magnitude(m, self.code[:B])
        m.d.comb += self.e.eq(e)
        if cfg.signed:
            neg = self.code[B]
            m.d.comb += self.m.eq(Mux(neg, -mag, mag))
        else:
            m.d.comb += self.m.eq(mag)
        return m


@register("int")
class IntDecoder(Decoder):
    """Integer format: ``m`` is the two's-complement (or unsigned) code itself, ``e = 0``."""

    _sw_class = IntFormat

    def __init__(self, *, bits=4, signed=False):
        super().__init__(self._validated(IntFormat, bits=bits, signed=signed))

    def elaborate(self, platform):
        m = Module()
        code = self.code.as_signed() if self._config.signed else self.code
        m.d.comb += [self.m.eq(code), self.e.eq(0)]
        return m


@register("pot")
class PotDecoder(Decoder):
    """Power of two: magnitude code ``c`` → ``(c != 0, c - 1)`` (``e = 0`` for ``c = 0``)."""

    _sw_class = PotFormat

    def __init__(self, *, bits=4, signed=False):
        super().__init__(self._validated(PotFormat, bits=bits, signed=signed))

    def decode_magnitude(self, m, c):
        nz = c.any()
        return nz, Mux(nz, c - 1, 0)


@register("float")
class FloatDecoder(Decoder):
    """Float ``EeMm`` with subnormals: field ``f``, mantissa ``t``; ``(1t, f-1)`` or ``(t, 0)``."""

    _sw_class = FloatFormat

    def __init__(self, *, bits=4, signed=False, e=None):
        super().__init__(self._validated(FloatFormat, bits=bits, signed=signed, e=e))

    def decode_magnitude(self, m, c):
        M = self._config.man_bits
        f, t = c[M:], c[:M]
        normal = f.any()
        # the hidden bit is the "f != 0" flag, a subnormal keeps it clear and shifts by 0
        return Cat(t, normal), Mux(normal, f - 1, 0)


@register("flint")
class FlintDecoder(Decoder):
    """ANT flint: unary exponent from the run of leading ones (seed spec §5.3).

    For ``o`` leading ones of the ``B``-bit magnitude code ``c = 1^o 0 t``: ``o = 0`` gives
    ``(c, 0)``; otherwise ``e = o`` and ``m = 1 t 0^(o-1)`` in ``B - 1`` bits, i.e. the bits
    of ``c << o`` above bit 0 with the hidden one forced in the MSB (for ``o = B`` this is
    ``2**(B-2)``). Each case is one pattern of a priority decoder.
    """

    _sw_class = FlintFormat

    def __init__(self, *, bits=4, signed=False):
        super().__init__(self._validated(FlintFormat, bits=bits, signed=signed))

    def decode_magnitude(self, m, c):
        B = self._config.mag_bits
        mag = Signal(B - 1, name="mag")
        e = Signal(range(B + 1), name="exp")
        with m.Switch(c):
            for o in range(B + 1):
                # o leading ones, then a zero (none when o == B), then don't-cares
                pattern = "1" * o + ("0" if o < B else "") + "-" * max(0, B - 1 - o)
                with m.Case(pattern):
                    if o == 0:
                        m.d.comb += mag.eq(c[:B - 1])
                    else:
                        aligned = (c << o)[1:B]  # t followed by o-1 zeros, B-1 bits
                        m.d.comb += mag.eq(aligned | (1 << (B - 2)))
                    m.d.comb += e.eq(o)
        return mag, e


# -- mantissa → core operand code -------------------------------------------------------------


def mantissa_code(m_value, port):
    """Code of the value ``m_value`` on a core multiplier port with :class:`OperandFormat` ``port``.

    Two's-complement and unsigned ports take the low ``bits`` (the sw ``DecodedMultiplier``
    has checked that every mantissa fits the port range); a sign-magnitude port takes the sign
    in the MSB and ``|m|`` below.
    """
    bits = port.bits
    if port.encoding == "sm":
        v = m_value.as_signed() if m_value.shape().signed else m_value
        neg = v < 0
        mag = Mux(neg, -v, v).as_unsigned()  # |m| ≤ 2**(width-1): fits once unsigned
        mag = mag[:bits - 1]
        if len(mag) < bits - 1:
            mag = Cat(mag, Const(0, bits - 1 - len(mag)))  # zero-extend below the sign bit
        return Cat(mag, neg)
    width = len(m_value)
    if width < bits and m_value.shape().signed:
        return Cat(m_value, m_value[-1].replicate(bits - width))  # sign extension
    return m_value[:bits]


def _core_extra_inputs(core) -> dict:
    """Input members of a core multiplier besides ``a`` and ``b`` (e.g. ``mode``)."""
    return {
        name: member
        for name, member in core.signature.members.items()
        if name not in ("a", "b") and member.flow == wiring.In
    }


class DecodedMultiplierComponent(wiring.Component):
    """Decoded multiplier: ``core(m_a, m_b) << (e_a + e_b)``, twin of ``DecodedMultiplier``.

    Parameters
    ----------
    a_format, b_format : NumberFormat or str
        Number formats of the activation and the weight (sw objects or format spec strings).
    core : Multiplier or str
        Core multiplier (any family with a hardware twin) on the decoded mantissas.

    Members
    -------
    a : In(a_format.bits)
        Activation format code.
    b : In(b_format.bits)
        Weight format code.
    p : Out(signed(out_bits))
        Product, equal to ``config.mul_codes(a, b)``.
    other inputs of the core (e.g. ``mode``)
        Passed to the core unchanged.

    Raises
    ------
    ValueError
        When the mantissas do not fit the core's operands (checked by ``DecodedMultiplier``).
    """

    def __init__(self, *, a_format, b_format, core):
        fa, fb = _as_format(a_format), _as_format(b_format)
        if isinstance(core, str):
            core = multiplier(core)
        if not isinstance(core, Multiplier):
            raise TypeError(f"Expected a sw multiplier config or a spec string, not {core!r}")
        self._config = DecodedMultiplier(fa, fb, core)
        self._core = hw_mult.create(core)
        self._extra = _core_extra_inputs(self._core)
        members = {
            "a": In(fa.bits),
            "b": In(fb.bits),
            "p": Out(signed(self._config.out_bits)),
        }
        members.update(self._extra)
        super().__init__(members)

    @property
    def config(self) -> DecodedMultiplier:
        """The sw twin."""
        return self._config

    @property
    def latency(self) -> int:
        """Clock cycles from codes to product (the core's latency)."""
        return hw_mult.latency_of(self._core)

    @property
    def table_inputs(self) -> dict:
        return hw_mult.table_inputs_of(self._core)

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.dec_a = dec_a = decoder(cfg.a_format)
        m.submodules.dec_b = dec_b = decoder(cfg.b_format)
        m.submodules.core = core = self._core
        m.d.comb += [
            dec_a.code.eq(self.a),
            dec_b.code.eq(self.b),
            core.a.eq(mantissa_code(dec_a.m, cfg.core.a_format)),
            core.b.eq(mantissa_code(dec_b.m, cfg.core.b_format)),
        ]
        for name in self._extra:
            m.d.comb += getattr(core, name).eq(getattr(self, name))
        shift = Signal(range(cfg.a_format.e_max + cfg.b_format.e_max + 1))
        m.d.comb += shift.eq(dec_a.e + dec_b.e)
        # a pipelined core delays the shift amount by as many cycles
        for i in range(self.latency):
            delayed = Signal.like(shift, name=f"shift_d{i + 1}")
            m.d.sync += delayed.eq(shift)
            shift = delayed
        m.d.comb += self.p.eq(core.p << shift)
        return m

