"""Golden model of the accelerator core: executes an instruction stream bit-exactly.

:func:`run_program` keeps Python models of the scratchpads (``wsp``, ``asp``, ``acc``,
``qsp`` as int64 tensors of element codes/values), the shadow and active weight sets and the
CONFIG registers, and executes the instructions of :mod:`mixpe.sw.isa` in program order
(the sequential semantics the hardware must preserve). The arithmetic of a COMPUTE goes
through :func:`mixpe.sw.emulate.matmul` with the selected variant's multiplier, the PE's
``acc_bits`` and ``overflow``, the stored accumulator as the preload (so saturation happens
after every addition in k order, as in the array); a composable PE adds one lane dot product
per PE and word. REQUANT uses :func:`mixpe.sw.requant.requantize`.

It returns the ``o_stream`` words the core must send, and the model's counters (``macs``,
``busy``, ``overflow``; the timing counters are in :mod:`mixpe.sw.cyclemodel`, and a
``STORE cnt`` sends 0 for them here).

This module never imports Amaranth.
"""

from __future__ import annotations

import torch

from . import isa
from .compiler import Program, code_values
from .core_config import CoreConfig
from .emulate import matmul
from .emulate.reference import accumulate
from .isa import Instr, Mem, Opcode
from .numerics import to_code
from .requant import requantize

__all__ = ["run_program", "execute", "CoreModel"]


