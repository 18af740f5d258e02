"""AxBxPMultiplier (hw/mult/axbxp.py) on Amaranth's simulator against its sw twin.

Fixed mode: corner operands crossed with each other plus random pairs (every pair for operands of
at most 6 bits); the exhaustive 8-bit proofs run on Verilator (``sim/``). Composable mode: every
precision of every config, ``out=dot`` and ``out=lanes``, with random and corner lane vectors.
The exhaustive per-mode cocotb proof is ``sim/test_axbxp.py``.
"""

from __future__ import annotations

import doctest
import gc
import random

import pytest
import torch
from amaranth.hdl import Fragment, Shape, signed
from amaranth.sim import Simulator
from mixpe.hw.mult import axbxp as hw_axbxp
from mixpe.hw.mult import create, hw_class, table_inputs_of
from mixpe.hw.mult.axbxp import AxBxPMultiplier, BlockMultiplier, composable_routing
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.catalog import SHIPPED

FIXED_SHIPPED = [s for s in SHIPPED if s.startswith("axbxp")
                 and multiplier(s).mode == "fixed"]
FIXED_EXTRA = [
    "axbxp:sa=0,sb=0",
    "axbxp:l=3,select=static",
    "axbxp:l=3,round=1,sb=0",
    "axbxp:l=1",
    "axbxp:l=1,round=1,sa=0",
    "axbxp:l=2,select=static,round=1",
    "axbxp:k=4,l=1,select=static,sa=0,sb=0",
    "axbxp:k=4,l=1,round=1",
    "axbxp:k=1,l=3",
    "axbxp:k=8",
]
#: small enough for every operand pair in pysim
FIXED_SMALL = [
    "axbxp:n=4,k=1,l=2",
    "axbxp:n=4,k=1,l=2,round=1,sb=0",
    "axbxp:n=6,k=2,l=2",
    "axbxp:n=6,k=3,l=1,select=static,round=1",
    "axbxp:n=6,k=2,l=1,sa=0,sb=0,round=1",
]
COMPOSABLE = [
    "axbxp:mode=composable",
    "axbxp:mode=composable,out=lanes",
    "axbxp:mode=composable,sa=0,sb=0",
    "axbxp:mode=composable,sa=0,sb=0,out=lanes",
    "axbxp:mode=composable,sb=0,out=lanes",
    "axbxp:mode=composable,sa=0",
    "axbxp:mode=composable,n=4,k=1",
    "axbxp:mode=composable,n=4,k=1,out=lanes,sa=0",
    "axbxp:mode=composable,k=4,out=lanes",
    "axbxp:mode=composable,n=16,k=4",
    "axbxp:mode=composable,n=2,k=2,out=lanes",
]


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


def fixed_pairs(cfg, count, seed):
    """Operand code pairs: corners × corners, then ``count`` random pairs (all if small)."""
    n = cfg.n
    if 2 * n <= 12:
        return [(a, b) for a in range(1 << n) for b in range(1 << n)]
    corner_vals = {0, 1, 2, 3, (1 << (n - 1)) - 1, 1 << (n - 1), (1 << (n - 1)) + 1,
                   (1 << n) - 2, (1 << n) - 1, 0x55 & ((1 << n) - 1), 0xAA & ((1 << n) - 1)}
    # a value whose leading block changes with one more bit, for the block detector
    corner_vals |= {(1 << (cfg.k * i)) - 1 for i in range(1, cfg.blocks + 1)}
    corner_vals |= {1 << (cfg.k * i) for i in range(cfg.blocks)}
    corners = sorted(c & ((1 << n) - 1) for c in corner_vals)
    rng = random.Random(seed)
    pairs = [(a, b) for a in corners for b in corners]
    pairs += [(rng.getrandbits(n), rng.getrandbits(n)) for _ in range(count)]
    return pairs


def check_fixed(spec, count=2000, seed=0):
    dut = create(spec)
    cfg = dut.config
    table = cfg.table().tolist()
    pairs = fixed_pairs(cfg, count, seed)
    bad = []

    async def bench(ctx):
        for a, b in pairs:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            got = ctx.get(dut.p)
            if got != table[a][b]:
                bad.append((a, b, got, table[a][b]))

    run(dut, bench)
    assert not bad, f"{spec}: {len(bad)} / {len(pairs)} mismatches (a, b, got, exp): {bad[:5]}"


@pytest.mark.parametrize("spec", FIXED_SHIPPED + FIXED_EXTRA)
def test_fixed_matches_sw_table(spec):
    check_fixed(spec)


@pytest.mark.parametrize("spec", FIXED_SMALL)
def test_fixed_small_exhaustive(spec):
    check_fixed(spec)


