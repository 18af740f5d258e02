"""Import a ``torch.nn.Module`` through ``torch.fx`` into a small graph of supported ops.

:func:`import_model` traces the model (``torch.fx.symbolic_trace``), propagates the shapes of
an example input and keeps a list of :class:`Node` in topological order. Supported ops:

==============  ================================================================================
``conv2d``      ``nn.Conv2d`` (stride, zero padding, groups; dilation 1), followed by an optional
                ``nn.BatchNorm2d`` that is folded into the weights and bias
``linear``      ``nn.Linear``
``relu``        ``nn.ReLU``, ``torch.relu``, ``F.relu``, ``.relu()``; fused into the producing
                conv2d / linear / add when that has no other user (``Node.relu``)
``maxpool2d``   ``nn.MaxPool2d`` / ``F.max_pool2d`` (dilation 1, no ``ceil_mode``)
``avgpool2d``   ``nn.AvgPool2d`` / ``F.avg_pool2d`` (no padding, no ``ceil_mode``) and
                ``nn.AdaptiveAvgPool2d`` / ``F.adaptive_avg_pool2d`` when the output size divides
                the input size
``add``         ``x + y`` / ``torch.add`` of two tensors (residual add)
``flatten``     ``nn.Flatten`` / ``torch.flatten`` / ``.flatten()`` from dimension 1
==============  ================================================================================

``nn.Identity`` and ``nn.Dropout`` (eval mode) are dropped. Anything else raises ``ValueError``
naming the op, the fx node and the module path, e.g. ``unsupported op nn.GELU at node 'act'
(module 'block.act')``.

BN folding: with ``g = gamma / sqrt(running_var + eps)``, ``w' = w · g`` (per output channel)
and ``b' = (b − running_mean) · g + beta``; :meth:`Graph.forward` evaluates the folded graph in
float (``torch.nn.functional``), equal to the model in eval mode up to float rounding.

>>> from mixpe.sw.models import build_model
>>> g = import_model(build_model("digits-cnn"), torch.zeros(1, 1, 8, 8))
>>> [(n.op, n.relu) for n in g.nodes if n.op in ("conv2d", "linear")]
[('conv2d', True), ('conv2d', True), ('linear', False)]
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

__all__ = ["Node", "Graph", "import_model", "OPS", "COMPUTE_OPS"]

#: Graph ops.
OPS = ("input", "conv2d", "linear", "relu", "maxpool2d", "avgpool2d", "add", "flatten")
#: Ops that multiply (run on the accelerator).
COMPUTE_OPS = ("conv2d", "linear")


@dataclass
class Node:
    """One op of the imported graph.

    Attributes
    ----------
    name : str
        Unique name (the fx node name).
    op : str
        One of :data:`OPS`.
    inputs : list of str
        Names of the input nodes.
    path : str
        Module path (``"layer1.conv1"``) or the function name: what error messages and quant
        config overrides use.
    weight, bias : float tensors or None
        conv2d ``[OC, C/groups, KH, KW]`` / linear ``[OUT, IN]`` (BN folded), bias ``[OC]``.
    attrs : dict
        conv2d: ``stride, padding, groups`` (pairs / int); pools: ``kernel, stride, padding``.
    relu : bool
        A ReLU fused at the output.
    shape : tuple
        Output shape for the example input (batch dimension included).
    """

    name: str
    op: str
    inputs: list = field(default_factory=list)
    path: str = ""
    weight: Any = None
    bias: Any = None
    attrs: dict = field(default_factory=dict)
    relu: bool = False
    shape: tuple = ()


@dataclass
class Graph:
    """Imported graph: nodes in topological order, one input, one output."""

    nodes: list
    output: str

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def __getitem__(self, name: str) -> Node:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.nodes)

    @property
    def input(self) -> Node:
        return self.nodes[0]

    def compute_nodes(self) -> list[Node]:
        """conv2d and linear nodes in order."""
        return [n for n in self.nodes if n.op in COMPUTE_OPS]

    def users(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]

    def forward(self, x: torch.Tensor, record: bool = False):
        """Float evaluation; with ``record`` also returns every node's output."""
        vals: dict[str, torch.Tensor] = {}
        for n in self.nodes:
            if n.op == "input":
                v = x
            else:
                v = float_op(n, [vals[i] for i in n.inputs])
            vals[n.name] = v
        out = vals[self.output]
        return (out, vals) if record else out

    __call__ = forward


