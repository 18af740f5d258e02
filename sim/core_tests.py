"""cocotb testbench of the generated AcceleratorCore Verilog (``hw/core.py``).

The DUT is ``core_harness`` (written by :func:`mixpe.sim.test_core.harness_verilog`): the
generated ``core`` module plus a Verilog *host model* that, for each program, writes the
instruction memory through the ``imem_*`` port, pulses ``start``, feeds ``i_stream`` from
``in.hex`` and captures ``o_stream`` into ``out.hex`` (``$readmemh``/``$writememh``), with
pseudo-random idle cycles on ``i_stream`` and back-pressure on ``o_stream`` (xorshift, the
thresholds and seed are inputs). No Python runs per clock cycle, so long programs simulate
at the speed of the Verilated model.

For every job of ``MIXPE_CORE_JOBS`` (a JSON list written by ``sim/test_core.py``) the test

1. copies the job's ``prog.hex``/``in.hex`` into the run directory, sets ``n_prog``, ``n_in``,
   ``idle_thr``, ``stall_thr``, ``seed`` and pulses ``go``;
2. waits for ``finished`` (with a timeout in cycles);
3. reads ``out.hex`` and compares it word for word with the expected words (the golden model
   ``sw/core_ref.run_program``; counter words are returned, not compared, here);
4. appends ``{name, ok, n_out, mismatches, words, harness_cycles}`` to ``MIXPE_CORE_RESULT``.

The scoreboard is in-order by construction (``o_stream`` order is the program's STORE order).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout

__all__ = ["ENV_JOBS", "ENV_RESULT", "read_hex", "write_hex"]

ENV_JOBS = "MIXPE_CORE_JOBS"
ENV_RESULT = "MIXPE_CORE_RESULT"
CLOCK_NS = 10


def write_hex(path, words, width: int):
    """One hex word per line (``$readmemh``); an empty list writes a single 0."""
    digits = -(-width // 4)
    words = list(words) or [0]
    Path(path).write_text("".join(f"{int(w):0{digits}x}\n" for w in words))


def read_hex(path) -> list[int]:
    """Words of a ``$writememh`` file (comments and ``@`` addresses skipped)."""
    out = []
    for line in Path(path).read_text().split("\n"):
        line = line.split("//")[0].strip()
        if line and not line.startswith("@"):
            out.extend(int(t, 16) for t in line.split())
    return out


@cocotb.test()
async def run_programs(dut):
    """Run every job on the core and compare ``o_stream`` with the golden words."""
    jobs = json.loads(Path(os.environ[ENV_JOBS]).read_text())
    result_path = Path(os.environ[ENV_RESULT])
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    dut.go.value = 0
    for name in ("n_prog", "n_in", "idle_thr", "stall_thr", "seed"):
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    results = []
    for job in jobs:
        shutil.copyfile(job["prog"], "prog.hex")
        shutil.copyfile(job["in"], "in.hex")
        Path("out.hex").unlink(missing_ok=True)
        dut.n_prog.value = job["n_prog"]
        dut.n_in.value = job["n_in"]
        dut.idle_thr.value = job.get("idle_thr", 0)
        dut.stall_thr.value = job.get("stall_thr", 0)
        dut.seed.value = job.get("seed", 1)
        dut.go.value = 1
        await RisingEdge(dut.clk)
        dut.go.value = 0
        await with_timeout(RisingEdge(dut.finished), job["timeout_cycles"] * CLOCK_NS, "ns")
        await RisingEdge(dut.clk)
        n_out = int(dut.n_out.value)
        words = read_hex("out.hex")[:n_out] if n_out else []
        want = job["expected"]
        compare = job.get("compare", len(want))  # leading words to compare (counters after)
        mism = [i for i in range(min(compare, len(words), len(want))) if words[i] != want[i]]
        ok = n_out == len(want) and not mism
        if not ok:
            dut._log.error(f"{job['name']}: {len(mism)} mismatching words (first "
                           f"{mism[:5]}), {n_out} words out, {len(want)} expected")
        results.append({
            "name": job["name"], "ok": ok, "n_out": n_out, "mismatches": mism[:20],
            "words": words, "harness_cycles": int(dut.run_cycles.value),
            "words_in": int(dut.in_ptr.value),
        })
        result_path.write_text(json.dumps(results))
    assert all(r["ok"] for r in results), [r["name"] for r in results if not r["ok"]]
