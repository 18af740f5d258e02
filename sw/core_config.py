"""Configuration of the accelerator core: systolic array, scratchpads and host link.

One frozen :class:`CoreConfig` (nested :class:`ArrayConfig`, :class:`MemoryConfig`,
:class:`HostConfig`) drives the gateware (``hw/array.py``, ``hw/core.py``), the host-side
compiler, golden model and cycle model (``sw/compiler.py``, ``sw/core_ref.py``,
``sw/cyclemodel.py``) and the driver. ``to_json()`` is written beside every Verilog file and
bitstream; :attr:`CoreConfig.hash` (sha256 of the canonical JSON) is the value the core
identifies itself with. See ``docs/core.md`` for the design contract.

Row widths (bits) of the scratchpads follow from the array (see :meth:`CoreConfig.row_bits`):

========  =======================================================================
``wsp``   ``cols × b_bits`` (one weight row: element ``j`` = column ``j``)
``asp``   ``rows × a_bits`` (one activation row: element ``r`` = array row ``r``)
``acc``   ``cols × acc_bits`` (one output row: element ``j`` = column ``j``)
``qsp``   ``acc_bits + 32 + 6`` (bias, multiplier, shift of one output channel)
``imem``  64 (one instruction, :mod:`mixpe.sw.isa`)
========  =======================================================================

This module never imports Amaranth.

>>> cfg = CORE_PRESETS["tiny-2x2"]
>>> cfg.array.rows, cfg.array.cols, cfg.row_bits("asp")
(2, 2, 16)
>>> CoreConfig.from_json(cfg.to_json()) == cfg
True
>>> len(cfg.hash)
64
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .pe import DEFAULT as PE_DEFAULT
from .pe import PEConfig

__all__ = [
    "ArrayConfig",
    "MemoryConfig",
    "HostConfig",
    "CoreConfig",
    "CORE_PRESETS",
    "DEFAULT_CORE",
    "DATAFLOWS",
    "ARRAY_DIM_RANGE",
    "MAX_VARIANTS",
    "SCRATCHPAD_DEPTH_RANGE",
    "IMEM_DEPTH_RANGE",
    "MEMORIES",
    "QSP_MULT_BITS",
    "QSP_SHIFT_BITS",
]

#: Array dataflows: weight-stationary (rows = reduction dim K) or output-stationary (rows = M).
DATAFLOWS = ("ws", "os")
#: Inclusive range of ``rows`` and ``cols``.
ARRAY_DIM_RANGE = (1, 64)
#: At most this many extra multiplier variants (variant index fits 3 bits with the base one).
MAX_VARIANTS = 7
#: Inclusive depth range of the data scratchpads (``wsp``, ``asp``, ``acc``, ``qsp``):
#: their addresses are ``isa.ADDR_BITS`` = 12 bits wide in the instructions.
SCRATCHPAD_DEPTH_RANGE = (2, 4096)
#: Inclusive depth range of the instruction memory (no instruction holds an imem address).
IMEM_DEPTH_RANGE = (2, 65536)
#: Scratchpad names (the order is the ``mem`` field encoding of LOAD/STORE, see isa.Mem).
MEMORIES = ("wsp", "asp", "acc", "qsp")
#: Width of the requant multiplier stored in a qsp row (signed).
QSP_MULT_BITS = 32
#: Width of the requant shift stored in a qsp row (unsigned, value 0 … 62).
QSP_SHIFT_BITS = 6


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
    return value


def _variant_pe(pe: PEConfig, v) -> PEConfig:
    """The PE config of one ``ArrayConfig.variants`` entry: a plain multiplier spec, a
    decoded spec ``'<mult> a=<format> b=<format>'`` or a dict ``{"mult", "a_format",
    "b_format"}``."""
    if isinstance(v, dict):
        unknown = sorted(set(v) - {"mult", "a_format", "b_format"})
        if unknown or "mult" not in v:
            raise ValueError(f"a variant dict needs 'mult' and may have 'a_format', 'b_format'; "
                             f"got keys {sorted(v)}")
        mult, fa, fb = v["mult"], v.get("a_format"), v.get("b_format")
    elif isinstance(v, str):
        parts = v.split()
        if len(parts) == 1:
            mult, fa, fb = parts[0], None, None
        elif len(parts) == 3 and parts[1].startswith("a=") and parts[2].startswith("b="):
            mult, fa, fb = parts[0], parts[1][2:], parts[2][2:]
        else:
            raise ValueError(f"{v!r} is neither a multiplier spec nor '<mult spec> "
                             "a=<format spec> b=<format spec>'")
    else:
        raise ValueError(f"must be a multiplier spec string or a dict, not {v!r}")
    if fa is None and fb is None:
        return dataclasses.replace(pe, mult=mult)
    if pe.composable:
        raise ValueError(f"pe.mult {pe.mult} is composable (lane-packed integer operands); "
                         "allowed: variants without formats")
    return dataclasses.replace(pe, mult=mult, a_format=fa, b_format=fb)


def _variant_spec(p: PEConfig) -> str:
    """Canonical variant spec of a PE config: ``mult`` or ``'<mult> a=<format> b=<format>'``."""
    if p.a_format is None:
        return p.mult
    return f"{p.mult} a={p.a_format} b={p.b_format}"


def _from_dict(cls, d, what: str):
    if not isinstance(d, dict):
        raise ValueError(f"{what} must be a JSON object, not {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(unknown)}; allowed: "
                         f"{', '.join(sorted(names))}")
    return d


@dataclass(frozen=True)
class ArrayConfig:
    """The systolic array: ``rows × cols`` processing elements and their dataflow.

    Parameters
    ----------
    rows : int
        PE rows, in ``ARRAY_DIM_RANGE``. WS: the reduction dimension K of one weight tile
        (row ``r`` holds weight ``k = r``); OS: the M dimension.
    cols : int
        PE columns, in ``ARRAY_DIM_RANGE``: the N dimension (output channels) in both dataflows.
    pe : PEConfig
        Every PE's configuration (multiplier, formats, accumulator width/overflow, pipeline).
        A ``dict`` (as in JSON) is accepted and converted.
    dataflow : str
        ``"ws"`` (weight-stationary, the compiler's primary target) or ``"os"``.
    variants : tuple of str
        Extra variants each column can select at run time (per weight tile, the ``sel`` of
        PRELOAD); variant 0 is ``pe``, variant ``i + 1`` is ``variants[i]``. At most
        ``MAX_VARIANTS``. An entry is either a plain multiplier spec, which replaces the
        (core) multiplier and must keep ``pe``'s operand port widths and precision modes, or
        a variant with its own operand formats, ``'<mult spec> a=<format spec> b=<format
        spec>'`` (a dict ``{"mult", "a_format", "b_format"}`` is accepted; stored canonical
        as that string), e.g. int8 activations × flint4 weights. Format variants may have
        other code widths: the ports are as wide as the widest code and a variant reads the
        low bits of its own width (:attr:`array_pe`, :meth:`variant_code_bits`,
        :meth:`variant_index`).

    Examples
    --------
    >>> arr = ArrayConfig(rows=4, cols=4, variants=("roup:p=1,r=4",))
    >>> arr.sel_bits, arr.a_bits, arr.b_bits, arr.acc_bits
    (1, 8, 8, 32)
    >>> [pe.mult for pe in arr.pe_configs]
    ['exact', 'roup:p=1,r=4']
    >>> ArrayConfig(rows=0, cols=4)
    Traceback (most recent call last):
    ...
    ValueError: rows must be an integer in [1, 64], not 0
    """

    rows: int = 4
    cols: int = 4
    pe: PEConfig = PE_DEFAULT
    dataflow: str = "ws"
    variants: tuple = ()

    def __post_init__(self):
        _check_int("rows", self.rows, *ARRAY_DIM_RANGE)
        _check_int("cols", self.cols, *ARRAY_DIM_RANGE)
        pe = self.pe
        if isinstance(pe, dict):
            try:
                pe = PEConfig(**_from_dict(PEConfig, pe, "pe"))
            except (TypeError, ValueError) as e:
                raise ValueError(f"pe: {e}") from None
            object.__setattr__(self, "pe", pe)
        if not isinstance(pe, PEConfig):
            raise ValueError(f"pe must be a PEConfig, not {type(pe).__name__}")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, "
                             f"not {self.dataflow!r}")
        variants = self.variants
        if isinstance(variants, (str, dict)) or not isinstance(variants, (tuple, list)):
            raise ValueError(f"variants must be a tuple of multiplier spec strings, "
                             f"not {variants!r}")
        if len(variants) > MAX_VARIANTS:
            raise ValueError(f"variants must hold at most {MAX_VARIANTS} specs, "
                             f"got {len(variants)}")
        canon = []
        for i, v in enumerate(variants):
            try:
                vpe = _variant_pe(pe, v)
            except ValueError as e:
                raise ValueError(f"variants[{i}]: {e}") from None
            plain = (vpe.a_format, vpe.b_format) == (pe.a_format, pe.b_format)
            if plain:
                # a plain multiplier variant replaces the (core) multiplier: same ports
                if vpe.port_bits != pe.port_bits or vpe.modes != pe.modes:
                    raise ValueError(
                        f"variants[{i}]: {vpe.mult} has operand ports {vpe.port_bits} and modes "
                        f"{vpe.modes}; allowed: the same as pe.mult {pe.mult} "
                        f"({pe.port_bits}, modes {pe.modes}), or a variant with its own "
                        "formats ('<mult> a=<format> b=<format>')")
            canon.append(vpe.mult if plain else _variant_spec(vpe))
        object.__setattr__(self, "variants", tuple(canon))
        try:
            self.array_pe  # noqa: B018  (the folded unit must build: member count, widths)
        except ValueError as e:
            raise ValueError(f"variants: {e}") from None

    # -- derived -------------------------------------------------------------------------
    @property
    def a_bits(self) -> int:
        """Width of one activation code on the ``in_a`` port (lane-packed when composable;
        the widest variant code with format variants)."""
        return self.array_pe.port_bits[0]

    @property
    def b_bits(self) -> int:
        """Width of one weight code on the ``in_b`` port (lane-packed when composable; the
        widest variant code with format variants)."""
        return self.array_pe.port_bits[1]

    @property
    def has_format_variants(self) -> bool:
        """Whether some variant carries its own operand formats (a code-port array)."""
        base = (self.pe.a_format, self.pe.b_format)
        return any((p.a_format, p.b_format) != base for p in self.pe_configs[1:])

    @cached_property
    def array_pe(self) -> PEConfig:
        """The PE every array position instantiates: ``pe`` without variants; else the
        variants folded into its multiplier (``variants:of=...``, :mod:`mixpe.sw.mult.variants`):
        plain variants replace the core behind ``pe``'s decoders; with format variants every
        variant becomes a member with its own decoders (decoded specs for the variants with
        formats) behind ports as wide as the widest code (the code-width rule: a narrower
        variant reads the low bits of the port; hosts write its codes zero-extended).

        >>> arr = ArrayConfig(variants=("exact:nb=4 a=int:bits=8,signed=1 b=int:signed=1",))
        >>> arr.array_pe.mult
        'variants:of=exact|exact:nb=4 a=int:bits=8;signed=1 b=int:signed=1'
        >>> arr.b_bits, arr.variant_code_bits(1)
        (8, (8, 4))
        """
        if not self.variants:
            return self.pe
        from .mult.variants import variants_spec

        if not self.has_format_variants:
            return dataclasses.replace(self.pe, mult=variants_spec(self.pe.mult, self.variants))
        members = [_variant_spec(p) for p in self.pe_configs]
        return dataclasses.replace(self.pe, mult=variants_spec(members[0], members[1:]),
                                   a_format=None, b_format=None)

    def variant_code_bits(self, index: int) -> tuple[int, int]:
        """``(a, b)`` code widths of variant ``index`` (the low bits of the ports it reads)."""
        _check_int("index", index, 0, self.n_variants - 1)
        return self.pe_configs[index].port_bits

    def variant_index(self, *, mult, a_format=None, b_format=None) -> int:
        """Index of the variant with multiplier ``mult`` and operand formats ``a_format``/
        ``b_format`` (``None``: no formats), as ``variant_map`` takes it. Specs are compared
        canonically; a plain variant of a PE with formats has the PE's formats.

        >>> arr = CORE_PRESETS["ulx3s-8x8-mixed"].array
        >>> arr.variant_index(mult="roup:n=8,p=1,r=4")
        3
        >>> arr.variant_index(mult="exact", a_format="int:bits=8,signed=1",
        ...                   b_format="flint:bits=4,signed=1")
        1
        >>> arr.variant_index(mult="exact:n=4")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: mult='exact:n=4', ... names no variant; available: 0: exact, 1: exact a=int...
        """
        try:
            want = PEConfig(mult=mult, a_format=a_format, b_format=b_format)
        except ValueError as e:
            raise ValueError(f"variant_index: {e}") from None
        key = (want.mult, want.a_format, want.b_format)
        for i, p in enumerate(self.pe_configs):
            if (p.mult, p.a_format, p.b_format) == key:
                return i
        avail = ", ".join(f"{i}: {_variant_spec(p)}" for i, p in enumerate(self.pe_configs))
        raise ValueError(f"mult={mult!r}, a_format={a_format!r}, b_format={b_format!r} names no "
                         f"variant; available: {avail}")

    @property
    def acc_bits(self) -> int:
        """Accumulator width (two's complement), the PE's ``acc_bits``."""
        return self.pe.acc_bits

    @property
    def n_variants(self) -> int:
        """Number of selectable multipliers, ``1 + len(variants)``."""
        return 1 + len(self.variants)

    @property
    def sel_bits(self) -> int:
        """Width of a column's variant select register (0 without variants)."""
        return (self.n_variants - 1).bit_length()

    @property
    def pe_configs(self) -> tuple[PEConfig, ...]:
        """The PE configuration of every variant index (index 0 = ``pe``): a plain variant
        replaces ``pe.mult``, a variant with formats also ``a_format``/``b_format``."""
        return (self.pe,) + tuple(_variant_pe(self.pe, v) for v in self.variants)

    @property
    def modes(self) -> tuple[int, ...]:
        """Precision ``q`` of each CONFIG ``mode`` value (``()`` without a composable PE)."""
        return self.pe.modes

    def lanes(self, mode: int | None) -> int:
        """Operand values packed in one port word under ``mode`` (1 when not composable).

        >>> ArrayConfig(pe=PEConfig(mult="axbxp:mode=composable")).lanes(0)
        16
        """
        if not self.pe.composable:
            if mode not in (None, 0):
                raise ValueError(f"mode: {self.pe.mult} has no precision modes; allowed: 0")
            return 1
        m = len(self.modes) - 1 if mode is None else mode
        _check_int("mode", m, 0, len(self.modes) - 1)
        return self.pe.core.lanes(self.modes[m])

    def to_dict(self) -> dict:
        return {"rows": self.rows, "cols": self.cols, "pe": self.pe.to_dict(),
                "dataflow": self.dataflow, "variants": list(self.variants)}

    @classmethod
    def from_dict(cls, d: dict) -> "ArrayConfig":
        d = dict(_from_dict(cls, d, "array"))
        if "variants" in d and isinstance(d["variants"], list):
            d["variants"] = tuple(d["variants"])
        return cls(**d)


@dataclass(frozen=True)
class MemoryConfig:
    """Depths (rows) of the scratchpads and the instruction memory.

    Parameters
    ----------
    wsp_depth, asp_depth, acc_depth, qsp_depth : int
        Rows of the weight, activation, accumulator and requant-parameter scratchpads, in
        ``SCRATCHPAD_DEPTH_RANGE``. The compiler splits each into two halves (ping-pong
        double buffering) where it double-buffers.
    imem_depth : int
        Instructions (64-bit words) the instruction memory holds, in ``IMEM_DEPTH_RANGE``.

    >>> MemoryConfig(wsp_depth=1)
    Traceback (most recent call last):
    ...
    ValueError: wsp_depth must be an integer in [2, 4096], not 1
    """

    wsp_depth: int = 256
    asp_depth: int = 1024
    acc_depth: int = 256
    imem_depth: int = 1024
    qsp_depth: int = 64

    def __post_init__(self):
        for name in ("wsp_depth", "asp_depth", "acc_depth", "qsp_depth"):
            _check_int(name, getattr(self, name), *SCRATCHPAD_DEPTH_RANGE)
        _check_int("imem_depth", self.imem_depth, *IMEM_DEPTH_RANGE)

    def depth(self, mem: str) -> int:
        """Depth of a memory by name (``"wsp"``, ``"asp"``, ``"acc"``, ``"qsp"``, ``"imem"``)."""
        if mem not in MEMORIES + ("imem",):
            raise ValueError(f"mem must be one of {', '.join(MEMORIES + ('imem',))}, "
                             f"not {mem!r}")
        return getattr(self, f"{mem}_depth")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryConfig":
        return cls(**_from_dict(cls, d, "memory"))


@dataclass(frozen=True)
class HostConfig:
    """The host link (UART on the boards) and the core clock.

    Parameters
    ----------
    baud : int
        UART bit rate, ``>= 300``.
    clk_hz : int
        Core clock frequency in Hz, ``>= 1 MHz``; ``clk_hz // baud`` clocks per bit must be
        at least 4.
    sim_clocks_per_bit : int
        Clocks per UART bit in simulation (a fast link for tests), in ``[4, 65536]``.

    >>> HostConfig(baud=115200, clk_hz=12_000_000).clocks_per_bit
    104
    """

    baud: int = 115200
    clk_hz: int = 12_000_000
    sim_clocks_per_bit: int = 4

    def __post_init__(self):
        _check_int("baud", self.baud, 300, 100_000_000)
        _check_int("clk_hz", self.clk_hz, 1_000_000, 2_000_000_000)
        _check_int("sim_clocks_per_bit", self.sim_clocks_per_bit, 4, 65536)
        if self.clk_hz // self.baud < 4:
            raise ValueError(f"baud must be at most clk_hz/4 = {self.clk_hz // 4}, "
                             f"not {self.baud}")

    @property
    def clocks_per_bit(self) -> int:
        """Clocks per UART bit on the board, ``clk_hz // baud``."""
        return self.clk_hz // self.baud

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "HostConfig":
        return cls(**_from_dict(cls, d, "host"))


@dataclass(frozen=True)
class CoreConfig:
    """The whole core: array, memories, host link.

    ``dict`` values for the three parts are accepted (JSON) and converted. Row widths are
    checked against the ISA: an ``acc`` row must hold whole values, a qsp row holds
    ``acc_bits + 38`` bits.

    >>> cfg = CoreConfig()
    >>> cfg.row_bits("acc"), cfg.row_words("acc")
    (128, 4)
    >>> CoreConfig(array="4x4")
    Traceback (most recent call last):
    ...
    ValueError: array must be an ArrayConfig, not str
    """

    array: ArrayConfig = field(default_factory=ArrayConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    host: HostConfig = field(default_factory=HostConfig)

    def __post_init__(self):
        for name, cls in (("array", ArrayConfig), ("memory", MemoryConfig),
                          ("host", HostConfig)):
            v = getattr(self, name)
            if isinstance(v, dict):
                try:
                    v = cls.from_dict(v)
                except TypeError as e:
                    raise ValueError(f"{name}: {e}") from None
                object.__setattr__(self, name, v)
            if not isinstance(v, cls):
                raise ValueError(f"{name} must be an {cls.__name__}, not {type(v).__name__}")

    # -- derived -------------------------------------------------------------------------
    def row_bits(self, mem: str) -> int:
        """Bits of one row of a memory (see the module table)."""
        a = self.array
        bits = {
            "wsp": a.cols * a.b_bits,
            "asp": a.rows * a.a_bits,
            "acc": a.cols * a.acc_bits,
            "qsp": a.acc_bits + QSP_MULT_BITS + QSP_SHIFT_BITS,
            "imem": 64,
        }
        if mem not in bits:
            raise ValueError(f"mem must be one of {', '.join(bits)}, not {mem!r}")
        return bits[mem]

    def row_words(self, mem: str) -> int:
        """32-bit stream words per row of a memory (``ceil(row_bits / 32)``)."""
        return -(-self.row_bits(mem) // 32)

    def memory_bits(self) -> dict[str, int]:
        """Total bits of every memory (``depth × row_bits``), for fitting a device."""
        return {m: self.memory.depth(m) * self.row_bits(m) for m in MEMORIES + ("imem",)}

    def to_dict(self) -> dict[str, Any]:
        return {"array": self.array.to_dict(), "memory": self.memory.to_dict(),
                "host": self.host.to_dict()}

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys, no spaces); ``hash`` is taken over it."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> "CoreConfig":
        d = _from_dict(cls, d, "core config")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "CoreConfig":
        """Inverse of :meth:`to_json`; unknown keys raise ``ValueError``."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"core config JSON: {e}") from None
        return cls.from_dict(d)

    @property
    def hash(self) -> str:
        """sha256 (hex) of :meth:`to_json`: the value the core identifies itself with."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def hash32(self) -> int:
        """The first 32 bits of :attr:`hash` as an integer (an identify register value)."""
        return int(self.hash[:8], 16)


#: The default core (exact int8 4×4 WS array, 32-bit accumulators, small memories).
DEFAULT_CORE = CoreConfig()

_TINY = dataclasses.replace(
    DEFAULT_CORE,
    array=ArrayConfig(rows=2, cols=2, pe=dataclasses.replace(PE_DEFAULT, acc_bits=16)),
    memory=MemoryConfig(wsp_depth=32, asp_depth=64, acc_depth=32, imem_depth=256, qsp_depth=16),
)

#: Named core presets (``dataclasses.replace`` of :data:`DEFAULT_CORE`).
#:
#: * ``tiny-2x2``: 2×2 int8, 16-bit accumulators, tiny memories (fast simulation tests).
#: * ``ice40-4x4``: 4×4 int8 exact, 20-bit saturating accumulators; memories sized for the
#:   iCE40UP5K's 30 EBRs of 4 Kbit (wsp 8 Kbit, asp 16 Kbit, acc 20 Kbit, qsp 3.6 Kbit,
#:   imem 32 Kbit), 12 MHz clock.
#: * ``ulx3s-8x8``: 8×8 int8 exact, 32-bit saturating accumulators, one PE pipeline stage
#:   for 100 MHz on the ECP5-85F (208 EBRs of 18 Kbit; ~0.9 Mbit of memories used).
#: * ``ulx3s-8x8-mixed``: ``ulx3s-8x8`` with per-column run-time variants (the PRELOAD select,
#:   ``variant_map`` of the compiler, :meth:`ArrayConfig.variant_index`): 0 = int8 × int8
#:   exact, 1 = int8 × flint4 weights (ANT, signed: decoded to a mantissa in [-3, 3] and a
#:   shift), 2 = int8 × int4 weights, 3 = int8 × int8 ROUP ``p=1, r=4`` (approximate). The
#:   4-bit weight codes sit zero-extended in the 8-bit weight port (code-width rule).
#:   Variants 0–2 name the same core (``exact``), so each PE builds one 8×8 multiplier for
#:   them (operands multiplexed before it, ``hw/mult/variants.py``) plus the ROUP unit.
CORE_PRESETS: dict[str, CoreConfig] = {
    "tiny-2x2": _TINY,
    "ice40-4x4": dataclasses.replace(
        DEFAULT_CORE,
        array=ArrayConfig(rows=4, cols=4, pe=dataclasses.replace(
            PE_DEFAULT, acc_bits=20, overflow="saturate")),
        memory=MemoryConfig(wsp_depth=256, asp_depth=512, acc_depth=256, imem_depth=512,
                            qsp_depth=64),
        host=HostConfig(baud=115200, clk_hz=12_000_000),
    ),
    "ulx3s-8x8": dataclasses.replace(
        DEFAULT_CORE,
        array=ArrayConfig(rows=8, cols=8, pe=dataclasses.replace(
            PE_DEFAULT, acc_bits=32, overflow="saturate", pipeline=1)),
        memory=MemoryConfig(wsp_depth=1024, asp_depth=4096, acc_depth=1024, imem_depth=4096,
                            qsp_depth=256),
        host=HostConfig(baud=115200, clk_hz=100_000_000),
    ),
}
CORE_PRESETS["ulx3s-8x8-mixed"] = dataclasses.replace(
    CORE_PRESETS["ulx3s-8x8"],
    array=dataclasses.replace(CORE_PRESETS["ulx3s-8x8"].array, variants=(
        "exact a=int:bits=8,signed=1 b=flint:bits=4,signed=1",
        "exact a=int:bits=8,signed=1 b=int:bits=4,signed=1",
        "roup:p=1,r=4",
    )),
)
