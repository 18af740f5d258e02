"""Compiler: GEMM and conv2d layers to instruction streams for the accelerator core.

``compile_gemm`` and ``compile_conv2d`` tile a layer onto a weight-stationary ``rows × cols``
array (``docs/core.md``, :mod:`mixpe.sw.isa`) and return a :class:`Program`: the instructions
(``words`` for the instruction memory), the data words the core takes from ``i_stream`` (in
order) and the layout of what comes back on ``o_stream`` (:meth:`Program.outputs` reassembles
the result tensor).

Mapping (WS)
    A K-tile of ``rows`` k values (*words*: ``lanes(mode)`` consecutive k values of a composable
    PE share one operand word) × an N-tile of ``cols`` output channels is preloaded; COMPUTE
    streams the M rows of the tile through the array; the K-tiles of one output tile
    accumulate, in k order, in the ``acc`` scratchpad (the stored value enters the top of each
    column, so saturation happens after every addition exactly as ``sw/emulate.py`` defines).
    Shapes need not be multiples of the array: a last K-tile uses ``k_rows < rows`` (the other
    PE rows add nothing) and a last N-tile leaves columns unused.

conv2d
    ``mapping="im2col"``: the compiler materializes the im2col matrix of each group
    (rows ``(n, oy, ox)``, columns ``(ic, kh, kw)``) and runs the GEMM mapping: bit-exact for
    every overflow mode (same k order as ``emulate.conv2d``). ``mapping="direct"``: the padded
    image is stored once, one asp row per pixel holding ``rows`` channel words; one PRELOAD
    per ``(c-tile, kh, kw)`` and a COMPUTE over a band of output pixels with the outer/inner
    address strides (``sh·W``, ``sw``). Its k order is ``(c-tile, kh, kw, ic)``, so it is
    used when the order cannot matter: wrapping accumulators, 1×1 kernels, or a proven
    absence of overflow. ``"auto"`` (default) picks direct when it is exact and fits, else
    im2col. Groups are compiled one after the other.

Memories
    Double buffering (``double_buffer=True``) splits the scratchpads into ping-pong halves:
    the LOADs of step ``s+1`` are issued right after the COMPUTE of step ``s`` and overlap
    it. All weight tiles stay resident in wsp when they fit (loaded once), else they go
    through two slots. For a GEMM the activation block of an M-tile either stays in asp for
    all its N-tiles or is streamed per step (more words, but M-tiles not divided by the
    number of K-tiles), whichever a rough cost estimate prefers. Tiles are sized to fit the
    memories; when even the smallest tile does not fit, a ``ValueError`` names the layer
    dimensions and the memory. A program longer than ``imem_depth`` raises too, unless
    ``allow_segments=True`` (then :meth:`Program.segments` splits it into runs).

Requantization
    With ``requant`` (:class:`mixpe.sw.requant.Requant`) each output tile goes through
    REQUANT into asp and the codes are stored; without, the raw accumulators are stored.
    N-tiles are then at most ``min(rows, cols)`` wide (a REQUANT writes one asp row per acc
    row).

Variants
    ``variant_map`` selects, per output channel (``[N]``) or per k and output channel
    (``[K, N]``; conv: ``[OC]`` or per kernel ``[OC, C/groups]``), which of the array's
    multipliers (``cfg.array.pe_configs``) computes the products; K-tiles are cut where the
    selection changes, and each PRELOAD loads a select row. Variants with their own number formats
    (``ArrayConfig.variant_index``) take codes of their own width: the compiler stores them
    zero-extended in the port-wide wsp/asp elements and rejects codes that do not fit.

This module never imports Amaranth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import isa
from .core_config import CoreConfig
from .isa import Instr, Mem, Opcode
from .numerics import as_int64, from_code
from .requant import Requant

__all__ = [
    "Program",
    "Segment",
    "OutputPiece",
    "compile_gemm",
    "compile_conv2d",
    "MAPPINGS",
    "pack_lanes",
    "code_values",
    "zero_code",
]

#: conv2d mappings.
MAPPINGS = ("auto", "direct", "im2col")

_MAX_INNER = 255  # COMPUTE m_inner / m_outer field limits
_MAX_OUTER = 255
_MAX_LOAD_ROWS = (1 << 13) - 1


# -- helpers on codes -------------------------------------------------------------------------


def code_values(fmt, codes) -> torch.Tensor:
    """Operand values of port codes under ``fmt`` (an ``OperandFormat`` or number format).

    >>> from mixpe.sw.mult.base import OperandFormat
    >>> code_values(OperandFormat(4), torch.tensor([1, 15])).tolist()
    [1, -1]
    """
    codes = as_int64(codes)
    if fmt.bits <= 16:
        return fmt.values()[codes]
    return fmt.decode(codes)


def zero_code(fmt) -> int:
    """The smallest code whose value is 0 (the padding code), ``ValueError`` if none."""
    if fmt.bits > 16:
        return 0
    hits = torch.nonzero(fmt.values() == 0)
    if not hits.numel():
        raise ValueError(f"format {fmt} has no zero value: cannot pad")
    return int(hits[0, 0])


def pack_lanes(codes, lanes: int, q: int) -> torch.Tensor:
    """Pack ``lanes`` consecutive values of the last dimension into one word each: lane ``t``
    at bits ``[q·t, q·t + q)``; the last dimension is zero-padded to a multiple of ``lanes``.

    >>> pack_lanes(torch.tensor([[1, 2, 3]]), 2, 4).tolist()
    [[33, 3]]
    """
    codes = as_int64(codes)
    if lanes == 1:
        return codes.clone()
    k = codes.shape[-1]
    kw = -(-k // lanes)
    pad = torch.zeros(codes.shape[:-1] + (kw * lanes - k,), dtype=torch.int64)
    c = torch.cat([codes, pad], -1).reshape(codes.shape[:-1] + (kw, lanes))
    shifts = torch.arange(lanes, dtype=torch.int64) * q
    return (c << shifts).sum(-1)


# -- the program --------------------------------------------------------------------------------


@dataclass
class OutputPiece:
    """What one STORE sends back: ``rows`` rows of ``mem``; ``index[r, e]`` is the flat index
    in the output tensor of element ``e`` of row ``r`` (``-1``: not part of the output)."""

    mem: Mem
    rows: int
    words: int
    index: torch.Tensor


@dataclass
class Segment:
    """One run of a segmented program (:meth:`Program.segments`): instructions (ending with
    END), its ``i_stream`` words and how many ``o_stream`` words it sends."""

    instructions: list
    i_stream: list
    o_words: int

    @property
    def words(self) -> list[int]:
        return [isa.encode(i) for i in self.instructions]


@dataclass
class Program:
    """A compiled layer: instructions, input stream, output layout.

    Attributes
    ----------
    cfg : CoreConfig
    instructions : list of Instr
    i_stream : list of int
        32-bit words the core reads from ``i_stream``, in order.
    pieces : list of OutputPiece
        One per STORE, in ``o_stream`` order.
    out_shape : tuple
        Shape of :meth:`outputs` (``[M, N]`` or ``[N, OC, OH, OW]``).
    requant : Requant or None
        The requantization applied on the core (outputs are then codes decoded to values).
    info : dict
        Layer and tiling description (``kind``, dims, tile sizes, ``macs`` = useful MACs).
    """

    cfg: CoreConfig
    instructions: list = field(default_factory=list)
    i_stream: list = field(default_factory=list)
    pieces: list = field(default_factory=list)
    out_shape: tuple = ()
    requant: Any = None
    info: dict = field(default_factory=dict)

    @property
    def words(self) -> list[int]:
        """The 64-bit instruction words (imem contents)."""
        return [isa.encode(i) for i in self.instructions]

    @property
    def text(self) -> str:
        """Disassembly, one instruction per line."""
        return isa.disassemble(self.words)

    @property
    def o_words(self) -> int:
        """Number of 32-bit words the program sends on ``o_stream``."""
        return sum(p.words for p in self.pieces)

    def outputs(self, o_words) -> torch.Tensor:
        """Reassemble the layer output (int64 ``out_shape``) from the ``o_stream`` words.

        Raw accumulator values without ``requant``; with it the requantized outputs (the
        stored codes read back as values in ``[lo, hi]``). Counter words (a ``STORE cnt``)
        are skipped.
        """
        o_words = [int(w) for w in o_words]
        if len(o_words) != self.o_words:
            raise ValueError(f"o_words: expected {self.o_words} words, got {len(o_words)}")
        numel = 1
        for d in self.out_shape:
            numel *= d
        out = torch.zeros(numel, dtype=torch.int64)
        seen = torch.zeros(numel, dtype=torch.bool)
        pos = 0
        a_bits = self.cfg.array.a_bits
        for p in self.pieces:
            chunk = o_words[pos:pos + p.words]
            pos += p.words
            if p.mem == Mem.CNT:
                continue
            vals = isa.unpack_rows(p.mem, chunk, self.cfg, p.rows)
            if p.mem == Mem.ASP:
                vals = from_code(vals, a_bits, self.requant is not None and self.requant.lo < 0)
            mask = p.index >= 0
            out[p.index[mask]] = vals[mask]
            seen[p.index[mask]] = True
        if not bool(seen.all()):
            raise ValueError("program output layout does not cover every output element")
        return out.reshape(self.out_shape)

    def counters(self, o_words) -> dict[str, int] | None:
        """The counter values of the last ``STORE cnt`` in ``o_words`` (None without one)."""
        o_words = [int(w) for w in o_words]
        pos, found = 0, None
        for p in self.pieces:
            if p.mem == Mem.CNT:
                found = isa.unpack_counters(o_words[pos:pos + p.words], int(p.index[0, 0]))
            pos += p.words
        return found

    def __len__(self):
        return len(self.instructions)

    def segments(self, imem_depth: int | None = None) -> list["Segment"]:
        """Split the program into runs that each fit the instruction memory.

        Each segment is the program's CONFIG, a slice of its instructions and an END, with the
        ``i_stream`` words its LOADs take and the number of ``o_stream`` words its STOREs send;
        running them one after the other (``start`` … ``done`` each) on the same core computes
        the same outputs, because the scratchpads keep their contents across runs and a cut is
        only made right before a PRELOAD or after a FENCE (never between a PRELOAD and the
        COMPUTE that swaps its weights in). ``imem_depth`` defaults to the configuration's.

        >>> import torch
        >>> from mixpe.sw.core_config import CORE_PRESETS
        >>> cfg = CORE_PRESETS["tiny-2x2"]
        >>> prog = compile_gemm(torch.ones(5, 9, dtype=torch.long),
        ...                     torch.ones(9, 2, dtype=torch.long), cfg)
        >>> [len(s.instructions) <= 12 for s in prog.segments(12)]
        [True, True, True]
        """
        depth = self.cfg.memory.imem_depth if imem_depth is None else imem_depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4:
            raise ValueError(f"imem_depth must be an integer >= 4, not {imem_depth!r}")
        ins = self.instructions
        if len(ins) <= depth:
            return [Segment(list(ins), list(self.i_stream), self.o_words)]
        head, body = ins[0], ins[1:-1]
        assert head.op == Opcode.CONFIG and ins[-1].op == Opcode.END
        room = depth - 2
        cuts, start = [], 0
        while len(body) - start > room:
            best = None
            for j in range(start + 1, start + room + 1):  # cut before body[j]
                nxt = body[j]
                if nxt.op == Opcode.PRELOAD or (body[j - 1].op == Opcode.FENCE and not (
                        nxt.op == Opcode.COMPUTE and not nxt.swap)):
                    best = j
            if best is None:
                raise ValueError(f"imem_depth={depth}: no PRELOAD or FENCE within {room} "
                                 f"instructions to cut the program at")
            cuts.append(best)
            start = best
        bounds = [0] + cuts + [len(body)]
        out, pos, piece = [], 0, 0
        for b0, b1 in zip(bounds, bounds[1:]):
            part = body[b0:b1]
            n_in = n_out = 0
            for i in part:
                if i.op == Opcode.LOAD:
                    n_in += i.rows * self.cfg.row_words(Mem(i.mem).name.lower())
                elif i.op == Opcode.STORE:
                    n_out += self.pieces[piece].words
                    piece += 1
            out.append(Segment([head] + list(part) + [Instr(Opcode.END)],
                               self.i_stream[pos:pos + n_in], n_out))
            pos += n_in
        return out


# -- builder ------------------------------------------------------------------------------------


@dataclass
class _Step:
    """One weight tile's worth of work: LOADs to prefetch, PRELOAD, COMPUTEs, then ``post``."""

    loads: list            # [(mem, addr, rows_tensor)]
    preload: Instr | None
    computes: list         # [Instr]
    post: Callable | None = None  # emits the output tile's epilogue


