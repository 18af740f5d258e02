"""AcceleratorCore on Amaranth's simulator: tiny programs against ``sw/core_ref.run_program``.

The fast, broad checks run on the generated Verilog under cocotb (``sim/test_core.py``); here
the same host protocol (imem writes, ``start``, ``i_stream``/``o_stream`` with idle cycles and
back-pressure, ``done``) drives the Amaranth design directly, on the 2×2 preset.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from amaranth.sim import Simulator
from mixpe.hw.core import INSTR_LAYOUT, AcceleratorCore, payload_layout, zero_codes
from mixpe.sw import isa
from mixpe.sw.compiler import compile_conv2d, compile_gemm
from mixpe.sw.core_config import CORE_PRESETS, ArrayConfig, CoreConfig, MemoryConfig
from mixpe.sw.core_ref import run_program
from mixpe.sw.pe import PEConfig
from mixpe.sw.requant import Requant

TINY = CORE_PRESETS["tiny-2x2"]


def simulate(cfg: CoreConfig, words, i_words, *, n_out, seed=0, idle=0.0, stall=0.0,
             max_cycles=200_000, **core_kw):
    """Run a program on the core; returns ``(o_words, cycles_until_done)``."""
    dut = AcceleratorCore(cfg, **core_kw)
    rng = random.Random(seed)
    out = []
    state = {"done": None}

    async def host(ctx):
        for a, w in enumerate(words):
            ctx.set(dut.imem_addr, a)
            ctx.set(dut.imem_data, w)
            ctx.set(dut.imem_we, 1)
            await ctx.tick()
        ctx.set(dut.imem_we, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        n = 0
        while True:
            _, _, done = await ctx.tick().sample(dut.done)
            n += 1
            if done:
                state["done"] = n
                return
            assert n < max_cycles, "the core did not finish"

    async def producer(ctx):
        for w in i_words:
            while rng.random() < idle:
                ctx.set(dut.i_stream.valid, 0)
                await ctx.tick()
            ctx.set(dut.i_stream.payload, w)
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        while len(out) < n_out:
            ready = int(rng.random() >= stall)
            ctx.set(dut.o_stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid,
                                                           dut.o_stream.payload)
            if valid and ready:
                out.append(payload)
        ctx.set(dut.o_stream.ready, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(host)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer, background=True)
    sim.run()
    return out, state["done"]


def check(prog, cfg, **kw):
    want, model = run_program(prog, cfg)
    got, _ = simulate(cfg, prog.words, prog.i_stream, n_out=len(want), **kw)
    n_cnt = 0
    for piece in prog.pieces:  # counter words: compare the model's counters only
        n_cnt += piece.words if piece.mem == isa.Mem.CNT else 0
    if n_cnt:
        cnt = prog.counters(got)
        assert cnt["macs"] == model["macs"] and cnt["busy"] == model["busy"]
        assert cnt["overflow"] == model["overflow"]
        got = got[:len(got) - n_cnt]
        want = want[:len(want) - n_cnt]
    assert got == want
    return prog.outputs(list(got) + [0] * n_cnt) if n_cnt else prog.outputs(got)


def test_layouts_follow_isa():
    assert INSTR_LAYOUT.size == 64
    word = isa.encode(isa.Instr(isa.Opcode.COMPUTE, asp_addr=3, acc_addr=9, m_outer=2,
                                m_inner=5, a_stride_outer=7, a_stride_inner=1, acc_stride=1,
                                accumulate=1, swap=1))
    view = INSTR_LAYOUT.from_bits(word)
    assert view.payload.compute.m_inner == 5 and view.payload.compute.a_stride_outer == 7
    assert payload_layout(isa.Opcode.CONFIG).size == isa.PAYLOAD_BITS
    assert zero_codes(TINY) == (0, 0)


def test_gemm_odd_shape_with_stalls():
    torch.manual_seed(0)
    a = torch.randint(0, 256, (5, 3))
    b = torch.randint(0, 256, (3, 3))
    prog = compile_gemm(a, b, TINY, read_counters=True)
    check(prog, TINY, seed=1, idle=0.3, stall=0.3)


@pytest.mark.parametrize("mode", ["parallel", "lane", "serial"])
def test_requant_and_accumulate(mode):
    torch.manual_seed(1)
    a = torch.randint(0, 256, (4, 5))
    b = torch.randint(0, 256, (5, 2))
    rq = Requant(bias=torch.tensor([5, -7]), mult=torch.tensor([3 << 20, -(5 << 18)]),
                 shift=torch.tensor([24, 23]), zp=3, relu=True, lo=-128, hi=127)
    prog = compile_gemm(a, b, TINY, requant=rq, acc_overwrite=False,
                        acc_init=torch.tensor([[100, -100]]))
    check(prog, TINY, requant=mode, stall=0.0 if mode == "parallel" else 0.3)


def test_conv_direct_pattern():
    torch.manual_seed(2)
    x = torch.randint(0, 256, (1, 2, 4, 3))
    w = torch.randint(0, 256, (3, 2, 2, 2))
    cfg = dataclasses.replace(TINY, array=dataclasses.replace(
        TINY.array, pe=dataclasses.replace(TINY.array.pe, acc_bits=24)))
    prog = compile_conv2d(x, w, cfg, padding=1, stride=(1, 2), mapping="direct")
    assert "direct" in prog.info["mapping"]
    check(prog, cfg, stall=0.2)


def test_saturating_overflow_is_sticky():
    cfg = CoreConfig(array=ArrayConfig(rows=2, cols=2, pe=PEConfig(acc_bits=10,
                                                                   overflow="saturate")),
                     memory=MemoryConfig(wsp_depth=32, asp_depth=64, acc_depth=32,
                                         imem_depth=256, qsp_depth=16))
    a = torch.full((3, 4), 127)
    b = torch.full((4, 2), 127)
    prog = compile_gemm(a, b, cfg, read_counters=True)
    check(prog, cfg)


def test_rejects_bad_config():
    with pytest.raises(TypeError, match="CoreConfig"):
        AcceleratorCore("tiny")
    os_cfg = dataclasses.replace(TINY, array=dataclasses.replace(TINY.array, dataflow="os"))
    with pytest.raises(ValueError, match="dataflow"):
        AcceleratorCore(os_cfg)
    with pytest.raises(ValueError, match="requant"):
        AcceleratorCore(TINY, requant="fast")


def test_variant_selects_per_column():
    """PRELOAD's select row (first read of the tile) reaches every column's multiplier."""
    cfg = CoreConfig(array=ArrayConfig(rows=2, cols=2, pe=PEConfig(acc_bits=14),
                                       variants=("roup:p=1,r=4", "axbxp:l=2")),
                     memory=TINY.memory)
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(0, 256, (3, 3), generator=gen)
    b = torch.randint(0, 256, (3, 3), generator=gen)
    check(compile_gemm(a, b, cfg, variant_map=torch.arange(3) % 3), cfg, stall=0.2)


def test_tiled_array_serial_requant():
    """The iCE40 build options: a row of PEs per combinational tile, the serial requantizer."""
    gen = torch.Generator().manual_seed(4)
    a = torch.randint(0, 256, (6, 5), generator=gen)
    b = torch.randint(0, 256, (5, 2), generator=gen)
    rq = Requant(bias=torch.tensor([1, -2]), mult=torch.tensor([5 << 20, 3 << 21]),
                 shift=torch.tensor([25, 26]), zp=-1, relu=False, lo=-128, hi=127)
    check(compile_gemm(a, b, TINY, requant=rq, read_counters=True), TINY, tile_cols=2,
          requant="serial", stall=0.2)
