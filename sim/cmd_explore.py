"""``mixpe explore`` and ``mixpe report``: design-space exploration and its report.

``mixpe explore --model digits-cnn --board ulx3s-85f --budget-acc 1.0 --out DIR`` measures the
energy-proxy table (``sim/energy.py``, Verilator; cached under ``build/energy``), runs the seed
methods and NSGA-II (:mod:`mixpe.sw.explore`), caches every result under ``DIR/cache`` (rerun
the same command to resume) and writes ``DIR/explore.json`` plus the chosen quant TOML files
under ``DIR/configs/``. ``--scheduler tcp://HOST:PORT`` runs the evaluations on a Dask cluster.

``mixpe report DIR`` writes ``DIR/report.md`` (Markdown with PNG plots) or ``report.html``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["register"]


def _strategies(text: str):
    from mixpe.sw.explore.strategies import STRATEGIES

    names = [s.strip() for s in text.split(",") if s.strip()]
    for n in names:
        if n not in STRATEGIES:
            raise ValueError(f"--strategies: {n!r} is not one of {', '.join(STRATEGIES)}")
    return names


def synth_variant(variant: str, target: str) -> dict:
    """Synthesis task: Yosys resources (no DSP inference) of one decoded array variant
    ``'<mult> a=<format> b=<format>'`` (weight decoder + the multiplier on the mantissas)."""
    from mixpe.hw.synth import synth
    from mixpe.sw.pe import PEConfig

    mult, a, b = variant.split()
    m = PEConfig(mult=mult, a_format=a[2:], b_format=b[2:]).multiplier
    r = synth(m, target=target, fmax=False)
    return {"variant": variant, "target": target, "resources": r["resources"]}


def decoded_variants(space_formats=None, mults=None) -> list:
    """Every decoded variant of the default space (non-int weight formats × multipliers)."""
    from mixpe.sw.explore.space import DEFAULT_MULTS, DEFAULT_W_FORMATS, variant_of

    out = []
    for f in (space_formats or DEFAULT_W_FORMATS.values()):
        for m in (mults or DEFAULT_MULTS):
            v = variant_of(m, f)
            if " " in v and v not in out:
                out.append(v)
    return out


def ensure_variants(variants, target: str, path, runner, log=print) -> Path:
    """Write ``path`` = the shipped variant table plus synthesis tasks for missing entries."""
    from mixpe.sw.explore.costs import parse_variants, repo_root
    from mixpe.sw.explore.explore import write_json

    shipped = repo_root() / "bench" / "results" / "explore_variants.json"
    table = parse_variants(shipped) if shipped.is_file() else {}
    missing = [v for v in variants if target not in table.get(v, {})]
    if missing:
        log(f"synthesis: {len(missing)} decoded variants on {target} (Yosys tasks)")
        for r in runner.map(synth_variant, [(v, target) for v in missing], "synthesis"):
            table.setdefault(r["variant"], {})[target] = r["resources"]
    return write_json(path, {"unit": "Yosys resources of each decoded variant (weight decoder "
                             "+ multiplier on the mantissas), no DSP inference",
                             "variants": table})


def cmd_explore(args) -> int:
    from mixpe.sw.explore.costs import BOARDS
    from mixpe.sw.explore.explore import explore, write_json
    from mixpe.sw.explore.problem import ProblemSpec, get_problem

    if args.board not in BOARDS:
        raise ValueError(f"--board must be one of {', '.join(BOARDS)}, not {args.board!r}")
    if args.budget_acc < 0:
        raise ValueError(f"--budget-acc must be >= 0 points, not {args.budget_acc}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k)) if args.json else print
    from mixpe.sw.explore.runner import Runner

    # tasks before the sweep (same backend): synthesis of missing decoded variants, then the
    # Verilator toggle models of the energy proxy
    with Runner(ProblemSpec(), out / "cache", workers=args.workers, scheduler=args.scheduler,
                progress=not args.no_progress) as tasks:
        vpath = ensure_variants(decoded_variants(), BOARDS[args.board][0],
                                out / "variants.json", tasks, log=log)
        spec = ProblemSpec(model=args.model, board=args.board, n_eval=args.n_eval,
                           epochs=args.epochs, variants=str(vpath.resolve()))
        if not args.no_energy:
            from mixpe.sim.energy import energy_table

            problem = get_problem(spec)  # trains the model once (cached) before the workers
            log("energy proxy: Verilator toggle counts per (layer, weight format, multiplier)")
            table = energy_table(problem, log=log, progress=not args.no_progress,
                                 runner=tasks)
            epath = write_json(out / "energy.json", table)
            spec = ProblemSpec(model=args.model, board=args.board, n_eval=args.n_eval,
                               epochs=args.epochs, energy=str(epath.resolve()),
                               variants=str(vpath.resolve()))
    summary = explore(spec, out, budget=args.budget_acc,
                      strategies=_strategies(args.strategies) if args.strategies else None,
                      workers=args.workers, scheduler=args.scheduler,
                      progress=not args.no_progress, pop=args.pop, gens=args.gens,
                      seed=args.seed, verify=0 if args.no_verify else 6, log=log)
    g = summary["goal"]
    res = {r["hash"]: r for r in summary["results"]}
    if args.json:
        print(json.dumps({k: summary[k] for k in ("pareto", "configs", "goal", "evaluations",
                                                  "int8_accuracy", "wall_seconds")}, indent=1))
        return 0
    print(f"\n{len(summary['results'])} configs evaluated ({summary['evaluations']['new']} new, "
          f"{summary['evaluations']['per_second']} eval/s); {len(summary['pareto'])} "
          f"Pareto-optimal within {args.budget_acc} point(s) of int8 "
          f"({summary['int8_accuracy']:.2f} %):")
    keys = summary["objectives"]
    print("  " + "  ".join(f"{k:>10}" for k in ["accuracy"] + keys[1:]) + "  config")
    for h in summary["pareto"]:
        r = res[h]
        vals = [f"{r['accuracy']:10.2f}"] + [f"{r[k]:10.0f}" for k in keys[1:]]
        print("  " + "  ".join(vals) + f"  {summary['configs'].get(h, h[:12])}")
    print(f"goal (each seed method's best config dominated on {', '.join(g['keys'])} by a "
          f"config found within the budget): {'met' if g['met'] else 'NOT met'}")
    for m, v in g["methods"].items():
        if not v["best"]:
            print(f"  {m:7s} no feasible config")
            continue
        b = res[v["best"]]
        line = f"  {m:7s} best " + ", ".join(f"{k} {b[k]:.6g}" for k in g["keys"])
        if v["beaten"]:
            w = res[v["beater"]]
            line += (" -> beaten by " + ", ".join(f"{k} {w[k]:.6g}" for k in g["keys"]) +
                     f" ({', '.join(v['beater_methods'])}; "
                     f"{summary['configs'].get(v['beater'], v['beater'][:12])})")
        else:
            line += " -> not beaten"
        print(line)
    print(f"wrote {out / 'explore.json'} and {out / 'configs'}/ in {summary['wall_seconds']} s; "
          f"`mixpe report {out}` draws the plots")
    return 0


def cmd_report(args) -> int:
    from mixpe.sw.explore.report import write_report

    path = write_report(args.dir, fmt=args.format, out=args.out)
    if args.json:
        summary = json.loads((Path(args.dir) / "explore.json").read_text())
        print(json.dumps({"report": str(path), "goal": summary["goal"],
                          "pareto": summary["pareto"]}, indent=1))
    else:
        print(f"wrote {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("explore", help="design-space exploration (Pareto configs)",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--model", default="digits-cnn")
    p.add_argument("--board", default="ulx3s-85f")
    p.add_argument("--budget-acc", type=float, default=1.0,
                   help="max top-1 loss in points vs int8 (default 1.0)")
    p.add_argument("--out", default="build/explore", help="output directory (resumable)")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: CPUs)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler tcp://HOST:PORT")
    p.add_argument("--strategies", default=None,
                   help="comma list of axbxp,maxdnn,ant,fpl22,nsga2 (default: all)")
    p.add_argument("--pop", type=int, default=48, help="NSGA-II population")
    p.add_argument("--gens", type=int, default=20, help="NSGA-II generations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-eval", type=int, default=0, help="test images (0 = all 360)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: model's)")
    p.add_argument("--no-energy", action="store_true", help="skip the Verilator energy proxy")
    p.add_argument("--no-verify", action="store_true",
                   help="skip re-evaluating the chosen configs with the model flow's reference")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_explore)
    r = sub.add_parser("report", help="HTML/Markdown report of an explore directory")
    r.add_argument("dir")
    r.add_argument("--format", choices=("md", "html"), default="md")
    r.add_argument("--out", default=None,
                   help="Markdown path elsewhere (PNGs copied beside it), e.g. for bench/results")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_report)
