"""ROUP hardware (radix-4 Booth, perforation, rounding) against its sw twin.

Amaranth's simulator checks random pairs plus corners of every shipped ``roup`` config, every
(p, r, round, booth, signed) combination exhaustively at n = 4, and the worked table of the
seed spec (§4.6). Structural tests check that perforated rows and rounded-away columns are not
generated; the slow synthesis test checks that they really remove iCE40 LUTs. (The exhaustive
65,536-pair proof of the shipped configs runs on Verilator in ``sim/test_mult.py``.)
"""

from __future__ import annotations

import itertools
import random
import unittest

import pytest
from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.sim import Simulator
from mixpe.hw.mult import create, hw_class
from mixpe.hw.mult.roup import RoupMultiplier
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.catalog import SHIPPED

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

ROUP_SHIPPED = [s for s in SHIPPED if s.split(":")[0] == "roup"]


def _simulate(dut, pairs):
    """Products of the Amaranth simulation of ``dut`` for operand-code ``pairs``."""
    got = []

    async def bench(ctx):
        for a, b in pairs:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            got.append(ctx.get(dut.p))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return got


def _pairs(cfg, count, seed):
    na, nb = cfg.a_format.bits, cfg.b_format.bits
    rng = random.Random(seed)
    corner = sorted({0, 1, 2, 3, (1 << na) - 1, (1 << na) - 2, 1 << (na - 1),
                     (1 << (na - 1)) - 1, (1 << (na - 1)) + 1})
    pairs = list(itertools.product(corner, repeat=2))
    pairs += [(rng.getrandbits(na), rng.getrandbits(nb)) for _ in range(count)]
    return pairs


def _expected(cfg, pairs):
    t = cfg.table()
    return [int(t[a, b]) for a, b in pairs]


class RoupMultiplierTestCase(unittest.TestCase):
    def test_shipped_random(self):
        """2,000 random pairs plus corners for every shipped roup config."""
        for spec in ROUP_SHIPPED:
            with self.subTest(spec=spec):
                dut = create(spec)
                self.assertIsInstance(dut, RoupMultiplier)
                pairs = _pairs(dut.config, 2000, seed=hash(spec) & 0xFFFF)
                self.assertEqual(_simulate(dut, pairs), _expected(dut.config, pairs))

    def test_variants_random(self):
        """Booth on the activation, R-PP unsigned, large p/r corners (n = 8)."""
        for params in (dict(booth="a", p=1, r=3), dict(booth="a", r=5, round="pp_row"),
                       dict(signed=0, p=2, r=6, round="pp_row"), dict(signed=0, booth="a", r=1),
                       dict(p=3, r=7), dict(p=4), dict(r=8), dict(signed=0, p=4, r=8),
                       dict(p=1, r=8, round="pp_row")):
            with self.subTest(**params):
                dut = RoupMultiplier(**params)
                pairs = _pairs(dut.config, 300, seed=5)
                self.assertEqual(_simulate(dut, pairs), _expected(dut.config, pairs))

    def test_exhaustive_n4_all_parameters(self):
        """Every p, r, round, booth and signed of a 4-bit ROUP, all 256 pairs."""
        pairs = [(a, b) for a in range(16) for b in range(16)]
        for p, r, rnd, booth, sgn in itertools.product(range(3), range(5), ("operand", "pp_row"),
                                                       ("b", "a"), (1, 0)):
            if rnd == "pp_row" and r <= 2 * p and r:
                continue  # rows with 2j >= r are unchanged: same circuit as r = 0
            dut = RoupMultiplier(n=4, p=p, r=r, round=rnd, booth=booth, signed=sgn)
            with self.subTest(spec=dut.config.spec):
                self.assertEqual(_simulate(dut, pairs), dut.config.table().flatten().tolist())

    def test_worked_table(self):
        """Seed spec §4.6: the worked ROUP examples (n = 8, A = a, B = b), through the RTL."""
        ab = [(93, -45), (127, 127), (-128, 127), (57, 100), (-77, -3)]
        table = {  # (p, r, round): products of the five pairs
            (0, 0, "operand"): [-4185, 16129, -16256, 5700, 231],
            (1, 0, "operand"): [-4092, 16256, -16384, 5700, 308],
            (2, 0, "operand"): [-4464, 16256, -16384, 5472, 0],
            (0, 4, "operand"): [-4320, 16256, -16256, 6400, 240],
            (0, 4, "pp_row"): [-4192, 16128, -16256, 5696, 224],
            (1, 4, "operand"): [-4224, 16384, -16384, 6400, 320],
            (1, 4, "pp_row"): [-4096, 16256, -16384, 5696, 304],
            (2, 6, "operand"): [-3072, 16384, -16384, 6144, 0],
            (2, 6, "pp_row"): [-4480, 16256, -16384, 5504, 0],
        }
        for (p, r, rnd), want in table.items():
            dut = RoupMultiplier(p=p, r=r, round=rnd)
            fmt = dut.config.a_format
            pairs = [(int(fmt.encode(x)), int(fmt.encode(y))) for x, y in ab]
            with self.subTest(p=p, r=r, round=rnd):
                self.assertEqual(_simulate(dut, pairs), want)

    def test_ports_and_registry(self):
        dut = RoupMultiplier(p=1, r=4, signed=0)
        members = dut.signature.members
        self.assertEqual(Shape.cast(members["a"].shape), Shape(8, signed=False))
        self.assertEqual(Shape.cast(members["b"].shape), Shape(8, signed=False))
        self.assertEqual(Shape.cast(members["p"].shape), Shape(dut.config.out_bits, signed=True))
        self.assertEqual(dut.config, multiplier("roup:p=1,r=4,signed=0"))
        self.assertIs(hw_class("roup"), RoupMultiplier)
        self.assertEqual(create("roup:p=2,r=6").config.spec, "roup:p=2,r=6")

    def test_construction_errors(self):
        with self.assertRaises(TypeError):
            RoupMultiplier(8)
        with self.assertRaisesRegex(ValueError, r"p=5"):
            RoupMultiplier(n=8, p=5)
        with self.assertRaisesRegex(ValueError, r"n=7"):
            RoupMultiplier(n=7)
        with self.assertRaisesRegex(ValueError, r"r=9"):
            RoupMultiplier(n=8, r=9)
        with self.assertRaisesRegex(ValueError, r"round"):
            RoupMultiplier(round="matrix")
        with self.assertRaisesRegex(ValueError, r"booth"):
            RoupMultiplier(booth="c")


