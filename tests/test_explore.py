"""Design-space exploration: Pareto logic, configs, bit-exact QNet, cache resume, explore+report.

The Dask test is in ``test_explore_dask.py``, the Verilator energy proxy in
``test_explore_energy.py``. A 3-epoch digits-cnn keeps the problem fast (cached model).
"""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch
from mixpe.sw.explore.pareto import best, dominates, feasible, pareto_front
from mixpe.sw.explore.problem import ProblemSpec, get_problem
from mixpe.sw.explore.runner import Runner
from mixpe.sw.explore.space import Config, LayerQuant, expand, load_config, save_config

SPEC = ProblemSpec(epochs=3, n_eval=96)


# -- Pareto on synthetic points ------------------------------------------------------------

def _brute_front(pts, keys):
    out = []
    for p in pts:
        if any(all(q[k] <= p[k] for k in keys) and any(q[k] < p[k] for k in keys) for q in pts):
            continue
        if any(all(o[k] == p[k] for k in keys) for o in out):
            continue
        out.append(p)
    return out


def test_pareto_matches_brute_force():
    rnd = random.Random(1)
    for trial in range(30):
        keys = ("a", "b", "c")[: 2 + trial % 2]
        pts = [{k: rnd.randint(0, 6) for k in keys} for _ in range(rnd.randint(1, 40))]
        got = pareto_front(pts, keys)
        want = _brute_front(pts, keys)
        assert [tuple(p[k] for k in keys) for p in got] == \
            [tuple(p[k] for k in keys) for p in want]
        # nothing on the front is dominated, everything off it is dominated by a front point
        for p in pts:
            on = any(p is q for q in got)
            dom = any(dominates(q, p, keys) for q in got)
            assert on or dom or any(all(q[k] == p[k] for k in keys) for q in got)


def test_pareto_known_front_and_best():
    pts = [{"loss": 0.0, "lut4": 10, "cycles": 5}, {"loss": 0.5, "lut4": 8, "cycles": 5},
           {"loss": 2.0, "lut4": 1, "cycles": 1}, {"loss": 0.5, "lut4": 9, "cycles": 6}]
    front = pareto_front(pts, ("loss", "lut4", "cycles"))
    assert front == pts[:3]
    feas = feasible([dict(p, fits=True) for p in pts], 1.0)
    assert len(feas) == 3
    assert best(feas, ("lut4", "cycles"))["lut4"] == 8


# -- configs ---------------------------------------------------------------------------------

def test_config_roundtrip_hash_and_errors(tmp_path):
    lq = LayerQuant("conv1", ("int:bits=8,signed=1",) * 3 + ("flint:bits=4,signed=1",),
                    ("exact", "roup:p=1", "exact", "exact"))
    cfg = Config("digits-cnn", (lq, LayerQuant("fc", ("int:bits=4,signed=1",) * 2,
                                               ("exact",) * 2)))
    path = save_config(cfg, tmp_path / "c.toml", meta={"note": "x"})
    back = load_config(path)
    assert back == cfg and back.hash == cfg.hash
    assert cfg.mult_set == ("exact", "roup:p=1")
    assert "flint" in path.read_text()
    with pytest.raises(ValueError, match="int8 weight port"):
        LayerQuant("l", ("pot:bits=5,signed=1",), ("exact",))
    with pytest.raises(ValueError, match="signed"):
        LayerQuant("l", ("int:bits=4",), ("exact",))
    with pytest.raises(ValueError, match="equal length"):
        LayerQuant("l", ("int:bits=4,signed=1",), ("exact", "exact"))


# -- the bit-exact network -------------------------------------------------------------------

@pytest.fixture(scope="module")
def problem():
    return get_problem(SPEC)


def test_qnet_exact_layer_matches_integer_conv(problem):
    """Exact multiplier: accumulators == float64 conv of the integer values (+ bias)."""
    net = problem.net
    cfg = problem.int8_config()
    ins: list = []
    net.forward_codes(problem.x[:8], cfg, collect=ins)
    from mixpe.sw.explore.qnet import weight_values
    L = net.layers[1]
    acc, s_w = net.layer_acc(1, ins[1], cfg.layers[1])
    v, s = weight_values(L.weight, "int:bits=8,signed=1")
    assert torch.equal(s, s_w) and int(v.abs().max()) == 127
    ref = torch.nn.functional.conv2d(ins[1].double(), v.double(), None, L.stride,
                                     L.padding).long()
    assert torch.equal(acc, ref)
    # int8 within 2 points of float on the evaluation images; approximation changes results
    assert abs(problem.int8_accuracy - net.float_accuracy(problem.x, problem.y)) <= 2.5
    sp = problem.space()
    rough = problem.evaluate(sp.uniform("int4", "roup:p=1,r=4"))
    assert rough["loss"] > 0
    assert rough["lut4"] > problem.evaluate(cfg)["lut4"]
    assert rough["dsp"] < problem.evaluate(cfg)["dsp"]


