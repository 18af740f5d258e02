"""Quantization-aware and approximation-aware fine-tuning with a straight-through estimator.

:func:`finetune` trains the (BN-folded) weights and biases of an imported
:class:`~.graph.Graph` for ``cfg.finetune.epochs`` epochs of Adam, then quantizes again:

* the forward pass uses fake-quantized weights (each output channel's ANT format and clipping
  of the post-training quantization, re-rounded from the current float weights every step) and
  fake-quantized activations (the calibrated scales and ranges);
* with ``approx_aware`` (default) a layer whose multiplier is not exact computes its
  pre-activation with the bit-exact integer emulation
  (:meth:`~.execute.ReferenceExecutor.accumulate` of the current integer weights and inputs,
  dequantized): ``y = y_float + (y_emulated − y_float).detach()``;
* gradients flow straight through every rounding (``x + (q(x) − x).detach()``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from ..formats import number_format
from .execute import ReferenceExecutor
from .graph import Graph
from .qconfig import QuantConfig
from .quantize import IntGraph, quantize

__all__ = ["finetune", "fake_quant_forward"]


def _ste(x, q):
    return x + (q - x).detach()


def _weight_fq(w, node):
    """Fake-quantize float weights with the node's per-channel formats and scales."""
    oc = w.shape[0]
    rows = w.reshape(oc, -1)
    out = torch.empty_like(rows)
    vals = torch.empty(rows.shape, dtype=torch.int64)
    specs = [node.keys[int(k)][1] for k in node.kernel_keys()[:, 0]]
    for spec in sorted(set(specs)):
        idx = torch.tensor([i for i, s in enumerate(specs) if s == spec])
        fmt = number_format(spec)
        gmax = float(fmt.grid().max())  # ANT: scale = alpha / max(grid)
        alpha = (node.s_w[idx] * gmax).to(torch.float32)[:, None]
        codes = fmt.quantize(rows[idx].detach(), alpha)
        v = fmt.values()[codes]
        vals[idx] = v
        out[idx] = v.to(rows.dtype) * node.s_w[idx].to(rows.dtype)[:, None]
    return _ste(w, out.reshape(w.shape)), vals.reshape(w.shape)


def _act_fq(y, node):
    q = torch.clamp(torch.floor(y.detach() / node.scale + 0.5), node.lo, node.hi) * node.scale
    return _ste(y, q)


def fake_quant_forward(graph: Graph, ig: IntGraph, params: dict, x, *, approx_aware=True):
    """Differentiable forward of ``graph`` with the quantization of ``ig`` (see the module
    doc); ``params[name] = (weight, bias)`` are the trainable tensors."""
    ref = ReferenceExecutor()
    vals = {graph.input.name: _act_fq(x, ig[graph.input.name])}
    for n in graph.nodes[1:]:
        node = ig[n.name]
        args = [vals[i] for i in n.inputs]
        if n.op in ("conv2d", "linear"):
            w, b = params[n.name]
            wq, wv = _weight_fq(w, node)
            if n.op == "conv2d":
                a = n.attrs
                y = F.conv2d(args[0], wq, b, a["stride"], a["padding"], 1, a["groups"])
            else:
                y = F.linear(args[0], wq, b)
            exact = all(k[0].split(":")[0] == "exact" for k in node.keys)
            if approx_aware and not exact:
                xin = torch.round(args[0].detach() / ig[n.inputs[0]].scale).to(torch.int64)
                tmp = dataclasses.replace(node, w=wv)
                acc = ref.accumulate(tmp, xin).to(y.dtype)
                sw = node.s_w.to(y.dtype)
                sw = sw.reshape(1, -1, 1, 1) if n.op == "conv2d" else sw.reshape(1, -1)
                bb = b.detach().reshape(sw.shape)
                y = _ste(y, acc * (node.s_in * sw) + bb)
            if n.relu:
                y = torch.relu(y)
            y = _act_fq(y, node)
        elif n.op == "add":
            y = args[0] + args[1]
            if n.relu:
                y = torch.relu(y)
            y = _act_fq(y, node)
        elif n.op == "maxpool2d":
            a = n.attrs
            y = F.max_pool2d(args[0], a["kernel"], a["stride"], a["padding"])
        elif n.op == "avgpool2d":
            a = n.attrs
            y = _act_fq(F.avg_pool2d(args[0], a["kernel"], a["stride"]), node)
        elif n.op == "flatten":
            y = torch.flatten(args[0], 1)
        elif n.op == "relu":
            y = torch.relu(args[0])
        else:  # pragma: no cover
            raise ValueError(f"node {n.name}: unknown op {n.op}")
        vals[n.name] = y
    return vals[graph.output]


def finetune(model, graph: Graph, cfg: QuantConfig, data, *, progress: bool = True):
    """Fine-tune ``graph`` (imported from ``model``) on ``data`` (a :class:`~mixpe.sw.data.Split`)
    and quantize it again: returns ``(graph, IntGraph, data)`` — the graph is the fine-tuned
    float model (callable). Deterministic (seeded, one thread)."""
    from rich.progress import Progress

    ft = cfg.finetune
    ig = quantize(graph, cfg, data.x_train)
    if ft.epochs == 0:
        return graph, ig, data
    params = {}
    for n in graph.compute_nodes():
        params[n.name] = (n.weight.clone().requires_grad_(True),
                          n.bias.clone().requires_grad_(True))
    opt = torch.optim.Adam([p for wb in params.values() for p in wb], lr=ft.lr)
    gen = torch.Generator().manual_seed(0)
    nthreads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("fine-tuning", total=ft.epochs)
            for _ in range(ft.epochs):
                perm = torch.randperm(len(data.y_train), generator=gen)
                for i in range(0, len(perm), ft.batch_size):
                    idx = perm[i:i + ft.batch_size]
                    opt.zero_grad()
                    out = fake_quant_forward(graph, ig, params, data.x_train[idx],
                                             approx_aware=ft.approx_aware)
                    F.cross_entropy(out, data.y_train[idx]).backward()
                    opt.step()
                bar.advance(task)
    finally:
        torch.set_num_threads(nthreads)
    for n in graph.compute_nodes():
        n.weight = params[n.name][0].detach().clone()
        n.bias = params[n.name][1].detach().clone()
    return graph, quantize(graph, cfg, data.x_train), data
