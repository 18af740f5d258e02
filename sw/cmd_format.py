"""``mixpe format``: show a number format's grid and its code → (m, e) decode.

    mixpe format flint --bits 4 --grid --json     # [0, 1, 2, ..., 24, 32, 64]
    mixpe format flint --bits 4 --signed          # table: code, bits, value, m, e
    mixpe format float --bits 5 --e 2 --decode --json
"""

from __future__ import annotations

import json

from .formats import NumberFormat, number_format_from
from .spec import registry

__all__ = ["register", "run", "format_rows"]


def format_rows(fmt: NumberFormat, *, by_value: bool = False) -> list[dict]:
    """One dict per code (``code, bits, value, m, e``); ``by_value``: one per grid value,
    ascending, with its canonical code.

    >>> from mixpe.sw.formats import FlintFormat
    >>> format_rows(FlintFormat(bits=4))[13]
    {'code': 13, 'bits': '1101', 'value': 24, 'm': 6, 'e': 2}
    """
    codes = fmt.encode(fmt.grid()) if by_value else fmt.codes()
    m, e = fmt.decode(codes)
    values = fmt.value(codes)
    return [
        {"code": int(c), "bits": format(int(c), f"0{fmt.bits}b"), "value": int(v), "m": int(mm),
         "e": int(ee)}
        for c, v, mm, ee in zip(codes, values, m, e)
    ]


def _summary(fmt: NumberFormat) -> dict:
    lo, hi = fmt.range
    return {"spec": fmt.spec, "bits": fmt.bits, "signed": fmt.signed, "min": lo, "max": hi,
            "m_bits": fmt.m_bits, "m_signed": fmt.m_signed, "e_max": fmt.e_max}


def run(args) -> int:
    if args.e is not None and args.kind != "float":
        raise ValueError(f"--e (exponent bits) applies to float only, not {args.kind}")
    extra = {} if args.e is None else {"e": args.e}
    fmt = number_format_from(args.kind, args.bits, args.signed, **extra)
    show_decode = args.decode or not args.grid
    if args.json:
        if args.grid and not args.decode:
            out = fmt.grid().tolist()
        elif args.decode and not args.grid:
            out = format_rows(fmt)
        else:
            out = dict(_summary(fmt), grid=fmt.grid().tolist(), decode=format_rows(fmt))
        print(json.dumps(out))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = _summary(fmt)
    console.print(
        f"[bold]{s['spec']}[/bold]: {fmt.bits} bits, values [{s['min']}, {s['max']}] "
        f"({len(fmt.grid())} distinct); decoder m: {s['m_bits']} bits "
        f"{'signed' if s['m_signed'] else 'unsigned'}, e: 0…{s['e_max']}; value = m << e"
    )
    tables = []
    if args.grid:
        tables.append(("grid (ascending, canonical codes)", format_rows(fmt, by_value=True)))
    if show_decode:
        tables.append(("decode (every code)", format_rows(fmt)))
    for title, rows in tables:
        table = Table(title=title)
        for col in ("code", "bits", "value", "m", "e"):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(*(str(r[k]) for k in ("code", "bits", "value", "m", "e")))
        console.print(table)
    return 0


def register(subparsers) -> None:
    """Add the ``format`` subcommand."""
    from . import formats  # noqa: F401  (registers the format families)

    p = subparsers.add_parser(
        "format",
        help="show a number format (int, pot, float, flint): grid and code decode",
        description="Show the values of a number format in integer units and the (m, e) pair "
        "its hardware decoder emits for every code (value = m << e).",
    )
    p.add_argument("kind", metavar="KIND", choices=sorted(registry("format")),
                   help=f"format family: {', '.join(sorted(registry('format')))}")
    p.add_argument("--bits", metavar="B", type=int, default=4,
                   help="total code width (default: %(default)s)")
    p.add_argument("--signed", action="store_true",
                   help="two's complement (int) or sign + magnitude (pot, float, flint)")
    p.add_argument("--e", metavar="E", type=int, default=None,
                   help="float only: exponent bits (default: min(3, magnitude bits), as ANT)")
    p.add_argument("--grid", action="store_true", help="show the distinct values, ascending")
    p.add_argument("--decode", action="store_true",
                   help="show every code with its value and (m, e) (the default view)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)
