"""The systolic array: PE → Tile → Mesh → SkewedMesh → SystolicArray (Gemmini layering).

Every PE is :class:`mixpe.hw.pe.ProcessingElement`, unchanged. A :class:`Tile` is a
combinational grid of PEs (``tile_rows × tile_cols``, 1×1 by default) with the per-PE state the
PE itself does not hold (weight registers, overflow flags); a :class:`Mesh` is a grid of tiles
with registers between them; a :class:`SkewedMesh` adds the input skew and output de-skew shift
registers, so its ports are plain vectors with a fixed timing; :class:`SystolicArray` is the
stream-facing wrapper the core (``hw/core.py``) drives. ``R = rows``, ``C = cols``.

Notation: ``L`` = the PE latency (``ProcessingElement.latency`` = ``1 + pipeline`` for the
shipped, combinational multipliers); ``hd(c) = c // tile_cols`` (registers on the horizontal
path up to column ``c``), ``vd(r) = r // tile_rows`` (registers on the vertical path, OS only).
A beat is *accepted* in cycle ``T`` when ``valid & ready`` is high in ``T``.

Weight-stationary (``dataflow="ws"``)
-------------------------------------
Row ``r`` holds weight ``k = r`` of the tile, column ``c`` output channel ``n = c``. Every PE
runs in ``load`` mode with ``in_d`` = the partial sum from the PE above, so each output is
``acc = ovf(…ovf(ovf(d + p_0) + p_1)… + p_{R-1})``: the saturation/wrap of ``sw/emulate`` is
applied after every addition in k order, bit-exactly, also across K tiles (``d`` is the
stored accumulator).

* ``preload`` stream, one beat = one weight row: ``{b: [C] b-codes, sel: [C] variant}``
  (``sel`` only with variants). The beats shift down a *shadow* register set: beat ``j`` of a
  tile ends in row ``R-1-j``, so send **k = R-1 first, k = 0 last** (exactly ``R`` beats;
  padding rows need ``b`` = 0 and ``a`` = 0). ``sel`` is stored with each weight; send the same
  value in every beat of a tile for a per-column variant.
* ``i_stream``, one beat = one activation row ``m``: ``{a: [R] a-codes (a[m, k=r]),
  d: [C] initial accumulators (bias / stored partial sums / 0), swap: 1, tag}``. ``swap = 1``
  makes the shadow weights active from this row on (double buffering): it switches every PE
  exactly when this row reaches it (a wave), so rows before it use the old weights.
* ``o_stream``, one beat per ``i_stream`` beat, in order: ``{c: [C] accumulators,
  ovf: [C] overflow flags, tag}``; ``ovf[c]`` = some addition of that output (over the
  ``R`` rows of this pass) left the accumulator range — OR it over passes.
* Pacing (done by the ready signals, the controller only has to honour them):
  ``preload.ready = (beats since the last swap < R) and no swap wave in flight``; a beat with
  ``swap = 1`` waits (``i_stream.ready = 0``) until ``R`` preload beats arrived. After a swap
  row accepted in ``T0`` the wave occupies the shadow registers until cycle
  ``T0 + swap_wave - 1``, ``swap_wave = (R-1)·L + hd(C-1)``; preload beats are accepted again
  from ``T0 + swap_wave``. Rows without ``swap`` are always accepted.
* Timing: a row accepted in ``T`` comes out in ``T + latency``, ``latency = 1 + R·L + hd(C-1)``
  (``R + C`` for 1×1 tiles and ``pipeline=0``). ``M`` rows back to back keep one row per cycle:
  first row in ``T0``, last result in ``T0 + M - 1 + latency``.

Output-stationary (``dataflow="os"``)
-------------------------------------
Row ``r`` is output row ``m = r``, column ``c`` output channel ``n = c``; PE ``(r, c)``
accumulates ``Σ_k p(a[r, k], b[k, c])`` in k order over as many beats as the tile has (K is
time, any length).

* ``i_stream`` beat: ``{a: [R] a-codes (a[r, k]), b: [C] b-codes (b[k, c]), sel: [C] variant
  (with variants; travels with b), d: [C] accumulators, shift: 1, tag}``.
  ``shift = 0``: a *compute* beat (one k); ``a``, ``b``, ``sel`` are used.
  ``shift = 1``: a *shift* beat: every column moves its accumulators one row down (lockstep),
  the bottom row's value leaves as an output beat and ``d`` enters the top row. ``R`` shift
  beats unload the previous tile and preload the next one: shift beat ``j`` returns row
  ``m = R-1-j`` of the previous tile and loads ``d`` as the initial accumulator of row
  ``m = R-1-j`` of the next (0 or a bias). After reset the accumulators hold 0.
* A tile is ``R`` shift beats then ``K`` compute beats; finish with ``R`` shift beats.
* ``o_stream``: one beat per *shift* beat (``{c, ovf, tag}``); ``ovf`` = some accumulation
  of that output since its preload left the range.
* Pacing (by ``i_stream.ready``): shift beats are at least ``L`` cycles apart; a compute beat
  waits until ``S + 1`` cycles after the last shift beat, ``S = vd(R-1) + L - 1``.
  A tile therefore takes ``(R-1)·L + 1 + S + K`` cycles (``K + 2R - 1`` for 1×1, pipeline 0).
* Timing: a shift beat accepted in ``T`` comes out in ``T + latency``,
  ``latency = L + vd(R-1) + hd(C-1)`` (``R + C - 1`` for 1×1 tiles, pipeline 0).

Both dataflows
--------------
* **The array cannot stall.** ``o_stream.ready`` is ignored: the consumer must take a beat
  whenever ``valid`` is high (the core writes it to the accumulator scratchpad; hold
  ``ready`` at 1). A stalling consumer must pace ``i_stream`` itself (stop issuing
  ``latency`` cycles ahead) or buffer ``latency`` beats. The input ``ready`` signals only
  implement the pacing rules above; they depend on internal registers and on
  ``i_stream.payload.swap`` / ``.shift`` only (no path from ``o_stream``).
* ``mode`` (composable PEs only): the array-wide precision, fed to every PE. Hold it
  constant while ``busy``; the host packs ``lanes(q)`` consecutive k values into each ``a``/``b``
  code (lane ``t`` = bits ``[q·t, q·t+q)``).
* ``busy``: some accepted beat has not produced its effect yet (an output beat pending, or a
  swap wave / OS bubble in progress). FENCE waits for ``~busy``.
* ``tag`` (``tag_bits > 0``): an opaque payload delayed with the beat (e.g. the acc address
  and the accumulate flag); OS: the tag of the shift beat.

Port list of :class:`SystolicArray` (``X`` = ``a_bits`` = ``pe.port_bits[0]``, ``W`` =
``b_bits``, ``A`` = ``acc_bits``, ``S`` = ``sel_bits``)::

    i_stream: In(stream.Signature(StructLayout({
        "a": ArrayLayout(X, R), ["b": ArrayLayout(W, C), "sel": ArrayLayout(S, C)]  (os)
        "d": ArrayLayout(signed(A), C), "swap"(ws) | "shift"(os): 1, ["tag": tag_bits]})))
    preload:  In(stream.Signature(StructLayout({"b": ArrayLayout(W, C),
                                               ["sel": ArrayLayout(S, C)]})))   (ws only)
    o_stream: Out(stream.Signature(StructLayout({"c": ArrayLayout(signed(A), C),
                                    "ovf": ArrayLayout(1, C), ["tag": tag_bits]})))
                                                                      (ready ignored)
    mode: In(range(len(pe.modes)))     (composable PEs only)
    busy: Out(1)

Generating Verilog
------------------
``amaranth.back.verilog.convert(array)`` elaborates every PE (a 16×16 int8 array: about a
minute). :func:`convert` gives the same logic with one tile module instantiated per tile
(16×16 int8 WS: ~6 s for construction + conversion, 0.5 MB of Verilog, plus ~4 s of Python
imports); the cocotb tests (``sim/test_array.py``) simulate that Verilog. A core that holds
the array can be converted with it too. Resources (``hw/synth.py``, no DSP, 4×4 exact int8 WS,
20-bit saturating accumulators): iCE40 4830 LUT4 + 505 carries, 1126 FF; ECP5 6672 LUT4,
1126 FF.

The same formulas as code: :func:`latency` and :func:`timing` (pure Python, no Amaranth
needed to evaluate them; ``sw/cyclemodel.py`` may copy them).

>>> from mixpe.sw.pe import PEConfig
>>> latency(4, 4, PEConfig())                      # WS, 1×1 tiles, pipeline 0: R + C
8
>>> latency(16, 16, PEConfig(pipeline=1))          # 1 + 16·2 + 15
48
>>> latency(4, 4, PEConfig(), dataflow="os")       # R + C - 1
7
>>> t = timing(4, 4, PEConfig(), dataflow="os"); t["shift_spacing"], t["compute_gap"]
(1, 4)
"""

