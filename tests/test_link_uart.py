"""UARTRx / UARTTx on Amaranth's simulator: loopback, back-to-back bytes, errors, parameters."""

from __future__ import annotations

import random

import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from mixpe.hw.uart import UARTRx, UARTTx, divisor_for


class _Loop(wiring.Component):
    def __init__(self, divisor):
        self.tx_ = UARTTx(divisor=divisor)
        self.rx_ = UARTRx(divisor=divisor, fifo_depth=4)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx = self.tx_
        m.submodules.rx = self.rx_
        m.d.comb += self.rx_.rx.eq(self.tx_.tx)
        return m


@pytest.mark.parametrize("divisor", [4, 5, 8, 13])
def test_loopback(divisor):
    """Bytes sent by the transmitter come out of the receiver unchanged, with back-pressure."""
    dut = _Loop(divisor)
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(40)] + [0x00, 0xFF, 0x55, 0xAA]
    got = []

    async def send(ctx):
        for b in data:
            ctx.set(dut.tx_.i_stream.payload, b)
            ctx.set(dut.tx_.i_stream.valid, 1)
            await ctx.tick().until(dut.tx_.i_stream.ready)
            ctx.set(dut.tx_.i_stream.valid, 0)
            if rng.random() < 0.2:
                await ctx.tick().repeat(rng.randrange(1, 3 * divisor))

    async def recv(ctx):
        while len(got) < len(data):
            ready = rng.random() < 0.7
            ctx.set(dut.rx_.o_stream.ready, ready)
            _, _, valid, payload, ovr, fe = await ctx.tick().sample(
                dut.rx_.o_stream.valid, dut.rx_.o_stream.payload, dut.rx_.overrun,
                dut.rx_.frame_error)
            assert not ovr and not fe
            if ready and valid:
                got.append(payload)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(recv)
    sim.run_until(1e-6 * (len(data) * 10 * divisor * 2 + 2000))
    assert got == data


def test_back_to_back_rate():
    """Consecutive bytes leave the transmitter at exactly 10 bits each (full line rate)."""
    div = 6
    dut = UARTTx(divisor=div)
    edges = []

    async def bench(ctx):
        ctx.set(dut.i_stream.valid, 1)
        ctx.set(dut.i_stream.payload, 0xFF)  # only the start bit is low: one falling edge/byte
        prev = 1
        for t in range(div * 10 * 5 + 5):
            _, _, tx = await ctx.tick().sample(dut.tx)
            if prev and not tx:
                edges.append(t)
            prev = tx

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(edges) >= 5
    assert all(b - a == 10 * div for a, b in zip(edges, edges[1:]))


def test_frame_error_and_overrun():
    """A 0 stop bit drops the byte (frame_error); a full FIFO drops the byte (overrun)."""
    div = 4
    dut = UARTRx(divisor=div, fifo_depth=2)
    flags = {"fe": 0, "ovr": 0}

    async def line(ctx):
        async def send_bits(bits):
            for b in bits:
                ctx.set(dut.rx, b)
                await ctx.tick().repeat(div)

        await ctx.tick().repeat(10)
        await send_bits([0] + [1, 0, 1, 0, 1, 0, 1, 0] + [0])  # stop bit 0
        await send_bits([1] * 12)
        for v in (1, 2, 3, 4, 5):  # FIFO of 2 (+1 output register) fills, then overruns
            await send_bits([0] + [(v >> i) & 1 for i in range(8)] + [1])
        await send_bits([1] * 5)

    async def watch(ctx):
        async for _, _, fe, ovr in ctx.tick().sample(dut.frame_error, dut.overrun):
            flags["fe"] += fe
            flags["ovr"] += ovr

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(line)
    sim.add_process(watch)
    sim.run_until(1e-6 * 400)
    assert flags["fe"] == 1
    assert flags["ovr"] >= 1


def test_parameters():
    with pytest.raises(ValueError, match="divisor"):
        UARTRx(divisor=3)
    with pytest.raises(ValueError, match="divisor"):
        UARTTx(divisor=1.5)
    with pytest.raises(ValueError, match="fifo_depth"):
        UARTRx(divisor=8, fifo_depth=1)
    assert divisor_for(48_000_000, 3_000_000) == 16
    assert divisor_for(25_000_000, 115_200) == 217
    with pytest.raises(ValueError, match="baud"):
        divisor_for(25_000_000, 3_000_000)  # divisor 8 is 4.2 % fast
