"""Format decoders and the decoded multiplier on Amaranth's simulator, exhaustively vs sw."""

from __future__ import annotations

import inspect

import pytest
import torch
from amaranth.sim import Simulator
from mixpe.hw import formats as hwf
from mixpe.hw.mult import hw_families
from mixpe.sw.formats import number_format
from mixpe.sw.mult.decoded import decoded

FORMATS = [
    *(f"int:bits={b}" for b in (2, 4, 8)),
    *(f"int:bits={b},signed=1" for b in (2, 4, 8)),
    *(f"pot:bits={b}" for b in (2, 4, 6)),
    *(f"pot:bits={b},signed=1" for b in (2, 4, 7)),
    "float:bits=2", "float:bits=4", "float:bits=4,e=2", "float:bits=6,e=2", "float:bits=8",
    "float:bits=3,signed=1", "float:bits=4,signed=1", "float:bits=8,signed=1,e=4",
    *(f"flint:bits={b}" for b in (2, 3, 4, 5, 8)),
    *(f"flint:bits={b},signed=1" for b in (3, 4, 5, 8)),
]


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("spec", FORMATS)
def test_decoder_exhaustive(spec):
    fmt = number_format(spec)
    dut = hwf.decoder(fmt)
    assert type(dut).__name__ == type(fmt).__name__.replace("Format", "Decoder")
    assert dut.config == fmt
    codes = fmt.codes()
    want_m, want_e = fmt.decode(codes)
    got = []

    async def bench(ctx):
        for c in codes.tolist():
            ctx.set(dut.code, c)
            got.append((ctx.get(dut.m), ctx.get(dut.e)))

    _run(dut, bench)
    assert [g[0] for g in got] == want_m.tolist(), spec
    assert [g[1] for g in got] == want_e.tolist(), spec


def test_registry_covers_every_sw_family():
    from mixpe.sw.spec import registry

    assert set(hwf.registry()) >= set(registry("format"))


def test_decoder_rejects_bad_params():
    with pytest.raises(ValueError, match="bits"):
        hwf.FlintDecoder(bits=1)
    with pytest.raises(ValueError, match="e="):
        hwf.FloatDecoder(bits=4, e=9)
    with pytest.raises(TypeError):
        hwf.decoder(42)
    for cls in hwf.registry().values():
        params = inspect.signature(cls).parameters.values()
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params), cls


DECODED = [
    ("exact:n=4", "flint:bits=4", "int:bits=4,signed=1"),
    ("exact:n=4", "flint:bits=4,signed=1", "flint:bits=4,signed=1"),
    ("exact:n=4", "float:bits=4", "pot:bits=4,signed=1"),
    ("exact:n=8", "int:bits=8,signed=1", "int:bits=8,signed=1"),
    ("roup:p=1,r=4", "flint:bits=5", "int:bits=5,signed=1"),
    ("axbxp:l=2", "flint:bits=5,signed=1", "float:bits=5,signed=1"),
    ("lutna", "flint:bits=5", "int:bits=5,signed=1"),
]


@pytest.mark.parametrize("core,fa,fb", DECODED)
def test_decoded_multiplier_exhaustive(core, fa, fb):
    family = core.partition(":")[0]
    if family not in hw_families():
        pytest.skip(f"no hardware twin for {family} yet")
    sw = decoded(core, fa, fb)
    dut = hwf.DecodedMultiplierComponent(a_format=fa, b_format=fb, core=core)
    assert dut.config == sw
    table = sw.table()
    na, nb = table.shape
    got = torch.zeros_like(table)

    async def bench(ctx):
        for name, value in dut.table_inputs.items():
            ctx.set(getattr(dut, name), value)
        for i in range(na):
            ctx.set(dut.a, i)
            for j in range(nb):
                ctx.set(dut.b, j)
                got[i, j] = ctx.get(dut.p)

    _run(dut, bench)
    bad = (got != table).nonzero()
    assert bad.numel() == 0, (
        f"{sw.spec}: {bad.shape[0]} mismatches, first a={int(bad[0, 0])} b={int(bad[0, 1])}: "
        f"got {int(got[tuple(bad[0])])}, want {int(table[tuple(bad[0])])}"
    )


@pytest.mark.parametrize("encoding,port_bits", [("sm", 5), ("sm", 9), ("twos", 4), ("twos", 8)])
def test_mantissa_code(encoding, port_bits):
    from amaranth.hdl import Module, Signal, signed
    from mixpe.sw.mult.base import OperandFormat

    port = OperandFormat(port_bits, encoding)
    m_in = Signal(signed(4))
    out = Signal(port_bits)
    mod = Module()
    mod.d.comb += out.eq(hwf.mantissa_code(m_in, port))

    async def bench(ctx):
        for v in range(-8, 8):
            if not port.range[0] <= v <= port.range[1]:
                continue  # DecodedMultiplier rejects formats whose mantissas do not fit
            ctx.set(m_in, v)
            assert port.decode(ctx.get(out)).item() == v

    sim = Simulator(mod)
    sim.add_testbench(bench)
    sim.run()
