"""Post-training quantization of an imported :class:`~.graph.Graph` into an integer graph.

Number representation
    Activations are signed integers with zero point 0: a node's values ``q`` stand for
    ``q · s`` (``s`` its scale, calibrated as ``range / (2^(b−1) − 1)``). ReLU outputs use
    ``[0, 2^(b−1) − 1]``. Weights of output channel ``c`` are grid values ``v`` (integer units)
    of a number format (int, flint, pot, float; ANT's per-tensor type selection with
    per-channel clipping ``alpha[c]``) standing for ``v · s_w[c]``, ``s_w[c] = alpha[c] /
    max(grid)``.

Compute layers (conv2d, linear: the accelerator's work)
    ``acc = Σ_k mult(x_k, w_k)`` in an ``acc_bits`` accumulator (wrap or saturate after every
    addition, k order ``ic, kh, kw``), then the hardware requant unit
    (:class:`~mixpe.sw.requant.Requant`): ``bias[c] = round(b[c] / (s_in · s_w[c]))``,
    ``(mult[c], shift[c]) = quantize_multiplier(s_in · s_w[c] / s_out)``, zero point 0, the
    ReLU fused, clamp to the output range.

Host ops (exact integer semantics, run on the host between accelerator layers)
    * max-pool: the max of the values (same scale);
    * avg-pool over ``n = kh·kw`` values: ``floor((Σ + floor(n/2)) / n)`` (round half up,
      same scale);
    * residual add of ``a`` (scale ``s_a``) and ``b`` (``s_b``) to scale ``s_o``:
      ``y = clamp(relu?((a·m_a + b·m_b + 2^(S−1)) >> S), lo, hi)`` with ``S = 20``,
      ``m_x = round(s_x / s_o · 2^S)``;
    * flatten: reshape; a ReLU not fused: ``max(v, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..ant import search_mse
from ..formats import IntFormat, NumberFormat, number_format_from
from ..mult import multiplier
from ..mult.decoded import DecodedMultiplier
from ..numerics import as_int64
from ..requant import Requant, quantize_multiplier
from .graph import COMPUTE_OPS, Graph
from .qconfig import QuantConfig

__all__ = ["IntNode", "IntGraph", "quantize", "calibrate", "quantize_weights", "host_op",
           "ADD_SHIFT", "reference_multiplier"]

#: Fraction bits of the residual-add multipliers.
ADD_SHIFT = 20


@dataclass(eq=False)
class IntNode:
    """One node of the integer graph.

    Compute nodes (``op`` conv2d / linear) carry ``w`` (int64 weight values), ``keys`` (the
    distinct ``(mult spec, weight format spec)`` pairs), ``key_map`` (``None``: every product
    uses ``keys[0]``; ``[OC]`` per filter; ``[OC, C/groups]`` per kernel), ``requant``,
    ``attrs`` (stride, padding, groups) and the scales ``s_in``, ``s_w`` ``[OC]``. Every node
    has ``scale``, ``bits``, ``lo``, ``hi`` of its output values.
    """

    name: str
    op: str
    inputs: list
    path: str = ""
    attrs: dict = field(default_factory=dict)
    relu: bool = False
    scale: float = 1.0
    bits: int = 8
    lo: int = -128
    hi: int = 127
    w: Any = None
    keys: tuple = ()
    key_map: Any = None
    requant: Any = None
    s_in: float = 1.0
    s_w: Any = None
    acc_bits: int = 32
    overflow: str = "saturate"
    a_bits: int = 8

    @property
    def is_compute(self) -> bool:
        return self.op in COMPUTE_OPS

    def kernel_keys(self) -> torch.Tensor:
        """Key index per output channel and input channel ``[OC, C/groups]`` (or ``[OUT, IN]``)."""
        oc, cg = self.w.shape[0], self.w.shape[1]
        if self.key_map is None:
            return torch.zeros(oc, cg, dtype=torch.int64)
        km = as_int64(self.key_map)
        return km[:, None].expand(oc, cg).clone() if km.dim() == 1 else km.clone()

    def describe(self) -> str:
        if not self.is_compute:
            return f"{self.name}: {self.op}"
        ks = ", ".join(f"{m} × {f}" for m, f in self.keys)
        return (f"{self.name} ({self.path}): {self.op} {tuple(self.w.shape)} a{self.a_bits} → "
                f"a{self.bits}{' relu' if self.relu else ''}; {ks}")


@dataclass(eq=False)
class IntGraph:
    """Integer graph: :class:`IntNode` in order, the input quantizer and the output node."""

    nodes: list
    output: str
    input_scale: float
    input_bits: int
    config: QuantConfig | None = None

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def __getitem__(self, name):
        return self._by_name[name]

    def compute_nodes(self) -> list[IntNode]:
        return [n for n in self.nodes if n.is_compute]

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Float input → int64 values: ``clamp(floor(x / s + 1/2), lo, hi)``."""
        n = self.nodes[0]
        return torch.floor(x.to(torch.float64) / self.input_scale + 0.5).to(torch.int64).clamp(
            n.lo, n.hi)

    def run(self, x, executor, *, record: bool = True):
        """Run on float images ``x`` (or int64 input values) with ``executor`` for the compute
        nodes; returns ``(output values, {node: values})`` (the dict empty without
        ``record``)."""
        v = x if not x.dtype.is_floating_point else self.quantize_input(x)
        vals: dict[str, torch.Tensor] = {self.nodes[0].name: v}
        for n in self.nodes[1:]:
            args = [vals[i] for i in n.inputs]
            vals[n.name] = executor.compute(n, args[0]) if n.is_compute else host_op(n, args)
        out = vals[self.output]
        if not record:
            vals = {}
        return out, vals

    def dequantize(self, name: str, values: torch.Tensor) -> torch.Tensor:
        return values.to(torch.float32) * self[name].scale

    def summary(self) -> str:
        return "\n".join(n.describe() for n in self.nodes)


