"""The accelerator core: scratchpads, a systolic array, a controller and a requant unit.

:class:`AcceleratorCore` executes the instruction set of :mod:`mixpe.sw.isa` (``docs/core.md``)
bit-exactly as the golden model :func:`mixpe.sw.core_ref.run_program` does. It is built from
one :class:`~mixpe.sw.core_config.CoreConfig`.

Structure
---------
::

               imem ──► dispatcher (in order, ≤ 1 instruction / cycle)
                          │ cmd streams (valid/ready)
        ┌────────────┬────┴────────┬──────────────────┐
        ▼            ▼             ▼                  ▼
    LoadUnit     StoreUnit     PreloadUnit       ExecuteUnit ── feed ──► SystolicArray
  i_stream→rows  rows→o_stream  wsp → preload     COMPUTE: asp/acc → rows   │ o_stream
        │ w_stream    ▲ rd_req/rd_data  stream    REQUANT: acc → Requantizer│ (cannot stall)
        ▼             │                           × min(R, C) → asp         ▼
     write arbiters ──┴──── wsp / asp / acc / qsp (lib.memory.Memory) ◄── acc writes

* **Dispatcher** (``m.FSM``: ``Idle`` → ``Fetch`` → ``Fetch-Next`` → ``Run`` → ``Done``):
  holds the instruction in a register ``ir`` (the next one waits on imem's synchronous
  read port, so dispatch logic never starts at the block RAM's output), decodes it with
  :data:`INSTR_LAYOUT` (built from
  ``sw/isa.py:struct_fields``) and hands it to a unit over a ``lib.stream`` command stream
  when the unit takes it and the instruction's dependencies hold (table below). One
  instruction per cycle at best.
* **LoadUnit** (LOAD): assembles rows from 32-bit ``i_stream`` words (least significant
  word first, :func:`mixpe.sw.isa.pack_rows`) and offers each on its ``w_stream`` in the
  cycle of its last word; one word per cycle, rows of one word included.
* **StoreUnit** (STORE): requests rows (``rd_req`` stream; the row is on ``rd_data`` the
  next cycle) and sends them word by word on ``o_stream``: asp/acc rows straight from its own
  read ports (which hold the row; one word per cycle, no gaps), wsp/qsp rows and counters
  (``mem = cnt``, two words per counter) through a row register (one idle cycle per row).
* **PreloadUnit** (PRELOAD): reads the select row (``sel_en``) and then the weight rows
  ``k = R-1 … 0`` from wsp and sends ``R`` beats on the array's ``preload`` stream; rows
  ``k >= k_rows`` are sent as the *zero code* (the code of value 0) without a read.
* **ExecuteUnit** (COMPUTE, REQUANT): a two-stage row pipeline (A: address generation of the
  conv pattern, interlocks, synchronous reads of asp and acc; B: the beat offered to the
  array); the array's results are written to acc by the core (the array cannot stall, so
  acc's write port belongs to it; a LOAD into acc waits for a free cycle). Rows
  ``r >= k_rows`` of the active tile get the zero activation code (with the zero weight code
  the product is 0 for every shipped multiplier: checked at construction), so disabled rows
  add nothing. REQUANT first reads the ``min(R, C)`` qsp rows of its channels, then streams
  one acc row per cycle through ``min(R, C)`` :class:`~mixpe.hw.requant.Requantizer` s and
  writes one asp row per cycle (``requant="lane"``: a single requantizer, one element per
  cycle; ``"serial"``: a single DSP-free requantizer, one element per 8 cycles, for small
  FPGAs).

Memory ports (all synchronous: the row of an address presented with ``en`` in cycle ``T`` is
on ``data`` in ``T + 1`` and holds while ``en`` is low)

====  =====================================  ==========================================
mem   read ports                             write port (priority first)
====  =====================================  ==========================================
imem  dispatcher (one address for both        host (``imem_*``, ignored while ``busy``)
      ports, no read while writing: a
      single-port RAM, e.g. iCE40 SPRAM)
wsp   PreloadUnit, else StoreUnit            LoadUnit
asp   ExecuteUnit (COMPUTE); StoreUnit (own  ExecuteUnit (REQUANT), LoadUnit
      port, the memory is duplicated)
acc   ExecuteUnit (COMPUTE, REQUANT);        array results, LoadUnit
      StoreUnit (own port, duplicated)
qsp   ExecuteUnit (REQUANT), else StoreUnit  LoadUnit
====  =====================================  ==========================================

Dispatch rules and hazards (in-order dispatch; "load idle" = every earlier LOAD has written
its rows; "exec quiet" = the ExecuteUnit is idle and the array drained)

=========  ======================================================  ========================
op         dispatches when                                         waits counted in
=========  ======================================================  ========================
CONFIG     exec quiet, PreloadUnit idle                            ``stall_dep``
LOAD       LoadUnit idle                                           —
STORE      StoreUnit idle, load idle, and exec quiet for acc/asp   ``stall_dep`` (deps)
PRELOAD    PreloadUnit idle, load idle                             ``stall_dep`` (load)
COMPUTE    ExecuteUnit takes commands (stage A free), load idle    ``stall_dep`` (load)
REQUANT    exec quiet, load idle                                   ``stall_dep``
FENCE/END  every unit idle, array drained                          ``stall_dep``
=========  ======================================================  ========================

Interlocks inside the units (counted in ``stall_dep`` while they hold a row):

* *acc RAW*: a COMPUTE row that reads acc (``accumulate``) waits while a row in flight
  (in stage B or in the array) will write the same acc row (a comparator per in-flight row;
  covers a draining earlier COMPUTE as well as ``acc_stride = 0``);
* *WAR against a STORE*: a row write (array result, REQUANT output, LOAD row) to a row that
  the running STORE has not read yet waits (checked when the COMPUTE/REQUANT row is issued and
  when the LOAD row is written).

The compiler guarantees the rest (``sw/isa.py``): a LOAD overlapping a COMPUTE/PRELOAD
writes other rows (ping-pong halves). Restrictions: a COMPUTE with ``swap`` must follow
its own PRELOAD (a second PRELOAD before the swap, or a swap without a PRELOAD, waits
forever: the array takes exactly ``R`` preload beats per swap); memory addresses must lie
below the memory depth (they wrap, where the reference raises).

Timing (cycles; ``lat`` = :func:`mixpe.hw.array.latency`, R/C array rows/columns)
---------------------------------------------------------------------------------
* dispatch: one instruction per cycle; ``start`` → first dispatch 3 cycles (``Fetch``,
  ``Fetch-Next``).
* LOAD: words are taken from the cycle after dispatch, one per cycle.
* STORE: first word on ``o_stream`` 2 cycles after dispatch (request, read), then one word per
  cycle (asp/acc; wsp/qsp/cnt rows take ``words + 1`` cycles each).
* PRELOAD: first beat 2 cycles after dispatch (3 with ``sel_en``), then one per cycle as the
  array takes them (after a swap the array blocks preload beats for ``swap_wave`` cycles).
* COMPUTE: first row enters the array 2 cycles after dispatch, then one row per cycle; the
  next COMPUTE dispatches the cycle after the last row left stage A (one idle cycle between
  COMPUTEs); results are written to acc ``lat`` cycles after their row entered.
* REQUANT (``requant="parallel"``, the default): ``min(R, C) + 1`` cycles of parameter
  reads, then one row per cycle, last asp row written ``latency_requant + 2`` cycles after its
  acc read (``latency_requant`` = :data:`mixpe.hw.requant.REQUANT_LATENCY`). With
  ``"lane"``: no parameter phase, ``min(R, C)`` cycles per row (one element and its qsp row
  per cycle); ``"serial"``: ``8·min(R, C)`` cycles per row.
* FENCE/END: dispatch the cycle after everything is idle; ``done`` rises the cycle after END.

Performance counters (``STORE mem=cnt``, :data:`mixpe.sw.isa.COUNTERS`; reset by ``start``)
-------------------------------------------------------------------------------------------
``cycles``
    cycles from the cycle after ``start`` up to and including the cycle END dispatches.
``busy``
    rows accepted by the array (one per cycle at most; a swap-only row of a COMPUTE with no
    rows is not counted).
``stall_in``
    cycles the LoadUnit wants a word and ``i_stream.valid`` is low.
``stall_out``
    cycles ``o_stream.valid`` is high and ``o_stream.ready`` low.
``stall_dep``
    cycles the dispatcher holds an instruction whose unit is free but whose dependencies
    (table above) do not hold yet, or the ExecuteUnit holds a row for an interlock.
``macs``
    ``k_rows × cols × lanes(mode)`` per row accepted by the array (as ``sw/core_ref.py``).
``overflow``
    sticky: some accumulator addition of a written result overflowed (any column).
"""

