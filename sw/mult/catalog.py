"""The shipped multiplier configurations (all ≤ 8-bit operands, ≤ 9-bit for the LUT-NA weight).

Each family ships its exact baseline plus approximation levels. The hardware twins prove every
entry exhaustively against its table, the tests prove every table against a naive model from the
papers' definitions, and ``mixpe mult --all`` prints their error metrics. Entries are canonical
spec strings (``to_spec(multiplier(s)) == s``).

>>> from mixpe.sw.mult import multiplier
>>> len(SHIPPED) <= 30 and all(multiplier(s).spec == s for s in SHIPPED)
True
"""

from __future__ import annotations

from .base import Multiplier, multiplier

__all__ = ["SHIPPED", "shipped"]

#: Shipped configurations, grouped by family (exact baseline first).
SHIPPED: tuple[str, ...] = (
    # exact 8×8, signed and unsigned
    "exact",
    "exact:sa=0,sb=0",
    # Ax-BxP 8-bit, 2-bit blocks: all blocks (exact), 3 and 2 kept blocks, rounding, static
    # truncation, 4-bit blocks keeping one, unsigned, and the composable 8↔4↔2 unit
    "axbxp",
    "axbxp:l=3",
    "axbxp:l=2",
    "axbxp:l=2,round=1",
    "axbxp:l=2,select=static",
    "axbxp:k=4,l=1",
    "axbxp:l=2,sa=0",
    "axbxp:mode=composable",
    # unsigned × unsigned, 2 rounded dynamic blocks: the cheap accurate point (MRED 4.1 %)
    "axbxp:l=2,round=1,sa=0,sb=0",
    # the composable 8↔4↔2 unit with unsigned lanes and the lane products as outputs
    "axbxp:sa=0,sb=0,mode=composable,out=lanes",
    # ROUP(p, r) 8-bit radix-4 Booth: perforation/rounding sweep, R-PP, unsigned wrapper
    "roup",
    "roup:p=1",
    "roup:p=1,r=4",
    "roup:p=2",
    "roup:p=2,r=4",
    "roup:p=2,r=6",
    "roup:p=1,r=4,round=pp_row",
    "roup:p=1,r=4,signed=0",
    # LUT-NA 8-bit activation × 9-bit sign-magnitude weight, 4-bit chunks
    "lutna",
    "lutna:split=act",
    "lutna:drop=0.0",
    "lutna:drop=0.0+0.1",
    "lutna:tau=2",
    "lutna:trunc=3",
    "lutna:split=act,trunc=4",
    # 2-bit chunks (16-entry tables, one LUT4 per entry bit), terms with p + q ≥ 3 (MRED 3.8 %)
    "lutna:c=2,tau=3",
    # product table from a file: 8×8 unsigned truncated array multiplier (sw/data/)
    "table:path=mul8u_trunc7.npy",
)


def shipped() -> list[Multiplier]:
    """The :data:`SHIPPED` multipliers, built."""
    return [multiplier(s) for s in SHIPPED]