class RoupStructureTestCase(unittest.TestCase):
    """What is built: Booth rows, encoders, the incrementer, the low columns."""

    @staticmethod
    def _verilog(**params):
        return verilog.convert(RoupMultiplier(**params), name="top", emit_src=False)

    def test_perforated_rows_are_not_generated(self):
        for p in range(5):
            text = self._verilog(p=p)
            for j in range(4):
                with self.subTest(p=p, j=j):
                    for sig in (f"roup_pp{j}", f"roup_one{j}", f"roup_two{j}", f"roup_neg{j}"):
                        self.assertEqual(sig in text, j >= p, sig)

    def test_operand_rounding_has_one_incrementer(self):
        self.assertNotIn("roup_xr", self._verilog(p=1))
        self.assertNotIn("roup_xr", self._verilog(p=1, r=4, round="pp_row"))
        self.assertIn("roup_xr", self._verilog(p=1, r=4))

    def test_rounded_columns_are_not_generated(self):
        """With R-A the low R product bits are constant zero and no row reaches below column
        R; with R-PP the rows below column R reach the adders only as one rounding bit each."""
        from amaranth.hdl import Module
        from mixpe.hw.mult.roup import booth_rows

        for r in (2, 4, 6):
            dut = RoupMultiplier(r=r)
            x, e = dut._operands(dut.a, dut.b)
            cs = booth_rows(Module(), x, e, p=0, r=r, round="operand", width=16)
            self.assertTrue(all(min(row[0]) >= r for row in cs._signed), r)
            self.assertTrue(all(col >= r for col, _ in cs._bits), r)
            bits = _simulate(dut, [(a, b) for a in (93, 127, 200) for b in (3, 45, 211)])
            self.assertTrue(all(v % (1 << r) == 0 for v in bits))
            cs = booth_rows(Module(), x, e, p=0, r=r, round="pp_row", width=16)
            self.assertTrue(all(min(row[0]) >= r for row in cs._signed), r)
            self.assertEqual(sum(1 for col, _ in cs._bits if col == r),
                             (r + 1) // 2 + (1 if r % 2 == 0 else 0))
            text = self._verilog(r=r, round="pp_row")
            self.assertIn("roup_rnd0", text)
            self.assertEqual("roup_rnd2" in text, r > 4)
        # pp_row rows with 2j >= r are untouched: no rounding logic at all
        self.assertNotIn("roup_rnd", self._verilog(p=2, r=4, round="pp_row"))


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_synth_perforation_and_rounding_remove_luts():
    """iCE40: LUTs strictly decrease with P, and rounding at R = 4 and 6 does not add LUTs.

    R-A adds one (n-R)-bit incrementer and saves R-1 columns in every row: it removes LUTs from
    R = 3 on at P <= 1 and from R = 4 at P = 2 (at R = 1 it *costs* LUTs; at P = 3, one row,
    it never pays). R-PP turns the columns below R into one rounding bit per row; it is LUT
    neutral (within one LUT) when it touches one row and saves LUTs from R = 4 at P = 0. The
    Booth P = 0 unit is also smaller than behavioural signed ``a*b``.
    """
    from mixpe.hw.synth import synth

    def luts(spec):
        return synth(spec, target="ice40", fmax=False)["resources"]["lut4"]

    perf = [luts("roup" + (f":p={p}" if p else "")) for p in range(4)]
    assert all(x > y for x, y in zip(perf, perf[1:])), perf
    for p in range(3):
        head = f"roup:p={p}," if p else "roup:"
        assert luts(head + "r=4") < perf[p], (p, "operand")
    assert luts("roup:r=6") < luts("roup:r=4")
    for r in (4, 6):
        assert luts(f"roup:r={r},round=pp_row") < perf[0], (r, "pp_row")
    assert perf[0] < luts("exact")
