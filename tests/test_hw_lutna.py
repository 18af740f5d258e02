"""LUT-NA hardware (product ROMs, programmable per-weight LUT) against its sw twin.

Amaranth's simulator checks random pairs plus corners of every shipped ``lutna`` config (the
``split=act`` ones through the weight-load sequence), the worked example of the seed spec
(§3.4), the load protocol, the structure (one ROM per kept term) and construction errors. The
slow synthesis tests check that dropped terms remove iCE40 LUTs and that a ``Memory`` ROM and
a ``Switch``/``Case`` ROM cost the same.
"""

from __future__ import annotations

import itertools
import random
import unittest

import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.sim import Simulator
from mixpe.hw.mult import create, hw_class, latency_of, table_inputs_of
from mixpe.hw.mult.lutna import LutNaMac, LutNaMultiplier, product_rom_init
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.catalog import SHIPPED

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

LUTNA_SHIPPED = [s for s in SHIPPED if s.split(":")[0] == "lutna"]


def _simulate(dut, pairs):
    """Products for operand-code ``pairs``; ``split=act`` loads each new weight first."""
    got = []
    stats = {"loads": 0}

    async def bench(ctx):
        w = None
        for a, b in pairs:
            if dut.config.split == "act" and b != w:
                ctx.set(dut.b, b)
                ctx.set(dut.load, 1)
                await ctx.tick()
                ctx.set(dut.load, 0)
                await ctx.tick().repeat(dut.load_cycles - 1)
                stats["loads"] += 1
                w = b
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            got.append(ctx.get(dut.p))

    sim = Simulator(dut)
    if dut.config.split == "act":
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, stats


def _pairs(cfg, count, seed, grouped=False):
    na, nb = cfg.a_format.bits, cfg.b_format.bits
    rng = random.Random(seed)
    ca = [0, 1, (1 << na) - 1, (1 << na) - 2, 1 << (na - 1), (1 << (na - 1)) - 1]
    cb = [0, 1, (1 << nb) - 1, 1 << (nb - 1), (1 << (nb - 1)) - 1, (1 << (nb - 1)) + 1]
    pairs = [(a, b) for b in cb for a in ca]
    rand = [(rng.getrandbits(na), rng.getrandbits(nb)) for _ in range(count)]
    if grouped:  # stationary weights: a run of activations per loaded weight
        rand.sort(key=lambda ab: ab[1])
    return pairs + rand


def _expected(cfg, pairs):
    t = cfg.table()
    return [int(t[a, b]) for a, b in pairs]


