"""Composable (Bit-Fusion-style) Ax-BxP: every precision mode, lanes and dot products."""

from __future__ import annotations

import itertools

import pytest
import torch
from mixpe.sw.mult import multiplier
from naive_models import naive_fused_lane

CONFIGS = ["axbxp:mode=composable", "axbxp:mode=composable,sa=0,sb=0",
           "axbxp:mode=composable,sa=0", "axbxp:n=8,k=1,mode=composable",
           "axbxp:n=16,k=4,mode=composable,out=lanes"]


@pytest.mark.parametrize("spec", CONFIGS)
def test_precisions_and_lane_counts(spec):
    m = multiplier(spec)
    qs = m.precisions
    assert qs[0] == m.k and qs[-1] == m.n
    assert all(q2 == 2 * q1 for q1, q2 in itertools.pairwise(qs))
    for q in qs:
        assert m.lanes(q) == (m.n // q) ** 2


@pytest.mark.parametrize("spec", CONFIGS)
def test_every_mode_lanes_exhaustive_vs_composed_blocks(spec):
    m = multiplier(spec)
    for q in m.precisions:
        if q > 4:
            continue  # 8- and 16-bit lanes: the random test and the full-precision test below
        fa, fb = m.lane_formats(q)
        a = fa.values()[:, None].expand(-1, 1 << q).reshape(-1)
        b = fb.values()[None, :].expand(1 << q, -1).reshape(-1)
        lanes = m.lanes(q)
        # every operand pair once per lane, each lane with its own (rotated) operands
        a_l = torch.stack([a.roll(s) for s in range(lanes)], dim=-1)
        b_l = torch.stack([b.roll(3 * s) for s in range(lanes)], dim=-1)
        got = m.mul_lanes(a_l, b_l, q)
        assert got.shape == a_l.shape
        want = [[naive_fused_lane(x, y, q=q, k=m.k, sa=m.sa, sb=m.sb) for x, y in zip(xs, ys)]
                for xs, ys in zip(a_l.tolist(), b_l.tolist())]
        assert got.tolist() == want
        assert torch.equal(got, a_l * b_l)  # composition is exact
        assert torch.equal(m.mul_dot(a_l, b_l, q), got.sum(-1))


def test_random_wide_lanes_and_dot():
    m = multiplier("axbxp:n=16,k=4,mode=composable,out=lanes")
    g = torch.Generator().manual_seed(1)
    for q in m.precisions:
        fa, fb = m.lane_formats(q)
        a = torch.randint(fa.range[0], fa.range[1] + 1, (50, m.lanes(q)), generator=g)
        b = torch.randint(fb.range[0], fb.range[1] + 1, (50, m.lanes(q)), generator=g)
        got = m.mul_lanes(a, b, q)
        want = [[naive_fused_lane(x, y, q=q, k=m.k, sa=m.sa, sb=m.sb) for x, y in zip(xs, ys)]
                for xs, ys in zip(a.tolist(), b.tolist())]
        assert got.tolist() == want
        assert m.mul_dot(a, b, q).tolist() == [sum(r) for r in want]


@pytest.mark.parametrize("spec", [s for s in CONFIGS if "n=16" not in s])
def test_full_precision_mode_is_the_table(spec):
    m = multiplier(spec)
    a = m.a_format.values()[:, None]
    b = m.b_format.values()[None, :]
    assert torch.equal(m.table(), a * b)
    assert torch.equal(m.mul_lanes(a[..., None], b[..., None], 8)[..., 0], m.table())


def test_dot_broadcasts_leading_dimensions():
    m = multiplier("axbxp:mode=composable")
    a = torch.tensor([[1, 2, 3, 4]] * 3)
    b = torch.tensor([-1, 1, -1, 1])
    assert m.mul_dot(a, b, 4).tolist() == [2, 2, 2]
    assert m.mul_dot(torch.full((16,), -2), torch.ones(16, dtype=torch.int64), 2).item() == -32


def test_lane_errors():
    m = multiplier("axbxp:mode=composable")
    with pytest.raises(ValueError, match=r"q=3 .*q in \{2, 4, 8\}"):
        m.mul_lanes([1], [1], 3)
    with pytest.raises(ValueError, match="last dimension of 4 lanes"):
        m.mul_lanes([1, 2], [1, 2], 4)
    with pytest.raises(ValueError, match=r"lane operand a \(q=4\) must lie in \[-8, 7\]"):
        m.mul_lanes([8, 0, 0, 0], [1, 1, 1, 1], 4)
    assert multiplier("axbxp:l=2").precisions == (8,)
