"""Compiler + golden core model + cycle model.

The central property: for GEMMs and convolutions of odd shapes, ``program.outputs`` of the
words :func:`run_program` produces equals ``sw/emulate`` (and ``requantize``) applied to the
layer directly. That proves the tiling (K order, padding rows, address patterns, output
layout) independently of the hardware. A checker also verifies the ordering guarantees the
ISA promises the controller (no LOAD overwrites rows an in-flight instruction uses, ...).
"""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from mixpe.sw import emulate, isa
from mixpe.sw.compiler import (
    Program,
    code_values,
    compile_conv2d,
    compile_gemm,
    pack_lanes,
)
from mixpe.sw.core_config import CORE_PRESETS, ArrayConfig, CoreConfig, MemoryConfig
from mixpe.sw.core_ref import execute, run_program
from mixpe.sw.cyclemodel import (
    ControllerTiming,
    array_timing,
    ideal_mac_cycles,
    predict_cycles,
    utilization,
)
from mixpe.sw.emulate.reference import accumulate
from mixpe.sw.isa import Instr, Mem, Opcode
from mixpe.sw.numerics import from_code
from mixpe.sw.pe import PEConfig
from mixpe.sw.requant import Requant


def make_cfg(rows=4, cols=4, *, variants=(), dataflow="ws", **pe_and_mem):
    mem = dict(wsp_depth=64, asp_depth=512, acc_depth=128, imem_depth=8192, qsp_depth=16)
    pe = {}
    for k, v in pe_and_mem.items():
        (mem if k.endswith("_depth") else pe)[k] = v
    return CoreConfig(array=ArrayConfig(rows=rows, cols=cols, pe=PEConfig(**pe),
                                        variants=variants, dataflow=dataflow),
                      memory=MemoryConfig(**mem))


def rand_codes(shape, bits, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 1 << bits, shape, generator=g)


def values(cfg, a, b):
    mult = cfg.array.pe.multiplier
    return code_values(mult.a_format, a), code_values(mult.b_format, b), mult


def run(prog: Program):
    check_ordering(prog)
    words, counters = run_program(prog, prog.cfg)
    assert len(words) == prog.o_words
    return prog.outputs(words), counters


# -- the ISA's ordering guarantees -------------------------------------------------------------


def _rows(addr, n):
    return set(range(addr, addr + n))


def _compute_rows(ins):
    o = range(ins.m_outer)
    i = range(ins.m_inner)
    asp = {ins.asp_addr + a * ins.a_stride_outer + b * ins.a_stride_inner for a in o for b in i}
    acc = {ins.acc_addr + t * ins.acc_stride for t in range(ins.m_outer * ins.m_inner)}
    return asp, acc


def check_ordering(prog: Program):
    """Verify the compiler's promises to the controller (sw/isa.py, "Ordering")."""
    cfg = prog.cfg
    width = min(cfg.array.rows, cfg.array.cols)
    since_fence = []       # array instructions since the last FENCE
    stores = []            # (mem, rows) read by STOREs since the last FENCE
    last_compute = None
    preload_pending = None  # PRELOAD not yet consumed by a swap COMPUTE
    assert prog.instructions[0].op == Opcode.CONFIG and prog.instructions[-1].op == Opcode.END
    for ins in prog.instructions:
        op = ins.op
        if op == Opcode.FENCE:
            since_fence, stores, last_compute, = [], [], None
            continue
        if op == Opcode.LOAD:
            rows = _rows(ins.addr, ins.rows)
            mem = Mem(ins.mem)
            if mem == Mem.ASP and last_compute is not None:
                assert not rows & _compute_rows(last_compute)[0], f"{ins} vs {last_compute}"
            for a in since_fence:
                if mem == Mem.ACC and a.op == Opcode.COMPUTE:
                    assert not rows & _compute_rows(a)[1], f"{ins} vs {a}"
                if a.op == Opcode.REQUANT:
                    if mem == Mem.ASP:
                        assert not rows & _rows(a.asp_addr, a.rows), f"{ins} vs {a}"
                    if mem == Mem.QSP:
                        assert not rows & _rows(a.qsp_addr, width), f"{ins} vs {a}"
            if mem == Mem.WSP and preload_pending is not None:
                p = preload_pending
                used = _rows(p.wsp_addr, p.k_rows) | (_rows(p.sel_addr, 1) if p.sel_en else set())
                assert not rows & used, f"{ins} vs {p}"
        elif op == Opcode.STORE:
            mem = Mem(ins.mem)
            rows = _rows(ins.addr, ins.rows)
            for a in since_fence:
                if mem == Mem.ACC and a.op == Opcode.COMPUTE:
                    assert not rows & _compute_rows(a)[1], f"{ins} not fenced after {a}"
                if mem == Mem.ASP and a.op == Opcode.REQUANT:
                    assert not rows & _rows(a.asp_addr, a.rows), f"{ins} not fenced after {a}"
            stores.append((mem, rows))
        elif op in (Opcode.COMPUTE, Opcode.REQUANT, Opcode.PRELOAD):
            if op == Opcode.COMPUTE:
                written = (Mem.ACC, _compute_rows(ins)[1])
                last_compute = ins
                if ins.swap:
                    preload_pending = None
            elif op == Opcode.REQUANT:
                written = (Mem.ASP, _rows(ins.asp_addr, ins.rows))
            else:
                written = None
                preload_pending = ins
            if written is not None:
                for mem, rows in stores:
                    assert mem != written[0] or not rows & written[1], \
                        f"{ins} overwrites rows an unfenced STORE reads"
            since_fence.append(ins)


