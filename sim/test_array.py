"""pytest runner: the generated SystolicArray Verilog under cocotb (``sim/array_tests.py``).

Each config is converted with :func:`mixpe.hw.generate.generate` (Verilog + manifest) into a
build directory keyed by the config hash under the shared build root of
:mod:`mixpe.sim.runner`, compiled once (reused while the Verilog digest matches; builds hold
the runner's file lock, one compile at a time) and run with a scenario file: random GEMM
tiles (several K passes accumulating through ``d``), bit-exact against ``sw/emulate``.
``SIM`` picks the simulator (``icarus`` by default: it compiles a 4×4 array in seconds;
``verilator`` works too). The measured cycles (first accepted beat → last output beat) are
checked against the latency formula of :mod:`mixpe.hw.array` for the gap-free runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mixpe.sim import runner as shared
from mixpe.sim.array_tests import layout_fields, os_scenario, predict_cycles, ws_scenario
from mixpe.sw.pe import PEConfig

SIM = os.getenv("SIM", "icarus")

INT8 = PEConfig(mult="exact:n=8", acc_bits=32)
SAT12 = PEConfig(mult="exact:n=8", acc_bits=12, overflow="saturate")


def _ws(pe, **kw):
    return lambda: ws_scenario(pe, 4, 4, **kw)


def _os(pe, **kw):
    return lambda: os_scenario(pe, 4, 4, **kw)


#: id -> (array kwargs, [(scenario factory, gap probability)])
CASES = {
    "ws_int8": (dict(pe=INT8, tag_bits=4), [
        (_ws(INT8, m=24, passes=3, tag_bits=4, seed=1), 0.0),
        (_ws(INT8, m=9, passes=4, tag_bits=4, seed=2), 0.3),
    ]),
    "ws_int8_sat12": (dict(pe=SAT12), [
        (_ws(SAT12, m=12, passes=3, seed=3, bias_scale=2000), 0.2),
    ]),
    "os_int8": (dict(pe=INT8, dataflow="os", tag_bits=4), [
        (_os(INT8, m_tiles=3, k=9, passes=2, tag_bits=4, seed=4), 0.0),
        (_os(INT8, m_tiles=2, k=5, passes=2, tag_bits=4, seed=5), 0.3),
    ]),
    "os_sat12": (dict(pe=SAT12, dataflow="os"), [
        (_os(SAT12, m_tiles=2, k=7, passes=2, seed=6, bias_scale=2000), 0.2),
    ]),
    "ws_axbxp_composable": (
        dict(pe=PEConfig(mult="axbxp:mode=composable", acc_bits=16, overflow="saturate")),
        [(_ws(PEConfig(mult="axbxp:mode=composable", acc_bits=16, overflow="saturate"),
              m=8, passes=2, mode=mode, seed=10 + mode, bias_scale=20000), 0.2)
         for mode in (0, 1, 2)],
    ),
    "ws_roup_variants": (
        dict(pe=PEConfig(mult="exact:n=8", acc_bits=20),
             variants=("roup:p=1,r=4", "roup:p=2,r=2", "axbxp:l=1")),
        [(_ws(PEConfig(mult="exact:n=8", acc_bits=20), m=10, passes=3,
              variants=("roup:p=1,r=4", "roup:p=2,r=2", "axbxp:l=1"), sel=[1, 2, 3, 0],
              seed=20), 0.2)],
    ),
    "ws_flint_x_int": (
        dict(pe=PEConfig(mult="exact:n=4", a_format="flint:bits=4",
                         b_format="int:bits=4,signed=1", acc_bits=12, overflow="saturate",
                         pipeline=1)),
        [(_ws(PEConfig(mult="exact:n=4", a_format="flint:bits=4",
                       b_format="int:bits=4,signed=1", acc_bits=12, overflow="saturate",
                       pipeline=1), m=10, passes=3, seed=30, bias_scale=1500), 0.2)],
    ),
}


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


def write_array(dut, config: dict, out_dir: Path, name: str, *, extra=None) -> dict:
    """Write ``<name>.v`` with :func:`mixpe.hw.array.convert` (one tile module, instantiated
    per tile: the path used for big arrays) and a manifest like :func:`mixpe.hw.generate.generate`
    writes; return the manifest."""
    from mixpe.hw.array import convert
    from mixpe.hw.generate import (
        MANIFEST_NAME,
        MANIFEST_VERSION,
        config_hash,
        port_list,
        tool_versions,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    text = convert(dut, name=name)
    (out_dir / f"{name}.v").write_text(text)
    manifest = {
        "manifest_version": MANIFEST_VERSION, "name": name, "top": name,
        "verilog": f"{name}.v", "component": "mixpe.hw.array.SystolicArray",
        "config": config, "config_hash": config_hash(config),
        "ports": port_list(dut, text, name), "latency": dut.latency,
        "clock": "clk", "reset": "rst",
        "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "tools": tool_versions(text), "extra": extra or {},
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def build_array(kwargs: dict, simulator: str):
    """Generate and compile the array of ``kwargs``; ``(build dir, dut, layouts, times)``."""
    from mixpe.hw.array import SystolicArray
    from mixpe.hw.generate import config_hash

    name = "systolic_array"
    t0 = time.perf_counter()
    dut = SystolicArray(rows=4, cols=4, **kwargs)
    config = {"array": dut.config.to_dict(), "tile_rows": dut.tile_rows,
              "tile_cols": dut.tile_cols, "tag_bits": dut.tag_bits}
    build_dir = shared.build_root() / "sim" / simulator / f"array-{config_hash(config)[:12]}"
    layouts = {"i": layout_fields(dut.i_layout), "o": layout_fields(dut.o_layout)}
    if dut.w_layout is not None:
        layouts["w"] = layout_fields(dut.w_layout)
    with shared._file_lock(build_dir.with_name(build_dir.name + ".lock")):
        manifest = write_array(dut, config, build_dir, name, extra={"timing": dut.timing})
        t_gen = time.perf_counter() - t0
        stamp = {"verilog_sha256": manifest["verilog_sha256"], "simulator": simulator}
        stamp_path = build_dir / "stamp.json"
        t1 = time.perf_counter()
        if not (stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp):
            glock = shared.build_root() / "sim" / f".{simulator}-build.lock"
            with shared._file_lock(glock), _environ(shared.simulator_env(simulator)):
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
        t_build = time.perf_counter() - t1
    return build_dir, dut, layouts, {"generate_s": t_gen, "build_s": t_build}


def _failures(results_xml: Path) -> list[str]:
    root = ET.parse(results_xml).getroot()
    out = []
    for case in root.iter("testcase"):
        for fail in list(case.iter("failure")) + list(case.iter("error")):
            out.append(f"{case.get('name')}: {fail.get('message')}")
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_array_verilog(case, tmp_path):
    if not shared.have_simulator(SIM):
        pytest.skip(f"simulator {SIM} is not available")
    kwargs, runs = CASES[case]
    build_dir, dut, layouts, times = build_array(kwargs, SIM)
    scenarios = [(make(), gap) for make, gap in runs]
    spec = {"layouts": layouts, "seed": int(hashlib.sha256(case.encode()).hexdigest()[:6], 16),
            "runs": [{"scenario": sc.to_json(), "gap": gap} for sc, gap in scenarios]}
    spec_path = tmp_path / "scenario.json"
    spec_path.write_text(json.dumps(spec))
    results, result_json = tmp_path / "results.xml", tmp_path / "result.json"
    env = {"MIXPE_ARRAY_SCENARIO": str(spec_path), "MIXPE_SIM_RESULT": str(result_json)}
    t0 = time.perf_counter()
    with _environ(shared.simulator_env(SIM)):
        runner = shared.get_runner(SIM)
        runner.build_dir = build_dir  # test() reads these back from build(); no rebuild
        runner.hdl_toplevel = "systolic_array"
        try:
            runner.test(
                test_module="mixpe.sim.array_tests",
                hdl_toplevel="systolic_array",
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
    t_sim = time.perf_counter() - t0
    assert results.is_file(), f"no results; log: {(tmp_path / 'sim.log').read_text()[-3000:]}"
    assert not _failures(results), _failures(results)
    res = json.loads(result_json.read_text())
    for r, (sc, gap) in zip(res, scenarios):
        assert r["total"] > 0 and r["matched"] == r["total"] == r["received"], r
        if gap == 0.0:  # the pacing model of the timing contract, cycle for cycle
            assert r["cycles"] == predict_cycles(sc, dut.timing)["cycles"], r
    report = {"case": case, "simulator": SIM, "latency": dut.latency, **times,
              "sim_s": t_sim, "runs": [{k: r[k] for k in ("matched", "cycles", "beats")}
                                       for r in res]}
    print(json.dumps(report))
    (build_dir / "last_run.json").write_text(json.dumps(report, indent=2) + "\n")
