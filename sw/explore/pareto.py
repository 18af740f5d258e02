"""Pareto dominance, non-dominated filtering and the "best config" rule of the goals.

All objectives are minimized. Point ``p`` dominates ``q`` when ``p_i <= q_i`` for every
objective and ``p_i < q_i`` for at least one.

>>> pts = [{"a": 1, "b": 3}, {"a": 2, "b": 2}, {"a": 2, "b": 3}, {"a": 3, "b": 1}]
>>> [p["a"] for p in pareto_front(pts, ("a", "b"))]
[1, 2, 3]
>>> dominates({"a": 1, "b": 1}, {"a": 1, "b": 2}, ("a", "b"))
True
"""

from __future__ import annotations

__all__ = ["dominates", "pareto_front", "feasible", "best", "hw_keys"]


def dominates(p: dict, q: dict, keys) -> bool:
    """``p`` is no worse than ``q`` on every key and better on at least one."""
    better = False
    for k in keys:
        if p[k] > q[k]:
            return False
        if p[k] < q[k]:
            better = True
    return better


def pareto_front(points, keys) -> list:
    """Non-dominated points (the first of equal-objective duplicates), in input order."""
    pts = list(points)
    out = []
    seen = set()
    for i, p in enumerate(pts):
        sig = tuple(p[k] for k in keys)
        if sig in seen:
            continue
        if any(dominates(q, p, keys) for j, q in enumerate(pts) if j != i):
            continue
        seen.add(sig)
        out.append(p)
    return out


def feasible(results, budget: float) -> list:
    """Results whose accuracy loss is at most ``budget`` points and that fit the board."""
    return [r for r in results if r["loss"] <= budget + 1e-9 and r.get("fits", True)]


def hw_keys(results) -> tuple:
    """The hardware objectives present in all results: lut4, cycles and energy when known."""
    keys = ["lut4", "cycles"]
    if results and all(r.get("energy") is not None for r in results):
        keys.append("energy")
    return tuple(keys)


def best(results, keys):
    """The lexicographically smallest result on ``keys`` ordered energy, lut4, cycles, loss.

    This is the "best single config" used by the goal check: least energy proxy first (the
    objective approximation and low precision act on), then fewest LUTs, fewest cycles.
    """
    order = [k for k in ("energy", "lut4", "cycles") if k in keys] + ["loss"]
    if not results:
        return None
    return min(results, key=lambda r: tuple(r[k] for k in order))
