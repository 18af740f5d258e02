"""The explorer's Dask path on a real ``dask.distributed.LocalCluster`` (2 worker processes)."""

from __future__ import annotations

import os

import pytest
from mixpe.sw.explore.problem import ProblemSpec, get_problem
from mixpe.sw.explore.runner import Runner

SPEC = ProblemSpec(epochs=3, n_eval=96)


def test_dask_local_cluster_matches_in_process(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    problem = get_problem(SPEC)  # trains/caches the model before the workers load it
    sp = problem.space()
    cfgs = [sp.uniform(w, m) for w in ("int8", "flint4") for m in ("exact", "axbxp:l=3")]
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with Runner(SPEC, tmp_path / "dask", scheduler=cluster.scheduler_address,
                    progress=False) as r:
            got = r.evaluate(cfgs)
            assert r.evaluated == len(cfgs)
            with distributed.Client(cluster.scheduler_address) as client:
                pids = set(client.run(os.getpid).values())
            assert len(pids) == 2 and {g["pid"] for g in got} <= pids
            assert os.getpid() not in pids  # evaluated in the cluster's worker processes
    local = Runner(SPEC, tmp_path / "local", workers=1, progress=False).evaluate(cfgs)
    strip = ("seconds", "pid")
    assert [{k: v for k, v in a.items() if k not in strip} for a in got] == \
        [{k: v for k, v in b.items() if k not in strip} for b in local]
    assert len({r["hash"] for r in got}) == len(cfgs)