from __future__ import annotations

import types

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.utils import ceil_log2
from mixpe.sw import isa
from mixpe.sw.core_config import QSP_MULT_BITS, QSP_SHIFT_BITS, CoreConfig

from .array import SystolicArray
from .requant import OUT_BITS, REQUANT_LATENCY, SERIAL_INTERVAL, Requantizer

__all__ = [
    "Opcode",
    "MemSel",
    "INSTR_LAYOUT",
    "payload_layout",
    "zero_codes",
    "LoadUnit",
    "StoreUnit",
    "PreloadUnit",
    "ExecuteUnit",
    "AcceleratorCore",
    "REQUANT_MODES",
    "CYCLE_MODEL_TIMING",
]

#: REQUANT unit variants (``AcceleratorCore(requant=...)``).
REQUANT_MODES = ("parallel", "lane", "serial")

#: This controller's cycle offsets in the terms of ``sw/cyclemodel.py:ControllerTiming``, where
#: they differ from its defaults: the LoadUnit writes a row in the cycle it takes its last word
#: (no row register); two fetch cycles (``Fetch``, ``Fetch-Next``: the instruction register
#: is loaded from the block RAM) before the first dispatch. ``sim/test_core.py`` checks the
#: model with them.
CYCLE_MODEL_TIMING = {"load_write": 0, "fetch": 2}


# -- ISA layouts, built from the tables of sw/isa.py ------------------------------------------

def _enum(name, src, bits):
    return types.new_class(name, (enum.Enum,), {"shape": bits},
                           lambda ns: [ns.__setitem__(o.name, o.value) for o in src])


#: Opcodes (bits ``[63:59]``), the members of :class:`mixpe.sw.isa.Opcode`.
Opcode = _enum("Opcode", isa.Opcode, isa.OPCODE_BITS)
#: The ``mem`` field of LOAD/STORE, the members of :class:`mixpe.sw.isa.Mem`.
MemSel = _enum("MemSel", isa.Mem, isa.FIELDS[isa.Opcode.LOAD][0].width)


def payload_layout(op) -> data.StructLayout:
    """``data.StructLayout`` of the fields of ``op`` (``sw/isa.py:struct_fields``), 59 bits."""
    return data.StructLayout({name: signed(w) if s else w
                              for name, w, s in isa.struct_fields(isa.Opcode(op))})


#: One 64-bit instruction: ``payload`` (a union over the opcodes' layouts, bits [58:0]) and
#: ``op`` (bits [63:59]).
INSTR_LAYOUT = data.StructLayout({
    "payload": data.UnionLayout({op.name.lower(): payload_layout(op) for op in isa.Opcode}),
    "op": Opcode,
})
assert INSTR_LAYOUT.size == isa.WORD_BITS

_LOAD = payload_layout(isa.Opcode.LOAD)
_STORE = payload_layout(isa.Opcode.STORE)
_PRELOAD = payload_layout(isa.Opcode.PRELOAD)
_A = isa.ADDR_BITS
_ROW_BITS = next(f.width for f in isa.FIELDS[isa.Opcode.LOAD] if f.name == "rows")
_KROW_BITS = next(f.width for f in isa.FIELDS[isa.Opcode.PRELOAD] if f.name == "k_rows")


def _aw(depth: int) -> int:
    return max(1, ceil_log2(depth))


def zero_codes(cfg: CoreConfig) -> tuple[int, int]:
    """``(a_zero, b_zero)``: the operand codes a disabled array row is fed with.

    The smallest code of value 0 of each operand format (0 for composable PEs). ``ValueError``
    if a format has no zero or some multiplier variant gives a non-zero product for them.
    """
    from mixpe.sw.compiler import zero_code
    from mixpe.sw.pe import pe_product

    arr = cfg.array
    if arr.pe.composable:
        a0 = b0 = 0
        for q_idx, _ in enumerate(arr.modes):
            a, b, q = arr.pe.port_operands(0, 0, q_idx)
            if int(pe_product(a, b, arr.pe, q=q)) != 0:
                raise ValueError(f"{arr.pe.mult}: the product of zero codes is not 0")
        return a0, b0
    mult = arr.pe.multiplier
    a0, b0 = zero_code(mult.a_format), zero_code(mult.b_format)
    for v, pe in enumerate(arr.pe_configs):
        m = pe.multiplier
        p = m.mul(m.a_format.values()[a0], m.b_format.values()[b0])
        if int(p) != 0:
            raise ValueError(f"variant {v} ({pe.mult}): mul(0, 0) = {int(p)}; a disabled array "
                             f"row would add it")
    return a0, b0


def _memsel(k) -> "MemSel":
    return k if isinstance(k, MemSel) else MemSel(int(k))


def _war_layout():
    return data.StructLayout({"active": 1, "mem": MemSel, "cur": _A + 1, "end": _A + 2})


# -- LoadUnit ---------------------------------------------------------------------------------

