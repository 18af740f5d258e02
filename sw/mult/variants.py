"""Run-time selectable multiplier variants: one operand port pair, several multipliers.

``variants:of=exact|roup:p=1;r=4`` names a unit that holds every listed multiplier and a
``sel`` input choosing whose product comes out (variant ``i`` = the ``i``-th spec). It is how a
systolic array gives each column its own approximation at run time (MAx-DNN style per-filter
approximation, ``ArrayConfig.variants``): the hardware twin builds every member and multiplexes
the products.

Spec syntax: the member specs are joined by ``|``; inside a member spec ``;`` stands for the
``,`` that separates its keys (a spec value cannot contain ``,``). Every member must take the
same operand formats (bits and encoding) as the first; a member cannot itself be a
``variants`` unit or a composable (run-time precision) multiplier.

``mul(a, b)`` and ``table()`` are those of variant 0 (the hardware with ``sel = 0``);
:meth:`VariantsMultiplier.mul_sel` applies a ``sel`` per product and :attr:`members` gives the
member multipliers, e.g. for a per-column reference::

    ref[:, c] = emulate.matmul(a, b[:, c:c+1], unit.members[sel[c]])

>>> from mixpe.sw.mult import multiplier
>>> import mixpe.sw.mult.variants  # noqa: F401  (registers the family)
>>> v = multiplier("variants:of=exact|roup:p=1;r=4")
>>> v.spec, len(v.members), v.members[1].spec
('variants:of=exact|roup:p=1;r=4', 2, 'roup:p=1,r=4')
>>> v.mul_sel(100, 77, 0).item(), v.mul_sel(100, 77, 1).item() == v.members[1].mul(100, 77).item()
(7700, True)
>>> variants_spec("exact", ["roup:p=1,r=4"])
'variants:of=exact|roup:p=1;r=4'
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..numerics import as_int64
from ..spec import register
from .base import Multiplier, OperandFormat

__all__ = ["VariantsMultiplier", "variants_spec", "sel_bits", "MAX_VARIANTS"]

#: Most members a unit may hold (a 4-bit ``sel``).
MAX_VARIANTS = 16


def _parse_of(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(part.replace(";", ",") for part in text.split("|"))


def _format_of(value) -> str:
    return "|".join(spec.replace(",", ";") for spec in value)


def sel_bits(count: int) -> int:
    """Width of a ``sel`` that indexes ``count`` variants (0 for a single one).

    >>> [sel_bits(n) for n in (1, 2, 3, 4, 5)]
    [0, 1, 2, 2, 3]
    """
    return max(0, (count - 1).bit_length())


@register("variants", kind="mult")
@dataclass(frozen=True)
class VariantsMultiplier(Multiplier):
    """Several multipliers behind one operand port pair, chosen by ``sel`` at run time.

    Parameters
    ----------
    of : tuple of str
        Member multiplier specs (variant ``i`` = ``of[i]``), 1 … :data:`MAX_VARIANTS` of them,
        all with the operand formats of ``of[0]``; stored canonical.
    """

    of: tuple = ()

    _spec_codecs = {"of": (_parse_of, _format_of)}

    def __post_init__(self):
        from .base import multiplier

        of = self.of
        if isinstance(of, str):
            of = _parse_of(of)
        if not isinstance(of, (tuple, list)) or not of:
            raise ValueError(f"variants: of must name at least one multiplier spec, not {of!r}")
        if len(of) > MAX_VARIANTS:
            raise ValueError(f"variants: of has {len(of)} members; allowed: at most "
                             f"{MAX_VARIANTS}")
        members = []
        for i, spec in enumerate(of):
            if not isinstance(spec, str):
                raise ValueError(f"variants: of[{i}] must be a spec string, not {spec!r}")
            try:
                m = multiplier(spec)
            except ValueError as e:
                raise ValueError(f"variants: of[{i}]: {e}") from None
            if isinstance(m, VariantsMultiplier):
                raise ValueError(f"variants: of[{i}] = {spec!r} is itself a variants unit")
            if getattr(m, "mode", "fixed") == "composable":
                raise ValueError(f"variants: of[{i}] = {m.spec!r} is composable (run-time "
                                 "precision); allowed: fixed-precision members")
            if any(ch in m.spec for ch in "|;"):
                raise ValueError(f"variants: of[{i}] = {m.spec!r} contains '|' or ';'")
            members.append(m)
        for i, m in enumerate(members[1:], 1):
            for side in ("a_format", "b_format"):
                f0, fi = getattr(members[0], side), getattr(m, side)
                if (f0.bits, f0.encoding) != (fi.bits, fi.encoding):
                    raise ValueError(
                        f"variants: of[{i}] = {m.spec!r} has {side} {fi.bits} bits "
                        f"{fi.encoding}, but of[0] = {members[0].spec!r} has {f0.bits} bits "
                        f"{f0.encoding}; allowed: equal operand formats"
                    )
        object.__setattr__(self, "of", tuple(m.spec for m in members))
        object.__setattr__(self, "_members", tuple(members))

    @property
    def members(self) -> tuple[Multiplier, ...]:
        """The member multipliers, variant 0 first."""
        return self.__dict__["_members"]

    @property
    def sel_bits(self) -> int:
        """Width of the hardware ``sel`` input."""
        return sel_bits(len(self.of))

    @property
    def a_format(self) -> OperandFormat:
        return self.members[0].a_format

    @property
    def b_format(self) -> OperandFormat:
        return self.members[0].b_format

    @property
    def product_range(self) -> tuple[int, int]:
        """Bounds over every member (the hardware product port holds any variant)."""
        ranges = [m.product_range for m in self.members]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def _mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.members[0]._mul(a, b)

    def mul_sel(self, a, b, sel) -> torch.Tensor:
        """Products with variant ``sel`` (broadcast with ``a`` and ``b``; an index past the
        last member selects the last, as the hardware multiplexer does)."""
        sel = as_int64(sel)
        a, b, sel = torch.broadcast_tensors(as_int64(a), as_int64(b), sel)
        out = torch.zeros(a.shape, dtype=torch.int64)
        last = len(self.members) - 1
        for i, m in enumerate(self.members):
            hit = (sel == i) if i < last else (sel >= i)
            if bool(hit.any()):
                out[hit] = m.mul(a[hit], b[hit])
        return out


def variants_spec(base: str, variants) -> str:
    """The spec of a variants unit with ``base`` as variant 0, then ``variants`` (specs);
    ``base`` itself when there are no variants."""
    variants = tuple(variants)
    if not variants:
        return base
    return VariantsMultiplier(of=(base, *variants)).spec

