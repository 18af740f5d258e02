"""Search strategies: the four seed methods and NSGA-II, on one shared evaluator.

Every strategy gets a :class:`Search` (evaluator + space + accuracy budget) and returns the
results it produced; ``Search.evaluate`` tags each result with the methods that evaluated it.
A config is *feasible* when its accuracy loss vs the int8 baseline is at most the budget and
it fits the board. The scalar cost the greedy methods minimize is :meth:`Search.cost`:
``(energy proxy, LUT4, cycles)`` in that order of priority (energy left out without a table).

* ``axbxp`` — Ax-BxP (network level, then layer level, greedy): evaluate every Ax-BxP
  multiplier on the whole network; keep the cheapest feasible one; then for each layer in turn,
  try every Ax-BxP multiplier (and exact) on that layer alone and keep the cheapest feasible.
  Weights stay int8.
* ``maxdnn`` — MAx-DNN (sensitivity-ordered layer, filter and kernel assignment with ROUP
  multipliers): layers ordered by the loss each suffers alone under the most aggressive ROUP
  multiplier, least sensitive first; in that order, the least sensitive 25/50/75/100 % of a
  layer's filters (:meth:`Problem.sensitivity_order`) or 25/50/75 % of its kernels
  (:meth:`Problem.kernel_order`, conv layers with several input channels) take each ROUP
  multiplier; the cheapest feasible assignment is kept before moving to the next layer.
  Weights int8.
* ``ant`` — ANT (MSE type selection): every layer's weights get the 4-bit type of
  :func:`mixpe.sw.ant.select_type` (int / flint / PoT / float, mode ``ant-int-pot-float-flint``);
  candidates all-layers and first/last-int8 (ANT's rule); if neither is feasible, layers go back
  to int8 from the most sensitive (by their ANT-alone loss) until feasible. Exact multipliers.
* ``fpl22`` — resource-constrained precision allocation: all layers start at int4; each step
  raises one layer one precision step (int4 → int6 → int8) — the step with the largest
  accuracy gain per unit of cost increase — until the loss is within budget. Exact multipliers.
* ``nsga2`` — pymoo's NSGA-II over the integer genome of :class:`~mixpe.sw.explore.space.Space`
  (6 genes per layer: high/low weight format and low fraction, base/approximate multiplier and
  approximate fraction), objectives ``(loss, lut4, cycles[, energy])``, constraints
  ``loss ≤ budget`` and fit; the initial population is the int8 baseline, the feasible Pareto
  points of the strategies that ran before it that the genome can express (warm start, up to
  half the population; ``warm_start=False`` turns it off) and random genomes.
"""

from __future__ import annotations

import numpy as np

from .pareto import feasible
from .space import INT8, Config, LayerQuant, expand

__all__ = ["Search", "STRATEGIES", "SEED_METHODS", "run_strategy"]


class Search:
    """Shared state of the strategies: runner, space, budget and the method tags."""

    def __init__(self, runner, space, budget: float, *, seed: int = 0):
        if not isinstance(budget, (int, float)) or budget < 0:
            raise ValueError(f"budget_acc must be a non-negative number of points, not {budget!r}")
        self.runner = runner
        self.space = space
        self.budget = float(budget)
        self.seed = seed
        self.tags: dict = {}  # hash -> set of methods
        self.results: dict = {}  # hash -> result

    def evaluate(self, configs, method: str, label: str | None = None) -> list[dict]:
        res = self.runner.evaluate(configs, label=label or method)
        for r in res:
            self.tags.setdefault(r["hash"], set()).add(method)
            self.results[r["hash"]] = r
        return res

    def of(self, method: str) -> list[dict]:
        """Results that ``method`` evaluated."""
        return [self.results[h] for h, t in self.tags.items() if method in t]

    def ok(self, r) -> bool:
        return bool(feasible([r], self.budget))

    def cost(self, r) -> tuple:
        e = r.get("energy")
        return ((e if e is not None else 0.0), r["lut4"], r["cycles"], r["loss"])

    def cheapest(self, results):
        ok = [r for r in results if self.ok(r)]
        return min(ok, key=self.cost) if ok else None

    @property
    def problem(self):
        return self.runner.problem()


def _replace_layer(cfg: Config, i: int, lq: LayerQuant) -> Config:
    layers = list(cfg.layers)
    layers[i] = lq
    return Config(cfg.model, tuple(layers))


