"""Per-column number-format variants on Amaranth's simulator: the code-port variants unit
(exhaustive over the 4-bit weight codes), the PE, the systolic array and the core, each
bit-exact against the reference (``sw/mult/variants.py``, ``sw/pe.py``, ``sw/core_ref.py``).

The harnesses of ``tests/test_hw_pe.py``, ``tests/test_hw_array.py`` and
``tests/test_hw_core.py`` drive the designs (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from amaranth.sim import Simulator
from mixpe.hw.array import SystolicArray
from mixpe.hw.mult import create
from mixpe.hw.pe import ProcessingElement
from mixpe.sim.array_tests import Scenario
from mixpe.sw import emulate
from mixpe.sw.compiler import compile_conv2d, compile_gemm
from mixpe.sw.core_config import CORE_PRESETS, ArrayConfig, CoreConfig
from mixpe.sw.pe import pe_trace
from test_hw_array import check as check_array
from test_hw_core import check as check_core
from test_hw_pe import random_ops
from test_hw_pe import simulate as simulate_pe

MIXED = CORE_PRESETS["ulx3s-8x8-mixed"]


def small_mixed(rows=2, cols=4, **pe_kw) -> CoreConfig:
    """The variants of the ulx3s mixed preset on a small array with small memories."""
    arr = MIXED.array
    return CoreConfig(array=ArrayConfig(rows=rows, cols=cols,
                                        pe=dataclasses.replace(arr.pe, **pe_kw),
                                        variants=arr.variants),
                      memory=CORE_PRESETS["tiny-2x2"].memory)


# -- the code-port variants unit ----------------------------------------------------------------

def run_unit(unit, vectors):
    got = []

    async def bench(ctx):
        for a, b, s in vectors:
            ctx.set(unit.a, a)
            ctx.set(unit.b, b)
            ctx.set(unit.sel, s)
            got.append(ctx.get(unit.p))

    sim = Simulator(unit)
    sim.add_testbench(bench)
    sim.run()
    return got


def test_unit_every_4bit_weight_code_and_activation():
    """Variants 1 (flint4) and 2 (int4): all 256 activation × 16 weight codes, each also with
    random garbage in the weight port's high bits (ignored: the code-width rule); variants 0
    (int8) and 3 (ROUP): random full-width codes."""
    unit = create(MIXED.array.array_pe.core)
    cfg = unit.config
    assert cfg.code_port and len(unit.a) == 8 and len(unit.b) == 8
    rnd = random.Random(11)
    vecs = []
    for sel in (1, 2):
        for a in range(256):
            for b in range(16):
                vecs.append((a, b | (rnd.getrandbits(4) << 4 if rnd.random() < 0.5 else 0), sel))
    vecs += [(rnd.getrandbits(8), rnd.getrandbits(8), s) for s in (0, 3) for _ in range(1500)]
    got = run_unit(unit, vecs)
    t = torch.tensor(vecs)
    want = cfg.mul_sel_codes(t[:, 0], t[:, 1], t[:, 2])
    assert got == want.tolist()
    # the reference itself: the narrow members see only the low 4 bits
    f4 = cfg.members[1]
    narrow = t[:, 2] == 1
    assert torch.equal(want[narrow], f4.mul_codes(t[narrow, 0], t[narrow, 1] & 15))


def test_unit_shares_one_core_per_core_spec():
    """The preset's int8, int4 and flint4 variants name the core ``exact``: one multiplier
    with multiplexed operands; ROUP keeps its own unit."""
    from amaranth.back import rtlil

    unit = create(MIXED.array.array_pe.core)
    assert unit.core_groups() == [(0, 1, 2), (3,)]
    text = rtlil.convert(unit)
    assert "shared_0_1_2" in text and "variant_3" in text and "variant_1" not in text


def test_unit_separate_decoded_cores():
    """Members with distinct cores (8×3 and 8×4 exact multipliers on the mantissas) each
    build a ``DecodedMultiplierComponent``: all 256 × 16 codes, garbage high weight bits."""
    spec = ("variants:of=roup:p=1;r=4|exact:nb=3 a=int:bits=8;signed=1 b=flint:signed=1|"
            "exact:nb=4 a=int:bits=8;signed=1 b=pot:signed=1")
    from mixpe.sw.mult import multiplier

    cfg = multiplier(spec)
    unit = create(cfg)
    assert unit.core_groups() == [(0,), (1,), (2,)]
    rnd = random.Random(16)
    vecs = [(a, b | (rnd.getrandbits(4) << 4), s) for s in (1, 2) for a in range(256)
            for b in range(16)]
    vecs += [(rnd.getrandbits(8), rnd.getrandbits(8), 0) for _ in range(500)]
    t = torch.tensor(vecs)
    assert run_unit(unit, vecs) == cfg.mul_sel_codes(t[:, 0], t[:, 1], t[:, 2]).tolist()


def test_unit_shared_cores_with_shifter_and_approximate_core():
    """Shared groups where the value cannot enter the core: flint6 values up to 256 do not fit
    the int8 port (mantissa, then the shift after the core), and an approximate ROUP core
    (``roup(m << e, b) != roup(m, b) << e``). Exhaustive over the narrow weight codes."""
    from mixpe.sw.mult import multiplier

    spec = ("variants:of=exact|roup:p=1;r=4|exact a=int:bits=8;signed=1 b=flint:bits=6;signed=1"
            "|roup:p=1;r=4 a=int:bits=8;signed=1 b=flint:signed=1")
    cfg = multiplier(spec)
    unit = create(cfg)
    assert unit.core_groups() == [(0, 2), (1, 3)]
    rnd = random.Random(17)
    vecs = [(a, b | (rnd.getrandbits(2) << 6), 2) for a in range(256) for b in range(64)]
    vecs += [(a, b | (rnd.getrandbits(4) << 4), 3) for a in range(256) for b in range(16)]
    vecs += [(rnd.getrandbits(8), rnd.getrandbits(8), s) for s in (0, 1) for _ in range(500)]
    t = torch.tensor(vecs)
    want = cfg.mul_sel_codes(t[:, 0], t[:, 1], t[:, 2])
    assert int(want.abs().max()) > 127 * 128  # flint6 products beyond the int8 × int8 range
    assert run_unit(unit, vecs) == want.tolist()


# -- the PE ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("pipeline, overflow, acc_bits", [(0, "wrap", 15), (1, "saturate", 17)])
def test_pe_matches_reference(pipeline, overflow, acc_bits):
    cfg = dataclasses.replace(MIXED.array.array_pe, pipeline=pipeline, overflow=overflow,
                              acc_bits=acc_bits)
    dut = ProcessingElement.from_config(cfg)
    assert dut.extra_inputs == ("sel",) and cfg.port_bits == (8, 8)
    ops = random_ops(cfg, 300, seed=pipeline + 20)
    assert {op["sel"] for op in ops} == {0, 1, 2, 3}
    got = simulate_pe(dut, ops)  # aligned with the ops
    want = pe_trace(cfg, ops)
    assert len(got) == len(want) and got == want
    assert any(o for _, o in want)  # overflow happens


# -- the array -------------------------------------------------------------------------------------

def mixed_ws_scenario(arr: ArrayConfig, *, m: int, passes: int, sel, seed: int) -> Scenario:
    """A WS GEMM in ``passes`` weight tiles; column ``c`` uses variant ``sel[c]`` with its own
    operand formats; narrow weight codes carry random garbage in the port's high bits."""
    g = torch.Generator().manual_seed(seed)
    R, C = arr.rows, arr.cols
    steps = passes * R
    a_codes = torch.randint(0, 1 << arr.a_bits, (m, steps), generator=g)
    b_codes = torch.randint(0, 1 << arr.b_bits, (steps, C), generator=g)
    lo, hi = -(1 << (arr.acc_bits - 1)), (1 << (arr.acc_bits - 1)) - 1
    acc = torch.randint(-3000, 3001, (m, C), generator=g).clamp(lo, hi)
    preload, beats, expected = [], [], []
    for t in range(passes):
        ks = slice(t * R, (t + 1) * R)
        out = torch.zeros(m, C, dtype=torch.int64)
        flags = torch.zeros(m, C, dtype=torch.bool)
        for c in range(C):
            pe = arr.pe_configs[sel[c]]
            mult = pe.multiplier
            ab, bb = arr.variant_code_bits(sel[c])
            av = mult.a_format.values()[a_codes[:, ks] & ((1 << ab) - 1)]
            bv = mult.b_format.values()[b_codes[ks, c:c + 1] & ((1 << bb) - 1)]
            o, f = emulate.matmul(av, bv, mult, bias=acc[:, c:c + 1], acc_bits=pe.acc_bits,
                                  overflow=pe.overflow, return_overflow=True)
            out[:, c:c + 1], flags[:, c:c + 1] = o, f
        for j in range(R):
            preload.append({"b": [int(x) for x in b_codes[t * R + R - 1 - j]], "sel": list(sel)})
        for i in range(m):
            beats.append({"a": [int(x) for x in a_codes[i, ks]], "d": [int(x) for x in acc[i]],
                          "swap": int(i == 0)})
            expected.append({"c": [int(x) for x in out[i]], "ovf": [int(x) for x in flags[i]]})
        acc = out
    return Scenario("ws", R, C, preload, beats, expected, None, {"sel": list(sel)})


