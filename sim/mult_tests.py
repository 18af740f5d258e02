"""Generic cocotb testbench for any multiplier Component, checked against its sw table.

The DUT is the *batch top* that :mod:`mixpe.sim.runner` writes around the generated Verilog of
one multiplier: ``lanes`` instances side by side, lane ``i`` reading its operand codes from
``a[i*wa +: a_bits]`` / ``b[i*wb +: b_bits]`` and driving its product, sign-extended, on
``p[i*wp +: wp]`` (``wa``, ``wb``, ``wp`` are 8, 16, 32 or 64), so that one write/read per
clock moves a whole vector of operand pairs as little-endian integer arrays. A clocked unit
(manifest ``clock``) gets a clock and a reset, its ``table_inputs`` held (e.g. ``load=1``),
and its products are read ``latency`` clock periods after each write.

Inputs (environment, set by the runner):

``MIXPE_MANIFEST``
    the manifest written by :func:`mixpe.hw.generate.generate`, whose ``extra.batch`` holds the
    batch geometry (``top``, ``lanes``, ``wa``, ``wb``, ``wp``, ``static``);
``MIXPE_SIM_MODE``
    ``exhaustive`` (every operand pair) or ``random`` (corner cases plus random pairs);
``MIXPE_SIM_COUNT``, ``MIXPE_SIM_SEED``
    the number of random pairs and the seed;
``MIXPE_SIM_RESULT``
    where to write the JSON result: ``matched``, ``total`` and the first ``failures``
    (operand codes and values, expected, got);
``MIXPE_SIM_VECTORS`` (optional)
    an ``.npz`` with the vectors already computed by :func:`reference_vectors` (arrays ``a``,
    ``b``, ``expected``, ``a_value``, ``b_value``).

The reference is ``config.table()`` (or ``mul_codes`` when the operands are too wide for a
table), the config being rebuilt from the spec in the manifest, so the RTL is compared with
exactly the object the emulator uses. The runner computes it in its own process and hands it
over as ``MIXPE_SIM_VECTORS``, which spares the simulator process importing torch (seconds);
without that variable the testbench computes it itself.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

__all__ = [
    "ENV_MANIFEST",
    "ENV_MODE",
    "ENV_COUNT",
    "ENV_SEED",
    "ENV_RESULT",
    "ENV_VECTORS",
    "MAX_EXHAUSTIVE_BITS",
    "code_values",
    "corner_codes",
    "operand_vectors",
    "expected_products",
    "reference_vectors",
    "mult_vectors",
]

ENV_MANIFEST = "MIXPE_MANIFEST"
ENV_MODE = "MIXPE_SIM_MODE"
ENV_COUNT = "MIXPE_SIM_COUNT"
ENV_SEED = "MIXPE_SIM_SEED"
ENV_RESULT = "MIXPE_SIM_RESULT"
ENV_VECTORS = "MIXPE_SIM_VECTORS"

#: ``exhaustive`` is refused above this many operand bits in total (2^20 pairs).
MAX_EXHAUSTIVE_BITS = 20
#: Failures listed in the result.
MAX_FAILURES = 10
#: Clock period of clocked units (ns).
PERIOD_NS = 10


def code_values(fmt, codes) -> np.ndarray:
    """Values of operand ``codes`` in format ``fmt`` (an ``OperandFormat`` or a number format)."""
    import torch

    codes = torch.as_tensor(np.asarray(codes, dtype=np.int64))
    if hasattr(fmt, "value"):  # sw.formats number format: decode() gives (m, e)
        return fmt.value(codes).numpy()
    return fmt.decode(codes).numpy()


def corner_codes(fmt) -> np.ndarray:
    """Codes of the corner values of an operand format.

    The extremes and their neighbours, zero (every code of it, e.g. sign-magnitude −0) and the
    values next to zero. Formats of up to 16 bits are read from their value table, wider ones
    (two's complement or unsigned) from their range.
    """
    if fmt.bits <= 16:
        vals = code_values(fmt, np.arange(1 << fmt.bits))
        order = np.argsort(vals, kind="stable")
        pick = set(order[:2].tolist()) | set(order[-2:].tolist())
        pick |= set(np.flatnonzero(vals == 0).tolist())
        pos, neg = np.flatnonzero(vals > 0), np.flatnonzero(vals < 0)
        if len(pos):
            pick |= set(pos[vals[pos] == vals[pos].min()].tolist()[:1])
        if len(neg):
            pick |= set(neg[vals[neg] == vals[neg].max()].tolist()[:1])
        return np.array(sorted(pick), dtype=np.int64)
    lo, hi = fmt.range
    codes = set()
    for v in {lo, lo + 1, -1, 0, 1, hi - 1, hi}:
        if lo <= v <= hi:
            codes.add(int(fmt.encode(v)))
    return np.array(sorted(codes), dtype=np.int64)


def operand_vectors(cfg, mode: str = "exhaustive", count: int = 0, seed: int = 0):
    """Operand codes ``(a, b)`` (int64 arrays of equal length) for one run.

    ``exhaustive``: every pair, ``b`` major (``a`` varies fastest). ``random``: the cross
    product of the corner codes of both operands, then ``count`` uniform random pairs.
    """
    na, nb = cfg.a_format.bits, cfg.b_format.bits
    if mode == "exhaustive":
        if na + nb > MAX_EXHAUSTIVE_BITS:
            raise ValueError(
                f"{cfg.spec}: exhaustive simulation of {na}+{nb} operand bits is too large "
                f"(limit {MAX_EXHAUSTIVE_BITS}); use random mode"
            )
        b, a = np.meshgrid(np.arange(1 << nb), np.arange(1 << na), indexing="ij")
        return a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    if mode == "random":
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"random vector count must be a non-negative integer, not {count!r}")
        ca, cb = corner_codes(cfg.a_format), corner_codes(cfg.b_format)
        a0, b0 = (x.ravel() for x in np.meshgrid(ca, cb, indexing="ij"))
        rng = np.random.default_rng(seed)
        a1 = rng.integers(0, 1 << na, size=count, dtype=np.uint64).astype(np.int64)
        b1 = rng.integers(0, 1 << nb, size=count, dtype=np.uint64).astype(np.int64)
        return np.concatenate([a0, a1]), np.concatenate([b0, b1])
    raise ValueError(f"simulation mode must be 'exhaustive' or 'random', not {mode!r}")


def expected_products(cfg, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The sw products of operand codes ``a`` and ``b`` (int64)."""
    import torch

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    if cfg.has_table:
        return cfg.table()[ta, tb].numpy()
    return cfg.mul_codes(ta, tb).numpy()


def reference_vectors(cfg, mode: str = "exhaustive", count: int = 0, seed: int = 0) -> dict:
    """Operand codes, their values and the sw products of one run, as numpy arrays."""
    a, b = operand_vectors(cfg, mode, count, seed)
    return {
        "a": a,
        "b": b,
        "expected": expected_products(cfg, a, b),
        "a_value": code_values(cfg.a_format, a),
        "b_value": code_values(cfg.b_format, b),
    }


def _pack(codes: np.ndarray, width: int) -> int:
    return int.from_bytes(codes.astype(f"<u{width // 8}").tobytes(), "little")


def _unpack(value: int, lanes: int, width: int, signed: bool) -> np.ndarray:
    raw = value.to_bytes(lanes * width // 8, "little")
    return np.frombuffer(raw, dtype=f"<{'i' if signed else 'u'}{width // 8}").astype(np.int64)


def _failures(vec, got, limit=MAX_FAILURES):
    exp = vec["expected"]
    return [
        {
            "a_code": int(vec["a"][i]), "b_code": int(vec["b"][i]),
            "a": int(vec["a_value"][i]), "b": int(vec["b_value"][i]),
            "expected": int(exp[i]), "got": int(got[i]),
        }
        for i in np.flatnonzero(exp != got)[:limit]
    ]


def _load_manifest(path) -> dict:
    from pathlib import Path

    path = Path(path)
    return json.loads((path / "manifest.json" if path.is_dir() else path).read_text())


def _reference(manifest, mode, count, seed) -> dict:
    path = os.environ.get(ENV_VECTORS)
    if path:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from mixpe.hw.generate import config_from_manifest

    return reference_vectors(config_from_manifest(manifest), mode, count, seed)


try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, RisingEdge, Timer
except ImportError:  # pragma: no cover - the helpers above work without cocotb
    cocotb = None

if cocotb is not None:

    @cocotb.test()
    async def mult_vectors(dut):
        """Drive every vector of the run through the batch top and compare with the sw model."""
        t0 = time.perf_counter()
        manifest = _load_manifest(os.environ[ENV_MANIFEST])
        spec = manifest["config"]["spec"]
        batch = manifest["extra"]["batch"]
        lanes, wa, wb, wp = batch["lanes"], batch["wa"], batch["wb"], batch["wp"]
        mode = os.environ.get(ENV_MODE, "exhaustive")
        count = int(os.environ.get(ENV_COUNT, "0"))
        seed = int(os.environ.get(ENV_SEED, "0"))
        vec = _reference(manifest, mode, count, seed)
        a, b, exp = vec["a"], vec["b"], vec["expected"]
        total = len(a)
        pad = (-total) % lanes
        a_in = np.concatenate([a, np.zeros(pad, np.int64)])
        b_in = np.concatenate([b, np.zeros(pad, np.int64)])
        got = np.empty(total + pad, dtype=np.int64)

        for name, value in batch.get("static", {}).items():
            getattr(dut, name).value = value
        latency = manifest["latency"]
        # Combinational: 1 ns per batch. Clocked: operands are written 2 ns after a rising
        # edge and the products read max(latency, 1) periods later, 2 ns after the
        # latency-th rising edge: one timer per batch, not one trigger per clock edge.
        step = 1
        if manifest.get("clock") is not None:
            Clock(dut.clk, PERIOD_NS, unit="ns").start()
            if manifest.get("reset"):
                dut.rst.value = 1
                await ClockCycles(dut.clk, 2)
                dut.rst.value = 0
            await RisingEdge(dut.clk)
            await Timer(2, unit="ns")
            step = max(latency, 1) * PERIOD_NS
        t_setup = time.perf_counter() - t0

        t1 = time.perf_counter()
        for start in range(0, total + pad, lanes):
            sl = slice(start, start + lanes)
            dut.a.value = _pack(a_in[sl], wa)
            dut.b.value = _pack(b_in[sl], wb)
            await Timer(step, unit="ns")
            got[sl] = _unpack(dut.p.value.to_unsigned(), lanes, wp, batch["signed"])
        t_sim = time.perf_counter() - t1
        got = got[:total]

        matched = int((got == exp).sum())
        failures = _failures(vec, got)
        result = {
            "spec": spec,
            "mode": mode,
            "seed": seed,
            "matched": matched,
            "total": total,
            "failures": failures,
            "lanes": lanes,
            "setup_s": round(t_setup, 3),
            "drive_s": round(t_sim, 3),
        }
        out = os.environ.get(ENV_RESULT)
        if out:
            with open(out, "w") as f:
                json.dump(result, f, indent=2)
        dut._log.info("%s: matched %d / %d vectors (%.2f s driving)", spec, matched, total, t_sim)
        if failures:
            f = failures[0]
            raise AssertionError(
                f"{spec}: matched {matched} / {total} vectors; first failure: "
                f"a={f['a']} (code {f['a_code']}), b={f['b']} (code {f['b_code']}), "
                f"expected {f['expected']}, got {f['got']}"
            )
