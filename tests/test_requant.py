"""Requantization: exactness against arbitrary-precision integers, rounding, parameters."""

from __future__ import annotations

import doctest
import importlib
import itertools
import math
import random
from fractions import Fraction

import pytest
import torch
from mixpe.sw.requant import Requant, quantize_multiplier, requantize


def _ref(acc, bias, mult, shift, zp, relu, lo, hi) -> int:
    """The contract's formula on Python ints (unbounded): floor division is the arithmetic
    shift."""
    x = (acc + bias) * mult
    if shift:
        x = (x + (1 << (shift - 1))) >> shift
    if relu:
        x = max(x, 0)
    return min(max(x + zp, lo), hi)


def _check(acc, bias, mult, shift, zp=0, relu=False, lo=-(1 << 15), hi=(1 << 15) - 1):
    acc_t = torch.tensor(acc, dtype=torch.int64)
    got = requantize(acc_t, torch.tensor(bias), torch.tensor(mult), torch.tensor(shift), zp,
                     relu, lo, hi).tolist()
    want = [_ref(a, b, m, s, zp, relu, lo, hi) for a, b, m, s in zip(acc, bias, mult, shift)]
    assert got == want


def test_ties_round_half_up_exhaustive():
    # every value x in [-64, 64] and shift in [0, 5] with mult 1: ties go towards +inf
    xs = list(range(-64, 65))
    for s in range(6):
        got = requantize(torch.tensor(xs), 0, 1, s, lo=-1000, hi=1000).tolist()
        want = [math.floor(Fraction(x, 1 << s) + Fraction(1, 2)) for x in xs]
        assert got == want, s
    assert requantize(torch.tensor([-5, -3, 3, 5]), 0, 1, 1, lo=-9, hi=9).tolist() == \
        [-2, -1, 2, 3]


def test_small_exhaustive_grid():
    accs = list(range(-20, 21))
    combos = list(itertools.product(accs, [-3, 0, 7], [-5, -1, 1, 3, 1 << 30], [0, 1, 2, 3, 31]))
    acc, bias, mult, shift = (list(c) for c in zip(*combos))
    for relu, zp, lo, hi in [(False, 0, -128, 127), (True, 5, -128, 127), (False, -3, 0, 255),
                             (True, 0, -(1 << 15), (1 << 15) - 1)]:
        _check(acc, bias, mult, shift, zp, relu, lo, hi)


@pytest.mark.parametrize("seed", range(4))
def test_random_wide_values_are_exact(seed):
    # products far beyond int64 (48-bit acc × 32-bit mult): the datapath must stay exact
    rng = random.Random(seed)
    n = 3000
    acc = [rng.randint(-(1 << 47), (1 << 47) - 1) >> rng.randint(0, 47) for _ in range(n)]
    bias = [rng.randint(-(1 << 47), (1 << 47) - 1) >> rng.randint(0, 47) for _ in range(n)]
    mult = [rng.choice([-(1 << 31), (1 << 31) - 1, rng.randint(-(1 << 31), (1 << 31) - 1)])
            for _ in range(n)]
    shift = [rng.randint(0, 62) for _ in range(n)]
    _check(acc, bias, mult, shift, zp=rng.randint(-100, 100), relu=bool(seed % 2),
           lo=-(1 << 15), hi=(1 << 15) - 1)
    # values that land near the clamp window after a large shift
    shift2 = [rng.randint(40, 62) for _ in range(n)]
    _check(acc, bias, mult, shift2, zp=3, relu=False, lo=-200, hi=200)


def test_broadcast_per_channel():
    acc = torch.tensor([[10, 10, 10], [-10, -10, -10]])
    got = requantize(acc, torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]),
                     torch.tensor([0, 1, 2]), lo=-100, hi=100)
    assert got.tolist() == [[10, 11, 9], [-10, -9, -6]]


@pytest.mark.parametrize("kwargs, msg", [
    (dict(shift=63), "shift must lie in"),
    (dict(mult=1 << 31), "mult must lie in"),
    (dict(acc=1 << 50), "acc must lie in"),
    (dict(zp=1 << 15), "zp must be an integer"),
    (dict(lo=5, hi=4), "lo must be <= hi"),
    (dict(relu=2), "relu must be a bool"),
])
def test_requantize_errors(kwargs, msg):
    args = dict(acc=torch.tensor([1]), bias=0, mult=1, shift=0, zp=0, relu=False, lo=-8, hi=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=msg):
        requantize(**args)


def test_quantize_multiplier_precision():
    rng = random.Random(7)
    for _ in range(2000):
        s = math.ldexp(rng.uniform(0.5, 1.0), rng.randint(-30, 30)) * rng.choice([1, -1])
        m, sh = quantize_multiplier(s)
        assert (1 << 30) <= abs(m) < (1 << 31) and 0 <= sh <= 62
        # half-up rounding of the 31-bit mantissa: relative error below 2^-31
        assert abs(Fraction(m, 1 << sh) - Fraction(s)) <= Fraction(abs(s)) / (1 << 30)
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(1.0) == (1 << 30, 30)
    assert quantize_multiplier(1 - 2 ** -40) == (1 << 30, 30)  # rounds up to the next octave
    m, sh = quantize_multiplier(2.0 ** -40)  # below 2^-31: shift capped at 62
    assert sh == 62 and m == 1 << 22
    assert quantize_multiplier(2.0 ** -70) == (0, 0)
    with pytest.raises(ValueError, match="below 2\\^31"):
        quantize_multiplier(2.0 ** 31)
    with pytest.raises(ValueError, match="finite"):
        quantize_multiplier(float("nan"))
    with pytest.raises(ValueError, match="real number"):
        quantize_multiplier("0.5")
    m, s = quantize_multiplier([0.5, 0.25])
    assert m.tolist() == [1 << 30, 1 << 30] and s.tolist() == [31, 32]


def test_quantize_then_requantize_approximates_scale():
    # the model compiler's use: acc · scale ≈ requantize(acc, 0, *quantize_multiplier(scale))
    rng = random.Random(3)
    for _ in range(200):
        scale = rng.uniform(1e-4, 0.5)
        m, s = quantize_multiplier(scale)
        acc = torch.randint(-100000, 100000, (50,))
        got = requantize(acc, 0, m, s, lo=-(1 << 15), hi=(1 << 15) - 1)
        want = torch.floor(acc.double() * scale + 0.5).clamp(-(1 << 15), (1 << 15) - 1)
        assert (got - want.long()).abs().max() <= 1


def test_requant_object():
    rq = Requant(bias=torch.tensor([1, 2, 3]), mult=torch.tensor([1, 1, 1]), shift=0, zp=1,
                 relu=True, lo=0, hi=10)
    assert rq(torch.tensor([[-5, 4, 20]])).tolist() == [[1, 7, 10]]
    b, m, s = rq.channel_params(3)
    assert b.tolist() == [1, 2, 3] and s.tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="requant.bias: has 3 channels, the layer 4"):
        rq.channel_params(4)
    with pytest.raises(ValueError, match="same number of channels"):
        Requant(bias=torch.tensor([1, 2]), mult=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="shift must lie in"):
        Requant(shift=-1)
    with pytest.raises(ValueError, match="lo must be <= hi"):
        Requant(lo=3, hi=2)
    with pytest.raises(ValueError, match="scalar or a \\[C\\] tensor"):
        Requant(mult=torch.ones(2, 2, dtype=torch.int64))


def test_doctests():
    assert doctest.testmod(importlib.import_module("mixpe.sw.requant")).failed == 0
