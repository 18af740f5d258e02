"""Evaluations per second of the explorer on 1 vs 2 Dask workers (local cluster).

    python bench/explore.py [--configs 32] [--n-eval 0] [--out bench/results/explore_scaling.md]
    python bench/explore.py --variants     # synthesize the decoded-variant cost table

``--variants`` runs the synthesis tasks of ``sim/cmd_explore.py:synth_variant`` (Yosys, one
task per decoded variant — PoT / flint / float weights × multiplier — on the ECP5, on a local
process pool) and writes ``bench/results/explore_variants.json``, the table ``mixpe explore``
reads (it synthesizes only the entries missing from it, as tasks).

For each worker count a fresh ``dask.distributed.LocalCluster(n_workers=N, processes=True,
threads_per_worker=1)`` is started; every worker first builds the problem (trained digits-cnn
from the model cache, calibration) with one warm-up evaluation that is not timed; then the same
``--configs`` random configs of the NSGA-II genome (seeded) are evaluated through
:class:`mixpe.sw.explore.runner.Runner` with an empty result cache and the wall time is taken.
Prints evaluations/s for each and the ratio, and writes a Markdown table with an embedded JSON
block. The ratio is bounded by the free CPU cores of the machine (``os.cpu_count()`` and the
load average are printed with it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def measure(spec, cfgs, workers: int) -> dict:
    from dask.distributed import Client, LocalCluster
    from mixpe.sw.explore.problem import evaluate_task
    from mixpe.sw.explore.runner import Runner

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        # warm-up: build the problem on every worker (not timed)
        addrs = list(client.scheduler_info()["workers"])
        warm = [client.submit(evaluate_task, spec, cfgs[0].to_dict(), pure=False, workers=[a])
                for a in addrs]
        client.gather(warm)
        with tempfile.TemporaryDirectory() as d:
            r = Runner(spec, Path(d) / "cache", scheduler=cluster.scheduler_address,
                       progress=False)
            t0 = time.perf_counter()
            res = r.evaluate(cfgs)
            dt = time.perf_counter() - t0
            r.close()
    pids = {x["pid"] for x in res}
    return {"workers": workers, "configs": len(cfgs), "seconds": round(dt, 3),
            "per_second": round(len(cfgs) / dt, 3), "worker_pids_used": len(pids)}


def variants() -> int:
    from mixpe.sim.cmd_explore import decoded_variants, synth_variant
    from mixpe.sw.explore.explore import write_json
    from mixpe.sw.explore.problem import ProblemSpec
    from mixpe.sw.explore.runner import Runner

    jobs = [(v, "ecp5") for v in decoded_variants()]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d, Runner(ProblemSpec(), d, workers=2) as r:
        res = r.map(synth_variant, jobs, "synthesis")
    table: dict = {}
    for x in res:
        table.setdefault(x["variant"], {})[x["target"]] = x["resources"]
        print(f"{x['variant']:60s} {x['target']:6s} {x['resources']['lut4']:5d} LUT4")
    out = ROOT / "bench" / "results" / "explore_variants.json"
    write_json(out, {"unit": "Yosys resources of each decoded variant (weight decoder + "
                     "multiplier on the mantissas), no DSP inference",
                     "written_by": "python bench/explore.py --variants",
                     "seconds": round(time.perf_counter() - t0, 1), "variants": table})
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", type=int, default=32)
    ap.add_argument("--n-eval", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "explore_scaling.md"))
    ap.add_argument("--variants", action="store_true",
                    help="write bench/results/explore_variants.json instead")
    args = ap.parse_args(argv)
    if args.variants:
        return variants()
    if args.configs < 2:
        raise SystemExit("--configs must be >= 2")

    from mixpe.sw.explore.problem import ProblemSpec, get_problem
    from mixpe.sw.explore.space import expand

    spec = ProblemSpec(n_eval=args.n_eval)
    problem = get_problem(spec)  # trains + caches the model once
    sp = problem.space()
    lo, hi = sp.bounds()
    rng = np.random.default_rng(args.seed)
    cfgs, seen = [], set()
    while len(cfgs) < args.configs:
        c = expand(sp, sp.decode(rng.integers(np.array(lo), np.array(hi) + 1)))
        if c.hash not in seen:
            seen.add(c.hash)
            cfgs.append(c)
    rows = []
    for w in (1, 2):
        m = measure(spec, cfgs, w)
        rows.append(m)
        print(f"{w} worker(s): {m['configs']} evaluations in {m['seconds']} s = "
              f"{m['per_second']} eval/s (worker processes used: {m['worker_pids_used']})")
    ratio = rows[1]["per_second"] / rows[0]["per_second"]
    load = os.getloadavg()
    print(f"2 workers / 1 worker: {ratio:.2f}x  (cpu_count {os.cpu_count()}, load average "
          f"{load[0]:.1f})")
    data = {"rows": rows, "ratio": round(ratio, 3), "cpu_count": os.cpu_count(),
            "loadavg": [round(x, 2) for x in load], "model": spec.model,
            "n_eval": spec.n_eval or len(problem.y)}
    text = ["# Explorer scaling: evaluations per second, 1 vs 2 Dask workers", "",
            "Written by `python bench/explore.py` (do not edit). Each evaluation = bit-exact "
            f"accuracy of one config on {data['n_eval']} digits test images + resources + "
            "cycle model; local `dask.distributed.LocalCluster`, one thread per worker "
            "process, problem built on every worker before timing.", "",
            "| workers | configs | seconds | eval/s |", "|---|---|---|---|"]
    text += [f"| {r['workers']} | {r['configs']} | {r['seconds']} | {r['per_second']} |"
             for r in rows]
    text += ["", f"Ratio 2/1: **{ratio:.2f}×** on a machine with {os.cpu_count()} CPUs "
             f"(load average {load[0]:.1f} during the run; other jobs share the cores).", "",
             "<!-- explore_scaling.json", json.dumps(data), "-->", ""]
    out = Path(args.out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(text))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
