"""Error metrics (EvoApproxLib definitions) over all operand pairs."""

from __future__ import annotations

import numpy as np
import pytest
from mixpe.sw.metrics import METRIC_KEYS, error_metrics
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.catalog import SHIPPED
from mixpe.sw.mult.table import TableMultiplier


@pytest.mark.parametrize("spec", ["exact", "exact:sa=0,sb=0", "exact:n=3,nb=5,sa=0",
                                  "axbxp", "axbxp:mode=composable", "roup", "lutna",
                                  "lutna:split=act"])
def test_exact_baselines_give_zeros(spec):
    m = error_metrics(multiplier(spec))
    assert set(m) == set(METRIC_KEYS)
    assert all(v == 0 for v in m.values()), m


def test_hand_computed_two_bit_multiplier():
    # unsigned 2x2: exact except T[1][1] = 0 (error -1) and T[3][3] = 7 (error -2)
    t = np.outer(np.arange(4), np.arange(4))
    t[1, 1], t[3, 3] = 0, 7
    m = error_metrics(TableMultiplier.from_array(t))
    assert m["mae"] == 3 / 16
    assert m["wce"] == 2
    assert m["ep"] == 2 / 16
    assert m["mse"] == (1 + 4) / 16
    assert m["bias"] == -3 / 16
    # 9 pairs with a non-zero exact product; relative errors 1/1 and 2/9
    assert m["mred"] == pytest.approx((1 + 2 / 9) / 9)
    assert m["wcre"] == 1.0
    assert m["mae_pct"] == pytest.approx(100 * (3 / 16) / 16)
    assert m["wce_pct"] == pytest.approx(100 * 2 / 16)


def test_signed_table_decodes_codes():
    # signed 2x2 (values -2..1): only (-2)*(-2) = 4 is wrong, as 3; code of -2 is 2
    v = np.array([0, 1, -2, -1])
    t = np.outer(v, v)
    t[2, 2] = 3
    m = error_metrics(TableMultiplier.from_array(t, sa=True, sb=True))
    assert (m["mae"], m["wce"], m["ep"], m["bias"]) == (1 / 16, 1, 1 / 16, -1 / 16)
    assert m["mred"] == pytest.approx((1 / 4) / 9)  # 9 pairs with a non-zero exact product


def test_known_values_of_roup_p1():
    # perforating the lowest Booth row: error = -a * (low 2 bits of b as a 2-bit signed number)
    m = error_metrics(multiplier("roup:p=1"))
    assert m["wce"] == 256 and m["mae"] == 64.0
    assert m["ep"] == (3 / 4) * (255 / 256)
    assert m["bias"] == -0.25


def test_every_shipped_multiplier_has_finite_metrics():
    for spec in SHIPPED:
        m = error_metrics(multiplier(spec))
        assert m["wce"] >= m["mae"] >= 0 and 0 <= m["ep"] <= 1 and m["mse"] >= m["mae"] ** 2
        assert isinstance(m["wce"], int)
