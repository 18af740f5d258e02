"""pytest runner: the generated ProcessingElement Verilog under cocotb (``sim/pe_tests.py``).

Each config is converted with :func:`mixpe.hw.generate.generate` (Verilog + manifest, the config
JSON beside it) into a build directory keyed by the config hash under the shared build root of
:mod:`mixpe.sim.runner`, compiled once (reused while the Verilog digest matches) and run with
``MIXPE_CONFIG`` pointing at the JSON. ``SIM`` picks the simulator (``icarus`` by default: a
single PE compiles in well under a second there; ``verilator`` works too).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import mixpe.sw.mult.variants  # noqa: F401  (registers the variants family)
import pytest
from mixpe.sim import runner as shared
from mixpe.sw.pe import PEConfig

SIM = os.getenv("SIM", "icarus")

#: (id, PEConfig): exact int8, flint4 × int4 through the decoders, roup, composable axbxp.
CONFIGS = [
    ("exact_int8", PEConfig(mult="exact", acc_bits=18, overflow="wrap", pipeline=0)),
    ("flint4_x_int4", PEConfig(mult="exact:n=4", a_format="flint:bits=4",
                               b_format="int:bits=4,signed=1", acc_bits=10,
                               overflow="saturate", pipeline=1)),
    ("roup", PEConfig(mult="roup:p=1,r=4", acc_bits=16, overflow="wrap", pipeline=2)),
    ("axbxp_composable", PEConfig(mult="axbxp:mode=composable", acc_bits=16,
                                  overflow="saturate", pipeline=1)),
    ("variants", PEConfig(mult="variants:of=exact|roup:p=1;r=4|axbxp:l=2", acc_bits=18,
                          overflow="wrap", pipeline=1)),
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


def build_pe(cfg: PEConfig, simulator: str) -> tuple[Path, dict]:
    """Generate and compile the PE of ``cfg``; return its build directory and manifest."""
    from mixpe.hw.generate import config_hash, generate
    from mixpe.hw.pe import ProcessingElement

    name = "pe"
    build_dir = shared.build_root() / "sim" / simulator / f"pe-{config_hash(cfg)[:12]}"
    dut = ProcessingElement.from_config(cfg)
    manifest = generate(dut, cfg, build_dir, name)
    (build_dir / "pe_config.json").write_text(cfg.to_json() + "\n")
    stamp = {"verilog_sha256": manifest["verilog_sha256"], "simulator": simulator}
    stamp_path = build_dir / "stamp.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        return build_dir, manifest
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
    return build_dir, manifest


def _failures(results_xml: Path) -> list[str]:
    root = ET.parse(results_xml).getroot()
    out = []
    for case in root.iter("testcase"):
        for fail in list(case.iter("failure")) + list(case.iter("error")):
            out.append(f"{case.get('name')}: {fail.get('message')}")
    return out


@pytest.mark.parametrize("cfg", [c for _, c in CONFIGS], ids=[i for i, _ in CONFIGS])
def test_pe_verilog(cfg: PEConfig, tmp_path):
    if not shared.have_simulator(SIM):
        pytest.skip(f"simulator {SIM} is not available")
    build_dir, manifest = build_pe(cfg, SIM)
    seed = int(hashlib.sha256(cfg.to_json().encode()).hexdigest()[:6], 16)
    results = tmp_path / "results.xml"
    result_json = tmp_path / "result.json"
    env = {
        "MIXPE_CONFIG": str(build_dir / "pe_config.json"),
        "MIXPE_PE_LATENCY": str(manifest["latency"]),
        "MIXPE_SIM_COUNT": os.getenv("MIXPE_SIM_COUNT", "400"),
        "MIXPE_SIM_SEED": str(seed),
        "MIXPE_SIM_RESULT": str(result_json),
        "OMP_NUM_THREADS": "1",  # the reference's tiny torch ops; cores are shared
    }
    with _environ(shared.simulator_env(SIM)):
        runner = shared.get_runner(SIM)
        runner.build_dir = build_dir  # test() reads these back from build(); no rebuild
        runner.hdl_toplevel = "pe"
        try:
            runner.test(
                test_module="mixpe.sim.pe_tests",
                hdl_toplevel="pe",
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
    assert res["total"] > 0 and res["matched"] == res["total"], res
