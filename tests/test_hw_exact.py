"""The exact multiplier's hardware twin, its generated manifest and its synthesis report.

Amaranth's simulator checks the Component against the sw model; the manifest tests check
that the config hash is stable and round-trips; the synthesis smoke test compares iCE40 counts
with the Yosys anchor (``anchors.md`` §4.2: 8×8 unsigned ``a*b`` is 159 SB_LUT4 + 10 SB_CARRY).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
import unittest

import pytest
import torch
from amaranth.hdl import Shape
from amaranth.sim import Simulator
from mixpe.hw.generate import (
    config_from_manifest,
    config_hash,
    generate,
    load_manifest,
)
from mixpe.hw.mult import create, hw_class, hw_families, sw_config
from mixpe.hw.mult.exact import ExactMultiplier
from mixpe.sw.mult import multiplier

# several tests build Components only to look at their signature or config
pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")


def _simulate(dut, pairs):
    """Products that the Amaranth simulation of ``dut`` gives for operand code ``pairs``."""
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


def _expected(cfg, pairs):
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    return cfg.mul_codes(a, b).tolist()


class ExactMultiplierTestCase(unittest.TestCase):
    def _check_random(self, count=300, seed=1, **params):
        dut = ExactMultiplier(**params)
        cfg = dut.config
        rng = random.Random(seed)
        na, nb = cfg.a_format.bits, cfg.b_format.bits
        corners = [(a, b) for a in (0, 1, (1 << na) - 1, 1 << (na - 1))
                   for b in (0, 1, (1 << nb) - 1, 1 << (nb - 1))]
        pairs = corners + [(rng.getrandbits(na), rng.getrandbits(nb)) for _ in range(count)]
        self.assertEqual(_simulate(dut, pairs), _expected(cfg, pairs), cfg.spec)

    def test_random_signed(self):
        self._check_random(n=8)

    def test_random_unsigned(self):
        self._check_random(n=8, sa=False, sb=False)

    def test_random_mixed_widths_and_signs(self):
        self._check_random(n=6, nb=3, sa=False, sb=True)
        self._check_random(n=5, nb=7, sa=True, sb=False)

    def test_random_wide(self):
        self._check_random(count=100, n=16, nb=12)

    def test_one_bit(self):
        self._check_random(count=0, n=1)

    def test_exhaustive_4bit(self):
        dut = ExactMultiplier(n=4)
        pairs = [(a, b) for a in range(16) for b in range(16)]
        self.assertEqual(_simulate(dut, pairs), dut.config.table().flatten().tolist())

    def test_ports(self):
        dut = ExactMultiplier(n=8, sa=False, sb=False)
        members = dut.signature.members
        self.assertEqual(Shape.cast(members["a"].shape), Shape(8, signed=False))
        self.assertEqual(Shape.cast(members["b"].shape), Shape(8, signed=False))
        self.assertEqual(Shape.cast(members["p"].shape), Shape(17, signed=True))
        self.assertEqual(dut.latency, 0)
        self.assertEqual(dut.config, multiplier("exact:sa=0,sb=0"))

    def test_parameters_are_keyword_only_and_checked(self):
        with self.assertRaises(TypeError):
            ExactMultiplier(8)
        with self.assertRaisesRegex(ValueError, "n=0"):
            ExactMultiplier(n=0)
        with self.assertRaises(ValueError):
            ExactMultiplier(n=8, nb=40)


class RegistryTestCase(unittest.TestCase):
    def test_create_from_spec_and_config(self):
        dut = create("exact:n=6,sb=0")
        self.assertIsInstance(dut, ExactMultiplier)
        self.assertEqual(dut.config.spec, "exact:n=6,sb=0")
        self.assertIsInstance(create(multiplier("exact")), ExactMultiplier)
        self.assertIs(hw_class("exact"), ExactMultiplier)
        self.assertIn("exact", hw_families())

    def test_unknown_spec(self):
        with self.assertRaisesRegex(ValueError, "unknown mult family"):
            create("nosuch:n=8")
        with self.assertRaisesRegex(ValueError, "out of range"):
            create("exact:n=99")

    def test_decoded_formats(self):
        cfg = sw_config("exact:n=4", "int:bits=4,signed=1", "int:bits=4,signed=1")
        self.assertEqual(cfg.family, "decoded")
        dut = create(cfg)
        pairs = [(a, b) for a in range(16) for b in range(16)]
        self.assertEqual(_simulate(dut, pairs), cfg.table().flatten().tolist())


class ManifestTestCase(unittest.TestCase):
    def setUp(self):
        import tempfile

        self._tmp = tempfile.mkdtemp(prefix="mixpe-manifest-")
        self.addCleanup(shutil.rmtree, self._tmp, True)

    def test_round_trip(self):
        cfg = multiplier("exact:sa=0,sb=0")
        t0 = time.perf_counter()
        man = generate(create(cfg), cfg, self._tmp, "mul8u")
        self.assertLess(time.perf_counter() - t0, 30)  # seconds, not minutes
        back = load_manifest(self._tmp)
        self.assertEqual(back["config_hash"], man["config_hash"])
        self.assertEqual(config_from_manifest(back), cfg)
        self.assertEqual(back["config"]["spec"], "exact:sa=0,sb=0")
        self.assertEqual(back["config"]["params"], {"n": 8, "nb": 0, "sa": False, "sb": False})
        self.assertEqual(back["latency"], 0)
        self.assertEqual(back["ports"], [
            {"name": "a", "dir": "in", "width": 8, "signed": False},
            {"name": "b", "dir": "in", "width": 8, "signed": False},
            {"name": "p", "dir": "out", "width": 17, "signed": True},
        ])
        with open(self._tmp + "/mul8u.v") as f:
            self.assertIn("module mul8u(", f.read())
        for tool in ("amaranth", "yosys", "python"):
            self.assertTrue(back["tools"][tool], tool)

    def test_hash_is_stable(self):
        cfg = multiplier("exact")
        h = config_hash(cfg)
        self.assertEqual(h, config_hash(multiplier("exact:n=8,nb=0,sa=1,sb=1")))
        self.assertNotEqual(h, config_hash(multiplier("exact:sa=0")))
        # another interpreter (other hash seed, fresh registries) gives the same digest
        out = subprocess.run(
            [sys.executable, "-c", "from mixpe.hw.generate import config_hash; "
             "from mixpe.sw.mult import multiplier; print(config_hash(multiplier('exact')))"],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": "123"},
        )
        self.assertEqual(out.stdout.strip(), h)
        a = generate(create(cfg), cfg, self._tmp + "/1", "m")
        b = generate(create(cfg), cfg, self._tmp + "/2", "m")
        self.assertEqual(a["config_hash"], b["config_hash"])
        self.assertEqual(a["verilog_sha256"], b["verilog_sha256"])

    def test_tampered_manifest_is_refused(self):
        cfg = multiplier("exact")
        generate(create(cfg), cfg, self._tmp, "m")
        path = self._tmp + "/manifest.json"
        with open(path) as f:
            man = json.load(f)
        man["config"]["params"]["n"] = 7
        with open(path, "w") as f:
            json.dump(man, f)
        with self.assertRaisesRegex(ValueError, "hash"):
            load_manifest(path)


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_synth_ice40_exact_8x8_unsigned():
    """iCE40 counts of exact 8×8 unsigned sit near the anchor (159 LUT4 + 10 carry)."""
    from mixpe.hw.synth import synth

    rep = synth("exact:sa=0,sb=0", target="ice40")
    r = rep["resources"]
    assert 159 * 0.8 <= r["lut4"] <= 159 * 1.2, r
    assert 5 <= r["carry"] <= 20, r
    assert r["ff"] == 0 and r["dsp"] == 0 and r["bram"] == 0, r
    assert rep["dsp"] is False
    assert rep["fmax_mhz"] is not None and 15 < rep["fmax_mhz"] < 200, rep


def test_cli_generate_and_errors(tmp_path, capsys):
    from mixpe.sim.cli import main

    assert main(["generate", "--pe", "exact:n=8,sa=0,sb=0", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "exact_sa0_sb0.v" in out and "manifest.json" in out
    assert load_manifest(tmp_path)["config"]["spec"] == "exact:sa=0,sb=0"
    assert main(["generate", "--pe", "nosuch", "-o", str(tmp_path)]) == 2
    assert "unknown mult family 'nosuch'" in capsys.readouterr().err
    assert main(["generate", "--pe", "exact:n=0", "-o", str(tmp_path)]) == 2
    assert "n=0 is out of range" in capsys.readouterr().err
    assert main(["sim", "--pe", "exact:q=1"]) == 2
    assert "unknown key 'q'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_cli_synth_ecp5_json(capsys):
    """ECP5 counts as JSON, resource counts only (no place and route)."""
    from mixpe.sim.cli import main

    assert main(["synth", "--pe", "exact:n=4,sa=0,sb=0", "--target", "ecp5", "--no-fmax",
                 "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["target"] == "ecp5" and rep["dsp"] is False and rep["fmax_mhz"] is None
    assert 15 <= rep["resources"]["lut4"] <= 60 and rep["resources"]["dsp"] == 0
