"""Bit-exact layer emulation (``mixpe.sw.emulate``) against the naive references.

Every fast path (packed int8 GEMMs, float/int64 GEMMs, one-hot, gather, product by product)
must equal :func:`matmul_naive` / :func:`conv2d_naive`, which multiply with ``mult.mul`` and
accumulate product by product in k order with the overflow rule.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from mixpe.sw import emulate
from mixpe.sw.emulate import (
    METHODS,
    Decomposition,
    Term,
    Transform,
    _gemm,
    conv2d,
    conv2d_naive,
    linear,
    matmul,
    matmul_naive,
)
from mixpe.sw.emulate._engine import PolicyError, build_plan
from mixpe.sw.emulate._overflow import _saturating_loop, saturating_sum
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.base import Multiplier, OperandFormat
from mixpe.sw.mult.decoded import decoded
from mixpe.sw.mult.table import TableMultiplier
from mixpe.sw.spec import register

try:
    from mixpe.sw.mult.catalog import SHIPPED
except ImportError:  # pragma: no cover - catalog not there yet
    SHIPPED = ("exact", "axbxp:l=2", "roup:p=1,r=4", "lutna:drop=0.0")

DECODED = (
    "exact:n=4,nb=8,sa=0 a=flint b=int:bits=8,signed=1",
    "exact:n=4 a=flint:signed=1 b=flint:signed=1",
    "exact:n=2,nb=8 a=pot:signed=1 b=int:bits=8,signed=1",
    "roup:n=4,p=1 a=float:bits=5,signed=1 b=int:bits=4,signed=1",
)
#: one small config per family for the slower sweeps
PER_FAMILY = ("exact:sa=0,sb=0", "axbxp:l=2,round=1", "roup:p=1,r=4,round=pp_row",
              "lutna:trunc=3", "table:path=mul8u_trunc7.npy", DECODED[0])


def build(spec: str) -> Multiplier:
    return decoded(spec) if " a=" in spec else multiplier(spec)


def draw(mult: Multiplier, side: str, shape, gen, include_extremes: bool = True):
    p = emulate.plan(mult)
    space = p.a_space if side == "a" else p.b_space
    if space.has_lut:
        v = space.valid_values()
        x = v[torch.randint(0, v.numel(), shape, generator=gen)]
    else:
        x = torch.randint(space.lo, space.hi + 1, shape, generator=gen, dtype=torch.int64)
    if include_extremes and x.numel() >= 2:
        x.view(-1)[0], x.view(-1)[-1] = space.lo, space.hi
    return x


def assert_same(got, want):
    if isinstance(want, tuple):
        assert torch.equal(got[0], want[0]), (got[0], want[0])
        assert torch.equal(got[1], want[1]), (got[1], want[1])
    else:
        assert torch.equal(got, want), (got, want)


def small_acc(mult) -> int:
    """An accumulator narrow enough to overflow with a few products."""
    lo, hi = mult.product_range
    return max(2, max(abs(lo), abs(hi)).bit_length() + 1)


# -- matmul against the naive reference -----------------------------------------------------


@pytest.mark.parametrize("spec", SHIPPED + DECODED)
def test_matmul_matches_naive(spec):
    mult = build(spec)
    gen = torch.Generator().manual_seed(hash(spec) % 2**31)
    a = draw(mult, "a", (5, 11), gen)
    b = draw(mult, "b", (11, 3), gen)
    assert_same(matmul(a, b, mult), matmul_naive(a, b, mult))
    acc = max(2, small_acc(mult) - 4)
    for overflow in ("wrap", "saturate"):
        got = matmul(a, b, mult, acc_bits=acc, overflow=overflow, return_overflow=True)
        want = matmul_naive(a, b, mult, acc_bits=acc, overflow=overflow, return_overflow=True)
        assert_same(got, want)
    assert bool(got[1].any()), "the narrow accumulator should overflow somewhere"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("spec", PER_FAMILY)
def test_every_method(spec, method):
    mult = build(spec)
    gen = torch.Generator().manual_seed(7)
    a = draw(mult, "a", (6, 9), gen)
    b = draw(mult, "b", (9, 4), gen)
    acc = small_acc(mult) + 2
    for overflow in ("wrap", "saturate"):
        got = matmul(a, b, mult, acc_bits=acc, overflow=overflow, return_overflow=True,
                     method=method)
        want = matmul_naive(a, b, mult, acc_bits=acc, overflow=overflow, return_overflow=True)
        assert_same(got, want)


@pytest.mark.parametrize("spec", PER_FAMILY)
def test_float_and_int64_gemms(spec, monkeypatch):
    """Without ``_int_mm`` every term runs on a BLAS-exact float or int64 GEMM."""
    monkeypatch.setattr(_gemm, "int8_available", lambda device: False)
    monkeypatch.setattr(emulate, "_PLANS", {})
    mult = build(spec)
    gen = torch.Generator().manual_seed(3)
    a = draw(mult, "a", (4, 70), gen)
    b = draw(mult, "b", (70, 5), gen)
    assert_same(matmul(a, b, mult, method="terms"), matmul_naive(a, b, mult))
    assert_same(matmul(a, b, mult, method="onehot"), matmul_naive(a, b, mult))


def test_batched_and_bias():
    mult = multiplier("roup:p=1,r=4")
    gen = torch.Generator().manual_seed(11)
    a = draw(mult, "a", (2, 3, 4, 6), gen)
    b = draw(mult, "b", (3, 6, 5), gen)
    bias = torch.randint(-300, 300, (5,), generator=gen)
    for overflow in ("wrap", "saturate"):
        got = matmul(a, b, mult, bias=bias, acc_bits=14, overflow=overflow,
                     return_overflow=True)
        want = matmul_naive(a, b, mult, bias=bias, acc_bits=14, overflow=overflow,
                            return_overflow=True)
        assert_same(got, want)
    # 2-D weights: the batch is folded into M
    b2 = draw(mult, "b", (6, 5), gen)
    assert_same(matmul(a, b2, mult, bias=bias), matmul_naive(a, b2, mult, bias=bias))


def test_linear_matches_naive():
    mult = multiplier("lutna:drop=0.0")
    gen = torch.Generator().manual_seed(5)
    x = draw(mult, "a", (2, 3, 13), gen)
    w = draw(mult, "b", (7, 13), gen)
    bias = torch.randint(-1000, 1000, (7,), generator=gen)
    for overflow in ("wrap", "saturate"):
        got = linear(x, w, mult, bias, acc_bits=18, overflow=overflow, return_overflow=True)
        want = matmul_naive(x, w.t(), mult, bias=bias, acc_bits=18, overflow=overflow,
                            return_overflow=True)
        assert_same(got, want)


@pytest.mark.parametrize("spec", ["exact:n=32", "roup:n=24,p=2,r=5,round=pp_row",
                                  "axbxp:n=24,k=4,l=3", "roup:n=16,p=1,r=3,round=pp_row"])
def test_wide_operands(spec):
    """Spaces without a table (evaluated transforms) and without a full product table."""
    mult = multiplier(spec)
    gen = torch.Generator().manual_seed(9)
    a = draw(mult, "a", (3, 8), gen)
    b = draw(mult, "b", (8, 4), gen)
    for acc in (64, 40):
        for overflow in ("wrap", "saturate"):
            got = matmul(a, b, mult, acc_bits=acc, overflow=overflow, return_overflow=True)
            want = matmul_naive(a, b, mult, acc_bits=acc, overflow=overflow,
                                return_overflow=True)
            assert_same(got, want)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 5, 1), (2, 1, 3), (1, 3, 4), (3, 2, 1)])
def test_size_one_dimensions(shape):
    """Operands with size-1 dimensions (odd strides) and offset corrections (unsigned)."""
    m, k, n = shape
    gen = torch.Generator().manual_seed(m * 100 + k * 10 + n)
    for spec in ("exact:sa=0,sb=0", "lutna:drop=0.0", "table:path=mul8u_trunc7.npy"):
        mult = build(spec)
        a, b = draw(mult, "a", (m, k), gen), draw(mult, "b", (k, n), gen)
        for acc in (2, 32):
            got = matmul(a, b, mult, acc_bits=acc, return_overflow=True)
            assert_same(got, matmul_naive(a, b, mult, acc_bits=acc, return_overflow=True))
        assert_same(linear(a, b.t(), mult), matmul_naive(a, b, mult))


def test_int64_limits_saturate():
    """acc_bits=64 with sums beyond int64: saturation and flags stay exact."""
    mult = multiplier("exact:n=32")
    big = -(1 << 31)
    a = torch.full((2, 5), big)
    b = torch.full((5, 2), big)
    b[3, 1] = (1 << 31) - 1
    for overflow in ("wrap", "saturate"):
        got = matmul(a, b, mult, acc_bits=64, overflow=overflow, return_overflow=True)
        want = matmul_naive(a, b, mult, acc_bits=64, overflow=overflow, return_overflow=True)
        assert_same(got, want)
    assert bool(got[1].all())


# -- conv2d -------------------------------------------------------------------------------------

CONV_CASES = [
    # (N, C, H, W, OC, KH, KW, stride, padding, groups)
    (1, 3, 5, 5, 4, 1, 1, 1, 0, 1),
    (2, 4, 7, 6, 6, 3, 3, 1, 1, 2),
    (1, 3, 9, 8, 2, 3, 3, 2, 1, 1),
    (1, 4, 6, 6, 4, 3, 3, (2, 1), (0, 1), 4),
    (1, 2, 5, 7, 2, 2, 3, 1, 2, 1),
]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("spec", PER_FAMILY)
def test_conv2d_matches_naive(spec, case):
    mult = build(spec)
    n, c, h, w, oc, kh, kw, stride, padding, groups = case
    gen = torch.Generator().manual_seed(sum(map(hash, map(str, case))) % 2**31)
    x = draw(mult, "a", (n, c, h, w), gen)
    wt = draw(mult, "b", (oc, c // groups, kh, kw), gen)
    kw_args = dict(stride=stride, padding=padding, groups=groups)
    assert_same(conv2d(x, wt, mult, **kw_args), conv2d_naive(x, wt, mult, **kw_args))
    bias = torch.randint(-50, 50, (oc,), generator=gen)
    acc = small_acc(mult) + 1
    for overflow in ("wrap", "saturate"):
        got = conv2d(x, wt, mult, bias, acc_bits=acc, overflow=overflow, return_overflow=True,
                     **kw_args)
        want = conv2d_naive(x, wt, mult, bias, acc_bits=acc, overflow=overflow,
                            return_overflow=True, **kw_args)
        assert_same(got, want)


def test_conv2d_exact_matches_torch():
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(-128, 128, (2, 6, 9, 9), generator=gen)
    w = torch.randint(-128, 128, (4, 3, 3, 3), generator=gen)
    got = conv2d(x, w, multiplier("exact"), stride=2, padding=1, groups=2)
    want = torch.nn.functional.conv2d(x.double(), w.double(), stride=2, padding=1, groups=2)
    assert torch.equal(got, want.long())


# -- the overflow machinery -------------------------------------------------------------------


def test_saturating_scan_matches_loop():
    gen = torch.Generator().manual_seed(4)
    for k in (1, 2, 3, 7, 64, 65):
        p = torch.randint(-300, 300, (50, k), generator=gen)
        start = torch.randint(-100, 100, (50,), generator=gen)
        assert torch.equal(saturating_sum(p, start, 10), _saturating_loop(p, start, -512, 511))


def test_flags_only_where_needed():
    """Saturate equals wrap and raises no flag when no prefix leaves the range."""
    mult = multiplier("exact")
    a = torch.full((3, 4), 100)
    b = torch.full((4, 3), 100)
    b[1] = -100  # prefix 10000, 0, 10000, 20000: overflows 15 bits only at the end
    got = matmul(a, b, mult, acc_bits=16, overflow="saturate", return_overflow=True)
    assert not bool(got[1].any()) and torch.equal(got[0], torch.full((3, 3), 20000))
    got = matmul(a, b, mult, acc_bits=15, overflow="saturate", return_overflow=True)
    assert bool(got[1].all()) and torch.equal(got[0], torch.full((3, 3), 16383))


# -- validation -------------------------------------------------------------------------------

BAD_MATMUL = [
    (dict(acc_bits=1), "acc_bits"),
    (dict(acc_bits=65), "acc_bits"),
    (dict(acc_bits=16.0), "acc_bits"),
    (dict(acc_bits=True), "acc_bits"),
    (dict(overflow="clip"), "overflow"),
    (dict(method="fast"), "method"),
    (dict(bias=torch.tensor([1 << 40, 0])), "bias"),
    (dict(bias=torch.zeros(3, dtype=torch.long)), "bias"),
]


@pytest.mark.parametrize("kwargs,name", BAD_MATMUL)
def test_bad_parameters(kwargs, name):
    a = torch.zeros(3, 4, dtype=torch.long)
    b = torch.zeros(4, 2, dtype=torch.long)
    with pytest.raises(ValueError, match=name):
        matmul(a, b, multiplier("exact"), **kwargs)


def test_bad_operands():
    m = multiplier("exact")
    with pytest.raises(ValueError, match=r"^a: .*\[-128, 127\]"):
        matmul(torch.full((2, 2), 128), torch.zeros(2, 2, dtype=torch.long), m)
    with pytest.raises(ValueError, match=r"^b: "):
        matmul(torch.zeros(2, 2, dtype=torch.long), torch.full((2, 2), -129), m)
    with pytest.raises(ValueError, match="^b: shape"):
        matmul(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), m)
    with pytest.raises(ValueError, match="^a must have"):
        matmul(torch.zeros(3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), m)
    with pytest.raises(ValueError, match="grid"):
        dm = build(DECODED[0])
        matmul(torch.full((1, 1), 9), torch.ones(1, 1, dtype=torch.long), dm)  # 9: not flint
    with pytest.raises(TypeError, match="integer"):
        matmul(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long), m)
    with pytest.raises(TypeError, match="Multiplier"):
        matmul(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long), "exact")
    with pytest.raises(ValueError, match="^w: "):
        linear(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), m)


BAD_CONV = [
    (dict(groups=3), "groups"),
    (dict(groups=0), "groups"),
    (dict(stride=0), "stride"),
    (dict(stride=(1, 2, 3)), "stride"),
    (dict(padding=-1), "padding"),
    (dict(acc_bits=70), "acc_bits"),
    (dict(overflow="none"), "overflow"),
]


@pytest.mark.parametrize("kwargs,name", BAD_CONV)
def test_bad_conv_parameters(kwargs, name):
    x = torch.zeros(1, 4, 5, 5, dtype=torch.long)
    w = torch.zeros(2, 2, 3, 3, dtype=torch.long)
    kw = dict(groups=2) | kwargs
    with pytest.raises(ValueError, match=name):
        conv2d(x, w, multiplier("exact"), **kw)


def test_bad_conv_shapes():
    m = multiplier("exact")
    with pytest.raises(ValueError, match="^w: "):
        conv2d(torch.zeros(1, 4, 5, 5, dtype=torch.long), torch.zeros(2, 3, 3, 3,
                                                                      dtype=torch.long), m)
    with pytest.raises(ValueError, match="^x must be"):
        conv2d(torch.zeros(4, 5, 5, dtype=torch.long), torch.zeros(2, 4, 3, 3,
                                                                   dtype=torch.long), m)
    with pytest.raises(ValueError, match="^w: kernel"):
        conv2d(torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.zeros(1, 1, 3, 3,
                                                                      dtype=torch.long), m)


# -- policies ---------------------------------------------------------------------------------


def test_generic_table_paths():
    """A table multiplier without structure: one-hot / gather still exact."""
    gen = torch.Generator().manual_seed(0)
    t = torch.randint(-500, 500, (16, 32), generator=gen)
    mult = TableMultiplier.from_array(t.numpy(), sa=1, sb=0)
    a = draw(mult, "a", (6, 21), gen)
    b = draw(mult, "b", (21, 5), gen)
    want = matmul_naive(a, b, mult)
    for method in (None, "onehot", "gather", "mul"):
        assert_same(matmul(a, b, mult, method=method), want)


@register("emutest", kind="mult")
@dataclass(frozen=True)
class _Doubler(Multiplier):
    """Test family: ``2·a·b`` on 4-bit signed operands."""

    n: int = 4

    @property
    def a_format(self):
        return OperandFormat(self.n)

    @property
    def b_format(self):
        return OperandFormat(self.n)

    def _mul(self, a, b):
        return 2 * a * b


def test_registered_policy_is_used_and_checked():
    mult = _Doubler()
    good = [Decomposition((Term(Transform(lambda v: 2 * v), Transform()),), name="good")]
    bad = [Decomposition((Term(Transform(lambda v: 3 * v), Transform()),), name="bad")]
    plan = build_plan(mult, good)
    assert plan.terms is not None and "good" in plan.description
    with pytest.raises(PolicyError, match="bad"):
        build_plan(mult, bad)
    # without any policy the generic table factorization finds the rank-1 structure
    gen = torch.Generator().manual_seed(1)
    a, b = draw(mult, "a", (3, 5), gen), draw(mult, "b", (5, 2), gen)
    assert_same(matmul(a, b, mult), matmul_naive(a, b, mult))


def test_plans_cover_every_shipped_config_with_gemms():
    """Every shipped multiplier gets a GEMM decomposition (no gather fallback)."""
    for spec in SHIPPED:
        p = emulate.plan(build(spec))
        assert p.terms is not None, spec
        assert p.choose(64, 64, 64, torch.device("cpu")) == "terms", (spec, p.description)


@pytest.mark.parametrize("name", ["mixpe.sw.emulate", "mixpe.sw.emulate._engine",
                                  "mixpe.sw.emulate._factor", "mixpe.sw.emulate._overflow",
                                  "mixpe.sw.emulate.reference"])
def test_doctests(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0


# -- properties -------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(spec=st.sampled_from(PER_FAMILY + ("exact", "axbxp:k=4,l=1", "roup:p=2,r=6")),
       m=st.integers(0, 6), k=st.integers(0, 9), n=st.integers(0, 5),
       acc_bits=st.integers(2, 26), overflow=st.sampled_from(["wrap", "saturate"]),
       seed=st.integers(0, 2**16), with_bias=st.booleans())
def test_matmul_property(spec, m, k, n, acc_bits, overflow, seed, with_bias):
    mult = build(spec)
    gen = torch.Generator().manual_seed(seed)
    a = draw(mult, "a", (m, k), gen)
    b = draw(mult, "b", (k, n), gen)
    lim = 1 << (acc_bits - 1)
    bias = torch.randint(-lim, lim, (n,), generator=gen) if with_bias else None
    got = matmul(a, b, mult, bias=bias, acc_bits=acc_bits, overflow=overflow,
                 return_overflow=True)
    want = matmul_naive(a, b, mult, bias=bias, acc_bits=acc_bits, overflow=overflow,
                        return_overflow=True)
    assert_same(got, want)
