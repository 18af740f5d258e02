"""The ``mixpe`` command line: one console script with subcommands.

Each subcommand lives in the package that owns its work and exposes ``register(subparsers)``,
which adds its parser and sets ``func(args) -> int``. This module only collects them, so the
``sw`` commands never import Amaranth.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main", "COMMAND_MODULES"]

#: Modules that register subcommands, in help order.
COMMAND_MODULES = [
    "mixpe.sw.cmd_mult",
    "mixpe.sw.cmd_format",
    "mixpe.sim.cmd_hw",
    "mixpe.sim.cmd_demo",
    "mixpe.sim.cmd_board",
    "mixpe.sim.cmd_explore",
    "mixpe.sim.cmd_model",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixpe",
        description="Generator of mixed-precision and approximate DNN accelerators.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue  # not written yet
            raise
        mod.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        print(f"mixpe {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