class CoreModel:
    """State of the core: scratchpads, weight registers, CONFIG registers, counters.

    >>> from mixpe.sw.core_config import CORE_PRESETS
    >>> m = CoreModel(CORE_PRESETS["tiny-2x2"])
    >>> m.mem[Mem.ACC].shape
    torch.Size([32, 2])
    """

    def __init__(self, cfg: CoreConfig):
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"cfg must be a CoreConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        arr, mem = cfg.array, cfg.memory
        R, C = arr.rows, arr.cols
        self.mem = {
            Mem.WSP: torch.zeros(mem.wsp_depth, C, dtype=torch.int64),
            Mem.ASP: torch.zeros(mem.asp_depth, R, dtype=torch.int64),
            Mem.ACC: torch.zeros(mem.acc_depth, C, dtype=torch.int64),
            Mem.QSP: torch.zeros(mem.qsp_depth, 3, dtype=torch.int64),
        }
        zero_w = torch.zeros(R, C, dtype=torch.int64)
        self.shadow = (zero_w, 0, torch.zeros(C, dtype=torch.int64))  # weights, k_rows, sel
        self.active = (zero_w.clone(), 0, torch.zeros(C, dtype=torch.int64))
        self.regs = {f.name: 0 for f in isa.FIELDS[Opcode.CONFIG]}
        self.counters = {name: 0 for name, _ in isa.COUNTERS}
        self.words_in = 0
        self.words_out = 0
        self.done = False

    # -- helpers -----------------------------------------------------------------------
    def _rows(self, mem: Mem, addr: int, n: int, what: str):
        depth = self.mem[mem].shape[0]
        if addr < 0 or addr + n > depth:
            raise ValueError(f"{what}: rows {addr}..{addr + n - 1} exceed "
                             f"{mem.name.lower()}_depth={depth}")
        return slice(addr, addr + n)

    def _addresses(self, base, outer, inner, so, si, mem, what):
        o = torch.arange(outer, dtype=torch.int64)[:, None]
        i = torch.arange(inner, dtype=torch.int64)[None, :]
        addr = (base + o * so + i * si).reshape(-1)
        depth = self.mem[mem].shape[0]
        if addr.numel() and int(addr.max()) >= depth:
            raise ValueError(f"{what}: address {int(addr.max())} exceeds "
                             f"{mem.name.lower()}_depth={depth}")
        return addr

    # -- instructions --------------------------------------------------------------------
    def step(self, ins: Instr, i_stream, pos: int, o_words: list) -> int:
        """Execute one instruction; returns the new ``i_stream`` position."""
        op = ins.op
        cfg = self.cfg
        if op in (Opcode.NOP, Opcode.FENCE):
            return pos
        if op == Opcode.END:
            self.done = True
            return pos
        if op == Opcode.CONFIG:
            self.regs.update(ins.fields)
            return pos
        if op == Opcode.LOAD:
            mem = Mem(ins.mem)
            n = ins.rows
            rw = cfg.row_words(mem.name.lower())
            need = n * rw
            if pos + need > len(i_stream):
                raise ValueError(f"{ins}: i_stream has {len(i_stream) - pos} words left, "
                                 f"needs {need}")
            rows = isa.unpack_rows(mem, i_stream[pos:pos + need], cfg, n)
            self.mem[mem][self._rows(mem, ins.addr, n, str(ins))] = rows
            self.words_in += need
            return pos + need
        if op == Opcode.STORE:
            mem = Mem(ins.mem)
            if mem == Mem.CNT:
                if ins.addr + ins.rows > len(isa.COUNTERS):
                    raise ValueError(f"{ins}: the counter bank has {len(isa.COUNTERS)} counters")
                words = isa.pack_counters(self.counters, ins.addr, ins.rows)
            else:
                rows = self.mem[mem][self._rows(mem, ins.addr, ins.rows, str(ins))]
                words = isa.pack_rows(mem, rows, cfg)
            o_words.extend(words)
            self.words_out += len(words)
            return pos
        if op == Opcode.PRELOAD:
            R = cfg.array.rows
            k = ins.k_rows
            if k > R:
                raise ValueError(f"{ins}: k_rows={k} exceeds the array's {R} rows")
            w = torch.zeros_like(self.shadow[0])
            w[:k] = self.mem[Mem.WSP][self._rows(Mem.WSP, ins.wsp_addr, k, str(ins))]
            if ins.sel_en:
                row = self.mem[Mem.WSP][self._rows(Mem.WSP, ins.sel_addr, 1, str(ins))][0]
                sel = row & ((1 << cfg.array.sel_bits) - 1) if cfg.array.sel_bits else \
                    torch.zeros_like(row)
                if int(sel.max()) >= cfg.array.n_variants:
                    raise ValueError(f"{ins}: select {int(sel.max())} names no variant "
                                     f"(n_variants={cfg.array.n_variants})")
            else:
                sel = torch.zeros(cfg.array.cols, dtype=torch.int64)
            self.shadow = (w, k, sel)
            return pos
        if op == Opcode.COMPUTE:
            self._compute(ins)
            return pos
        if op == Opcode.REQUANT:
            self._requant(ins)
            return pos
        raise ValueError(f"unknown instruction {ins}")  # pragma: no cover

    def _compute(self, ins: Instr):
        cfg = self.cfg
        arr = cfg.array
        if ins.swap:
            self.active = self.shadow
        w, k, sel = self.active
        a_addr = self._addresses(ins.asp_addr, ins.m_outer, ins.m_inner, ins.a_stride_outer,
                                 ins.a_stride_inner, Mem.ASP, str(ins))
        c_addr = self._addresses(ins.acc_addr, ins.m_outer * ins.m_inner, 1, ins.acc_stride, 0,
                                 Mem.ACC, str(ins))
        m = a_addr.numel()
        if m == 0:
            return
        acc = self.mem[Mem.ACC]
        accumulate = ins.accumulate or not self.regs["acc_overwrite_default"]
        start = acc[c_addr].clone() if accumulate else torch.zeros(m, arr.cols,
                                                                   dtype=torch.int64)
        a = self.mem[Mem.ASP][a_addr][:, :k]
        wk = w[:k]
        out = start.clone()
        flags = torch.zeros(m, arr.cols, dtype=torch.bool)
        lanes = 1
        if k > 0:
            if arr.pe.composable:
                lanes = self._compute_composable(a, wk, sel, start, out, flags)
            else:
                for v in torch.unique(sel).tolist():
                    cols = sel == v
                    mult = arr.pe_configs[v].multiplier
                    # code-width rule: a variant reads the low bits of its own code width
                    ab, bb = mult.a_format.bits, mult.b_format.bits
                    av = code_values(mult.a_format, a & ((1 << ab) - 1))
                    bv = code_values(mult.b_format, wk[:, cols] & ((1 << bb) - 1))
                    res, fl = matmul(av, bv, mult, bias=start[:, cols], acc_bits=arr.acc_bits,
                                     overflow=arr.pe.overflow, return_overflow=True)
                    out[:, cols] = res
                    flags[:, cols] = fl
        acc[c_addr] = out
        self.counters["macs"] += k * arr.cols * m * lanes
        self.counters["busy"] += m
        if bool(flags.any()):
            self.counters["overflow"] = 1

    def _compute_composable(self, a, wk, sel, start, out, flags) -> int:
        """One lane dot product per PE and operand word, then the accumulator rule."""
        arr = self.cfg.array
        modes = arr.modes
        q = modes[min(self.regs["mode"], len(modes) - 1)]
        core = arr.pe.core
        lanes = core.lanes(q)
        shifts = torch.arange(lanes, dtype=torch.int64) * q
        mask = (1 << q) - 1
        fa, fb = core.lane_formats(q)
        al = fa.decode((a[..., None] >> shifts) & mask)        # [M, k, L]
        bl = fb.decode((wk[..., None] >> shifts) & mask)       # [k, C, L]
        p = (al[:, :, None, :] * bl[None]).sum(-1)             # [M, k, C] exact lane dots
        acc_bits, overflow = arr.acc_bits, arr.pe.overflow
        cur = start.clone()
        fl = torch.zeros_like(flags)
        for r in range(p.shape[1]):
            cur = accumulate(cur, p[:, r], fl, acc_bits, overflow)
        out[:] = cur
        flags[:] = fl
        return lanes

    def _requant(self, ins: Instr):
        cfg = self.cfg
        arr = cfg.array
        width = min(arr.rows, arr.cols)
        n = ins.rows
        acc = self.mem[Mem.ACC][self._rows(Mem.ACC, ins.acc_addr, n, str(ins))]
        q = self.mem[Mem.QSP][self._rows(Mem.QSP, ins.qsp_addr, width, str(ins))]
        r = self.regs
        y = requantize(acc[:, :width], q[:, 0], q[:, 1], q[:, 2], r["zp"], bool(r["relu"]),
                       r["lo"], r["hi"]) if r["lo"] <= r["hi"] else None
        if y is None:
            raise ValueError(f"{ins}: CONFIG lo={r['lo']} > hi={r['hi']}")
        rows = torch.zeros(n, arr.rows, dtype=torch.int64)
        rows[:, :width] = to_code(y, arr.a_bits)
        self.mem[Mem.ASP][self._rows(Mem.ASP, ins.asp_addr, n, str(ins))] = rows