def test_array_ws_format_variants_per_column():
    cfg = small_mixed(rows=3, cols=4, acc_bits=16)
    arr = cfg.array
    dut = SystolicArray.from_config(arr)
    assert dut.sel_bits == 2 and dut.pe_config == arr.array_pe
    sc = mixed_ws_scenario(arr, m=5, passes=2, sel=[1, 3, 2, 0], seed=12)
    assert any(f for e in sc.expected for f in e["ovf"])  # saturation is exercised
    check_array(dut, sc, gap=0.2, seed=13)


# -- the core (compiler → core_ref vs the Amaranth core) -------------------------------------------

def test_core_gemm_every_variant_small_array():
    cfg = small_mixed(rows=2, cols=4, acc_bits=20)
    arr = cfg.array
    vm = torch.tensor([arr.variant_index(mult="exact", a_format="int:bits=8,signed=1",
                                         b_format="flint:bits=4,signed=1"),
                       arr.variant_index(mult="roup:p=1,r=4"),
                       arr.variant_index(mult="exact"),
                       arr.variant_index(mult="exact", a_format="int:bits=8,signed=1",
                                         b_format="int:bits=4,signed=1"),
                       1])
    assert vm.tolist() == [1, 3, 0, 2, 1]
    gen = torch.Generator().manual_seed(14)
    a = torch.randint(0, 256, (4, 5), generator=gen)
    b = torch.randint(0, 256, (5, 5), generator=gen)
    b[:, (vm == 1) | (vm == 2)] &= 15
    out = check_core(compile_gemm(a, b, cfg, variant_map=vm, read_counters=True), cfg,
                     stall=0.2)
    i8 = torch.where(a >= 128, a - 256, a)
    f4 = arr.pe_configs[1].multiplier.b_format.values()
    assert torch.equal(out[:, 0], i8 @ f4[b[:, 0]])  # column 0 really is int8 × flint4


def test_core_conv_on_the_mixed_preset():
    """The shipped 8×8 preset itself (pipeline 1, saturating 32-bit accumulators): a tiny
    conv2d with one variant per output channel."""
    cfg = MIXED
    gen = torch.Generator().manual_seed(15)
    x = torch.randint(0, 256, (1, 2, 3, 3), generator=gen)
    w = torch.randint(0, 16, (4, 2, 2, 2), generator=gen)
    w[3] = torch.randint(0, 256, (2, 2, 2), generator=gen)
    prog = compile_conv2d(x, w, cfg, variant_map=torch.tensor([1, 2, 0, 3]), padding=1)
    check_core(prog, cfg)