class _Builder:
    def __init__(self, cfg: CoreConfig, prog: Program):
        self.cfg = cfg
        self.prog = prog

    def emit(self, instr: Instr):
        self.prog.instructions.append(instr)

    def load(self, mem: Mem, addr: int, rows: torch.Tensor):
        n = int(rows.shape[0])
        for r0 in range(0, n, _MAX_LOAD_ROWS):
            part = rows[r0:r0 + _MAX_LOAD_ROWS]
            self.emit(Instr(Opcode.LOAD, mem=mem, addr=addr + r0, rows=int(part.shape[0])))
            self.prog.i_stream.extend(isa.pack_rows(mem, part, self.cfg))

    def store(self, mem: Mem, addr: int, index: torch.Tensor):
        n = int(index.shape[0])
        self.emit(Instr(Opcode.STORE, mem=mem, addr=addr, rows=n))
        words = n * (isa.COUNTER_WORDS if mem == Mem.CNT else
                     self.cfg.row_words(mem.name.lower()))
        self.prog.pieces.append(OutputPiece(mem, n, words, index))

    def run_steps(self, steps: list[_Step], double_buffer: bool):
        """Emit the steps, prefetching step ``s+1``'s LOADs behind step ``s``'s COMPUTE."""
        if not steps:
            return
        for mem, addr, rows in steps[0].loads:
            self.load(mem, addr, rows)
        for s, st in enumerate(steps):
            if st.preload is not None:
                self.emit(st.preload)
            for c in st.computes:
                self.emit(c)
            nxt = steps[s + 1] if s + 1 < len(steps) else None
            if double_buffer and nxt is not None:
                for mem, addr, rows in nxt.loads:
                    self.load(mem, addr, rows)
            if st.post is not None:
                st.post()
            if not double_buffer and nxt is not None and nxt.loads:
                # one buffer: the next LOADs (and computes) reuse the rows in flight, and a
                # STORE of the epilogue may still be reading acc
                self.emit(Instr(Opcode.FENCE))
                for mem, addr, rows in nxt.loads:
                    self.load(mem, addr, rows)


