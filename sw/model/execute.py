"""Executors of an :class:`~.quantize.IntGraph` and the comparison of their results.

* :class:`ReferenceExecutor`: the bit-exact emulation. A layer whose products all use one
  multiplier goes through :func:`mixpe.sw.emulate.conv2d` / :func:`~mixpe.sw.emulate.linear`;
  a layer with several (per filter or per kernel) computes every product with its own
  multiplier and accumulates in k order (``ic, kh, kw``) with the accumulator's wrap or
  saturation after every addition (an implementation independent of the core's). Then
  :func:`~mixpe.sw.requant.requantize`.
* :class:`AcceleratorExecutor`: lowers each compute layer with
  :func:`~mixpe.sw.compiler.compile_conv2d` / :func:`~mixpe.sw.compiler.compile_gemm`
  (requantization on the core's requant unit, tiling to the scratchpads, the layer's
  multipliers as run-time variants) and runs the program on any object with
  ``run_program(program) -> (o_words, counters)`` (the driver of a board or a simulation).
* :class:`CoreModelExecutor`: the same lowering run on :func:`mixpe.sw.core_ref.run_program`,
  the golden model of the core (the stand-in for hardware).

Lowering a layer's multiplier (``key = (mult spec, weight format spec)``) to a variant index:
the variant named by ``ArrayConfig.variant_index(mult, a_format, b_format)`` when the core has
it, else the first variant whose products equal the layer's products
(:func:`~.quantize.reference_multiplier`) on every activation value × every weight grid value
(e.g. flint4 weights with an exact multiplier run on the plain int8 exact PE: their values are
int8 values). No such variant: ``ValueError`` naming the layer and listing the core's variants.
Operand codes are the variant's ``a_format``/``b_format`` encodings of the values.

:func:`compare` runs executors on a batch and reports accuracies, per-layer bit-match rates
against the first executor, the first mismatch and cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .. import emulate
from ..compiler import compile_conv2d, compile_gemm
from ..core_config import CORE_PRESETS, CoreConfig
from ..numerics import as_int64
from ..requant import requantize
from .quantize import IntGraph, IntNode, reference_multiplier

__all__ = ["ReferenceExecutor", "AcceleratorExecutor", "CoreModelExecutor", "compare",
           "Comparison", "lower_layer", "resolve_variants"]


def _acc(v: torch.Tensor, acc_bits: int, overflow: str, flag=None) -> torch.Tensor:
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    if overflow == "saturate":
        return v.clamp(lo, hi)
    return torch.remainder(v - lo, 1 << acc_bits) + lo


def _im2col(n: IntNode, x: torch.Tensor, g: int) -> tuple[torch.Tensor, tuple]:
    """Rows ``(n, oy, ox)`` × columns ``(ic, kh, kw)`` of group ``g`` (int64)."""
    a = n.attrs
    oc, cg, kh, kw = n.w.shape
    xg = x[:, g * cg:(g + 1) * cg]
    ph, pw = a["padding"]
    xp = torch.nn.functional.pad(xg, (pw, pw, ph, ph))
    cols = xp.unfold(2, kh, a["stride"][0]).unfold(3, kw, a["stride"][1])  # N,C,OH,OW,KH,KW
    nb, _, oh, ow = cols.shape[:4]
    return cols.permute(0, 2, 3, 1, 4, 5).reshape(nb * oh * ow, cg * kh * kw), (nb, oh, ow)


class ReferenceExecutor:
    """Bit-exact emulation of the compute layers (see the module doc)."""

    name = "reference"

    def __init__(self):
        self.counters: dict[str, dict] = {}

    def accumulate(self, n: IntNode, x: torch.Tensor) -> torch.Tensor:
        """Accumulator values of layer ``n`` (before requantization)."""
        x = as_int64(x)
        mults = [reference_multiplier(k, n.a_bits) for k in n.keys]
        if n.key_map is None:
            m = mults[0]
            if n.op == "linear":
                return emulate.linear(x, n.w, m, acc_bits=n.acc_bits, overflow=n.overflow)
            a = n.attrs
            return emulate.conv2d(x, n.w, m, stride=a["stride"], padding=a["padding"],
                                  groups=a["groups"], acc_bits=n.acc_bits, overflow=n.overflow)
        km = n.kernel_keys()
        if n.op == "linear":
            return self._mixed(x, n.w, km, mults, n)
        a = n.attrs
        groups = a["groups"]
        oc, cg, kh, kw = n.w.shape
        ocg = oc // groups
        outs = []
        for g in range(groups):
            rows, (nb, oh, ow) = _im2col(n, x, g)
            wg = n.w[g * ocg:(g + 1) * ocg].reshape(ocg, cg * kh * kw)
            kmg = km[g * ocg:(g + 1) * ocg][:, :, None].expand(ocg, cg, kh * kw).reshape(ocg, -1)
            o = self._mixed(rows, wg, kmg, mults, n)  # [M, ocg]
            outs.append(o.reshape(nb, oh, ow, ocg).permute(0, 3, 1, 2))
        return torch.cat(outs, 1)

    @staticmethod
    def _mixed(rows, w, km, mults, n):
        """``rows [M, K] @ w[OC, K]ᵀ`` with multiplier ``mults[km[o, k]]`` per product."""
        M, K = rows.shape
        prod = torch.zeros(M, w.shape[0], K, dtype=torch.int64)
        for i, m in enumerate(mults):
            hit = km == i
            if not bool(hit.any()):
                continue
            ww = torch.where(hit, w, torch.zeros_like(w))
            p = m.mul(rows[:, None, :], ww[None, :, :])
            prod = torch.where(hit[None], p, prod)
        acc = torch.zeros(M, w.shape[0], dtype=torch.int64)
        for k in range(K):  # k order, wrap/saturate after every addition
            acc = _acc(acc + prod[:, :, k], n.acc_bits, n.overflow)
        return acc

    def compute(self, n: IntNode, x: torch.Tensor) -> torch.Tensor:
        acc = self.accumulate(n, x)
        rq = n.requant
        if n.op == "conv2d":
            y = requantize(acc.permute(0, 2, 3, 1), rq.bias, rq.mult, rq.shift, rq.zp,
                           bool(rq.relu), rq.lo, rq.hi).permute(0, 3, 1, 2).contiguous()
        else:
            y = rq(acc)
        self.counters[n.name] = dict(macs=_macs(n, x))
        return y


def _macs(n: IntNode, x) -> int:
    if n.op == "linear":
        return int(x.shape[0]) * n.w.numel()
    a = n.attrs
    oc, cg, kh, kw = n.w.shape
    oh = (x.shape[2] + 2 * a["padding"][0] - kh) // a["stride"][0] + 1
    ow = (x.shape[3] + 2 * a["padding"][1] - kw) // a["stride"][1] + 1
    return int(x.shape[0]) * oh * ow * n.w.numel()


def _encodable(fmt, values: torch.Tensor) -> bool:
    try:
        fmt.encode(values)
        return True
    except ValueError:
        return False


_VARIANT_CACHE: dict = {}
_PE_MULTS: dict = {}


def _pe_mults(cfg: CoreConfig) -> list:
    """``[pe.multiplier for pe in cfg.array.pe_configs]``, cached per configuration."""
    key = cfg.hash
    if key not in _PE_MULTS:
        _PE_MULTS[key] = [p.multiplier for p in cfg.array.pe_configs]
    return _PE_MULTS[key]


def resolve_variants(n: IntNode, cfg: CoreConfig) -> list[int]:
    """Variant index of every key of layer ``n`` on core ``cfg`` (see the module doc)."""
    arr = cfg.array
    out = []
    for key in n.keys:
        ck = (cfg.hash, key, n.a_bits)
        if ck in _VARIANT_CACHE:
            out.append(_VARIANT_CACHE[ck])
            continue
        from ..spec import from_spec

        mr = reference_multiplier(key, n.a_bits)
        fmt = from_spec(key[1], kind="format")
        avals = torch.arange(-(1 << (n.a_bits - 1)), 1 << (n.a_bits - 1), dtype=torch.int64)
        bvals = fmt.grid()
        want = mr.mul(avals[:, None], bvals[None, :])
        order = list(range(arr.n_variants))
        if hasattr(arr, "variant_index"):
            try:
                i = arr.variant_index(mult=key[0], a_format=f"int:bits={max(8, n.a_bits)},"
                                      f"signed=1", b_format=key[1])
                order.insert(0, i)
            except ValueError:
                pass
        found = None
        mults = _pe_mults(cfg)
        for i in order:
            mv = mults[i]
            if not (_encodable(mv.a_format, avals) and _encodable(mv.b_format, bvals)):
                continue
            if torch.equal(mv.mul(avals[:, None], bvals[None, :]), want):
                found = i
                break
        if found is None:
            avail = "; ".join(f"{i}: {p.name}" for i, p in enumerate(arr.pe_configs))
            raise ValueError(f"layer {n.name} ({n.path}): the core has no multiplier variant "
                             f"computing {key[0]} × {key[1]} weights with int{n.a_bits} "
                             f"activations; its variants: {avail}")
        _VARIANT_CACHE[ck] = found
        out.append(found)
    return out


def lower_layer(n: IntNode, x: torch.Tensor, cfg: CoreConfig, *, read_counters: bool = False):
    """Compile compute layer ``n`` on input values ``x`` for ``cfg``: a
    :class:`~mixpe.sw.compiler.Program` (segments allowed when it exceeds imem)."""
    arr = cfg.array
    if arr.acc_bits != n.acc_bits or arr.pe.overflow != n.overflow:
        raise ValueError(f"layer {n.name}: the graph accumulates in {n.acc_bits} bits "
                         f"({n.overflow}); the core in {arr.acc_bits} bits "
                         f"({arr.pe.overflow}); set acc_bits/overflow in the quant config")
    variants = resolve_variants(n, cfg)
    pes = [_pe_mults(cfg)[v] for v in variants]
    x = as_int64(x)
    a_codes = pes[0].a_format.encode(x)
    for m in pes[1:]:
        if not torch.equal(m.a_format.encode(x), a_codes):
            raise ValueError(f"layer {n.name}: its variants encode activations differently")
    km = n.kernel_keys()  # [OC, Cg]
    w = n.w
    w_codes = torch.zeros_like(w)
    full = km.reshape(km.shape + (1,) * (w.dim() - 2)).expand(w.shape) if w.dim() == 4 else km
    for i, m in enumerate(pes):
        hit = full == i
        if bool(hit.any()):
            w_codes[hit] = m.b_format.encode(w[hit])
    vmap = None
    vt = torch.tensor(variants, dtype=torch.int64)
    if n.key_map is not None:
        vmap = vt[as_int64(n.key_map)]
    elif variants[0] != 0:
        vmap = torch.full((w.shape[0],), variants[0], dtype=torch.int64)
    if n.op == "conv2d":
        a = n.attrs
        return compile_conv2d(a_codes, w_codes, cfg, stride=a["stride"], padding=a["padding"],
                              groups=a["groups"], requant=n.requant, variant_map=vmap,
                              read_counters=read_counters, allow_segments=True)
    if vmap is not None and vmap.dim() == 2:
        vmap = vmap.t().contiguous()  # [K, N]
    return compile_gemm(a_codes, w_codes.t().contiguous(), cfg, requant=n.requant,
                        variant_map=vmap, read_counters=read_counters, allow_segments=True)


class AcceleratorExecutor:
    """Runs the compute layers on an accelerator: ``runner.run_program(program)`` must return
    ``(o_words, counters)`` (counters: a dict, may be empty), as
    :meth:`mixpe.sw.driver.Accelerator.run_program` does (its ``run_cycles`` become
    ``cycles``). ``cfg`` defaults to ``runner.config``. Per-layer programs, cycles and
    counters are kept in :attr:`programs` and :attr:`counters`."""

    name = "accelerator"

    def __init__(self, runner, cfg: CoreConfig | None = None):
        if not hasattr(runner, "run_program"):
            raise ValueError("runner must have a run_program(program) method")
        if cfg is None:
            cfg = getattr(runner, "config", None)
        if not isinstance(cfg, CoreConfig):
            raise ValueError(f"cfg must be a CoreConfig, not {type(cfg).__name__}")
        self.runner = runner
        self.cfg = cfg
        self.programs: dict = {}
        self.counters: dict[str, dict] = {}

    def _run(self, program):
        res = self.runner.run_program(program)
        if isinstance(res, tuple):
            words, cnt = res[0], (res[1] if len(res) > 1 else {})
        else:
            words, cnt = getattr(res, "o_words"), getattr(res, "counters", {})
        return words, dict(cnt or {})

    def compute(self, n: IntNode, x: torch.Tensor) -> torch.Tensor:
        from ..cyclemodel import predict_cycles

        prog = lower_layer(n, x, self.cfg)
        words, cnt = self._run(prog)
        y = prog.outputs(words)
        try:
            cnt.setdefault("predicted_cycles", int(predict_cycles(prog, self.cfg)["total"]))
        except Exception as e:  # noqa: BLE001  (the prediction is informative only)
            cnt.setdefault("predicted_cycles_error", str(e))
        if cnt.get("run_cycles"):  # sw/driver.py: the link's count of cycles the core ran
            cnt.setdefault("cycles", int(cnt["run_cycles"]))
        cnt.setdefault("instructions", len(prog.instructions))
        cnt.setdefault("macs_useful", prog.info.get("macs"))
        self.programs[n.name] = prog
        self.counters[n.name] = cnt
        if n.op == "conv2d":
            return y.contiguous()
        return y


class _CoreRefRunner:
    def __init__(self, cfg):
        self.cfg = cfg

    def run_program(self, program):
        from ..core_ref import run_program

        depth = self.cfg.memory.imem_depth
        return run_program(program, self.cfg,
                           imem_depth=depth if len(program.instructions) > depth else None)


class CoreModelExecutor(AcceleratorExecutor):
    """:class:`AcceleratorExecutor` on the core's golden model (``sw/core_ref.py``); ``cfg``
    defaults to ``CORE_PRESETS["ulx3s-8x8"]`` (the board core)."""

    name = "core-model"

    def __init__(self, cfg: CoreConfig | None = None):
        cfg = CORE_PRESETS["ulx3s-8x8"] if cfg is None else cfg
        super().__init__(_CoreRefRunner(cfg), cfg)


# -- comparison ----------------------------------------------------------------------------------

@dataclass
class Comparison:
    """Result of :func:`compare` (``to_dict()`` for JSON)."""

    images: int
    float_accuracy: float | None
    accuracy: dict = field(default_factory=dict)        # executor -> accuracy
    match: dict = field(default_factory=dict)           # executor -> {layer: fraction equal}
    first_mismatch: dict = field(default_factory=dict)  # executor -> None or dict
    cycles: dict = field(default_factory=dict)          # executor -> {layer: cycles}
    counters: dict = field(default_factory=dict)        # executor -> {layer: counters}
    meta: dict = field(default_factory=dict)            # model, config, core, ... (api)

    @property
    def bit_exact(self) -> bool:
        return all(m is None for m in self.first_mismatch.values())

    def to_dict(self) -> dict:
        return dict(images=self.images, float_accuracy=self.float_accuracy,
                    accuracy=self.accuracy, match=self.match,
                    first_mismatch=self.first_mismatch, cycles=self.cycles,
                    bit_exact=self.bit_exact, meta=self.meta)


def compare(float_model, int_graph: IntGraph, executors, images: torch.Tensor,
            labels: torch.Tensor | None = None) -> Comparison:
    """Run ``int_graph`` with each executor on ``images`` and compare.

    The first executor is the reference: for every other one, every node's output is compared
    element by element (``match[name][node]`` = fraction equal) and the first diverging node
    (in graph order), element index and both values are reported. Accuracies need ``labels``
    (the float model's on the same images too). Cycles: the counters' ``cycles`` when the
    runner reports them, else the cycle model's prediction.
    """
    if not executors:
        raise ValueError("executors must name at least one executor")
    res = Comparison(images=int(images.shape[0]), float_accuracy=None)
    if labels is not None and float_model is not None:
        with torch.no_grad():
            res.float_accuracy = float((float_model(images).argmax(1) == labels)
                                       .float().mean())
    ref_vals = None
    ref_name = None
    for ex in executors:
        name = getattr(ex, "name", type(ex).__name__)
        base, k = name, 2
        while name in res.accuracy or name in res.match:
            name, k = f"{base}-{k}", k + 1
        out, vals = int_graph.run(images, ex)
        if labels is not None:
            res.accuracy[name] = float((out.argmax(1) == labels).float().mean())
        cnt = getattr(ex, "counters", {}) or {}
        res.counters[name] = cnt
        res.cycles[name] = {k: int(v.get("cycles", v.get("predicted_cycles")))
                            for k, v in cnt.items() if isinstance(v, dict) and
                            ("cycles" in v or "predicted_cycles" in v)}
        if ref_vals is None:
            ref_vals, ref_name = vals, name
            res.match[name] = {k: 1.0 for k in vals}
            res.first_mismatch[name] = None
            continue
        res.match[name] = {}
        res.first_mismatch[name] = None
        for n in int_graph.nodes:
            a, b = ref_vals[n.name], vals[n.name]
            if a.shape != b.shape:
                res.match[name][n.name] = 0.0
                if res.first_mismatch[name] is None:
                    res.first_mismatch[name] = dict(layer=n.name, index=None,
                                                    shape=(tuple(a.shape), tuple(b.shape)))
                continue
            eq = a == b
            res.match[name][n.name] = float(eq.float().mean()) if eq.numel() else 1.0
            if res.first_mismatch[name] is None and not bool(eq.all()):
                flat = int(torch.nonzero(~eq.reshape(-1))[0, 0])
                idx = list(_unravel(flat, tuple(a.shape)))
                res.first_mismatch[name] = {"layer": n.name, "index": idx,
                                            ref_name: int(a.reshape(-1)[flat]),
                                            name: int(b.reshape(-1)[flat])}
    return res


def _unravel(flat: int, shape: tuple):
    out = []
    for d in reversed(shape):
        out.append(flat % d)
        flat //= d
    return tuple(reversed(out))

