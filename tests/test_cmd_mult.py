"""``mixpe mult``: JSON metrics, table export, the shipped table and error exits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from mixpe.sim.cli import main
from mixpe.sw.cmd_mult import shipped_metrics_table
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.catalog import SHIPPED


def test_metrics_json(capsys):
    assert main(["mult", "roup:n=8,p=1,r=4", "--metrics", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"mae", "wce", "mred", "ep", "mse", "bias"} <= set(out)
    assert out["spec"] == "roup:p=1,r=4" and out["wce"] == 1264


def test_describe_json_without_metrics(capsys):
    assert main(["mult", "lutna", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["a_bits"], out["b_bits"], out["b_encoding"], out["out_bits"]) == (8, 9, "sm", 17)
    assert "mae" not in out


def test_table_export(tmp_path, capsys):
    path = tmp_path / "t.npy"
    assert main(["mult", "axbxp:n=8,k=2,l=2", "--table", str(path)]) == 0
    assert str(path) in capsys.readouterr().out.replace("\n", "")
    t = np.load(path)
    assert t.shape == (256, 256) and t.dtype == np.int64
    assert np.array_equal(t, multiplier("axbxp:l=2").table().numpy())


def test_table_export_with_json_keeps_stdout_clean(tmp_path, capsys):
    path = tmp_path / "t.npy"
    assert main(["mult", "exact:n=4,sa=0", "--table", str(path), "--metrics", "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["wce"] == 0
    assert "wrote" in cap.err
    # rows: unsigned codes 0..15; columns: two's-complement codes of -8..7
    want = np.outer(np.arange(16), np.r_[np.arange(8), np.arange(-8, 0)])
    assert np.array_equal(np.load(path), want)


@pytest.mark.parametrize("argv, message", [
    (["mult", "roup:p=9"], r"roup: p=9 is out of range; allowed: p in [0, 4]"),
    (["mult", "axbxp:k=3"], r"k=3 does not divide n=8"),
    (["mult", "nosuch"], r"unknown mult family"),
    (["mult"], r"give a multiplier SPEC"),
])
def test_bad_spec_exits_2(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixpe mult: error:") and message in err


def test_human_output(capsys):
    assert main(["mult", "roup:p=1", "--metrics"]) == 0
    out = capsys.readouterr().out
    assert "RoupMultiplier" in out and "WCE" in out and "256" in out


@pytest.mark.parametrize("argv", [["mult", "--all"], ["mult", "all"]])
def test_all_prints_every_shipped_multiplier(capsys, argv, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")   # rich would fold long specs at 80 columns
    assert main(argv) == 0
    out = capsys.readouterr().out
    for spec in SHIPPED:
        assert spec in out
    assert "MRED%" in out and "EP%" in out


def test_all_json(capsys):
    assert main(["mult", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["spec"] for r in rows] == list(SHIPPED)


def test_shipped_metrics_table_for_the_demo():
    from rich.console import Console

    console = Console(record=True, width=100)
    rows = shipped_metrics_table(console)
    assert len(rows) == len(SHIPPED)
    text = console.export_text()
    assert "Shipped multipliers" in text and "table:path=mul8u_trunc7.npy" in text
    assert torch.is_tensor(multiplier(SHIPPED[0]).table())