def _compute_instrs(asp_addr, acc_addr, n_rows, accumulate, swap):
    """COMPUTEs streaming ``n_rows`` consecutive asp rows into consecutive acc rows."""
    out = []
    done = 0
    while done < n_rows:
        left = n_rows - done
        if left >= _MAX_INNER:
            inner = _MAX_INNER
            outer = min(left // _MAX_INNER, _MAX_OUTER)
        else:
            inner, outer = left, 1
        out.append(Instr(Opcode.COMPUTE, asp_addr=asp_addr + done, acc_addr=acc_addr + done,
                         m_outer=outer, m_inner=inner, a_stride_outer=inner, a_stride_inner=1,
                         acc_stride=1, accumulate=int(accumulate), swap=int(swap and not done)))
        done += outer * inner
    return out


# -- validation ---------------------------------------------------------------------------------


def _check_cfg(cfg) -> CoreConfig:
    if not isinstance(cfg, CoreConfig):
        raise TypeError(f"cfg must be a CoreConfig, not {type(cfg).__name__}")
    if cfg.array.dataflow != "ws":
        raise ValueError(f"cfg.array.dataflow={cfg.array.dataflow!r} is not supported by the "
                         f"compiler; allowed: ws")
    return cfg


def _mode_info(cfg: CoreConfig, mode):
    """``(mode index for CONFIG, lanes, lane bits q, lane formats or None)``."""
    arr = cfg.array
    if not arr.pe.composable:
        if mode not in (None, 0):
            raise ValueError(f"mode: {arr.pe.mult} has no precision modes; allowed: None or 0")
        return 0, 1, None
    m = len(arr.modes) - 1 if mode is None else mode
    if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m < len(arr.modes):
        raise ValueError(f"mode must be an integer in [0, {len(arr.modes) - 1}], not {mode!r}")
    return m, arr.lanes(m), arr.modes[m]


def _check_codes(x, name, bits, shape_desc):
    try:
        x = as_int64(x)
    except TypeError:
        raise ValueError(f"{name} must be an integer tensor of codes") from None
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= 1 << bits):
        bad = int(x.min()) if int(x.min()) < 0 else int(x.max())
        raise ValueError(f"{name} codes must lie in [0, {(1 << bits) - 1}] ({bits}-bit "
                         f"{shape_desc}), got {bad}")
    return x


