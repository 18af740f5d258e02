"""cocotb testbench of the generated ProcessingElement Verilog, checked against ``pe_trace``.

The DUT is the Verilog that :mod:`mixpe.hw.generate` writes for
:class:`mixpe.hw.pe.ProcessingElement`; its ports keep the Amaranth names (``in_a``, ``out_c``,
``in_valid``, …, ``clk``, ``rst``). Inputs (environment, set by ``sim/test_pe.py``):

``MIXPE_CONFIG``
    path of the PE config JSON (:meth:`mixpe.sw.pe.PEConfig.to_json`);
``MIXPE_PE_LATENCY``
    the Component's declared latency (cycles from operands to ``out_c``);
``MIXPE_SIM_COUNT``, ``MIXPE_SIM_SEED``
    number of random operations and their seed.

A driver applies one operation per clock (operands, ``valid``, ``clear``, ``load``, ``in_d``,
and ``mode``/``sel`` when the multiplier has them) on the falling edge; a monitor samples
``out_c``/``out_overflow`` and the pass-through outputs on the next falling edge; the
scoreboard compares the monitored stream in order with the reference model
:func:`mixpe.sw.pe.pe_trace` delayed by the latency.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
import mixpe.sw.mult.variants  # noqa: F401  (registers the variants family)
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge
from mixpe.sw.pe import PEConfig, pe_trace

__all__ = ["ENV_CONFIG", "ENV_LATENCY", "random_ops", "TB", "InOrderChecker"]

ENV_CONFIG = "MIXPE_CONFIG"
ENV_LATENCY = "MIXPE_PE_LATENCY"
ENV_COUNT = "MIXPE_SIM_COUNT"
ENV_SEED = "MIXPE_SIM_SEED"


def random_ops(cfg: PEConfig, n: int, seed: int) -> list[dict]:
    """Random port-level operations (``pe_step`` keywords): mostly MACs, some clears/loads."""
    rng = random.Random(seed)
    a_bits, b_bits = cfg.port_bits
    lo, hi = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    ops = []
    for _ in range(n):
        r = rng.random()
        op = {
            "valid": int(rng.random() < 0.85),
            "clear": int(r < 0.08),
            "load": int(0.08 <= r < 0.13),
            "d": rng.randint(lo, hi),
            "a": rng.getrandbits(a_bits),
            "b": rng.getrandbits(b_bits),
        }
        if cfg.modes:
            op["mode"] = rng.randrange(len(cfg.modes))
        if cfg.selectable:
            op["sel"] = rng.randrange(1 << cfg.core.sel_bits)
        ops.append(op)
    return ops


class InOrderChecker:
    """Scoreboard: expected items in order vs the monitored items."""

    def __init__(self, expected, log):
        self._expected = list(expected)
        self._log = log
        self.matched = 0
        self.failures: list[str] = []

    def check(self, index: int, got):
        want = self._expected[index]
        if got == want:
            self.matched += 1
        elif len(self.failures) < 10:
            self.failures.append(f"step {index}: got {got}, want {want}")
            self._log.error(self.failures[-1])


class TB:
    """Clock, reset, the operation driver and the output monitor of one PE."""

    def __init__(self, dut, cfg: PEConfig, latency: int):
        self.dut = dut
        self.cfg = cfg
        self.latency = latency
        self.extra = [name for name, on in (("mode", bool(cfg.modes)),
                                            ("sel", cfg.selectable)) if on]

    async def reset(self):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        for name in ("in_valid", "in_clear", "in_load", "in_d", "in_a", "in_b"):
            getattr(dut, name).value = 0
        for name in self.extra:
            getattr(dut, f"in_{name}").value = 0
        dut.rst.value = 1
        await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)
        await FallingEdge(dut.clk)
        dut.rst.value = 0

    def drive(self, op: dict):
        dut = self.dut
        dut.in_valid.value = op["valid"]
        dut.in_clear.value = op["clear"]
        dut.in_load.value = op["load"]
        dut.in_d.value = op["d"]
        dut.in_a.value = op["a"]
        dut.in_b.value = op["b"]
        for name in self.extra:
            getattr(dut, f"in_{name}").value = op[name]

    def sample(self) -> tuple[int, bool]:
        return self.dut.out_c.value.to_signed(), bool(int(self.dut.out_overflow.value))

    def passthrough(self) -> dict:
        dut = self.dut
        out = {"a": int(dut.out_a.value), "b": int(dut.out_b.value),
               "valid": int(dut.out_valid.value), "clear": int(dut.out_clear.value),
               "load": int(dut.out_load.value)}
        for name in self.extra:
            out[name] = int(getattr(dut, f"out_{name}").value)
        return out

    async def run(self, ops: list[dict], checker: InOrderChecker):
        idle = {"valid": 0, "clear": 0, "load": 0, "d": 0, "a": 0, "b": 0, "mode": 0, "sel": 0}
        stream = ops + [idle] * self.latency
        for i, op in enumerate(stream):
            # on the falling edge: outputs of the last rising edge are stable, drive the next op
            if i >= 1:
                prev = stream[i - 1]
                seen = self.passthrough()
                want = {k: prev[k] for k in seen}
                assert seen == want, f"pass-through at step {i - 1}: {seen} != {want}"
            if i >= self.latency:
                checker.check(i - self.latency, self.sample())
            self.drive(op)
            await FallingEdge(self.dut.clk)


@cocotb.test()
async def pe_random_sequence(dut):
    """Random MAC/clear/load sequence: ``out_c`` and ``out_overflow`` match ``pe_trace``."""
    cfg = PEConfig.from_json(Path(os.environ[ENV_CONFIG]).read_text())
    latency = int(os.environ.get(ENV_LATENCY, cfg.latency))
    count = int(os.environ.get(ENV_COUNT, "400"))
    seed = int(os.environ.get(ENV_SEED, "1"))
    ops = random_ops(cfg, count, seed)
    expected = pe_trace(cfg, ops)
    tb = TB(dut, cfg, latency)
    await tb.reset()
    checker = InOrderChecker(expected, dut._log)
    await tb.run(ops, checker)
    dut._log.info(f"{cfg.name}: matched {checker.matched} / {len(expected)}")
    result = os.environ.get("MIXPE_SIM_RESULT")
    if result:
        Path(result).write_text(json.dumps({"matched": checker.matched, "total": len(expected),
                                            "failures": checker.failures}))
    assert checker.matched == len(expected), "; ".join(checker.failures)