def host_op(n: IntNode, args: list) -> torch.Tensor:
    """Exact integer semantics of the host ops (see the module doc)."""
    x = args[0]
    a = n.attrs
    if n.op == "maxpool2d":
        lo = torch.iinfo(torch.int64).min
        xp = F.pad(x, (a["padding"][1],) * 2 + (a["padding"][0],) * 2, value=lo) \
            if any(a["padding"]) else x
        cols = xp.unfold(2, a["kernel"][0], a["stride"][0]).unfold(3, a["kernel"][1],
                                                                 a["stride"][1])
        return cols.amax(dim=(-1, -2))
    if n.op == "avgpool2d":
        cols = x.unfold(2, a["kernel"][0], a["stride"][0]).unfold(3, a["kernel"][1],
                                                                a["stride"][1])
        cnt = a["kernel"][0] * a["kernel"][1]
        return torch.div(cols.sum(dim=(-1, -2)) + cnt // 2, cnt, rounding_mode="floor")
    if n.op == "flatten":
        return x.reshape(x.shape[0], -1)
    if n.op == "relu":
        return x.clamp(min=0)
    if n.op == "add":
        ma, mb = a["m"]
        s = a["shift"]
        v = (args[0] * ma + args[1] * mb + (1 << (s - 1))) >> s
        if n.relu:
            v = v.clamp(min=0)
        return v.clamp(n.lo, n.hi)
    raise ValueError(f"node {n.name}: {n.op!r} is not a host op")


# -- calibration ---------------------------------------------------------------------------------

def calibrate(graph: Graph, x: torch.Tensor, cfg: QuantConfig) -> dict[str, float]:
    """Activation range of every node over ``cfg.calibration.batches`` batches of ``x``."""
    cal = cfg.calibration
    ranges: dict[str, list] = {}
    with torch.no_grad():
        for i in range(cal.batches):
            xb = x[i * cal.batch_size:(i + 1) * cal.batch_size]
            if not len(xb):
                break
            _, vals = graph.forward(xb, record=True)
            for k, v in vals.items():
                a = v.detach().abs().flatten().to(torch.float64)
                r = float(a.max()) if cal.method == "max" else \
                    float(torch.quantile(a[:1 << 24], cal.percentile / 100))
                ranges.setdefault(k, []).append(r)
    if not ranges:
        raise ValueError("calibration: no images")
    return {k: max(v) for k, v in ranges.items()}


def _qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _candidates(types, bits: int) -> list[NumberFormat]:
    if bits > 6:
        return [IntFormat(bits=bits, signed=True)]
    return [number_format_from(t, bits, signed=True) for t in ("int", "flint", "pot", "float")
            if t in types]


def quantize_weights(w: torch.Tensor, bits, types) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Per-output-channel weight quantization with ANT type selection.

    ``bits``: an int or a per-channel sequence; channels with equal bits share one format (the
    candidate of ``types`` with the smallest summed MSE, ANT's search of per-channel clipping
    ``alpha``). Returns ``(values int64 like w, s_w float64 [OC], format spec per channel)``.
    """
    oc = w.shape[0]
    rows = w.detach().reshape(oc, -1).to(torch.float32)
    per = [bits] * oc if isinstance(bits, int) else list(bits)
    values = torch.zeros(rows.shape, dtype=torch.int64)
    s_w = torch.ones(oc, dtype=torch.float64)
    specs = [""] * oc
    for b in sorted(set(per)):
        idx = torch.tensor([i for i in range(oc) if per[i] == b])
        sub = rows[idx]
        best = None
        for fmt in _candidates(types, b):
            r = search_mse(sub, fmt, per_channel=True)
            if best is None or r.mse < best[1].mse:
                best = (fmt, r)
        fmt, r = best
        alpha = r.alpha
        codes = fmt.quantize(sub, alpha)
        values[idx] = fmt.values()[codes]
        gmax = float(fmt.grid().max())  # ANT: scale = alpha / max(grid)
        sw = alpha.reshape(-1).to(torch.float64) / gmax
        s_w[idx] = torch.where(sw > 0, sw, torch.ones_like(sw))
        for i in idx.tolist():
            specs[i] = fmt.spec
    return values.reshape(w.shape), s_w, specs


def reference_multiplier(key: tuple[str, str], a_bits: int = 8):
    """The multiplier that defines a layer's products for ``key = (mult spec, weight format
    spec)``: the multiplier itself on integer weights, else a ``DecodedMultiplier`` of
    ``int8 × format`` over it (the mantissas go through the multiplier)."""
    from ..spec import from_spec

    mult_spec, fmt_spec = key
    core = multiplier(mult_spec)
    fmt = from_spec(fmt_spec, kind="format")
    if isinstance(fmt, IntFormat):
        return core
    return DecodedMultiplier(IntFormat(bits=max(8, a_bits), signed=True), fmt, core)


def quantize(graph: Graph, cfg: QuantConfig, calib_x: torch.Tensor) -> IntGraph:
    """Post-training quantization of ``graph`` with ``cfg`` calibrated on ``calib_x``."""
    if not isinstance(cfg, QuantConfig):
        raise ValueError(f"cfg must be a QuantConfig, not {type(cfg).__name__}")
    comp = graph.compute_nodes()
    cfg.check_layers([(n.name, n.path) for n in comp])
    ranges = calibrate(graph, calib_x, cfg)
    d = cfg.defaults
    nodes: list[IntNode] = []
    by: dict[str, IntNode] = {}

    def scale_for(name, bits):
        r = ranges.get(name, 0.0)
        return (r / _qmax(bits)) if r > 0 else 1.0

    inp = graph.input
    in_bits = d.activation_bits
    n0 = IntNode(inp.name, "input", [], inp.path, scale=scale_for(inp.name, in_bits),
                 bits=in_bits, lo=-_qmax(in_bits) - 1, hi=_qmax(in_bits))
    nodes.append(n0)
    by[n0.name] = n0
    ci = 0
    for n in graph.nodes[1:]:
        src = by[n.inputs[0]]
        if n.op in COMPUTE_OPS:
            lq = cfg.layer(n.name, ci, len(comp), n.path)
            ci += 1
            where = f"layer {n.name} ({n.path})"
            bits = lq.activation_bits
            s_out = scale_for(n.name, bits)
            oc = n.weight.shape[0]
            wb = lq.weight_bits
            if isinstance(wb, tuple) and len(wb) != oc:
                raise ValueError(f"{where}: weight_bits has {len(wb)} entries, the layer has "
                                 f"{oc} output channels")
            values, s_w, fspecs = quantize_weights(n.weight, wb, lq.weight_types)
            cg = n.weight.shape[1]
            mult = lq.mult
            if isinstance(mult, str):
                mk = [[mult] * cg for _ in range(oc)]
            elif isinstance(mult[0], tuple):
                if len(mult) != oc or any(len(r) != cg for r in mult):
                    raise ValueError(f"{where}: a per-kernel mult list must be [{oc}][{cg}] "
                                     f"(output channels × input channels per group)")
                mk = [list(r) for r in mult]
            else:
                if len(mult) != oc:
                    raise ValueError(f"{where}: a per-filter mult list must have {oc} entries "
                                     f"(one per output channel), got {len(mult)}")
                mk = [[m] * cg for m in mult]
            keys: list = []
            km = torch.zeros(oc, cg, dtype=torch.int64)
            for o in range(oc):
                for c in range(cg):
                    key = (multiplier(mk[o][c]).spec, fspecs[o])
                    if key not in keys:
                        keys.append(key)
                    km[o, c] = keys.index(key)
            for key in keys:
                try:
                    reference_multiplier(key, src.bits)
                except ValueError as e:
                    raise ValueError(f"{where}: multiplier {key[0]} with weights {key[1]}: "
                                     f"{e}") from None
            if len(keys) == 1:
                key_map = None
            elif bool((km == km[:, :1]).all()):
                key_map = km[:, 0].clone()
            else:
                key_map = km
            s_in = src.scale
            prod = s_in * s_w
            bias = torch.round(n.bias.detach().to(torch.float64) / prod).to(torch.int64)
            amax = (1 << (lq.acc_bits - 1)) - 1
            bias = bias.clamp(-amax - 1, amax)
            m, sh = quantize_multiplier(prod / s_out)
            lo = 0 if n.relu else -_qmax(bits) - 1
            rq = Requant(bias=bias, mult=m, shift=sh, zp=0, relu=bool(n.relu), lo=lo,
                         hi=_qmax(bits))
            attrs = dict(n.attrs) if n.op == "conv2d" else {}
            node = IntNode(n.name, n.op, [src.name], n.path, attrs, n.relu, s_out, bits, lo,
                           _qmax(bits), values, tuple(keys), key_map, rq, s_in, s_w,
                           lq.acc_bits, lq.overflow, src.bits)
        elif n.op == "add":
            a, b = by[n.inputs[0]], by[n.inputs[1]]
            bits = d.activation_bits
            s_out = scale_for(n.name, bits)
            m = (round(a.scale / s_out * (1 << ADD_SHIFT)), round(b.scale / s_out *
                                                                  (1 << ADD_SHIFT)))
            if max(abs(v) for v in m) >= 1 << 31:
                raise ValueError(f"node {n.name}: residual add scales differ too much "
                                 f"({a.scale:g}, {b.scale:g} → {s_out:g})")
            lo = 0 if n.relu else -_qmax(bits) - 1
            node = IntNode(n.name, "add", [a.name, b.name], n.path,
                           dict(m=m, shift=ADD_SHIFT), n.relu, s_out, bits, lo, _qmax(bits))
        else:
            lo = max(src.lo, 0) if n.op == "relu" else src.lo
            node = IntNode(n.name, n.op, [src.name], n.path, dict(n.attrs), n.relu, src.scale,
                           src.bits, lo, src.hi)
        nodes.append(node)
        by[node.name] = node
    return IntGraph(nodes, graph.output, n0.scale, in_bits, cfg)