from __future__ import annotations

import contextvars
import types

from amaranth.hdl import ClockSignal, Instance, Module, Mux, ResetSignal, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from mixpe.sw.core_config import ArrayConfig
from mixpe.sw.pe import PEConfig

from .pe import ProcessingElement

__all__ = ["Tile", "Mesh", "SkewedMesh", "SystolicArray", "latency", "timing", "convert",
           "DATAFLOWS"]

DATAFLOWS = ("ws", "os")


# -- timing formulas (pure Python) -----------------------------------------------------------

def _pe_latency(pe) -> int:
    if isinstance(pe, int) and not isinstance(pe, bool):
        return pe
    if isinstance(pe, ProcessingElement):
        return pe.latency
    if isinstance(pe, PEConfig):
        return pe.latency  # 1 + pipeline: every shipped core multiplier is combinational
    raise TypeError(f"pe must be a PEConfig, a ProcessingElement or a PE latency, not {pe!r}")


def timing(rows: int, cols: int, pe, *, dataflow: str = "ws", tile_rows: int = 1,
           tile_cols: int = 1) -> dict:
    """The timing contract of a ``rows × cols`` array as numbers (see the module docstring).

    Keys: ``pe_latency`` (L), ``latency`` (input beat → output beat), and for WS
    ``swap_wave`` (preload blocked for that many cycles after a swap row), ``preload_beats``
    (R); for OS ``shift_spacing`` (L), ``compute_gap`` (S + 1: cycles from the last shift beat
    to the first compute beat), ``tile_overhead`` (cycles of a tile beyond its K compute
    beats). ``pe`` is a :class:`PEConfig`, a :class:`ProcessingElement` or the PE latency.
    """
    if dataflow not in DATAFLOWS:
        raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, not {dataflow!r}")
    L = _pe_latency(pe)
    hd = (cols - 1) // tile_cols
    vd = (rows - 1) // tile_rows
    if dataflow == "ws":
        return {"pe_latency": L, "latency": 1 + rows * L + hd,
                "swap_wave": (rows - 1) * L + hd, "preload_beats": rows}
    s = vd + L - 1
    return {"pe_latency": L, "latency": L + vd + hd, "shift_spacing": L,
            "compute_gap": s + 1, "tile_overhead": (rows - 1) * L + 1 + s}


def latency(rows: int, cols: int, pe, *, dataflow: str = "ws", tile_rows: int = 1,
            tile_cols: int = 1) -> int:
    """Cycles from accepting an input beat to its output beat.

    WS: ``1 + rows·L + (cols-1)//tile_cols``; OS (shift beat → output):
    ``L + (rows-1)//tile_rows + (cols-1)//tile_cols``; ``L`` = the PE latency.
    ``M`` WS rows streamed back to back take ``M - 1 + latency`` cycles from the first
    accepted row to the last output beat (inclusive of neither end: last output in
    ``T0 + M - 1 + latency``).
    """
    return timing(rows, cols, pe, dataflow=dataflow, tile_rows=tile_rows,
                  tile_cols=tile_cols)["latency"]


