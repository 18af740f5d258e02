"""Arithmetic error metrics of a multiplier over all operand pairs, as EvoApproxLib defines them.

Every operand code pair ``(i, j)`` of the full table counts once (``N = 2^(na+nb)`` pairs; for a
sign-magnitude operand both codes of zero are included, as the hardware sees them). With the
approximate product ``P~`` (:meth:`Multiplier.table`), the exact product ``P`` of the same operand
values and the error ``e = P~ - P``:

=========  ==========================================================================
key        definition
=========  ==========================================================================
mae        mean absolute error ``Σ|e| / N``
wce        worst-case error ``max|e|`` (an ``int``)
mred       mean relative error distance ``mean_{P≠0} |e| / |P|`` (a fraction; pairs whose
           exact product is 0 are left out, which is what EvoApproxLib's "MRE" does)
wcre       worst-case relative error ``max_{P≠0} |e| / |P|`` (a fraction)
ep         error probability ``#{e ≠ 0} / N`` (a fraction)
mse        mean squared error ``Σe² / N``
bias       mean signed error ``Σe / N`` (negative: the multiplier underestimates)
mae_pct    ``100 · mae / 2^(na+nb)`` (EvoApproxLib's "MAE%": relative to the output range)
wce_pct    ``100 · wce / 2^(na+nb)`` (EvoApproxLib's "WCE%")
=========  ==========================================================================

These reproduce the figures EvoApproxLib prints in its C models (checked on ``mul8u_FTA``:
MAE 581, WCE 2809, MRE 13.96 %, EP 98.74 %, MSE 543210, WCRE 125 %; and on ``mul8s_1KR3``:
MRE 135.77 %). ``mred``, ``wcre`` and ``ep`` are fractions here; multiply by 100 for EvoApproxLib's
percentages. Sums are exact (int64) before the single division.

>>> from mixpe.sw.mult import multiplier
>>> error_metrics(multiplier("exact"))["wce"]
0
>>> m = error_metrics(multiplier("roup:p=1"))
>>> m["wce"], round(m["ep"], 4)
(256, 0.7471)
"""

from __future__ import annotations

from .mult.base import Multiplier

__all__ = ["error_metrics", "METRIC_KEYS"]

#: Keys of :func:`error_metrics`, in display order.
METRIC_KEYS = ("mae", "wce", "mred", "wcre", "ep", "mse", "bias", "mae_pct", "wce_pct")


def error_metrics(mult: Multiplier) -> dict[str, float]:
    """Error metrics of ``mult`` over all ``2^(na+nb)`` operand code pairs (see module doc)."""
    approx = mult.table()
    a = mult.a_format.values()[:, None]
    b = mult.b_format.values()[None, :]
    exact = a * b
    err = approx - exact
    n_pairs = err.numel()
    abs_err = err.abs()
    nonzero = exact != 0
    rel = abs_err[nonzero].double() / exact[nonzero].abs().double()
    out_range = 2 ** (mult.a_format.bits + mult.b_format.bits)
    mae = int(abs_err.sum()) / n_pairs
    wce = int(abs_err.max())
    return {
        "mae": mae,
        "wce": wce,
        "mred": float(rel.mean()) if rel.numel() else 0.0,
        "wcre": float(rel.max()) if rel.numel() else 0.0,
        "ep": int((err != 0).sum()) / n_pairs,
        "mse": int((err * err).sum()) / n_pairs,
        "bias": int(err.sum()) / n_pairs,
        "mae_pct": 100.0 * mae / out_range,
        "wce_pct": 100.0 * wce / out_range,
    }