def float_op(n: Node, args: list) -> torch.Tensor:
    """Float semantics of one node (ReLU fusion included)."""
    a = n.attrs
    if n.op == "conv2d":
        v = F.conv2d(args[0], n.weight, n.bias, a["stride"], a["padding"], 1, a["groups"])
    elif n.op == "linear":
        v = F.linear(args[0], n.weight, n.bias)
    elif n.op == "relu":
        v = args[0]
    elif n.op == "maxpool2d":
        v = F.max_pool2d(args[0], a["kernel"], a["stride"], a["padding"])
    elif n.op == "avgpool2d":
        v = F.avg_pool2d(args[0], a["kernel"], a["stride"])
    elif n.op == "add":
        v = args[0] + args[1]
    elif n.op == "flatten":
        v = torch.flatten(args[0], 1)
    else:  # pragma: no cover
        raise ValueError(f"node {n.name}: unknown op {n.op!r}")
    return torch.relu(v) if n.relu or n.op == "relu" else v


# -- import -------------------------------------------------------------------------------------

def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _unsupported(node: fx.Node, what: str, path: str, why: str = "") -> ValueError:
    where = f" (module '{path}')" if path else ""
    return ValueError(f"unsupported op {what} at node '{node.name}'{where}"
                      f"{': ' + why if why else ''}; supported: conv2d (+ batch-norm), linear, "
                      f"relu, max/avg pooling, residual add, flatten")


_RELU_FNS = {torch.relu, F.relu, torch.nn.functional.relu}
_ADD_FNS = {operator.add, operator.iadd, torch.add}
_FLATTEN_FNS = {torch.flatten}