def test_seed_spec_worked_examples():
    """Seed spec §1.4 rows through the hardware (codes of the signed operands)."""
    rows = [("axbxp:l=2", 109, 23, 1920), ("axbxp:l=3", 109, 23, 2484),
            ("axbxp:k=4,l=1", 109, 23, 1536), ("axbxp:l=2", 109, -23, -1920),
            ("axbxp:l=2,select=static", 109, 23, 1536), ("axbxp:l=2", 5, 3, 15),
            ("axbxp:l=2,sa=0,sb=0", 200, 77, 12288)]
    for spec, a, b, exp in rows:
        dut = create(spec)
        got = []

        async def bench(ctx, dut=dut, a=a, b=b):
            ctx.set(dut.a, a & 0xFF)
            ctx.set(dut.b, b & 0xFF)
            got.append(ctx.get(dut.p))

        run(dut, bench)
        assert got == [exp], (spec, a, b, got, exp)


def lane_vectors(cfg, q, count, rng):
    """Lane code vectors at precision ``q``: corners (all min, all max, mixed) then random."""
    lanes = cfg.lanes(q)
    fa, fb = cfg.lane_formats(q)
    ca = [int(fa.encode(v)) for v in fa.range]
    cb = [int(fb.encode(v)) for v in fb.range]
    vecs = [([x] * lanes, [y] * lanes) for x in ca for y in cb]
    vecs.append(([ca[t % 2] for t in range(lanes)], [cb[(t // 2) % 2] for t in range(lanes)]))
    for _ in range(count):
        vecs.append(([rng.getrandbits(q) for _ in range(lanes)],
                     [rng.getrandbits(q) for _ in range(lanes)]))
    return vecs


def pack(codes, q):
    return sum(c << (q * t) for t, c in enumerate(codes))


def check_composable(spec, count, seed=1, mode_offset=0):
    dut = create(spec)
    cfg = dut.config
    rng = random.Random(seed)
    bad = []
    checked = []

    async def bench(ctx):
        for e, q in enumerate(cfg.precisions):
            fa, fb = cfg.lane_formats(q)
            vecs = lane_vectors(cfg, q, count, rng)
            mode = e + (mode_offset if e == len(cfg.precisions) - 1 else 0)
            ctx.set(dut.mode, mode)
            for ca, cb in vecs:
                va, vb = fa.decode(torch.tensor(ca)), fb.decode(torch.tensor(cb))
                ctx.set(dut.a, pack(ca, q))
                ctx.set(dut.b, pack(cb, q))
                if cfg.out == "dot":
                    exp, got = int(cfg.mul_dot(va, vb, q)), ctx.get(dut.p)
                else:
                    prods = cfg.mul_lanes(va, vb, q).tolist()
                    vec = ctx.get(dut.lanes)
                    mask = (1 << (2 * q)) - 1
                    got = [(vec >> (2 * q * t)) & mask for t in range(len(prods))]
                    exp = [x & mask for x in prods]
                    if q == cfg.n:
                        got, exp = (got, ctx.get(dut.p)), (exp, prods[0])
                if got != exp:
                    bad.append((q, ca, cb, got, exp))
            checked.append(q)

    run(dut, bench)
    assert checked == list(cfg.precisions)
    assert not bad, f"{spec}: {len(bad)} mismatches (q, a lanes, b lanes, got, exp): {bad[:3]}"


@pytest.mark.parametrize("spec", COMPOSABLE)
def test_composable_every_mode(spec):
    check_composable(spec, count=150)


def test_composable_mode_past_last_is_full_precision():
    # mode is 2 bits for three precisions: the code 3 behaves like 2 (q = n), as the sw PE says
    check_composable("axbxp:mode=composable", count=30, mode_offset=1)
    check_composable("axbxp:mode=composable,out=lanes", count=30, mode_offset=1)


@pytest.mark.parametrize("spec", ["axbxp:mode=composable", "axbxp:mode=composable,out=lanes"])
def test_composable_full_precision_is_the_table(spec):
    """Under ``table_inputs`` the product port equals the sw table (what the generic runner
    checks), with the operands in the low ``n`` bits of the lane-packed ports."""
    dut = create(spec)
    cfg = dut.config
    table = cfg.table().tolist()
    rng = random.Random(3)
    pairs = [(a, b) for a in (0, 1, 127, 128, 255) for b in (0, 1, 127, 128, 255)]
    pairs += [(rng.getrandbits(8), rng.getrandbits(8)) for _ in range(300)]
    bad = []

    async def bench(ctx):
        for name, value in table_inputs_of(dut).items():
            ctx.set(getattr(dut, name), value)
        for a, b in pairs:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            if ctx.get(dut.p) != table[a][b]:
                bad.append((a, b))

    run(dut, bench)
    assert table_inputs_of(dut) == {"mode": 2}
    assert not bad


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("sa,sb", [(0, 0), (1, 1), (1, 0), (0, 1)])
def test_block_multiplier_exhaustive(k, sa, sb):
    dut = BlockMultiplier(k=k, sa=sa, sb=sb)
    bad = []

    def value(x, top):
        return x - (1 << k) if top and x >> (k - 1) else x

    async def bench(ctx):
        for ta in (0, 1) if sa else (0,):
            for tb in (0, 1) if sb else (0,):
                if sa:
                    ctx.set(dut.a_top, ta)
                if sb:
                    ctx.set(dut.b_top, tb)
                for a in range(1 << k):
                    for b in range(1 << k):
                        ctx.set(dut.a, a)
                        ctx.set(dut.b, b)
                        exp = value(a, ta) * value(b, tb)
                        if ctx.get(dut.p) != exp:
                            bad.append((ta, tb, a, b))

    run(dut, bench)
    assert not bad


def _submodule_names(dut):
    frag = Fragment.get(dut, None)
    names = []

    def walk(f, prefix):
        for sub, name, *_ in f.subfragments:
            names.append(prefix + name)
            walk(sub, prefix + name + ".")

    walk(frag, "")
    return names


@pytest.mark.parametrize("spec,blocks,extra", [
    ("axbxp", 16, []),
    ("axbxp:l=3", 9, ["sel_a", "sel_a.lbd", "sel_b", "sel_b.lbd"]),
    ("axbxp:l=2", 4, ["sel_a", "sel_a.lbd", "sel_b", "sel_b.lbd"]),
    ("axbxp:l=2,select=static", 4, ["sel_a", "sel_b"]),
    ("axbxp:k=4,l=1", 1, ["sel_a", "sel_a.lbd", "sel_b", "sel_b.lbd"]),
    ("axbxp:k=4,l=1,select=static", 1, ["sel_a", "sel_b"]),
    ("axbxp:mode=composable", 16, []),
    ("axbxp:mode=composable,n=16,k=2", 64, []),
])
def test_structure_only_kept_blocks_are_built(spec, blocks, extra):
    dut = create(spec)
    names = _submodule_names(dut)
    blk = [n for n in names if n.startswith("blk_")]
    assert len(blk) == blocks == dut.block_count
    assert sorted(set(names) - set(blk)) == sorted(extra)
    if dut.config.mode == "fixed" and dut.config.kept < dut.config.blocks:
        assert sorted(blk) == sorted(f"blk_{i}_{j}" for i in range(dut.config.kept)
                                     for j in range(dut.config.kept))


@pytest.mark.parametrize("n,k", [(8, 2), (8, 1), (4, 1), (16, 4), (8, 8)])
def test_routing_covers_every_lane_block_pair_once(n, k):
    """In every mode the block multipliers compute each lane's block pairs exactly once, with the
    top (signed) flags on the lanes' top blocks, and only cross units add multiplexer inputs."""
    routes = composable_routing(n, k)
    B = n // k
    assert len(routes) == B * B
    modes = len(next(iter(routes.values())))
    for e in range(modes):
        w = 1 << e                                  # blocks per lane
        seen = set()
        for path, per_mode in routes.items():
            ca, cb, ta, tb = per_mode[e]
            if w == B:
                lane_a = lane_b = 0
            else:
                lane_a, lane_b = ca // w, cb // w
            assert lane_a == lane_b, (path, e)
            assert ta == ((ca % w) == w - 1) and tb == ((cb % w) == w - 1)
            seen.add((lane_a, ca % w, cb % w))
        assert len(seen) == B * B
    sources = [len({r[0] for r in v}) for v in routes.values()]
    # a quad tree with log2(B) levels: the D0-only path never switches
    assert sources.count(1) >= 1 and max(sources) <= modes


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_registry_and_config():
    assert hw_class("axbxp") is AxBxPMultiplier
    dut = create("axbxp:l=2,round=1")
    assert isinstance(dut, AxBxPMultiplier)
    assert dut.config == multiplier("axbxp:l=2,round=1")
    assert table_inputs_of(dut) == {}
    assert Shape.cast(dut.signature.members["p"].shape) == signed(dut.config.out_bits)
    comp = AxBxPMultiplier(mode="composable", out="lanes")
    widths = {name: Shape.cast(m.shape).width for name, m in comp.signature.members.items()}
    assert widths == {"a": 32, "b": 32, "mode": 2, "lanes": 64, "p": 16}


@pytest.mark.filterwarnings("ignore:.*created but never used")
@pytest.mark.parametrize("kwargs,name", [
    ({"k": 3}, "k=3"),
    ({"n": 8, "k": 0}, "k=0"),
    ({"l": 5}, "l=5"),
    ({"k": 4, "l": 3}, "l=3"),
    ({"mode": "composable", "l": 2}, "l=2"),
    ({"mode": "composable", "round": True}, "round=1"),
    ({"mode": "composable", "n": 6, "k": 2}, "n/k=3"),
    ({"out": "lanes"}, "out="),
    ({"select": "greedy"}, "select="),
    ({"mode": "runtime"}, "mode="),
])
def test_construction_errors_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("/", ".")):
        AxBxPMultiplier(**kwargs)
    gc.collect()


@pytest.mark.filterwarnings("ignore:.*created but never used")
def test_doctests():
    assert doctest.testmod(hw_axbxp).failed == 0
    gc.collect()  # the examples' unelaborated components warn here, under the filter