# -- helpers ---------------------------------------------------------------------------------

def _delay(m: Module, value, n: int, name: str, *, reset_less: bool = True):
    """``value`` delayed by ``n`` clock cycles (a shift register of ``n`` stages)."""
    for i in range(n):
        reg = Signal(value.shape(), name=f"{name}_d{i}", reset_less=reset_less)
        m.d.sync += reg.eq(value)
        value = reg
    return value


def _taps(m: Module, value, taps, name: str, *, reset_less: bool = True) -> dict:
    """One shift register, read at several delays: ``{delay: value delayed by it}``."""
    out = {0: value}
    cur = value
    for i in range(max(taps, default=0)):
        reg = Signal(value.shape(), name=f"{name}_d{i}", reset_less=reset_less)
        m.d.sync += reg.eq(cur)
        cur = reg
        out[i + 1] = cur
    return {t: out[t] for t in taps}


_PE_INFO: dict = {}


def _pe_info(pe: PEConfig) -> dict:
    """Latency and extra inputs of the PE of ``pe`` (one probe PE per config, elaborated once
    so that no sub-unit is reported as unused)."""
    info = _PE_INFO.get(pe)
    if info is None:
        from amaranth.hdl import Fragment

        probe = ProcessingElement.from_config(pe)
        Fragment.get(probe, None)
        members = probe.signature.members
        info = _PE_INFO[pe] = {
            "latency": probe.latency,
            "extra": probe.extra_inputs,
            "mode_shape": members["in_mode"].shape if "in_mode" in members else None,
            "sel_bits": Shape.cast(members["in_sel"].shape).width if "in_sel" in members else 0,
        }
    return info


#: During :func:`convert`: ``(prefix, {key: [module name, factory]})``; the Mesh then
#: instantiates its tiles as one Verilog module (one definition, one instance per tile)
#: instead of elaborating every tile (and PE) again.
_UNIT_MODULES: contextvars.ContextVar = contextvars.ContextVar("mixpe_unit_modules",
                                                               default=None)


def _make_unit(m: Module, name: str, key, factory):
    """``factory()`` at ``m.submodules[name]``; inside :func:`convert`, an ``Instance`` of
    the unit converted once per ``key`` instead, returned as an object whose attributes are
    its port signals (lists for ``Member.array`` ports), like the component's own."""
    mode = _UNIT_MODULES.get()
    if mode is None:
        unit = factory()
        m.submodules[name] = unit
        return unit
    prefix, registry = mode
    entry = registry.get(key)
    if entry is None:
        entry = registry[key] = [f"{prefix}__{name.split('_')[0]}{len(registry)}", factory()]
    module, proto = entry
    ports, kwargs = {}, {}
    for path, member, _ in proto.signature.flatten(proto):
        port = "__".join(str(p) for p in path)
        sig = Signal(member.shape, name=f"{name}__{port}")
        kwargs[("i_" if member.flow == In else "o_") + port] = sig
        if len(path) == 1:
            ports[path[0]] = sig
        else:
            ports.setdefault(path[0], {})[path[1]] = sig
    for k, v in ports.items():
        if isinstance(v, dict):
            ports[k] = [v[i] for i in range(len(v))]
    m.submodules[name] = Instance(module, i_clk=ClockSignal(), i_rst=ResetSignal(), **kwargs)
    return types.SimpleNamespace(**ports)


def convert(component, *, name: str = "top", **kwargs) -> str:
    """Verilog of ``component`` (an array, or a core holding one), in which the tile (with
    its PEs) is converted **once** as module ``<name>__tile0`` and instantiated per tile.

    The same logic as ``amaranth.back.verilog.convert(component, name=name, **kwargs)`` (the
    same PE, Tile and wiring), but the Amaranth/Yosys work is that of one tile plus the mesh
    structure, not of ``rows·cols`` PEs: use it for big arrays (16×16: seconds instead of a
    minute). The Amaranth simulator needs the plain component (it elaborates every PE).
    With several distinct arrays (configs) inside ``component``, each gets its modules.
    """
    from amaranth.back import verilog

    registry: dict = {}
    token = _UNIT_MODULES.set((name, registry))
    try:
        text = verilog.convert(component, name=name, **kwargs)
    finally:
        _UNIT_MODULES.reset(token)
    parts = [text]
    for module, proto in registry.values():
        parts.append(verilog.convert(proto, name=module, **kwargs))
    return "\n".join(parts)