def execute(instructions, i_stream, cfg: CoreConfig, model: CoreModel | None = None):
    """Execute ``instructions`` (``Instr`` objects or 64-bit words) with the ``i_stream`` words;
    returns ``(o_words, model)``. Stops at END; ``ValueError`` when the input stream does not
    match the LOADs or an address leaves a memory. Pass ``model`` to continue from the state
    of an earlier run (the scratchpads persist across runs, as on the core)."""
    model = CoreModel(cfg) if model is None else model
    model.done = False
    i_stream = [int(w) for w in i_stream]
    o_words: list[int] = []
    pos = 0
    for ins in instructions:
        if not isinstance(ins, Instr):
            ins = isa.decode(int(ins))
        pos = model.step(ins, i_stream, pos, o_words)
        if model.done:
            break
    if pos != len(i_stream):
        raise ValueError(f"i_stream: {len(i_stream) - pos} words were not consumed by a LOAD")
    return o_words, model


def run_program(program: Program, cfg: CoreConfig | None = None, *,
                imem_depth: int | None = None):
    """Run a compiled :class:`~mixpe.sw.compiler.Program` on the model of the core.

    Returns ``(o_words, counters)``: the 32-bit words of ``o_stream`` and the model's
    counters (``macs``, ``busy``, ``overflow``, ``words_in``, ``words_out``,
    ``instructions``). With ``imem_depth`` the program runs as
    :meth:`~mixpe.sw.compiler.Program.segments` of that size, one after the other on the same
    model (the words are the concatenation).

    >>> from mixpe.sw.core_config import CORE_PRESETS
    >>> from mixpe.sw.compiler import compile_gemm
    >>> cfg = CORE_PRESETS["tiny-2x2"]
    >>> prog = compile_gemm(torch.tensor([[1, 2]]), torch.tensor([[3], [4]]), cfg)
    >>> words, cnt = run_program(prog, cfg); prog.outputs(words).tolist(), cnt["macs"]
    ([[11]], 4)
    """
    cfg = program.cfg if cfg is None else cfg
    if cfg != program.cfg:
        raise ValueError("cfg differs from the configuration the program was compiled for")
    if imem_depth is None:
        o_words, model = execute(program.instructions, program.i_stream, cfg)
    else:
        o_words, model = [], CoreModel(cfg)
        for seg in program.segments(imem_depth):
            words, model = execute(seg.instructions, seg.i_stream, cfg, model)
            if len(words) != seg.o_words:
                raise ValueError(f"segment sent {len(words)} words, expected {seg.o_words}")
            o_words += words
    counters = dict(macs=model.counters["macs"], busy=model.counters["busy"],
                    overflow=model.counters["overflow"], words_in=model.words_in,
                    words_out=model.words_out, instructions=len(program.instructions))
    return o_words, counters
