"""``mixpe demo``: the main job on the embedded default.

Until the end-to-end flow lands, the demo prints the error metrics of every shipped
multiplier (computed exhaustively from the bit-exact reference).
"""

from __future__ import annotations

__all__ = ["register", "run"]


def register(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="run the main job on the embedded default",
        description="Print the error metrics of every shipped multiplier configuration.",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from mixpe.sw.cmd_mult import shipped_metrics_table
    from rich.console import Console

    console = Console()
    shipped_metrics_table(console)
    return 0
