"""Table multiplier hardware (a product ROM) against its sw twin.

Amaranth's simulator checks the shipped table, a signed table made from another family's
``table()``, a non-square table, and the ROM geometry; the slow synthesis test compares the ROM
of the exact 8×8 product with behavioural ``a*b``.
"""

from __future__ import annotations

import random
import unittest

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.sim import Simulator
from mixpe.hw.mult import create, hw_class
from mixpe.hw.mult.table import TableMultiplier
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.catalog import SHIPPED
from mixpe.sw.mult.table import TableMultiplier as SwTable

pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")

TABLE_SHIPPED = [s for s in SHIPPED if s.split(":")[0] == "table"]


def _simulate(dut, pairs):
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
    ca = sorted({0, 1, (1 << na) - 1, 1 << (na - 1), (1 << (na - 1)) - 1})
    cb = sorted({0, 1, (1 << nb) - 1, 1 << (nb - 1), (1 << (nb - 1)) - 1})
    return [(a, b) for a in ca for b in cb] + \
        [(rng.getrandbits(na), rng.getrandbits(nb)) for _ in range(count)]


def _expected(cfg, pairs):
    t = cfg.table()
    return [int(t[a, b]) for a, b in pairs]


class TableMultiplierTestCase(unittest.TestCase):
    def test_shipped_random(self):
        for spec in TABLE_SHIPPED:
            with self.subTest(spec=spec):
                dut = create(spec)
                self.assertIsInstance(dut, TableMultiplier)
                pairs = _pairs(dut.config, 2000, seed=11)
                self.assertEqual(_simulate(dut, pairs), _expected(dut.config, pairs))

    def test_signed_table_of_another_family(self):
        """The table of ROUP(1, 4) as a signed ROM equals the ROUP twin."""
        roup = multiplier("roup:p=1,r=4")
        sw = SwTable.from_array(roup.table().numpy(), sa=True, sb=True)
        dut = TableMultiplier(path=sw.path, sa=True, sb=True)
        pairs = _pairs(dut.config, 1000, seed=2)
        got = _simulate(dut, pairs)
        self.assertEqual(got, _expected(roup, pairs))
        self.assertEqual(got, _expected(dut.config, pairs))

    def test_non_square_exhaustive(self):
        """A 4-bit × 3-bit table with negative entries, every code pair (address {a, b})."""
        array = np.arange(16 * 8).reshape(16, 8) * 37 % 301 - 150
        sw = SwTable.from_array(array, sa=True)
        dut = TableMultiplier(path=sw.path, sa=True)
        pairs = [(a, b) for a in range(16) for b in range(8)]
        self.assertEqual(_simulate(dut, pairs), array.flatten().tolist())
        members = dut.signature.members
        self.assertEqual(Shape.cast(members["a"].shape), Shape(4, signed=False))
        self.assertEqual(Shape.cast(members["b"].shape), Shape(3, signed=False))
        self.assertEqual(Shape.cast(members["p"].shape), Shape(9, signed=True))

    def test_registry_and_errors(self):
        self.assertIs(hw_class("table"), TableMultiplier)
        with self.assertRaises(TypeError):
            TableMultiplier()
        with self.assertRaisesRegex(ValueError, "nosuch.npy"):
            TableMultiplier(path="nosuch.npy")


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_synth_rom_of_exact_6x6_costs_more_than_arithmetic():
    """iCE40: a ROM does not see arithmetic structure. The exact 6×6 unsigned product as a
    4,096-word ROM needs several times the LUTs of behavioural ``a*b``. (6×6 keeps Yosys
    quick; the 8×8 numbers are in the report.)"""
    from mixpe.hw.synth import synth

    sw = SwTable.from_array(multiplier("exact:n=6,sa=0,sb=0").table().numpy())
    rom = synth(TableMultiplier(path=sw.path), target="ice40", fmax=False)["resources"]
    arith = synth("exact:n=6,sa=0,sb=0", target="ice40", fmax=False)["resources"]
    assert rom["bram"] == 0 and rom["ff"] == 0, rom
    assert rom["lut4"] > 2 * arith["lut4"], (rom, arith)
