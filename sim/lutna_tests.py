"""cocotb testbench of the programmable-LUT LUT-NA element (``split=act``) through its load
sequence, on the generated Verilog of :class:`mixpe.hw.mult.lutna.LutNaMultiplier`.

The generic multiplier testbench (:mod:`mixpe.sim.mult_tests`) drives ``split=act`` with
``load`` held high, as a slow multiplier. This one uses the element the way a weight-stationary
array does: a one-cycle ``load`` pulse per weight, then one activation per clock while the
weight stays put. Ports keep the Amaranth names (``a``, ``b``, ``load``, ``p``, ``clk``,
``rst``). Inputs (environment, set by ``sim/test_lutna.py``):

``MIXPE_MANIFEST``
    the manifest written by :func:`mixpe.hw.generate.generate` (spec, ``load_cycles``);
``MIXPE_SIM_COUNT``
    activations per weight (``0``: all ``2^n`` of them, i.e. every operand pair);
``MIXPE_SIM_SEED``
    seed of the random choices;
``MIXPE_SIM_RESULT``
    where to write the JSON result (``matched``, ``total``, ``loads``, first ``failures``).

Per weight code (all ``2^nb`` of them), in order: ``b = w`` and ``load = 1`` on a falling edge;
on the next one ``load = 0`` and ``b`` gets a random code (the element must not look at ``b``
after the load); for one weight in four a second ``load`` pulse with another code is sent
while the LUT is being written (it must be ignored). After ``load_cycles`` edges the
activations are applied, one per falling edge, and ``p`` is sampled before the next edge and
compared with ``config.table()[a, w]``.
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

__all__ = ["ENV_MANIFEST", "ENV_COUNT", "ENV_SEED", "ENV_RESULT", "TB"]

ENV_MANIFEST = "MIXPE_MANIFEST"
ENV_COUNT = "MIXPE_SIM_COUNT"
ENV_SEED = "MIXPE_SIM_SEED"
ENV_RESULT = "MIXPE_SIM_RESULT"
MAX_FAILURES = 10


class TB:
    """Clock, reset and the load/stream driver of one LUT-NA element."""

    def __init__(self, dut, load_cycles: int):
        self.dut = dut
        self.load_cycles = load_cycles
        Clock(dut.clk, 10, unit="ns").start()

    async def reset(self):
        self.dut.load.value = 0
        self.dut.a.value = 0
        self.dut.b.value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 2)
        self.dut.rst.value = 0
        await FallingEdge(self.dut.clk)

    async def load(self, w: int, junk: int, interfere: int | None):
        """Pulse ``load`` with weight ``w``; ``interfere``: a second pulse mid-load."""
        dut = self.dut
        dut.b.value = w
        dut.load.value = 1
        await FallingEdge(dut.clk)  # the rising edge in between takes the load
        dut.load.value = 0
        dut.b.value = junk
        for k in range(1, self.load_cycles):
            if interfere is not None and k == self.load_cycles // 2:
                dut.b.value = interfere
                dut.load.value = 1
            await FallingEdge(dut.clk)
            dut.load.value = 0

    async def product(self, a: int) -> int:
        self.dut.a.value = a
        await ReadOnly()
        value = self.dut.p.value.to_signed()
        await FallingEdge(self.dut.clk)
        return value


@cocotb.test()
async def load_sequence(dut):
    """Every weight loaded by a pulse, then a stream of activations against the sw table."""
    from mixpe.sw.mult import multiplier

    with open(os.environ[ENV_MANIFEST]) as f:
        manifest = json.load(f)
    cfg = multiplier(manifest["config"]["spec"])
    table = cfg.table().tolist()
    na, nb = cfg.a_format.bits, cfg.b_format.bits
    count = int(os.environ.get(ENV_COUNT, "0"))
    rng = random.Random(int(os.environ.get(ENV_SEED, "1")))
    tb = TB(dut, 1 << cfg.c)
    await tb.reset()

    t0 = time.perf_counter()
    matched = total = 0
    failures = []
    for w in range(1 << nb):
        interfere = rng.getrandbits(nb) if w % 4 == 1 else None
        await tb.load(w, rng.getrandbits(nb), interfere)
        if count:
            acts = [0, (1 << na) - 1] + [rng.getrandbits(na) for _ in range(count)]
        else:
            acts = list(range(1 << na))
            rng.shuffle(acts)
        for a in acts:
            got = await tb.product(a)
            want = table[a][w]
            total += 1
            if got == want:
                matched += 1
            elif len(failures) < MAX_FAILURES:
                failures.append({"a_code": a, "b_code": w, "expected": want, "got": got})
    result = {"spec": cfg.spec, "matched": matched, "total": total, "loads": 1 << nb,
              "failures": failures, "drive_s": round(time.perf_counter() - t0, 3)}
    out = os.environ.get(ENV_RESULT)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    dut._log.info("%s: matched %d / %d after %d loads", cfg.spec, matched, total, 1 << nb)
    assert not failures, f"{cfg.spec}: first mismatches {failures[:3]}"
