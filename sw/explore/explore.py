"""``explore()``: run the strategies, keep the Pareto-optimal feasible configs, write them out.

Output directory layout (everything written through temp files + rename)::

    DIR/cache/<hash>.json     one result per evaluated config (the resumable cache)
    DIR/explore.json          summary: problem, budget, int8 and float accuracy, every result
                              with the methods that produced it, the Pareto front, each
                              method's best config, the goal check, timings
    DIR/configs/*.toml        the Pareto-optimal configs and each method's best, as quant TOML
                              files of the model flow (``mixpe compare``)
    DIR/configs/*.core.json   beside each: the board's core config with that config's array
                              variants (``mixpe build --config``)

The Pareto front is taken over the feasible results (loss ≤ budget, fits the board) on the
objectives ``loss, lut4, cycles[, energy]``. The goal check (:func:`goal_check`) asks, for each
seed method, whether a feasible config of the exploration dominates the method's best config
on the hardware objectives (no worse on every one of LUT4, cycles, energy, better on one).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from .costs import core_config_for
from .pareto import best, dominates, feasible, hw_keys, pareto_front
from .problem import ProblemSpec
from .quanttoml import expressible, save_quant_toml
from .runner import Runner
from .space import Config, save_config
from .strategies import SEED_METHODS, STRATEGIES, Search, run_strategy

__all__ = ["explore", "write_json", "goal_check"]


def write_json(path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def write_text(path, text: str) -> Path:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def goal_check(results: list[dict], budget: float, methods=SEED_METHODS) -> dict:
    """For each seed method: is its best feasible config beaten by a config of the exploration?

    ``best`` is :func:`~mixpe.sw.explore.pareto.best` (least energy proxy, then LUT4, cycles)
    among the method's feasible results; it is *beaten* when some feasible result dominates
    it on the hardware objectives (no worse on every one of LUT4, cycles, energy, better on
    one). The *beater* is the best of those dominating results; ``beaten_by_nsga2`` tells
    whether the general search found one. ``met``: every method's best is beaten.
    """
    feas = feasible(results, budget)
    keys = hw_keys(feas)
    overall = best(feas, keys)
    out = {"keys": list(keys), "overall": overall["hash"] if overall else None,
           "overall_methods": overall.get("methods", []) if overall else [], "methods": {}}
    for m in methods:
        mine = [r for r in feas if m in r.get("methods", [])]
        b = best(mine, keys)
        if b is None:
            out["methods"][m] = {"best": None, "beaten": None}
            continue
        dom = [r for r in feas if dominates(r, b, keys)]
        beater = best(dom, keys)
        out["methods"][m] = {
            "best": b["hash"], "beaten": bool(dom),
            "beaten_by_nsga2": any("nsga2" in r.get("methods", []) for r in dom),
            "beater": beater["hash"] if beater else None,
            "beater_methods": beater.get("methods", []) if beater else [],
            **{k: b[k] for k in keys}, "loss": b["loss"]}
    rel = [v["beaten"] for v in out["methods"].values() if v["beaten"] is not None]
    out["met"] = bool(rel) and all(rel)
    return out


def explore(spec: ProblemSpec, out_dir, *, budget: float = 1.0, strategies=None,
            workers: int | None = None, scheduler: str | None = None, progress: bool = True,
            pop: int = 24, gens: int = 8, seed: int = 0, verify: int = 0,
            log=print) -> dict:
    """Run ``strategies`` (default: all) on ``spec``; write and return the summary dict.

    ``verify``: re-evaluate up to that many chosen configs (the overall best, then each
    method's best) through the model flow's reference executor from their quant TOML.
    """
    if not isinstance(budget, (int, float)) or isinstance(budget, bool) or budget < 0:
        raise ValueError(f"budget_acc must be a non-negative number of points, not {budget!r}")
    strategies = list(strategies or STRATEGIES)
    for name in strategies:
        if name not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    timings: dict = {}
    with Runner(spec, out / "cache", workers=workers, scheduler=scheduler,
                progress=progress) as runner:
        problem = runner.problem()
        space = problem.space()
        search = Search(runner, space, budget, seed=seed)
        log(f"model {spec.model}: float {problem.net.float_accuracy(problem.x, problem.y):.2f} %,"
            f" int8 {problem.int8_accuracy:.2f} % on {len(problem.y)} test images; "
            f"board {spec.board}; budget {budget} points")
        for name in strategies:
            t1 = time.perf_counter()
            n0 = runner.evaluated
            kw = {"pop": pop, "gens": gens} if name == "nsga2" else {}
            run_strategy(search, name, **kw)
            timings[name] = {"seconds": round(time.perf_counter() - t1, 2),
                             "evaluated": runner.evaluated - n0,
                             "results": len(search.of(name))}
            log(f"{name}: {timings[name]['results']} configs "
                f"({timings[name]['evaluated']} new) in {timings[name]['seconds']} s")
        evaluated, eval_s = runner.evaluated, runner.eval_seconds
    results = []
    for h, r in search.results.items():
        r = dict(r)
        r["methods"] = sorted(search.tags[h])
        results.append(r)
    feas = feasible(results, budget)
    keys = ("loss",) + hw_keys(feas)
    front = pareto_front(sorted(feas, key=lambda r: r["hash"]), keys)
    goal = goal_check(results, budget)
    # configs
    cdir = out / "configs"
    cdir.mkdir(exist_ok=True)
    for old in [*cdir.glob("*.toml"), *cdir.glob("*.core.json")]:
        old.unlink()
    names: dict = {}
    for k, r in enumerate(sorted(front, key=lambda r: (r["loss"], r["lut4"]))):
        names.setdefault(r["hash"], f"pareto-{k:02d}")
    if goal["overall"]:
        names[goal["overall"]] = "best"
    for m, v in goal["methods"].items():
        if v.get("beater") and v["beater"] not in names:
            names[v["beater"]] = f"beats-{m}"
    for m, v in goal["methods"].items():
        if v["best"] and v["best"] not in names:
            names[v["best"]] = f"best-{m}"
    by_hash = {r["hash"]: r for r in results}
    files = {}
    for h, name in names.items():
        r = by_hash[h]
        cfg = Config.from_dict(r["config"])
        desc = (f"mixpe explore ({', '.join(r['methods'])}) for {spec.model} on {spec.board}: "
                f"accuracy {r['accuracy']:.2f} % (loss {r['loss']:.2f}), LUT4 {r['lut4']}, "
                f"cycles {r['cycles']}" + (f", energy proxy {r['energy']:.4g}"
                                           if r.get("energy") is not None else "") +
                f"; config hash {h[:16]}")
        if expressible(cfg):
            save_quant_toml(cfg, cdir / f"{name}.toml", name=name, description=desc)
            files[h] = f"configs/{name}.toml"
            if r.get("fits", True):  # the array with this config's variants, for mixpe build
                core = core_config_for(problem.costs.core_cfg, cfg.variant_set)
                write_text(cdir / f"{name}.core.json", core.to_json() + "\n")
        else:  # not writable as a quant TOML: the explorer's explicit form
            save_config(cfg, cdir / f"{name}.explicit.toml", meta={"description": desc})
            files[h] = f"configs/{name}.explicit.toml"
    checks = []
    chosen = [goal["overall"]] + [v.get("beater") for v in goal["methods"].values()] + \
        [v["best"] for v in goal["methods"].values()]
    for h in [h for h in dict.fromkeys(chosen) if h][:verify]:
        if not h or not files.get(h, "").endswith(".toml") or ".explicit." in files[h]:
            continue
        from .quanttoml import reference_accuracy
        try:
            ref = reference_accuracy(Config.from_dict(by_hash[h]["config"]), model=spec.model,
                                     dataset=spec.dataset, epochs=spec.epochs,
                                     n_eval=spec.n_eval)
        except ImportError as e:  # the model flow is not installed
            log(f"verify: skipped ({e})")
            break
        checks.append({"hash": h, "file": files[h], "explorer": by_hash[h]["accuracy"],
                       "reference": ref})
        log(f"verify {files[h]}: explorer {by_hash[h]['accuracy']:.2f} %, model-flow "
            f"reference {ref:.2f} %")
    summary = {
        "spec": asdict(spec), "budget": budget, "strategies": strategies,
        "int8_accuracy": problem.int8_accuracy,
        "float_accuracy": problem.net.float_accuracy(problem.x, problem.y),
        "layers": [{"name": L.name, "kind": L.kind, "channels": L.channels, "macs": L.macs}
                   for L in problem.net.layers],
        "objectives": list(keys), "results": results,
        "pareto": [r["hash"] for r in front], "configs": files, "goal": goal,
        "verify": checks,
        "timings": timings,
        "evaluations": {"total": len(results), "new": evaluated,
                        "seconds": round(eval_s, 2),
                        "per_second": round(evaluated / eval_s, 3) if eval_s > 0 else None},
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }
    write_json(out / "explore.json", summary)
    return summary
