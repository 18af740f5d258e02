"""cocotb testbench: exhaustive per-mode proof of a composable Ax-BxP unit (generated Verilog).

The generic :mod:`mixpe.sim.mult_tests` drives a multiplier under its ``table_inputs`` only
(``q = n``); this testbench drives the runtime ``mode`` input through every precision ``q`` of
the config and proves, for each one, that **every lane sees every pair of ``q``-bit operand
codes**: a round is one permutation of the ``2^(2q)`` code pairs per lane (independent random
permutations, so the lanes' neighbours vary), and a mode runs ``rounds(q)`` rounds (one round at
``q = n``, i.e. all 65,536 pairs of an 8-bit unit). ``out=dot`` compares ``p`` with the sw twin's
:meth:`~mixpe.sw.mult.axbxp.AxBxPMultiplier.mul_dot`, ``out=lanes`` compares every ``2q``-bit
lane of ``lanes`` with :meth:`~mixpe.sw.mult.axbxp.AxBxPMultiplier.mul_lanes` (and ``p`` at
``q = n``). Lane packing: lane ``t`` is bits ``[q·t, q·t + q)`` of ``a``/``b``.

The DUT is a batch top (:func:`batch_verilog`) of ``copies`` instances of the generated unit
sharing ``mode``; copy ``i`` reads ``a[i·wa +: n²/k]`` / ``b[i·wa +: n²/k]`` and drives
``p[i·wp +: wp]`` (sign-extended) and, for ``out=lanes``, ``lanes[i·wl +: wl]``, the widths
rounded up to whole bytes, so that one write/read moves ``copies`` vectors as byte strings.

Inputs (environment, set by ``sim/test_axbxp.py``):

``MIXPE_MANIFEST``
    the manifest of the generated unit (:func:`mixpe.hw.generate.generate`); its
    ``extra.batch`` holds the batch geometry (``top``, ``copies``, ``wa``, ``wp``, ``wl``);
``MIXPE_AXBXP_VECTORS``
    vector budget per mode below ``q = n`` (rounds are ``budget // (pairs·lanes)``, 1 … 16);
``MIXPE_SIM_SEED``
    permutation seed;
``MIXPE_SIM_RESULT``
    JSON result path: per mode ``q``, ``vectors``, ``rounds``, ``matched``, first failures.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

__all__ = ["ENV_VECTORS", "rounds", "mode_vectors", "expected", "batch_verilog",
           "composable_modes"]

ENV_MANIFEST = "MIXPE_MANIFEST"
ENV_VECTORS = "MIXPE_AXBXP_VECTORS"
ENV_SEED = "MIXPE_SIM_SEED"
ENV_RESULT = "MIXPE_SIM_RESULT"
MAX_FAILURES = 5


def rounds(cfg, q: int, budget: int) -> int:
    """Permutation rounds at precision ``q``: 1 at ``q = n``, else up to 16 within ``budget``."""
    if q == cfg.n:
        return 1
    per_round = (1 << (2 * q)) * cfg.lanes(q)
    return max(1, min(16, budget // per_round))


def mode_vectors(cfg, q: int, n_rounds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Lane codes ``[vectors, lanes]`` of ``a`` and ``b``: per round and lane a permutation of
    all ``2^(2q)`` code pairs, so every lane sees every pair ``n_rounds`` times."""
    pairs = 1 << (2 * q)
    lanes = cfg.lanes(q)
    rng = np.random.default_rng(seed)
    idx = np.empty((n_rounds * pairs, lanes), dtype=np.int64)
    for r in range(n_rounds):
        for t in range(lanes):
            perm = np.arange(pairs) if (r == 0 and t == 0) else rng.permutation(pairs)
            idx[r * pairs : (r + 1) * pairs, t] = perm
    return idx & ((1 << q) - 1), idx >> q


