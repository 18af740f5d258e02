"""Throughput of the bit-exact layer emulator against exact integer GEMMs and LUT gather.

Prints, for one ``size³`` matmul, side by side:

* (i) exact GEMM on int8 operand values: torch int64 matmul, float32/float64 BLAS (exact here
  because ``K·128² < 2**24``), ``torch._int_mm`` (int8 → int32); the fastest is the baseline;
* (ii) :func:`mixpe.sw.emulate.matmul` for one representative approximate configuration per
  multiplier family (the full call: range checks, operand transforms, GEMMs, int64 result);
* (iii) the LUT-gather method of AdaPT/TFApprox (``Σ_k T[a_code, b_code]`` chunked over K) on
  the same multiplier's table;

with each family's ratio to the exact baseline and to LUT gather (1 MAC = 2 OP). Every
emulated result is checked bit-exact against the gather result.

    python bench/emulation.py                 # 384³ on the CPU, one thread
    python bench/emulation.py --quick         # smoke run
    python bench/emulation.py --write         # also bench/results/emulation_cpu.md
    python bench/emulation.py --device cuda   # where a GPU is available
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch
from mixpe.sw import emulate
from mixpe.sw.emulate import gather_matmul
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.decoded import decoded

#: One representative approximate configuration per family (spec, or a builder).
FAMILIES = [
    ("exact", "exact"),
    ("axbxp", "axbxp:l=2"),
    ("roup (R-A)", "roup:p=1,r=4"),
    ("roup pp_row", "roup:p=1,r=4,round=pp_row"),
    ("lutna drop", "lutna:drop=0.0"),
    ("flint×int", "exact:n=4,nb=8,sa=0 a=flint b=int:bits=8,signed=1"),
    ("table", "table:path=mul8u_trunc7.npy"),
]

GOAL_EXACT = {"cpu": 0.20, "cuda": 0.25}
GOAL_GATHER = 100.0


def build(spec: str):
    return decoded(spec) if " a=" in spec else multiplier(spec)


def timeit(fn, reps: int, device) -> float:
    """Best wall time of ``reps`` calls (after one warm-up call), in seconds."""
    return timeit_pair(fn, None, reps, device)[0]


def timeit_pair(fn, ref, reps: int, device) -> tuple[float, float]:
    """Best wall times of ``fn`` and ``ref``, measured alternately so that both see the same
    machine load (the CPU is shared)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = [float("inf"), float("inf")]
    for f in (fn, ref):
        if f is not None:
            f()
    sync()
    for _ in range(reps):
        for i, f in enumerate((fn, ref)):
            if f is None:
                continue
            t0 = time.perf_counter()
            f()
            sync()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best[0], best[1]


def operands(mult, m, k, n, device, gen):
    p = emulate.plan(mult, device)

    def draw(space, shape):
        v = space.valid_values()
        return v[torch.randint(0, v.numel(), shape, generator=gen)].to(device)

    return draw(p.a_space, (m, k)), draw(p.b_space, (k, n))


