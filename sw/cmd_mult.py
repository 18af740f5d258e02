"""``mixpe mult``: inspect a multiplier, its error metrics and its product table.

Usage::

    mixpe mult SPEC                    # operand formats, output width, product range
    mixpe mult SPEC --metrics [--json] # EvoApproxLib error metrics over all operand pairs
    mixpe mult SPEC --table T.npy      # write the int64 table T[i, j] indexed by operand codes
    mixpe mult --all   (or: mixpe mult all)   # metrics of every shipped multiplier

An invalid SPEC raises ``ValueError``; ``mixpe`` prints it and exits with status 2.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from .metrics import error_metrics
from .mult import Multiplier, multiplier
from .mult.base import OperandFormat
from .mult.catalog import SHIPPED

__all__ = ["register", "run", "shipped_metrics", "shipped_metrics_table", "describe"]

_ENC = {"twos": "s", "unsigned": "u", "sm": "sm"}


def _operand(f: OperandFormat) -> str:
    return f"{f.bits}{_ENC[f.encoding]}"


def describe(m: Multiplier) -> dict[str, object]:
    """Spec, operand formats, output width and product range of ``m`` (JSON-ready)."""
    lo, hi = m.product_range
    return {
        "spec": m.spec,
        "class": type(m).__name__,
        "a_bits": m.a_format.bits,
        "a_encoding": m.a_format.encoding,
        "b_bits": m.b_format.bits,
        "b_encoding": m.b_format.encoding,
        "out_bits": m.out_bits,
        "product_min": lo,
        "product_max": hi,
    }


def shipped_metrics(progress_console: Console | None = None) -> list[dict[str, object]]:
    """``describe`` plus ``error_metrics`` of every :data:`SHIPPED` multiplier, in order."""
    rows = []
    with Progress(console=progress_console or Console(stderr=True), transient=True,
                  disable=progress_console is None) as progress:
        task = progress.add_task("error metrics", total=len(SHIPPED))
        for spec in SHIPPED:
            progress.update(task, description=f"error metrics: {spec}")
            m = multiplier(spec)
            rows.append({**describe(m), **error_metrics(m)})
            progress.advance(task)
    return rows


def _num(x: float) -> str:
    """Compact: integers as is, large values in short scientific notation."""
    if x == 0:
        return "0"
    if isinstance(x, int):
        return str(x)
    if abs(x) >= 1e5:
        mant, exp = f"{x:.2e}".split("e")
        return f"{mant}e{int(exp)}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"


def _pct(x: float) -> str:
    return "0" if x == 0 else f"{100 * x:.3g}"


def shipped_metrics_table(console: Console) -> list[dict[str, object]]:
    """Print the error-metrics table of every shipped multiplier on ``console``; return rows."""
    rows = shipped_metrics(console)
    table = Table(
        title="Shipped multipliers: error over all operand pairs",
        caption="e = approximate - exact; MRED over pairs with exact product != 0 "
                "(EvoApproxLib definitions). Operands: s two's complement, u unsigned, "
                "sm sign-magnitude.",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("spec", style="cyan", no_wrap=True)
    table.add_column("a × b", no_wrap=True)
    for name in ("MAE", "WCE", "MRED%", "EP%", "MSE", "bias"):
        table.add_column(name, justify="right", no_wrap=True)
    family = None
    for row in rows:
        fam = str(row["spec"]).split(":")[0]
        if family is not None and fam != family:
            table.add_section()
        family = fam
        exact = row["wce"] == 0
        table.add_row(
            str(row["spec"]),
            f"{row['a_bits']}{_ENC[row['a_encoding']]}×{row['b_bits']}{_ENC[row['b_encoding']]}",
            _num(row["mae"]), _num(row["wce"]), _pct(row["mred"]), _pct(row["ep"]),
            _num(row["mse"]), _num(row["bias"]),
            style="dim" if exact else None,
        )
    console.print(table)
    return rows


def _print_one(console: Console, info: dict, metrics: dict | None) -> None:
    table = Table(title=f"multiplier {info['spec']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("class", str(info["class"]))
    table.add_row("operand a", f"{info['a_bits']} bits, {info['a_encoding']}")
    table.add_row("operand b", f"{info['b_bits']} bits, {info['b_encoding']}")
    table.add_row("output", f"{info['out_bits']} bits, products in "
                            f"[{info['product_min']}, {info['product_max']}]")
    if metrics is not None:
        table.add_section()
        table.add_row("MAE", f"{metrics['mae']:.6g} ({metrics['mae_pct']:.4g} % of range)")
        table.add_row("WCE", f"{metrics['wce']} ({metrics['wce_pct']:.4g} % of range)")
        table.add_row("MRED", f"{100 * metrics['mred']:.4g} %")
        table.add_row("WCRE", f"{100 * metrics['wcre']:.4g} %")
        table.add_row("EP", f"{100 * metrics['ep']:.4g} %")
        table.add_row("MSE", f"{metrics['mse']:.6g}")
        table.add_row("bias", f"{metrics['bias']:.6g}")
    console.print(table)


def run(args) -> int:
    """Entry point of ``mixpe mult`` (``args`` from the parser built by :func:`register`)."""
    console = Console()
    if args.all or args.spec == "all":
        if args.json:
            print(json.dumps(shipped_metrics()))
        else:
            shipped_metrics_table(console)
        return 0
    if not args.spec:
        raise ValueError("give a multiplier SPEC (e.g. roup:n=8,p=1,r=4) or --all")
    m = multiplier(args.spec)
    info = describe(m)
    metrics = error_metrics(m) if args.metrics else None
    if args.table:
        t = m.table().numpy().astype(np.int64)
        np.save(args.table, t)
        note = (f"wrote T[i, j] of {m.spec}: shape {t.shape}, int64, i = code of a "
                f"({m.a_format.encoding}), j = code of b ({m.b_format.encoding}) -> {args.table}")
        if args.json:
            print(note, file=sys.stderr)
        else:
            console.print(note, highlight=False)
    if args.json:
        print(json.dumps({**info, **(metrics or {})}))
    elif metrics is not None or not args.table:
        _print_one(console, info, metrics)
    return 0


def register(subparsers) -> None:
    """Add the ``mult`` subcommand to ``mixpe``'s subparsers."""
    p = subparsers.add_parser(
        "mult",
        help="inspect a multiplier: formats, error metrics, product table",
        description="Inspect the multiplier named by SPEC (e.g. exact:n=8, axbxp:n=8,k=2,l=2, "
                    "roup:n=8,p=1,r=4, lutna:c=4, table:path=FILE.npy).",
    )
    p.add_argument("spec", nargs="?", metavar="SPEC",
                   help="multiplier spec string; 'all' is the same as --all")
    p.add_argument("--all", action="store_true",
                   help="print the error metrics of every shipped multiplier")
    p.add_argument("--metrics", action="store_true",
                   help="compute MAE, WCE, MRED, WCRE, EP, MSE, bias over all operand pairs")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--table", metavar="FILE.npy",
                   help="write the int64 product table T[i, j] indexed by operand codes")
    p.set_defaults(func=run)
