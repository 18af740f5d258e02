"""``mixpe compare`` and ``mixpe run``: a quantized CNN on the hardware, against the reference.

``compare`` runs N test images through the float model, the bit-exact reference
(:mod:`mixpe.sw.emulate`) and the hardware (``--port``: a serial device, ``sim://BOARD`` for the
Verilator simulated board, ``model://PRESET`` for the core's golden model, or ``core-model``),
and reports accuracies, the per-layer bit-match rate, the first diverging layer/element, and
cycles per inference from the board's counters. ``run`` runs the hardware only.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

__all__ = ["register"]


def _core_for_port(port: str, core: str | None) -> str:
    """The core preset a port implies: ``sim://BOARD`` → the board's preset."""
    if core:
        return core
    if port.startswith("sim://"):
        from mixpe.boards import SIM_BOARDS

        board = port[len("sim://"):].split("?")[0]
        if board not in SIM_BOARDS:
            raise ValueError(f"--port sim://BOARD: BOARD must be one of "
                             f"{', '.join(sorted(SIM_BOARDS))}, not {board!r}")
        return SIM_BOARDS[board][0]
    if port.startswith("model://"):
        return port[len("model://"):].split("?")[0]
    from mixpe.boards import BOARDS

    return BOARDS["ulx3s"].preset


def _plot(r, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(r.match)
    layers = list(next(iter(r.match.values()), {}))
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    for k in names[1:]:
        ax[0].plot(range(len(layers)), [100 * (1 - r.match[k][lay]) for lay in layers], "o-",
                   label=f"{k} vs reference")
    ax[0].set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
    ax[0].set_ylabel("elements differing from the reference (%)")
    ax[0].set_title("hardware vs bit-exact reference, per layer")
    ax[0].legend(fontsize=8)
    for k, c in r.cycles.items():
        if c:
            ls = list(c)
            ax[1].bar(range(len(ls)), [c[x] / max(1, r.images) for x in ls], label=k)
            ax[1].set_xticks(range(len(ls)), ls, rotation=45, ha="right", fontsize=8)
    ax[1].set_ylabel("cycles per image")
    ax[1].set_title("cycles per layer")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _table(r, wall: float, console):
    from rich.table import Table

    t = Table(title=f"{r.meta.get('model')} · {r.meta.get('config')} · core "
              f"{r.meta.get('core')} · {r.images} images")
    t.add_column("model")
    t.add_column("top-1 accuracy", justify="right")
    if r.float_accuracy is not None:
        t.add_row("float", f"{100 * r.float_accuracy:.2f} %")
    for k, v in r.accuracy.items():
        t.add_row(k, f"{100 * v:.2f} %")
    console.print(t)
    names = list(r.match)
    if len(names) > 1 or any(r.cycles.values()):
        lt = Table(title="per layer")
        lt.add_column("layer")
        for k in names[1:]:
            lt.add_column(f"bit match {k}", justify="right")
        cyc = [k for k in r.cycles if r.cycles[k]]
        for k in cyc:
            lt.add_column(f"cycles/image {k}", justify="right")
        for layer in next(iter(r.match.values()), {}):
            row = [layer] + [f"{100 * r.match[k][layer]:.2f} %" for k in names[1:]]
            row += [str(round(r.cycles[k][layer] / max(1, r.images)))
                    if layer in r.cycles[k] else "" for k in cyc]
            lt.add_row(*row)
        console.print(lt)
    for k, fm in r.first_mismatch.items():
        if fm is not None:
            console.print(f"[red]first mismatch ({k}):[/red] {fm}")
    for k, c in r.cycles.items():
        if c:
            console.print(f"cycles per inference ({k}): {sum(c.values()) / max(1, r.images):.0f}")
    console.print(f"wall time {wall:.1f} s")
    if len(names) > 1:
        console.print("[green]hardware = reference bit for bit on every image[/green]"
                      if r.bit_exact else "[red]hardware differs from the reference[/red]")


def _run(args, reference: bool) -> int:
    from mixpe.sw.model import run_compare
    from rich.console import Console

    port = args.port
    core = _core_for_port(port, args.core)
    t0 = time.perf_counter()
    r = run_compare(model=args.model, config=args.quant, dataset=args.dataset, root=args.root,
                    core=core, executor=port, images=args.images, batch=args.batch,
                    reference=reference, progress=not args.json)
    wall = time.perf_counter() - t0
    d = r.to_dict()
    d["wall_s"] = round(wall, 2)
    if args.json:
        json.dump(d, sys.stdout, indent=2, default=str)
        print()
    else:
        _table(r, wall, Console())
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "compare.json.tmp"
        tmp.write_text(json.dumps(d, indent=2, default=str))
        tmp.replace(out / "compare.json")
        _plot(r, out / "compare.png")
        if not args.json:
            print(f"wrote {out / 'compare.json'} and {out / 'compare.png'}")
    return 0 if (not reference or r.bit_exact) else 1


def register(sub):
    for name, ref, help_ in (
            ("compare", True, "float model vs bit-exact reference vs hardware, per layer"),
            ("run", False, "run a quantized model on the hardware only")):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--model", default="digits-cnn", help="digits-cnn or resnet8")
        p.add_argument("--quant", default="ant4-roup",
                       help="quant config TOML (a path, or a shipped name: int8, ant4-roup, mixed)")
        p.add_argument("--port", default="sim://ulx3s",
                       help="serial device, sim://BOARD, model://PRESET or core-model")
        p.add_argument("--core", default=None,
                       help="core preset the board was built from (default: from --port)")
        p.add_argument("--dataset", default="digits", help="digits, mnist or cifar10")
        p.add_argument("--root", default=None, help="dataset root (torchvision layout)")
        p.add_argument("--images", type=int, default=200, help="test images (default 200)")
        p.add_argument("--batch", type=int, default=16, help="images per batch")
        p.add_argument("--json", action="store_true", help="print JSON instead of tables")
        p.add_argument("-o", "--out", default=None,
                       help="directory for compare.json and compare.png (per-layer plot)")
        p.set_defaults(func=lambda a, _ref=ref: _run(a, _ref))
