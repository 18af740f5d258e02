"""pytest runner: the programmable-LUT LUT-NA element through its load sequence
(``sim/lutna_tests.py``) on the generated Verilog.

Each shipped ``lutna:split=act`` config is generated with :func:`mixpe.hw.generate.generate`
into a build directory keyed by the config hash under the shared build root of
:mod:`mixpe.sim.runner`, compiled once (reused while the Verilog digest matches) and run with
every weight code loaded by a ``load`` pulse followed by every activation (all operand pairs).
``SIM`` picks the simulator (``icarus`` by default when installed: the unit compiles in well
under a second there; else ``verilator``).
"""

from __future__ import annotations

import contextlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mixpe.sim import runner as shared

SIM = os.getenv("SIM") or ("icarus" if shared.have_simulator("icarus") else "verilator")


def _specs() -> list[str]:
    from mixpe.sw.mult import multiplier
    from mixpe.sw.mult.catalog import SHIPPED

    out = [s for s in SHIPPED if s.startswith("lutna") and multiplier(s).split == "act"]
    return out or ["lutna:split=act"]


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


def build_lutna(spec: str, simulator: str) -> tuple[Path, Path]:
    """Generate and compile the element of ``spec``; return its build dir and manifest path."""
    from mixpe.hw.generate import config_hash, default_name, generate
    from mixpe.hw.mult import create
    from mixpe.sw.mult import multiplier

    cfg = multiplier(spec)
    name = default_name(cfg)
    build_dir = shared.build_root() / "sim" / simulator / f"lutna-load-{config_hash(cfg)[:12]}"
    with shared._file_lock(build_dir.with_name(build_dir.name + ".lock")):
        manifest = generate(create(cfg), cfg, build_dir, name)
        manifest_path = build_dir / "manifest.json"
        stamp = {"verilog_sha256": manifest["verilog_sha256"], "simulator": simulator}
        stamp_path = build_dir / "stamp.json"
        if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
            return build_dir, manifest_path
        stamp_path.unlink(missing_ok=True)
        with _environ(shared.simulator_env(simulator)):
            runner = shared.get_runner(simulator)
            runner.build(
                sources=[build_dir / f"{name}.v"],
                hdl_toplevel=name,
                build_dir=build_dir,
                build_args=list(shared.VERILATOR_ARGS) if simulator == "verilator" else [],
                timescale=shared.TIMESCALE,
                always=True,
                log_file=build_dir / "build.log",
            )
        stamp_path.write_text(json.dumps(stamp) + "\n")
    return build_dir, manifest_path


def _failures(results_xml: Path) -> list[str]:
    root = ET.parse(results_xml).getroot()
    out = []
    for case in root.iter("testcase"):
        for fail in list(case.iter("failure")) + list(case.iter("error")):
            out.append(f"{case.get('name')}: {fail.get('message')}")
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("sim")
@pytest.mark.parametrize("spec", _specs())
def test_lutna_load_sequence(spec, tmp_path):
    """Every weight loaded by a pulse, then every activation: all operand pairs match."""
    from mixpe.sw.mult import multiplier

    if not shared.have_simulator(SIM):
        pytest.skip(f"simulator {SIM} is not available")
    build_dir, manifest_path = build_lutna(spec, SIM)
    top = json.loads(manifest_path.read_text())["top"]
    results = tmp_path / "results.xml"
    result_json = tmp_path / "result.json"
    env = {
        "MIXPE_MANIFEST": str(manifest_path),
        "MIXPE_SIM_COUNT": os.getenv("MIXPE_SIM_COUNT", "0"),
        "MIXPE_SIM_SEED": "7",
        "MIXPE_SIM_RESULT": str(result_json),
        "OMP_NUM_THREADS": "1",
    }
    with _environ(shared.simulator_env(SIM)):
        runner = shared.get_runner(SIM)
        runner.build_dir = build_dir  # test() reads these back from build(); no rebuild
        runner.hdl_toplevel = top
        try:
            runner.test(
                test_module="mixpe.sim.lutna_tests",
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
    cfg = multiplier(spec)
    if env["MIXPE_SIM_COUNT"] == "0":
        assert res["total"] == 1 << (cfg.a_format.bits + cfg.b_format.bits), res
    assert res["total"] > 0 and res["matched"] == res["total"], res