class LutNaMultiplierTestCase(unittest.TestCase):
    def test_shipped_random(self):
        """2,000 random pairs plus corners for every shipped lutna config."""
        for spec in LUTNA_SHIPPED:
            with self.subTest(spec=spec):
                dut = create(spec)
                self.assertIsInstance(dut, LutNaMultiplier)
                act = dut.config.split == "act"
                # split=act: 400 weights loaded, 5 activations each on average
                pairs = _pairs(dut.config, 2000, seed=3, grouped=act)
                got, _ = _simulate(dut, pairs)
                self.assertEqual(got, _expected(dut.config, pairs))

    def test_other_geometries(self):
        for params in (dict(c=2), dict(c=2, drop=((3, 0), (0, 3)), tau=1), dict(c=8),
                       dict(c=8, trunc=16), dict(n=6, nb=7, c=3, trunc=2),
                       dict(split="act", c=2, tau=2), dict(split="act", c=1),
                       dict(split="act", n=8, nb=5, c=8, trunc=3),
                       dict(split="act", trunc=12)):
            with self.subTest(**params):
                dut = LutNaMultiplier(**params)
                pairs = _pairs(dut.config, 200, seed=9, grouped=True)
                got, _ = _simulate(dut, pairs)
                self.assertEqual(got, _expected(dut.config, pairs))

    def test_rom_styles_agree_with_the_table(self):
        """``rom="memory"`` and ``rom="logic"`` build the same products (and ``auto`` picks
        ``memory`` for 2c ≤ 4 address bits, else ``logic``)."""
        for params in (dict(), dict(drop=((0, 0),)), dict(trunc=3), dict(c=2, tau=3),
                       dict(n=6, nb=7, c=3, trunc=2), dict(c=8, trunc=5)):
            for rom in ("memory", "logic"):
                with self.subTest(rom=rom, **params):
                    dut = LutNaMultiplier(rom=rom, **params)
                    pairs = _pairs(dut.config, 300, seed=11)
                    got, _ = _simulate(dut, pairs)
                    self.assertEqual(got, _expected(dut.config, pairs))
        self.assertEqual(LutNaMultiplier()._rom, "logic")
        self.assertEqual(LutNaMultiplier(c=2)._rom, "memory")
        self.assertEqual(LutNaMultiplier(c=1, rom="logic")._rom, "logic")
        self.assertEqual(LutNaMac(c=2, rom="auto")._rom, "memory")

    def test_worked_example(self):
        """Seed spec §3.4: a = 183, w = -94 -> -17202 (-17104 without the (0, 0) term)."""
        code = 256 | 94
        for spec, want in (("lutna", -17202), ("lutna:split=act", -17202),
                           ("lutna:drop=0.0", -17104)):
            with self.subTest(spec=spec):
                got, _ = _simulate(create(spec), [(183, code)])
                self.assertEqual(got, [want])

    def test_programmable_lut_load_protocol(self):
        """A load takes 2^c - 1 write cycles; the LUT holds |w|·k; the weight stays put."""
        dut = LutNaMultiplier(split="act")
        self.assertEqual(latency_of(dut), 32)
        self.assertEqual(table_inputs_of(dut), {"load": 1})
        trace = {}

        async def bench(ctx):
            ctx.set(dut.b, 256 | 94)  # -94
            ctx.set(dut.load, 1)
            self.assertEqual(ctx.get(dut._busy), 0)
            await ctx.tick()
            ctx.set(dut.b, 5)  # a load while one is in progress is ignored
            busy = 0
            while ctx.get(dut._busy):
                busy += 1
                await ctx.tick()
            ctx.set(dut.load, 0)
            await ctx.tick()
            trace["busy"] = busy
            mem = dut._lut_w
            trace["lut"] = [ctx.get(mem.data[k]) for k in range(16)]
            products = []
            for a in range(256):
                ctx.set(dut.a, a)
                products.append(ctx.get(dut.p))
            trace["p"] = products

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        self.assertEqual(trace["busy"], 15)
        self.assertEqual(dut.load_cycles, 16)
        self.assertEqual(trace["lut"], [94 * k for k in range(16)])
        self.assertEqual(trace["p"], [-94 * a for a in range(256)])

    def test_ports_and_registry(self):
        dut = LutNaMultiplier()
        members = dut.signature.members
        self.assertEqual(Shape.cast(members["a"].shape), Shape(8, signed=False))
        self.assertEqual(Shape.cast(members["b"].shape), Shape(9, signed=False))
        self.assertEqual(Shape.cast(members["p"].shape), Shape(17, signed=True))
        self.assertNotIn("load", members)
        self.assertEqual(latency_of(dut), 0)
        act = LutNaMultiplier(split="act")
        self.assertIn("load", act.signature.members)
        self.assertEqual(set(act.signature.members), {"a", "b", "p", "load"})
        self.assertIs(hw_class("lutna"), LutNaMultiplier)
        self.assertEqual(create("lutna:drop=0.0+0.1").config, multiplier("lutna:drop=0.0+0.1"))
        self.assertEqual(LutNaMultiplier(drop="1.0").config.drop, ((1, 0),))

    def test_construction_errors(self):
        with self.assertRaises(TypeError):
            LutNaMultiplier(8)
        with self.assertRaisesRegex(ValueError, r"c=3 does not divide n=8"):
            LutNaMultiplier(c=3)
        with self.assertRaisesRegex(ValueError, r"c=3 does not divide nb-1=8"):
            LutNaMultiplier(n=6, c=3)
        with self.assertRaisesRegex(ValueError, r"drop term 2\.0"):
            LutNaMultiplier(drop=((2, 0),))
        with self.assertRaisesRegex(ValueError, r"trunc=9"):
            LutNaMultiplier(trunc=9)
        with self.assertRaisesRegex(ValueError, r"split"):
            LutNaMultiplier(split="weight")
        with self.assertRaisesRegex(ValueError, r"rom='rom'.*auto, memory, logic"):
            LutNaMultiplier(rom="rom")
        with self.assertRaisesRegex(ValueError, r"rom="):
            LutNaMac(rom=None)


