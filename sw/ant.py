"""ANT's per-tensor data-type selection: MSE search of the clipping value and of the type.

Bit-exact to the float32 operations of ``ant_quantization/antquant/quant_modules.py``
(clevercool/ANT-Quantization, §5.4–5.6 of the seed spec) as torch executes them on the CPU:

* fake quantization ``_forward``: ``scale = alpha / max(grid)``; ``d = x / scale`` (weights:
  ``x.view(C, -1) / scale`` with ``alpha`` of shape ``[C, 1]``); ``z`` = nearest grid point
  (ties to the larger one); ``t = (z - d) + d`` (the straight-through form, which can differ
  from ``z`` by one float32 ulp); ``out = t * scale``.
* ``search_mse``: ``alpha_i = max|x| * (i * 0.01)`` for ``i in range(lb, ub)`` (``lb = 95``
  when ``bits > 6``); MSE per output channel for weights, per tensor for activations; an
  ``alpha_i`` replaces the best one only when its MSE is strictly smaller, so the smallest
  ratio wins ties; returns ``(sum of best MSEs, alpha, mean(alpha / max|x|))``.
* ``select_type``: candidates in the order int, flint, pot, float (each when the mode names
  it); the smallest summed MSE wins, the earlier candidate on ties; ``bits > 6`` → int.
  Weights are signed and per output channel; activations are signed only when their minimum
  is negative, and per tensor.

A channel whose ``max|x|`` is 0 gives ``0/0`` in ``x / scale``: its MSE is NaN, never
"smaller", so it keeps ANT's initial score ``1e10`` and ``alpha = 0``, as in the repo.

>>> torch.manual_seed(0) is not None
True
>>> w = torch.randn(4, 64)
>>> r = select_type(w, 4, "ant-int-pot-flint", is_weight=True)
>>> r.format.spec, tuple(r.alpha.shape)
('int:signed=1', (4, 1))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .formats import (
    FlintFormat,
    FloatFormat,
    IntFormat,
    NumberFormat,
    PotFormat,
    nearest_grid_index,
)

__all__ = [
    "MODES",
    "SearchResult",
    "AntType",
    "fake_quantize",
    "search_mse",
    "select_type",
    "candidates",
]

#: The type-selection modes of the ANT artifact: Int, IP, FIP, IP-F, FIP-F.
MODES = ("int", "ant-int-pot", "ant-int-pot-float", "ant-int-pot-flint", "ant-int-pot-float-flint")

#: ANT's initial best score.
_NO_SCORE = 1e10


class SearchResult(NamedTuple):
    """Result of :func:`search_mse`."""

    mse: float  #: sum of the best MSE of every channel (the tensor's MSE per tensor)
    alpha: torch.Tensor  #: float32, ``[C, 1]`` per channel or a 0-d tensor
    ratio: float  #: mean of ``alpha / max|x|``


@dataclass(frozen=True, eq=False)
class AntType:
    """Result of :func:`select_type`: the chosen format, its clipping value and its MSE.

    ``scores`` lists ``(format spec, summed MSE)`` of every candidate in search order.
    """

    format: NumberFormat
    alpha: torch.Tensor
    mse: float
    ratio: float
    scores: tuple[tuple[str, float], ...]


def _as_rows(x, per_channel: bool) -> torch.Tensor:
    x = torch.as_tensor(x).to(torch.float32)
    if per_channel:
        if x.dim() == 0:
            raise ValueError("per-channel search needs a tensor with an output-channel dimension")
        return x.reshape(x.shape[0], -1)
    return x


def fake_quantize(x, fmt: NumberFormat, alpha) -> torch.Tensor:
    """ANT's ``_forward``: ``((z - d) + d) * scale`` with ``d = x / scale`` (float32).

    ``alpha`` broadcasts against ``x`` (``[C, 1]`` for a ``[C, K]`` weight).

    >>> fake_quantize(torch.tensor([2.0, 0.05]), FlintFormat(bits=4), 6.4).tolist()
    [2.3999998569488525, 0.09999999403953552]
    """
    x = torch.as_tensor(x).to(torch.float32)
    grid = fmt.normalized_grid()
    scale = fmt.scale(alpha)
    d = x / scale
    z = grid[nearest_grid_index(d, grid)]
    t = (z - d) + d
    return t * scale


def search_mse(x, fmt: NumberFormat, *, per_channel: bool, lb: int = 75, ub: int = 150):
    """Grid search of the clipping value ``alpha`` minimising the quantization MSE.

    ``per_channel``: one ``alpha`` per output channel (``x.shape[0]``, weights), else one per
    tensor (activations). Ratios ``i * 0.01`` for ``i in range(lb, ub)``; ``lb`` becomes 95
    when ``fmt.bits > 6``. Returns :class:`SearchResult` ``(mse, alpha, ratio)``.

    >>> x = torch.linspace(-1, 1, 101)
    >>> r = search_mse(x, IntFormat(bits=4, signed=True), per_channel=False)
    >>> round(r.ratio, 2), r.alpha.shape
    (0.94, torch.Size([]))
    """
    if not isinstance(lb, int) or not isinstance(ub, int) or not 0 < lb < ub:
        raise ValueError(f"lb and ub must be integers with 0 < lb < ub, got lb={lb!r}, ub={ub!r}")
    rows = _as_rows(x, per_channel)
    if fmt.bits > 6:
        lb = 95
    if per_channel:
        x_max = rows.abs().max(1).values.unsqueeze(1)
        best = torch.ones_like(x_max) * _NO_SCORE
        alpha = x_max.clone()
        for i in range(lb, ub):
            new_alpha = x_max * (i * 0.01)
            q = fake_quantize(rows, fmt, new_alpha)
            score = (q - rows).abs().pow(2.0).mean(-1).unsqueeze(1)
            better = score < best
            alpha[better] = new_alpha[better]
            best[better] = score[better]
        total = best.sum()
    else:
        x_max = rows.abs().max()
        best = torch.tensor(_NO_SCORE, dtype=torch.float32)
        alpha = x_max.clone()
        for i in range(lb, ub):
            new_alpha = x_max * (i * 0.01)
            q = fake_quantize(rows, fmt, new_alpha)
            score = (q - rows).abs().pow(2).mean()
            if score < best:
                best, alpha = score, new_alpha
        total = best.sum()
    return SearchResult(total.item(), alpha, (alpha / x_max).mean().item())


def candidates(mode: str, bits: int, signed: bool) -> list[NumberFormat]:
    """Candidate formats of ``mode`` in ANT's search order (int, flint, pot, float).

    >>> [f.spec for f in candidates("ant-int-pot-float-flint", 4, False)]
    ['int', 'flint', 'pot', 'float']
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if bits > 6 or not mode.startswith("ant-"):
        return [IntFormat(bits=bits, signed=signed)]
    out: list[NumberFormat] = []
    for tag, cls in (("-int", IntFormat), ("-flint", FlintFormat), ("-pot", PotFormat),
                     ("-float", FloatFormat)):
        if tag in mode:
            out.append(cls(bits=bits, signed=signed))
    return out


