"""Requantizer on Amaranth's simulator, bit-for-bit against ``sw/requant.requantize``.

Vectors: exhaustive small ranges (every accumulator value of a 7-bit window × every shift up
to 9 × a set of multipliers and biases, so that every rounding tie of those shifts occurs),
ReLU/zero-point/clamp combinations, and random extremes (48-bit accumulators, ±2^31
multipliers, shifts up to 62). The stream is driven with idle cycles and back-pressure.
"""

from __future__ import annotations

import random

import pytest
import torch
from amaranth.back import verilog
from amaranth.sim import Simulator
from mixpe.hw.requant import Requantizer
from mixpe.sw.requant import requantize


def expected(vec, cfgv):
    acc, bias, mult, shift = (torch.tensor([v[i] for v in vec], dtype=torch.int64)
                              for i in range(4))
    return requantize(acc, bias, mult, shift, **cfgv).tolist()


def simulate(acc_bits, vectors, cfgv, *, seed=0, idle=0.0, stall=0.0, serial=False):
    """Stream ``vectors`` (acc, bias, mult, shift) through a Requantizer; return the ys."""
    dut = Requantizer(acc_bits=acc_bits, tag_bits=16, serial=serial)
    rng = random.Random(seed)
    got = []

    async def producer(ctx):
        ctx.set(dut.zp, cfgv["zp"])
        ctx.set(dut.lo, cfgv["lo"])
        ctx.set(dut.hi, cfgv["hi"])
        ctx.set(dut.relu, int(cfgv["relu"]))
        for n, (acc, bias, mult, shift) in enumerate(vectors):
            while rng.random() < idle:
                ctx.set(dut.i_stream.valid, 0)
                await ctx.tick()
            ctx.set(dut.i_stream.payload, {"acc": acc, "bias": bias, "mult": mult,
                                           "shift": shift, "tag": n & 0xFFFF})
            ctx.set(dut.i_stream.valid, 1)
            await ctx.tick().until(dut.i_stream.ready)
        ctx.set(dut.i_stream.valid, 0)

    async def consumer(ctx):
        while len(got) < len(vectors):
            ready = int(rng.random() >= stall)
            ctx.set(dut.o_stream.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o_stream.valid,
                                                           dut.o_stream.payload)
            if valid and ready:
                assert payload.tag == len(got) & 0xFFFF, "out of order"
                got.append(payload.y)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return got


CFG_PLAIN = dict(zp=0, relu=False, lo=-32768, hi=32767)


@pytest.mark.parametrize("serial", [False, True])
def test_exhaustive_small_ranges_and_ties(serial):
    """Every acc in [-64, 63] × shifts 0…9 × multipliers × biases: all ties of those shifts."""
    vec = [(acc, bias, mult, shift)
           for acc in range(-64, 64)
           for bias in (0, -5)
           for mult in (1, -1, 3, -7, 2 ** 31 - 1, -(2 ** 31))
           for shift in (0, 1, 2, 3, 5, 9)]
    for cfgv in (CFG_PLAIN, dict(zp=-3, relu=True, lo=-128, hi=127)):
        got = simulate(8, vec, cfgv, serial=serial)
        assert got == expected(vec, cfgv)


@pytest.mark.parametrize("cfgv", [
    dict(zp=0, relu=False, lo=-128, hi=127),
    dict(zp=5, relu=True, lo=0, hi=255),
    dict(zp=-100, relu=False, lo=-8, hi=7),
    dict(zp=32767, relu=True, lo=-32768, hi=32767),
    dict(zp=-32768, relu=False, lo=-32768, hi=32767),
])
def test_output_stage(cfgv):
    """ReLU, zero point and clamps (incl. the 16-bit extremes) over a range of v."""
    vec = [(acc, 0, 1, shift) for acc in range(-300, 300, 3) for shift in (0, 1)]
    vec += [(acc, 0, 2 ** 30, 12) for acc in (-(1 << 19), -(1 << 17), -1, 0, 1, 1 << 17)]
    assert simulate(20, vec, cfgv, seed=1) == expected(vec, cfgv)


@pytest.mark.parametrize("serial", [False, True])
@pytest.mark.parametrize("acc_bits", [2, 16, 32, 48])
def test_random_extremes_with_backpressure(acc_bits, serial):
    """Random (incl. extreme) operands with idle cycles and back-pressure."""
    rng = random.Random(acc_bits)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    corners_v = [lo, hi, 0, -1, 1]
    corners_m = [-(2 ** 31), 2 ** 31 - 1, 0, 1, -1, 2 ** 30]
    vec = []
    for _ in range(300):
        vec.append((rng.choice(corners_v) if rng.random() < 0.3 else rng.randint(lo, hi),
                    rng.choice(corners_v) if rng.random() < 0.3 else rng.randint(lo, hi),
                    rng.choice(corners_m) if rng.random() < 0.3 else
                    rng.randint(-(2 ** 31), 2 ** 31 - 1),
                    rng.choice([0, 1, 31, 32, 47, 61, 62]) if rng.random() < 0.3 else
                    rng.randint(0, 62)))
    cfgv = dict(zp=rng.randint(-50, 50), relu=True, lo=-1000, hi=30000)
    got = simulate(acc_bits, vec, cfgv, seed=acc_bits, idle=0.2, stall=0.3, serial=serial)
    assert got == expected(vec, cfgv)
    got = simulate(acc_bits, vec, CFG_PLAIN, seed=acc_bits + 1, serial=serial)
    assert got == expected(vec, CFG_PLAIN)


@pytest.mark.parametrize("serial", [False, True])
def test_latency_and_interval(serial):
    """With ready held high, a value accepted in cycle T leaves in T + latency; inputs are
    taken every ``interval`` cycles."""
    dut = Requantizer(acc_bits=8, serial=serial)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o_stream.ready, 1)
        ctx.set(dut.hi, 127)
        ctx.set(dut.lo, -128)
        n = 0
        for cyc in range(80):
            ctx.set(dut.i_stream.valid, int(n < 3))
            ctx.set(dut.i_stream.payload, {"acc": n + 1, "bias": 0, "mult": 1, "shift": 0})
            _, _, valid, y, ready = await ctx.tick().sample(
                dut.o_stream.valid, dut.o_stream.payload.y, dut.i_stream.ready)
            if valid:
                seen.append((cyc, y))
            if ready and n < 3:
                n += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # sampled at the edge that ends a cycle: the output of input cycle T is on the port
    # during cycle T + latency
    assert seen == [(dut.latency + k * dut.interval, k + 1) for k in range(3)]


def test_parameters_checked():
    with pytest.raises(TypeError, match="Accumulator width"):
        Requantizer(acc_bits=49)
    with pytest.raises(TypeError, match="Tag width"):
        Requantizer(acc_bits=8, tag_bits=-1)


def test_converts_to_verilog():
    text = verilog.convert(Requantizer(acc_bits=20, tag_bits=3), name="rq")
    assert "module rq" in text


