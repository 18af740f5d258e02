"""``mixpe report DIR``: Markdown (+ PNG) or HTML report of an ``explore.json``.

Contents:

* Pareto plots of accuracy vs LUT4, vs cycles and vs the energy proxy: every evaluated config
  as a dot coloured by the method that produced it, the feasible Pareto front highlighted, the
  int8 baseline and the accuracy budget line (one PNG per hardware objective);
* each seed method vs the general search on the same axes (the methods' feasible fronts);
* the chosen config per layer as a heat map (rows: layers; columns: output channels; colour:
  multiplier, annotation: weight format) of the best config and of each method's best;
* the goal check table and links to the quant TOML files.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from pathlib import Path

__all__ = ["write_report"]

_COLORS = {"axbxp": "tab:blue", "maxdnn": "tab:orange", "ant": "tab:green",
           "fpl22": "tab:purple", "nsga2": "tab:red"}


def _method(r) -> str:
    ms = r.get("methods", [])
    return "nsga2" if "nsga2" in ms and len(ms) == 1 else (ms[0] if ms else "?")


def _savefig(fig, path: Path):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _pareto_plots(summary, out: Path) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .pareto import feasible, pareto_front

    results = summary["results"]
    budget = summary["budget"]
    int8 = summary["int8_accuracy"]
    front = set(summary["pareto"])
    keys = [k for k in ("lut4", "cycles", "energy") if all(r.get(k) is not None for r in results)]
    labels = {"lut4": "LUT4 (array-level)", "cycles": "cycles per image (cycle model)",
              "energy": "energy proxy (toggles per image)"}
    figs = []
    for k in keys:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        ax = axes[0]
        for m, col in _COLORS.items():
            pts = [r for r in results if m in r.get("methods", [])]
            if pts:
                ax.scatter([r[k] for r in pts], [r["accuracy"] for r in pts], s=14, alpha=0.5,
                           color=col, label=m)
        fr = sorted([r for r in results if r["hash"] in front], key=lambda r: r[k])
        ax.scatter([r[k] for r in fr], [r["accuracy"] for r in fr], s=60, facecolors="none",
                   edgecolors="black", label="Pareto (all objectives)")
        ax.axhline(int8, color="gray", ls=":", lw=1, label="int8")
        ax.axhline(int8 - budget, color="gray", ls="--", lw=1, label=f"int8 − {budget}")
        ax.set_xlabel(labels[k])
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(f"all evaluated configs: accuracy vs {k}")
        ax.legend(fontsize=7)
        ax = axes[1]
        for m, col in _COLORS.items():
            pts = feasible([r for r in results if m in r.get("methods", [])], budget)
            f2 = sorted(pareto_front(pts, ("loss", k)), key=lambda r: r[k])
            if f2:
                ax.step([r[k] for r in f2], [r["accuracy"] for r in f2], where="post",
                        color=col, marker="o", ms=4, label=m)
        ax.axhline(int8 - budget, color="gray", ls="--", lw=1)
        ax.set_xlabel(labels[k])
        ax.set_title("each method's feasible front (accuracy vs " + k + ")")
        ax.legend(fontsize=7)
        name = f"pareto_{k}.png"
        _savefig(fig, out / name)
        plt.close(fig)
        figs.append((f"Accuracy vs {labels[k]}", name))
    return figs


def _heatmap(summary, out: Path) -> list[tuple[str, str]]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    res = {r["hash"]: r for r in summary["results"]}
    g = summary["goal"]
    chosen = []
    if g.get("overall"):
        chosen.append(("best overall", g["overall"]))
    for m, v in g["methods"].items():
        if v.get("best"):
            chosen.append((f"best {m}", v["best"]))
    if not chosen:
        return []
    def _entries(lq):
        return [lq["mult"]] * lq["channels"] if isinstance(lq["mult"], str) else lq["mult"]

    def _major(e):  # a filter's multiplier; per kernel: the most common one
        if isinstance(e, str):
            return e
        from collections import Counter
        return Counter(e).most_common(1)[0][0]

    mults = sorted({m for _, h in chosen for lq in res[h]["config"]["layers"]
                    for e in _entries(lq) for m in ([e] if isinstance(e, str) else e)})
    mults.sort(key=lambda m: (m != "exact", m))
    nl = len(summary["layers"])
    fig, axes = plt.subplots(len(chosen), 1, figsize=(12, 1.0 + len(chosen) * (0.45 * nl + 1.0)),
                             squeeze=False)
    cmap = plt.get_cmap("tab10", max(len(mults), 2))
    for ax, (title, h) in zip(axes[:, 0], chosen):
        layers = res[h]["config"]["layers"]
        width = max(lq["channels"] for lq in layers)
        grid = np.full((len(layers), width), np.nan)
        for i, lq in enumerate(layers):
            ms = _entries(lq)
            wf = [lq["w_format"]] * lq["channels"] if isinstance(lq["w_format"], str) \
                else lq["w_format"]
            for c, (m, w) in enumerate(zip(ms, wf)):
                grid[i, c] = mults.index(_major(m))
                short = w.split(":")[0] + (w.split("bits=")[1].split(",")[0] if "bits=" in w
                                           else "4") + ("" if isinstance(m, str) else "/k")
                ax.text(c, i, short, ha="center", va="center", fontsize=7)
        ax.imshow(grid, cmap=cmap, vmin=-0.5, vmax=len(mults) - 0.5, aspect="auto")
        ax.set_yticks(range(len(layers)), [lq["name"] for lq in layers])
        ax.set_xlabel("output channel (filter)")
        r = res[h]
        ax.set_title(f"{title}: acc {r['accuracy']:.2f} %, LUT4 {r['lut4']}, cycles "
                     f"{r['cycles']}" + (f", energy {r['energy']:.3g}" if r.get("energy")
                                         is not None else ""), fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in range(len(mults))]
    fig.legend(handles, mults, loc="lower center", ncol=min(len(mults), 7), fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _savefig(fig, out / "heatmap.png")
    plt.close(fig)
    return [("Chosen config per layer (colour: multiplier per filter, the most common one "
             "for per-kernel filters marked /k; text: weight format per channel)",
             "heatmap.png")]


def _tables(summary) -> list[str]:
    res = {r["hash"]: r for r in summary["results"]}
    keys = summary["objectives"]
    lines = []
    lines.append(f"Model `{summary['spec']['model']}` on `{summary['spec']['board']}`: float "
                 f"{summary['float_accuracy']:.2f} %, int8 {summary['int8_accuracy']:.2f} %; "
                 f"budget {summary['budget']} point(s); {len(summary['results'])} configs "
                 f"evaluated ({summary['evaluations']['per_second']} evaluations/s); wall "
                 f"{summary['wall_seconds']} s.")
    lines.append("")
    lines.append("## Pareto-optimal configs (feasible)")
    lines.append("")
    hdr = ["accuracy %"] + keys[1:] + ["methods", "TOML"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for h in summary["pareto"]:
        r = res[h]
        row = [f"{r['accuracy']:.2f}"] + [f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k])
                                          for k in keys[1:]]
        row += [", ".join(r["methods"]), f"`{summary['configs'].get(h, '-')}`"]
        lines.append("| " + " | ".join(row) + " |")
    g = summary["goal"]
    lines.append("")
    lines.append("## Goal: each seed method's best config vs the exploration")
    lines.append("")
    order = [k for k in ("energy", "lut4", "cycles") if k in g["keys"]]
    lines.append(f"A method's best = lexicographic minimum of ({', '.join(order)}) among its "
                 "feasible configs; it is *beaten* when a feasible config of the exploration is "
                 f"no worse on every one of {', '.join(g['keys'])} and better on at least one "
                 "(the beater shown is the best such config). Goal "
                 f"**{'met' if g['met'] else 'not met'}**.")
    lines.append("")
    lines.append("| method | config | accuracy % | " + " | ".join(g["keys"]) + " | found by | "
                 "TOML |")
    lines.append("|" + "---|" * (5 + len(g["keys"])))
    for m, v in g["methods"].items():
        if not v["best"]:
            lines.append(f"| {m} | no feasible config |" + " |" * (len(g["keys"]) + 3))
            continue
        for tag, h in (("method's best", v["best"]), ("beaten by", v.get("beater"))):
            if not h:
                lines.append(f"| {m} | not beaten |" + " |" * (len(g["keys"]) + 3))
                continue
            r = res[h]
            lines.append(f"| {m} | {tag} | {r['accuracy']:.2f} | " + " | ".join(
                f"{r[k]:.6g}" for k in g["keys"]) + f" | {', '.join(r['methods'])} | "
                f"`{summary['configs'].get(h, '-')}` |")
    if summary.get("verify"):
        lines.append("")
        lines.append("Verification of chosen configs through the model flow's reference "
                     "executor (quant TOML → `sw/model` quantize → ReferenceExecutor):")
        lines.append("")
        lines.append("| TOML | explorer accuracy % | reference accuracy % |")
        lines.append("|---|---|---|")
        for v in summary["verify"]:
            lines.append(f"| `{v['file']}` | {v['explorer']:.2f} | {v['reference']:.2f} |")
    lines.append("")
    lines.append("## Strategies")
    lines.append("")
    lines.append("| strategy | configs | new evaluations | seconds |")
    lines.append("|---|---|---|---|")
    for m, t in summary["timings"].items():
        lines.append(f"| {m} | {t['results']} | {t['evaluated']} | {t['seconds']} |")
    lines.append("")
    lines.append("Objectives: accuracy from the bit-exact quantized network (`sw/explore/qnet.py`,"
                 " `sw/emulate` products, `sw/requant` requantization); LUT4/FF/DSP/BRAM from the "
                 "synthesized core (`bench/results/core_fit.md`) plus, per run-time variant, the "
                 "synthesized PE library (`bench/results/pe_cost.md`) or the synthesized "
                 "decoded variant (`bench/results/explore_variants.json`); cycles "
                 "from `sw/cyclemodel.py` on the compiled programs; the energy proxy is the "
                 "toggles per MAC of the multiplier's gate-level netlist (Yosys 2-input gates), "
                 "counted by Verilator on real layer operand streams (`sim/energy.py`) — a "
                 "proxy, not a power estimate. Synthesis is not run per candidate: resources "
                 "add synthesized core and multiplier numbers (`docs/explore.md`).")
    return lines


def write_report(directory, *, fmt: str = "md", out=None) -> Path:
    """Write ``report.md`` (+ PNGs) or ``report.html`` (PNGs inlined) into ``directory``.

    ``out``: another Markdown path; the PNGs are then copied beside it, named
    ``<out stem>_<png>``, and the links follow.
    """
    if fmt not in ("md", "html"):
        raise ValueError(f"fmt must be md or html, not {fmt!r}")
    d = Path(directory)
    src = d / "explore.json"
    if not src.is_file():
        raise FileNotFoundError(f"{src} not found: run `mixpe explore --out {d}` first")
    summary = json.loads(src.read_text())
    figs = _pareto_plots(summary, d) + _heatmap(summary, d)
    body = _tables(summary)
    if fmt == "md":
        path = Path(out) if out else d / "report.md"
        text = ["# Design-space exploration report", ""]
        if out:
            text += [f"Written by `mixpe report {d}` (do not edit).", ""]
        for title, name in figs:
            link = name
            if out:
                import shutil
                link = f"{path.stem}_{name}"
                shutil.copyfile(d / name, path.parent / link)
            text += [f"### {title}", "", f"![{title}]({link})", ""]
        if out:  # the chosen quant TOMLs beside the report, links rewritten
            import shutil
            cdir = path.parent / f"{path.stem}_configs"
            if cdir.exists():
                shutil.rmtree(cdir)
            shutil.copytree(d / "configs", cdir)
            body = [line.replace("`configs/", f"`{cdir.name}/") for line in body]
        text += body
        content = "\n".join(text) + "\n"
    else:
        parts = ["<!doctype html><html><head><meta charset='utf-8'><title>mixpe explore"
                 "</title><style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
                 "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
                 "</style></head><body><h1>Design-space exploration report</h1>"]
        for title, name in figs:
            b64 = base64.b64encode((d / name).read_bytes()).decode()
            parts.append(f"<h3>{html.escape(title)}</h3><img src='data:image/png;base64,{b64}'>")
        parts.append("<pre>" + html.escape("\n".join(body)) + "</pre></body></html>")
        path = d / "report.html"
        content = "\n".join(parts)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
