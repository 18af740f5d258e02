"""Simulated cycles per second of the simulated board with the host attached.

Run: ``.venv/bin/python -P bench/simboard.py [--board ulx3s] [--seconds 5] [--json]`` (writes
``bench/results/simboard.md``; the first run builds the model: a few minutes for ulx3s).

The board is ``sim/simboard.py``'s Verilator model of the whole SoC (UART, host link, core)
with the C++ UART/TCP bridge of ``sim/simboard_main.cpp``. Rates are the model's own counters
(``STATS``): simulated cycles divided by the wall time the process spent simulating (time it
spent blocked waiting for the host, with nothing to simulate, is excluded; it is reported).

Workloads:

* ``link traffic``: the host streams WRITE_MEM frames of the largest payload into ``asp``
  (stop-and-wait, as ``bench/link.py``) for ``--seconds``: the UART busy in both directions, the
  link engine working, the core executing the LOADs.
* ``gemm (driver)``: GEMMs through ``mixpe.sw.driver`` (when it exists) for ``--seconds``:
  the same driver code path as on hardware.
* ``free-running``: connected, no traffic, the idle wait disabled: the model alone.

Goal: ≥ 1 M simulated cycles per second for the ULX3S core with the driver attached (cocotb +
Verilator is ≈ 7–9 k cycles/s). The machine's load matters (the reference machine has 2 cores);
the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from link import RawLink, _frames  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "simboard.md"


def _rate(a: dict, b: dict) -> dict:
    cycles = b["cycles"] - a["cycles"]
    wall = b["wall_s"] - a["wall_s"]
    blocked = b["blocked_s"] - a["blocked_s"]
    return {"cycles": cycles, "wall_s": round(wall, 3), "blocked_s": round(blocked, 3),
            "cycles_per_s": cycles / (wall - blocked) if wall > blocked else 0.0}


def link_traffic(board, cfg, seconds) -> dict:
    from mixpe.sim.simboard import SimBoard
    from mixpe.sw import protocol as P
    from mixpe.sw.isa import Mem

    with SimBoard.start(board) as sb:
        link = RawLink(sb.connect())
        info = P.unpack_identify(link.transact(P.Opcode.IDENTIFY).payload)
        frames = _frames(cfg, info.max_payload, 1 << 30, np.random.default_rng(2))
        a, t0, n = sb.stats(), time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            addr, rows, words = frames[n % len(frames)]
            link.transact(P.Opcode.WRITE_MEM, P.write_mem_payload(Mem.ASP, addr, rows, words))
            n += 1
        r = _rate(a, sb.stats())
    r["frames"] = n
    return r


def gemm_driver(board, cfg, seconds) -> dict | None:
    try:
        from mixpe.sw import driver
    except ImportError:
        return None
    import torch
    from mixpe.sim.simboard import SimBoard
    from mixpe.sw.compiler import compile_gemm
    from mixpe.sw.core_ref import run_program

    g = torch.Generator().manual_seed(3)
    r, c = cfg.array.rows, cfg.array.cols
    progs = [compile_gemm(torch.randint(-128, 128, (4 * r, 4 * r), generator=g) & 0xFF,
                          torch.randint(-128, 128, (4 * r, 2 * c), generator=g) & 0xFF, cfg)
             for _ in range(2)]
    refs = [run_program(p)[0] for p in progs]
    with SimBoard.start(board) as sb:
        acc = driver.connect(sb.url(), config=cfg)
        try:
            s0, t0, n = sb.stats(), time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds:
                words, _ = acc.run_program(progs[n % 2])
                if words != refs[n % 2]:
                    raise RuntimeError("the board's GEMM output differs from core_ref")
                n += 1
            s1 = sb.stats()
        finally:
            acc.close()
    res = _rate(s0, s1)
    res["gemms"] = n
    res["shape"] = f"M=K={4 * r}, N={2 * c}"
    return res


def free_running(board, seconds) -> dict:
    from mixpe.sim.simboard import SimBoard

    with SimBoard.start(board, idle_cycles=1 << 62) as sb:
        sb.connect()
        a = sb.stats()
        time.sleep(seconds)
        return _rate(a, sb.stats())


def measure(board="ulx3s", seconds=5.0, log=print) -> dict:
    from mixpe.boards import sim_board_config
    from mixpe.sim.simboard import build_simboard

    cfg, _ = sim_board_config(board)
    build = build_simboard(board, log=log)
    res = {"board": board, "config": f"{cfg.array.rows}x{cfg.array.cols}",
           "clocks_per_bit": build.manifest["simboard"]["clocks_per_bit"],
           "load_avg_1min": os.getloadavg()[0], "cpus": os.cpu_count(), "workloads": {}}
    for name, fn in (("link traffic", lambda: link_traffic(board, cfg, seconds)),
                     ("gemm (driver)", lambda: gemm_driver(board, cfg, seconds)),
                     ("free-running", lambda: free_running(board, seconds))):
        r = fn()
        if r is None:
            log(f"{name}: skipped (mixpe.sw.driver not available)")
            continue
        res["workloads"][name] = r
        log(f"{name}: {r['cycles_per_s'] / 1e6:.3f} M cycles/s")
    res["load_avg_1min_after"] = os.getloadavg()[0]
    return res


def render(res: dict) -> str:
    lines = ["# Simulated board speed", "",
             f"Written by `bench/simboard.py` (see its docstring). Board `{res['board']}` "
             f"({res['config']} core, whole SoC, UART at {res['clocks_per_bit']} clocks per "
             f"bit). Machine: {res['cpus']} CPUs, load average {res['load_avg_1min']:.1f} "
             f"before / {res['load_avg_1min_after']:.1f} after.", "",
             "| workload | simulated cycles | wall s | blocked s | M cycles/s | goal |",
             "|---|---|---|---|---|---|"]
    for name, r in res["workloads"].items():
        lines.append(f"| {name} | {r['cycles']} | {r['wall_s']} | {r['blocked_s']} | "
                     f"**{r['cycles_per_s'] / 1e6:.3f}** | ≥ 1 |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--board", default="ulx3s", choices=["ulx3s", "icebreaker", "tiny"])
    ap.add_argument("--seconds", type=float, default=5.0,
                    help="wall seconds per workload (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    if not 0.5 <= args.seconds <= 600:
        raise SystemExit("--seconds must be in [0.5, 600]")
    res = measure(args.board, args.seconds, log=lambda s: print(s, file=sys.stderr, flush=True))
    text = render(res)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(text + f"\n<!-- simboard.json\n{json.dumps(res)}\n-->\n")
    tmp.replace(RESULTS)
    print(json.dumps(res, indent=1) if args.json else text)
    attached = [r["cycles_per_s"] for n, r in res["workloads"].items() if n != "free-running"]
    return 0 if attached and min(attached) >= 1e6 else 1


if __name__ == "__main__":
    sys.exit(main())