# -- GEMM ----------------------------------------------------------------------------------------


GEMM_CASES = [
    # rows, cols, M, K, N, overflow, acc_bits
    (2, 2, 3, 5, 3, "wrap", 16),
    (4, 3, 7, 9, 5, "saturate", 12),
    (3, 4, 20, 13, 9, "saturate", 14),
    (2, 2, 1, 1, 1, "wrap", 8),
    (4, 4, 40, 30, 10, "saturate", 16),
    (1, 5, 6, 3, 11, "saturate", 10),
    (5, 1, 2, 17, 2, "wrap", 10),
]


@pytest.mark.parametrize("double_buffer", [True, False])
@pytest.mark.parametrize("case", GEMM_CASES, ids=str)
def test_gemm_matches_emulate(case, double_buffer):
    rows, cols, M, K, N, ovf, acc = case
    cfg = make_cfg(rows, cols, acc_bits=acc, overflow=ovf)
    a, b = rand_codes((M, K), 8, M * K), rand_codes((K, N), 8, K * N + 1)
    av, bv, mult = values(cfg, a, b)
    want, flags = emulate.matmul(av, bv, mult, acc_bits=acc, overflow=ovf, return_overflow=True)
    prog = compile_gemm(a, b, cfg, double_buffer=double_buffer)
    got, counters = run(prog)
    assert torch.equal(got, want)
    assert counters["busy"] >= M
    assert counters["macs"] >= M * K * N


def test_gemm_large_m_tiles_and_long_compute():
    # M beyond one acc half and beyond one COMPUTE's 255-row inner loop
    cfg = make_cfg(2, 2, acc_bits=24, acc_depth=2048, asp_depth=4096)
    a, b = rand_codes((1100, 3), 8, 1), rand_codes((3, 3), 8, 2)
    av, bv, mult = values(cfg, a, b)
    prog = compile_gemm(a, b, cfg)
    assert prog.info["m_tiles"] == 2
    assert any(i.op == Opcode.COMPUTE and i.m_outer > 1 for i in prog.instructions)
    got, _ = run(prog)
    assert torch.equal(got, emulate.matmul(av, bv, mult, acc_bits=24))


@pytest.mark.parametrize("pe", [
    dict(mult="roup:p=1,r=4", acc_bits=14, overflow="saturate"),
    dict(mult="lutna", acc_bits=20, overflow="wrap"),
    dict(mult="axbxp:l=2", acc_bits=12, overflow="saturate", pipeline=1),
    dict(mult="exact:n=4", a_format="flint:bits=4", b_format="int:bits=4,signed=1",
         acc_bits=12, overflow="saturate"),
], ids=lambda d: d["mult"])
def test_gemm_approximate_and_formats(pe):
    cfg = make_cfg(3, 2, **pe)
    abits, bbits = cfg.array.a_bits, cfg.array.b_bits
    a, b = rand_codes((9, 7), abits, 5), rand_codes((7, 5), bbits, 6)
    av, bv, mult = values(cfg, a, b)
    want = emulate.matmul(av, bv, mult, acc_bits=pe["acc_bits"], overflow=pe["overflow"])
    got, _ = run(compile_gemm(a, b, cfg))
    assert torch.equal(got, want)


