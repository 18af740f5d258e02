"""Analytic cycle model of the accelerator core: cycles of an instruction stream.

:func:`predict_cycles` replays a :class:`~mixpe.sw.compiler.Program` on a model of the units
of ``hw/core.py`` (``docs/core.md``, the execution model of :mod:`mixpe.sw.isa`), tracking
for every unit the first cycle it is free, instead of simulating every signal:

* the dispatcher issues at most one instruction per cycle, in order, once the instruction's
  unit is free and its dependencies hold (``hw/core.py``, "Dispatch rules");
* the *LoadUnit* takes one ``i_stream`` word per cycle (the stream is assumed always valid)
  and writes a row the cycle after its last word; an acc row waits for a cycle in which the
  array does not write acc;
* the *StoreUnit* sends its first word 3 cycles after dispatch, then one per cycle
  (``o_stream`` always ready);
* the *PreloadUnit* offers its first of ``rows`` beats 2 cycles after dispatch; the array
  takes them one per cycle, not before the previous swap wave has passed;
* the *ExecuteUnit* puts the first row of a COMPUTE into the array 2 cycles after dispatch
  (a swap row waits until all ``rows`` preload beats are in), then one row per cycle; an
  accumulating row waits until the result it reads has been written (the acc RAW interlock:
  ``latency + 2`` cycles after the conflicting row entered); results are written
  ``latency`` cycles after their row entered (the array's fill/drain,
  ``1 + rows·L + cols-1``); REQUANT reads ``min(rows, cols)`` parameter rows, then streams
  one acc row per cycle through the requantizer pipeline.

The array numbers are those of ``hw/array.py`` (:func:`array_timing` copies its formulas,
since ``sw`` never imports the gateware); the controller constants (:class:`ControllerTiming`)
are read off the structure of ``hw/core.py``, not fitted to measurements.

>>> import torch
>>> from mixpe.sw.core_config import CORE_PRESETS
>>> from mixpe.sw.compiler import compile_gemm
>>> cfg = CORE_PRESETS["tiny-2x2"]
>>> prog = compile_gemm(torch.ones(8, 4, dtype=torch.long), torch.ones(4, 2, dtype=torch.long),
...                     cfg)
>>> c = predict_cycles(prog, cfg)
>>> c["total"] == sum(c[k.name.lower()] for k in Opcode) + ControllerTiming().fetch
True
>>> ideal_mac_cycles(8, 2, 4, cfg)
16
"""

from __future__ import annotations

from dataclasses import dataclass

from .core_config import CoreConfig
from .isa import COUNTER_WORDS, Instr, Mem, Opcode

__all__ = ["ControllerTiming", "DEFAULT_TIMING", "array_timing", "predict_cycles",
           "ideal_mac_cycles", "utilization"]


@dataclass(frozen=True)
class ControllerTiming:
    """Fixed cycle offsets of the controller (``hw/core.py``), in cycles.

    Parameters
    ----------
    fetch : int
        From the first counted cycle (the ``Fetch`` state after ``start``) to the first
        dispatch: the synchronous instruction-memory read.
    issue : int
        Between two dispatches at best.
    load_first : int
        Dispatch of a LOAD → its first word taken.
    load_write : int
        Last word of a row taken → the row written (the LoadUnit's row register).
    store_first : int
        Dispatch of a STORE → its first word on ``o_stream`` (request, synchronous read,
        row FIFO).
    preload_first : int
        Dispatch of a PRELOAD → its first beat offered to the array (wsp read).
    compute_first : int
        Dispatch of a COMPUTE → its first row offered to the array (stage A: address and
        synchronous asp/acc reads; stage B: the beat).
    raw_gap : int
        An accumulating row enters the array at the earliest ``latency + raw_gap`` cycles
        after the row whose result it reads (the interlock releases stage A the cycle after
        the write; stage B takes one more).
    requant_setup : int
        Dispatch of a REQUANT → its first acc row read, beyond the ``min(rows, cols)``
        parameter reads.
    requant_tail : int
        Last acc row read → the ExecuteUnit idle again (the requantizer's 8-stage pipeline,
        ``hw/requant.py:REQUANT_LATENCY``, the asp write and the state machine's drain
        state: ``REQUANT_LATENCY + 1``).
    """

    fetch: int = 1
    issue: int = 1
    load_first: int = 1
    load_write: int = 1
    store_first: int = 3
    preload_first: int = 2
    compute_first: int = 2
    raw_gap: int = 2
    requant_setup: int = 2
    requant_tail: int = 9

    def __post_init__(self):
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {v!r}")


