"""Every shipped multiplier, exhaustively over all operand pairs, against its naive model."""

from __future__ import annotations

import pytest
import torch
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.catalog import SHIPPED, shipped
from naive_models import naive_model


@pytest.mark.parametrize("spec", SHIPPED)
def test_shipped_table_matches_naive_model(spec):
    m = multiplier(spec)
    naive = naive_model(m)
    a_vals = m.a_format.values().tolist()
    b_vals = m.b_format.values().tolist()
    table = m.table().tolist()
    bad = [(a, b, row[j], naive(a, b))
           for a, row in zip(a_vals, table)
           for j, b in enumerate(b_vals)
           if row[j] != naive(a, b)]
    assert not bad, f"{spec}: {len(bad)} mismatches, first (a, b, vectorized, naive): {bad[:5]}"


@pytest.mark.parametrize("spec", SHIPPED)
def test_shipped_mul_agrees_with_table_and_codes(spec):
    m = multiplier(spec)
    ca = m.a_format.codes()[:, None]
    cb = m.b_format.codes()[None, :]
    assert torch.equal(m.mul_codes(ca, cb), m.table())
    assert m.table().dtype == torch.int64
    lo, hi = m.product_range
    assert -(1 << (m.out_bits - 1)) <= lo and hi < (1 << (m.out_bits - 1))


def test_catalog_is_canonical_small_and_covers_every_family():
    assert len(SHIPPED) <= 30
    assert len(set(SHIPPED)) == len(SHIPPED)
    mults = shipped()
    assert [m.spec for m in mults] == list(SHIPPED)
    for m in mults:
        assert max(m.a_format.bits, m.b_format.bits) <= 9
    families = {type(m).family for m in mults}
    assert families >= {"exact", "axbxp", "roup", "lutna", "table"}
    for fam in families - {"exact", "table"}:
        members = [m for m in mults if type(m).family == fam]
        exact = [m for m in members if bool(torch.equal(
            m.table(), m.a_format.values()[:, None] * m.b_format.values()[None, :]))]
        assert exact, f"{fam}: no exact baseline shipped"
        distinct = {m.table().numpy().tobytes() for m in members if m not in exact}
        assert len(distinct) >= 3, f"{fam}: fewer than three approximation levels"