def _arg(node: fx.Node, i: int, name: str, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def import_model(model: nn.Module, example: torch.Tensor) -> Graph:
    """Trace ``model`` (put in eval mode) into a :class:`Graph` (see the module doc).

    ``example``: an input batch ``[N, C, H, W]`` used to propagate shapes.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    model.eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001  (fx raises many kinds)
        raise ValueError(f"torch.fx cannot trace {type(model).__name__}: {e}") from None
    with torch.no_grad():
        ShapeProp(gm).propagate(example)
    nodes: list[Node] = []
    alias: dict[str, str] = {}   # fx name -> graph node name
    by_name: dict[str, Node] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"the model must take one input tensor, it takes {len(placeholders)}")
    output = None

    def src(a, node, path):
        if not isinstance(a, fx.Node):
            raise _unsupported(node, f"argument {a!r}", path, "expected a tensor input")
        return alias[a.name]

    def add(n: Node, fxn: fx.Node):
        tm = fxn.meta.get("tensor_meta")
        n.shape = tuple(tm.shape) if tm is not None and hasattr(tm, "shape") else ()
        nodes.append(n)
        by_name[n.name] = n
        alias[fxn.name] = n.name

    for fxn in gm.graph.nodes:
        if fxn.op == "placeholder":
            add(Node(fxn.name, "input", path=fxn.target), fxn)
            continue
        if fxn.op == "output":
            res = fxn.args[0]
            if not isinstance(res, fx.Node):
                raise ValueError(f"the model must return one tensor, not {type(res).__name__}")
            output = alias[res.name]
            continue
        if fxn.op == "get_attr":
            raise _unsupported(fxn, f"parameter access '{fxn.target}'", str(fxn.target))
        if fxn.op == "call_module":
            path = str(fxn.target)
            mod = gm.get_submodule(fxn.target)
            kind = f"nn.{type(mod).__name__}"
            ins = [src(a, fxn, path) for a in fxn.args]
            if isinstance(mod, (nn.Identity, nn.Dropout)):
                alias[fxn.name] = ins[0]
            elif isinstance(mod, nn.Conv2d):
                if mod.padding_mode != "zeros" or isinstance(mod.padding, str):
                    raise _unsupported(fxn, kind, path, f"padding={mod.padding!r}, padding_mode="
                                       f"{mod.padding_mode!r} (allowed: integer zero padding)")
                if _pair(mod.dilation) != (1, 1):
                    raise _unsupported(fxn, kind, path, f"dilation={mod.dilation} (allowed: 1)")
                w = mod.weight.detach().clone()
                b = (mod.bias.detach().clone() if mod.bias is not None
                     else torch.zeros(w.shape[0]))
                add(Node(fxn.name, "conv2d", ins, path, w, b,
                         dict(stride=_pair(mod.stride), padding=_pair(mod.padding),
                              groups=int(mod.groups))), fxn)
            elif isinstance(mod, nn.BatchNorm2d):
                prev = by_name.get(ins[0])
                users = [u for u in fxn.args[0].users] if isinstance(fxn.args[0], fx.Node) else []
                if prev is None or prev.op != "conv2d" or prev.relu or len(users) != 1:
                    raise _unsupported(fxn, kind, path, "batch-norm is only supported right "
                                       "after a conv2d whose output it alone uses (folded)")
                if not mod.track_running_stats or mod.running_mean is None:
                    raise _unsupported(fxn, kind, path, "batch-norm without running statistics")
                g = (mod.weight.detach() if mod.affine else torch.ones_like(mod.running_var)) \
                    / torch.sqrt(mod.running_var + mod.eps)
                beta = mod.bias.detach() if mod.affine else torch.zeros_like(g)
                prev.weight = prev.weight * g.reshape(-1, 1, 1, 1)
                prev.bias = (prev.bias - mod.running_mean) * g + beta
                prev.path = f"{prev.path}+{path}" if "+" not in prev.path else prev.path
                alias[fxn.name] = prev.name
            elif isinstance(mod, nn.Linear):
                w = mod.weight.detach().clone()
                b = mod.bias.detach().clone() if mod.bias is not None else torch.zeros(w.shape[0])
                add(Node(fxn.name, "linear", ins, path, w, b), fxn)
            elif isinstance(mod, nn.ReLU):
                add(Node(fxn.name, "relu", ins, path), fxn)
            elif isinstance(mod, nn.MaxPool2d):
                if mod.ceil_mode or _pair(mod.dilation) != (1, 1) or mod.return_indices:
                    raise _unsupported(fxn, kind, path, "ceil_mode, dilation or return_indices")
                add(_pool(fxn, "maxpool2d", path, mod.kernel_size, mod.stride, mod.padding), fxn)
            elif isinstance(mod, nn.AvgPool2d):
                if mod.ceil_mode or _pair(mod.padding) != (0, 0) or mod.divisor_override:
                    raise _unsupported(fxn, kind, path, "padding, ceil_mode or divisor_override")
                add(_pool(fxn, "avgpool2d", path, mod.kernel_size, mod.stride, 0), fxn)
            elif isinstance(mod, nn.AdaptiveAvgPool2d):
                add(_adaptive(fxn, path, mod.output_size, by_name[ins[0]].shape), fxn)
            elif isinstance(mod, nn.Flatten):
                if mod.start_dim != 1 or mod.end_dim != -1:
                    raise _unsupported(fxn, kind, path, "only flatten from dimension 1")
                add(Node(fxn.name, "flatten", ins, path), fxn)
            else:
                raise _unsupported(fxn, kind, path)
            continue
        # call_function / call_method
        target = fxn.target
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        path = f"{'.' if fxn.op == 'call_method' else ''}{name}"
        if fxn.op == "call_function" and target in _ADD_FNS or \
                fxn.op == "call_method" and target in ("add", "__add__"):
            if len(fxn.args) != 2 or fxn.kwargs or not all(isinstance(a, fx.Node)
                                                            for a in fxn.args):
                raise _unsupported(fxn, name, path, "only the sum of two tensors")
            add(Node(fxn.name, "add", [src(a, fxn, path) for a in fxn.args], path), fxn)
        elif fxn.op == "call_function" and target in _RELU_FNS or \
                fxn.op == "call_method" and target in ("relu", "relu_"):
            add(Node(fxn.name, "relu", [src(fxn.args[0], fxn, path)], path), fxn)
        elif fxn.op == "call_function" and target in _FLATTEN_FNS or \
                fxn.op == "call_method" and target == "flatten":
            start = _arg(fxn, 1, "start_dim", 0)
            end = _arg(fxn, 2, "end_dim", -1)
            if start != 1 or end != -1:
                raise _unsupported(fxn, name, path, f"flatten(start_dim={start}, end_dim={end})"
                                   f" (allowed: start_dim=1)")
            add(Node(fxn.name, "flatten", [src(fxn.args[0], fxn, path)], path), fxn)
        elif fxn.op == "call_function" and target is F.max_pool2d:
            k = _arg(fxn, 1, "kernel_size")
            s = _arg(fxn, 2, "stride") or k
            p = _arg(fxn, 3, "padding", 0)
            if _arg(fxn, 4, "dilation", 1) not in (1, (1, 1)) or _arg(fxn, 5, "ceil_mode", False):
                raise _unsupported(fxn, name, path, "dilation or ceil_mode")
            add(_pool(fxn, "maxpool2d", path, k, s, p, [src(fxn.args[0], fxn, path)]), fxn)
        elif fxn.op == "call_function" and target is F.avg_pool2d:
            k = _arg(fxn, 1, "kernel_size")
            s = _arg(fxn, 2, "stride") or k
            if _arg(fxn, 3, "padding", 0) not in (0, (0, 0)) or _arg(fxn, 4, "ceil_mode", False):
                raise _unsupported(fxn, name, path, "padding or ceil_mode")
            add(_pool(fxn, "avgpool2d", path, k, s, 0, [src(fxn.args[0], fxn, path)]), fxn)
        elif fxn.op == "call_function" and target is F.adaptive_avg_pool2d:
            ins = [src(fxn.args[0], fxn, path)]
            add(_adaptive(fxn, path, _arg(fxn, 1, "output_size"), by_name[ins[0]].shape, ins),
                fxn)
        else:
            raise _unsupported(fxn, f"{'method' if fxn.op == 'call_method' else 'function'} "
                               f"'{name}'", path)
    kept, rename = _fuse_relu(nodes)
    return Graph(kept, rename.get(output, output))


def _pool(fxn, op, path, k, s, p, ins=None) -> Node:
    ins = ins if ins is not None else [a.name for a in fxn.args[:1]]
    k = _pair(k)
    s = _pair(s if s is not None else k)
    return Node(fxn.name, op, ins, path, attrs=dict(kernel=k, stride=s, padding=_pair(p)))


def _adaptive(fxn, path, out_size, in_shape, ins=None) -> Node:
    ins = ins if ins is not None else [a.name for a in fxn.args[:1]]
    oh, ow = _pair(out_size) if out_size is not None else (None, None)
    h, w = in_shape[-2], in_shape[-1]
    oh, ow = oh or h, ow or w
    if h % oh or w % ow:
        raise _unsupported(fxn, "adaptive_avg_pool2d", path, f"output {oh}x{ow} does not divide "
                           f"the input {h}x{w}")
    k = (h // oh, w // ow)
    return Node(fxn.name, "avgpool2d", ins, path, attrs=dict(kernel=k, stride=k, padding=(0, 0)))


def _fuse_relu(nodes: list[Node]):
    """Fuse a ReLU into its conv2d/linear/add producer when it is the producer's only user;
    returns the kept nodes and the renames of the fused ReLUs."""
    by_name = {n.name: n for n in nodes}
    users: dict[str, list[str]] = {n.name: [] for n in nodes}
    for n in nodes:
        for i in n.inputs:
            users[i].append(n.name)
    rename: dict[str, str] = {}
    keep = []
    for n in nodes:
        n.inputs = [rename.get(i, i) for i in n.inputs]
        if n.op == "relu":
            p = by_name[n.inputs[0]]
            if p.op in ("conv2d", "linear", "add") and len(users[p.name]) == 1:
                p.relu = True
                p.shape = n.shape or p.shape
                rename[n.name] = p.name
                continue
        keep.append(n)
    return keep, rename
