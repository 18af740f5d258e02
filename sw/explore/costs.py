"""Hardware objectives of a config: array-level resources and fit, cycles, energy proxy.

**Resources** (:class:`CostModel`) combine two synthesized sources, both produced by the
project's benches (read as data, so ``sw`` never imports the gateware):

* the core of the board's preset as Yosys counted it (``bench/results/core_fit.md``, its
  embedded ``core_fit.json``): LUT4, FF, DSP, BRAM of the int8 exact array plus controller and
  memories; on ECP5 the exact PE multipliers map to DSP blocks (one per PE);
* the PE library (``bench/results/pe_cost.md``): LUT4 / carry / FF of every multiplier alone,
  synthesized without DSP inference.

For a config whose distinct multipliers are ``S`` on an ``R×C`` array (``P = R·C`` PEs)::

    LUT  = LUT_core + P · Σ_{v∈S, v≠exact} LUT_v + P · (|S|−1) · 16          (variant muxes)
    FF   = FF_core + C · ceil(log2 |S|)                                         (sel registers)
    DSP  = DSP_core − (P if exact ∉ S else 0)                                   (no DSP multiplier)
    BRAM = BRAM_core

``S`` are the array variants (multiplier × weight format): a plain multiplier takes its
PE-library count; a decoded variant (PoT / flint / float weights: a weight decoder and the
multiplier on the mantissas, ``'<mult> a=<fmt> b=<fmt>'``) its own synthesized count from
``bench/results/explore_variants.json`` (missing entries are synthesized by ``mixpe explore``
as tasks). The mux term is an estimate (a |S|:1 mux of a 16-bit product costs about (|S|−1)
LUT4 per bit); everything else is synthesized data. ``fits`` compares against the device
totals and requires ``|S| ≤ 1 + MAX_VARIANTS``.

**Cycles** come from :func:`mixpe.sw.cyclemodel.predict_cycles` on the programs that
:func:`mixpe.sw.compiler.compile_conv2d` / ``compile_gemm`` emit for one image, with the
config's per-filter multiplier choice as the variant map (column selects change tiling and
PRELOAD beats).

**Energy proxy** (:class:`EnergyTable`): toggle counts per MAC measured by ``sim/energy.py``
in Verilator on real layer operand streams (see there), looked up per (layer, weight format,
multiplier), weighted by the filters' MAC counts and summed over layers. It is a proxy of
dynamic power, not a power estimate.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from functools import lru_cache
from pathlib import Path

import torch

from ..core_config import CORE_PRESETS, MAX_VARIANTS
from ..mult import multiplier

__all__ = ["BOARDS", "MUX_BITS", "parse_variants", "CostModel", "EnergyTable", "parse_pe_cost",
           "parse_core_fit", "repo_root", "Cycles", "core_config_for"]

#: Board name → (core_fit target, core preset).
BOARDS = {
    "ulx3s-85f": ("ecp5", "ulx3s-8x8"),
    "ice40-up5k": ("ice40", "ice40-4x4"),
}


#: Bits of the product mux per extra variant (one LUT4 per bit per extra input, estimate).
MUX_BITS = 16


def parse_variants(path) -> dict:
    """``{variant spec: {target: {"lut4", ...}}}`` from ``explore_variants.json``."""
    d = json.loads(Path(path).read_text())
    return d.get("variants", d)


def repo_root() -> Path:
    """The source checkout (``sw/explore`` → repository root)."""
    return Path(__file__).resolve().parents[2]


def parse_pe_cost(path) -> dict:
    """``{spec: {"ice40": {...}, "ecp5": {...}}}`` from the Markdown table of ``pe_cost.md``.

    Rows of multipliers only (``PE`` rows and unsynthesized ``n/a`` entries are skipped);
    each target holds ``lut4, carry, ff, dsp`` ints.
    """
    text = Path(path).read_text()
    out: dict = {}
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "config":
            header = cells
            continue
        if header is None or set(cells[0]) <= set("-: "):
            continue
        m = re.match(r"^`([^`]+)`", cells[0])
        if not m or cells[0].startswith("PE"):
            continue
        spec = m.group(1)
        # columns: config fam sgn LUT carry FF DSP Fmax ×exact | LUT carry FF DSP Fmax ×exact …
        try:
            ice = [int(cells[i]) for i in (3, 4, 5, 6)]
            ecp = [int(cells[i]) for i in (9, 10, 11, 12)]
        except (ValueError, IndexError):
            continue
        keys = ("lut4", "carry", "ff", "dsp")
        out[multiplier(spec).spec] = {"ice40": dict(zip(keys, ice)), "ecp5": dict(zip(keys, ecp))}
    if not out:
        raise ValueError(f"{path}: no multiplier rows found in the PE cost table")
    return out


def parse_core_fit(path) -> dict:
    """The ``core_fit.json`` block embedded in ``core_fit.md``."""
    text = Path(path).read_text()
    m = re.search(r"<!-- core_fit.json\s*(\{.*\})\s*-->", text, re.S)
    if not m:
        raise ValueError(f"{path}: no embedded core_fit.json block")
    return json.loads(m.group(1))


class CostModel:
    """Array-level resources of a config on a board (see the module doc for the formula).

    Parameters
    ----------
    board : str
        One of :data:`BOARDS`.
    pe_cost, core_fit : path, optional
        The bench result files (default: ``bench/results/`` of the checkout).
    """

    def __init__(self, board: str = "ulx3s-85f", *, pe_cost=None, core_fit=None,
                 variants=None):
        if board not in BOARDS:
            raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {board!r}")
        self.board = board
        self.target, self.preset = BOARDS[board]
        res = repo_root() / "bench" / "results"
        self.pe = parse_pe_cost(pe_cost or res / "pe_cost.md")
        fit = parse_core_fit(core_fit or res / "core_fit.md")
        if self.target not in fit:
            raise ValueError(f"core_fit: no entry for target {self.target}")
        self.core = {k: int(v) for k, v in fit[self.target]["resources"].items()}
        self.available = {k: int(v) for k, v in fit[self.target]["available"].items()}
        self.core_cfg = CORE_PRESETS[self.preset]
        self.pes = self.core_cfg.array.rows * self.core_cfg.array.cols
        vpath = Path(variants) if variants else res / "explore_variants.json"
        self.variants = parse_variants(vpath) if vpath.is_file() else {}

    def known(self, spec: str) -> bool:
        return multiplier(spec).spec in self.pe

    def variant_lut(self, v: str) -> int:
        """LUT4 of one variant: a plain multiplier from the PE library (``exact``: 0, it is
        in the core's DSP blocks), a decoded variant ``'<mult> a=.. b=..'`` from the
        synthesized variant table (decoder + multiplier on the mantissas, no DSP)."""
        if " " in v:
            e = self.variants.get(v, {}).get(self.target)
            if e is None:
                raise ValueError(f"variant {v!r}: no synthesized cost on {self.target} "
                                 "(explore_variants.json; `mixpe explore` synthesizes missing "
                                 "ones as tasks)")
            return int(e["lut4"])
        m = multiplier(v).spec
        if m == "exact":
            return 0
        if m not in self.pe:
            raise ValueError(f"mult: no synthesized cost for {m!r}; allowed: "
                             f"{', '.join(sorted(self.pe))}")
        return int(self.pe[m][self.target]["lut4"])

    def resources(self, variant_set) -> dict:
        """``{"lut4", "ff", "dsp", "bram", "fits", "variants", "util"}`` for the distinct
        array variants (:attr:`~mixpe.sw.explore.space.Config.variant_set`)."""
        S = list(variant_set)
        lut = self.core["lut4"]
        ff = self.core["ff"]
        dsp = self.core.get("dsp", 0)
        for v in S:
            if v != "exact":
                lut += self.pes * self.variant_lut(v)
        if len(S) > 1:
            lut += self.pes * (len(S) - 1) * MUX_BITS
            ff += self.core_cfg.array.cols * math.ceil(math.log2(len(S)))
        if "exact" not in S:
            dsp -= min(self.pes, dsp)
        r = {"lut4": lut, "ff": ff, "dsp": dsp, "bram": self.core.get("bram", 0)}
        util = {k: r[k] / self.available[k] for k in r if self.available.get(k)}
        r["variants"] = len(S)
        r["fits"] = all(u <= 1.0 for u in util.values()) and len(S) <= 1 + MAX_VARIANTS
        r["util"] = util
        return r


def core_config_for(core_cfg, variant_set):
    """The board preset's :class:`~mixpe.sw.core_config.CoreConfig` with the config's array
    variants: variant 0 (the base PE) = ``variant_set[0]``, ``ArrayConfig.variants`` = the
    rest (``mixpe build --config`` takes its JSON)."""
    base = variant_set[0].split()
    pe = dataclasses.replace(core_cfg.array.pe, mult=base[0],
                             a_format=base[1][2:] if len(base) > 1 else None,
                             b_format=base[2][2:] if len(base) > 1 else None)
    return dataclasses.replace(core_cfg, array=dataclasses.replace(
        core_cfg.array, pe=pe, variants=tuple(variant_set[1:])))


class Cycles:
    """Cycles of one image through the layers on the board's core (cached per layer plan)."""

    def __init__(self, core_cfg, layers):
        self.core_cfg = core_cfg
        self.layers = layers
        self._cache: dict = {}

    def layer(self, i: int, mult_set: tuple, vmap: tuple) -> int:
        """Cycles of layer ``i`` on an array with variants ``mult_set`` (variant 0 = the base
        PE; ``'<mult> a=<fmt> b=<fmt>'`` for decoded variants) and the per-filter (or
        per-kernel) variant indices ``vmap``."""
        from ..compiler import compile_conv2d, compile_gemm
        from ..cyclemodel import predict_cycles

        key = (i, tuple(mult_set), vmap)
        if key in self._cache:
            return self._cache[key]
        L = self.layers[i]
        cfg = core_config_for(self.core_cfg, mult_set)
        vm = torch.tensor(vmap, dtype=torch.long) if len(mult_set) > 1 else None
        # vmap: a variant per filter, or per kernel ([OC][C/groups]) when any filter is mixed
        if L.kind == "conv":
            x = torch.zeros((1, *L.in_shape), dtype=torch.long)
            w = torch.zeros(tuple(L.weight.shape), dtype=torch.long)
            prog = compile_conv2d(x, w, cfg, stride=L.stride, padding=L.padding, groups=L.groups,
                                  variant_map=vm)
        else:
            a = torch.zeros((1, L.weight.shape[1]), dtype=torch.long)
            b = torch.zeros((L.weight.shape[1], L.weight.shape[0]), dtype=torch.long)
            prog = compile_gemm(a, b, cfg, variant_map=vm)
        c = int(predict_cycles(prog, cfg)["total"])
        self._cache[key] = c
        return c

    def total(self, config) -> int:
        S = config.variant_set
        idx = {v: k for k, v in enumerate(S)}
        total = 0
        for i, lq in enumerate(config.layers):
            if lq.per_kernel:
                cg = int(self.layers[i].weight.shape[1])
                vmap = tuple(tuple(idx[v] for v in row)
                             for row in config.filter_variants(i, cg))
            else:
                vmap = tuple(idx[v] for v in config.filter_variants(i))
            total += self.layer(i, S, vmap)
        return total


class EnergyTable:
    """Toggles per MAC per (layer, weight format, multiplier), as ``sim/energy.py`` measured.

    JSON layout: ``{"model": ..., "unit": ..., "entries": {layer: {w_format: {mult: t}}}}``.
    """

    def __init__(self, data: dict):
        if "entries" not in data:
            raise ValueError("energy table: missing 'entries'")
        self.data = data
        self.entries = data["entries"]

    @classmethod
    def load(cls, path) -> "EnergyTable":
        return cls(json.loads(Path(path).read_text()))

    def per_mac(self, layer: str, w_format: str, mult: str) -> float:
        try:
            return float(self.entries[layer][w_format][mult])
        except KeyError:
            raise ValueError(f"energy table has no entry for layer={layer!r}, "
                             f"w_format={w_format!r}, mult={mult!r}") from None

    def total(self, config, layers) -> float:
        """Σ_layers Σ_filters (MACs of the filter) · toggles/MAC(layer, format, mult) (per
        kernel: each kernel has MACs/C of its filter)."""
        e = 0.0
        for L, lq in zip(layers, config.layers):
            per_filter = L.macs / L.channels
            for wf, entry in zip(lq.w_formats, lq.mults):
                specs = (entry,) if isinstance(entry, str) else entry
                for m in specs:  # per kernel: the filter's MACs split evenly over its kernels
                    e += per_filter / len(specs) * self.per_mac(L.name, wf, m)
        return e


@lru_cache(maxsize=8)
def _cost_model(board: str) -> CostModel:
    return CostModel(board)