class LoadUnit(wiring.Component):
    """Executes LOAD: ``i_stream`` words → scratchpad rows.

    Parameters (keyword-only)
    ----------
    row_words : dict
        Stream words per row of each :class:`MemSel` (``wsp``, ``asp``, ``acc``, ``qsp``).

    Members
    -------
    cmd : In(stream.Signature(LOAD payload))
        ``{mem, addr, rows}``; taken when the unit is idle.
    i_stream : In(stream.Signature(32))
        The words, least significant word of a row first.
    w_stream : Out(stream.Signature({mem, addr, data}))
        A complete row (``data``: ``row_words × 32`` bits, the row in the low bits), valid in
        the cycle its last word is on ``i_stream``; the core writes it in the cycle it accepts
        it, and the last word is taken only then (no row register).
    busy : Out(1)
        A LOAD is in progress.
    stall : Out(1)
        The unit wants a word and ``i_stream.valid`` is low.
    """

    def __init__(self, *, row_words: dict):
        self._row_words = {_memsel(k): int(v) for k, v in row_words.items()}
        self._max_words = max(self._row_words.values())
        super().__init__({
            "cmd": In(stream.Signature(_LOAD)),
            "i_stream": In(stream.Signature(isa.STREAM_WORD_BITS)),
            "w_stream": Out(stream.Signature(data.StructLayout({
                "mem": MemSel, "addr": _A, "data": 32 * self._max_words}))),
            "busy": Out(1),
            "stall": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W = self._max_words
        mem = Signal(MemSel)
        addr = Signal(_A)
        left = Signal(_ROW_BITS)      # rows still to take
        k = Signal(range(max(W, 2)))  # word index within the row
        buf = Signal(32 * max(W - 1, 1))  # the row's earlier words
        words = Signal(range(W + 1))
        with m.Switch(mem):
            for ms, w in self._row_words.items():
                with m.Case(ms):
                    m.d.comb += words.eq(w)
        i, o = self.i_stream, self.w_stream
        last = Signal()
        row = Signal(32 * W)
        m.d.comb += [
            last.eq(k == words - 1),
            row.eq(buf),
            row.word_select(k, 32).eq(i.payload),
            o.valid.eq((left != 0) & last & i.valid),
            o.payload.mem.eq(mem),
            o.payload.addr.eq(addr),
            o.payload.data.eq(row),
            i.ready.eq((left != 0) & (~last | o.ready)),
            self.busy.eq(left != 0),
            self.stall.eq((left != 0) & ~i.valid),
            self.cmd.ready.eq(left == 0),
        ]
        with m.If(i.valid & i.ready):
            with m.If(last):
                m.d.sync += [addr.eq(addr + 1), left.eq(left - 1), k.eq(0)]
            with m.Else():
                m.d.sync += [buf.word_select(k, 32).eq(i.payload), k.eq(k + 1)]
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [mem.eq(self.cmd.payload.mem), addr.eq(self.cmd.payload.addr),
                         left.eq(self.cmd.payload.rows), k.eq(0)]
        return m


# -- StoreUnit --------------------------------------------------------------------------------

class StoreUnit(wiring.Component):
    """Executes STORE: scratchpad rows (or counters) → ``o_stream`` words.

    Parameters (keyword-only)
    ----------
    row_words : dict
        Stream words per row of each :class:`MemSel` (``cnt``: 2).
    held : tuple of MemSel
        Memories whose ``rd_data`` stays valid until the next request (a read port of the
        StoreUnit's own): their words are sent straight from ``rd_data``, one per cycle
        without gaps between rows. The others are copied into a row register first (one idle
        cycle per row).

    Members
    -------
    cmd : In(stream.Signature(STORE payload))
        ``{mem, addr, rows}``; taken when the unit is idle.
    rd_req : Out(stream.Signature({mem, addr}))
        Row read requests; the row of a request accepted in cycle ``T`` must be on
        ``rd_data`` in cycle ``T + 1`` (low bits; for ``held`` memories until the next
        request).
    rd_data : In(row_words_max × 32)
    o_stream : Out(stream.Signature(32))
    busy : Out(1)
        Rows to read or words to send.
    war : Out({active, mem, cur, end})
        Rows ``cur … end-1`` of ``mem`` are still to be read (``active``): nobody may
        overwrite them yet.
    """

    def __init__(self, *, row_words: dict, held=(MemSel.ASP, MemSel.ACC)):
        self._row_words = {_memsel(k): int(v) for k, v in row_words.items()}
        self._max_words = max(self._row_words.values())
        self._held = tuple(_memsel(h) for h in held)
        copied = [w for ms, w in self._row_words.items() if ms not in self._held]
        self._cap_words = max(copied, default=1)
        super().__init__({
            "cmd": In(stream.Signature(_STORE)),
            "rd_req": Out(stream.Signature(data.StructLayout({"mem": MemSel, "addr": _A}))),
            "rd_data": In(32 * self._max_words),
            "o_stream": Out(stream.Signature(isa.STREAM_WORD_BITS)),
            "busy": Out(1),
            "war": Out(_war_layout()),
        })

    def elaborate(self, platform):
        m = Module()
        W = self._max_words
        mem = Signal(MemSel)
        addr = Signal(_A + 1)
        end = Signal(_A + 2)
        left = Signal(_ROW_BITS)
        emit = Signal()               # a row is being sent
        pend = Signal()               # a copied memory's row is on rd_data this cycle
        k = Signal(range(max(W, 2)))
        cap = Signal(32 * self._cap_words)
        words = Signal(range(W + 1))
        held = Signal()
        with m.Switch(mem):
            for ms, w in self._row_words.items():
                with m.Case(ms):
                    m.d.comb += [words.eq(w), held.eq(int(ms in self._held))]
        o, req = self.o_stream, self.rd_req
        last = Signal()
        row_done = Signal()
        m.d.comb += [
            o.valid.eq(emit),
            o.payload.eq(Mux(held, self.rd_data, cap).word_select(k, 32)),
            last.eq(k == words - 1),
            row_done.eq(o.valid & o.ready & last),
            req.valid.eq((left != 0) & ~pend & (~emit | (held & row_done))),
            req.payload.mem.eq(mem),
            req.payload.addr.eq(addr),
            self.busy.eq((left != 0) | emit | pend),
            self.cmd.ready.eq(~self.busy),
            self.war.active.eq(left != 0),
            self.war.mem.eq(mem),
            self.war.cur.eq(addr),
            self.war.end.eq(end),
        ]
        with m.If(o.valid & o.ready):
            m.d.sync += k.eq(k + 1)
        with m.If(row_done):
            m.d.sync += [emit.eq(0), k.eq(0)]
        m.d.sync += pend.eq(0)
        with m.If(pend):  # copy the row; send it from the next cycle
            m.d.sync += [cap.eq(self.rd_data), emit.eq(1), k.eq(0)]
        with m.If(req.valid & req.ready):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
            with m.If(held):
                m.d.sync += [emit.eq(1), k.eq(0)]
            with m.Else():
                m.d.sync += pend.eq(1)
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [mem.eq(p.mem), addr.eq(p.addr), left.eq(p.rows),
                         end.eq(p.addr + p.rows), k.eq(0)]
        return m


def _war_hit(war, mem, addr):
    """Whether writing row ``addr`` of ``mem`` must wait for the running STORE."""
    return war.active & (war.mem == mem) & (addr >= war.cur) & (addr < war.end)


# -- PreloadUnit ------------------------------------------------------------------------------

class PreloadUnit(wiring.Component):
    """Executes PRELOAD: wsp rows → the array's ``preload`` stream (``R`` beats, k = R-1 first).

    Parameters (keyword-only)
    ----------
    rows, cols : int
        Array size.
    b_bits, sel_bits : int
        Weight code width and variant select width (0: none).
    wsp_depth : int
    b_zero : int
        The weight code of value 0 (disabled rows ``k >= k_rows``).

    Members
    -------
    cmd : In(stream.Signature(PRELOAD payload))
    wsp : In(memory.ReadPort.Signature(...))
        The unit drives ``addr``/``en`` (``en`` only when it reads) and takes ``data``.
    preload : Out(stream.Signature({b: [C] b-codes, [sel: [C]]}))
    shadow_krows : Out(7)
        ``k_rows`` of the tile in the array's shadow registers (set with its first beat).
    busy : Out(1)
    """

    def __init__(self, *, rows, cols, b_bits, sel_bits, wsp_depth, b_zero):
        self._rows, self._cols = rows, cols
        self._b_bits, self._sel_bits = b_bits, sel_bits
        self._b_zero = b_zero
        self._row_layout = data.ArrayLayout(b_bits, cols)
        w_fields = {"b": data.ArrayLayout(b_bits, cols)}
        if sel_bits:
            w_fields["sel"] = data.ArrayLayout(sel_bits, cols)
        self._w_layout = data.StructLayout(w_fields)
        super().__init__({
            "cmd": In(stream.Signature(_PRELOAD)),
            "wsp": In(memory.ReadPort.Signature(addr_width=_aw(wsp_depth),
                                                shape=self._row_layout)),
            "preload": Out(stream.Signature(self._w_layout)),
            "shadow_krows": Out(_KROW_BITS),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        base = Signal(_A)
        krows = Signal(_KROW_BITS)
        sel_en = Signal()
        sels = Signal(data.ArrayLayout(max(self._sel_bits, 1), C))
        r = Signal(range(R))         # row of the next beat (R-1 … 0)
        active = Signal()            # stage A has beats to generate
        first = Signal()             # next accepted beat is the tile's first
        sel_rd = Signal()            # the select row is on wsp.data this cycle
        b_valid = Signal()
        b_zero = Signal()
        o = self.preload
        adv = Signal()
        m.d.comb += [
            adv.eq(active & (~b_valid | o.ready)),
            self.wsp.addr.eq(base + r),
            self.wsp.en.eq(adv & (r < krows)),
            o.valid.eq(b_valid),
            self.busy.eq(active | b_valid | sel_rd),
            self.cmd.ready.eq(~self.busy),
        ]
        for c in range(C):
            m.d.comb += o.payload.b[c].eq(Mux(b_zero, self._b_zero, self.wsp.data[c]))
            if self._sel_bits:
                m.d.comb += o.payload.sel[c].eq(Mux(sel_en, sels[c], 0))
        if self._sel_bits:
            with m.If(sel_rd):
                for c in range(C):
                    m.d.sync += sels[c].eq(self.wsp.data[c][:self._sel_bits])
        m.d.sync += sel_rd.eq(0)
        with m.If(o.valid & o.ready):
            m.d.sync += b_valid.eq(0)
            with m.If(first):
                m.d.sync += [first.eq(0), self.shadow_krows.eq(krows)]
        with m.If(adv):
            m.d.sync += [b_valid.eq(1), b_zero.eq(r >= krows), r.eq(r - 1)]
            with m.If(r == 0):
                m.d.sync += active.eq(0)
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            m.d.sync += [base.eq(p.wsp_addr), krows.eq(p.k_rows), sel_en.eq(p.sel_en),
                         r.eq(R - 1), first.eq(1)]
            if self._sel_bits:
                # read the select row first; the weight rows start the cycle after
                m.d.comb += [self.wsp.addr.eq(p.sel_addr), self.wsp.en.eq(p.sel_en)]
                m.d.sync += [sel_rd.eq(p.sel_en), active.eq(1)]
            else:
                m.d.sync += active.eq(1)
        return m


# -- ExecuteUnit ------------------------------------------------------------------------------

class ExecuteUnit(wiring.Component):
    """Executes COMPUTE (rows into the array) and REQUANT (acc → asp through requantizers).

    Parameters (keyword-only)
    ----------
    config : CoreConfig
    a_zero : int
        The activation code of value 0 (rows ``r >= k_rows``).
    i_layout : data.StructLayout
        The array's ``i_stream`` payload (``{a, d, swap}``).
    latency : int
        The array's latency (cycles from an accepted row to its result).
    requant : str
        ``"parallel"``: ``min(R, C)`` requantizers, one acc row per cycle (after reading the
        ``min(R, C)`` qsp rows into registers); ``"lane"``: one requantizer, one element per
        cycle (the qsp row of each element read on the fly), ``min(R, C)`` cycles per row;
        ``"serial"``: one DSP-free serial requantizer, one element per 8 cycles.

    Members
    -------
    cmd : In(stream.Signature(INSTR_LAYOUT))
        A COMPUTE or REQUANT; taken when stage A is free and no REQUANT runs.
    asp, acc, qsp : In(memory.ReadPort.Signature(...))
        Synchronous read ports (this unit has priority on them).
    asp_w : In(memory.WritePort.Signature(...))
        REQUANT output rows (priority over the LoadUnit).
    feed : Out(stream.Signature(i_layout))
        Rows for the array (``{a, d, swap}``).
    result : Out({addr, we})
        Where the array's result of this cycle goes: the acc row and write enable of the row
        that entered ``latency`` cycles ago (the last entry of the in-flight chain that the
        acc interlock compares against).
    shadow_krows : In(7)
        From the PreloadUnit: ``k_rows`` that a swap makes active.
    war : In({active, mem, cur, end})
        The running STORE's unread rows.
    accumulate_all : In(1)
        ``~acc_overwrite_default``: every COMPUTE accumulates.
    relu, zp, lo, hi : In
        CONFIG fields for the requantizers.
    row_macs : In(16)
        ``cols × lanes(mode)``: products per enabled row and array row.
    issue : Out(1)
        A row (not a swap-only row) is accepted by the array this cycle.
    issue_macs : Out(...)
        Its products (``k_rows × row_macs``).
    hazard : Out(1)
        Stage A holds a row for an interlock this cycle.
    busy : Out(1)
        An instruction is in progress (rows to issue, a row in stage B, a REQUANT running).
    """

    def __init__(self, *, config: CoreConfig, a_zero: int, i_layout, latency: int,
                 requant: str):
        self._cfg = config
        self._a_zero = a_zero
        self._latency = latency
        arr, mem = config.array, config.memory
        self._width = min(arr.rows, arr.cols)
        if requant not in REQUANT_MODES:
            raise ValueError(f"requant must be one of {', '.join(REQUANT_MODES)}, not "
                             f"{requant!r}")
        self._requant = requant
        self._lanes = self._width if requant == "parallel" else 1
        self._asp_layout = data.ArrayLayout(arr.a_bits, arr.rows)
        self._acc_layout = data.ArrayLayout(signed(arr.acc_bits), arr.cols)
        self._qsp_layout = data.StructLayout({"bias": signed(arr.acc_bits),
                                              "mult": signed(QSP_MULT_BITS),
                                              "shift": QSP_SHIFT_BITS})
        self._acc_aw = _aw(mem.acc_depth)
        super().__init__({
            "cmd": In(stream.Signature(INSTR_LAYOUT)),
            "asp": In(memory.ReadPort.Signature(addr_width=_aw(mem.asp_depth),
                                                shape=self._asp_layout)),
            "acc": In(memory.ReadPort.Signature(addr_width=self._acc_aw,
                                                shape=self._acc_layout)),
            "qsp": In(memory.ReadPort.Signature(addr_width=_aw(mem.qsp_depth),
                                                shape=self._qsp_layout)),
            "asp_w": In(memory.WritePort.Signature(addr_width=_aw(mem.asp_depth),
                                                   shape=self._asp_layout)),
            "feed": Out(stream.Signature(i_layout)),
            "shadow_krows": In(_KROW_BITS),
            "war": In(_war_layout()),
            "accumulate_all": In(1),
            "relu": In(1),
            "zp": In(signed(OUT_BITS)),
            "lo": In(signed(OUT_BITS)),
            "hi": In(signed(OUT_BITS)),
            "row_macs": In(16),
            "result": Out(data.StructLayout({"addr": self._acc_aw, "we": 1})),
            "issue": Out(1),
            "issue_macs": Out(_KROW_BITS + 16),
            "hazard": Out(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        arr = cfg.array
        R, C, Wd = arr.rows, arr.cols, self._width
        aw = self._acc_aw
        cmd = self.cmd
        p = cmd.payload.payload

        # ---- COMPUTE: stage A (addresses, interlocks, reads) ------------------------------
        a_active = Signal()
        dummy = Signal()         # m = 0 with swap: one swap-only row, nothing written
        swap_pend = Signal()
        accum = Signal()
        m_outer = Signal(8)
        m_inner = Signal(8)
        s_outer = Signal(_A)
        s_inner = Signal(3)
        acc_stride = Signal(2)
        o_cnt = Signal(8)
        i_cnt = Signal(8)
        a_base = Signal(_A)
        a_addr = Signal(_A)
        c_addr = Signal(_A)
        # stage B (the beat offered to the array)
        b_valid = Signal()
        b_swap = Signal()
        b_we = Signal()
        b_accum = Signal()
        b_addr = Signal(aw)
        active_krows = Signal(_KROW_BITS)
        feed = self.feed
        fire = Signal()
        m.d.comb += fire.eq(feed.valid & feed.ready)

        # in-flight acc writes: stage B plus one entry per cycle of array latency
        chain = [Signal(aw + 1, name=f"inflight{k}") for k in range(self._latency)]
        m.d.sync += chain[0].eq(Cat(b_addr, fire & b_we))
        for k in range(1, self._latency):
            m.d.sync += chain[k].eq(chain[k - 1])
        addr_t = c_addr[:aw]
        raw = Signal()
        m.d.comb += raw.eq(accum & (
            (b_valid & b_we & (b_addr == addr_t))
            | Cat(*[(e[aw] & (e[:aw] == addr_t)) for e in chain]).any()))
        war = Signal()
        m.d.comb += war.eq(~dummy & _war_hit(self.war, MemSel.ACC, c_addr))
        c_adv = Signal()
        c_rd = Signal()          # stage B takes a row this cycle if stage A offers one
        m.d.comb += [
            c_rd.eq(~b_valid | feed.ready),
            c_adv.eq(a_active & ~raw & ~war & c_rd),
        ]

        # ---- REQUANT state ------------------------------------------------------------------
        rq_state = Signal(range(4))  # 0 idle, 1 params, 2 rows, 3 drain
        rq_j = Signal(range(Wd + 1))
        rq_t = Signal(_ROW_BITS)
        rq_rows = Signal(_ROW_BITS)
        rq_acc = Signal(_A)
        rq_asp = Signal(_A)
        rq_qsp = Signal(_A)
        rq_pread = Signal()          # a qsp row is on qsp.data this cycle
        rq_pidx = Signal(range(Wd + 1))
        rq_read = Signal()           # an acc row is on acc.data this cycle
        rq_rtag = Signal(_A)          # asp row the next requantized row goes to
        rq_inflight = Signal(range(REQUANT_LATENCY + 3))
        rq_jd = Signal(range(max(Wd, 2)))  # lane/serial: the column on the requantizer input
        interval = SERIAL_INTERVAL if self._requant == "serial" else 1
        rq_wait = Signal(range(interval))  # cycles until the requantizer takes the next one
        with m.If(rq_wait != 0):
            m.d.sync += rq_wait.eq(rq_wait - 1)
        rq_last = Signal()
        params = ([Signal(self._qsp_layout, name=f"rq_param{j}") for j in range(Wd)]
                  if self._lanes == Wd else [])

        # ---- ports ----------------------------------------------------------------------------
        m.d.comb += [
            self.asp.addr.eq(a_addr),
            # COMPUTE reads whenever stage B is free to take a row (not only when a row
            # advances): a read nobody uses is harmless, and the block RAMs' enables then come
            # from three registers instead of the interlock comparators (the ECP5 build's
            # critical path was c_addr → RAW compare → c_adv → acc CEB, mostly routing)
            self.asp.en.eq(c_rd),
            self.acc.addr.eq(Mux(rq_state == 2, rq_acc + rq_t, addr_t)),
            self.acc.en.eq((c_rd & (rq_state == 0)) | ((rq_state == 2) & (rq_t != rq_rows)
                                                       & int(self._lanes == Wd))),
            self.qsp.addr.eq(rq_qsp + rq_j),
            self.qsp.en.eq((rq_state == 1) & (rq_j != Wd)),
        ]

        # ---- beat B → array -------------------------------------------------------------------
        krows_eff = Signal(_KROW_BITS)
        m.d.comb += krows_eff.eq(Mux(b_swap, self.shadow_krows, active_krows))
        pay = feed.payload
        for r in range(R):
            m.d.comb += pay.a[r].eq(Mux(krows_eff > r, self.asp.data[r], self._a_zero))
        for c in range(C):
            m.d.comb += pay.d[c].eq(Mux(b_accum, self.acc.data[c], 0))
        m.d.comb += [
            pay.swap.eq(b_swap),
            # the acc row (and write enable) of the array's result in this cycle: the row that
            # entered `latency` cycles ago (the array's o_stream has no tag)
            self.result.addr.eq(chain[-1][:aw]),
            self.result.we.eq(chain[-1][aw]),
            feed.valid.eq(b_valid),
            self.issue.eq(fire & b_we),
            self.issue_macs.eq(Mux(fire & b_we, krows_eff * self.row_macs, 0)),
            self.hazard.eq(a_active & (raw | war)),
        ]
        with m.If(fire):
            m.d.sync += b_valid.eq(0)
            with m.If(b_swap):
                m.d.sync += active_krows.eq(self.shadow_krows)
        with m.If(c_adv):
            m.d.sync += [b_valid.eq(1), b_swap.eq(swap_pend), b_we.eq(~dummy),
                         b_accum.eq(accum & ~dummy), b_addr.eq(addr_t), swap_pend.eq(0),
                         c_addr.eq(c_addr + acc_stride)]
            with m.If(dummy):
                m.d.sync += a_active.eq(0)
            with m.Elif(i_cnt + 1 == m_inner):
                m.d.sync += i_cnt.eq(0)
                with m.If(o_cnt + 1 == m_outer):
                    m.d.sync += a_active.eq(0)
                with m.Else():
                    m.d.sync += [o_cnt.eq(o_cnt + 1), a_base.eq(a_base + s_outer),
                                 a_addr.eq(a_base + s_outer)]
            with m.Else():
                m.d.sync += [i_cnt.eq(i_cnt + 1), a_addr.eq(a_addr + s_inner)]

        # ---- REQUANT ----------------------------------------------------------------------
        rq_war = Signal()
        m.d.comb += rq_war.eq(_war_hit(self.war, MemSel.ASP, rq_asp + rq_t))
        m.d.sync += [rq_pread.eq(0), rq_read.eq(0)]
        if self._lanes == Wd:
            out = self._requant_parallel(m, params, rq_read, rq_rtag)
        else:
            out = self._requant_serial(m, rq_read, rq_rtag, rq_jd, rq_last)
        with m.If(rq_pread & int(bool(params))):
            with m.Switch(rq_pidx):
                for j in range(len(params)):
                    with m.Case(j):
                        m.d.sync += params[j].eq(self.qsp.data)
        with m.If(self.asp_w.en):
            m.d.sync += rq_rtag.eq(rq_rtag + 1)
        n_in = Signal.like(rq_inflight)
        m.d.comb += n_in.eq(rq_inflight + rq_read - out.valid)
        m.d.sync += rq_inflight.eq(n_in)
        with m.Switch(rq_state):
            with m.Case(1):  # parallel lanes: read the W channels' parameters first
                with m.If(rq_j != Wd):
                    m.d.sync += [rq_pread.eq(1), rq_pidx.eq(rq_j), rq_j.eq(rq_j + 1)]
                with m.Else():
                    m.d.sync += [rq_state.eq(2), rq_j.eq(0)]
            with m.Case(2):
                if self._lanes == Wd:  # one acc row per cycle
                    with m.If(rq_t == rq_rows):
                        m.d.sync += rq_state.eq(3)
                    with m.Elif(~rq_war):
                        m.d.sync += [rq_read.eq(1), rq_t.eq(rq_t + 1)]
                    with m.Else():
                        m.d.comb += [self.hazard.eq(1), self.acc.en.eq(0)]
                else:  # one element per cycle: acc row once, then qsp row of channel j
                    with m.If(rq_t == rq_rows):
                        m.d.sync += rq_state.eq(3)
                    with m.Elif(rq_wait != 0):  # the serial requantizer is still busy
                        pass
                    with m.Elif((rq_j != 0) | ~rq_war):
                        m.d.comb += [self.acc.en.eq(rq_j == 0), self.qsp.en.eq(1)]
                        m.d.sync += [rq_read.eq(1), rq_jd.eq(rq_j),
                                     rq_last.eq(rq_j == Wd - 1), rq_wait.eq(interval - 1)]
                        with m.If(rq_j == Wd - 1):
                            m.d.sync += [rq_j.eq(0), rq_t.eq(rq_t + 1)]
                        with m.Else():
                            m.d.sync += rq_j.eq(rq_j + 1)
                    with m.Else():
                        m.d.comb += [self.hazard.eq(1), self.acc.en.eq(0)]
            with m.Case(3):
                with m.If((n_in == 0) & ~rq_read):
                    m.d.sync += rq_state.eq(0)

        # ---- commands -------------------------------------------------------------------------
        m.d.comb += [
            cmd.ready.eq(~a_active & (rq_state == 0)),
            self.busy.eq(a_active | b_valid | (rq_state != 0)),
        ]
        with m.If(cmd.valid & cmd.ready):
            with m.If(cmd.payload.op == Opcode.COMPUTE):
                c = p.compute
                rows_none = (c.m_outer == 0) | (c.m_inner == 0)
                m.d.sync += [
                    a_active.eq(~rows_none | c.swap), dummy.eq(rows_none),
                    swap_pend.eq(c.swap), accum.eq(c.accumulate | self.accumulate_all),
                    m_outer.eq(c.m_outer), m_inner.eq(c.m_inner),
                    s_outer.eq(c.a_stride_outer), s_inner.eq(c.a_stride_inner),
                    acc_stride.eq(c.acc_stride), o_cnt.eq(0), i_cnt.eq(0),
                    a_base.eq(c.asp_addr), a_addr.eq(c.asp_addr), c_addr.eq(c.acc_addr),
                ]
            with m.Elif(cmd.payload.op == Opcode.REQUANT):
                q = p.requant
                m.d.sync += [rq_state.eq(1 if self._lanes == Wd else 2), rq_j.eq(0),
                             rq_rtag.eq(q.asp_addr),
                             rq_t.eq(0), rq_rows.eq(q.rows),
                             rq_acc.eq(q.acc_addr), rq_asp.eq(q.asp_addr),
                             rq_qsp.eq(q.qsp_addr)]
        return m


    def _requant_parallel(self, m, params, rq_read, rq_rtag):
        """``min(R, C)`` requantizers side by side: one acc row per cycle."""
        arr = self._cfg.array
        rqs = []
        for j in range(self._width):
            u = Requantizer(acc_bits=arr.acc_bits)
            m.submodules[f"requant_{j}"] = u
            rqs.append(u)
            m.d.comb += [
                u.zp.eq(self.zp), u.lo.eq(self.lo), u.hi.eq(self.hi), u.relu.eq(self.relu),
                u.o_stream.ready.eq(1),
                u.i_stream.valid.eq(rq_read),
                u.i_stream.payload.acc.eq(self.acc.data[j]),
                u.i_stream.payload.bias.eq(params[j].bias),
                u.i_stream.payload.mult.eq(params[j].mult),
                u.i_stream.payload.shift.eq(params[j].shift),
            ]
        out = rqs[0].o_stream
        for r in range(arr.rows):
            # the a_bits-wide two's-complement code of y (elements past min(R, C) are 0)
            m.d.comb += self.asp_w.data[r].eq(rqs[r].o_stream.payload.y if r < self._width
                                              else 0)
        m.d.comb += [self.asp_w.en.eq(out.valid), self.asp_w.addr.eq(rq_rtag)]
        return out

    def _requant_serial(self, m, rq_read, rq_rtag, rq_jd, rq_last):
        """One requantizer, one element per cycle; the row is written with its last code."""
        arr = self._cfg.array
        Wd = self._width
        jb = len(rq_jd)
        m.submodules.requant_0 = u = Requantizer(acc_bits=arr.acc_bits, tag_bits=jb + 1,
                                                 serial=self._requant == "serial")
        accs = Array([self.acc.data[j] for j in range(Wd)])
        m.d.comb += [
            u.zp.eq(self.zp), u.lo.eq(self.lo), u.hi.eq(self.hi), u.relu.eq(self.relu),
            u.o_stream.ready.eq(1),
            u.i_stream.valid.eq(rq_read),
            u.i_stream.payload.acc.eq(accs[rq_jd]),
            u.i_stream.payload.bias.eq(self.qsp.data.bias),
            u.i_stream.payload.mult.eq(self.qsp.data.mult),
            u.i_stream.payload.shift.eq(self.qsp.data.shift),
            u.i_stream.payload.tag.eq(Cat(rq_jd, rq_last)),
        ]
        out = u.o_stream
        tag = out.payload.tag
        o_j, o_last = tag[:jb], tag[jb]
        codes = Signal(data.ArrayLayout(arr.a_bits, Wd))
        with m.If(out.valid):
            with m.Switch(o_j):
                for j in range(Wd):
                    with m.Case(j):
                        m.d.sync += codes[j].eq(out.payload.y)
        for r in range(arr.rows):
            if r < Wd:
                m.d.comb += self.asp_w.data[r].eq(Mux(o_j == r, out.payload.y, codes[r]))
            else:
                m.d.comb += self.asp_w.data[r].eq(0)
        m.d.comb += [self.asp_w.en.eq(out.valid & o_last), self.asp_w.addr.eq(rq_rtag)]
        return out


# -- AcceleratorCore --------------------------------------------------------------------------

class AcceleratorCore(wiring.Component):
    """The accelerator core (see the module docstring for structure, timing and counters).

    Parameters
    ----------
    config : CoreConfig
        The whole core; ``array.dataflow`` must be ``"ws"`` (the ISA's COMPUTE is
        weight-stationary).
    tile_rows, tile_cols : int (keyword-only)
        PEs per combinational tile of the array (``hw/array.py``), 1 by default. In WS only
        ``tile_cols`` matters: ``tile_cols = cols`` broadcasts each activation along its row
        (no horizontal registers, no skew of ``d``, no de-skew): ~20 % fewer FFs on the
        4×4 array, latency ``1 + rows·L``.
    requant : str (keyword-only)
        The REQUANT unit (:data:`REQUANT_MODES`): ``"parallel"`` (default; ``min(rows,
        cols)`` requantizers, one acc row per cycle), ``"lane"`` (one requantizer, one
        element per cycle) or ``"serial"`` (one DSP-free requantizer, one element per 8
        cycles: the iCE40 UP5K build).

    Members
    -------
    i_stream : In(stream.Signature(32))
        LOAD words.
    o_stream : Out(stream.Signature(32))
        STORE words.
    start : In(1)
        A pulse while not ``busy``: reset the counters and the CONFIG registers, run the
        program from ``imem[0]``.
    busy : Out(1)
        The program runs.
    done : Out(1)
        END was executed (until the next ``start``).
    imem_addr, imem_data, imem_we : In
        Instruction memory write port (use while not ``busy``).

    Raises
    ------
    TypeError
        ``config`` is not a :class:`CoreConfig`.
    ValueError
        An OS array, or a multiplier whose zero-code product is not 0 (see :func:`zero_codes`).
    """

    def __init__(self, config: CoreConfig, *, tile_rows: int = 1, tile_cols: int = 1,
                 requant: str = "parallel"):
        try:
            if not isinstance(config, CoreConfig):
                raise TypeError(f"config must be a CoreConfig, not {config!r}")
            if config.array.dataflow != "ws":
                raise ValueError(f"array.dataflow must be 'ws' (the ISA's COMPUTE is "
                                 f"weight-stationary), not {config.array.dataflow!r}")
            self._a_zero, self._b_zero = zero_codes(config)
            arr, mem = config.array, config.memory
            if requant not in REQUANT_MODES:
                raise ValueError(f"requant must be one of {', '.join(REQUANT_MODES)}, not "
                                 f"{requant!r}")
            self._requant = requant
            self._acc_aw = _aw(mem.acc_depth)
            self._array = SystolicArray.from_config(arr, tile_rows=tile_rows,
                                                    tile_cols=tile_cols,
                                                    tag_bits=0)
        except Exception:
            self._MustUse__silence = True  # no UnusedElaboratable warning for a rejected config
            raise
        self._config = config
        self._tile = (tile_rows, tile_cols)
        super().__init__({
            "i_stream": In(stream.Signature(isa.STREAM_WORD_BITS)),
            "o_stream": Out(stream.Signature(isa.STREAM_WORD_BITS)),
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "imem_addr": In(_aw(mem.imem_depth)),
            "imem_data": In(isa.WORD_BITS),
            "imem_we": In(1),
        })

    @property
    def config(self) -> CoreConfig:
        return self._config

    @property
    def latency(self) -> int:
        """The array's latency (row in → result), the drain time of a COMPUTE."""
        return self._array.latency

    @property
    def requant(self) -> str:
        return self._requant

    @property
    def array(self) -> SystolicArray:
        return self._array

    def row_words(self) -> dict:
        """Stream words per row of every ``mem`` value (``cnt``: 2)."""
        cfg = self._config
        out = {MemSel(int(ms)): cfg.row_words(ms.name.lower()) for ms in
               (isa.Mem.WSP, isa.Mem.ASP, isa.Mem.ACC, isa.Mem.QSP)}
        out[MemSel.CNT] = isa.COUNTER_WORDS
        return out

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        arr, mc = cfg.array, cfg.memory
        R, C = arr.rows, arr.cols
        m.submodules.array = array = self._array

        # ---- memories ---------------------------------------------------------------------
        wsp_l = data.ArrayLayout(arr.b_bits, C)
        asp_l = data.ArrayLayout(arr.a_bits, R)
        acc_l = data.ArrayLayout(signed(arr.acc_bits), C)
        qsp_l = data.StructLayout({"bias": signed(arr.acc_bits), "mult": signed(QSP_MULT_BITS),
                                   "shift": QSP_SHIFT_BITS})
        m.submodules.imem = imem = memory.Memory(shape=isa.WORD_BITS, depth=mc.imem_depth,
                                                 init=[])
        m.submodules.wsp = wsp = memory.Memory(shape=wsp_l, depth=mc.wsp_depth, init=[])
        m.submodules.asp = asp = memory.Memory(shape=asp_l, depth=mc.asp_depth, init=[])
        m.submodules.acc = acc = memory.Memory(shape=acc_l, depth=mc.acc_depth, init=[])
        m.submodules.qsp = qsp = memory.Memory(shape=qsp_l, depth=mc.qsp_depth, init=[])
        imem_w, imem_r = imem.write_port(), imem.read_port()
        wsp_w, wsp_r = wsp.write_port(), wsp.read_port()
        asp_w, asp_r, asp_rs = asp.write_port(), asp.read_port(), asp.read_port()
        acc_w, acc_r, acc_rs = acc.write_port(), acc.read_port(), acc.read_port()
        qsp_w, qsp_r = qsp.write_port(), qsp.read_port()

        # ---- units --------------------------------------------------------------------------
        rw = self.row_words()
        m.submodules.load = load = LoadUnit(row_words={k: v for k, v in rw.items()
                                                       if k != MemSel.CNT})
        m.submodules.store = store = StoreUnit(row_words=rw)
        m.submodules.preload = pre = PreloadUnit(
            rows=R, cols=C, b_bits=arr.b_bits, sel_bits=array.sel_bits,
            wsp_depth=mc.wsp_depth, b_zero=self._b_zero)
        m.submodules.exec = ex = ExecuteUnit(config=cfg, a_zero=self._a_zero,
                                             i_layout=array.i_layout, latency=array.latency,
                                             requant=self._requant)
        connect(m, flipped(self.i_stream), load.i_stream)
        connect(m, store.o_stream, flipped(self.o_stream))
        connect(m, pre.preload, array.preload)
        connect(m, ex.feed, array.i_stream)
        m.d.comb += [ex.shadow_krows.eq(pre.shadow_krows), ex.war.eq(store.war),
                     array.o_stream.ready.eq(1)]

        # memory ports of the units
        m.d.comb += [
            wsp_r.addr.eq(pre.wsp.addr), wsp_r.en.eq(pre.wsp.en), pre.wsp.data.eq(wsp_r.data),
            asp_r.addr.eq(ex.asp.addr), asp_r.en.eq(ex.asp.en), ex.asp.data.eq(asp_r.data),
            acc_r.addr.eq(ex.acc.addr), acc_r.en.eq(ex.acc.en), ex.acc.data.eq(acc_r.data),
            qsp_r.addr.eq(ex.qsp.addr), qsp_r.en.eq(ex.qsp.en), ex.qsp.data.eq(qsp_r.data),
        ]

        # acc writes: the array's results (cannot wait), else a LOAD row
        o = array.o_stream
        aw = self._acc_aw
        arr_we = Signal()
        m.d.comb += arr_we.eq(o.valid & ex.result.we)
        lw = load.w_stream
        lw_ok = Signal()
        with m.Switch(lw.payload.mem):
            with m.Case(MemSel.ASP):
                m.d.comb += lw_ok.eq(~ex.asp_w.en)
            with m.Case(MemSel.ACC):
                m.d.comb += lw_ok.eq(~arr_we)
            with m.Default():
                m.d.comb += lw_ok.eq(1)
        m.d.comb += lw.ready.eq(lw_ok & ~_war_hit(store.war, lw.payload.mem, lw.payload.addr))
        lw_fire = Signal()
        m.d.comb += lw_fire.eq(lw.valid & lw.ready)
        m.d.comb += [
            acc_w.en.eq(arr_we | (lw_fire & (lw.payload.mem == MemSel.ACC))),
            acc_w.addr.eq(Mux(arr_we, ex.result.addr, lw.payload.addr)),
            acc_w.data.eq(Mux(arr_we, o.payload.c.as_value(), lw.payload.data)),
            asp_w.en.eq(ex.asp_w.en | (lw_fire & (lw.payload.mem == MemSel.ASP))),
            asp_w.addr.eq(Mux(ex.asp_w.en, ex.asp_w.addr, lw.payload.addr)),
            asp_w.data.eq(Mux(ex.asp_w.en, ex.asp_w.data.as_value(), lw.payload.data)),
            wsp_w.en.eq(lw_fire & (lw.payload.mem == MemSel.WSP)),
            wsp_w.addr.eq(lw.payload.addr), wsp_w.data.eq(lw.payload.data),
            qsp_w.en.eq(lw_fire & (lw.payload.mem == MemSel.QSP)),
            qsp_w.addr.eq(lw.payload.addr), qsp_w.data.eq(lw.payload.data),
        ]

        # ---- counters -----------------------------------------------------------------------
        counters = {name: Signal(width, name=f"cnt_{name}") for name, width in isa.COUNTERS}

        # StoreUnit reads: own ports on asp/acc, spare cycles of wsp/qsp, the counter bank
        rq = store.rd_req
        rq_mem = Signal(MemSel)
        rq_addr = Signal(_A)
        m.d.comb += [asp_rs.addr.eq(rq.payload.addr), acc_rs.addr.eq(rq.payload.addr)]
        with m.Switch(rq.payload.mem):
            with m.Case(MemSel.WSP):  # the PreloadUnit holds its read data while busy
                m.d.comb += rq.ready.eq(~pre.busy & ~pre.wsp.en)
                with m.If(rq.valid & rq.ready):
                    m.d.comb += [wsp_r.addr.eq(rq.payload.addr), wsp_r.en.eq(1)]
            with m.Case(MemSel.QSP):
                m.d.comb += rq.ready.eq(~ex.qsp.en)
                with m.If(rq.valid & rq.ready):
                    m.d.comb += [qsp_r.addr.eq(rq.payload.addr), qsp_r.en.eq(1)]
            with m.Case(MemSel.ASP):  # own port: its data holds until the next request
                m.d.comb += [rq.ready.eq(1), asp_rs.en.eq(rq.valid)]
            with m.Case(MemSel.ACC):
                m.d.comb += [rq.ready.eq(1), acc_rs.en.eq(rq.valid)]
            with m.Default():
                m.d.comb += rq.ready.eq(1)
        with m.If(rq.valid & rq.ready):
            m.d.sync += [rq_mem.eq(rq.payload.mem), rq_addr.eq(rq.payload.addr)]
        cnt_row = Signal(64)  # the counter requested in the previous cycle (copied by the unit)
        with m.Switch(rq_addr):
            for idx, (name, _) in enumerate(isa.COUNTERS):
                with m.Case(idx):
                    m.d.comb += cnt_row.eq(counters[name])
        with m.Switch(rq_mem):
            with m.Case(MemSel.WSP):
                m.d.comb += store.rd_data.eq(wsp_r.data.as_value())
            with m.Case(MemSel.ASP):
                m.d.comb += store.rd_data.eq(asp_rs.data.as_value())
            with m.Case(MemSel.ACC):
                m.d.comb += store.rd_data.eq(acc_rs.data.as_value())
            with m.Case(MemSel.QSP):
                m.d.comb += store.rd_data.eq(qsp_r.data.as_value())
            with m.Default():
                m.d.comb += store.rd_data.eq(cnt_row)

        # ---- CONFIG registers -----------------------------------------------------------------
        n_modes = len(arr.modes)
        mode = Signal(range(max(n_modes, 1)))
        relu = Signal()
        zp = Signal(signed(OUT_BITS))
        lo = Signal(signed(OUT_BITS))
        hi = Signal(signed(OUT_BITS))
        overwrite_default = Signal()
        lanes = [arr.lanes(k if n_modes else None) for k in range(max(n_modes, 1))]
        row_macs = Array([Const(C * n, 16) for n in lanes])
        m.d.comb += [ex.relu.eq(relu), ex.zp.eq(zp), ex.lo.eq(lo), ex.hi.eq(hi),
                     ex.accumulate_all.eq(~overwrite_default), ex.row_macs.eq(row_macs[mode])]
        if n_modes:
            m.d.comb += array.mode.eq(mode)

        # ---- dispatcher -------------------------------------------------------------------
        # ir holds the instruction being dispatched (a register: the block RAM's slow output
        # only feeds it); imem's read port holds the next one, at address `fa`
        fa = Signal(_aw(mc.imem_depth))
        ir = Signal(INSTR_LAYOUT)
        running = Signal()    # Fetch, Fetch-Next or Run
        # one address for both imem ports (the host's while idle, the fetch address while
        # running) and no read while writing: a single-port RAM (iCE40 SPRAM, see
        # bench/core_fit.py)
        imem_a = Signal.like(fa)
        m.d.comb += [
            imem_w.addr.eq(imem_a), imem_r.addr.eq(imem_a),
            imem_w.data.eq(self.imem_data), imem_w.en.eq(self.imem_we & ~running),
            imem_r.en.eq(~imem_w.en),
            imem_a.eq(Mux(running, fa + 1, self.imem_addr)),
        ]
        P = ir.payload
        load_idle = ~load.busy
        exec_quiet = Signal()
        all_idle = Signal()
        m.d.comb += [
            exec_quiet.eq(~ex.busy & ~array.busy),
            all_idle.eq(load_idle & ~store.busy & ~pre.busy & exec_quiet),
        ]
        go = Signal()         # dispatch the instruction in ir this cycle
        unit_ok = Signal()    # its unit takes it
        deps_ok = Signal()    # its dependencies hold
        dep_wait = Signal()   # its unit is free, its dependencies are not
        with m.Switch(ir.op):
            with m.Case(Opcode.CONFIG):
                m.d.comb += [unit_ok.eq(1), deps_ok.eq(exec_quiet & ~pre.busy)]
            with m.Case(Opcode.LOAD):
                m.d.comb += [unit_ok.eq(load.cmd.ready), deps_ok.eq(1)]
            with m.Case(Opcode.STORE):
                acc_asp = (P.store.mem == MemSel.ACC) | (P.store.mem == MemSel.ASP)
                m.d.comb += [unit_ok.eq(store.cmd.ready),
                             deps_ok.eq(load_idle & (~acc_asp | exec_quiet))]
            with m.Case(Opcode.PRELOAD):
                m.d.comb += [unit_ok.eq(pre.cmd.ready), deps_ok.eq(load_idle)]
            with m.Case(Opcode.COMPUTE):
                m.d.comb += [unit_ok.eq(ex.cmd.ready), deps_ok.eq(load_idle)]
            with m.Case(Opcode.REQUANT):
                m.d.comb += [unit_ok.eq(ex.cmd.ready), deps_ok.eq(load_idle & exec_quiet)]
            with m.Case(Opcode.FENCE, Opcode.END):
                m.d.comb += [unit_ok.eq(1), deps_ok.eq(all_idle)]
            with m.Default():  # NOP and unknown opcodes
                m.d.comb += [unit_ok.eq(1), deps_ok.eq(1)]

        m.d.comb += [
            load.cmd.payload.eq(P.load), store.cmd.payload.eq(P.store),
            pre.cmd.payload.eq(P.preload), ex.cmd.payload.eq(ir),
        ]
        with m.FSM(name="dispatch"):
            with m.State("Idle"):
                with m.If(self.start):
                    m.next = "Fetch"
            with m.State("Fetch"):  # imem[0] is read in this cycle
                m.d.comb += [running.eq(1), imem_a.eq(0)]
                m.next = "Fetch-Next"
            with m.State("Fetch-Next"):  # ir ← imem[0]; imem[1] is read
                m.d.comb += running.eq(1)
                m.d.sync += [ir.eq(imem_r.data), fa.eq(1)]
                m.next = "Run"
            with m.State("Run"):
                m.d.comb += [running.eq(1), go.eq(unit_ok & deps_ok),
                             dep_wait.eq(unit_ok & ~deps_ok), imem_r.en.eq(go)]
                with m.If(go):
                    m.d.sync += [ir.eq(imem_r.data), fa.eq(fa + 1)]
                    with m.If(ir.op == Opcode.END):
                        m.next = "Done"
                    with m.If(ir.op == Opcode.CONFIG):
                        c = P.config
                        m.d.sync += [
                            mode.eq(Mux(c.mode >= n_modes, max(n_modes - 1, 0), c.mode)
                                    if n_modes else 0),
                            relu.eq(c.relu), zp.eq(c.zp), lo.eq(c.lo), hi.eq(c.hi),
                            overwrite_default.eq(c.acc_overwrite_default),
                        ]
            with m.State("Done"):
                m.d.comb += self.done.eq(1)
                with m.If(self.start):
                    m.next = "Fetch"
        m.d.comb += [
            self.busy.eq(running),
            load.cmd.valid.eq(go & (ir.op == Opcode.LOAD)),
            store.cmd.valid.eq(go & (ir.op == Opcode.STORE)),
            pre.cmd.valid.eq(go & (ir.op == Opcode.PRELOAD)),
            ex.cmd.valid.eq(go & ((ir.op == Opcode.COMPUTE) | (ir.op == Opcode.REQUANT))),
        ]
        with m.If(self.start & ~running):
            m.d.sync += [fa.eq(0), mode.eq(0), relu.eq(0), zp.eq(0), lo.eq(0), hi.eq(0),
                         overwrite_default.eq(0)]
            m.d.sync += [c.eq(0) for c in counters.values()]
        with m.Else():
            with m.If(running):
                m.d.sync += counters["cycles"].eq(counters["cycles"] + 1)
            m.d.sync += [
                counters["busy"].eq(counters["busy"] + ex.issue),
                counters["stall_in"].eq(counters["stall_in"] + (running & load.stall)),
                counters["stall_out"].eq(counters["stall_out"]
                                         + (running & self.o_stream.valid
                                            & ~self.o_stream.ready)),
                counters["stall_dep"].eq(counters["stall_dep"]
                                         + (dep_wait | (running & ex.hazard))),
                counters["macs"].eq(counters["macs"] + ex.issue_macs),
            ]
            with m.If(arr_we & o.payload.ovf.as_value().any()):
                m.d.sync += counters["overflow"].eq(1)
        return m