#: The controller timing of ``hw/core.py``.
DEFAULT_TIMING = ControllerTiming()


def array_timing(cfg: CoreConfig) -> dict:
    """The WS array's timing (``hw/array.py`` ``timing``, 1×1 tiles): ``pe_latency`` (L),
    ``latency`` (row in → row out, ``1 + rows·L + cols-1``), ``swap_wave``
    (``(rows-1)·L + cols-1``), ``preload_beats`` (``rows``).

    >>> from mixpe.sw.core_config import CORE_PRESETS
    >>> array_timing(CORE_PRESETS["ulx3s-8x8"])["latency"]
    24
    """
    arr = cfg.array
    L = arr.pe.latency
    hd = arr.cols - 1
    return {"pe_latency": L, "latency": 1 + arr.rows * L + hd,
            "swap_wave": (arr.rows - 1) * L + hd, "preload_beats": arr.rows}


def ideal_mac_cycles(M: int, N: int, K: int, cfg: CoreConfig, mode: int | None = None) -> int:
    """Cycles an ideal array (every PE busy every cycle) needs for ``M·N·K`` MACs:
    ``ceil(M·N·K / (rows·cols·lanes(mode)))``."""
    arr = cfg.array
    per_cycle = arr.rows * arr.cols * arr.lanes(mode)
    return -(-M * N * K // per_cycle)


def utilization(program, cfg: CoreConfig | None = None, timing: ControllerTiming | None = None
                ) -> float:
    """Useful MACs per PE-lane per cycle of a program (0 … 1)."""
    cfg = program.cfg if cfg is None else cfg
    info = program.info
    total = predict_cycles(program, cfg, timing)["total"]
    arr = cfg.array
    return info["macs"] / (total * arr.rows * arr.cols * arr.lanes(info.get("mode")))


class _AccWrites:
    """Cycles in which the array writes acc (intervals, in time order)."""

    def __init__(self):
        self.spans: list[tuple[int, int]] = []

    def add(self, lo: int, hi: int):
        self.spans.append((lo, hi))

    def free_from(self, t: int) -> int:
        """The first cycle ``>= t`` without an array write."""
        moved = True
        while moved:
            moved = False
            for lo, hi in reversed(self.spans):
                if lo <= t <= hi:
                    t, moved = hi + 1, True
                elif hi < t - 4096:
                    break
        return t


def predict_cycles(program, cfg: CoreConfig | None = None,
                   timing: ControllerTiming | None = None) -> dict:
    """Predicted cycles of a program (or a list of Instr) on ``hw/core.py``.

    Returns a dict: ``total`` (the ``cycles`` counter at END: the cycles from ``start`` up to
    and including END's dispatch); per instruction kind (``"load"``, ``"compute"``, …) the
    cycles the dispatcher spent waiting for and issuing instructions of that kind (they sum
    to ``total - fetch``); model counters ``busy`` (rows entering the array), ``words_in``,
    ``words_out``; and ``cnt_cycles``, the value of the ``cycles`` counter that each
    ``STORE cnt`` reads (the counter is latched the cycle after the STORE dispatches).
    """
    instrs = program.instructions if hasattr(program, "instructions") else list(program)
    if cfg is None:
        cfg = program.cfg
    if not isinstance(cfg, CoreConfig):
        raise TypeError(f"cfg must be a CoreConfig, not {type(cfg).__name__}")
    tm = DEFAULT_TIMING if timing is None else timing
    if not isinstance(tm, ControllerTiming):
        raise TypeError(f"timing must be a ControllerTiming, not {type(tm).__name__}")
    at = array_timing(cfg)
    lat, R = at["latency"], at["preload_beats"]
    wave = max(at["swap_wave"], 1)
    width = min(cfg.array.rows, cfg.array.cols)
    by_kind = {op.name.lower(): 0 for op in Opcode}

    t = tm.fetch          # earliest dispatch of the next instruction
    load_free = 0         # LoadUnit idle (every earlier LOAD's rows written) from
    store_free = 0        # StoreUnit idle from
    pre_free = 0          # PreloadUnit idle from
    ex_free = 0           # ExecuteUnit takes a command from
    ex_idle = 0           # ExecuteUnit not busy from
    arr_idle = 0          # array not busy (no row in flight, no swap wave) from
    beats_from = 0        # the array takes preload beats from (swap wave passed)
    beats_full = 0        # the tile's last preload beat is in (a swap row may enter) from
    acc_fire: dict = {}   # acc row -> cycle its last writing row entered the array
    writes = _AccWrites()
    busy = words_in = words_out = 0
    snapshots = []
    for ins in instrs:
        if not isinstance(ins, Instr):
            raise TypeError(f"instructions must be Instr objects, not {type(ins).__name__}")
        op = ins.op
        exec_quiet = max(ex_idle, arr_idle)
        if op == Opcode.CONFIG:
            d = max(t, exec_quiet, pre_free)
        elif op == Opcode.LOAD:
            d = max(t, load_free)
            mem = Mem(ins.mem)
            w = cfg.row_words(mem.name.lower())
            words_in += ins.rows * w
            cur, wrote = d + tm.load_first, 0  # next word's cycle, previous row written
            for _ in range(ins.rows):
                last = max(cur + w - 1, wrote)  # the last word needs the row register
                wrote = last + tm.load_write
                if mem == Mem.ACC:
                    wrote = writes.free_from(wrote)
                cur = last + 1
            load_free = max(wrote + 1, d + 1)
        elif op == Opcode.STORE:
            d = max(t, store_free, load_free)
            if ins.mem in (Mem.ACC, Mem.ASP):
                d = max(d, exec_quiet)
            n = ins.rows * (COUNTER_WORDS if ins.mem == Mem.CNT else
                            cfg.row_words(Mem(ins.mem).name.lower()))
            words_out += n
            store_free = d + tm.store_first + n if n else d + 1
            if ins.mem == Mem.CNT:  # the bank is read the cycle after dispatch
                snapshots.append(d + 1)
        elif op == Opcode.PRELOAD:
            d = max(t, pre_free, load_free)
            first = max(d + tm.preload_first, beats_from)
            beats_full = first + R
            pre_free = beats_full
            beats_from = 1 << 62  # until the swap that consumes this tile
        elif op == Opcode.COMPUTE:
            d = max(t, ex_free, load_free)
            m = ins.m_outer * ins.m_inner
            first = d + tm.compute_first
            if ins.swap:
                first = max(first, beats_full)
            addrs = [ins.acc_addr + i * ins.acc_stride for i in range(m)]
            if ins.accumulate:
                for i, a in enumerate(addrs):
                    f = acc_fire.get(a)
                    if f is not None:
                        first = max(first, f + lat + tm.raw_gap - i)
            if m:
                last = first + m - 1
                for i, a in enumerate(addrs):
                    acc_fire[a] = first + i
                writes.add(first + lat, last + lat)
                ex_free = last if m > 1 else d + 2
                ex_idle = last + 1
                arr_idle = max(arr_idle, last + lat + 1)
                busy += m
            else:  # a swap-only row (nothing written)
                last = first
                ex_free, ex_idle = d + 2, first + 1
                arr_idle = max(arr_idle, first + 1)
            if ins.swap:
                beats_from = first + wave
                arr_idle = max(arr_idle, first + wave)
        elif op == Opcode.REQUANT:
            d = max(t, ex_free, load_free, exec_quiet)
            first_read = d + 1 + width + tm.requant_setup - 1
            ex_idle = ex_free = first_read + ins.rows + tm.requant_tail
        elif op in (Opcode.FENCE, Opcode.END):
            d = max(t, load_free, store_free, pre_free, exec_quiet)
        else:  # NOP
            d = t
        nxt = d + tm.issue
        by_kind[op.name.lower()] += nxt - t
        t = nxt
        if op == Opcode.END:
            break
    out = {"total": t}
    out.update(by_kind)
    out.update(busy=busy, words_in=words_in, words_out=words_out, cnt_cycles=snapshots)
    return out