def exact_baselines(m, k, n, device, reps, gen) -> tuple[list, dict]:
    a = torch.randint(-128, 128, (m, k), generator=gen).to(device)
    b = torch.randint(-128, 128, (k, n), generator=gen).to(device)
    ref = (a.cpu() @ b.cpu())
    rows = []
    a8, b8 = a.to(torch.int8), b.to(torch.int8)
    cands = {
        "int64 matmul": lambda: a @ b if device.type == "cpu" else None,
        "float32 BLAS": lambda: a32 @ b32,
        "float64 BLAS": lambda: a64 @ b64,
        "torch._int_mm": lambda: torch._int_mm(a8, b8),
    }
    a32, b32 = a.to(torch.float32), b.to(torch.float32)
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    with emulate._gemm.exact_float_matmul():
        for name, fn in cands.items():
            if name == "int64 matmul" and device.type != "cpu":
                continue
            try:
                r = fn()
            except Exception as e:  # noqa: BLE001 - report and go on
                rows.append((name, None, f"unavailable: {type(e).__name__}"))
                continue
            exact = bool((r.to(torch.int64).cpu() == ref).all())
            t = timeit(fn, reps, device)
            rows.append((name, t, "exact" if exact else "NOT exact"))
    return rows, {name: fn for name, fn in cands.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=384, metavar="N",
                    help="M = K = N of the matmul (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=1, metavar="T",
                    help="CPU threads (default: %(default)s; the shared 2-core box is noisy "
                         "with more)")
    ap.add_argument("--reps", type=int, default=15,
                    help="timed repetitions (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="smoke run: size 96, 2 repetitions")
    ap.add_argument("--write", action="store_true",
                    help="also write bench/results/emulation_<device>.md")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.reps = 96, 2
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch build sees no CUDA device")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    n = args.size
    m = k = n
    ops = 2 * m * k * n
    gen = torch.Generator().manual_seed(0)

    lines = []

    def out(s=""):
        print(s)
        lines.append(s)

    threads = torch.get_num_threads()
    dev_name = (torch.cuda.get_device_name(device) if device.type == "cuda" else
                f"{platform.processor() or platform.machine()}, {threads} thread(s)")
    out(f"# Emulation throughput, {m}x{k}x{n} matmul on {device.type} ({dev_name}), "
        f"torch {torch.__version__}")
    out()
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        out(f"Load average at start: {load} ({os.cpu_count()} CPUs). Times are the best of "
            f"{args.reps} runs.")
        out()
    except OSError:
        pass
    out("## (i) exact GEMM on int8 operand values")
    out()
    out("| method | time (ms) | GOP/s | exact? |")
    out("|---|---:|---:|---|")
    base, base_fns = exact_baselines(m, k, n, device, args.reps, gen)
    best = None
    for name, t, note in base:
        if t is None:
            out(f"| {name} | – | – | {note} |")
            continue
        out(f"| {name} | {t * 1e3:.3f} | {ops / t / 1e9:.1f} | {note} |")
        if note == "exact" and (best is None or t < best[1]):
            best = (name, t)
    out()
    out(f"Baseline: **{best[0]}**, {ops / best[1] / 1e9:.1f} GOP/s. Below, each family's "
        f"ratio uses the baseline re-timed alternately with it (the CPU is shared).")
    out()
    base_fn = base_fns[best[0]]
    out("## (ii) emulated matmul per family vs (iii) LUT gather")
    out()
    out("| family | config | plan | emulate (ms) | GOP/s | vs exact | LUT gather (ms) | "
        "GOP/s | emulate / gather | goals |")
    out("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    goal_exact = GOAL_EXACT.get(device.type, 0.2)
    misses = []
    for fam, spec in FAMILIES:
        mult = build(spec)
        p = emulate.plan(mult, device)
        a, b = operands(mult, m, k, n, device, gen)
        got = emulate.matmul(a, b, mult)  # also builds and caches the plan
        table = p.table_on(device)
        ia, ib = p.a_space.index(a), p.b_space.index(b)
        want = gather_matmul(table, ia, ib)
        if not torch.equal(got, want):
            raise SystemExit(f"{fam}: emulation differs from LUT gather")
        with emulate._gemm.exact_float_matmul():
            t_emu, t_base = timeit_pair(lambda: emulate.matmul(a, b, mult), base_fn,
                                        args.reps, device)
        t_gat = timeit(lambda: gather_matmul(table, ia, ib), max(1, min(2, args.reps)), device)
        r_exact = t_base / t_emu
        r_gather = t_gat / t_emu
        ok1, ok2 = r_exact >= goal_exact, r_gather >= GOAL_GATHER
        goals = ("met" if ok1 and ok2 else
                 "missed: " + ", ".join(x for x, ok in ((f"<{goal_exact:.0%} of exact", ok1),
                                                        (f"<{GOAL_GATHER:.0f}x gather", ok2))
                                         if not ok))
        if not (ok1 and ok2):
            misses.append(fam)
        out(f"| {fam} | `{mult.spec}` | {p.description} | {t_emu * 1e3:.3f} | "
            f"{ops / t_emu / 1e9:.1f} | {r_exact:.0%} | {t_gat * 1e3:.1f} | "
            f"{ops / t_gat / 1e9:.2f} | {r_gather:.0f}x | {goals} |")
    out()
    out(f"Goals: ≥ {goal_exact:.0%} of the exact baseline and ≥ {GOAL_GATHER:.0f}× LUT gather "
        f"per family. " + (f"Missed by: {', '.join(misses)}." if misses else "All met."))
    if args.write:
        path = Path(__file__).resolve().parent / "results" / f"emulation_{device.type}.md"
        path.write_text("\n".join(lines) + "\n")
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
