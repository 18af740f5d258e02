"""pytest runner: exhaustive per-mode proof of composable Ax-BxP units (``sim/axbxp_tests.py``).

Each config's generated Verilog (:func:`mixpe.hw.generate.generate`) and a batch top of
:data:`COPIES` instances (:func:`mixpe.sim.axbxp_tests.batch_verilog`) are compiled once into
``<build root>/sim/<SIM>/axbxp-<hash12>`` (reused while the Verilog digests and the simulator
match) and run with every precision of the runtime ``mode`` input. ``SIM``
picks the simulator (``icarus`` by default: one unit compiles in about a second; ``verilator``
works too). ``MIXPE_AXBXP_VECTORS`` sets the vector budget of the modes below full precision.

The fixed-mode and ``q = n`` proofs of every shipped axbxp config are the generic runner's
(``mixpe.sim.runner.run_mult``, ``sim/mult_tests.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mixpe.sim import runner as shared

SIM = os.getenv("SIM", "icarus")
#: Unit instances in the batch top (vectors per write/read).
COPIES = 64

#: The shipped composable unit, its lane-output twin, and an unsigned lane unit.
SPECS = [
    "axbxp:mode=composable",
    "axbxp:mode=composable,out=lanes",
    "axbxp:mode=composable,sa=0,sb=0,out=lanes",
]


@contextlib.contextmanager
def _environ(changes: dict):
    old = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_unit(spec: str, simulator: str) -> tuple[Path, dict]:
    """Generate and compile one composable unit; return its build directory and manifest."""
    import hashlib

    from mixpe.hw.generate import config_hash, generate
    from mixpe.hw.mult import _as_config, create
    from mixpe.sim.axbxp_tests import batch_verilog

    cfg = _as_config(spec)
    name = "axbxp"
    build_dir = shared.build_root() / "sim" / simulator / f"axbxp-{config_hash(cfg)[:12]}"
    component = create(cfg)
    manifest = generate(component, cfg, build_dir, name)
    text, geometry = batch_verilog(manifest, COPIES)
    manifest = generate(component, cfg, build_dir, name, extra={"batch": geometry})
    top = geometry["top"]
    (build_dir / f"{top}.v").write_text(text)
    stamp = {"verilog_sha256": manifest["verilog_sha256"],
             "batch_sha256": hashlib.sha256(text.encode()).hexdigest(), "simulator": simulator}
    stamp_path = build_dir / "stamp.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        return build_dir, manifest
    with _environ(shared.simulator_env(simulator)):
        runner = shared.get_runner(simulator)
        runner.build(
            sources=[build_dir / f"{name}.v", build_dir / f"{top}.v"],
            hdl_toplevel=top,
            build_dir=build_dir,
            build_args=list(shared.VERILATOR_ARGS) if simulator == "verilator" else [],
            timescale=shared.TIMESCALE,
            always=True,
            log_file=build_dir / "build.log",
        )
    stamp_path.write_text(json.dumps(stamp) + "\n")
    return build_dir, manifest


def _failures(results_xml: Path) -> list[str]:
    root = ET.parse(results_xml).getroot()
    return [f"{case.get('name')}: {fail.get('message')}"
            for case in root.iter("testcase")
            for fail in list(case.iter("failure")) + list(case.iter("error"))]


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS)
def test_composable_every_mode_exhaustive(spec, tmp_path):
    if not shared.have_simulator(SIM):
        pytest.skip(f"simulator {SIM} is not available")
    build_dir, manifest = build_unit(spec, SIM)
    top = manifest["extra"]["batch"]["top"]
    results = tmp_path / "results.xml"
    result_json = tmp_path / "result.json"
    env = {
        "MIXPE_MANIFEST": str(build_dir / "manifest.json"),
        "MIXPE_AXBXP_VECTORS": os.getenv("MIXPE_AXBXP_VECTORS", "4096"),
        "MIXPE_SIM_SEED": "1",
        "MIXPE_SIM_RESULT": str(result_json),
        "OMP_NUM_THREADS": "1",
    }
    with _environ(shared.simulator_env(SIM)):
        runner = shared.get_runner(SIM)
        runner.build_dir = build_dir  # test() reads these back from build(); no rebuild
        runner.hdl_toplevel = top
        try:
            runner.test(
                test_module="mixpe.sim.axbxp_tests",
                hdl_toplevel=top,
                hdl_toplevel_lang="verilog",
                build_dir=build_dir,
                test_dir=tmp_path,
                extra_env=env,
                timescale=shared.TIMESCALE,
                results_xml=str(results),
                log_file=tmp_path / "sim.log",
            )
        except SystemExit:
            pass  # the runner exits under pytest when a cocotb test fails: report below
    assert results.is_file(), f"no results; log: {(tmp_path / 'sim.log').read_text()[-3000:]}"
    assert not _failures(results), _failures(results)
    res = json.loads(result_json.read_text())
    from mixpe.sw.mult import multiplier

    cfg = multiplier(spec)
    assert [m["q"] for m in res["modes"]] == list(cfg.precisions)
    for m in res["modes"]:
        assert m["matched"] == m["vectors"] == m["rounds"] * m["pairs_per_lane"], m
        assert m["vectors"] >= 1 << (2 * m["q"])