class LutNaStructureTestCase(unittest.TestCase):
    def test_one_rom_per_kept_term(self):
        for spec, terms in (("lutna", {(0, 0), (0, 1), (1, 0), (1, 1)}),
                            ("lutna:drop=0.0+0.1", {(1, 0), (1, 1)}),
                            ("lutna:tau=2", {(1, 1)}),
                            ("lutna:c=2,tau=5", {(2, 3), (3, 2), (3, 3)})):
            dut = create(spec)
            text = verilog.convert(dut, name="top", emit_src=False)
            c = dut.config.c
            for p, q in itertools.product(range(8 // c), repeat=2):
                with self.subTest(spec=spec, term=(p, q)):
                    self.assertEqual(f"lut_{p}_{q}" in text, (p, q) in terms)
            self.assertEqual(set(dut.luts), terms)

    def test_rom_contents(self):
        self.assertEqual(len(product_rom_init(4)), 256)
        self.assertEqual(product_rom_init(4)[11 * 16 + 5], 55)
        self.assertEqual(product_rom_init(4, trunc=3)[11 * 16 + 14], 154 >> 3)

    def test_programmable_lut_reads(self):
        """split=act: one read port per kept activation chunk (n/c look-ups)."""
        self.assertEqual(len(create("lutna:split=act").luts), 2)
        self.assertEqual(len(create("lutna:split=act,c=2,tau=1").luts), 3)


class LutNaMacTestCase(unittest.TestCase):
    """The MAC tile against the sw emulator (``matmul`` with wrap-around accumulation)."""

    def _run(self, acc_bits=20, cycles=12, **params):
        import torch
        from mixpe.sw.emulate import matmul

        dut = LutNaMac(lanes=4, acc_bits=acc_bits, **params)
        cfg = dut.config
        rng = random.Random(4)
        na, nb = cfg.a_format.bits, cfg.b_format.bits
        weights = [rng.getrandbits(nb) for _ in range(4)]
        acts = [[rng.getrandbits(na) for _ in range(4)] for _ in range(cycles)]
        acts[0] = [(1 << na) - 1] * 4  # a corner: the largest products
        got = {}

        async def bench(ctx):
            ctx.set(dut.b, weights)
            if cfg.split == "act":
                ctx.set(dut.load, 1)
                await ctx.tick()
                ctx.set(dut.load, 0)
                await ctx.tick().repeat(dut.load_cycles - 1)
            ctx.set(dut.en, 1)
            ctx.set(dut.clr, 1)
            for k, row in enumerate(acts):
                ctx.set(dut.a, row)
                await ctx.tick()
                ctx.set(dut.clr, 0)
            ctx.set(dut.en, 0)
            await ctx.tick()
            got["acc"] = ctx.get(dut.acc)

        sim = Simulator(dut)
        sim.add_clock(1e-6)
        sim.add_testbench(bench)
        sim.run()
        a = cfg.a_format.decode(torch.tensor(acts)).reshape(1, -1)
        w = cfg.b_format.decode(torch.tensor(weights)).repeat(cycles).reshape(-1, 1)
        want = int(matmul(a, w, cfg, acc_bits=acc_bits)[0, 0])
        self.assertEqual(got["acc"], want)
        return want

    def test_mac_both(self):
        self._run()
        self._run(drop=((0, 0),), acc_bits=17, cycles=30)  # wraps
        self._run(rom="memory")
        self._run(c=2, tau=3, rom="logic")

    def test_mac_act(self):
        self._run(split="act", trunc=4)
        self._run(split="act", acc_bits=18, cycles=40)

    def test_mac_errors(self):
        with self.assertRaisesRegex(ValueError, "lanes=0"):
            LutNaMac(lanes=0)
        with self.assertRaisesRegex(ValueError, "acc_bits=8"):
            LutNaMac(acc_bits=8)
        with self.assertRaisesRegex(ValueError, "c=3"):
            LutNaMac(c=3)


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_synth_dropped_terms_remove_luts():
    """iCE40: every dropped term and the truncation remove LUTs; so does tau."""
    from mixpe.hw.synth import synth

    def luts(spec):
        return synth(spec, target="ice40", fmax=False)["resources"]["lut4"]

    full, d1, d2 = luts("lutna"), luts("lutna:drop=0.0"), luts("lutna:drop=0.0+0.1")
    assert full > d1 > d2, (full, d1, d2)
    assert luts("lutna:tau=2") < d2
    assert luts("lutna:trunc=3") < full


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_synth_memory_rom_equals_case_rom():
    """A 4×4 product ROM as an async-read ``Memory`` and as a ``Switch``/``Case`` ROM map to
    the same iCE40 logic (both are a constant function of the 8 address bits for ABC)."""
    from amaranth.hdl import Module
    from amaranth.lib import memory, wiring
    from amaranth.lib.wiring import In, Out
    from mixpe.hw.synth import synth

    init = product_rom_init(4)

    class Rom(wiring.Component):
        def __init__(self, case):
            self._case = case
            # explicit signature: the module's postponed annotations can't see local names
            super().__init__({"addr": In(8), "data": Out(8)})

        def elaborate(self, platform):
            m = Module()
            if self._case:
                with m.Switch(self.addr):
                    for k, v in enumerate(init):
                        with m.Case(k):
                            m.d.comb += self.data.eq(v)
            else:
                m.submodules.rom = rom = memory.Memory(shape=8, depth=256, init=init)
                port = rom.read_port(domain="comb")
                m.d.comb += [port.addr.eq(self.addr), self.data.eq(port.data)]
            return m

    mem = synth(Rom(False), target="ice40", fmax=False)["resources"]
    case = synth(Rom(True), target="ice40", fmax=False)["resources"]
    assert mem["bram"] == 0 and mem["ff"] == 0
    assert abs(mem["lut4"] - case["lut4"]) <= 2, (mem, case)