def _check_requant(requant, n_out, cfg):
    if requant is None:
        return None
    if not isinstance(requant, Requant):
        raise ValueError(f"requant must be a Requant or None, not {type(requant).__name__}")
    requant.channel_params(n_out)  # channel count check
    a_bits = cfg.array.a_bits
    lo, hi = (-(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1) if requant.lo < 0 else \
        (0, (1 << a_bits) - 1)
    if requant.lo < lo or requant.hi > hi:
        raise ValueError(f"requant: lo={requant.lo}, hi={requant.hi} do not fit the "
                         f"{a_bits}-bit activation codes [{lo}, {hi}]")
    bias = requant.channel_params(n_out)[0]
    alo, ahi = -(1 << (cfg.array.acc_bits - 1)), (1 << (cfg.array.acc_bits - 1)) - 1
    if bias.numel() and (int(bias.min()) < alo or int(bias.max()) > ahi):
        raise ValueError(f"requant.bias must lie in the {cfg.array.acc_bits}-bit accumulator "
                         f"range [{alo}, {ahi}]")
    return requant


def _check_acc_init(acc_init, shape, cfg):
    if acc_init is None:
        return None
    t = as_int64(acc_init)
    try:
        t = t.expand(shape)
    except RuntimeError:
        raise ValueError(f"acc_init: shape {tuple(as_int64(acc_init).shape)} does not "
                         f"broadcast to {tuple(shape)}") from None
    lo, hi = -(1 << (cfg.array.acc_bits - 1)), (1 << (cfg.array.acc_bits - 1)) - 1
    if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
        raise ValueError(f"acc_init values must lie in the {cfg.array.acc_bits}-bit accumulator "
                         f"range [{lo}, {hi}]")
    return t


def _check_variants(vm, shape_ok, desc, cfg):
    if vm is None:
        return None
    vm = as_int64(vm)
    if tuple(vm.shape) not in shape_ok:
        raise ValueError(f"variant_map: shape {tuple(vm.shape)} must be {desc}")
    nv = cfg.array.n_variants
    if vm.numel() and (int(vm.min()) < 0 or int(vm.max()) >= nv):
        raise ValueError(f"variant_map values must lie in [0, {nv - 1}] (variant indices of "
                         f"cfg.array.pe_configs)")
    if cfg.array.sel_bits > cfg.array.b_bits:
        raise ValueError(f"variant_map: {nv} variants need {cfg.array.sel_bits} select bits, "
                         f"more than a weight element holds ({cfg.array.b_bits})")
    return vm


def _check_variant_codes(cfg, a, b, vm, names, per_k=True):
    """Format variants (``ArrayConfig.has_format_variants``): the codes of every product must
    fit the code widths of its variant (``variant_code_bits``), as the hardware reads only
    their low bits (the code-width rule; the compiler passes codes zero-extended). ``a`` is
    ``[M, K]`` (``per_k=False``: any shape, checked against every variant used), ``b`` and
    ``vm`` (or None: variant 0) ``[K, N]``."""
    arr = cfg.array
    if not arr.has_format_variants:
        return
    if vm is None:
        vm = torch.zeros(b.shape, dtype=torch.int64)
    for v in torch.unique(vm).tolist():
        ab, bb = arr.variant_code_bits(v)
        hit = vm == v
        spec = f"variant {v} ({arr.pe_configs[v].name})"
        wb = b[hit]
        if wb.numel() and int(wb.max()) >= 1 << bb:
            raise ValueError(f"{names[1]}: {spec} takes {bb}-bit weight codes in [0, "
                             f"{(1 << bb) - 1}], got {int(wb.max())}")
        ka = hit.any(1) if per_k else None
        xa = a[:, ka] if per_k else a
        if xa.numel() and int(xa.max()) >= 1 << ab:
            raise ValueError(f"{names[0]}: {spec} takes {ab}-bit activation codes in [0, "
                             f"{(1 << ab) - 1}], got {int(xa.max())}")


def _cut_tiles(n: int, size: int, key: torch.Tensor | None = None) -> list[tuple[int, int]]:
    """Split ``range(n)`` into tiles of at most ``size``, cutting also where ``key[i]``
    (a row per index) changes."""
    tiles, start = [], 0
    for i in range(1, n + 1):
        if i == n or i - start == size or (key is not None and not torch.equal(key[i],
                                                                                key[start])):
            tiles.append((start, i))
            start = i
    return tiles


def _balanced(n: int, cap: int) -> int:
    """Largest even split of ``n`` into tiles of at most ``cap``."""
    parts = -(-n // cap)
    return -(-n // parts)


# -- the GEMM mapping -----------------------------------------------------------------------------


class _Layer:
    """Shared state of one compiled layer (possibly several GEMMs, e.g. conv groups)."""

    def __init__(self, cfg, prog, *, requant, acc_overwrite, double_buffer, mode_idx, vm_used,
                 a_pad=0, w_pad=0, k_total=0):
        self.cfg = cfg
        self.b = _Builder(cfg, prog)
        self.prog = prog
        self.info = prog.info
        self.a_pad, self.w_pad = a_pad, w_pad  # codes of value 0 (padding)
        self.k_total = k_total
        self.a_blocks = 0      # asp A blocks/slots used (ping-pong parity)
        self.w_slot = 0        # wsp slots used (ping-pong parity)
        self.gemm_no = 0       # GEMMs (conv groups) emitted
        self.qsp_loaded = False
        self.requant = requant
        self.acc_overwrite = acc_overwrite
        self.h = 2 if double_buffer else 1
        self.double_buffer = double_buffer
        self.mode_idx = mode_idx
        self.sel = vm_used
        self.tile_rows = cfg.array.rows + (1 if vm_used else 0)
        self.out_tiles = 0  # output tiles emitted (acc / out / qsp half parity)
        self.steps: list[_Step] = []
        self.qsp_all = None  # qsp rows resident for every channel (None: per tile)

    def config(self):
        rq = self.requant
        self.b.emit(Instr(Opcode.CONFIG, mode=self.mode_idx,
                          relu=int(bool(rq.relu)) if rq else 0, zp=rq.zp if rq else 0,
                          lo=rq.lo if rq else 0, hi=rq.hi if rq else 0,
                          acc_overwrite_default=int(self.acc_overwrite)))

    def qsp_rows(self, n0, n1, n_total_ch, ch_offset):
        bias, mult, shift = self.requant.channel_params(n_total_ch)
        sl = slice(ch_offset + n0, ch_offset + n1)
        return torch.stack([bias[sl], mult[sl], shift[sl]], 1)

    def w_tile_rows(self, w_words, k0, k1, n0, n1, sel_row):
        """``[tile_rows, cols]`` wsp rows: weight words rows k0..k1 of columns n0..n1."""
        cfg = self.cfg.array
        t = torch.full((self.tile_rows, cfg.cols), self.w_pad, dtype=torch.int64)
        t[:k1 - k0, :n1 - n0] = w_words[k0:k1, n0:n1]
        if self.sel:
            t[cfg.rows] = 0
            t[cfg.rows, :n1 - n0] = sel_row
        return t

    def epilogue(self, acc_base, n_rows, index_fn, n0, n1, qsp_addr, out_asp_base):
        """FENCE; [REQUANT; FENCE]; STORE of one output tile. ``index_fn(t, j)`` gives the
        flat output index of acc row ``t`` column ``j`` (``[n_rows, cols]`` tensor)."""
        cfg = self.cfg.array
        b = self.b
        index = index_fn()
        b.emit(Instr(Opcode.FENCE))
        if self.requant is not None:
            b.emit(Instr(Opcode.REQUANT, acc_addr=acc_base, asp_addr=out_asp_base, rows=n_rows,
                         qsp_addr=qsp_addr))
            b.emit(Instr(Opcode.FENCE))
            width = min(cfg.rows, cfg.cols)
            idx = torch.full((n_rows, cfg.rows), -1, dtype=torch.int64)
            idx[:, :min(width, n1 - n0)] = index[:, :min(width, n1 - n0)]
            b.store(Mem.ASP, out_asp_base, idx)
        else:
            idx = index.clone()
            idx[:, n1 - n0:] = -1
            b.store(Mem.ACC, acc_base, idx)


def _gemm_tiles(layer: _Layer, a_words, w_words, *, vm_words, acc_init, out_index,
                qsp_channels, qsp_offset):
    """Append the steps of one GEMM ``a_words [M, Kw] @ w_words [Kw, N]`` to ``layer``.

    ``out_index [M, N]``: flat output index of every result; ``vm_words``: ``[Kw, N]``
    variant per word and column (or None); ``acc_init [M, N]`` or None.
    """
    cfg = layer.cfg
    arr, mem = cfg.array, cfg.memory
    R, C = arr.rows, arr.cols
    M, Kw = a_words.shape
    N = w_words.shape[1]
    h = layer.h
    ncols = min(R, C) if layer.requant is not None else C
    k_tiles = _cut_tiles(Kw, R, vm_words)
    n_tiles = _cut_tiles(N, ncols)
    KT, NT = len(k_tiles), len(n_tiles)
    dims = f"GEMM M={M}, K={layer.k_total}, N={N}"
    # wsp: all weight tiles resident when they fit, else ping-pong slots
    n_wt = KT * NT
    resident_w = n_wt * layer.tile_rows <= mem.wsp_depth
    if not resident_w and h * layer.tile_rows > mem.wsp_depth:
        raise ValueError(f"{dims}: a weight tile of {layer.tile_rows} rows does not fit "
                         f"wsp_depth={mem.wsp_depth} ({h} buffers)")
    # qsp
    if layer.requant is not None and layer.qsp_all is None:
        if qsp_channels <= mem.qsp_depth:
            layer.qsp_all = True
        elif h * ncols <= mem.qsp_depth:
            layer.qsp_all = False
        else:
            raise ValueError(f"{dims}: {h} requant tiles of {ncols} channels do not fit "
                             f"qsp_depth={mem.qsp_depth}")
    # M tile. Two plans: keep the A block of an m-tile (KT·Mt asp rows) resident and reuse it
    # across the n-tiles, or stream A(m, k) into ping-pong slots at every step (reloaded per
    # n-tile, but Mt is not divided by KT); the cheaper by :func:`_plan_cost` wins.
    out_rows = 1 if layer.requant is not None else 0
    acc_cap = mem.acc_depth // h
    plans = []
    for reuse_a in (True, False):
        blocks = (KT if reuse_a else 1) + out_rows
        cap = min(acc_cap, mem.asp_depth // (h * blocks))
        if cap >= 1:
            mt = _balanced(M, cap)
            plans.append((_plan_cost(cfg, M, mt, KT, NT, reuse_a, resident_w, layer.tile_rows,
                                     out_rows), reuse_a, mt))
    if not plans:
        if acc_cap < 1:
            raise ValueError(f"{dims}: does not fit acc_depth={mem.acc_depth}")
        raise ValueError(f"{dims}: one activation row (+ one output row) per buffer does not "
                         f"fit asp_depth={mem.asp_depth} ({h} buffers)")
    _, reuse_a, Mt = min(plans)
    m_tiles = [(m0, min(M, m0 + Mt)) for m0 in range(0, M, Mt)]
    a_half = (KT if reuse_a else 1) * Mt
    out_base = h * a_half  # asp rows after the A halves hold requant outputs
    layer.info.update(k_tiles=KT, n_tiles=NT, m_tile=Mt, m_tiles=len(m_tiles),
                      resident_weights=resident_w, reuse_a=reuse_a)
    w_loaded: set = set()
    for mi, (m0, m1) in enumerate(m_tiles):
        if reuse_a:
            a_block = (layer.a_blocks % h) * a_half
            layer.a_blocks += 1
        for ni, (n0, n1) in enumerate(n_tiles):
            tile_no = layer.out_tiles
            layer.out_tiles += 1
            acc_base = (tile_no % h) * Mt
            rows_m = m1 - m0
            loads_first = []
            if acc_init is not None:
                init = torch.zeros(rows_m, C, dtype=torch.int64)
                init[:, :n1 - n0] = acc_init[m0:m1, n0:n1]
                loads_first.append((Mem.ACC, acc_base, init))
            qsp_addr = 0
            if layer.requant is not None:
                if layer.qsp_all:
                    qsp_addr = qsp_offset + n0
                    if not layer.qsp_loaded:
                        layer.qsp_loaded = True
                        loads_first.append((Mem.QSP, 0, layer.qsp_rows(0, qsp_channels,
                                                                       qsp_channels, 0)))
                else:
                    qsp_addr = (tile_no % h) * ncols
                    loads_first.append((Mem.QSP, qsp_addr,
                                        layer.qsp_rows(n0, n1, qsp_channels, qsp_offset)))
            for ki, (k0, k1) in enumerate(k_tiles):
                loads = list(loads_first) if ki == 0 else []
                if reuse_a:
                    a_addr = a_block + ki * Mt
                else:
                    a_addr = (layer.a_blocks % h) * a_half
                    layer.a_blocks += 1
                if ni == 0 or not reuse_a:
                    a = torch.zeros(rows_m, R, dtype=torch.int64) + layer.a_pad
                    a[:, :k1 - k0] = a_words[m0:m1, k0:k1]
                    loads.append((Mem.ASP, a_addr, a))
                wkey = (layer.gemm_no, ki, ni)
                if resident_w:
                    w_addr = (ki * NT + ni) * layer.tile_rows
                else:
                    w_addr = (layer.w_slot % h) * layer.tile_rows
                    layer.w_slot += 1
                if not resident_w or wkey not in w_loaded:
                    w_loaded.add(wkey)
                    sel_row = vm_words[k0, n0:n1] if vm_words is not None else None
                    loads.append((Mem.WSP, w_addr, layer.w_tile_rows(w_words, k0, k1, n0, n1,
                                                                     sel_row)))
                pre = Instr(Opcode.PRELOAD, wsp_addr=w_addr, k_rows=k1 - k0,
                            sel_addr=w_addr + R if layer.sel else 0, sel_en=int(layer.sel))
                accumulate = ki > 0 if layer.acc_overwrite else False
                comps = _compute_instrs(a_addr, acc_base, rows_m, accumulate, True)
                post = None
                if ki == KT - 1:
                    def post(acc_base=acc_base, rows_m=rows_m, m0=m0, m1=m1, n0=n0, n1=n1,
                             qsp_addr=qsp_addr, tile_no=tile_no):
                        def index_fn():
                            idx = torch.full((rows_m, C), -1, dtype=torch.int64)
                            idx[:, :n1 - n0] = out_index[m0:m1, n0:n1]
                            return idx
                        layer.epilogue(acc_base, rows_m, index_fn, n0, n1, qsp_addr,
                                       out_base + (tile_no % h) * Mt)
                layer.steps.append(_Step(loads, pre, comps, post))
    layer.gemm_no += 1


def _plan_cost(cfg, M, Mt, KT, NT, reuse_a, resident_w, tile_rows, out_rows) -> int:
    """Rough cycles of a GEMM plan (to choose between plans, not a prediction): every step
    costs the longer of its COMPUTE (+ preload and issue overhead) and the LOADs that
    overlap it; every output tile a drain and its STORE."""
    arr = cfg.array
    a_words = cfg.row_words("asp")
    w_words = tile_rows * cfg.row_words("wsp")
    out_words = cfg.row_words("asp" if out_rows else "acc")
    drain = 1 + arr.rows * arr.pe.latency + arr.cols + 4
    n_mt, last = divmod(M, Mt)
    total = 0
    for rows, count in ((Mt, n_mt), (last, 1 if last else 0)):
        for ni in range(NT):
            loads = (0 if resident_w else w_words) + (rows * a_words
                                                      if ni == 0 or not reuse_a else 0)
            step = max(rows + arr.rows + 4, loads + 2)
            total += count * (KT * step + drain + rows * out_words)
    return total


def _finish(layer: _Layer, read_counters: bool, allow_segments: bool = False):
    layer.b.run_steps(layer.steps, layer.double_buffer)
    layer.steps = []
    if read_counters:
        layer.b.emit(Instr(Opcode.FENCE))
        n = len(isa.COUNTERS)
        layer.b.store(Mem.CNT, 0, torch.zeros(n, 1, dtype=torch.int64))
    layer.b.emit(Instr(Opcode.END))
    prog = layer.prog
    if len(prog.instructions) > layer.cfg.memory.imem_depth and not allow_segments:
        raise ValueError(f"{prog.info.get('dims', 'layer')}: the program has "
                         f"{len(prog.instructions)} instructions, more than "
                         f"imem_depth={layer.cfg.memory.imem_depth} (allow_segments=True "
                         f"splits it into several runs)")
    return prog


def _new_layer(cfg, prog, *, requant, acc_overwrite, double_buffer, mode_idx, vm, a_pad, w_pad,
               k_total):
    layer = _Layer(cfg, prog, requant=requant, acc_overwrite=acc_overwrite,
                   double_buffer=double_buffer, mode_idx=mode_idx, vm_used=vm is not None,
                   a_pad=a_pad, w_pad=w_pad, k_total=k_total)
    layer.config()
    return layer


def _operand_words(cfg, codes_a, codes_b, mode, names=("a_codes", "b_codes")):
    """Validate codes and pack lanes: ``(a_words [.., Kw], b_words [Kw, ..], mode_idx, lanes,
    a_pad, w_pad)`` (``b`` given as ``[K, N]``)."""
    arr = cfg.array
    mode_idx, lanes, q = _mode_info(cfg, mode)
    if lanes == 1 and q is None:
        a = _check_codes(codes_a, names[0], arr.a_bits, "activation codes")
        b = _check_codes(codes_b, names[1], arr.b_bits, "weight codes")
        mult = arr.pe.multiplier
        return a, b, mode_idx, 1, zero_code(mult.a_format), zero_code(mult.b_format)
    a = _check_codes(codes_a, names[0], q, f"lane codes at precision q={q}")
    b = _check_codes(codes_b, names[1], q, f"lane codes at precision q={q}")
    aw = pack_lanes(a, lanes, q)
    bw = pack_lanes(b.transpose(-1, -2), lanes, q).transpose(-1, -2)
    return aw, bw, mode_idx, lanes, 0, 0


def _vm_words(vm_kn: torch.Tensor | None, lanes: int, K: int):
    """Variant per operand word: ``[Kw, N]`` from ``[K, N]`` (constant within a word)."""
    if vm_kn is None or lanes == 1:
        return vm_kn
    kw = -(-K // lanes)
    pad = vm_kn[-1:].expand(kw * lanes - K, -1)
    v = torch.cat([vm_kn, pad]).reshape(kw, lanes, -1)
    if not bool((v == v[:, :1]).all()):
        raise ValueError(f"variant_map: the {lanes} k values packed in one operand word must "
                         f"use the same variant")
    return v[:, 0].contiguous()


def compile_gemm(a_codes, b_codes, cfg: CoreConfig, *, requant: Requant | None = None,
                 acc_overwrite: bool = True, acc_init=None, double_buffer: bool = True,
                 mode: int | None = None, variant_map=None,
                 read_counters: bool = False, allow_segments: bool = False) -> Program:
    """Compile ``C = A @ B`` for the core.

    Parameters
    ----------
    a_codes : integer tensor ``[M, K]``
        Activation codes (``a_bits``-bit port codes; with a composable PE, ``q``-bit lane
        codes at the precision of ``mode``, packed ``lanes`` per word by the compiler).
    b_codes : integer tensor ``[K, N]``
        Weight codes (likewise).
    cfg : CoreConfig
    requant : Requant, optional
        Requantize on the core (outputs are then the requantized values).
    acc_overwrite : bool
        True: the first K-tile overwrites the accumulators. False: the accumulators start
        from ``acc_init`` (loaded into acc; required), every addition included; this sets
        CONFIG ``acc_overwrite_default = 0``.
    acc_init : integer tensor broadcastable to ``[M, N]``, optional
        Accumulator preload (a bias, as ``emulate.matmul(bias=...)``); needs
        ``acc_overwrite=False``.
    double_buffer : bool
        Ping-pong halves so that LOADs overlap COMPUTE (False: every step fenced).
    mode : int, optional
        Precision index of a composable PE (default: full precision).
    variant_map : integer tensor ``[N]`` or ``[K, N]``, optional
        Multiplier variant (index into ``cfg.array.pe_configs``) per column / per product.
    read_counters : bool
        End with a ``STORE cnt`` of the whole counter bank (:meth:`Program.counters`).
    allow_segments : bool
        Accept programs longer than ``imem_depth`` (run them with
        :meth:`Program.segments`); otherwise they raise ``ValueError``.

    Returns
    -------
    Program
        ``program.outputs(o_words)`` is ``[M, N]``.

    Raises
    ------
    ValueError
        Bad shapes, codes, options, or a layer that cannot fit the memories (the message names
        the layer dimensions and the memory).

    Examples
    --------
    >>> from mixpe.sw.core_config import CORE_PRESETS
    >>> from mixpe.sw.core_ref import run_program
    >>> cfg = CORE_PRESETS["tiny-2x2"]
    >>> a = torch.tensor([[1, 2, 3]]); b = torch.tensor([[1, 0], [1, 1], [1, 2]])
    >>> prog = compile_gemm(a, b, cfg)
    >>> prog.outputs(run_program(prog, cfg)[0]).tolist()
    [[6, 8]]
    """
    cfg = _check_cfg(cfg)
    a_t, b_t = as_int64(a_codes), as_int64(b_codes)
    if a_t.dim() != 2 or b_t.dim() != 2 or a_t.shape[1] != b_t.shape[0]:
        raise ValueError(f"a_codes [M, K] and b_codes [K, N] must be matrices with equal K, got "
                         f"{tuple(a_t.shape)} and {tuple(b_t.shape)}")
    M, K = a_t.shape
    N = b_t.shape[1]
    if min(M, K, N) < 1:
        raise ValueError(f"GEMM dims must be positive, got M={M}, K={K}, N={N}")
    aw, bw, mode_idx, lanes, a_pad, w_pad = _operand_words(cfg, a_t, b_t, mode)
    vm = _check_variants(variant_map, {(N,), (K, N)}, f"[N] = [{N}] or [K, N] = [{K}, {N}]",
                         cfg)
    if vm is not None and vm.dim() == 1:
        vm = vm[None].expand(K, N)
    _check_variant_codes(cfg, a_t, b_t, vm, ("a_codes", "b_codes"))
    vmw = _vm_words(vm, lanes, K)
    requant = _check_requant(requant, N, cfg)
    if not acc_overwrite and acc_init is None:
        raise ValueError("acc_overwrite=False needs acc_init (the accumulator preload)")
    if acc_overwrite and acc_init is not None:
        raise ValueError("acc_init needs acc_overwrite=False (the accumulators start from it)")
    init = _check_acc_init(acc_init, (M, N), cfg)
    prog = Program(cfg=cfg, out_shape=(M, N), requant=requant,
                   info=dict(kind="gemm", M=M, K=K, N=N, lanes=lanes, mode=mode_idx,
                             macs=M * K * N, dims=f"GEMM M={M}, K={K}, N={N}"))
    layer = _new_layer(cfg, prog, requant=requant, acc_overwrite=acc_overwrite,
                       double_buffer=double_buffer, mode_idx=mode_idx, vm=vmw, a_pad=a_pad,
                       w_pad=w_pad, k_total=K)
    out_index = torch.arange(M * N, dtype=torch.int64).reshape(M, N)
    _gemm_tiles(layer, aw, bw, vm_words=vmw, acc_init=init, out_index=out_index,
                qsp_channels=N, qsp_offset=0)
    return _finish(layer, read_counters, allow_segments)


# -- conv2d ---------------------------------------------------------------------------------------


def _pair(v, name, lo):
    t = (v, v) if isinstance(v, int) and not isinstance(v, bool) else tuple(v) if isinstance(
        v, (tuple, list)) else None
    if t is None or len(t) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < lo
                                       for x in t):
        raise ValueError(f"{name} must be an integer >= {lo} or a pair of them, not {v!r}")
    return t


def _order_free(cfg, kh, kw, k_total, acc_init) -> bool:
    """Whether the k order cannot change the result: wrap, 1×1, or no overflow possible."""
    arr = cfg.array
    if arr.pe.overflow == "wrap" or kh * kw == 1:
        return True
    pmax = 0
    for pe in arr.pe_configs:
        lo, hi = pe.multiplier.product_range
        pmax = max(pmax, abs(lo), abs(hi))
    start = 0 if acc_init is None else int(acc_init.abs().max()) if acc_init.numel() else 0
    return start + pmax * k_total <= (1 << (arr.acc_bits - 1)) - 1


def compile_conv2d(x_codes, w_codes, cfg: CoreConfig, *, stride=1, padding=0, groups: int = 1,
                   requant: Requant | None = None, mapping: str = "auto",
                   acc_overwrite: bool = True, acc_init=None, double_buffer: bool = True,
                   mode: int | None = None, variant_map=None,
                   read_counters: bool = False, allow_segments: bool = False) -> Program:
    """Compile a 2-D convolution (cross-correlation, as ``torch.nn.functional.conv2d``).

    Parameters
    ----------
    x_codes : integer tensor ``[N, C, H, W]``
        Activation codes (lane codes with a composable PE, packed along channels for the
        direct mapping and along im2col k for im2col).
    w_codes : integer tensor ``[OC, C/groups, KH, KW]``
        Weight codes.
    stride, padding : int or pair
        Zero padding (the code of value 0).
    groups : int
    mapping : ``"auto"``, ``"direct"`` or ``"im2col"`` (see the module doc)
    variant_map : integer tensor ``[OC]`` or ``[OC, C/groups]`` (per kernel), optional
    acc_init : integer tensor ``[OC]``, optional
        Accumulator preload per output channel (needs ``acc_overwrite=False``).
    requant, acc_overwrite, double_buffer, mode, read_counters, allow_segments
        As in :func:`compile_gemm`.

    Returns
    -------
    Program
        ``program.outputs(o_words)`` is ``[N, OC, OH, OW]``; ``program.info["mapping"]`` tells
        which mapping each group used.
    """
    cfg = _check_cfg(cfg)
    x, w = as_int64(x_codes), as_int64(w_codes)
    if x.dim() != 4:
        raise ValueError(f"x_codes must be [N, C, H, W], got shape {tuple(x.shape)}")
    if w.dim() != 4:
        raise ValueError(f"w_codes must be [OC, C/groups, KH, KW], got shape {tuple(w.shape)}")
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    nb, c, hgt, wid = x.shape
    oc, cg, kh, kw = w.shape
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups \
            or oc % groups:
        raise ValueError(f"groups must be a positive integer dividing C={c} and OC={oc}, "
                         f"not {groups!r}")
    if cg != c // groups:
        raise ValueError(f"w_codes: shape {tuple(w.shape)} needs C/groups = {c // groups} input "
                         f"channels in dimension 1, got {cg}")
    oh = (hgt + 2 * ph - kh) // sh + 1
    ow = (wid + 2 * pw - kw) // sw + 1
    if kh > hgt + 2 * ph or kw > wid + 2 * pw or oh < 1 or ow < 1:
        raise ValueError(f"w_codes: kernel {kh}x{kw} is larger than the padded input "
                         f"{hgt + 2 * ph}x{wid + 2 * pw}")
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping must be one of {', '.join(MAPPINGS)}, not {mapping!r}")
    xw_dummy, ww_dummy, mode_idx, lanes, a_pad, w_pad = _operand_words(
        cfg, x.reshape(1, -1), w.reshape(-1, 1), mode, ("x_codes", "w_codes"))
    del xw_dummy, ww_dummy
    vm = _check_variants(variant_map, {(oc,), (oc, cg)}, f"[OC] = [{oc}] or [OC, C/groups] = "
                         f"[{oc}, {cg}]", cfg)
    if vm is not None and vm.dim() == 1:
        vm = vm[:, None].expand(oc, cg)
    _check_variant_codes(cfg, as_int64(x).reshape(1, -1),
                         as_int64(w).reshape(oc, -1).t(),
                         None if vm is None else vm[:, :, None].expand(oc, cg, kh * kw)
                         .reshape(oc, -1).t(), ("x_codes", "w_codes"), per_k=False)
    requant = _check_requant(requant, oc, cfg)
    if not acc_overwrite and acc_init is None:
        raise ValueError("acc_overwrite=False needs acc_init (the accumulator preload)")
    if acc_overwrite and acc_init is not None:
        raise ValueError("acc_init needs acc_overwrite=False (the accumulators start from it)")
    init = _check_acc_init(acc_init, (oc,), cfg) if acc_init is not None else None
    if init is not None and as_int64(acc_init).dim() > 1:
        raise ValueError("acc_init for conv2d must be [OC] or a scalar")
    k_total = cg * kh * kw
    dims = (f"conv2d N={nb}, C={c}, H={hgt}, W={wid}, OC={oc}, K={kh}x{kw}, stride=({sh}, {sw}),"
            f" padding=({ph}, {pw}), groups={groups}")
    prog = Program(cfg=cfg, out_shape=(nb, oc, oh, ow), requant=requant,
                   info=dict(kind="conv2d", N=nb, C=c, H=hgt, W=wid, OC=oc, KH=kh, KW=kw,
                             OH=oh, OW=ow, stride=(sh, sw), padding=(ph, pw), groups=groups,
                             lanes=lanes, mode=mode_idx, dims=dims,
                             macs=nb * oh * ow * oc * k_total, mapping=[]))
    ocg = oc // groups
    layer = _new_layer(cfg, prog, requant=requant, acc_overwrite=acc_overwrite,
                       double_buffer=double_buffer, mode_idx=mode_idx, vm=vm, a_pad=a_pad,
                       w_pad=w_pad, k_total=k_total)
    xp = torch.full((nb, c, hgt + 2 * ph, wid + 2 * pw), a_pad, dtype=torch.int64)
    xp[:, :, ph:ph + hgt, pw:pw + wid] = x
    out_index = torch.arange(nb * oc * oh * ow, dtype=torch.int64).reshape(nb, oc, oh, ow)
    order_free = _order_free(cfg, kh, kw, k_total, init)
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * ocg:(g + 1) * ocg]
        vmg = None if vm is None else vm[g * ocg:(g + 1) * ocg]
        initg = None if init is None else init[g * ocg:(g + 1) * ocg]
        idx_g = out_index[:, g * ocg:(g + 1) * ocg]
        use = mapping
        why = None
        if mapping in ("auto", "direct"):
            why = None if order_free else (
                f"the direct mapping changes the k order (c-tile, kh, kw, ic) and "
                f"overflow={cfg.array.pe.overflow!r} with a {kh}x{kw} kernel can overflow")
            if why is None:
                why = _direct_conv(layer, xg, wg, vmg, initg, idx_g, (sh, sw), (kh, kw),
                                   (oh, ow), lanes, ocg, g * ocg, oc, dims, dry=True)
            if why is not None and mapping == "direct":
                raise ValueError(f"{dims}: mapping='direct' is not possible: {why}")
            use = "direct" if why is None else "im2col"
        prog.info["mapping"].append(use)
        if use == "direct":
            _direct_conv(layer, xg, wg, vmg, initg, idx_g, (sh, sw), (kh, kw), (oh, ow), lanes,
                         ocg, g * ocg, oc, dims, dry=False)
        else:
            cols = xg.unfold(2, kh, sh).unfold(3, kw, sw)  # [N, Cg, OH, OW, KH, KW]
            a = cols.permute(0, 2, 3, 1, 4, 5).reshape(nb * oh * ow, k_total)
            b = wg.reshape(ocg, k_total).t()
            aw, bw, _, _, _, _ = _operand_words(cfg, a, b, mode, ("x_codes", "w_codes"))
            vmk = None
            if vmg is not None:
                vmk = vmg[:, :, None].expand(ocg, cg, kh * kw).reshape(ocg, k_total).t()
                vmk = _vm_words(vmk, lanes, k_total)
            a_init = None if initg is None else initg[None].expand(nb * oh * ow, ocg)
            oi = idx_g.permute(0, 2, 3, 1).reshape(nb * oh * ow, ocg)
            _gemm_tiles(layer, aw, bw, vm_words=vmk, acc_init=a_init, out_index=oi,
                        qsp_channels=oc, qsp_offset=g * ocg)
    return _finish(layer, read_counters, allow_segments)


def _direct_conv(layer: _Layer, xg, wg, vmg, initg, idx_g, stride, ksize, osize, lanes, ocg,
                 ch_offset, oc_total, dims, *, dry):
    """Direct mapping of one group (padded input ``xg`` ``[N, Cg, Hp, Wp]``). With ``dry``,
    only check feasibility: returns None or the reason it is not possible."""
    cfg = layer.cfg
    arr, mem = cfg.array, cfg.memory
    R, C = arr.rows, arr.cols
    h = layer.h
    sh, sw = stride
    kh, kw = ksize
    oh, ow = osize
    nb, cg = xg.shape[:2]
    wu = (ow - 1) * sw + kw  # padded input columns ever read
    if ow > _MAX_INNER:
        return f"OW={ow} exceeds the COMPUTE m_inner limit {_MAX_INNER}"
    if sw > 7:
        return f"stride {sw} exceeds the COMPUTE a_stride_inner limit 7"
    if sh * wu > (1 << isa.ADDR_BITS) - 1:
        return f"a row step of {sh * wu} asp rows exceeds the address range"
    cwords = -(-cg // lanes)
    key = None
    if vmg is not None:
        key = _vm_words(vmg.t().contiguous(), lanes, cg)  # [Cw, OCg]
    c_tiles = _cut_tiles(cwords, R, key)
    CT = len(c_tiles)
    ncols = min(R, C) if layer.requant is not None else C
    n_tiles = _cut_tiles(ocg, ncols)
    NT = len(n_tiles)
    n_wt = CT * kh * kw * NT
    resident_w = n_wt * layer.tile_rows <= mem.wsp_depth
    if not resident_w and h * layer.tile_rows > mem.wsp_depth:
        return f"a weight tile of {layer.tile_rows} rows does not fit wsp_depth={mem.wsp_depth}"
    out_rows = 1 if layer.requant is not None else 0

    def fits(nbr):
        rows_in = (nbr - 1) * sh + kh
        return (h * (CT * rows_in * wu + out_rows * nbr * ow) <= mem.asp_depth
                and h * nbr * ow <= mem.acc_depth)

    if not fits(1):
        return (f"one output row needs {CT * kh * wu} asp rows (+ outputs) and {ow} acc rows "
                f"per buffer: asp_depth={mem.asp_depth}, acc_depth={mem.acc_depth}")
    nbr = 1
    while nbr < min(oh, _MAX_OUTER) and fits(nbr + 1):
        nbr += 1
    nbr = _balanced(oh, nbr)
    if layer.requant is not None and layer.qsp_all is None:
        if oc_total <= mem.qsp_depth:
            layer.qsp_all = True
        elif h * ncols <= mem.qsp_depth:
            layer.qsp_all = False
        else:
            return f"{h} requant tiles of {ncols} channels do not fit qsp_depth={mem.qsp_depth}"
    if dry:
        return None
    # operand words: activations [N, Hp, Wp, Cw] (channels packed), weights [KH, KW, Cw, OCg]
    if lanes > 1:
        q = arr.modes[layer.mode_idx]
        xw = pack_lanes(xg.permute(0, 2, 3, 1), lanes, q)
        ww = pack_lanes(wg.permute(2, 3, 0, 1), lanes, q).permute(0, 1, 3, 2)
    else:
        xw = xg.permute(0, 2, 3, 1)
        ww = wg.permute(2, 3, 1, 0)
    bands = [(o0, min(oh, o0 + nbr)) for o0 in range(0, oh, nbr)]
    rows_in_max = (nbr - 1) * sh + kh
    a_half = CT * rows_in_max * wu
    out_base = h * a_half
    w_base = 0
    layer.info.setdefault("direct", []).append(dict(c_tiles=CT, n_tiles=NT, band=nbr,
                                                    resident_weights=resident_w))
    w_loaded: set = set()
    for img in range(nb):
        for (o0, o1) in bands:
            nrow = o1 - o0
            rows_in = (nrow - 1) * sh + kh
            a_base = (layer.a_blocks % h) * a_half
            layer.a_blocks += 1
            band_in = xw[img, o0 * sh:o0 * sh + rows_in, :wu]  # [rows_in, wu, Cw]
            for ni, (n0, n1) in enumerate(n_tiles):
                tile_no = layer.out_tiles
                layer.out_tiles += 1
                acc_base = (tile_no % h) * (nbr * ow)
                m_rows = nrow * ow
                loads_first = []
                if initg is not None:
                    init = torch.zeros(m_rows, C, dtype=torch.int64)
                    init[:, :n1 - n0] = initg[n0:n1]
                    loads_first.append((Mem.ACC, acc_base, init))
                qsp_addr = 0
                if layer.requant is not None:
                    if layer.qsp_all:
                        qsp_addr = ch_offset + n0
                        if not layer.qsp_loaded:
                            layer.qsp_loaded = True
                            loads_first.append((Mem.QSP, 0, layer.qsp_rows(
                                0, oc_total, oc_total, 0)))
                    else:
                        qsp_addr = (tile_no % h) * ncols
                        loads_first.append((Mem.QSP, qsp_addr, layer.qsp_rows(
                            n0, n1, oc_total, ch_offset)))
                first = True
                for ci, (c0, c1) in enumerate(c_tiles):
                    ct_base = a_base + ci * rows_in_max * wu
                    for i in range(kh):
                        for j in range(kw):
                            loads = list(loads_first) if first else []
                            if ni == 0 and i == 0 and j == 0:
                                a = torch.full((rows_in, wu, R), layer.a_pad, dtype=torch.int64)
                                a[:, :, :c1 - c0] = band_in[:, :, c0:c1]
                                loads.append((Mem.ASP, ct_base, a.reshape(rows_in * wu, R)))
                            wkey = (layer.gemm_no, ci, i, j, ni)
                            if resident_w:
                                w_addr = w_base + (((ci * kh + i) * kw + j) * NT + ni) \
                                    * layer.tile_rows
                            else:
                                w_addr = (layer.w_slot % h) * layer.tile_rows
                                layer.w_slot += 1
                            if not resident_w or wkey not in w_loaded:
                                w_loaded.add(wkey)
                                sel_row = None if key is None else key[c0, n0:n1]
                                loads.append((Mem.WSP, w_addr, layer.w_tile_rows(
                                    ww[i, j], c0, c1, n0, n1, sel_row)))
                            pre = Instr(Opcode.PRELOAD, wsp_addr=w_addr, k_rows=c1 - c0,
                                        sel_addr=w_addr + R if layer.sel else 0,
                                        sel_en=int(layer.sel))
                            accumulate = (not first) if layer.acc_overwrite else False
                            comp = Instr(Opcode.COMPUTE, asp_addr=ct_base + i * wu + j,
                                         acc_addr=acc_base, m_outer=nrow, m_inner=ow,
                                         a_stride_outer=sh * wu, a_stride_inner=sw,
                                         acc_stride=1, accumulate=int(accumulate), swap=1)
                            last = ci == CT - 1 and i == kh - 1 and j == kw - 1
                            post = None
                            if last:
                                def post(acc_base=acc_base, m_rows=m_rows, img=img, o0=o0,
                                         o1=o1, n0=n0, n1=n1, qsp_addr=qsp_addr,
                                         tile_no=tile_no, nrow=nrow):
                                    def index_fn():
                                        idx = torch.full((m_rows, C), -1, dtype=torch.int64)
                                        blk = idx_g[img, n0:n1, o0:o1, :]  # [n, nrow, ow]
                                        idx[:, :n1 - n0] = blk.permute(1, 2, 0).reshape(
                                            nrow * ow, n1 - n0)
                                        return idx
                                    layer.epilogue(acc_base, m_rows, index_fn, n0, n1,
                                                   qsp_addr, out_base + (tile_no % h) * nbr * ow)
                            layer.steps.append(_Step(loads, pre, [comp], post))
                            first = False
    layer.gemm_no += 1
    return None
