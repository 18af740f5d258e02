"""Boards: registry, ``mixpe flash`` (dry run, missing tool/bitstream/board), the YoWASP build
(manifest beside the bitstream, cache, timing failure), the board top's clocking.

The builds here use the UART loopback SoC (``--soc echo``, seconds of yosys/nextpnr): they check
the flow, not the core. ``make test-boards`` builds the real bitstreams of both boards; set
``MIXPE_BOARD_TESTS=1`` to run the slow cases here too (an ECP5 build that must miss timing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
from mixpe.boards import BOARDS, get_board
from mixpe.boards.build import (
    BoardBuildError,
    _over,
    _parse_failure,
    build_board,
    flash,
    flash_command,
)
from mixpe.sim.cli import main

slow_boards = pytest.mark.skipif(os.environ.get("MIXPE_BOARD_TESTS") != "1",
                                 reason="set MIXPE_BOARD_TESTS=1 (make test-boards)")


def test_registry_and_unknown_board():
    assert set(BOARDS) == {"icebreaker", "ulx3s"}
    assert get_board("icebreaker").preset == "ice40-4x4"
    with pytest.raises(ValueError, match="board must be one of icebreaker, ulx3s"):
        get_board("arty")
    with pytest.raises(SystemExit):  # argparse rejects it before any work
        main(["flash", "--board", "arty", "--dry-run"])


def _fake_bitstream(tmp_path, board, name=None, manifest_board=None):
    b = get_board(board)
    path = tmp_path / (name or f"top.{b.bitstream}")
    path.write_bytes(b"\x00\xff" * 64)
    m = {"kind": "bitstream", "board": manifest_board or board, "bitstream": path.name,
         "bitstream_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    return path


def test_flash_dry_run_prints_the_exact_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ICEPROG", raising=False)
    monkeypatch.delenv("OPENFPGALOADER", raising=False)
    ice = _fake_bitstream(tmp_path, "icebreaker")
    assert main(["flash", "--board", "icebreaker", str(ice), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == f"iceprog {ice.resolve()}"
    (tmp_path / "u").mkdir()
    bit = _fake_bitstream(tmp_path / "u", "ulx3s")
    assert main(["flash", "--board", "ulx3s", str(bit), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == f"openFPGALoader -b ulx3s -m {bit.resolve()}"
    monkeypatch.setenv("OPENFPGALOADER", "/opt/ofl/bin/openFPGALoader")
    assert flash_command("ulx3s", bit)[0] == "/opt/ofl/bin/openFPGALoader"


def test_flash_errors_are_clear(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ICEPROG", raising=False)
    ice = _fake_bitstream(tmp_path, "icebreaker")
    # the programmer is missing
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="iceprog .*not on PATH.*ICEPROG"):
        flash("icebreaker", ice)
    assert main(["flash", "--board", "icebreaker", str(ice)]) == 2
    assert "iceprog" in capsys.readouterr().err
    # no bitstream given and none built
    with pytest.raises(FileNotFoundError, match="no bitstream for icebreaker.*mixpe build"):
        flash("icebreaker", root=tmp_path / "nothing", dry_run=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        flash("icebreaker", tmp_path / "missing.bin", dry_run=True)
    # wrong file type, wrong board, edited file
    with pytest.raises(ValueError, match=r"must be a \.bit file"):
        flash("ulx3s", ice, dry_run=True)
    (tmp_path / "o").mkdir()
    other = _fake_bitstream(tmp_path / "o", "icebreaker", manifest_board="ulx3s")
    with pytest.raises(ValueError, match="built for board 'ulx3s'"):
        flash("icebreaker", other, dry_run=True)
    ice.write_bytes(b"edited")
    with pytest.raises(ValueError, match="differs from the bitstream its manifest describes"):
        flash("icebreaker", ice, dry_run=True)


def test_flash_runs_the_programmer(tmp_path, monkeypatch):
    """With a programmer on PATH, flash runs exactly the dry-run command."""
    ice = _fake_bitstream(tmp_path, "icebreaker")
    tool = tmp_path / "bin" / "fakeprog"
    tool.parent.mkdir()
    log = tmp_path / "calls"
    tool.write_text(f'#!/bin/sh\necho "$@" > {log}\n')
    tool.chmod(0o755)
    monkeypatch.setenv("ICEPROG", str(tool))
    assert flash("icebreaker", ice, log=lambda s: None) == [str(tool), str(ice.resolve())]
    assert log.read_text().strip() == str(ice.resolve())
    tool.write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(RuntimeError, match="exit code 3"):
        flash("icebreaker", ice, log=lambda s: None)


def test_failure_log_parsing():
    log = ("Info: Device utilisation:\nInfo: \t ICESTORM_LC:  6011/ 5280   113%\n"
           "Info: \t ICESTORM_RAM:    30/   30   100%\n"
           "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type "
           "'ICESTORM_LC'\n")
    errors, util = _parse_failure(log)
    assert util["ICESTORM_LC"] == {"used": 6011, "available": 5280}
    assert _over(util) == ["ICESTORM_LC 6011/5280"]
    assert errors == ["Unable to place cell 'x', no BELs remaining to implement cell type "
                      "'ICESTORM_LC'"]


def test_ice40_clock_must_be_the_oscillator():
    from mixpe.boards.build import board_config
    from mixpe.boards.top import BoardTop

    b = get_board("icebreaker")
    with pytest.raises(ValueError, match="host.clk_hz must be 12000000 on icebreaker"):
        BoardTop(b, board_config(b, clk_hz=24_000_000), soc="echo")
    with pytest.raises(ValueError, match="soc must be one of"):
        from mixpe.boards.top import make_soc

        make_soc("cpu", None, clocks_per_bit=4)


@pytest.fixture(scope="module")
def echo_build(tmp_path_factory):
    if shutil.which("sh") is None:
        pytest.skip("no sh")
    root = tmp_path_factory.mktemp("boards")
    return root, build_board("icebreaker", soc="echo", root=root, log=lambda s: None)


@pytest.mark.xdist_group("yowasp")
def test_build_writes_manifest_beside_bitstream(echo_build):
    from mixpe.hw.generate import load_manifest
    from mixpe.sw.core_config import CORE_PRESETS

    root, res = echo_build
    assert not res.cached
    assert res.bitstream.is_file() and res.bitstream.suffix == ".bin"
    man_path = res.bitstream.parent / "manifest.json"
    m = load_manifest(man_path)  # checks config_hash against the config
    cfg = CORE_PRESETS["ice40-4x4"]
    assert m["board"] == "icebreaker" and m["bitstream"] == res.bitstream.name
    assert m["config_hash"] == cfg.hash
    assert m["bitstream_sha256"] == hashlib.sha256(res.bitstream.read_bytes()).hexdigest()
    assert m["uart"]["clocks_per_bit"] == 104 and m["clock"]["core_hz"] == 12_000_000
    assert m["timing_met"] and all(f["achieved_mhz"] >= 12 for f in m["fmax"].values())
    assert m["utilization"]["ICESTORM_LC"]["used"] > 0
    # cached by the build plan digest; flash finds it
    again = build_board("icebreaker", soc="echo", root=root, log=lambda s: None)
    assert again.cached and again.bitstream == res.bitstream
    assert flash_command("icebreaker", root=root, env={}) == ["iceprog",
                                                             str(res.bitstream.resolve())]


@pytest.mark.xdist_group("yowasp")
def test_cli_build_prints_utilization_and_fmax(echo_build, capsys):
    root, res = echo_build
    assert main(["build", "--board", "icebreaker", "--soc", "echo", "--root", str(root),
                 "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["bitstream_sha256"] == res.manifest["bitstream_sha256"]
    assert main(["build", "--board", "icebreaker", "--soc", "echo", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "ICESTORM_LC" in out and "Fmax" in out and "met" in out


@slow_boards
@pytest.mark.xdist_group("yowasp")
def test_build_fails_clearly_on_timing(tmp_path, capsys):
    """A 400 MHz ECP5 clock (the loopback reaches ~180 MHz): exit 1, no manifest."""
    with pytest.raises(BoardBuildError, match="misses timing") as e:
        build_board("ulx3s", soc="echo", root=tmp_path, log=lambda s: None,
                    config=None, clk_hz=400_000_000)
    assert e.value.report["fmax"]
    assert not list(tmp_path.glob("boards/ulx3s-*/manifest.json"))
    assert main(["build", "--board", "ulx3s", "--soc", "echo", "--clk-mhz", "400",
                 "--root", str(tmp_path)]) == 1
    assert "misses timing" in capsys.readouterr().out