def expected(cfg, q: int, ca: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """The sw twin's result for lane codes: the dot ``[vectors]`` or the lane products
    ``[vectors, lanes]``."""
    import torch

    fa, fb = cfg.lane_formats(q)
    va, vb = fa.decode(torch.from_numpy(ca)), fb.decode(torch.from_numpy(cb))
    if cfg.out == "dot":
        return cfg.mul_dot(va, vb, q).numpy()
    return cfg.mul_lanes(va, vb, q).numpy()


def _byte_width(bits: int) -> int:
    return -(-bits // 8) * 8


def batch_verilog(manifest: dict, copies: int) -> tuple[str, dict]:
    """Verilog of a batch top of ``copies`` instances of the unit of ``manifest``; its geometry."""
    ports = {p["name"]: p for p in manifest["ports"]}
    unit = manifest["top"]
    top = f"{unit}_batch"
    na, npw = ports["a"]["width"], ports["p"]["width"]
    wa, wp = _byte_width(na), _byte_width(npw)
    nl = ports["lanes"]["width"] if "lanes" in ports else 0
    wl = _byte_width(nl) if nl else 0
    nm = ports["mode"]["width"] if "mode" in ports else 0
    decl = [f"  input wire [{copies * wa - 1}:0] a", f"  input wire [{copies * wa - 1}:0] b",
            f"  input wire [{max(nm, 1) - 1}:0] mode", f"  output wire [{copies * wp - 1}:0] p"]
    if nl:
        decl.append(f"  output wire [{copies * wl - 1}:0] lanes")
    conns = [f"        .a(a[i*{wa} +: {na}])", f"        .b(b[i*{wa} +: {na}])",
             "        .p(p_i)"]
    if nm:
        conns.append("        .mode(mode)")
    if nl:
        conns.append(f"        .lanes(lanes[i*{wl} +: {nl}])")
    lines = [f"// Batch top: {copies} copies of {unit} sharing mode (written by sim/test_axbxp.py)",
             f"module {top} (", ",\n".join(decl), ");", "  genvar i;", "  generate",
             f"    for (i = 0; i < {copies}; i = i + 1) begin : copy",
             f"      wire [{npw - 1}:0] p_i;", f"      {unit} u (", ",\n".join(conns), "      );"]
    if wp > npw:
        lines.append(f"      assign p[i*{wp} +: {wp}] = {{{{{wp - npw}{{p_i[{npw - 1}]}}}}, p_i}};")
    else:
        lines.append(f"      assign p[i*{wp} +: {wp}] = p_i;")
    if nl and wl > nl:
        lines.append(f"      assign lanes[i*{wl} + {nl} +: {wl - nl}] = {wl - nl}'d0;")
    lines += ["    end", "  endgenerate", "endmodule", ""]
    return "\n".join(lines), {"top": top, "copies": copies, "wa": wa, "wp": wp, "wl": wl}


def _pack_rows(rows: np.ndarray, q: int, width: int) -> int:
    """Lane codes ``[copies, lanes]`` → one integer, copy ``i`` at bits ``[i·width, …)``."""
    if width in (8, 16, 32, 64):
        shifts = (np.arange(rows.shape[1], dtype=np.uint64) * np.uint64(q))
        words = np.bitwise_or.reduce(rows.astype(np.uint64) << shifts, axis=1)
        return int.from_bytes(words.astype(f"<u{width // 8}").tobytes(), "little")
    out = bytearray()
    for row in rows:
        v = 0
        for t in range(len(row) - 1, -1, -1):
            v = (v << q) | int(row[t])
        out += v.to_bytes(width // 8, "little")
    return int.from_bytes(bytes(out), "little")


def _unpack(value: int, copies: int, width: int) -> list[int]:
    raw = value.to_bytes(copies * width // 8, "little")
    step = width // 8
    return [int.from_bytes(raw[i * step : (i + 1) * step], "little") for i in range(copies)]


def _load():
    from mixpe.hw.generate import config_from_manifest, load_manifest

    manifest = load_manifest(os.environ[ENV_MANIFEST])
    return manifest, config_from_manifest(manifest)


try:
    import cocotb
    from cocotb.triggers import Timer
except ImportError:  # pragma: no cover - the helpers above work without cocotb
    cocotb = None

if cocotb is not None:

    @cocotb.test()
    async def composable_modes(dut):
        """Every precision, every lane, every operand pair, against the sw twin."""
        manifest, cfg = _load()
        batch = manifest["extra"]["batch"]
        budget = int(os.environ.get(ENV_VECTORS, "4096"))
        seed = int(os.environ.get(ENV_SEED, "0"))
        out_bits = next(p["width"] for p in manifest["ports"] if p["name"] == "p")
        report = {"spec": cfg.spec, "seed": seed, "modes": []}
        ok = True
        for mode, q in enumerate(cfg.precisions):
            t0 = time.perf_counter()
            n_rounds = rounds(cfg, q, budget)
            ca, cb = mode_vectors(cfg, q, n_rounds, seed + mode)
            exp = expected(cfg, q, ca, cb)
            mask = (1 << (2 * q)) - 1
            dut.mode.value = mode
            matched, failures = 0, []
            copies, wa, wp, wl = batch["copies"], batch["wa"], batch["wp"], batch["wl"]
            total = len(ca)
            for start in range(0, total, copies):
                sl = slice(start, min(start + copies, total))
                rows_a, rows_b = ca[sl], cb[sl]
                pad = copies - len(rows_a)
                if pad:
                    rows_a = np.concatenate([rows_a, np.zeros((pad, rows_a.shape[1]), np.int64)])
                    rows_b = np.concatenate([rows_b, np.zeros((pad, rows_b.shape[1]), np.int64)])
                dut.a.value = _pack_rows(rows_a, q, wa)
                dut.b.value = _pack_rows(rows_b, q, wa)
                await Timer(1, unit="ns")
                ps = _unpack(dut.p.value.to_unsigned(), copies, wp)
                ps = [v - (1 << wp) if v >> (wp - 1) else v for v in ps]
                if cfg.out == "lanes":
                    vecs = _unpack(dut.lanes.value.to_unsigned(), copies, wl)
                for j, i in enumerate(range(sl.start, sl.stop)):
                    if cfg.out == "dot":
                        got = ps[j]
                        good = got == int(exp[i])
                    else:
                        got = [(vecs[j] >> (2 * q * t)) & mask for t in range(exp.shape[1])]
                        good = got == [int(x) & mask for x in exp[i]]
                        if q == cfg.n:
                            good = good and ps[j] == int(exp[i][0])
                    if good:
                        matched += 1
                    elif len(failures) < MAX_FAILURES:
                        failures.append({"a": ca[i].tolist(), "b": cb[i].tolist(),
                                         "expected": np.asarray(exp[i]).tolist(), "got": got})
            ok = ok and matched == len(ca)
            report["modes"].append({
                "q": q, "lanes": cfg.lanes(q), "rounds": n_rounds, "vectors": len(ca),
                "pairs_per_lane": 1 << (2 * q), "matched": matched, "failures": failures,
                "seconds": round(time.perf_counter() - t0, 2)})
            dut._log.info("%s q=%d: matched %d / %d vectors (%d lanes, %d rounds)", cfg.spec, q,
                          matched, len(ca), cfg.lanes(q), n_rounds)
        report["out_bits"] = out_bits
        out = os.environ.get(ENV_RESULT)
        if out:
            with open(out, "w") as f:
                json.dump(report, f, indent=2)
        assert ok, json.dumps([m for m in report["modes"] if m["failures"]])[:2000]