def test_gemm_acc_init_and_requant():
    cfg = make_cfg(4, 4, acc_bits=20, overflow="saturate")
    g = torch.Generator().manual_seed(9)
    a, b = rand_codes((9, 11), 8, 7), rand_codes((11, 6), 8, 8)
    av, bv, mult = values(cfg, a, b)
    bias = torch.randint(-1000, 1000, (6,), generator=g)
    rq = Requant(bias=torch.randint(-50, 50, (6,), generator=g),
                 mult=torch.randint(1 << 29, 1 << 31, (6,), generator=g),
                 shift=torch.randint(30, 40, (6,), generator=g), zp=3, relu=True, lo=-128, hi=127)
    acc_vals = emulate.matmul(av, bv, mult, bias=bias, acc_bits=20, overflow="saturate")
    prog = compile_gemm(a, b, cfg, requant=rq, acc_overwrite=False, acc_init=bias)
    assert prog.instructions[0].acc_overwrite_default == 0
    got, _ = run(prog)
    assert torch.equal(got, rq(acc_vals))
    # unsigned outputs, no relu, per-tile qsp (more channels than qsp_depth)
    cfg2 = make_cfg(2, 3, acc_bits=20, qsp_depth=4)
    b2 = rand_codes((11, 7), 8, 10)
    rq2 = Requant(bias=0, mult=1 << 30, shift=torch.arange(36, 43), zp=100, lo=0, hi=255)
    prog2 = compile_gemm(a, b2, cfg2, requant=rq2)
    got2, _ = run(prog2)
    av2, bv2, mult2 = values(cfg2, a, b2)
    assert torch.equal(got2, rq2(emulate.matmul(av2, bv2, mult2, acc_bits=20)))
    assert sum(i.op == Opcode.LOAD and i.mem == Mem.QSP for i in prog2.instructions) > 1
    # more rows than columns: the REQUANT rows carry zeros past the columns
    cfg3 = make_cfg(4, 2, acc_bits=20)
    b3 = rand_codes((11, 5), 8, 14)
    rq3 = Requant(mult=1 << 30, shift=torch.arange(30, 35), lo=0, hi=255, zp=7)
    got3, _ = run(compile_gemm(a, b3, cfg3, requant=rq3))
    av3, bv3, mult3 = values(cfg3, a, b3)
    assert torch.equal(got3, rq3(emulate.matmul(av3, bv3, mult3, acc_bits=20)))


def _naive_variants(cfg, a, b, vm_kn, start=None):
    pes = cfg.array.pe_configs
    av, bv, _ = values(cfg, a, b)
    M, K = a.shape
    N = b.shape[1]
    acc = torch.zeros(M, N, dtype=torch.int64) if start is None else start.clone()
    fl = torch.zeros(M, N, dtype=torch.bool)
    for k in range(K):
        p = torch.stack([pes[int(vm_kn[k, n])].multiplier.mul(av[:, k], bv[k, n])
                         for n in range(N)], 1)
        acc = accumulate(acc, p, fl, cfg.array.acc_bits, cfg.array.pe.overflow)
    return acc


def test_gemm_variants_per_column_and_per_k():
    cfg = make_cfg(3, 3, variants=("roup:p=1,r=4", "axbxp:l=2"), acc_bits=18,
                   overflow="saturate")
    a, b = rand_codes((7, 10), 8, 11), rand_codes((10, 5), 8, 12)
    g = torch.Generator().manual_seed(13)
    vm_n = torch.randint(0, 3, (5,), generator=g)
    got, _ = run(compile_gemm(a, b, cfg, variant_map=vm_n))
    assert torch.equal(got, _naive_variants(cfg, a, b, vm_n[None].expand(10, 5)))
    vm_kn = torch.randint(0, 3, (10, 5), generator=g)
    vm_kn[:5] = vm_kn[0]
    prog = compile_gemm(a, b, cfg, variant_map=vm_kn)
    assert all(i.sel_en for i in prog.instructions if i.op == Opcode.PRELOAD)
    got, _ = run(prog)
    assert torch.equal(got, _naive_variants(cfg, a, b, vm_kn))


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_gemm_composable_modes(mode):
    cfg = make_cfg(3, 2, mult="axbxp:mode=composable", acc_bits=12, overflow="saturate")
    q, lanes = cfg.array.modes[mode], cfg.array.lanes(mode)
    M, K, N = 5, 23, 3
    a, b = rand_codes((M, K), q, 20 + mode), rand_codes((K, N), q, 30 + mode)
    prog = compile_gemm(a, b, cfg, mode=mode)
    assert prog.instructions[0].mode == mode
    got, counters = run(prog)
    av, bv = from_code(a, q, True), from_code(b, q, True)
    want = torch.zeros(M, N, dtype=torch.int64)
    fl = torch.zeros(M, N, dtype=torch.bool)
    for k0 in range(0, K, lanes):  # one lane dot product per operand word, then saturate
        want = accumulate(want, av[:, k0:k0 + lanes] @ bv[k0:k0 + lanes], fl, 12, "saturate")
    assert torch.equal(got, want)
    assert counters["overflow"] == int(bool(fl.any()))