def _uniform_layer(cfg: Config, i: int, w=None, mult=None) -> Config:
    lq = cfg.layers[i]
    c = len(lq.mults)
    return _replace_layer(cfg, i, LayerQuant(lq.name, (w,) * c if w else lq.w_formats,
                                             (mult,) * c if mult else lq.mults))


def _family(space, fam):
    return [m for m in space.mults if m.split(":")[0] == fam]


def axbxp(s: Search) -> list[dict]:
    sp = s.space
    lib = _family(sp, "axbxp")
    if not lib:
        raise ValueError("axbxp: the space has no axbxp multiplier")
    base = sp.baseline()
    net = s.evaluate([base] + [sp.uniform("int8", m) for m in lib], "axbxp")
    cur_r = s.cheapest(net) or net[0]
    cur = Config.from_dict(cur_r["config"])
    for i in range(sp.n_layers):
        cands = [_uniform_layer(cur, i, mult=m) for m in ["exact"] + lib]
        best = s.cheapest(s.evaluate(cands, "axbxp") + [cur_r])
        if best is not None:
            cur_r, cur = best, Config.from_dict(best["config"])
    return s.of("axbxp")


def maxdnn(s: Search, *, kernels: bool = True) -> list[dict]:
    sp = s.space
    lib = _family(sp, "roup")
    if not lib:
        raise ValueError("maxdnn: the space has no roup multiplier")
    base = sp.baseline()
    base_r = s.evaluate([base], "maxdnn")[0]
    # most aggressive ROUP: the cheapest whole-network one
    net = s.evaluate([sp.uniform("int8", m) for m in lib], "maxdnn")
    aggressive = Config.from_dict(min(net, key=s.cost)["config"]).layers[0].mults[0]
    alone = s.evaluate([_uniform_layer(base, i, mult=aggressive) for i in range(sp.n_layers)],
                       "maxdnn")
    layer_order = sorted(range(sp.n_layers), key=lambda i: (alone[i]["loss"], i))
    cur_r, cur = base_r, base
    for i in layer_order:
        lq = cur.layers[i]
        c = len(lq.mults)
        cands = []
        for frac in (0.25, 0.5, 0.75, 1.0):
            n = int(round(frac * c))
            for m in lib:
                ms = list(lq.mults)
                for ch in sp.order[i][:n]:
                    ms[ch] = m
                cands.append(_replace_layer(cur, i, LayerQuant(lq.name, lq.w_formats, tuple(ms))))
        korder = s.problem.kernel_order(i) if kernels else []
        if korder:  # kernel level: the least sensitive kernels of the whole layer
            cg = int(s.problem.net.layers[i].weight.shape[1])
            for frac in (0.25, 0.5, 0.75):
                n = int(round(frac * len(korder)))
                for m in lib:
                    km = [list(r) for r in lq.kernel_mults(cg)]
                    for o, ic in korder[:n]:
                        km[o][ic] = m
                    cands.append(_replace_layer(cur, i, LayerQuant(
                        lq.name, lq.w_formats, tuple(tuple(r) for r in km))))
        best = s.cheapest(s.evaluate(cands, "maxdnn") + [cur_r])
        if best is not None:
            cur_r, cur = best, Config.from_dict(best["config"])
    return s.of("maxdnn")


def ant(s: Search) -> list[dict]:
    from ..ant import select_type
    from ..formats import number_format

    sp = s.space
    net = s.problem.net
    types = []
    for L in net.layers:
        t = select_type(L.weight.reshape(L.weight.shape[0], -1), 4, "ant-int-pot-float-flint",
                        is_weight=True)
        f = t.format
        spec = number_format(f"{f.spec.split(':')[0]}:bits=4,signed=1").spec
        types.append(spec)
    base = sp.baseline()
    all4 = base
    for i, spec in enumerate(types):
        all4 = _uniform_layer(all4, i, w=spec)
    cands = [all4]
    if sp.n_layers > 2:
        fl = _uniform_layer(_uniform_layer(all4, 0, w=INT8), sp.n_layers - 1, w=INT8)
        cands.append(fl)
    res = s.evaluate([base] + cands, "ant")
    if s.cheapest(res[1:]) is None:
        alone = s.evaluate([_uniform_layer(base, i, w=types[i]) for i in range(sp.n_layers)],
                           "ant")
        cur = all4
        for i in sorted(range(sp.n_layers), key=lambda i: (-alone[i]["loss"], i)):
            cur = _uniform_layer(cur, i, w=INT8)
            if s.ok(s.evaluate([cur], "ant")[0]):
                break
    return s.of("ant")


