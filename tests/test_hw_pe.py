"""ProcessingElement on Amaranth's simulator against the reference ``pe_mac`` / ``pe_trace``."""

from __future__ import annotations

import random

import mixpe.sw.mult.variants  # noqa: F401  (registers the variants family)
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator
from mixpe.hw.mult import hw_families
from mixpe.hw.pe import ProcessingElement
from mixpe.sw.pe import PEConfig, pe_trace

#: (mult, a_format, b_format, acc_bits): small accumulators so that overflow happens often.
CONFIGS = [
    ("exact:n=8", None, None, 14),
    ("exact:sa=0,sb=0", None, None, 12),
    ("exact:n=4", "flint:bits=4", "int:bits=4,signed=1", 8),
    ("exact:n=4", "flint:bits=4,signed=1", "pot:bits=4,signed=1", 9),
    ("roup:p=1,r=4", None, None, 13),
    ("axbxp:l=2", None, None, 13),
    ("axbxp:mode=composable", None, None, 15),
    ("lutna:trunc=3", None, None, 14),
    ("variants:of=exact|roup:p=1;r=4|axbxp:l=2", None, None, 14),
    ("variants:of=exact:n=4|axbxp:n=4;l=1", "flint:bits=4,signed=1", "int:bits=4,signed=1", 7),
]


def random_ops(cfg: PEConfig, n: int, seed: int) -> list[dict]:
    """Random control/operand sequence: mostly valid MACs, some clears, loads and idles."""
    rng = random.Random(seed)
    a_bits, b_bits = cfg.port_bits
    lo, hi = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    ops = []
    for _ in range(n):
        r = rng.random()
        ops.append({
            "valid": int(rng.random() < 0.85),
            "clear": int(r < 0.08),
            "load": int(0.08 <= r < 0.13),
            "d": rng.randint(lo, hi),
            "a": rng.getrandbits(a_bits),
            "b": rng.getrandbits(b_bits),
        } | ({"mode": rng.randrange(len(cfg.modes) + 1)} if cfg.modes else {})
          | ({"sel": rng.randrange(1 << cfg.core.sel_bits)} if cfg.selectable else {}))
    return ops


def simulate(dut: ProcessingElement, ops: list[dict]) -> list[tuple[int, bool]]:
    """Drive one op per clock; return ``(out_c, out_overflow)`` aligned with the ops."""
    got = []

    async def bench(ctx):
        for name, value in dut.table_inputs.items():
            ctx.set(getattr(dut, f"in_{name}"), value)
        for op in ops:
            ctx.set(dut.in_valid, op["valid"])
            ctx.set(dut.in_clear, op["clear"])
            ctx.set(dut.in_load, op["load"])
            ctx.set(dut.in_d, op["d"])
            ctx.set(dut.in_a, op["a"])
            ctx.set(dut.in_b, op["b"])
            for name in ("mode", "sel"):
                if name in op:
                    ctx.set(getattr(dut, f"in_{name}"), op[name])
                    assert ctx.get(getattr(dut, f"out_{name}")) == op[name]
            # the systolic pass-through is combinational
            assert ctx.get(dut.out_a) == op["a"] and ctx.get(dut.out_b) == op["b"]
            assert ctx.get(dut.out_valid) == op["valid"]
            await ctx.tick()
            got.append((ctx.get(dut.out_c), bool(ctx.get(dut.out_overflow))))
        ctx.set(dut.in_valid, 0)
        ctx.set(dut.in_clear, 0)
        ctx.set(dut.in_load, 0)
        for _ in range(dut.latency - 1):
            await ctx.tick()
            got.append((ctx.get(dut.out_c), bool(ctx.get(dut.out_overflow))))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got[dut.latency - 1:]


@pytest.mark.parametrize("pipeline", [0, 1, 2])
@pytest.mark.parametrize("overflow", ["wrap", "saturate"])
@pytest.mark.parametrize("mult,fa,fb,acc_bits", CONFIGS, ids=lambda x: str(x))
def test_pe_random_sequence(mult, fa, fb, acc_bits, overflow, pipeline):
    family = mult.partition(":")[0]
    if family not in hw_families():
        pytest.skip(f"no hardware twin for {family} yet")
    cfg = PEConfig(mult=mult, a_format=fa, b_format=fb, acc_bits=acc_bits, overflow=overflow,
                   pipeline=pipeline)
    dut = ProcessingElement.from_config(cfg)
    assert dut.config == cfg and dut.latency == 1 + pipeline
    ops = random_ops(cfg, 300, seed=hash((mult, fa, overflow, pipeline)) & 0xFFFF)
    want = pe_trace(cfg, ops)
    got = simulate(dut, ops)
    assert any(o for _, o in want), "the sequence should overflow at least once"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{cfg.name} p={pipeline}: step {i} op {ops[i]}: got {g}, want {w}"
    assert len(got) == len(want)


def test_pe_validation_names_parameter():
    with pytest.raises(ValueError, match="acc_bits"):
        ProcessingElement(acc_bits=0)
    with pytest.raises(ValueError, match="overflow"):
        ProcessingElement(overflow="clip")
    with pytest.raises(ValueError, match="pipeline"):
        ProcessingElement(pipeline=3)
    with pytest.raises(ValueError, match="a_format"):
        ProcessingElement(mult="exact:n=4", a_format="flint:bits=4")
    with pytest.raises(ValueError, match="out=lanes"):
        ProcessingElement(mult="axbxp:mode=composable,out=lanes")
    with pytest.raises(ValueError, match="decoded"):  # mantissas do not fit a 2-bit core
        ProcessingElement(mult="exact:n=2", a_format="flint:bits=4", b_format="flint:bits=4")


def test_pe_config_json_roundtrip():
    cfg = PEConfig(mult="roup:n=8,p=1,r=4", acc_bits=20, overflow="saturate", pipeline=2)
    assert cfg.mult == "roup:p=1,r=4"  # canonical spec
    assert PEConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown PE config keys"):
        PEConfig.from_json('{"mult": "exact", "bogus": 1}')


def test_pe_converts_to_verilog():
    dut = ProcessingElement(mult="exact:n=4", a_format="flint:bits=4",
                            b_format="int:bits=4,signed=1", acc_bits=12, pipeline=2)
    text = verilog.convert(dut, name="pe")
    for port in ("in_a", "out_a", "in_d", "out_c", "in_valid", "out_overflow", "clk", "rst"):
        assert port in text


@pytest.mark.parametrize("name", ["mixpe.sw.pe", "mixpe.hw.formats"])
def test_doctests(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0
