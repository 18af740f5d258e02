"""SystolicArray on Amaranth's simulator: GEMM scenarios against ``sw/emulate``, bit for bit.

Each test builds a small array, runs a scenario of :mod:`mixpe.sim.array_tests` (random
operands, several K passes accumulating through ``d``, random valid gaps on the input
streams) and compares every ``o_stream`` beat (accumulators, overflow flags, tag) in order.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from amaranth.sim import Simulator
from mixpe.hw.array import Mesh, SkewedMesh, SystolicArray, Tile, latency, timing
from mixpe.sim.array_tests import os_scenario, predict_cycles, ws_scenario
from mixpe.sw.pe import PEConfig

INT8 = PEConfig(mult="exact:n=8", acc_bits=20)


def unused(component):
    """A component built only to inspect it (no UnusedElaboratable warning)."""
    component._MustUse__silence = True
    return component


def simulate(dut: SystolicArray, sc, *, gap: float = 0.0, seed: int = 1, limit: int = 20000):
    """Drive the scenario cycle by cycle; return ``(outputs, first_accept, last_output)``."""
    rnd = random.Random(seed)
    res = {"out": [], "first": None, "last": None}
    ws = sc.dataflow == "ws"

    def beat(view):
        d = {"c": [int(view.c[i]) for i in range(sc.cols)],
             "ovf": [int(view.ovf[i]) for i in range(sc.cols)]}
        if dut.tag_bits:
            d["tag"] = int(view.tag)
        return d

    async def bench(ctx):
        if sc.mode is not None:
            ctx.set(dut.mode, sc.mode)
        ctx.set(dut.o_stream.ready, 1)
        ip = wp = 0
        for cycle in range(limit):
            iv = ip < len(sc.beats) and rnd.random() >= gap
            ctx.set(dut.i_stream.valid, iv)
            if iv:
                ctx.set(dut.i_stream.payload, sc.beats[ip])
            if ws:
                wv = wp < len(sc.preload) and rnd.random() >= gap
                ctx.set(dut.preload.valid, wv)
                if wv:
                    ctx.set(dut.preload.payload, sc.preload[wp])
                _, _, ir, wr, ov, op = await ctx.tick().sample(
                    dut.i_stream.ready, dut.preload.ready, dut.o_stream.valid,
                    dut.o_stream.payload)
                wp += bool(wv and wr)
            else:
                _, _, ir, ov, op = await ctx.tick().sample(
                    dut.i_stream.ready, dut.o_stream.valid, dut.o_stream.payload)
            if iv and ir:
                ip += 1
                if res["first"] is None:
                    res["first"] = cycle
            if ov:
                res["out"].append(beat(op))
                res["last"] = cycle
                if len(res["out"]) == len(sc.expected):
                    return

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return res["out"], res["first"], res["last"]


def check(dut, sc, **kw):
    out, first, last = simulate(dut, sc, **kw)
    assert len(out) == len(sc.expected), f"{len(out)} of {len(sc.expected)} output beats"
    for i, (got, want) in enumerate(zip(out, sc.expected)):
        assert got == want, f"beat {i}: got {got}, want {want}"
    return first, last


# -- WS ---------------------------------------------------------------------------------------

def test_ws_2x2_exact_passes_tag_gaps():
    dut = SystolicArray(rows=2, cols=2, pe=INT8, tag_bits=3)
    sc = ws_scenario(INT8, 2, 2, m=5, passes=3, tag_bits=3, seed=1)
    check(dut, sc, gap=0.3, seed=2)


def test_ws_3x4_saturate_small_acc_k_order():
    pe = PEConfig(mult="exact:n=8", acc_bits=12, overflow="saturate")
    dut = SystolicArray(rows=3, cols=4, pe=pe)
    sc = ws_scenario(pe, 3, 4, m=6, passes=3, seed=3, bias_scale=2000)
    flags = [f for e in sc.expected for f in e["ovf"]]
    sat = [v for e in sc.expected for v in e["c"] if v in (-2048, 2047)]
    assert any(flags) and not all(flags) and sat  # overflow happens, and not everywhere
    check(dut, sc, gap=0.2, seed=4)


def test_ws_3x4_wrap_pipeline2():
    pe = PEConfig(mult="exact:n=8", acc_bits=13, overflow="wrap", pipeline=2)
    dut = SystolicArray(rows=3, cols=4, pe=pe)
    sc = ws_scenario(pe, 3, 4, m=4, passes=2, seed=5, bias_scale=3000)
    check(dut, sc, gap=0.25, seed=6)


def test_ws_4x4_tiles_2x2_saturate():
    pe = PEConfig(mult="exact:n=8", acc_bits=14, overflow="saturate", pipeline=1)
    dut = SystolicArray(rows=4, cols=4, pe=pe, tile_rows=2, tile_cols=2)
    assert dut.latency == 1 + 4 * 2 + 1
    sc = ws_scenario(pe, 4, 4, m=3, passes=2, seed=7, bias_scale=6000)
    check(dut, sc, gap=0.2, seed=8)


def test_ws_variants_per_column():
    pe = PEConfig(mult="exact:n=8", acc_bits=18)
    variants = ("roup:p=1,r=4", "axbxp:l=1")
    dut = SystolicArray(rows=2, cols=3, pe=pe, variants=variants)
    assert dut.sel_bits == 2
    sc = ws_scenario(pe, 2, 3, m=4, passes=2, variants=variants, sel=[2, 0, 1], seed=9)
    check(dut, sc, gap=0.2, seed=10)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_ws_composable_modes(mode):
    pe = PEConfig(mult="axbxp:mode=composable", acc_bits=14, overflow="saturate")
    dut = SystolicArray(rows=2, cols=2, pe=pe)
    sc = ws_scenario(pe, 2, 2, m=4, passes=2, mode=mode, seed=11 + mode, bias_scale=6000)
    check(dut, sc, gap=0.2, seed=mode)


def test_ws_flint_x_int():
    pe = PEConfig(mult="exact:n=4", a_format="flint:bits=4", b_format="int:bits=4,signed=1",
                  acc_bits=11, overflow="saturate", pipeline=1)
    dut = SystolicArray(rows=2, cols=2, pe=pe)
    sc = ws_scenario(pe, 2, 2, m=5, passes=3, seed=14, bias_scale=900)
    check(dut, sc, gap=0.2, seed=15)


def test_ws_latency_back_to_back():
    """M rows without gaps: last output ``M - 1 + latency`` cycles after the first row."""
    pe = PEConfig(mult="exact:n=8", acc_bits=16)
    dut = SystolicArray(rows=3, cols=4, pe=pe)
    sc = ws_scenario(pe, 3, 4, m=7, passes=1, seed=16)
    first, last = check(dut, sc)
    assert dut.latency == latency(3, 4, pe) == 3 + 4
    assert last - first == 7 - 1 + dut.latency


def test_ws_swap_waits_for_preload_and_blocks_it():
    """Pacing: a swap row waits for R preload beats; preload waits for the swap wave."""
    pe = PEConfig(mult="exact:n=8", acc_bits=16)
    dut = SystolicArray(rows=2, cols=2, pe=pe)
    log = []

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.i_stream.payload, {"a": [1, 2], "d": [0, 0], "swap": 1})
        ctx.set(dut.i_stream.valid, 1)
        ctx.set(dut.preload.payload, {"b": [3, 4]})
        ctx.set(dut.preload.valid, 1)
        for cycle in range(8):
            _, _, ir, wr = await ctx.tick().sample(dut.i_stream.ready, dut.preload.ready)
            log.append((ir, wr))
            if ir:
                ctx.set(dut.i_stream.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    # cycles 0, 1: preload beats accepted, swap row waits; cycle 2: swap accepted, preload
    # blocked (full); then blocked for swap_wave = (R-1)·L + (C-1) = 2 cycles after it
    assert log[:2] == [(0, 1), (0, 1)]
    assert log[2] == (1, 0)
    assert [wr for _, wr in log[3:5]] == [0, 1]
    assert timing(2, 2, pe)["swap_wave"] == 2


@pytest.mark.parametrize("dataflow, m, passes, pipeline", [
    ("ws", 2, 4, 0), ("ws", 5, 3, 1), ("ws", 12, 2, 0), ("os", 2, 2, 0), ("os", 3, 2, 2)])
def test_pacing_model_cycle_exact(dataflow, m, passes, pipeline):
    """Gap-free streams: every accept/output cycle as :func:`predict_cycles` says (stalls
    included: short passes make the swap row wait for the preload)."""
    pe = PEConfig(mult="exact:n=8", acc_bits=16, pipeline=pipeline)
    dut = SystolicArray(rows=3, cols=2, pe=pe, dataflow=dataflow)
    if dataflow == "ws":
        sc = ws_scenario(pe, 3, 2, m=m, passes=passes, seed=40)
    else:
        sc = os_scenario(pe, 3, 2, m_tiles=2, k=m, passes=passes, seed=40)
    first, last = check(dut, sc)
    pred = predict_cycles(sc, dut.timing)
    assert (first, last) == (pred["first"], pred["outputs"][-1])


# -- OS ---------------------------------------------------------------------------------------

def test_os_3x4_saturate_passes():
    pe = PEConfig(mult="exact:n=8", acc_bits=13, overflow="saturate")
    dut = SystolicArray(rows=3, cols=4, pe=pe, dataflow="os", tag_bits=4)
    sc = os_scenario(pe, 3, 4, m_tiles=2, k=5, passes=2, seed=20, tag_bits=4, bias_scale=3000)
    assert any(f for e in sc.expected for f in e["ovf"])
    check(dut, sc, gap=0.2, seed=21)


def test_os_2x2_pipeline1():
    pe = PEConfig(mult="exact:n=8", acc_bits=16, pipeline=1)
    dut = SystolicArray(rows=2, cols=2, pe=pe, dataflow="os")
    sc = os_scenario(pe, 2, 2, m_tiles=2, k=3, passes=1, seed=22)
    check(dut, sc, gap=0.1, seed=23)


def test_os_4x4_tiles_variants():
    pe = PEConfig(mult="exact:n=8", acc_bits=18, pipeline=1)
    variants = ("roup:p=1,r=4",)
    dut = SystolicArray(rows=4, cols=4, pe=pe, dataflow="os", variants=variants,
                        tile_rows=2, tile_cols=2)
    sc = os_scenario(pe, 4, 4, m_tiles=1, k=4, passes=2, variants=variants,
                     sel=[1, 0, 0, 1], seed=24)
    check(dut, sc, gap=0.15, seed=25)


def test_os_composable():
    pe = PEConfig(mult="axbxp:mode=composable", acc_bits=12, overflow="saturate")
    dut = SystolicArray(rows=2, cols=2, pe=pe, dataflow="os")
    sc = os_scenario(pe, 2, 2, m_tiles=1, k=4, passes=2, mode=1, seed=26, bias_scale=1500)
    check(dut, sc, gap=0.1, seed=27)


def test_os_latency():
    pe = PEConfig(mult="exact:n=8", acc_bits=16)
    dut = SystolicArray(rows=3, cols=4, pe=pe, dataflow="os")
    sc = os_scenario(pe, 3, 4, m_tiles=1, k=2, passes=1, seed=28)
    first, last = check(dut, sc)
    t = timing(3, 4, pe, dataflow="os")
    assert dut.latency == t["latency"] == 3 + 4 - 1
    # R shift beats (1 apart), gap, K compute, R shift beats; last output = last shift + latency
    last_shift = (3 - 1) + t["compute_gap"] + 2 + (3 - 1)
    assert last - first == last_shift + dut.latency


# -- structure and validation ------------------------------------------------------------------

def test_layers_and_ports():
    pe = PEConfig(mult="exact:n=8", acc_bits=16)
    dut = unused(SystolicArray(rows=2, cols=3, pe=pe, variants=("roup:p=1,r=4",), tag_bits=2))
    assert list(dut.signature.members) == ["i_stream", "preload", "o_stream", "busy"]
    assert [n for n, _ in dut.i_layout] == ["a", "d", "swap", "tag"]
    assert [n for n, _ in dut.w_layout] == ["b", "sel"]
    assert [n for n, _ in dut.o_layout] == ["c", "ovf", "tag"]
    os_ = unused(SystolicArray(rows=2, cols=3, pe=PEConfig(mult="axbxp:mode=composable"),
                               dataflow="os"))
    assert list(os_.signature.members) == ["i_stream", "o_stream", "mode", "busy"]
    assert [n for n, _ in os_.i_layout] == ["a", "b", "d", "shift"]
    t = unused(Tile(rows=2, cols=2, pe=pe))
    assert "in_shift_w" in t.signature.members
    assert unused(Mesh(rows=4, cols=4, pe=pe, tile_cols=2)).tile_cols == 2
    assert unused(SkewedMesh(rows=2, cols=2, pe=pe, dataflow="os")).latency == 3


@pytest.mark.parametrize("kwargs, match", [
    (dict(rows=0, cols=2), "rows"),
    (dict(rows=2, cols=2, dataflow="xs"), "dataflow"),
    (dict(rows=2, cols=2, variants=("exact:n=4",)), "variants"),
    (dict(rows=2, cols=2, pe=PEConfig(mult="axbxp:mode=composable"),
          variants=("axbxp:mode=composable,l=1",)), "variants"),
    (dict(rows=4, cols=4, tile_rows=3), "tile_rows"),
    (dict(rows=2, cols=2, tag_bits=-1), "tag_bits"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SystolicArray(**kwargs)


def test_from_config_and_preset():
    from mixpe.sw.core_config import CORE_PRESETS

    arr = CORE_PRESETS["tiny-2x2"].array
    dut = unused(SystolicArray.from_config(dataclasses.replace(arr,
                                                               variants=("roup:p=1,r=4",))))
    assert dut.config.variants == ("roup:p=1,r=4",) and dut.sel_bits == 1


def test_convert_one_tile_module():
    """:func:`convert`: the tile is one Verilog module, instantiated per tile (cocotb runs
    this Verilog: ``sim/test_array.py``)."""
    import re

    from mixpe.hw.array import convert

    pe = PEConfig(mult="exact:n=8", acc_bits=16)
    text = convert(SystolicArray(rows=3, cols=2, pe=pe), name="arr")
    modules = re.findall(r"^module\s+\\?([^\s(]+)", text, re.M)
    assert "arr" in modules and "arr__tile0" in modules
    assert modules.count("arr__tile0") == 1
    assert len(re.findall(r"^\s*arr__tile0\s", text, re.M)) == 3 * 2
    assert not any("pe_1_1" in mod for mod in modules)  # no per-position PE modules


# -- the variants multiplier (sw + hw) ----------------------------------------------------------

def test_variants_spec_and_members():
    from mixpe.sw.mult import multiplier
    from mixpe.sw.mult.variants import VariantsMultiplier, variants_spec
    from mixpe.sw.spec import from_spec

    spec = variants_spec("exact", ["roup:n=8,p=1,r=4", "axbxp:l=1"])
    assert spec == "variants:of=exact|roup:p=1;r=4|axbxp:l=1"
    v = multiplier(spec)
    assert isinstance(v, VariantsMultiplier) and from_spec(v.spec, kind="mult") == v
    assert v.sel_bits == 2 and [m.spec for m in v.members] == ["exact", "roup:p=1,r=4",
                                                               "axbxp:l=1"]
    a, b = v.a_format.values()[:, None], v.b_format.values()[None, :]
    for i, m in enumerate(v.members):
        assert (v.mul_sel(a, b, i) == m.mul(a, b)).all()
    assert (v.table() == v.members[0].table()).all()
    lo, hi = v.product_range
    assert all(lo <= m.product_range[0] and m.product_range[1] <= hi for m in v.members)


@pytest.mark.parametrize("of, match", [
    ((), "at least one"),
    (("exact", "exact:n=4"), "operand formats|a_format"),
    (("exact", "axbxp:mode=composable"), "composable"),
    (("exact", "nosuch"), "of\\[1\\]"),
])
def test_variants_rejects(of, match):
    from mixpe.sw.mult.variants import VariantsMultiplier

    with pytest.raises(ValueError, match=match):
        VariantsMultiplier(of=of)


def test_variants_hw_every_sel():
    """The hw unit equals ``mul_sel`` for every variant on random codes (Amaranth sim)."""
    import torch
    from mixpe.hw.mult import create

    spec = "variants:of=exact|roup:p=1;r=4|axbxp:l=1"
    unit = create(spec)
    cfg = unit.config
    rnd = random.Random(5)
    vecs = [(rnd.getrandbits(8), rnd.getrandbits(8), rnd.randrange(4)) for _ in range(200)]
    got = []

    async def bench(ctx):
        for a, b, s in vecs:
            ctx.set(unit.a, a)
            ctx.set(unit.b, b)
            ctx.set(unit.sel, s)
            got.append(ctx.get(unit.p))

    sim = Simulator(unit)
    sim.add_testbench(bench)
    sim.run()
    av = cfg.a_format.decode(torch.tensor([v[0] for v in vecs]))
    bv = cfg.b_format.decode(torch.tensor([v[1] for v in vecs]))
    want = cfg.mul_sel(av, bv, torch.tensor([v[2] for v in vecs])).tolist()
    assert got == want


@pytest.mark.parametrize("name", ["mixpe.hw.array", "mixpe.hw.mult.variants",
                                  "mixpe.sw.mult.variants", "mixpe.sim.array_tests"])
def test_doctests(name):
    import doctest
    import importlib

    assert doctest.testmod(importlib.import_module(name)).failed == 0
