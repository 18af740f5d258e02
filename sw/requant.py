"""Requantization: accumulator values to output codes, bit-identical to the core's REQUANT unit.

The output stage of a layer (``docs/core.md``) maps an accumulator value ``acc`` of output
channel ``j`` to an integer output code::

    v = floor(((acc + bias[j]) · mult[j] + 2^(shift[j]-1)) / 2^shift[j])   (no rounding term
                                                                           when shift = 0)
    y = clamp((max(v, 0) if relu else v) + zp, lo, hi)

Every intermediate is exact (the gateware sizes its datapath to hold the full
``(acc_bits + 1) + 32``-bit product, as Amaranth arithmetic does); the right shift is
arithmetic, i.e. the rounding is *half up* (ties go towards +inf: −2.5 → −2, 2.5 → 3).
``bias``, ``mult`` (32-bit signed) and ``shift`` (0 … 62) are per output channel (a ``qsp``
row); ``zp``, ``relu``, ``lo``, ``hi`` come from the CONFIG instruction (16-bit signed).

:func:`quantize_multiplier` turns a real scale into ``(mult, shift)``; the model compiler uses
it and :func:`requantize` both to prepare parameters and to predict the core's outputs.

This module never imports Amaranth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from .numerics import as_int64

__all__ = [
    "requantize",
    "quantize_multiplier",
    "Requant",
    "MULT_RANGE",
    "SHIFT_RANGE",
    "CONFIG_RANGE",
    "VALUE_RANGE",
]

#: Inclusive range of the per-channel multiplier (32-bit signed).
MULT_RANGE = (-(1 << 31), (1 << 31) - 1)
#: Inclusive range of the per-channel right shift.
SHIFT_RANGE = (0, 62)
#: Inclusive range of ``zp``, ``lo``, ``hi`` (16-bit signed CONFIG fields).
CONFIG_RANGE = (-(1 << 15), (1 << 15) - 1)
#: Inclusive range of ``acc`` and ``bias`` (the widest accumulator, 48 bits).
VALUE_RANGE = (-(1 << 47), (1 << 47) - 1)

_SPLIT = 24  # acc + bias = xh·2^24 + xl keeps every partial product within int64


def _check(x, lo, hi, name):
    x = as_int64(x)
    if x.numel():
        xmin, xmax = int(x.min()), int(x.max())
        if xmin < lo or xmax > hi:
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got {xmin if xmin < lo else xmax}")
    return x


def _scalar(v, name, lo, hi) -> int:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {v!r}")
    return v


def requantize(acc, bias, mult, shift, zp: int = 0, relu: bool = False,
               lo: int = -128, hi: int = 127) -> torch.Tensor:
    """Requantize accumulator values to output codes (int64), exactly as the core does.

    Parameters
    ----------
    acc : integer tensor ``[..., C]``
        Accumulator values (within 48-bit two's complement).
    bias, mult, shift : integer tensors broadcastable to ``acc`` (typically ``[C]``)
        Per-output-channel bias (accumulator range), multiplier (32-bit signed) and right
        shift (0 … 62).
    zp : int
        Output zero point, added after the ReLU.
    relu : bool
        Clamp negative values to 0 before adding ``zp``.
    lo, hi : int
        Output clamp (the output code range, ``lo <= hi``).

    Examples
    --------
    >>> requantize(torch.tensor([5, 6, -5, -6, -7]), 0, 1, 2, lo=-100, hi=100).tolist()
    [1, 2, -1, -1, -2]
    >>> requantize(torch.tensor([[100, -100]]), torch.tensor([10, 10]),
    ...            torch.tensor([3, 3]), torch.tensor([1, 1]), zp=5, relu=True).tolist()
    [[127, 5]]
    >>> requantize(torch.tensor([7]), 0, 1, 0, zp=-3, lo=0, hi=255).tolist()  # shift 0
    [4]
    """
    acc = _check(acc, *VALUE_RANGE, "acc")
    bias = _check(bias, *VALUE_RANGE, "bias")
    mult = _check(mult, *MULT_RANGE, "mult")
    shift = _check(shift, *SHIFT_RANGE, "shift")
    zp = _scalar(zp, "zp", *CONFIG_RANGE)
    lo = _scalar(lo, "lo", *CONFIG_RANGE)
    hi = _scalar(hi, "hi", *CONFIG_RANGE)
    if lo > hi:
        raise ValueError(f"lo must be <= hi, got lo={lo}, hi={hi}")
    if relu not in (0, 1, True, False):
        raise ValueError(f"relu must be a bool, not {relu!r}")
    x, mult, shift = torch.broadcast_tensors(acc + bias, mult, shift)
    # exact floor((x·m + r) / 2^s) with x·m up to 81 bits: x = xh·2^24 + xl, 0 <= xl < 2^24
    xh, xl = x >> _SPLIT, x & ((1 << _SPLIT) - 1)
    a = xh * mult  # |a| < 2^24 · 2^31
    b = xl * mult  # |b| < 2^24 · 2^31
    r = torch.where(shift > 0, torch.ones_like(shift) << (shift - 1).clamp(min=0), 0)
    # s >= 24: floor((a·2^24 + b + r) / 2^s) = floor((a + floor((b + r) / 2^24)) / 2^(s-24))
    big = (a + ((b + r) >> _SPLIT)) >> (shift - _SPLIT).clamp(min=0)
    # s < 24: a·2^(24-s) + floor((b + r) / 2^s); |a| >= 2^37 makes |v| >= 2^37 whatever b is,
    # far outside any clamp window, so clamping a there keeps the final y and avoids overflow
    s_small = shift.clamp(max=_SPLIT - 1)
    small = (a.clamp(-(1 << 37), 1 << 37) << (_SPLIT - s_small)) + ((b + r) >> s_small)
    v = torch.where(shift >= _SPLIT, big, small)
    if relu:
        v = v.clamp(min=0)
    return (v.clamp(-(1 << 40), 1 << 40) + zp).clamp(lo, hi)


def quantize_multiplier(real_scale) -> tuple[Any, Any]:
    """Fixed-point ``(mult, shift)`` with ``mult · 2^-shift ≈ real_scale``.

    ``mult`` is a 32-bit signed integer with ``2^30 <= |mult| < 2^31`` (31 significant bits;
    rounding half away from zero of the exact binary scale), ``shift`` in ``[0, 62]``. Scales
    below ``2^-32`` lose precision (shift capped at 62); 0 gives ``(0, 0)``; scales of
    ``2^31`` or more raise ``ValueError``. A float gives Python ints, a tensor/sequence gives
    int64 tensors.

    >>> quantize_multiplier(0.5)
    (1073741824, 31)
    >>> m, s = quantize_multiplier(0.0123); abs(m / 2**s - 0.0123) < 1e-11
    True
    >>> quantize_multiplier(torch.tensor([0.25, -3.0]))
    (tensor([ 1073741824, -1610612736]), tensor([32, 29]))
    """
    if isinstance(real_scale, (torch.Tensor, list, tuple)):
        scales = torch.as_tensor(real_scale, dtype=torch.float64).reshape(-1).tolist()
        pairs = [quantize_multiplier(float(s)) for s in scales]
        shape = torch.as_tensor(real_scale).shape
        return (torch.tensor([p[0] for p in pairs], dtype=torch.int64).reshape(shape),
                torch.tensor([p[1] for p in pairs], dtype=torch.int64).reshape(shape))
    if isinstance(real_scale, bool) or not isinstance(real_scale, (int, float)):
        raise ValueError(f"real_scale must be a real number, not {real_scale!r}")
    s = float(real_scale)
    if not math.isfinite(s):
        raise ValueError(f"real_scale must be finite, not {real_scale!r}")
    if s == 0.0:
        return 0, 0
    f, e = math.frexp(abs(s))  # |s| = f · 2^e, 0.5 <= f < 1
    m = math.floor(f * (1 << 31) + 0.5)  # exact: f has 53 bits
    shift = 31 - e
    if m == 1 << 31:
        m, shift = 1 << 30, shift - 1
    if shift < 0:
        raise ValueError(f"real_scale must be below 2^31 in magnitude, not {real_scale!r}")
    if shift > SHIFT_RANGE[1]:
        m = math.floor(abs(s) * 2.0 ** SHIFT_RANGE[1] + 0.5)
        shift = SHIFT_RANGE[1]
        if m == 0:
            shift = 0
    return (-m if s < 0 else m), shift


@dataclass(frozen=True, eq=False)
class Requant:
    """The requantization parameters of one layer (per output channel + CONFIG fields).

    ``bias``, ``mult``, ``shift`` are ``[C]`` integer tensors (or scalars, broadcast to every
    channel); ``zp``, ``relu``, ``lo``, ``hi`` as in :func:`requantize`. Validated on
    construction (``ValueError`` names the parameter).

    >>> rq = Requant(bias=torch.tensor([0, 4]), mult=1, shift=1, relu=True, lo=0, hi=255)
    >>> rq(torch.tensor([[3, -9]])).tolist()
    [[2, 0]]
    >>> rq.channel_params(2)[0].tolist()
    [0, 4]
    """

    bias: Any = 0
    mult: Any = 1
    shift: Any = 0
    zp: int = 0
    relu: bool = False
    lo: int = -128
    hi: int = 127

    def __post_init__(self):
        for name, rng in (("bias", VALUE_RANGE), ("mult", MULT_RANGE), ("shift", SHIFT_RANGE)):
            v = _check(getattr(self, name), *rng, name)
            if v.dim() > 1:
                raise ValueError(f"{name} must be a scalar or a [C] tensor, got shape "
                                 f"{tuple(v.shape)}")
            object.__setattr__(self, name, v)
        for name in ("zp", "lo", "hi"):
            _scalar(getattr(self, name), name, *CONFIG_RANGE)
        if self.lo > self.hi:
            raise ValueError(f"lo must be <= hi, got lo={self.lo}, hi={self.hi}")
        if self.relu not in (0, 1, True, False):
            raise ValueError(f"relu must be a bool, not {self.relu!r}")
        sizes = {int(getattr(self, n).numel()) for n in ("bias", "mult", "shift")
                 if getattr(self, n).dim() == 1}
        if len(sizes) > 1:
            raise ValueError(f"bias, mult, shift must have the same number of channels, got "
                             f"{sorted(sizes)}")

    def channel_params(self, channels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bias, mult, shift)`` as ``[channels]`` tensors (``ValueError`` on a mismatch)."""
        out = []
        for name in ("bias", "mult", "shift"):
            v = getattr(self, name)
            if v.dim() == 1 and v.numel() != channels:
                raise ValueError(f"requant.{name}: has {v.numel()} channels, the layer "
                                 f"{channels}")
            out.append(v.expand(channels).clone())
        return tuple(out)

    def __call__(self, acc) -> torch.Tensor:
        """:func:`requantize` of ``acc`` ``[..., C]`` with these parameters."""
        return requantize(acc, self.bias, self.mult, self.shift, self.zp, bool(self.relu),
                          self.lo, self.hi)
