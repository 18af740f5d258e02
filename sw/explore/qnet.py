"""The explorer's quantized network: a chain of conv/linear layers run bit-exactly.

:class:`QNet` imports a float ``torch.nn.Module`` whose ``torch.fx`` graph is a *chain*
(conv2d/linear, batch-norm, ReLU, max/avg-pool, flatten; batch-norm folded into the preceding
conv), calibrates one activation scale per layer input on training images, and then runs any
:class:`~mixpe.sw.explore.space.Config` bit-exactly:

* input images ``x ∈ [0, 1]`` become int8 codes ``a = clamp(round(x · 127), 0, 127)``;
* layer ``l`` with output channel ``c`` quantizes its weights onto the channel's number-format
  grid ``G_c`` (integer values, e.g. ``int:bits=4`` → −8…7, ``flint:bits=4`` → ±{0…4, 6, 8, 16}):
  ``s_c = max|W_c| / max(G_c)``, ``v = nearest(G_c, W_c / s_c)`` (ties: the smaller value),
  and its bias to the accumulator scale, ``β_c = round(b_c / (s_in · s_c))``;
* the accumulators come from :func:`mixpe.sw.emulate.conv2d` / :func:`~mixpe.sw.emulate.linear`
  with filter ``c``'s multiplier (32-bit saturating accumulators, preloaded with ``β_c``), i.e.
  the products the PE computes, in the array's k order;
* between layers, :func:`mixpe.sw.requant.requantize` (the core's requant unit) maps the
  accumulators to the next layer's int8 codes with ``mult·2^−shift ≈ s_in · s_c / s_out``
  (:func:`~mixpe.sw.requant.quantize_multiplier`), ReLU fused, clamp to [−128, 127]; pools act on
  codes (max exactly; average as ``floor((Σ + n/2) / n)``, round half up);
* the last layer's class is ``argmax_c(acc_c · s_c)`` (float only at this edge).

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

    Returns ``(values int64 like w, scale float64 [OC])`` with ``w ≈ values · scale``.
    A channel of zeros gets scale 1 and values 0.
    """
    fmt = number_format(fmt_spec)
    grid = fmt.grid().to(torch.float64)
    gmax = float(grid.abs().max())
    wf = w.detach().to(torch.float64).reshape(w.shape[0], -1)
    amax = wf.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / gmax, torch.ones_like(amax))
    d = wf / scale[:, None]
    idx = (d[..., None] - grid).abs().argmin(dim=-1)  # first (smaller) grid value on ties
    vals = grid[idx].to(torch.int64).reshape(w.shape)
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
        self._calibrate(calib)

    # -- import / calibration --------------------------------------------------------------
    def _float_forward(self, x, collect=None):
        for i, L in enumerate(self.layers):
            if collect is not None:
                collect.append(x)
            if L.kind == "conv":
                x = torch.nn.functional.conv2d(x, L.weight, L.bias, L.stride, L.padding, 1,
                                               L.groups)
            else:
                x = torch.nn.functional.linear(x, L.weight, L.bias)
            if L.relu:
                x = torch.relu(x)
            x = _apply_post(x, L.post, float_mode=True)
        return x

    def _calibrate(self, calib):
        ins: list = []
        with torch.no_grad():
            self._float_forward(calib.to(torch.float32), ins)
        # input of layer 0: images in [0, 1] -> scale 1/127; later inputs: max of the
        # float activation (ReLU outputs), a scale per tensor.
        self.in_scales = [1.0 / A_MAX]
        for i in range(1, len(self.layers)):
            m = float(ins[i].abs().max())
            self.in_scales.append(m / A_MAX if m > 0 else 1.0)
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
        """Run ``config`` on images ``x``; returns the float logits ``acc·s`` of the last layer.

        ``collect`` (a list) receives each layer's input codes.
        """
        if len(config.layers) != len(self.layers):
            raise ValueError(f"config has {len(config.layers)} layers, model {self.name} has "
                             f"{len(self.layers)}")
        a = self.input_codes(x)
        for i, (L, lq) in enumerate(zip(self.layers, config.layers)):
            if collect is not None:
                collect.append(a)
            acc, s_w = self.layer_acc(i, a, lq)
            s_in = self.in_scales[i]
            if i + 1 < len(self.layers):
                s_out = self.in_scales[i + 1]
                real = (s_in * s_w / s_out).tolist()
                mult, shift = quantize_multiplier(torch.tensor(real, dtype=torch.float64))
                shape = (1, -1, 1, 1) if L.kind == "conv" else (1, -1)
                accc = acc.movedim(1, -1) if L.kind == "conv" else acc
                y = requantize(accc, 0, mult, shift, relu=L.relu, lo=-128, hi=127)
                a = y.movedim(-1, 1) if L.kind == "conv" else y
                del shape
                a = _apply_post(a, L.post, float_mode=False)
            else:
                scale = (s_in * s_w).to(torch.float64)
                shape = (1, -1, 1, 1) if L.kind == "conv" else (1, -1)
                return acc.to(torch.float64) * scale.reshape(shape)
        raise AssertionError("unreachable")

    def layer_acc(self, i: int, a: torch.Tensor, lq) -> tuple[torch.Tensor, torch.Tensor]:
        """Accumulators of layer ``i`` on input codes ``a`` under layer config ``lq``.

        Returns ``(acc int64 [N, OC, ...], weight scale float64 [OC])``.
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
            v, s = weight_values(L.weight[idx], spec)
            vals[idx], scale[idx] = v, s
        s_in = self.in_scales[i]
        beta = torch.round(L.bias.to(torch.float64) / (s_in * scale)).to(torch.int64)
        lim = (1 << (ACC_BITS - 1)) - 1
        beta = beta.clamp(-lim, lim)
        out = None
        for spec in sorted(set(lq.mults)):
            idx = torch.tensor([c for c in range(oc) if lq.mults[c] == spec])
            m = multiplier(spec)
            if L.kind == "conv":
                part = emu_conv2d(a, vals[idx], m, beta[idx], stride=L.stride, padding=L.padding,
                                  groups=L.groups, acc_bits=ACC_BITS, overflow="saturate")
            else:
                part = emu_linear(a, vals[idx], m, beta[idx], acc_bits=ACC_BITS,
                                  overflow="saturate")
            if out is None:
                out = torch.empty((part.shape[0], oc, *part.shape[2:]), dtype=torch.int64)
            out[:, idx] = part
        return out, scale

    def accuracy(self, config, x, y, *, batch: int = 512) -> float:
        """Top-1 accuracy (%) of ``config`` on images ``x`` with labels ``y``."""
        correct = 0
        for s in range(0, len(x), batch):
            logits = self.forward_codes(x[s:s + batch], config)
            correct += int((logits.argmax(dim=1) == y[s:s + batch]).sum())
        return 100.0 * correct / max(len(x), 1)

    def float_accuracy(self, x, y) -> float:
        with torch.no_grad():
            return 100.0 * float((self._float_forward(x).argmax(1) == y).float().mean())


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
            layers[-1].post.append(("maxpool" if isinstance(mod, nn.MaxPool2d) else "avgpool", k, s))
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
