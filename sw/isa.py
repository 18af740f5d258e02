"""The accelerator core's instruction set, stream word formats and counter bank.

This module is the single source of truth for bit positions (``docs/core.md``): the tables
below are plain Python data, ``hw/core.py`` builds its ``data.StructLayout`` from them
(:func:`struct_fields`), and :func:`encode`/:func:`decode` pack and unpack on the host.

Instruction word (64 bits)
--------------------------
The opcode sits in bits ``[63:59]`` (:data:`OPCODE_LSB`, :data:`OPCODE_BITS`). The fields of
an opcode (:data:`FIELDS`) are packed from bit 0 upwards in the order listed (the first field
in the least significant bits, as ``data.StructLayout`` does); bits between the last field and
bit 59 are reserved and must be zero. Signed fields are two's complement.

======== ==== ==========================================================================
opcode   code fields (width; ``s`` = signed)
======== ==== ==========================================================================
NOP      0    —
CONFIG   1    mode 3, relu 1, zp 16s, lo 16s, hi 16s, acc_overwrite_default 1
LOAD     2    mem 3, addr 12, rows 13
STORE    3    mem 3, addr 12, rows 13
PRELOAD  4    wsp_addr 12, k_rows 7, sel_addr 12, sel_en 1
COMPUTE  5    asp_addr 12, acc_addr 12, m_outer 8, m_inner 8, a_stride_outer 12,
              a_stride_inner 3, acc_stride 2, accumulate 1, swap 1
REQUANT  6    acc_addr 12, asp_addr 12, rows 13, qsp_addr 12
FENCE    7    —
END      8    —
======== ==== ==========================================================================

Semantics (WS dataflow; every instruction behaves as if all earlier ones had completed)
----------------------------------------------------------------------------------------
``CONFIG``
    Sets the run-time registers: ``mode`` (precision index of a composable PE, the PEs'
    ``in_mode``; must be 0 otherwise; an index past the last selects full precision),
    and the requant output stage ``relu``, ``zp``, ``lo``, ``hi`` (see
    :func:`mixpe.sw.requant.requantize`). ``acc_overwrite_default = 0`` makes every COMPUTE
    accumulate (its effective flag is ``accumulate | ~acc_overwrite_default``); the compiler
    sets it to 1 and uses the per-instruction flag. Reset values: all zero. Programs start
    with a CONFIG.
``LOAD mem addr rows``
    Takes ``rows × row_words(mem)`` words from ``i_stream`` (:func:`pack_rows`) and writes
    rows ``addr … addr+rows-1`` of ``mem`` (wsp, asp, acc or qsp; not cnt).
``STORE mem addr rows``
    Sends rows ``addr … addr+rows-1`` of ``mem`` on ``o_stream`` (:func:`pack_rows`); with
    ``mem = cnt`` counters ``addr … addr+rows-1`` of the counter bank, two words each
    (:data:`COUNTERS`, :func:`unpack_counters`).
``PRELOAD wsp_addr k_rows sel_addr sel_en``
    Fills the *shadow* weight set: PE ``(r, j)`` gets element ``j`` of ``wsp[wsp_addr + r]``
    for ``r < k_rows``. Rows ``r >= k_rows`` are disabled for the next tile: their PEs add
    nothing (they pass the partial sum on unchanged, so no padding product ever enters a
    sum). Column ``j``'s variant select becomes the low ``sel_bits`` bits of element ``j`` of
    ``wsp[sel_addr]`` when ``sel_en``, else 0. All of it becomes active at the next
    ``swap``. The compiler always stores whole ``rows``-row tiles with the zero-value code in
    the rows ``>= k_rows`` (and in the unused elements of asp rows), so a controller that
    simply feeds all ``rows`` weight rows computes the same sums whenever
    ``mul(x, 0) = 0`` (true for every shipped multiplier).
``COMPUTE asp_addr acc_addr m_outer m_inner a_stride_outer a_stride_inner acc_stride …``
    If ``swap``, the shadow set (weights, row enables, selects) becomes active first. Then for
    ``o < m_outer``, ``i < m_inner`` (``t = o·m_inner + i``, in this order) the activation row
    ``asp[asp_addr + o·a_stride_outer + i·a_stride_inner]`` streams through the array and
    output row ``acc[acc_addr + t·acc_stride]`` receives, per column ``j``::

        s = acc[row][j] if accumulate else 0
        for r in 0 … k_rows-1:  s = overflow(s + mul_sel[j](a_row[r], W[r][j]))   # acc_bits

    i.e. the stored value enters at the top of the column (``in_d``) and saturation/wrap is
    applied after every addition in k order (``sw/emulate.py``). Any overflow sets the
    sticky ``overflow`` counter.
``REQUANT acc_addr asp_addr rows qsp_addr``
    For ``t < rows`` and column ``j < min(array rows, cols)``: ``asp[asp_addr + t]`` element
    ``j`` = ``requantize(acc[acc_addr + t][j], *qsp[qsp_addr + j], zp, relu, lo, hi)`` as an
    ``a_bits``-wide two's-complement code; elements ``j >= cols`` (when rows > cols) are 0.
``FENCE``
    Waits until every earlier instruction has completed (array drained, acc written,
    streams idle).
``END``
    A FENCE, then stops and raises ``done``.

Execution model. The program's meaning is sequential (every instruction behaves as if all
earlier ones had completed); the controller overlaps instructions where that cannot be
observed. ``hw/core.py`` dispatches in order to four units (LOAD → LoadUnit, STORE →
StoreUnit, PRELOAD → PreloadUnit, COMPUTE/REQUANT → ExecuteUnit) with the dispatch rules and
interlocks documented there; ``sw/cyclemodel.py`` models them. What the compiler guarantees,
so that those simple rules suffice:

* a LOAD issued while earlier array-side instructions may still run never writes rows they
  still read or write (ping-pong halves: asp rows a running COMPUTE streams, wsp rows a
  running PRELOAD reads, acc/asp/qsp rows of an unfenced COMPUTE/REQUANT);
* PRELOAD, COMPUTE and REQUANT only read rows written by earlier LOADs (the controller waits
  for earlier LOADs before dispatching them);
* a STORE of acc/asp rows written by the array, and every REQUANT, comes after a FENCE;
  no array-side instruction writes rows that an earlier, unfenced STORE still reads;
* every COMPUTE with ``swap`` follows its own PRELOAD, and a PRELOAD is always consumed by a
  swap before the next PRELOAD;
* an accumulating COMPUTE may read acc rows the previous COMPUTE is still writing (short M):
  that hazard is the controller's (an interlock);
* the scratchpads keep their contents across ``start`` (``start`` resets the CONFIG
  registers and counters): a long program runs as several segments
  (``Program.segments``), each beginning with the CONFIG and ending with END, cut only before
  a PRELOAD or after a FENCE.

Stream words (32 bits)
----------------------
A scratchpad row is a bit vector whose element ``e`` occupies bits ``[e·w, e·w + w)``
(elements as two's-complement or unsigned codes of width ``w``), cut into
``ceil(row_bits / 32)`` words, least significant word first, padded with zeros:

====  ===============================  ==================================================
mem   elements (``w``)                 values in :func:`pack_rows` / :func:`unpack_rows`
====  ===============================  ==================================================
wsp   ``cols`` × ``b_bits``            b-codes (unsigned)
asp   ``rows`` × ``a_bits``            a-codes (unsigned)
acc   ``cols`` × ``acc_bits``          signed accumulator values
qsp   bias ``acc_bits``, mult 32,      ``[bias, mult, shift]``: bias and mult signed
      shift 6
====  ===============================  ==================================================

>>> i = Instr(Opcode.LOAD, mem=Mem.ASP, addr=16, rows=4)
>>> str(i)
'LOAD mem=asp addr=16 rows=4'
>>> hex(encode(i))
'0x1000000000020081'
>>> decode(encode(i)) == i
True
>>> assemble("CONFIG zp=-3 hi=127 lo=-128 acc_overwrite_default=1") == decode(encode(
...     Instr(Opcode.CONFIG, zp=-3, lo=-128, hi=127, acc_overwrite_default=1)))
True
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import torch

__all__ = [
    "WORD_BITS",
    "OPCODE_BITS",
    "OPCODE_LSB",
    "PAYLOAD_BITS",
    "ADDR_BITS",
    "STREAM_WORD_BITS",
    "Opcode",
    "Mem",
    "Field",
    "FIELDS",
    "field_offsets",
    "struct_fields",
    "Instr",
    "encode",
    "decode",
    "assemble",
    "disassemble",
    "COUNTERS",
    "COUNTER_WORDS",
    "counter_index",
    "unpack_counters",
    "pack_counters",
    "row_elements",
    "pack_rows",
    "unpack_rows",
]

#: Instruction width.
WORD_BITS = 64
#: Opcode width and position (bits ``[63:59]``).
OPCODE_BITS = 5
OPCODE_LSB = WORD_BITS - OPCODE_BITS
#: Bits available to the fields of one opcode.
PAYLOAD_BITS = OPCODE_LSB
#: Width of every scratchpad address field (depths up to 4096 rows).
ADDR_BITS = 12
#: Width of an ``i_stream``/``o_stream`` word.
STREAM_WORD_BITS = 32


class Opcode(enum.IntEnum):
    """Instruction opcodes (bits ``[63:59]``)."""

    NOP = 0
    CONFIG = 1
    LOAD = 2
    STORE = 3
    PRELOAD = 4
    COMPUTE = 5
    REQUANT = 6
    FENCE = 7
    END = 8


class Mem(enum.IntEnum):
    """Values of the ``mem`` field of LOAD/STORE (``CNT``: the counter bank, STORE only)."""

    WSP = 0
    ASP = 1
    ACC = 2
    QSP = 3
    CNT = 4


class Field(NamedTuple):
    """One instruction field: ``name``, ``width`` in bits, ``signed`` (two's complement)."""

    name: str
    width: int
    signed: bool = False
    doc: str = ""


#: Per-opcode field tables, least significant field first.
FIELDS: dict[Opcode, tuple[Field, ...]] = {
    Opcode.NOP: (),
    Opcode.CONFIG: (
        Field("mode", 3, doc="precision index of a composable PE (0 otherwise)"),
        Field("relu", 1, doc="requant: ReLU before the zero point"),
        Field("zp", 16, True, doc="requant: output zero point"),
        Field("lo", 16, True, doc="requant: clamp low bound (output code range)"),
        Field("hi", 16, True, doc="requant: clamp high bound"),
        Field("acc_overwrite_default", 1, doc="0: every COMPUTE accumulates"),
    ),
    Opcode.LOAD: (
        Field("mem", 3, doc="Mem: wsp, asp, acc, qsp"),
        Field("addr", ADDR_BITS, doc="first row"),
        Field("rows", 13, doc="number of rows"),
    ),
    Opcode.STORE: (
        Field("mem", 3, doc="Mem: wsp, asp, acc, qsp, cnt"),
        Field("addr", ADDR_BITS, doc="first row (counter index for cnt)"),
        Field("rows", 13, doc="number of rows (counters for cnt)"),
    ),
    Opcode.PRELOAD: (
        Field("wsp_addr", ADDR_BITS, doc="wsp row of weight row 0"),
        Field("k_rows", 7, doc="weight rows used (rows >= k_rows add nothing)"),
        Field("sel_addr", ADDR_BITS, doc="wsp row holding the per-column variant selects"),
        Field("sel_en", 1, doc="1: load the selects from sel_addr, 0: all columns variant 0"),
    ),
    Opcode.COMPUTE: (
        Field("asp_addr", ADDR_BITS, doc="asp row of output row 0"),
        Field("acc_addr", ADDR_BITS, doc="acc row of output row 0"),
        Field("m_outer", 8, doc="outer loop count"),
        Field("m_inner", 8, doc="inner loop count"),
        Field("a_stride_outer", ADDR_BITS, doc="asp address step of the outer loop"),
        Field("a_stride_inner", 3, doc="asp address step of the inner loop"),
        Field("acc_stride", 2, doc="acc address step per output row"),
        Field("accumulate", 1, doc="1: start from the stored acc value, 0: from 0"),
        Field("swap", 1, doc="1: activate the preloaded shadow weights first"),
    ),
    Opcode.REQUANT: (
        Field("acc_addr", ADDR_BITS, doc="first acc row"),
        Field("asp_addr", ADDR_BITS, doc="first asp row written"),
        Field("rows", 13, doc="number of rows"),
        Field("qsp_addr", ADDR_BITS, doc="qsp row of column 0 (column j uses qsp_addr + j)"),
    ),
    Opcode.FENCE: (),
    Opcode.END: (),
}

for _op, _fields in FIELDS.items():  # the table must fit the payload
    assert sum(f.width for f in _fields) <= PAYLOAD_BITS, _op


def field_offsets(op: Opcode) -> dict[str, tuple[int, int]]:
    """``{name: (lsb, width)}`` of the fields of ``op`` in the 64-bit word.

    >>> field_offsets(Opcode.LOAD)
    {'mem': (0, 3), 'addr': (3, 12), 'rows': (15, 13)}
    """
    out, lsb = {}, 0
    for f in FIELDS[Opcode(op)]:
        out[f.name] = (lsb, f.width)
        lsb += f.width
    return out


def struct_fields(op: Opcode) -> list[tuple[str, int, bool]]:
    """``[(name, width, signed), ...]`` of ``op``'s payload, LSB first, padded to
    :data:`PAYLOAD_BITS` with a ``"_reserved"`` field: what ``hw/core.py`` turns into
    ``data.StructLayout({name: signed(w) if s else unsigned(w)})``.

    >>> struct_fields(Opcode.FENCE)
    [('_reserved', 59, False)]
    """
    out = [(f.name, f.width, f.signed) for f in FIELDS[Opcode(op)]]
    used = sum(f.width for f in FIELDS[Opcode(op)])
    if used < PAYLOAD_BITS:
        out.append(("_reserved", PAYLOAD_BITS - used, False))
    return out


def _field_range(f: Field) -> tuple[int, int]:
    if f.signed:
        return -(1 << (f.width - 1)), (1 << (f.width - 1)) - 1
    return 0, (1 << f.width) - 1


class Instr:
    """One instruction: an opcode and its field values (missing fields are 0).

    Immutable; fields read as attributes. Raises ``ValueError`` naming the field and its
    range for out-of-range values, and for unknown fields.

    >>> Instr(Opcode.COMPUTE, m_inner=300)
    Traceback (most recent call last):
    ...
    ValueError: COMPUTE: m_inner=300 is out of range; allowed: m_inner in [0, 255]
    >>> Instr(Opcode.PRELOAD, wsp_addr=4, k_rows=2).k_rows
    2
    """

    __slots__ = ("_op", "_values")

    def __init__(self, op, **fields):
        try:
            op = Opcode(op)
        except ValueError:
            raise ValueError(f"op must be an Opcode ({', '.join(o.name for o in Opcode)}), "
                             f"not {op!r}") from None
        table = FIELDS[op]
        names = {f.name for f in table}
        unknown = sorted(set(fields) - names)
        if unknown:
            allowed = ", ".join(f.name for f in table) or "none"
            raise ValueError(f"{op.name}: unknown field(s) {', '.join(unknown)}; allowed: "
                             f"{allowed}")
        values = []
        for f in table:
            v = fields.get(f.name, 0)
            if isinstance(v, enum.IntEnum):
                v = int(v)
            if isinstance(v, bool):
                v = int(v)
            lo, hi = _field_range(f)
            if not isinstance(v, int) or not lo <= v <= hi:
                raise ValueError(f"{op.name}: {f.name}={v!r} is out of range; allowed: "
                                 f"{f.name} in [{lo}, {hi}]")
            values.append(v)
        if op in (Opcode.LOAD, Opcode.STORE):
            allowed_mem = (Mem.WSP, Mem.ASP, Mem.ACC, Mem.QSP) + (
                (Mem.CNT,) if op == Opcode.STORE else ())
            if values[0] not in [int(m) for m in allowed_mem]:
                raise ValueError(f"{op.name}: mem={values[0]!r} is out of range; allowed: mem in "
                                 f"{{{', '.join(m.name.lower() for m in allowed_mem)}}}")
        object.__setattr__(self, "_op", op)
        object.__setattr__(self, "_values", tuple(values))

    def __setattr__(self, name, value):
        raise AttributeError("Instr is immutable")

    @property
    def op(self) -> Opcode:
        return self._op

    @property
    def fields(self) -> dict[str, int]:
        """Field values by name (table order)."""
        return {f.name: v for f, v in zip(FIELDS[self._op], self._values)}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        for f, v in zip(FIELDS[self._op], self._values):
            if f.name == name:
                return v
        raise AttributeError(f"{self._op.name} has no field {name!r}")

    def replace(self, **changes) -> "Instr":
        """A copy with some fields changed."""
        return Instr(self._op, **{**self.fields, **changes})

    def __eq__(self, other):
        return isinstance(other, Instr) and (self._op, self._values) == (other._op,
                                                                         other._values)

    def __hash__(self):
        return hash((self._op, self._values))

    def __str__(self):
        parts = [self._op.name]
        for f, v in zip(FIELDS[self._op], self._values):
            if f.name == "mem":
                parts.append(f"mem={Mem(v).name.lower()}")
            else:
                parts.append(f"{f.name}={v}")
        return " ".join(parts)

    def __repr__(self):
        return f"Instr({str(self)!r})"


def encode(instr: Instr) -> int:
    """The 64-bit word of an instruction (an unsigned ``int``)."""
    if not isinstance(instr, Instr):
        raise TypeError(f"instr must be an Instr, not {type(instr).__name__}")
    word = int(instr.op) << OPCODE_LSB
    lsb = 0
    for f, v in zip(FIELDS[instr.op], instr._values):
        word |= (v & ((1 << f.width) - 1)) << lsb
        lsb += f.width
    return word


def decode(word: int) -> Instr:
    """The instruction of a 64-bit word; ``ValueError`` for an unknown opcode, non-zero
    reserved bits or out-of-range fields (e.g. a bad ``mem``)."""
    if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word < 1 << WORD_BITS:
        raise ValueError(f"word must be an integer in [0, 2**64), not {word!r}")
    code = word >> OPCODE_LSB
    try:
        op = Opcode(code)
    except ValueError:
        raise ValueError(f"word {word:#018x}: unknown opcode {code}") from None
    values, lsb = {}, 0
    for f in FIELDS[op]:
        v = (word >> lsb) & ((1 << f.width) - 1)
        if f.signed and v >> (f.width - 1):
            v -= 1 << f.width
        values[f.name] = v
        lsb += f.width
    if (word & ((1 << OPCODE_LSB) - 1)) >> lsb:
        raise ValueError(f"word {word:#018x}: {op.name} has non-zero reserved bits "
                         f"[{OPCODE_LSB - 1}:{lsb}]")
    return Instr(op, **values)


def assemble(text: str) -> Instr:
    """Parse the text form (``str(instr)``): ``OPCODE name=value ...``, any order, fields
    left out are 0, ``mem`` by name or number.

    >>> assemble("STORE mem=cnt addr=0 rows=7")
    Instr('STORE mem=cnt addr=0 rows=7')
    """
    parts = text.split()
    if not parts:
        raise ValueError("empty instruction text")
    try:
        op = Opcode[parts[0].upper()]
    except KeyError:
        raise ValueError(f"unknown opcode {parts[0]!r}; allowed: "
                         f"{', '.join(o.name for o in Opcode)}") from None
    fields = {}
    for p in parts[1:]:
        if "=" not in p:
            raise ValueError(f"{op.name}: expected name=value, got {p!r}")
        k, v = p.split("=", 1)
        if k == "mem" and not v.lstrip("-").isdigit():
            try:
                fields[k] = Mem[v.upper()]
            except KeyError:
                raise ValueError(f"{op.name}: unknown mem {v!r}; allowed: "
                                 f"{', '.join(m.name.lower() for m in Mem)}") from None
        else:
            try:
                fields[k] = int(v, 0)
            except ValueError:
                raise ValueError(f"{op.name}: {k}={v!r} is not an integer") from None
    return Instr(op, **fields)


def disassemble(words) -> str:
    """One line per 64-bit word: ``index: text``.

    >>> print(disassemble([encode(Instr(Opcode.FENCE)), encode(Instr(Opcode.END))]))
    0000: FENCE
    0001: END
    """
    return "\n".join(f"{i:04d}: {decode(int(w))}" for i, w in enumerate(words))


# -- counter bank -----------------------------------------------------------------------------

#: Performance counters in bank order: ``(name, width)``. Each is sent by ``STORE cnt`` as
#: :data:`COUNTER_WORDS` words (a 64-bit little-endian row, zero-extended from ``width``).
#:
#: * ``cycles``: clock cycles since ``start`` (until ``done``);
#: * ``busy``: cycles with a valid activation row entering the array;
#: * ``stall_in``: cycles a LOAD waited on ``i_stream``;
#: * ``stall_out``: cycles a STORE waited on ``o_stream``;
#: * ``stall_dep``: cycles dispatch waited for a FENCE, a drain or a hazard;
#: * ``macs``: PE products accumulated (enabled rows × columns × rows streamed, × lanes in a
#:   composable mode);
#: * ``overflow``: sticky, some accumulator addition left the ``acc_bits`` range.
COUNTERS: tuple[tuple[str, int], ...] = (
    ("cycles", 32),
    ("busy", 32),
    ("stall_in", 32),
    ("stall_out", 32),
    ("stall_dep", 32),
    ("macs", 48),
    ("overflow", 1),
)
#: Stream words per counter.
COUNTER_WORDS = 2


def counter_index(name: str) -> int:
    """Index of a counter in the bank (its ``STORE cnt`` address)."""
    for i, (n, _) in enumerate(COUNTERS):
        if n == name:
            return i
    raise ValueError(f"unknown counter {name!r}; allowed: {', '.join(n for n, _ in COUNTERS)}")


def pack_counters(values: dict, first: int = 0, count: int | None = None) -> list[int]:
    """Stream words of counters ``first … first+count-1`` (values wrap to their widths)."""
    count = len(COUNTERS) - first if count is None else count
    out = []
    for name, width in COUNTERS[first:first + count]:
        v = int(values.get(name, 0)) & ((1 << width) - 1)
        out += [v & 0xFFFFFFFF, v >> 32]
    return out


def unpack_counters(words, first: int = 0) -> dict[str, int]:
    """Counter values from the words of a ``STORE cnt addr=first rows=n``.

    >>> unpack_counters(pack_counters({"cycles": 12, "macs": 2**40}))["macs"] == 2**40
    True
    """
    words = [int(w) for w in words]
    if len(words) % COUNTER_WORDS:
        raise ValueError(f"words: need a multiple of {COUNTER_WORDS} words, got {len(words)}")
    n = len(words) // COUNTER_WORDS
    if first < 0 or first + n > len(COUNTERS):
        raise ValueError(f"first={first} with {n} counters exceeds the bank of {len(COUNTERS)}")
    out = {}
    for i in range(n):
        name, width = COUNTERS[first + i]
        v = words[2 * i] | (words[2 * i + 1] << 32)
        out[name] = v & ((1 << width) - 1)
    return out


# -- scratchpad rows on the streams -----------------------------------------------------------


def row_elements(mem, cfg) -> tuple[tuple[int, bool], ...]:
    """``((width, signed), ...)`` of the elements of one row of ``mem`` under ``cfg``.

    >>> from mixpe.sw.core_config import CORE_PRESETS
    >>> row_elements("qsp", CORE_PRESETS["tiny-2x2"])
    ((16, True), (32, True), (6, False))
    """
    from .core_config import QSP_MULT_BITS, QSP_SHIFT_BITS

    mem = _mem(mem)
    a = cfg.array
    if mem == Mem.WSP:
        return ((a.b_bits, False),) * a.cols
    if mem == Mem.ASP:
        return ((a.a_bits, False),) * a.rows
    if mem == Mem.ACC:
        return ((a.acc_bits, True),) * a.cols
    if mem == Mem.QSP:
        return ((a.acc_bits, True), (QSP_MULT_BITS, True), (QSP_SHIFT_BITS, False))
    raise ValueError("mem: the counter bank has no rows; use pack_counters/unpack_counters")


def _mem(mem) -> Mem:
    if isinstance(mem, str):
        try:
            return Mem[mem.upper()]
        except KeyError:
            raise ValueError(f"mem must be one of {', '.join(m.name.lower() for m in Mem)}, "
                             f"not {mem!r}") from None
    try:
        return Mem(mem)
    except ValueError:
        raise ValueError(f"mem must be a Mem, not {mem!r}") from None


def pack_rows(mem, rows, cfg) -> list[int]:
    """32-bit stream words of scratchpad rows (``rows``: ``[n, elements]`` integers).

    Element values must fit their width (unsigned codes ``[0, 2**w)``, signed values
    ``[-2**(w-1), 2**(w-1))``); ``ValueError`` names the memory and the element otherwise.

    >>> from mixpe.sw.core_config import CORE_PRESETS
    >>> cfg = CORE_PRESETS["tiny-2x2"]
    >>> [hex(w) for w in pack_rows("acc", torch.tensor([[-1, 2]]), cfg)]
    ['0x2ffff']
    >>> unpack_rows("acc", pack_rows("acc", torch.tensor([[-1, 2]]), cfg), cfg).tolist()
    [[-1, 2]]
    """
    mem = _mem(mem)
    elems = row_elements(mem, cfg)
    rows = torch.as_tensor(rows, dtype=torch.int64)
    if rows.dim() == 1:
        rows = rows[None]
    if rows.dim() != 2 or rows.shape[1] != len(elems):
        raise ValueError(f"rows: {mem.name.lower()} rows need shape [n, {len(elems)}], "
                         f"got {tuple(rows.shape)}")
    for e, (w, s) in enumerate(elems):
        lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if s else (0, (1 << w) - 1)
        col = rows[:, e]
        if col.numel() and (int(col.min()) < lo or int(col.max()) > hi):
            raise ValueError(f"rows: {mem.name.lower()} element {e} must lie in [{lo}, {hi}]")
    n_words = -(-sum(w for w, _ in elems) // STREAM_WORD_BITS)
    out = []
    for row in rows.tolist():
        v, lsb = 0, 0
        for x, (w, _) in zip(row, elems):
            v |= (x & ((1 << w) - 1)) << lsb
            lsb += w
        out += [(v >> (32 * i)) & 0xFFFFFFFF for i in range(n_words)]
    return out


def unpack_rows(mem, words, cfg, n_rows: int | None = None) -> torch.Tensor:
    """Inverse of :func:`pack_rows`: ``[n, elements]`` int64 (signed elements sign-extended).

    ``n_rows`` defaults to as many rows as ``words`` holds (its length must be a multiple of
    the row size).
    """
    mem = _mem(mem)
    elems = row_elements(mem, cfg)
    n_words = -(-sum(w for w, _ in elems) // STREAM_WORD_BITS)
    words = [int(w) for w in words]
    if n_rows is None:
        if len(words) % n_words:
            raise ValueError(f"words: {len(words)} is not a multiple of the "
                             f"{mem.name.lower()} row size ({n_words} words)")
        n_rows = len(words) // n_words
    if len(words) != n_rows * n_words:
        raise ValueError(f"words: {n_rows} {mem.name.lower()} rows need {n_rows * n_words} "
                         f"words, got {len(words)}")
    out = []
    for r in range(n_rows):
        v = 0
        for i in range(n_words):
            v |= (words[r * n_words + i] & 0xFFFFFFFF) << (32 * i)
        row, lsb = [], 0
        for w, s in elems:
            x = (v >> lsb) & ((1 << w) - 1)
            if s and x >> (w - 1):
                x -= 1 << w
            row.append(x)
            lsb += w
        out.append(row)
    return torch.tensor(out, dtype=torch.int64).reshape(n_rows, len(elems))
