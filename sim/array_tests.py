"""GEMM scenarios for the systolic array, their bit-exact reference, and the cocotb testbench.

The first half is plain Python (torch + ``sw/``): :func:`ws_scenario` / :func:`os_scenario`
turn a random GEMM ``A[M, K] @ B[K, N]`` (+ bias, K split into passes that accumulate through
``d``) into the beats of :class:`mixpe.hw.array.SystolicArray` (``preload``, ``i_stream``) and
the expected ``o_stream`` beats, computed with :func:`mixpe.sw.emulate.matmul` (saturation
after every addition in k order, per-column multiplier variants) — or, for composable PEs,
with the PE-step dot products accumulated by ``sw.emulate.reference.accumulate``. The same
scenario drives the Amaranth testbench (``tests/test_hw_array.py``) and the cocotb testbench
below (``sim/test_array.py``, on the generated Verilog).

The cocotb half reads ``MIXPE_ARRAY_SCENARIO`` (a JSON file: the scenario plus the bit
layouts of the stream payloads, written by ``sim/test_array.py``), drives ``preload`` and
``i_stream`` with random valid gaps (honouring ``ready``), monitors ``o_stream`` with
``ready`` held high, compares every beat in order and writes ``MIXPE_SIM_RESULT``
(matched/total, cycles from the first accepted beat to the last output).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

__all__ = ["Scenario", "ws_scenario", "os_scenario", "predict_cycles", "pack", "unpack",
           "layout_fields", "member_multipliers", "pass_reference"]


@dataclasses.dataclass
class Scenario:
    """Beats for the array and the expected output beats, in order."""

    dataflow: str
    rows: int
    cols: int
    preload: list  # WS: {"b": [C], "sel": [C]?}
    beats: list  # i_stream payloads
    expected: list  # {"c": [C], "ovf": [C], "tag": int?}
    mode: int | None = None
    info: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


# -- reference --------------------------------------------------------------------------------

def member_multipliers(pe, variants=()):
    """The PE-level sw multiplier of each variant index (variant 0 = ``pe``)."""
    cfgs = [pe] + [dataclasses.replace(pe, mult=v) for v in variants]
    return [c.multiplier for c in cfgs]


def pass_reference(a_vals, b_vals, mults, sel, start, acc_bits, overflow):
    """One pass of non-composable PEs: ``start + A @ B`` column by column with the column's
    variant; returns ``(out [M, N], flags [M, N])`` (:func:`mixpe.sw.emulate.matmul`)."""
    import torch
    from mixpe.sw import emulate

    m, n = a_vals.shape[0], b_vals.shape[1]
    out = torch.zeros(m, n, dtype=torch.int64)
    flags = torch.zeros(m, n, dtype=torch.bool)
    for c in range(n):
        o, f = emulate.matmul(a_vals, b_vals[:, c:c + 1], mults[sel[c]], bias=start[:, c:c + 1],
                              acc_bits=acc_bits, overflow=overflow, return_overflow=True)
        out[:, c:c + 1], flags[:, c:c + 1] = o, f
    return out, flags


def _steps_reference(products, start, acc_bits, overflow):
    """``products`` ``[M, S, N]`` added step by step (the PE's addition order)."""
    import torch
    from mixpe.sw.emulate.reference import accumulate

    acc = start.clone()
    flags = torch.zeros(acc.shape, dtype=torch.bool)
    for s in range(products.shape[1]):
        acc = accumulate(acc, products[:, s, :], flags, acc_bits, overflow)
    return acc, flags


# -- operand generation ---------------------------------------------------------------------

def _codes_values(pe, rng, shape, side: str, mode):
    """Random port codes of one operand and their values (``[..., lanes]`` when composable)."""
    import torch

    if pe.composable:
        mult = pe.multiplier
        q = pe.modes[mode]
        lanes = mult.lanes(q)
        fa, fb = mult.lane_formats(q)
        fmt = fa if side == "a" else fb
        lane_codes = torch.randint(0, 1 << q, tuple(shape) + (lanes,), generator=rng)
        vals = fmt.decode(lane_codes)
        shifts = torch.arange(lanes, dtype=torch.int64) * q
        codes = (lane_codes << shifts).sum(-1)
        return codes, vals
    fmt = pe.multiplier.a_format if side == "a" else pe.multiplier.b_format
    codes = torch.randint(0, 1 << fmt.bits, tuple(shape), generator=rng)
    return codes, fmt.values()[codes]


def _dot_products(pe, a_vals, b_vals, mode):
    """``[M, S, N]``: the composable PE's per-step dot products of lane vectors
    ``a_vals [M, S, lanes]`` and ``b_vals [S, N, lanes]``."""
    q = pe.modes[mode]
    return pe.multiplier.mul_dot(a_vals[:, :, None, :], b_vals[None, :, :, :], q)


def _bias(rng, m, n, acc_bits, scale):
    import torch

    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    b = torch.randint(-scale, scale + 1, (m, n), generator=rng)
    return b.clamp(lo, hi)


def _tag(i, tag_bits):
    return i & ((1 << tag_bits) - 1) if tag_bits else None


# -- WS ---------------------------------------------------------------------------------------

def ws_scenario(pe, rows: int, cols: int, *, m: int, passes: int, variants=(), sel=None,
                mode=None, seed: int = 0, tag_bits: int = 0, bias_scale: int = 1000,
                check_full: bool = True) -> Scenario:
    """A weight-stationary GEMM: ``A[m, K] @ B[K, cols]`` with ``K = passes·rows`` PE steps.

    Pass ``t`` preloads weight rows ``k ∈ [t·rows, (t+1)·rows)`` (``k = R-1`` first) and streams
    the ``m`` rows with ``d`` = the accumulators after pass ``t-1`` (the bias for ``t = 0``),
    ``swap`` on its first row. Expected: every pass's output rows (the reference accumulators
    and the per-pass overflow flags). ``sel[c]``: the variant of column ``c`` (per pass the
    same). ``mode``: the precision of a composable PE (each PE step is a lane dot product).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    rnd = random.Random(seed)
    R, C = rows, cols
    nvar = 1 + len(variants)
    sel = list(sel) if sel is not None else [rnd.randrange(nvar) for _ in range(C)]
    if pe.composable and mode is None:
        mode = len(pe.modes) - 1
    steps = passes * R
    a_codes, a_vals = _codes_values(pe, g, (m, steps), "a", mode)
    b_codes, b_vals = _codes_values(pe, g, (steps, C), "b", mode)
    acc = _bias(g, m, C, pe.acc_bits, bias_scale)
    bias = acc.clone()
    mults = member_multipliers(pe, variants)
    preload, beats, expected = [], [], []
    beat = 0
    for t in range(passes):
        ks = slice(t * R, (t + 1) * R)
        if pe.composable:
            out, flags = _steps_reference(_dot_products(pe, a_vals[:, ks], b_vals[ks], mode),
                                          acc, pe.acc_bits, pe.overflow)
        else:
            out, flags = pass_reference(a_vals[:, ks], b_vals[ks], mults, sel, acc,
                                        pe.acc_bits, pe.overflow)
        for j in range(R):
            k = t * R + (R - 1 - j)
            w = {"b": [int(x) for x in b_codes[k]]}
            if len(variants):
                w["sel"] = list(sel)
            preload.append(w)
        for i in range(m):
            bt = {"a": [int(x) for x in a_codes[i, ks]], "d": [int(x) for x in acc[i]],
                  "swap": int(i == 0)}
            ex = {"c": [int(x) for x in out[i]], "ovf": [int(x) for x in flags[i]]}
            if tag_bits:
                bt["tag"] = ex["tag"] = _tag(beat, tag_bits)
            beats.append(bt)
            expected.append(ex)
            beat += 1
        acc = out
    if check_full and not pe.composable:  # the per-pass chain is the full k-order matmul
        full, _ = pass_reference(a_vals, b_vals, mults, sel, bias, pe.acc_bits, pe.overflow)
        assert torch.equal(full, acc), "reference: passes disagree with the full matmul"
    return Scenario("ws", R, C, preload, beats, expected, mode,
                    {"m": m, "passes": passes, "sel": sel, "steps": steps})


# -- OS ---------------------------------------------------------------------------------------

def os_scenario(pe, rows: int, cols: int, *, m_tiles: int, k: int, passes: int = 1,
                variants=(), sel=None, mode=None, seed: int = 0, tag_bits: int = 0,
                bias_scale: int = 1000) -> Scenario:
    """An output-stationary GEMM: ``A[m_tiles·rows, passes·k] @ B[passes·k, cols]``.

    For every M tile and every pass (a chunk of ``k`` steps): ``rows`` shift beats (loading
    the accumulators after the previous pass, bias first, in row order ``R-1 … 0``, and
    returning the previous tile's rows in the same order), then ``k`` compute beats; finally
    ``rows`` shift beats with ``d = 0``. The first ``rows`` outputs are the reset state (0).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    rnd = random.Random(seed)
    R, C = rows, cols
    nvar = 1 + len(variants)
    sel = list(sel) if sel is not None else [rnd.randrange(nvar) for _ in range(C)]
    if pe.composable and mode is None:
        mode = len(pe.modes) - 1
    M, K = m_tiles * R, passes * k
    a_codes, a_vals = _codes_values(pe, g, (M, K), "a", mode)
    b_codes, b_vals = _codes_values(pe, g, (K, C), "b", mode)
    bias = _bias(g, M, C, pe.acc_bits, bias_scale)
    mults = member_multipliers(pe, variants)
    beats, expected = [], []
    held = (torch.zeros(R, C, dtype=torch.int64), torch.zeros(R, C, dtype=torch.bool))
    beat = 0

    def shift_group(d_rows):
        nonlocal beat
        for j in range(R):
            r = R - 1 - j
            bt = {"a": [0] * R, "b": [0] * C, "d": [int(x) for x in d_rows[r]], "shift": 1}
            if len(variants):
                bt["sel"] = [0] * C
            ex = {"c": [int(x) for x in held[0][r]], "ovf": [int(x) for x in held[1][r]]}
            if tag_bits:
                bt["tag"] = ex["tag"] = _tag(beat, tag_bits)
            beats.append(bt)
            expected.append(ex)
            beat += 1

    for mt in range(m_tiles):
        rs = slice(mt * R, (mt + 1) * R)
        acc = bias[rs]
        for t in range(passes):
            ks = slice(t * k, (t + 1) * k)
            if pe.composable:
                out, flags = _steps_reference(
                    _dot_products(pe, a_vals[rs, ks], b_vals[ks], mode), acc, pe.acc_bits,
                    pe.overflow)
            else:
                out, flags = pass_reference(a_vals[rs, ks], b_vals[ks], mults, sel, acc,
                                            pe.acc_bits, pe.overflow)
            shift_group(acc)
            for kk in range(t * k, (t + 1) * k):
                bt = {"a": [int(x) for x in a_codes[rs, kk]], "b": [int(x) for x in b_codes[kk]],
                      "d": [0] * C, "shift": 0}
                if len(variants):
                    bt["sel"] = list(sel)
                if tag_bits:
                    bt["tag"] = _tag(beat, tag_bits)
                beats.append(bt)
                beat += 1
            held = (out, flags)
            acc = out
    shift_group(torch.zeros(R, C, dtype=torch.int64))
    return Scenario("os", R, C, [], beats, expected, mode,
                    {"m_tiles": m_tiles, "k": k, "passes": passes, "sel": sel})


# -- pacing model -----------------------------------------------------------------------------

def predict_cycles(sc: Scenario, timing: dict) -> dict:
    """Cycle-accurate model of the array's ready logic for gap-free input streams.

    Every stream offers its next beat in every cycle; the rules of the timing contract
    (:func:`mixpe.hw.array.timing`) decide acceptance. Returns ``first`` (cycle of the first
    accepted ``i_stream`` beat), ``accepts`` (cycle of every ``i_stream`` beat), ``outputs``
    (cycle of every ``o_stream`` beat) and ``cycles`` = last output − first accept.

    >>> sc = Scenario("ws", 2, 2, [{"b": [0, 0]}] * 2, [{"swap": 1}, {"swap": 0}], [])
    >>> predict_cycles(sc, {"latency": 4, "swap_wave": 2, "preload_beats": 2})["outputs"]
    [6, 7]
    """
    lat = timing["latency"]
    accepts, outputs = [], []
    ip = wp = cycle = 0
    if sc.dataflow == "ws":
        R = timing["preload_beats"]
        count = wave = 0
        while ip < len(sc.beats):
            w_accept = wp < len(sc.preload) and count < R and wave == 0
            swap = bool(sc.beats[ip].get("swap"))
            i_accept = not swap or count == R
            if i_accept:
                accepts.append(cycle)
                outputs.append(cycle + lat)
                ip += 1
            wp += w_accept
            wave = wave - 1 if wave else 0
            if i_accept and swap:
                count, wave = 0, max(timing["swap_wave"] - 1, 0)
            elif w_accept:
                count += 1
            cycle += 1
    else:
        spacing, gap = timing["shift_spacing"], timing["compute_gap"]
        gmax = max(spacing, gap)
        since = gmax
        while ip < len(sc.beats):
            shift = bool(sc.beats[ip].get("shift"))
            if since >= (spacing if shift else gap):
                accepts.append(cycle)
                if shift:
                    outputs.append(cycle + lat)
                ip += 1
                since = 1 if shift else min(since + 1, gmax)
            else:
                since = min(since + 1, gmax)
            cycle += 1
    first = accepts[0] if accepts else None
    return {"first": first, "accepts": accepts, "outputs": outputs,
            "cycles": outputs[-1] - first if outputs else None}


# -- bit packing (cocotb drives whole payload vectors) -----------------------------------------

def layout_fields(layout) -> list:
    """``[(name, offset, elem_width, count, signed)]`` of a StructLayout of ArrayLayouts/ints
    (Amaranth objects in, plain data out: what the cocotb side needs)."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    out = []
    for name, field in layout:
        shape = field.shape
        if isinstance(shape, data.ArrayLayout):
            elem = Shape.cast(shape.elem_shape)
            out.append((name, field.offset, elem.width, shape.length, elem.signed))
        else:
            s = Shape.cast(shape)
            out.append((name, field.offset, s.width, 0, s.signed))
    return out


def pack(fields, values: dict) -> int:
    """Bits of a payload dict (missing fields are 0)."""
    word = 0
    for name, off, w, count, _signed in fields:
        v = values.get(name, 0)
        mask = (1 << w) - 1
        if count:
            for i in range(count):
                word |= (int(v[i]) & mask) << (off + i * w)
        else:
            word |= (int(v) & mask) << off
    return word


def unpack(fields, word: int) -> dict:
    """Payload dict of a bit vector (signed elements sign-extended)."""
    out = {}
    for name, off, w, count, signed_ in fields:
        def get(o):
            v = (word >> o) & ((1 << w) - 1)
            return v - (1 << w) if signed_ and v >> (w - 1) else v

        out[name] = [get(off + i * w) for i in range(count)] if count else get(off)
    return out


# -- cocotb testbench --------------------------------------------------------------------------

ENV_SCENARIO = "MIXPE_ARRAY_SCENARIO"
ENV_RESULT = "MIXPE_SIM_RESULT"

try:  # the scenario half above is usable without cocotb
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ReadOnly, RisingEdge
except ImportError:  # pragma: no cover
    cocotb = None


async def _drive(dut, prefix, words, gaps, state, first_key):
    """Present ``words`` on stream ``prefix`` (valid/ready), ``gaps[i]`` idle cycles before
    word ``i``; the cycle of the first accepted beat goes to ``state[first_key]``."""
    valid = getattr(dut, f"{prefix}__valid")
    payload = getattr(dut, f"{prefix}__payload")
    ready = getattr(dut, f"{prefix}__ready")
    for word, gap in zip(words, gaps):
        for _ in range(gap):
            valid.value = 0
            await RisingEdge(dut.clk)
        valid.value = 1
        payload.value = word
        while True:
            await ReadOnly()
            accepted = int(ready.value) == 1
            if accepted and state.get(first_key) is None:
                state[first_key] = state["cycle"]
            await RisingEdge(dut.clk)
            if accepted:
                break
    valid.value = 0


async def _count(dut, state):
    while True:
        await RisingEdge(dut.clk)
        state["cycle"] += 1


async def _run_scenario(dut, sc, lay, rnd, gap_p, log):
    fi, fo, fw = lay["i"], lay["o"], lay.get("w")

    def gaps(n):
        return [1 if rnd.random() < gap_p else 0 for _ in range(n)]

    if sc["mode"] is not None:
        dut.mode.value = sc["mode"]
    await _warmup(dut, lay, rnd, 2 * (sc["rows"] + sc["cols"]) + 8)
    await _reset_streams(dut)
    state = {"cycle": 0, "first": None, "last": None}
    counter = cocotb.start_soon(_count(dut, state))
    words = [pack(fi, b) for b in sc["beats"]]
    tasks = [cocotb.start_soon(_drive(dut, "i_stream", words, gaps(len(words)), state,
                                      "first"))]
    if sc["preload"]:
        wwords = [pack(fw, w) for w in sc["preload"]]
        tasks.append(cocotb.start_soon(_drive(dut, "preload", wwords, gaps(len(wwords)),
                                              state, "first_w")))
    expected = sc["expected"]
    got, failures = [], []
    timeout = 50 * (len(sc["beats"]) + len(sc["preload"])) + 1000
    for _ in range(timeout):
        await RisingEdge(dut.clk)
        await ReadOnly()
        if str(dut.o_stream__valid.value) == "1":
            raw = dut.o_stream__payload.value
            beat = unpack(fo, int(raw)) if raw.is_resolvable else {"unresolved": str(raw)}
            i = len(got)
            got.append(beat)
            want = expected[i] if i < len(expected) else None
            if beat != want and len(failures) < 10:
                failures.append(f"beat {i}: got {beat}, want {want}")
                log.error(failures[-1])
            state["last"] = state["cycle"]
            if len(got) >= len(expected):
                break
    await RisingEdge(dut.clk)
    for t in tasks + [counter]:
        t.cancel()
    matched = sum(1 for g, w in zip(got, expected) if g == w)
    cycles = (state["last"] - state["first"]) if None not in (state["first"], state["last"]) \
        else None
    return {"matched": matched, "total": len(expected), "received": len(got),
            "failures": failures, "cycles": cycles, "beats": len(sc["beats"]),
            "preload": len(sc["preload"]), "info": sc.get("info", {})}


async def _warmup(dut, lay, rnd, cycles):
    """Random traffic before the reset, so that every PE input toggles once.

    Icarus (``-g2012``) does not run the ``always @*`` blocks that Yosys writes for
    combinational logic at time 0, so a block whose inputs keep their initial value shows X
    (e.g. a composable block multiplier fed by an all-zero lane) although the hardware, and
    Verilator, compute 0. The traffic is then flushed by the reset.
    """
    def word(fields, **fixed):
        vals = {}
        for name, _off, w, count, _s in fields:
            if name in fixed:
                vals[name] = fixed[name]
            else:
                vals[name] = [rnd.getrandbits(w) for _ in range(count)] if count \
                    else rnd.getrandbits(w)
        return pack(fields, vals)

    has_w = hasattr(dut, "preload__valid")
    fixed = {"swap": 1} if has_w else {}
    dut.rst.value = 0
    dut.o_stream__ready.value = 1
    for _ in range(cycles):
        dut.i_stream__valid.value = 1
        dut.i_stream__payload.value = word(lay["i"], **fixed)
        if has_w:
            dut.preload__valid.value = 1
            dut.preload__payload.value = word(lay["w"])
        await RisingEdge(dut.clk)


async def _reset_streams(dut):
    dut.rst.value = 1
    dut.i_stream__valid.value = 0
    dut.i_stream__payload.value = 0
    if hasattr(dut, "preload__valid"):
        dut.preload__valid.value = 0
        dut.preload__payload.value = 0
    dut.o_stream__ready.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0


if cocotb is not None:

    @cocotb.test()
    async def array_gemm(dut):
        """Random GEMM tiles through the array: every o_stream beat matches the reference.

        ``MIXPE_ARRAY_SCENARIO`` holds ``{"layouts", "runs": [{"scenario", "gap"}], "seed"}``;
        each run starts from a reset.
        """
        spec = json.loads(Path(os.environ[ENV_SCENARIO]).read_text())
        rnd = random.Random(spec.get("seed", 1))
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        results = []
        for run in spec["runs"]:
            res = await _run_scenario(dut, run["scenario"], spec["layouts"], rnd,
                                      run.get("gap", 0.0), dut._log)
            dut._log.info(f"array: matched {res['matched']} / {res['total']}, "
                          f"{res['cycles']} cycles")
            results.append(res)
        out = os.environ.get(ENV_RESULT)
        if out:
            Path(out).write_text(json.dumps(results))
        bad = [f for r in results for f in r["failures"]]
        assert all(r["matched"] == r["total"] == r["received"] for r in results), "; ".join(bad)