def test_qnet_equals_model_flow_reference(problem):
    """The explorer's fast accuracy == the model flow's ReferenceExecutor on the quant TOML."""
    pytest.importorskip("mixpe.sw.model")
    from mixpe.sw.explore.quanttoml import reference_accuracy

    sp = problem.space()
    genes = sp.decode([0, 4, 2, 0, 1, 2] * sp.n_layers)  # int8/flint4 channels, roup filters
    mixed = expand(sp, genes)
    assert len(set(mixed.layers[1].w_formats)) == 2 and len(set(mixed.layers[1].mults)) == 2
    # per kernel: the least sensitive half of conv2's kernels on roup:p=2
    base = problem.int8_config()
    km = [list(r) for r in base.layers[1].kernel_mults(8)]
    for o, ic in problem.kernel_order(1)[:64]:
        km[o][ic] = "roup:p=2"
    lq = LayerQuant("conv2", mixed.layers[1].w_formats, tuple(tuple(r) for r in km))
    kern = Config(base.model, (base.layers[0], lq, base.layers[2]))
    assert lq.per_kernel and kern.mult_set == ("exact", "roup:p=2")
    for cfg in (sp.uniform("int4", "exact"), mixed, kern):
        mine = problem.net.accuracy(cfg, problem.x, problem.y)
        ref = reference_accuracy(cfg, epochs=SPEC.epochs, n_eval=SPEC.n_eval)
        assert mine == pytest.approx(ref, abs=1e-4)
    # the per-kernel variant map costs cycles (more weight tiles), the same multipliers per
    # filter do not change them
    per_filter = Config(base.model, (base.layers[0], LayerQuant(
        "conv2", lq.w_formats, tuple("roup:p=2" if c % 2 else "exact" for c in range(16))),
        base.layers[2]))
    assert problem.evaluate(kern)["cycles"] > problem.evaluate(per_filter)["cycles"]
    import pathlib
    import tempfile

    from mixpe.sw.explore.quanttoml import load_quant_toml, save_quant_toml
    with tempfile.TemporaryDirectory() as d:
        path = save_quant_toml(kern, pathlib.Path(d) / "k.toml")
        layers = [(L.name, L.channels) for L in problem.net.layers]
        assert load_quant_toml(path, layers, model=base.model).hash == kern.hash


def test_expand_follows_sensitivity_order(problem):
    sp = problem.space()
    genes = sp.decode([0, 2, 2, 0, 1, 2] * sp.n_layers)  # half the channels int4, half roup
    cfg = expand(sp, genes)
    for lq, order in zip(cfg.layers, sp.order):
        c = len(order)
        low = set(order[: round(c * 0.5)])
        assert {i for i, w in enumerate(lq.w_formats) if w != "int:bits=8,signed=1"} == low
        assert {i for i, m in enumerate(lq.mults) if m != "exact"} == low


# -- cache resume ----------------------------------------------------------------------------

def test_cache_resume(tmp_path, problem):
    sp = problem.space()
    cfgs = [sp.uniform(w, m) for w, m in itertools.product(("int8", "int4"),
                                                           ("exact", "roup:p=2"))]
    r1 = Runner(SPEC, tmp_path / "cache", workers=1, progress=False)
    first = r1.evaluate(cfgs[:2])  # an "interrupted" sweep: only the first half ran
    assert r1.evaluated == 2
    r2 = Runner(SPEC, tmp_path / "cache", workers=1, progress=False)
    allr = r2.evaluate(cfgs)
    assert r2.evaluated == 2  # only the two missing ones
    assert [r["hash"] for r in allr] == [c.hash for c in cfgs]
    assert allr[:2] == first
    r3 = Runner(SPEC, tmp_path / "cache", workers=1, progress=False)
    assert r3.evaluate(cfgs) == allr and r3.evaluated == 0


# -- explore + report ------------------------------------------------------------------------

def test_explore_and_report(tmp_path, problem):
    from mixpe.sw.explore.explore import explore
    from mixpe.sw.explore.report import write_report

    out = tmp_path / "run"
    s = explore(SPEC, out, budget=1.0, strategies=["ant", "fpl22", "nsga2"], workers=1,
                progress=False, pop=6, gens=2, verify=1, log=lambda *a: None)
    for v in s["verify"]:
        assert v["explorer"] == pytest.approx(v["reference"], abs=1e-4)
    data = json.loads((out / "explore.json").read_text())
    assert data["pareto"] and set(data["pareto"]) <= {r["hash"] for r in data["results"]}
    feas = feasible(data["results"], 1.0)
    front = [r for r in data["results"] if r["hash"] in data["pareto"]]
    for p in front:
        assert p in feas
        assert not any(dominates(q, p, data["objectives"]) for q in feas)
    assert "nsga2" in data["timings"] and data["timings"]["nsga2"]["evaluated"] >= 1
    from mixpe.sw.explore.quanttoml import load_quant_toml
    layers = [(L.name, L.channels) for L in problem.net.layers]
    for h, rel in s["configs"].items():
        cfg = load_quant_toml(out / rel, layers, model=SPEC.model)
        assert cfg.hash == h
    md = write_report(out)
    assert md.is_file() and "Pareto-optimal" in md.read_text()
    for png in ("pareto_lut4.png", "pareto_cycles.png", "heatmap.png"):
        assert (out / png).stat().st_size > 1000
    html = write_report(out, fmt="html")
    assert "data:image/png;base64" in html.read_text()
    # rerun resumes from the cache: nothing new to evaluate
    s2 = explore(SPEC, out, budget=1.0, strategies=["ant", "fpl22"], workers=1,
                 progress=False, log=lambda *a: None)
    assert s2["evaluations"]["new"] == 0


def test_bad_inputs():
    from mixpe.sw.explore.costs import CostModel
    from mixpe.sw.explore.explore import explore

    with pytest.raises(ValueError, match="board"):
        CostModel("no-such-board")
    with pytest.raises(ValueError, match="budget_acc"):
        explore(SPEC, "/tmp/never", budget=-1)
    with pytest.raises(ValueError, match="strategy"):
        explore(SPEC, "/tmp/never", strategies=["nope"])
    with pytest.raises(ValueError, match="workers"):
        Runner(SPEC, "/tmp/never-cache", workers=0)
    with pytest.raises(ValueError, match="n_eval"):
        ProblemSpec(n_eval=-1)
