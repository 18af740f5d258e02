"""The explorer's quantized network: a chain of conv/linear layers run bit-exactly.

:class:`QNet` imports a float ``torch.nn.Module`` whose ``torch.fx`` graph is a *chain*
(conv2d/linear, batch-norm, ReLU, max/avg-pool, flatten; batch-norm folded into the preceding
conv), calibrates one activation scale per layer input on training images, and then runs any
:class:`~mixpe.sw.explore.space.Config` bit-exactly:

* input images ``x ∈ [0, 1]`` become int8 codes ``a = clamp(round(x · 127), 0, 127)``;
* layer ``l`` with output channel ``c`` quantizes its weights onto the channel's number-format
  grid ``G_c`` (integer values, e.g. ``int:bits=4`` → −8…7, ``flint:bits=4`` → ±{0…4, 6, 8, 16})
  with ANT's per-channel clipping search (:func:`weight_values`, as the model flow does),
  and its bias to the accumulator scale, ``β_c = round(b_c / (s_in · s_c))``, added by the
  requantization;
* the accumulators come from :func:`mixpe.sw.emulate.conv2d` / :func:`~mixpe.sw.emulate.linear`
  with filter ``c``'s multiplier (32-bit saturating accumulators), i.e.
  the products the PE computes, in the array's k order;
* between layers, :func:`mixpe.sw.requant.requantize` (the core's requant unit) maps the
  accumulators to the next layer's int8 codes with ``mult·2^−shift ≈ s_in · s_c / s_out``
  (:func:`~mixpe.sw.requant.quantize_multiplier`), ReLU fused, clamp to [−128, 127]; pools act on
  codes (max exactly; average as ``floor((Σ + n/2) / n)``, round half up);
* the last layer is requantized as well (no ReLU, clamp [−128, 127]); the class is the first
  maximum of its codes. Scales: ``s_in`` of layer 0 is 1/127; every layer's output scale is the
  max |output| (after ReLU, before pooling) over the calibration images / 127, and the next
  layer's ``s_in`` (pooling keeps the scale) — the model flow's (``sw/model``) choices, so for
  the same config both give the same codes (``tests/test_explore.py`` checks it).

Everything is deterministic, so the accuracy of a config is a pure function of the config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..emulate import conv2d as emu_conv2d
from ..emulate import linear as emu_linear
from ..formats import number_format
from ..mult import multiplier
from ..requant import quantize_multiplier, requantize

__all__ = ["QLayer", "QNet", "weight_values", "ACC_BITS", "A_MAX"]

#: Accumulator width used for every layer (the ulx3s-8x8 preset's saturating 32-bit PE).
ACC_BITS = 32
#: Largest activation code (int8 codes; ReLU outputs lie in [0, A_MAX]).
A_MAX = 127


@dataclass
class QLayer:
    """One conv/linear layer of the chain with what follows it up to the next such layer."""

    name: str
    kind: str                      # "conv" or "linear"
    weight: torch.Tensor           # float, BN folded: [OC, C/g, KH, KW] or [OUT, IN]
    bias: torch.Tensor             # float [OC]
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    groups: int = 1
    relu: bool = False
    post: list = field(default_factory=list)  # ("maxpool", k, s) / ("avgpool", k, s) / ("flatten",)
    in_shape: tuple = ()           # (C, H, W) or (IN,) of one sample
    out_shape: tuple = ()          # before ``post``

    @property
    def channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def macs(self) -> int:
        """Multiply-accumulates per sample."""
        k = int(self.weight[0].numel())
        spatial = int(math.prod(self.out_shape[1:])) if self.kind == "conv" else 1
        return self.channels * k * spatial


def weight_values(w: torch.Tensor, fmt_spec: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel quantization of ``w`` (float ``[OC, ...]``) onto one format's grid.

    The model flow's ``sw/model/quantize.py:quantize_weights`` with the format as the only
    type candidate (so both give the same values): the clipping value of each channel is ANT's
    MSE search (:func:`mixpe.sw.ant.search_mse`, per channel), the codes
    :meth:`~mixpe.sw.formats.NumberFormat.quantize`, the values ``fmt.values()[codes]`` and
    ``scale = alpha / max(grid)`` (1 for a zero channel), so ``w ≈ values · scale``. Without the
    model flow, the same steps run here. Returns ``(values int64 like w, scale float64 [OC])``.
    """
    fmt = number_format(fmt_spec)
    try:
        from ..model.quantize import quantize_weights
    except ImportError:
        quantize_weights = None
    if quantize_weights is not None:
        fam = fmt.spec.split(":")[0]
        if fmt.bits <= 6 or fam == "int":
            vals, scale, specs = quantize_weights(w, fmt.bits, [fam])
            if all(number_format(x).spec == fmt.spec for x in specs):
                return vals, scale
    from ..ant import search_mse

    oc = w.shape[0]
    rows = w.detach().reshape(oc, -1).to(torch.float32)
    r = search_mse(rows, fmt, per_channel=True)
    codes = fmt.quantize(rows, r.alpha)
    vals = fmt.values()[codes].reshape(w.shape)
    gmax = float(fmt.grid().max())
    sw = r.alpha.reshape(-1).to(torch.float64) / gmax
    scale = torch.where(sw > 0, sw, torch.ones_like(sw))
    return vals, scale


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class QNet:
    """A float chain model, calibrated for int8 activations, runnable under any Config.

    Parameters
    ----------
    model : torch.nn.Module
        Traceable by ``torch.fx`` into a chain of Conv2d (+BatchNorm2d) / Linear, ReLU,
        MaxPool2d / AvgPool2d, Flatten. Anything else raises ``ValueError`` naming the node.
    calib : float tensor ``[N, C, H, W]``
        Calibration images (activation scales = max of each layer input over them).
    name : str
        Model name recorded in configs.
    """

    def __init__(self, model: nn.Module, calib: torch.Tensor, *, name: str = "model"):
        self.name = name
        self.layers = _import_chain(model, calib.shape[1:])
        self._wcache: dict = {}
        self._calibrate(calib)

    # -- import / calibration --------------------------------------------------------------
    def _float_forward(self, x, collect=None):
        """Float forward; ``collect`` receives each layer's output after ReLU, before pooling."""
        for i, L in enumerate(self.layers):
            if L.kind == "conv":
                x = torch.nn.functional.conv2d(x, L.weight, L.bias, L.stride, L.padding, 1,
                                               L.groups)
            else:
                x = torch.nn.functional.linear(x, L.weight, L.bias)
            if L.relu:
                x = torch.relu(x)
            if collect is not None:
                collect.append(x)
            x = _apply_post(x, L.post, float_mode=True)
        return x

    def _calibrate(self, calib):
        outs: list = []
        with torch.no_grad():
            self._float_forward(calib.to(torch.float32), outs)
        # scale of the input: images in [0, 1] -> 1/127; scale of layer l's output codes:
        # max |output| (after ReLU, before pooling; pooling keeps the scale) / 127
        self.out_scales = []
        for o in outs:
            m = float(o.detach().abs().max())
            self.out_scales.append(m / A_MAX if m > 0 else 1.0)
        self.in_scales = [1.0 / A_MAX] + self.out_scales[:-1]
        for i in range(len(self.layers) - 1):
            if not self.layers[i].relu:
                raise ValueError(f"layer {self.layers[i].name}: a quantized layer must be followed "
                                 "by ReLU (its codes are requantized to [0, 127]); allowed: "
                                 "conv/linear → ReLU except for the last layer")

    def input_codes(self, x: torch.Tensor) -> torch.Tensor:
        """int8 codes of images in [0, 1]."""
        return torch.round(x.to(torch.float64) * A_MAX).clamp(0, A_MAX).to(torch.int64)

    # -- bit-exact run ----------------------------------------------------------------------
    def forward_codes(self, x: torch.Tensor, config, *, collect=None) -> torch.Tensor:
        """Run ``config`` on images ``x``; returns the last layer's int8 output codes.

        ``collect`` (a list) receives each layer's input codes.
        """
        if len(config.layers) != len(self.layers):
            raise ValueError(f"config has {len(config.layers)} layers, model {self.name} has "
                             f"{len(self.layers)}")
        a = self.input_codes(x)
        for i, (L, lq) in enumerate(zip(self.layers, config.layers)):
            if collect is not None:
                collect.append(a)
            acc, s_w, beta = self.layer_acc(i, a, lq, with_bias=True)
            real = self.in_scales[i] * s_w / self.out_scales[i]
            mult, shift = quantize_multiplier(real)
            lo = 0 if L.relu else -A_MAX - 1
            if L.kind == "conv":
                y = requantize(acc.movedim(1, -1), beta, mult, shift, relu=L.relu, lo=lo,
                               hi=A_MAX).movedim(-1, 1)
            else:
                y = requantize(acc, beta, mult, shift, relu=L.relu, lo=lo, hi=A_MAX)
            a = _apply_post(y, L.post, float_mode=False)
        return a

    def layer_weights(self, i: int, spec: str) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`weight_values` of layer ``i`` in format ``spec`` (all channels, cached)."""
        key = (i, spec)
        if key not in self._wcache:
            self._wcache[key] = weight_values(self.layers[i].weight, spec)
        return self._wcache[key]

    def layer_acc(self, i: int, a: torch.Tensor, lq, *, with_bias: bool = False):
        """Accumulators of layer ``i`` on input codes ``a`` under layer config ``lq``.

        Returns ``(acc int64 [N, OC, ...], weight scale float64 [OC])`` (the bias is added by
        the requantization, not preloaded); ``with_bias`` also returns the integer bias
        ``β = round(b / (s_in · s_w))`` ``[OC]``. Non-int weight formats multiply through a
        :class:`~mixpe.sw.mult.decoded.DecodedMultiplier` (int8 activations × the format,
        the mantissas through the multiplier), as the model flow's reference does.
        """
        L = self.layers[i]
        oc = L.channels
        if len(lq.w_formats) != oc or len(lq.mults) != oc:
            raise ValueError(f"layer {L.name}: config gives {len(lq.w_formats)} formats and "
                             f"{len(lq.mults)} multipliers, the layer has {oc} output channels")
        vals = torch.empty(L.weight.shape, dtype=torch.int64)
        scale = torch.empty(oc, dtype=torch.float64)
        for spec in sorted(set(lq.w_formats)):
            idx = torch.tensor([c for c in range(oc) if lq.w_formats[c] == spec])
            v, s = self.layer_weights(i, spec)
            vals[idx], scale[idx] = v[idx], s[idx]
        s_in = self.in_scales[i]
        beta = torch.round(L.bias.to(torch.float64) / (s_in * scale)).to(torch.int64)
        lim = (1 << (ACC_BITS - 1)) - 1
        beta = beta.clamp(-lim - 1, lim)
        keys = set(zip(lq.mults, lq.w_formats))
        if lq.per_kernel or (L.groups > 1 and len(keys) > 1):
            if L.kind != "conv":
                raise ValueError(f"layer {L.name}: per-kernel multipliers need a conv layer")
            out = self._mixed_conv(i, a, vals, lq)
            return (out, scale, beta) if with_bias else (out, scale)
        out = None
        for key in sorted(keys):
            idx = torch.tensor([c for c in range(oc) if (lq.mults[c], lq.w_formats[c]) == key])
            m = _multiplier(*key)
            if L.kind == "conv":
                part = emu_conv2d(a, vals[idx], m, stride=L.stride, padding=L.padding,
                                  groups=L.groups, acc_bits=ACC_BITS, overflow="saturate")
            else:
                part = emu_linear(a, vals[idx], m, acc_bits=ACC_BITS, overflow="saturate")
            if out is None:
                out = torch.empty((part.shape[0], oc, *part.shape[2:]), dtype=torch.int64)
            out[:, idx] = part
        return (out, scale, beta) if with_bias else (out, scale)

    def _mixed_conv(self, i: int, a: torch.Tensor, vals: torch.Tensor, lq) -> torch.Tensor:
        """Conv accumulators with a multiplier per kernel ``(oc, ic)``: every product through
        its kernel's multiplier, added in the im2col k order ``(ic, kh, kw)`` with saturation
        after every addition (the definition :mod:`mixpe.sw.emulate` implements)."""
        L = self.layers[i]
        oc, cg, kh, kw = vals.shape
        G = L.groups
        ocg = oc // G
        km_specs = lq.kernel_mults(cg)
        n = a.shape[0]
        cols = torch.nn.functional.unfold(a.to(torch.float64), (kh, kw), padding=L.padding,
                                          stride=L.stride).round().to(torch.int64)
        nl = cols.shape[-1]
        K = cg * kh * kw
        lo, hi = -(1 << (ACC_BITS - 1)), (1 << (ACC_BITS - 1)) - 1
        out = torch.empty((n, oc, nl), dtype=torch.int64)
        for g in range(G):
            rows = cols[:, g * K:(g + 1) * K, :].permute(0, 2, 1).reshape(-1, K)  # [M, K]
            osl = range(g * ocg, (g + 1) * ocg)
            W = vals[g * ocg:(g + 1) * ocg].reshape(ocg, K)
            keys: list = []
            km = torch.empty((ocg, K), dtype=torch.int64)
            for r, o in enumerate(osl):
                for ic in range(cg):
                    key = (km_specs[o][ic], lq.w_formats[o])
                    if key not in keys:
                        keys.append(key)
                    km[r, ic * kh * kw:(ic + 1) * kh * kw] = keys.index(key)
            prod = torch.zeros((rows.shape[0], ocg, K), dtype=torch.int64)
            for idx, key in enumerate(keys):
                hit = km == idx
                ww = torch.where(hit, W, torch.zeros_like(W))
                p = _multiplier(*key).mul(rows[:, None, :], ww[None, :, :])
                prod = torch.where(hit[None], p, prod)
            acc = torch.zeros((rows.shape[0], ocg), dtype=torch.int64)
            for k in range(K):
                acc = (acc + prod[:, :, k]).clamp(lo, hi)
            out[:, g * ocg:(g + 1) * ocg] = acc.reshape(n, nl, ocg).permute(0, 2, 1)
        return out.reshape(n, oc, *L.out_shape[1:])

    def accuracy(self, config, x, y, *, batch: int = 512) -> float:
        """Top-1 accuracy (%) of ``config`` on images ``x`` with labels ``y``."""
        correct = 0
        for s in range(0, len(x), batch):
            logits = self.forward_codes(x[s:s + batch], config)  # int codes; first max wins
            correct += int((logits.argmax(dim=1) == y[s:s + batch]).sum())
        return 100.0 * correct / max(len(x), 1)

    def float_accuracy(self, x, y) -> float:
        with torch.no_grad():
            return 100.0 * float((self._float_forward(x).argmax(1) == y).float().mean())


_MULTS: dict = {}


def _multiplier(mult_spec: str, fmt_spec: str):
    """The multiplier of (mult, weight format): the multiplier itself for int weights, else a
    DecodedMultiplier ``int8 × format`` over it (cached)."""
    key = (mult_spec, fmt_spec)
    if key not in _MULTS:
        from ..formats import IntFormat
        from ..mult.decoded import DecodedMultiplier

        core = multiplier(mult_spec)
        fmt = number_format(fmt_spec)
        _MULTS[key] = core if isinstance(fmt, IntFormat) else \
            DecodedMultiplier(IntFormat(bits=8, signed=True), fmt, core)
    return _MULTS[key]


def _apply_post(x, post, *, float_mode: bool):
    for op in post:
        if op[0] == "flatten":
            x = x.flatten(1)
        elif op[0] == "maxpool":
            x = torch.nn.functional.max_pool2d(x.to(torch.float64) if not float_mode else x,
                                               op[1], op[2])
            if not float_mode:
                x = x.to(torch.int64)
        elif op[0] == "avgpool":
            if float_mode:
                x = torch.nn.functional.avg_pool2d(x, op[1], op[2])
            else:
                n = op[1] * op[1]
                s = torch.nn.functional.avg_pool2d(x.to(torch.float64), op[1], op[2],
                                                   divisor_override=1).round().to(torch.int64)
                x = torch.div(s + n // 2, n, rounding_mode="floor")
        else:  # pragma: no cover - guarded at import
            raise AssertionError(op)
    return x


def _import_chain(model: nn.Module, in_shape) -> list[QLayer]:
    """Trace ``model`` and fold it into QLayers (BN folded into the conv before it)."""
    import torch.fx as fx

    model = model.eval()
    gm = fx.symbolic_trace(model)
    mods = dict(gm.named_modules())
    layers: list[QLayer] = []
    prev = None
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            if node.op == "placeholder" and prev is not None:
                raise ValueError(f"node {node.name}: only one model input is supported")
            prev = node
            continue
        if len(node.all_input_nodes) != 1 or node.all_input_nodes[0] is not prev:
            raise ValueError(f"node {node.name} ({node.target}): the explorer's QNet takes a "
                             "chain of layers (no residual adds or branches)")
        prev = node
        mod = mods.get(node.target) if node.op == "call_module" else None
        fn = node.target if node.op in ("call_function", "call_method") else None
        if isinstance(mod, nn.Conv2d):
            w = mod.weight.detach().clone()
            b = mod.bias.detach().clone() if mod.bias is not None else torch.zeros(w.shape[0])
            layers.append(QLayer(node.target, "conv", w, b, _pair(mod.stride), _pair(mod.padding),
                                 mod.groups))
        elif isinstance(mod, nn.Linear):
            w = mod.weight.detach().clone()
            b = mod.bias.detach().clone() if mod.bias is not None else torch.zeros(w.shape[0])
            layers.append(QLayer(node.target, "linear", w, b))
        elif isinstance(mod, nn.BatchNorm2d):
            if not layers or layers[-1].kind != "conv" or layers[-1].relu or layers[-1].post:
                raise ValueError(f"node {node.name}: batch-norm must follow a conv directly")
            L = layers[-1]
            g = mod.weight.detach() / torch.sqrt(mod.running_var + mod.eps)
            L.weight = L.weight * g.reshape(-1, 1, 1, 1)
            L.bias = (L.bias - mod.running_mean) * g + mod.bias.detach()
        elif isinstance(mod, nn.ReLU) or fn in (torch.relu, torch.nn.functional.relu, "relu"):
            if not layers or layers[-1].post:
                raise ValueError(f"node {node.name}: ReLU must follow a conv/linear directly")
            layers[-1].relu = True
        elif isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            if not layers:
                raise ValueError(f"node {node.name}: pooling before the first layer")
            k = mod.kernel_size if isinstance(mod.kernel_size, int) else mod.kernel_size[0]
            s = mod.stride if isinstance(mod.stride, int) else mod.stride[0]
            if getattr(mod, "padding", 0) not in (0, (0, 0)):
                raise ValueError(f"node {node.name}: padded pooling is not supported")
            kind = "maxpool" if isinstance(mod, nn.MaxPool2d) else "avgpool"
            layers[-1].post.append((kind, k, s))
        elif isinstance(mod, nn.Flatten) or fn in (torch.flatten, "flatten"):
            if not layers:
                raise ValueError(f"node {node.name}: flatten before the first layer")
            layers[-1].post.append(("flatten",))
        else:
            raise ValueError(f"node {node.name} ({node.target}): unsupported op for the "
                             "explorer's QNet; allowed: Conv2d, BatchNorm2d, Linear, ReLU, "
                             "MaxPool2d, AvgPool2d, Flatten")
    if not layers:
        raise ValueError("model has no conv/linear layer")
    # shapes
    x = torch.zeros(1, *in_shape)
    for L in layers:
        L.in_shape = tuple(x.shape[1:])
        if L.kind == "conv":
            x = torch.nn.functional.conv2d(x, L.weight, None, L.stride, L.padding, 1, L.groups)
        else:
            if x.dim() != 2:
                raise ValueError(f"layer {L.name}: linear input must be flat (add a Flatten)")
            x = torch.nn.functional.linear(x, L.weight)
        L.out_shape = tuple(x.shape[1:])
        x = _apply_post(x, L.post, float_mode=True)
    return layers
