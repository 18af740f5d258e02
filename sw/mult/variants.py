"""Run-time selectable multiplier variants: one operand port pair, several multipliers.

``variants:of=exact|roup:p=1;r=4`` names a unit that holds every listed multiplier and a
``sel`` input choosing whose product comes out (variant ``i`` = the ``i``-th spec). It is how a
systolic array gives each column its own approximation at run time (MAx-DNN style per-filter
approximation, ``ArrayConfig.variants``): the hardware twin builds every member and multiplexes
the products.

Spec syntax: the member specs are joined by ``|``; inside a member spec ``;`` stands for the
``,`` that separates its keys (a spec value cannot contain ``,``). A member cannot itself be a
``variants`` unit or a composable (run-time precision) multiplier.

Members with number formats (ANT-style decoded operands): a member may be a *decoded* spec
``'<core spec> a=<format spec> b=<format spec>'`` (:func:`mixpe.sw.mult.decoded.decoded`,
what ``DecodedMultiplier.spec`` gives), e.g. ``exact:nb=3 a=int:bits=8;signed=1
b=flint:bits=4;signed=1``. Two kinds of unit follow:

* **value unit** (no decoded member): every member must take the operand formats (bits and
  encoding) of the first; ``mul(a, b)``/``mul_sel`` take operand *values*.
* **code-port unit** (at least one decoded member): members may have different operand
  formats and code widths. The ports are as wide as the widest member code
  (``a_format``/``b_format`` are ``OperandFormat(bits, "unsigned")``, so the operand *values*
  of the unit are the port *codes*); member ``i`` reads the low ``bits_i`` bits of each port
  and ignores the bits above (*code-width rule*: a host writes a narrower code
  zero-extended; sign-extended works too, the high bits are don't-care). Each member decodes
  its own codes (:meth:`member_codes`).

``mul(a, b)`` and ``table()`` are those of variant 0 (the hardware with ``sel = 0``);
:meth:`VariantsMultiplier.mul_sel` applies a ``sel`` per product, :meth:`mul_sel_codes` does
the same on port codes (either kind), and :attr:`members` gives the member multipliers, e.g.
for a per-column reference::

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
>>> mixed = multiplier("variants:of=exact|exact:nb=3 a=int:bits=8;signed=1 b=flint:signed=1")
>>> mixed.code_port, mixed.a_format.bits, mixed.b_format.bits, mixed.members[1].b_format.spec
(True, 8, 8, 'flint:signed=1')
>>> mixed.mul_sel_codes(100, 0b0110, 1).item()    # 100 * 8 (flint code 6 = 8)
800
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..numerics import as_int64
from ..spec import register
from .base import Multiplier, OperandFormat

__all__ = ["VariantsMultiplier", "variants_spec", "member", "is_decoded_spec", "sel_bits",
           "MAX_VARIANTS"]

#: Most members a unit may hold (a 4-bit ``sel``).
MAX_VARIANTS = 16


def _parse_of(text: str) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(part.replace(";", ",") for part in text.split("|"))


def _format_of(value) -> str:
    return "|".join(spec.replace(",", ";") for spec in value)


def is_decoded_spec(spec: str) -> bool:
    """Whether ``spec`` is a decoded spec ``'<core> a=<format> b=<format>'`` (whitespace
    separated parts), not a plain multiplier spec.

    >>> is_decoded_spec("exact:nb=4 a=int:bits=8,signed=1 b=int:bits=4,signed=1")
    True
    """
    return isinstance(spec, str) and len(spec.split()) > 1


def member(spec: str) -> Multiplier:
    """The multiplier of one member spec: a plain multiplier spec, or a decoded spec
    (:func:`~mixpe.sw.mult.decoded.decoded`)."""
    from .base import multiplier

    if is_decoded_spec(spec):
        from .decoded import decoded

        return decoded(spec)
    return multiplier(spec)


def _port_key(m) -> tuple:
    fa, fb = m.a_format, m.b_format
    if isinstance(m, _decoded_class()):
        return ("format", fa.spec, fb.spec)
    return ("operand", fa.bits, fa.encoding, fb.bits, fb.encoding)


def _decoded_class():
    from .decoded import DecodedMultiplier

    return DecodedMultiplier


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
        Member specs (variant ``i`` = ``of[i]``), 1 … :data:`MAX_VARIANTS` of them, stored
        canonical: plain multiplier specs, all with the operand formats of ``of[0]``; or, for
        a code-port unit, any mix of plain and decoded specs (see the module docstring).
    """

    of: tuple = ()

    _spec_codecs = {"of": (_parse_of, _format_of)}

    def __post_init__(self):
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
                m = member(spec)
            except ValueError as e:
                raise ValueError(f"variants: of[{i}]: {e}") from None
            if isinstance(m, VariantsMultiplier):
                raise ValueError(f"variants: of[{i}] = {spec!r} is itself a variants unit")
            core = m.core if isinstance(m, _decoded_class()) else m
            if isinstance(core, VariantsMultiplier):
                raise ValueError(f"variants: of[{i}] = {spec!r} has a variants core")
            if getattr(core, "mode", "fixed") == "composable":
                raise ValueError(f"variants: of[{i}] = {m.spec!r} is composable (run-time "
                                 "precision); allowed: fixed-precision members")
            if any(ch in m.spec for ch in "|;"):
                raise ValueError(f"variants: of[{i}] = {m.spec!r} contains '|' or ';'")
            members.append(m)
        code_port = any(isinstance(m, _decoded_class()) for m in members)
        for i, m in enumerate(members[1:] if not code_port else (), 1):
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
        object.__setattr__(self, "_code_port", code_port)
        if code_port:
            bits = (max(m.a_format.bits for m in members), max(m.b_format.bits for m in members))
            if max(bits) > 16:
                raise ValueError(f"variants: member codes of {bits[0]}/{bits[1]} bits; allowed: "
                                 "at most 16 bits on a code port")
            object.__setattr__(self, "_ports", tuple(OperandFormat(b, "unsigned")
                                                     for b in bits))

    @property
    def members(self) -> tuple[Multiplier, ...]:
        """The member multipliers, variant 0 first."""
        return self.__dict__["_members"]

    @property
    def sel_bits(self) -> int:
        """Width of the hardware ``sel`` input."""
        return sel_bits(len(self.of))

    @property
    def code_port(self) -> bool:
        """Whether this is a code-port unit (some member decodes number formats): operand
        values are then the port codes, each member reading the low bits of its width."""
        return self.__dict__["_code_port"]

    @property
    def a_format(self) -> OperandFormat:
        """Port format of ``a``: member 0's, or unsigned codes of a code-port unit."""
        return self.__dict__["_ports"][0] if self.code_port else self.members[0].a_format

    @property
    def b_format(self) -> OperandFormat:
        """Port format of ``b``: member 0's, or unsigned codes of a code-port unit."""
        return self.__dict__["_ports"][1] if self.code_port else self.members[0].b_format

    def member_codes(self, i: int, ca, cb) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes member ``i`` sees for port codes ``ca``/``cb``: their low
        ``members[i].a_format.bits``/``b_format.bits`` bits (the code-width rule)."""
        m = self.members[i]
        return (as_int64(ca) & ((1 << m.a_format.bits) - 1),
                as_int64(cb) & ((1 << m.b_format.bits) - 1))

    @property
    def product_range(self) -> tuple[int, int]:
        """Bounds over every member (the hardware product port holds any variant)."""
        ranges = [m.product_range for m in self.members]
        return min(r[0] for r in ranges), max(r[1] for r in ranges)

    def _mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.code_port:
            return self.mul_sel_codes(a, b, 0)
        return self.members[0]._mul(a, b)

    def mul_sel_codes(self, ca, cb, sel) -> torch.Tensor:
        """Products of port *codes* ``ca``/``cb`` with variant ``sel`` (broadcast; past the
        last member: the last); member ``i`` multiplies :meth:`member_codes`."""
        ca, cb, sel = torch.broadcast_tensors(as_int64(ca), as_int64(cb), as_int64(sel))
        out = torch.zeros(ca.shape, dtype=torch.int64)
        last = len(self.members) - 1
        for i, m in enumerate(self.members):
            hit = (sel == i) if i < last else (sel >= i)
            if bool(hit.any()):
                xa, xb = self.member_codes(i, ca[hit], cb[hit])
                out[hit] = m.mul_codes(xa, xb)
        return out

    def mul_sel(self, a, b, sel) -> torch.Tensor:
        """Products with variant ``sel`` (broadcast with ``a`` and ``b``; an index past the
        last member selects the last, as the hardware multiplexer does). On a code-port unit
        ``a``/``b`` are port codes (:meth:`mul_sel_codes`)."""
        if self.code_port:
            return self.mul_sel_codes(a, b, sel)
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