_FPL_STEPS = ("int:bits=4,signed=1", "int:bits=6,signed=1", INT8)


def fpl22(s: Search) -> list[dict]:
    sp = s.space
    level = [0] * sp.n_layers

    def cfg_of(lv):
        c = sp.baseline()
        for i, k in enumerate(lv):
            c = _uniform_layer(c, i, w=_FPL_STEPS[k])
        return c

    cur_r = s.evaluate([cfg_of(level)], "fpl22")[0]
    while not s.ok(cur_r) and any(k < len(_FPL_STEPS) - 1 for k in level):
        steps = [i for i in range(sp.n_layers) if level[i] < len(_FPL_STEPS) - 1]
        cands = []
        for i in steps:
            lv = list(level)
            lv[i] += 1
            cands.append(cfg_of(lv))
        res = s.evaluate(cands, "fpl22")

        def gain(r):
            dacc = cur_r["loss"] - r["loss"]
            dcost = max((r["energy"] or 0) - (cur_r["energy"] or 0), 0) if \
                r.get("energy") is not None else 0.0
            return (dacc / (dcost + 1e-9) if dcost > 0 else dacc * 1e12, -r["loss"])

        k = max(range(len(res)), key=lambda j: gain(res[j]))
        level[steps[k]] += 1
        cur_r = res[k]
    return s.of("fpl22")


def nsga2(s: Search, *, pop: int = 24, gens: int = 8, warm_start: bool = True) -> list[dict]:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    sp = s.space
    xl, xu = sp.bounds()
    n_var = len(xl)
    with_energy = s.problem.energy is not None
    n_obj = 4 if with_energy else 3

    class _P(PymooProblem):
        def __init__(self):
            super().__init__(n_var=n_var, n_obj=n_obj, n_ieq_constr=2, xl=np.array(xl),
                             xu=np.array(xu), vtype=int)

    rng = np.random.default_rng(s.seed)
    x0 = rng.integers(np.array(xl), np.array(xu) + 1, size=(pop, n_var))
    seeds = [[0] * n_var]  # int8 weights, exact multipliers, fractions 0
    if warm_start:
        # warm start: the feasible Pareto points of the methods that ran before (best first)
        from .pareto import hw_keys, pareto_front
        prior = [r for r in s.results.values() if s.ok(r)]
        for r in sorted(pareto_front(prior, ("loss",) + hw_keys(prior)), key=s.cost):
            v = sp.encode(Config.from_dict(r["config"]))
            if v is not None and v not in seeds:
                seeds.append(v)
    seeds = seeds[: max(1, pop // 2)]
    x0[: len(seeds)] = np.array(seeds)
    algo = NSGA2(pop_size=pop, sampling=x0,
                 crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                 mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
                 eliminate_duplicates=True)
    algo.setup(_P(), termination=("n_gen", gens), seed=s.seed, verbose=False)
    del IntegerRandomSampling, Evaluator
    while algo.has_next():
        popn = algo.ask()
        X = popn.get("X")
        cfgs = [expand(sp, sp.decode(x)) for x in X]
        res = s.evaluate(cfgs, "nsga2", f"nsga2 gen {algo.n_gen}/{gens}")
        F = np.array([[r["loss"], r["lut4"], r["cycles"]] + ([r["energy"]] if with_energy else [])
                      for r in res], dtype=float)
        G = np.array([[r["loss"] - s.budget, 0.0 if r["fits"] else 1.0] for r in res])
        popn.set("F", F)
        popn.set("G", G)
        algo.tell(infills=popn)
    return s.of("nsga2")


#: Strategy name → function(Search) -> results.
STRATEGIES = {"axbxp": axbxp, "maxdnn": maxdnn, "ant": ant, "fpl22": fpl22, "nsga2": nsga2}
#: The single seed methods (compared against the general search).
SEED_METHODS = ("axbxp", "maxdnn", "ant", "fpl22")


def run_strategy(s: Search, name: str, **kw) -> list[dict]:
    if name not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {name!r}")
    return STRATEGIES[name](s, **kw)