def select_type(x, bits: int, mode: str, *, is_weight: bool, lb: int = 75,
                ub: int = 150) -> AntType:
    """ANT's adaptive type: the candidate of ``mode`` with the smallest searched MSE.

    ``is_weight``: signed, per-output-channel ``alpha`` (``[C, 1]``); otherwise signed only
    when ``x.min() < 0``, one ``alpha``. ``bits > 6`` (or mode ``int``) → int without search
    of the type.

    >>> r = select_type(torch.rand(256), 4, "int", is_weight=False)
    >>> r.format.spec, r.scores[0][0]
    ('int', 'int')
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer in [2, 16], not {bits!r}")
    x = torch.as_tensor(x).to(torch.float32)
    signed = True if is_weight else bool(x.min() < 0)
    scores = []
    best_fmt, best = None, None
    for fmt in candidates(mode, bits, signed):
        # ANT re-runs the search for the winner; it is deterministic, so keep its result
        r = search_mse(x, fmt, per_channel=is_weight, lb=lb, ub=ub)
        scores.append((fmt.spec, r.mse))
        if best is None or r.mse < best.mse:  # earlier candidate wins ties
            best_fmt, best = fmt, r
    return AntType(best_fmt, best.alpha, best.mse, best.ratio, tuple(scores))
