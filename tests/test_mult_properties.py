"""Hypothesis properties: vectorized models vs the naive ones at widths too wide to enumerate."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mixpe.sw.mult import multiplier
from naive_models import naive_model

SETTINGS = settings(max_examples=60, deadline=None)
BATCH = 64  # operand pairs per example


def _check(m, data):
    """``m.mul`` on a batch of random operands (plus the range corners) equals the naive model."""
    (alo, ahi), (blo, bhi) = m.a_format.range, m.b_format.range
    a = data.draw(st.lists(st.integers(alo, ahi), min_size=BATCH, max_size=BATCH)) + [alo, ahi]
    b = data.draw(st.lists(st.integers(blo, bhi), min_size=BATCH, max_size=BATCH)) + [bhi, blo]
    got = m.mul(torch.tensor(a), torch.tensor(b)).tolist()
    naive = naive_model(m)
    want = [naive(x, y) for x, y in zip(a, b)]
    assert got == want, m.spec


@SETTINGS
@given(n=st.integers(1, 32), nb=st.integers(1, 32), sa=st.booleans(), sb=st.booleans(),
       data=st.data())
def test_exact_any_width(n, nb, sa, sb, data):
    if not sa and not sb and n + nb > 63:
        return
    _check(multiplier(f"exact:n={n},nb={nb},sa={int(sa)},sb={int(sb)}"), data)


def test_exact_12x10():
    m = multiplier("exact:n=12,nb=10")
    assert m.a_format.range == (-2048, 2047) and m.b_format.range == (-512, 511)
    assert m.mul(-2048, -512).item() == 1 << 20


@SETTINGS
@given(n=st.sampled_from([8, 12, 16]), p=st.integers(0, 8), r=st.integers(0, 16),
       rnd=st.sampled_from(["operand", "pp_row"]), booth=st.sampled_from(["a", "b"]),
       signed=st.booleans(), data=st.data())
def test_roup_wide(n, p, r, rnd, booth, signed, data):
    p, r = min(p, n // 2), min(r, n)
    _check(multiplier(f"roup:n={n},p={p},r={r},round={rnd},booth={booth},"
                      f"signed={int(signed)}"), data)


@SETTINGS
@given(nk=st.sampled_from([(12, 2), (12, 3), (12, 4), (12, 6), (16, 2), (16, 4), (16, 8),
                           (10, 5)]),
       l=st.integers(0, 8), select=st.sampled_from(["dynamic", "static"]), rnd=st.booleans(),
       sa=st.booleans(), sb=st.booleans(), data=st.data())
def test_axbxp_wide(nk, l, select, rnd, sa, sb, data):
    n, k = nk
    l = min(l, n // k)
    _check(multiplier(f"axbxp:n={n},k={k},l={l},select={select},round={int(rnd)},"
                      f"sa={int(sa)},sb={int(sb)}"), data)


@SETTINGS
@given(nc=st.sampled_from([(12, 4), (12, 6), (12, 3), (16, 4), (8, 2)]),
       nb=st.sampled_from([7, 13, 17]), split=st.sampled_from(["both", "act"]),
       tau=st.integers(0, 3), trunc=st.integers(0, 5), ndrop=st.integers(0, 3), data=st.data())
def test_lutna_wide(nc, nb, split, tau, trunc, ndrop, data):
    n, c = nc
    if split == "both" and (nb - 1) % c:
        nb = 2 * c + 1
    q_chunks = (nb - 1) // c if split == "both" else 1
    terms = data.draw(st.lists(st.tuples(st.integers(0, n // c - 1),
                                         st.integers(0, q_chunks - 1)),
                               max_size=ndrop))
    drop = "+".join(f"{p}.{q}" for p, q in terms)
    tau = min(tau, n // c - 1 + q_chunks - 1)
    m = multiplier(f"lutna:n={n},nb={nb},c={c},split={split},tau={tau},trunc={trunc}"
                   + (f",drop={drop}" if drop else ""))
    _check(m, data)


@SETTINGS
@given(n=st.sampled_from([8, 12, 16]), k=st.sampled_from([2, 4]), l=st.integers(1, 4),
       data=st.data())
def test_axbxp_rounding_never_grows_past_the_field(n, k, l, data):
    # rounding saturates inside the kept field: |x~| < 2^(n) and never below the truncation
    l = min(l, n // k)
    trunc = multiplier(f"axbxp:n={n},k={k},l={l},sa=0,sb=0")
    rnd = multiplier(f"axbxp:n={n},k={k},l={l},round=1,sa=0,sb=0")
    x = torch.tensor(data.draw(st.lists(st.integers(0, (1 << n) - 1), min_size=32,
                                        max_size=32)))
    t, r = trunc.approximate(x), rnd.approximate(x)
    assert bool(((r - t >= 0) & (r < (1 << n))).all())