def _check_dim(name: str, value, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, not {value!r}")
    return value


def _check_tiles(rows, cols, tile_rows, tile_cols):
    _check_dim("tile_rows", tile_rows)
    _check_dim("tile_cols", tile_cols)
    if rows % tile_rows or cols % tile_cols:
        raise ValueError(f"tile_rows={tile_rows} and tile_cols={tile_cols} must divide "
                         f"rows={rows} and cols={cols}")


class _ArrayBase(wiring.Component):
    """Shared parameter handling (the PE config with variants folded into its multiplier)."""

    def _setup(self, rows, cols, pe, dataflow, variants):
        try:
            self._setup_checked(rows, cols, pe, dataflow, variants)
        except Exception:
            self._MustUse__silence = True  # no UnusedElaboratable warning for a rejected config
            raise

    def _setup_checked(self, rows, cols, pe, dataflow, variants):
        _check_dim("rows", rows)
        _check_dim("cols", cols)
        if isinstance(pe, ProcessingElement):
            pe = pe.config
        if not isinstance(pe, PEConfig):
            raise TypeError(f"pe must be a PEConfig, not {pe!r}")
        if dataflow not in DATAFLOWS:
            raise ValueError(f"dataflow must be one of {', '.join(DATAFLOWS)}, "
                             f"not {dataflow!r}")
        variants = tuple(variants)
        self._rows, self._cols, self._dataflow = rows, cols, dataflow
        self._variants = variants
        self._base_pe = pe
        if variants:
            if pe.composable:
                raise ValueError(f"variants: {pe.mult} is composable (run-time precision); "
                                 "variants of composable multipliers are not supported")
            try:
                # plain variants fold into the core multiplier behind pe's decoders; format
                # variants make a code-port unit of decoded members (ArrayConfig.array_pe)
                pe = ArrayConfig(rows=1, cols=1, pe=pe, dataflow=dataflow,
                                 variants=variants).array_pe
            except ValueError as e:
                msg = str(e)
                raise ValueError(msg if msg.startswith("variants") else f"variants: {msg}") \
                    from None
        self._pe = pe
        info = _pe_info(pe)
        self._pe_latency = info["latency"]
        self._extra = info["extra"]
        self._a_bits, self._b_bits = pe.port_bits
        self._mode_shape = info["mode_shape"]
        self._sel_bits = info["sel_bits"]
        unknown = set(self._extra) - {"mode", "sel"}
        if unknown:
            raise ValueError(f"pe: core inputs {sorted(unknown)} are not supported by the array")

    # read-only accessors
    @property
    def rows(self) -> int:
        return self._rows

    @property
    def cols(self) -> int:
        return self._cols

    @property
    def dataflow(self) -> str:
        return self._dataflow

    @property
    def pe_config(self) -> PEConfig:
        """The PE every position instantiates (variants folded into its multiplier)."""
        return self._pe

    @property
    def pe_latency(self) -> int:
        return self._pe_latency

    @property
    def sel_bits(self) -> int:
        """Width of the variant select (0 without variants)."""
        return self._sel_bits

    def _edge_members(self, rows, cols) -> dict:
        """The edge ports shared by Tile and Mesh."""
        A = self._pe.acc_bits
        mem = {
            "in_a": In(self._a_bits).array(rows),
            "out_a": Out(self._a_bits).array(rows),
            "in_d": In(signed(A)).array(cols),
            "out_c": Out(signed(A)).array(cols),
            "in_flag": In(1).array(cols),
            "out_flag": Out(1).array(cols),
        }
        if self._dataflow == "ws":
            mem |= {
                "in_swap": In(1).array(rows),
                "out_swap": Out(1).array(rows),
                "in_w": In(self._b_bits).array(cols),
                "out_w": Out(self._b_bits).array(cols),
                "in_shift_w": In(1),
            }
            if self._sel_bits:
                mem |= {"in_wsel": In(self._sel_bits).array(cols),
                        "out_wsel": Out(self._sel_bits).array(cols)}
        else:
            mem |= {
                "in_valid": In(1).array(rows),
                "out_valid": Out(1).array(rows),
                "in_b": In(self._b_bits).array(cols),
                "out_b": Out(self._b_bits).array(cols),
                "in_shift": In(1).array(cols),
            }
            if self._sel_bits:
                mem |= {"in_sel": In(self._sel_bits).array(cols),
                        "out_sel": Out(self._sel_bits).array(cols)}
        if self._mode_shape is not None:
            mem["in_mode"] = In(self._mode_shape)
        return mem


# -- Tile -------------------------------------------------------------------------------------

class Tile(_ArrayBase):
    """A combinational grid of ``rows × cols`` PEs (Gemmini ``Tile.scala``).

    Operands pass through the PEs combinationally (``out_a = in_a``, OS: ``out_b = in_b``);
    the vertical accumulator chain ``out_c → in_d`` is registered by the PE accumulators.
    Per PE the Tile adds the state the PE does not hold:

    * WS: a *shadow* weight register (``shadow_{r}_{c}``, shifted down when ``in_shift_w``:
      ``in_w`` enters row 0, ``out_w`` is the bottom row's shadow) and an *active* one
      (``weight_{r}_{c}``, the PE's ``in_b``), copied from the shadow at the end of a cycle with
      ``in_swap`` of its row high; with variants the same for ``sel`` (``in_wsel``/``out_wsel``).
      PEs run with ``valid = load = 1`` and ``in_d`` from above. ``in_flag`` → ``out_flag``
      ORs each PE's per-addition overflow into the flag that travels with the partial sum
      (delayed by the PE latency ``L`` to stay aligned).
    * OS: PEs accumulate when ``in_valid`` (travelling with ``a``); ``in_shift[c]`` loads every
      PE of column ``c`` from the one above (``in_d`` at the top) in lockstep, and a flag
      register per PE follows the same chain so that ``out_flag`` is the flag of ``out_c``.

    Parameters (keyword-only): ``rows``, ``cols``, ``pe`` (:class:`PEConfig`, variants
    already folded in or given as ``variants``), ``dataflow``, ``variants``.

    Members: see :meth:`_ArrayBase._edge_members` — ``in_a/out_a`` (per row), ``in_d/out_c``,
    ``in_flag/out_flag`` (per column), WS ``in_swap/out_swap`` (per row), ``in_w/out_w``,
    ``in_wsel/out_wsel`` (per column), ``in_shift_w``; OS ``in_valid/out_valid`` (per row),
    ``in_b/out_b``, ``in_sel/out_sel``, ``in_shift`` (per column); ``in_mode``.
    """

    def __init__(self, *, rows=1, cols=1, pe=PEConfig(), dataflow="ws", variants=()):
        self._setup(rows, cols, pe, dataflow, variants)
        super().__init__(self._edge_members(rows, cols))

    def elaborate(self, platform):
        m = Module()
        R, C, L = self._rows, self._cols, self._pe_latency
        ws = self._dataflow == "ws"
        pes = [[None] * C for _ in range(R)]
        flag_out = [[None] * C for _ in range(R)]
        shadow = [[None] * C for _ in range(R)]
        shadow_sel = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                pe = ProcessingElement.from_config(self._pe)
                m.submodules[f"pe_{r}_{c}"] = pe
                pes[r][c] = pe
                left = pes[r][c - 1] if c else None
                above = pes[r - 1][c] if r else None
                m.d.comb += [
                    pe.in_a.eq(left.out_a if left else self.in_a[r]),
                    pe.in_d.eq(above.out_c if above else self.in_d[c]),
                    pe.in_clear.eq(0),
                ]
                if self._mode_shape is not None:
                    m.d.comb += pe.in_mode.eq(self.in_mode)
                flag_in = flag_out[r - 1][c] if r else self.in_flag[c]
                if ws:
                    sh = Signal(self._b_bits, name=f"shadow_{r}_{c}")
                    act = Signal(self._b_bits, name=f"weight_{r}_{c}")
                    shadow[r][c] = sh
                    swap = self.in_swap[r]
                    with m.If(self.in_shift_w):
                        m.d.sync += sh.eq(shadow[r - 1][c] if r else self.in_w[c])
                    with m.If(swap):
                        m.d.sync += act.eq(sh)
                    if self._sel_bits:
                        ssel = Signal(self._sel_bits, name=f"shadow_sel_{r}_{c}")
                        asel = Signal(self._sel_bits, name=f"sel_{r}_{c}")
                        shadow_sel[r][c] = ssel
                        with m.If(self.in_shift_w):
                            m.d.sync += ssel.eq(shadow_sel[r - 1][c] if r else self.in_wsel[c])
                        with m.If(swap):
                            m.d.sync += asel.eq(ssel)
                        m.d.comb += pe.in_sel.eq(asel)
                    m.d.comb += [pe.in_b.eq(act), pe.in_valid.eq(1), pe.in_load.eq(1)]
                    fd = _delay(m, flag_in, L, f"flag_{r}_{c}", reset_less=False)
                    fo = Signal(name=f"flag_out_{r}_{c}")
                    m.d.comb += fo.eq(fd | pe.out_overflow)
                    flag_out[r][c] = fo
                else:
                    m.d.comb += [
                        pe.in_b.eq(above.out_b if above else self.in_b[c]),
                        pe.in_valid.eq(left.out_valid if left else self.in_valid[r]),
                        pe.in_load.eq(self.in_shift[c]),
                    ]
                    if self._sel_bits:
                        m.d.comb += pe.in_sel.eq(above.out_sel if above else self.in_sel[c])
                    f = Signal(name=f"flag_{r}_{c}")
                    with m.If(self.in_shift[c]):
                        m.d.sync += f.eq(flag_in)
                    fo = Signal(name=f"flag_out_{r}_{c}")
                    m.d.comb += fo.eq(f | pe.out_overflow)
                    flag_out[r][c] = fo
        for r in range(R):
            m.d.comb += self.out_a[r].eq(pes[r][C - 1].out_a)
            if ws:
                m.d.comb += self.out_swap[r].eq(self.in_swap[r])
            else:
                m.d.comb += self.out_valid[r].eq(pes[r][C - 1].out_valid)
        for c in range(C):
            m.d.comb += [self.out_c[c].eq(pes[R - 1][c].out_c),
                         self.out_flag[c].eq(flag_out[R - 1][c])]
            if ws:
                m.d.comb += self.out_w[c].eq(shadow[R - 1][c])
                if self._sel_bits:
                    m.d.comb += self.out_wsel[c].eq(shadow_sel[R - 1][c])
            else:
                m.d.comb += self.out_b[c].eq(pes[R - 1][c].out_b)
                if self._sel_bits:
                    m.d.comb += self.out_sel[c].eq(pes[R - 1][c].out_sel)
        return m


# -- Mesh -------------------------------------------------------------------------------------

class Mesh(_ArrayBase):
    """A ``rows × cols`` grid of :class:`Tile` s (``tile_rows × tile_cols`` PEs each) with a
    register between neighbouring tiles on the systolic paths (Gemmini ``Mesh.scala``).

    Registered between tiles: ``a`` and WS ``swap`` / OS ``valid`` (horizontally, so they reach
    column ``c`` ``hd(c) = c // tile_cols`` cycles after entering the row), OS ``b``/``sel``
    (vertically, ``vd(r) = r // tile_rows``). Not registered (already registered, or lockstep
    by design): the accumulator chain ``out_c → in_d`` and its flags, the WS shadow chain
    ``out_w → in_w`` and ``in_shift_w``, the OS column ``in_shift`` (broadcast down the
    column). The ports are those of a Tile of the whole size, without skew (the SkewedMesh
    adds it). Tiles are named ``tile_{i}_{j}``.
    """

    def __init__(self, *, rows, cols, pe=PEConfig(), dataflow="ws", variants=(), tile_rows=1,
                 tile_cols=1):
        self._setup(rows, cols, pe, dataflow, variants)
        try:
            _check_tiles(rows, cols, tile_rows, tile_cols)
        except ValueError:
            self._MustUse__silence = True
            raise
        self._tile_rows, self._tile_cols = tile_rows, tile_cols
        super().__init__(self._edge_members(rows, cols))

    @property
    def tile_rows(self) -> int:
        return self._tile_rows

    @property
    def tile_cols(self) -> int:
        return self._tile_cols

    def elaborate(self, platform):
        m = Module()
        tr, tc = self._tile_rows, self._tile_cols
        def unit(i, j):
            return _make_unit(
                m, f"tile_{i}_{j}", ("tile", tr, tc, self._pe, self._dataflow),
                lambda: Tile(rows=tr, cols=tc, pe=self._pe, dataflow=self._dataflow))

        nr, nc = self._rows // tr, self._cols // tc
        ws = self._dataflow == "ws"
        tiles = [[unit(i, j) for j in range(nc)] for i in range(nr)]
        for i in range(nr):
            for j in range(nc):
                t = tiles[i][j]
                left = tiles[i][j - 1] if j else None
                above = tiles[i - 1][j] if i else None
                for rr in range(tr):
                    r = i * tr + rr
                    names = ["a", "swap"] if ws else ["a", "valid"]
                    for n in names:
                        src = (_delay(m, getattr(left, f"out_{n}")[rr], 1, f"{n}_{r}_t{j}",
                                      reset_less=(n == "a")) if left
                               else getattr(self, f"in_{n}")[r])
                        m.d.comb += getattr(t, f"in_{n}")[rr].eq(src)
                for cc in range(tc):
                    c = j * tc + cc
                    m.d.comb += [
                        t.in_d[cc].eq(above.out_c[cc] if above else self.in_d[c]),
                        t.in_flag[cc].eq(above.out_flag[cc] if above else self.in_flag[c]),
                    ]
                    if ws:
                        m.d.comb += t.in_w[cc].eq(above.out_w[cc] if above else self.in_w[c])
                        if self._sel_bits:
                            m.d.comb += t.in_wsel[cc].eq(above.out_wsel[cc] if above
                                                         else self.in_wsel[c])
                    else:
                        m.d.comb += t.in_shift[cc].eq(self.in_shift[c])
                        names = ["b", "sel"] if self._sel_bits else ["b"]
                        for n in names:
                            src = (_delay(m, getattr(above, f"out_{n}")[cc], 1,
                                          f"{n}_t{i}_{c}") if above
                                   else getattr(self, f"in_{n}")[c])
                            m.d.comb += getattr(t, f"in_{n}")[cc].eq(src)
                if ws:
                    m.d.comb += t.in_shift_w.eq(self.in_shift_w)
                if self._mode_shape is not None:
                    m.d.comb += t.in_mode.eq(self.in_mode)
        for i in range(nr):
            for rr in range(tr):
                r = i * tr + rr
                m.d.comb += self.out_a[r].eq(tiles[i][nc - 1].out_a[rr])
                if ws:
                    m.d.comb += self.out_swap[r].eq(tiles[i][nc - 1].out_swap[rr])
                else:
                    m.d.comb += self.out_valid[r].eq(tiles[i][nc - 1].out_valid[rr])
        for j in range(nc):
            for cc in range(tc):
                c = j * tc + cc
                bottom = tiles[nr - 1][j]
                m.d.comb += [self.out_c[c].eq(bottom.out_c[cc]),
                             self.out_flag[c].eq(bottom.out_flag[cc])]
                if ws:
                    m.d.comb += self.out_w[c].eq(bottom.out_w[cc])
                    if self._sel_bits:
                        m.d.comb += self.out_wsel[c].eq(bottom.out_wsel[cc])
                else:
                    m.d.comb += self.out_b[c].eq(bottom.out_b[cc])
                    if self._sel_bits:
                        m.d.comb += self.out_sel[c].eq(bottom.out_sel[cc])
        return m


# -- SkewedMesh -------------------------------------------------------------------------------

class SkewedMesh(_ArrayBase):
    """A :class:`Mesh` with input skew and output de-skew shift registers (Gemmini
    ``MeshWithDelays`` ``shifted``): all of a beat's values are presented in the same cycle
    ``T`` ("issue") and all of its results leave in the same cycle ``T + latency``.

    Members (``X``/``W``/``A``/``S`` as in the module docstring)

    * both: ``in_a: In(X).array(R)``, ``in_d: In(signed(A)).array(C)``,
      ``out_c: Out(signed(A)).array(C)``, ``out_flag: Out(1).array(C)``, ``in_mode``;
    * WS: ``in_swap: In(1)`` (this row is the first with the new weights),
      ``in_w: In(W).array(C)``, ``in_wsel: In(S).array(C)``, ``in_shift_w: In(1)``
      (shift the shadow registers down, lockstep, no skew);
    * OS: ``in_valid: In(1)`` (compute beat), ``in_b: In(W).array(C)``,
      ``in_sel: In(S).array(C)``, ``in_shift: In(1)`` (shift beat).

    Skews (delay of each input, cycles): WS ``a[r]``: ``1 + r·L``, ``swap`` for row ``r``:
    ``r·L`` (one cycle ahead of the row's data, so the active weight is in place when the row
    arrives), ``d[c]``: ``1 + hd(c)``; OS ``a[r]``/``valid``: ``1 + vd(r)``, ``b[c]``/``sel``:
    ``1 + hd(c)``, ``shift``/``d[c]``: ``1 + S + hd(c)``. De-skew of ``out_c[c]``/``out_flag``:
    ``hd(C-1) - hd(c)``. The results of an issue in ``T`` are on ``out_c`` in
    ``T + latency`` (:func:`latency`; OS: of a shift issue).
    """

    def __init__(self, *, rows, cols, pe=PEConfig(), dataflow="ws", variants=(), tile_rows=1,
                 tile_cols=1):
        self._setup(rows, cols, pe, dataflow, variants)
        try:
            _check_tiles(rows, cols, tile_rows, tile_cols)
        except ValueError:
            self._MustUse__silence = True
            raise
        self._tile_rows, self._tile_cols = tile_rows, tile_cols
        self._timing = timing(rows, cols, self._pe_latency, dataflow=dataflow,
                              tile_rows=tile_rows, tile_cols=tile_cols)
        A = self._pe.acc_bits
        mem = {
            "in_a": In(self._a_bits).array(rows),
            "in_d": In(signed(A)).array(cols),
            "out_c": Out(signed(A)).array(cols),
            "out_flag": Out(1).array(cols),
        }
        if dataflow == "ws":
            mem |= {"in_swap": In(1), "in_w": In(self._b_bits).array(cols), "in_shift_w": In(1)}
            if self._sel_bits:
                mem["in_wsel"] = In(self._sel_bits).array(cols)
        else:
            mem |= {"in_valid": In(1), "in_b": In(self._b_bits).array(cols), "in_shift": In(1)}
            if self._sel_bits:
                mem["in_sel"] = In(self._sel_bits).array(cols)
        if self._mode_shape is not None:
            mem["in_mode"] = In(self._mode_shape)
        super().__init__(mem)

    @property
    def latency(self) -> int:
        """Cycles from an issue to its results on ``out_c`` (OS: of a shift issue)."""
        return self._timing["latency"]

    @property
    def timing(self) -> dict:
        return dict(self._timing)

    def elaborate(self, platform):
        m = Module()
        m.submodules.mesh = mesh = Mesh(rows=self._rows, cols=self._cols, pe=self._pe,
                                        dataflow=self._dataflow, tile_rows=self._tile_rows,
                                        tile_cols=self._tile_cols)
        R, C, L = self._rows, self._cols, self._pe_latency
        tr, tc = self._tile_rows, self._tile_cols

        def hd(c):
            return c // tc

        def vd(r):
            return r // tr

        if self._dataflow == "ws":
            for r in range(R):
                m.d.comb += mesh.in_a[r].eq(_delay(m, self.in_a[r], 1 + r * L, f"skew_a{r}"))
            swaps = _taps(m, self.in_swap, [r * L for r in range(R)], "skew_swap",
                          reset_less=False)
            for r in range(R):
                m.d.comb += mesh.in_swap[r].eq(swaps[r * L])
            for c in range(C):
                m.d.comb += [
                    mesh.in_d[c].eq(_delay(m, self.in_d[c], 1 + hd(c), f"skew_d{c}")),
                    mesh.in_flag[c].eq(0),
                    mesh.in_w[c].eq(self.in_w[c]),
                ]
                if self._sel_bits:
                    m.d.comb += mesh.in_wsel[c].eq(self.in_wsel[c])
            m.d.comb += mesh.in_shift_w.eq(self.in_shift_w)
        else:
            S = vd(R - 1) + L - 1
            valids = _taps(m, self.in_valid, sorted({1 + vd(r) for r in range(R)}),
                           "skew_valid", reset_less=False)
            for r in range(R):
                m.d.comb += [
                    mesh.in_a[r].eq(_delay(m, self.in_a[r], 1 + vd(r), f"skew_a{r}")),
                    mesh.in_valid[r].eq(valids[1 + vd(r)]),
                ]
            shifts = _taps(m, self.in_shift, sorted({1 + S + hd(c) for c in range(C)}),
                           "skew_shift", reset_less=False)
            for c in range(C):
                m.d.comb += [
                    mesh.in_b[c].eq(_delay(m, self.in_b[c], 1 + hd(c), f"skew_b{c}")),
                    mesh.in_d[c].eq(_delay(m, self.in_d[c], 1 + S + hd(c), f"skew_d{c}")),
                    mesh.in_shift[c].eq(shifts[1 + S + hd(c)]),
                    mesh.in_flag[c].eq(0),
                ]
                if self._sel_bits:
                    m.d.comb += mesh.in_sel[c].eq(
                        _delay(m, self.in_sel[c], 1 + hd(c), f"skew_sel{c}"))
        last = hd(C - 1)
        for c in range(C):
            m.d.comb += [
                self.out_c[c].eq(_delay(m, mesh.out_c[c], last - hd(c), f"deskew_c{c}")),
                self.out_flag[c].eq(_delay(m, mesh.out_flag[c], last - hd(c),
                                           f"deskew_f{c}")),
            ]
        if self._mode_shape is not None:
            m.d.comb += mesh.in_mode.eq(self.in_mode)
        return m


# -- SystolicArray ----------------------------------------------------------------------------

class SystolicArray(_ArrayBase):
    """The stream-facing systolic array (see the module docstring for the full contract).

    Parameters (keyword-only, validated eagerly)
    ----------
    rows, cols : int
        PE rows (WS: K of a weight tile; OS: M) and columns (N).
    pe : PEConfig
        Every PE's configuration.
    dataflow : ``"ws"`` or ``"os"``
    variants : tuple of str
        Extra variants selectable per column at run time (variant 0 is ``pe``): multiplier
        specs, or ``'<mult> a=<format> b=<format>'`` variants with their own operand formats
        (``ArrayConfig.variants``); the PE then hosts
        :class:`mixpe.hw.mult.variants.VariantsMultiplier` (``ArrayConfig.array_pe``).
    tile_rows, tile_cols : int
        PEs per combinational :class:`Tile` (must divide ``rows``/``cols``).
    tag_bits : int
        Width of the opaque ``tag`` carried from ``i_stream`` to ``o_stream`` (0: none).

    Members
    -------
    i_stream : In(stream.Signature(i_layout))
        WS rows ``{a, d, swap, tag}`` / OS beats ``{a, b, sel, d, shift, tag}``.
    preload : In(stream.Signature(w_layout))
        WS only: weight rows ``{b, sel}``.
    o_stream : Out(stream.Signature(o_layout))
        ``{c, ovf, tag}``: cannot be stalled (``ready`` is ignored; hold it at 1).
    mode : In(range(len(pe.modes)))
        Composable PEs only: the precision.
    busy : Out(1)

    Raises
    ------
    ValueError / TypeError
        A parameter out of range (the message names it).
    """

    def __init__(self, *, rows, cols, pe=PEConfig(), dataflow="ws", variants=(), tile_rows=1,
                 tile_cols=1, tag_bits=0):
        try:
            try:
                self._config = ArrayConfig(rows=rows, cols=cols, pe=pe, dataflow=dataflow,
                                           variants=tuple(variants))
            except TypeError as e:
                raise ValueError(str(e)) from None
            if isinstance(tag_bits, bool) or not isinstance(tag_bits, int) or tag_bits < 0:
                raise ValueError(f"tag_bits must be a non-negative integer, not {tag_bits!r}")
            _check_tiles(rows, cols, tile_rows, tile_cols)
        except Exception:
            self._MustUse__silence = True
            raise
        cfg = self._config
        self._setup(cfg.rows, cfg.cols, cfg.pe, cfg.dataflow, cfg.variants)
        self._tag_bits = tag_bits
        self._tile_rows, self._tile_cols = tile_rows, tile_cols
        self._timing = timing(rows, cols, self._pe_latency, dataflow=dataflow,
                              tile_rows=tile_rows, tile_cols=tile_cols)
        R, C, A = cfg.rows, cfg.cols, cfg.pe.acc_bits
        fields = {"a": data.ArrayLayout(self._a_bits, R)}
        if dataflow == "os":
            fields["b"] = data.ArrayLayout(self._b_bits, C)
            if self._sel_bits:
                fields["sel"] = data.ArrayLayout(self._sel_bits, C)
        fields["d"] = data.ArrayLayout(signed(A), C)
        fields["swap" if dataflow == "ws" else "shift"] = 1
        if tag_bits:
            fields["tag"] = tag_bits
        self._i_layout = data.StructLayout(fields)
        o_fields = {"c": data.ArrayLayout(signed(A), C), "ovf": data.ArrayLayout(1, C)}
        if tag_bits:
            o_fields["tag"] = tag_bits
        self._o_layout = data.StructLayout(o_fields)
        members = {"i_stream": In(stream.Signature(self._i_layout))}
        if dataflow == "ws":
            w_fields = {"b": data.ArrayLayout(self._b_bits, C)}
            if self._sel_bits:
                w_fields["sel"] = data.ArrayLayout(self._sel_bits, C)
            self._w_layout = data.StructLayout(w_fields)
            members["preload"] = In(stream.Signature(self._w_layout))
        else:
            self._w_layout = None
        members["o_stream"] = Out(stream.Signature(self._o_layout))
        if self._mode_shape is not None:
            members["mode"] = In(self._mode_shape)
        members["busy"] = Out(1)
        super().__init__(members)

    @classmethod
    def from_config(cls, config: ArrayConfig, **kwargs) -> "SystolicArray":
        """Build from an :class:`~mixpe.sw.core_config.ArrayConfig` (``kwargs``: ``tile_rows``,
        ``tile_cols``, ``tag_bits``)."""
        if not isinstance(config, ArrayConfig):
            raise TypeError(f"Expected an ArrayConfig, not {config!r}")
        return cls(rows=config.rows, cols=config.cols, pe=config.pe, dataflow=config.dataflow,
                   variants=config.variants, **kwargs)

    @property
    def config(self) -> ArrayConfig:
        """The frozen array configuration."""
        return self._config

    @property
    def tag_bits(self) -> int:
        return self._tag_bits

    @property
    def tile_rows(self) -> int:
        return self._tile_rows

    @property
    def tile_cols(self) -> int:
        return self._tile_cols

    @property
    def latency(self) -> int:
        """Cycles from an accepted beat to its output beat (see :func:`latency`)."""
        return self._timing["latency"]

    @property
    def timing(self) -> dict:
        """:func:`timing` of this array."""
        return dict(self._timing)

    @property
    def i_layout(self) -> data.StructLayout:
        return self._i_layout

    @property
    def w_layout(self) -> data.StructLayout | None:
        return self._w_layout

    @property
    def o_layout(self) -> data.StructLayout:
        return self._o_layout

    def elaborate(self, platform):
        m = Module()
        m.submodules.skewed = sk = SkewedMesh(
            rows=self._rows, cols=self._cols, pe=self._pe, dataflow=self._dataflow,
            tile_rows=self._tile_rows, tile_cols=self._tile_cols)
        R, C = self._rows, self._cols
        t = self._timing
        lat = t["latency"]
        i = self.i_stream
        p = i.payload
        issue = Signal()
        m.d.comb += issue.eq(i.valid & i.ready)
        for r in range(R):
            m.d.comb += sk.in_a[r].eq(p.a[r])
        for c in range(C):
            m.d.comb += sk.in_d[c].eq(p.d[c])
        if self._mode_shape is not None:
            m.d.comb += sk.in_mode.eq(self.mode)
        pending = Signal()  # a swap wave (WS) or an OS bubble is in progress

        if self._dataflow == "ws":
            count = Signal(range(R + 1))  # preload beats since the last swap
            full = Signal()
            wave = Signal(range(max(t["swap_wave"], 1) + 1))
            m.d.comb += [
                full.eq(count == R),
                i.ready.eq(~p.swap | full),
                self.preload.ready.eq(~full & (wave == 0)),
                sk.in_swap.eq(issue & p.swap),
                sk.in_shift_w.eq(self.preload.valid & self.preload.ready),
                pending.eq(wave != 0),
            ]
            for c in range(C):
                m.d.comb += sk.in_w[c].eq(self.preload.payload.b[c])
                if self._sel_bits:
                    m.d.comb += sk.in_wsel[c].eq(self.preload.payload.sel[c])
            with m.If(wave != 0):
                m.d.sync += wave.eq(wave - 1)
            with m.If(issue & p.swap):
                m.d.sync += [count.eq(0), wave.eq(max(t["swap_wave"] - 1, 0))]
            with m.Elif(self.preload.valid & self.preload.ready):
                m.d.sync += count.eq(count + 1)
            out_issue = issue
        else:
            spacing, gap = t["shift_spacing"], t["compute_gap"]
            gmax = max(spacing, gap)
            since = Signal(range(gmax + 1), init=gmax)  # cycles since the last shift beat
            m.d.comb += [
                i.ready.eq(Mux(p.shift, since >= spacing, since >= gap)),
                sk.in_valid.eq(issue & ~p.shift),
                sk.in_shift.eq(issue & p.shift),
                pending.eq(since < gmax),
            ]
            for c in range(C):
                m.d.comb += sk.in_b[c].eq(p.b[c])
                if self._sel_bits:
                    m.d.comb += sk.in_sel[c].eq(p.sel[c])
            with m.If(issue & p.shift):
                m.d.sync += since.eq(1)
            with m.Elif(since < gmax):
                m.d.sync += since.eq(since + 1)
            out_issue = issue & p.shift

        # output valid and tag travel beside the array
        line = _taps(m, out_issue, list(range(1, lat + 1)), "out_valid", reset_less=False)
        any_line = line if self._dataflow == "ws" else _taps(
            m, issue, list(range(1, lat + 1)), "in_flight", reset_less=False)
        o = self.o_stream
        m.d.comb += o.valid.eq(line[lat])
        for c in range(C):
            m.d.comb += [o.payload.c[c].eq(sk.out_c[c]), o.payload.ovf[c].eq(sk.out_flag[c])]
        if self._tag_bits:
            m.d.comb += o.payload.tag.eq(_delay(m, p.tag, lat, "tag"))
        busy = pending
        for d in range(1, lat + 1):
            busy = busy | any_line[d]
        m.d.comb += self.busy.eq(busy)
        return m