def test_pack_lanes():
    assert pack_lanes(torch.tensor([[1, 2, 3, 0, 1]]), 4, 2).tolist() == [[1 + (2 << 2) + (3 << 4),
                                                                           1]]
    assert pack_lanes(torch.tensor([[7]]), 1, 8).tolist() == [[7]]


# -- conv2d ------------------------------------------------------------------------------------

CONV_CASES = [
    # rows, cols, N, C, H, W, OC, k, stride, pad, groups, overflow, acc, mapping
    (2, 2, 1, 3, 5, 6, 4, 3, 1, 1, 1, "wrap", 16, "auto"),
    (4, 4, 2, 4, 6, 5, 6, 3, 2, 1, 2, "saturate", 14, "auto"),
    (4, 4, 1, 5, 7, 7, 3, 1, 1, 0, 1, "saturate", 12, "auto"),
    (3, 2, 1, 6, 6, 6, 6, 3, 1, 1, 3, "wrap", 16, "direct"),
    (3, 2, 1, 6, 6, 6, 6, 3, 1, 1, 3, "wrap", 16, "im2col"),
    (4, 4, 1, 4, 9, 9, 8, 3, 2, 0, 4, "saturate", 18, "auto"),
    (2, 3, 1, 4, 5, 5, 4, 3, (2, 1), (0, 2), 4, "wrap", 16, "direct"),   # depthwise
    (4, 2, 2, 5, 4, 6, 3, 1, 2, 0, 1, "saturate", 14, "direct"),          # 1x1 strided
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_emulate(case):
    rows, cols, nb, C, H, W, OC, k, s, p, gr, ovf, acc, mapping = case
    cfg = make_cfg(rows, cols, acc_bits=acc, overflow=ovf)
    x, w = rand_codes((nb, C, H, W), 8, H * W + C), rand_codes((OC, C // gr, k, k), 8, OC + k)
    xv, wv, mult = values(cfg, x, w)
    want = emulate.conv2d(xv, wv, mult, stride=s, padding=p, groups=gr, acc_bits=acc,
                          overflow=ovf)
    prog = compile_conv2d(x, w, cfg, stride=s, padding=p, groups=gr, mapping=mapping)
    if mapping != "auto":
        assert set(prog.info["mapping"]) == {mapping}
    got, _ = run(prog)
    assert torch.equal(got, want)


def test_conv2d_auto_choices_and_direct_refusal():
    # saturate + 3x3 with possible overflow: im2col (the k order must stay ic, kh, kw)
    cfg = make_cfg(2, 2, acc_bits=16, overflow="saturate")
    x, w = rand_codes((1, 2, 4, 4), 8, 1), rand_codes((2, 2, 3, 3), 8, 2)
    assert compile_conv2d(x, w, cfg, padding=1).info["mapping"] == ["im2col"]
    with pytest.raises(ValueError, match="mapping='direct' is not possible: the direct mapping "
                                         "changes the k order"):
        compile_conv2d(x, w, cfg, padding=1, mapping="direct")
    # no overflow possible (18 · 128² < 2^31): direct is exact even when saturating
    cfg32 = make_cfg(2, 2, acc_bits=32, overflow="saturate")
    prog = compile_conv2d(x, w, cfg32, padding=1)
    assert prog.info["mapping"] == ["direct"]
    xv, wv, mult = values(cfg32, x, w)
    got, _ = run(prog)
    assert torch.equal(got, emulate.conv2d(xv, wv, mult, padding=1, acc_bits=32,
                                           overflow="saturate"))
    # OW beyond one COMPUTE's inner loop: auto falls back to im2col
    xw = rand_codes((1, 1, 1, 300), 8, 3)
    ww = rand_codes((1, 1, 1, 1), 8, 4)
    big = make_cfg(2, 2, acc_bits=24, asp_depth=2048, acc_depth=1024)
    assert compile_conv2d(xw, ww, big).info["mapping"] == ["im2col"]


def test_conv2d_requant_acc_init_variants():
    cfg = make_cfg(3, 3, variants=("roup:p=2",), acc_bits=20, overflow="wrap")
    g = torch.Generator().manual_seed(21)
    x, w = rand_codes((1, 4, 5, 5), 8, 22), rand_codes((6, 2, 3, 3), 8, 23)
    bias = torch.randint(-500, 500, (6,), generator=g)
    vm = torch.randint(0, 2, (6, 2), generator=g)  # per kernel (oc, ic)
    rq = Requant(bias=0, mult=torch.full((6,), 1 << 30), shift=torch.full((6,), 36), zp=-5,
                 relu=False, lo=-128, hi=127)
    for mapping in ("direct", "im2col"):
        prog = compile_conv2d(x, w, cfg, padding=1, groups=2, requant=rq, acc_overwrite=False,
                              acc_init=bias, variant_map=vm, mapping=mapping)
        got, _ = run(prog)
        pes = cfg.array.pe_configs
        xv, wv, _ = values(cfg, x, w)
        want = torch.zeros(1, 6, 5, 5, dtype=torch.int64)
        for v in range(2):
            # wrap: the sum splits over variants by the per-kernel mask on w (mul(a, 0) = 0)
            mask = (vm == v)[:, :, None, None].expand_as(w)
            wv_m = torch.where(mask, wv, 0)
            want += emulate.conv2d(xv, wv_m, pes[v].multiplier, padding=1, groups=2,
                                   acc_bits=64)
        want = (want + bias[None, :, None, None])
        want = ((want + (1 << 19)) % (1 << 20)) - (1 << 19)
        assert torch.equal(got, rq(want.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)), mapping


def test_conv2d_composable_direct():
    cfg = make_cfg(2, 2, mult="axbxp:mode=composable", acc_bits=16, overflow="wrap")
    x, w = rand_codes((1, 9, 4, 4), 4, 31), rand_codes((3, 9, 3, 3), 4, 32)
    prog = compile_conv2d(x, w, cfg, padding=1, mode=1)
    assert prog.info["mapping"] == ["direct"]
    got, _ = run(prog)
    xv, wv = from_code(x, 4, True), from_code(w, 4, True)
    want = torch.nn.functional.conv2d(xv.double(), wv.double(), padding=1).round().long()
    want = ((want + (1 << 15)) % (1 << 16)) - (1 << 15)
    assert torch.equal(got, want)


# -- memory limits and bad inputs ----------------------------------------------------------------


def test_memory_errors_name_layer_and_memory():
    a, b = rand_codes((4, 8), 8, 1), rand_codes((8, 4), 8, 2)
    with pytest.raises(ValueError, match=r"GEMM M=4, K=8, N=4: a weight tile of 4 rows does not "
                                         r"fit wsp_depth=4 \(2 buffers\)"):
        compile_gemm(a, b, make_cfg(4, 4, wsp_depth=4))
    compile_gemm(a, b, make_cfg(4, 4, wsp_depth=4), double_buffer=False)  # one buffer fits
    with pytest.raises(ValueError, match=r"GEMM M=4, K=8, N=4: one activation row \(\+ one "
                                         r"output row\) per buffer does not fit asp_depth=2"):
        compile_gemm(a, b, make_cfg(2, 2, asp_depth=2), requant=Requant())
    # a long K does not fit the asp next to its m-tile: A is streamed per step instead
    prog = compile_gemm(rand_codes((40, 300), 8, 3), rand_codes((300, 4), 8, 4),
                        make_cfg(2, 2, asp_depth=64, acc_bits=32))
    assert prog.info["reuse_a"] is False
    got, _ = run(prog)
    av, bv, mult = values(prog.cfg, rand_codes((40, 300), 8, 3), rand_codes((300, 4), 8, 4))
    assert torch.equal(got, emulate.matmul(av, bv, mult))
    with pytest.raises(ValueError, match="imem_depth=8"):
        compile_gemm(a, b, make_cfg(2, 2, imem_depth=8))
    with pytest.raises(ValueError, match="qsp_depth=2"):
        compile_gemm(a, b, make_cfg(2, 2, qsp_depth=2), requant=Requant())
    x, w = rand_codes((1, 2, 8, 8), 8, 5), rand_codes((2, 2, 3, 3), 8, 6)
    with pytest.raises(ValueError, match=r"conv2d N=1, C=2, H=8, W=8, OC=2.*mapping='direct' "
                                         r"is not possible: one output row needs"):
        compile_conv2d(x, w, make_cfg(2, 2, asp_depth=16, acc_depth=4), mapping="direct")


@pytest.mark.parametrize("kwargs, msg", [
    (dict(a=torch.zeros(2, 3, dtype=torch.long) + 256), "a_codes codes must lie in"),
    (dict(b=torch.zeros(4, 2, dtype=torch.long)), "equal K"),
    (dict(mode=1), "has no precision modes"),
    (dict(variant_map=torch.zeros(3, dtype=torch.long)), "variant_map: shape"),
    (dict(variant_map=torch.ones(2, dtype=torch.long)), "variant_map values"),
    (dict(acc_overwrite=False), "needs acc_init"),
    (dict(acc_init=torch.zeros(2, dtype=torch.long)), "acc_init needs acc_overwrite=False"),
    (dict(acc_overwrite=False, acc_init=torch.full((2,), 1 << 20)), "acc_init values"),
    (dict(requant=Requant(lo=-200, hi=0)), "do not fit the 8-bit activation codes"),
    (dict(requant=Requant(bias=torch.zeros(3, dtype=torch.long))), "has 3 channels"),
    (dict(requant="relu"), "requant must be a Requant"),
])
def test_gemm_argument_errors(kwargs, msg):
    cfg = make_cfg(2, 2, acc_bits=16)
    a = kwargs.pop("a", torch.zeros(2, 3, dtype=torch.long))
    b = kwargs.pop("b", torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=msg):
        compile_gemm(a, b, cfg, **kwargs)


def test_conv_argument_errors_and_os():
    cfg = make_cfg(2, 2)
    x, w = torch.zeros(1, 4, 5, 5, dtype=torch.long), torch.zeros(2, 2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="groups must be a positive integer dividing"):
        compile_conv2d(x, w, cfg, groups=3)
    with pytest.raises(ValueError, match="needs C/groups = 4"):
        compile_conv2d(x, w, cfg)
    with pytest.raises(ValueError, match="stride must be"):
        compile_conv2d(x, w, cfg, groups=2, stride=0)
    with pytest.raises(ValueError, match="mapping must be one of"):
        compile_conv2d(x, w, cfg, groups=2, mapping="winograd")
    with pytest.raises(ValueError, match="larger than the padded input"):
        compile_conv2d(x[:, :, :2, :2], w, cfg, groups=2)
    with pytest.raises(ValueError, match="dataflow='os' is not supported"):
        compile_conv2d(x, w, make_cfg(2, 2, dataflow="os"), groups=2)
    with pytest.raises(TypeError, match="cfg must be a CoreConfig"):
        compile_gemm(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long),
                     "tiny")


def test_program_text_words_outputs_counters():
    cfg = CORE_PRESETS["tiny-2x2"]
    a, b = rand_codes((3, 3), 8, 1), rand_codes((3, 3), 8, 2)
    prog = compile_gemm(a, b, cfg, read_counters=True)
    assert len(prog.words) == len(prog) and prog.text.splitlines()[-1].endswith("END")
    assert [isa.decode(w) for w in prog.words] == prog.instructions
    words, counters = run_program(prog)
    assert prog.counters(words)["macs"] == counters["macs"]
    assert prog.counters(words)["busy"] == counters["busy"]
    with pytest.raises(ValueError, match="expected .* words"):
        prog.outputs(words[:-1])
    # the golden model runs the raw words too
    o2, model = execute(prog.words, prog.i_stream, cfg)
    assert o2 == words and model.done


def test_double_buffer_overlaps_loads_with_compute():
    cfg = make_cfg(2, 2, acc_bits=20)
    a, b = rand_codes((16, 8), 8, 1), rand_codes((8, 6), 8, 2)
    db = compile_gemm(a, b, cfg, double_buffer=True).instructions
    sb = compile_gemm(a, b, cfg, double_buffer=False).instructions
    # double buffered: a LOAD directly follows a COMPUTE (prefetch); single: FENCE first
    assert any(x.op == Opcode.COMPUTE and y.op == Opcode.LOAD for x, y in zip(db, db[1:]))
    assert not any(x.op == Opcode.COMPUTE and y.op == Opcode.LOAD for x, y in zip(sb, sb[1:]))
    c_db = predict_cycles(compile_gemm(a, b, cfg, double_buffer=True))["total"]
    c_sb = predict_cycles(compile_gemm(a, b, cfg, double_buffer=False))["total"]
    assert c_db < c_sb


def test_core_ref_errors():
    cfg = CORE_PRESETS["tiny-2x2"]
    with pytest.raises(ValueError, match="i_stream has 0 words left"):
        execute([Instr(Opcode.LOAD, mem=Mem.ASP, rows=1)], [], cfg)
    with pytest.raises(ValueError, match="not consumed"):
        execute([Instr(Opcode.END)], [1], cfg)
    with pytest.raises(ValueError, match="exceed asp_depth=64"):
        execute([Instr(Opcode.STORE, mem=Mem.ASP, addr=60, rows=5)], [], cfg)
    with pytest.raises(ValueError, match="address 64 exceeds asp_depth"):
        execute([Instr(Opcode.COMPUTE, asp_addr=63, m_outer=1, m_inner=2, a_stride_inner=1)],
                [], cfg)
    with pytest.raises(ValueError, match="k_rows=3 exceeds"):
        execute([Instr(Opcode.PRELOAD, k_rows=3)], [], cfg)
    with pytest.raises(ValueError, match="counter bank"):
        execute([Instr(Opcode.STORE, mem=Mem.CNT, addr=6, rows=2)], [], cfg)


# -- cycle model ------------------------------------------------------------------------------


def test_cycle_model_properties():
    cfg = CORE_PRESETS["ulx3s-8x8"]
    a, b = rand_codes((256, 64), 8, 1), rand_codes((64, 16), 8, 2)
    prog = compile_gemm(a, b, cfg)
    c = predict_cycles(prog, cfg)
    kinds = [op.name.lower() for op in Opcode]
    assert c["total"] == sum(c[k] for k in kinds) + ControllerTiming().fetch
    assert c["words_in"] == len(prog.i_stream) and c["words_out"] == prog.o_words
    ideal = ideal_mac_cycles(256, 16, 64, cfg)
    assert ideal == 256 * 16 * 64 // 64
    assert c["total"] >= ideal and c["total"] >= c["busy"]
    u = utilization(prog)
    assert 0.3 < u <= 1.0  # compute-bound enough to keep the array mostly busy
    # every fixed cost adds cycles
    slow = predict_cycles(prog, cfg, ControllerTiming(issue=3, compute_first=4))
    assert slow["total"] > c["total"]
    assert c["total"] > max(c["words_in"], c["words_out"])  # one word per cycle per stream
    assert array_timing(cfg)["latency"] == 1 + 8 * 2 + 7
    with pytest.raises(ValueError, match="issue must be a non-negative integer"):
        ControllerTiming(issue=-1)


def test_cycle_model_single_compute_formula():
    # one tile, nothing to overlap: the hw/core.py timing written out by hand
    cfg = CORE_PRESETS["tiny-2x2"]
    tm = ControllerTiming()
    at = array_timing(cfg)
    M = 10
    prog = compile_gemm(rand_codes((M, 2), 8, 1), rand_codes((2, 2), 8, 2), cfg)
    ops = [i.op for i in prog.instructions]
    assert ops == [Opcode.CONFIG, Opcode.LOAD, Opcode.LOAD, Opcode.PRELOAD, Opcode.COMPUTE,
                   Opcode.FENCE, Opcode.STORE, Opcode.END]
    t = tm.fetch + tm.issue                               # CONFIG dispatched at `fetch`
    d_asp = t                                             # LOAD asp: one word per row
    load_free = d_asp + tm.load_first + M * cfg.row_words("asp") + tm.load_write
    d_wsp = load_free                                     # LOAD wsp waits for the LoadUnit
    load_free = d_wsp + tm.load_first + 2 * cfg.row_words("wsp") + tm.load_write
    d_pre = load_free                                     # PRELOAD waits for the LOADs
    beats_in = d_pre + tm.preload_first + at["preload_beats"]
    d_comp = d_pre + tm.issue
    first = max(d_comp + tm.compute_first, beats_in)      # the swap row waits for the beats
    drained = first + M - 1 + at["latency"] + 1
    d_store = drained + tm.issue                          # FENCE, then STORE
    d_end = d_store + tm.store_first + M * cfg.row_words("acc")
    assert predict_cycles(prog)["total"] == d_end + tm.issue
    assert predict_cycles(prog)["total"] == 51  # measured on hw/core.py (Amaranth simulation)


def _simulate_core(prog: Program):
    """Run a program on hw/core.py in the Amaranth simulator: ``(o_words, cycles)``."""
    from amaranth.sim import Simulator
    from mixpe.hw.core import AcceleratorCore

    dut = AcceleratorCore(prog.cfg)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    out, res = [], {}

    async def bench(ctx):
        for i, w in enumerate(prog.words):
            ctx.set(dut.imem_addr, i)
            ctx.set(dut.imem_data, w)
            ctx.set(dut.imem_we, 1)
            await ctx.tick()
        ctx.set(dut.imem_we, 0)
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        pos, n = 0, 0
        while True:
            ctx.set(dut.i_stream.valid, pos < len(prog.i_stream))
            if pos < len(prog.i_stream):
                ctx.set(dut.i_stream.payload, prog.i_stream[pos])
            *_, iv, ir, ov, od, done = await ctx.tick().sample(
                dut.i_stream.valid, dut.i_stream.ready, dut.o_stream.valid,
                dut.o_stream.payload, dut.done)
            pos += bool(iv and ir)
            if ov:
                out.append(od)
            if done:
                break
            n += 1
            assert n < 100_000
        res["cycles"] = n  # the Fetch cycle up to END's dispatch (done rises the cycle after)

    sim.add_testbench(bench)
    sim.run()
    return out, res["cycles"]


@pytest.mark.parametrize("which", ["gemm", "conv"])
def test_cycle_model_matches_core_simulation(which):
    pytest.importorskip("amaranth")
    try:
        import mixpe.hw.core  # noqa: F401
    except ImportError:
        pytest.skip("hw/core.py is not available")
    if which == "gemm":
        cfg = make_cfg(4, 4, acc_bits=20, pipeline=1, asp_depth=256, acc_depth=64,
                       imem_depth=1024)
        prog = compile_gemm(rand_codes((12, 9), 8, 1), rand_codes((9, 6), 8, 2), cfg,
                            requant=Requant(mult=1 << 30, shift=36))
    else:
        cfg = make_cfg(2, 2, acc_bits=18, asp_depth=256, acc_depth=64, imem_depth=1024)
        prog = compile_conv2d(rand_codes((1, 3, 5, 5), 8, 3), rand_codes((3, 3, 3, 3), 8, 4),
                              cfg, padding=1, read_counters=True)
    words, cycles = _simulate_core(prog)
    n_cnt = sum(p.words for p in prog.pieces if p.mem == Mem.CNT)
    want = run_program(prog)[0]
    assert words[:len(words) - n_cnt] == want[:len(want) - n_cnt]
    pred = predict_cycles(prog)
    assert abs(pred["total"] - cycles) <= 0.05 * cycles, (pred["total"], cycles)
    if n_cnt:  # (at the time of writing the model is cycle-exact on both)
        got = prog.counters(words)["cycles"]
        assert abs(pred["cnt_cycles"][-1] - got) <= 0.05 * got


def test_doctests():
    for name in ("mixpe.sw.compiler", "mixpe.sw.core_ref", "mixpe.sw.cyclemodel"):
        assert doctest.testmod(importlib.import_module(name)).failed == 0, name


def test_segments_run_like_the_whole_program():
    cfg = make_cfg(2, 2, acc_bits=20, overflow="saturate", imem_depth=16)
    x, w = rand_codes((1, 3, 5, 5), 8, 41), rand_codes((4, 3, 3, 3), 8, 42)
    with pytest.raises(ValueError, match=r"more than imem_depth=16 \(allow_segments=True"):
        compile_conv2d(x, w, cfg, padding=1)
    prog = compile_conv2d(x, w, cfg, padding=1, allow_segments=True,
                          requant=Requant(mult=1 << 30, shift=36, lo=-128, hi=127))
    segs = prog.segments()
    assert len(segs) > 3 and all(len(s.instructions) <= 16 for s in segs)
    assert all(s.instructions[0].op == Opcode.CONFIG and s.instructions[-1].op == Opcode.END
               for s in segs)
    assert sum(len(s.i_stream) for s in segs) == len(prog.i_stream)
    assert sum(s.o_words for s in segs) == prog.o_words
    for s in segs[1:]:  # cut before a PRELOAD or after a FENCE
        assert s.instructions[1].op == Opcode.PRELOAD or s.instructions[1].op != Opcode.COMPUTE
    whole, _ = run_program(prog)
    split, _ = run_program(prog, imem_depth=16)
    assert split == whole
    xv, wv, mult = values(cfg, x, w)
    want = prog.requant(emulate.conv2d(xv, wv, mult, padding=1, acc_bits=20,
                                       overflow="saturate").permute(0, 2, 3, 1))
    assert torch.equal(prog.outputs(split), want.permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="imem_depth must be an integer >= 4"):
        prog.segments(3)
