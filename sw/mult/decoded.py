"""Number formats composed with a multiplier: decode, multiply the mantissas, shift.

``DecodedMultiplier(a_format, b_format, core)`` multiplies two operands of any
:mod:`mixpe.sw.formats` number format (int, PoT, float, flint) the way a decoded datapath does
(ANT's int multiplier plus shifter, seed spec §5.3): each code decodes to ``(m, e)`` with
``value = m << e``, the core multiplier takes the mantissas and the product is shifted::

    product(ca, cb) = core.mul(m_a, m_b) << (e_a + e_b)

With an exact core this is the exact product of the two grid values; with an approximate
core the approximation acts on the mantissas only.

>>> f4 = number_format("flint:bits=4")
>>> dm = DecodedMultiplier(f4, f4, multiplier("exact:n=4"))
>>> dm.mul_codes(0b1101, 0b1011).item()    # 24 * 14 = (6 * 7) << (2 + 1)
336
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..formats import NumberFormat, number_format
from ..numerics import as_int64
from .base import Multiplier, multiplier

__all__ = ["DecodedMultiplier", "decoded"]

#: Products must stay below this magnitude so that int64 shifts cannot overflow.
_PRODUCT_LIMIT = 1 << 62


class DecodedMultiplier(Multiplier):
    """A multiplier on number-format operands: ``core.mul(m_a, m_b) << (e_a + e_b)``.

    Parameters
    ----------
    a_format, b_format:
        :class:`~mixpe.sw.formats.NumberFormat` of the activation and the weight operand.
        Their ``values()`` are the operand values and ``codes()`` the port codes.
    core:
        Any :class:`~mixpe.sw.mult.base.Multiplier` whose operand ranges hold the decoded
        mantissas (``ValueError`` otherwise), e.g. ``multiplier("exact:n=4")``.

    ``mul(a, b)`` takes grid values (integer units; ``ValueError`` off the grid),
    ``mul_codes(ca, cb)`` format codes, ``table()[ca, cb]`` is indexed by codes (the −0 code of
    a sign-magnitude format included). Immutable; equal when the three parts are equal.
    """

    family: ClassVar[str] = "decoded"

    def __init__(self, a_format: NumberFormat, b_format: NumberFormat, core: Multiplier):
        for name, fmt in (("a_format", a_format), ("b_format", b_format)):
            if not isinstance(fmt, NumberFormat):
                raise ValueError(f"decoded: {name} must be a NumberFormat, not {fmt!r}")
        if not isinstance(core, Multiplier):
            raise ValueError(f"decoded: core must be a Multiplier, not {core!r}")
        for side, fmt, port in (("a", a_format, core.a_format), ("b", b_format, core.b_format)):
            m, _ = fmt.decode(fmt.codes())
            lo, hi = port.range
            if int(m.min()) < lo or int(m.max()) > hi:
                raise ValueError(
                    f"decoded: core {core.spec} operand {side} range [{lo}, {hi}] does not "
                    f"hold the mantissas [{int(m.min())}, {int(m.max())}] of {fmt.spec} "
                    f"(needs {fmt.m_bits} bits, {'signed' if fmt.m_signed else 'unsigned'})"
                )
        plo, phi = core.product_range
        bound = max(abs(plo), abs(phi)) << (a_format.e_max + b_format.e_max)
        if bound >= _PRODUCT_LIMIT:
            raise ValueError(
                f"decoded: products of {a_format.spec} and {b_format.spec} reach "
                f"{bound}, beyond the int64 limit 2**62"
            )
        object.__setattr__(self, "_parts", (a_format, b_format, core))

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    @property
    def a_format(self) -> NumberFormat:
        return self._parts[0]

    @property
    def b_format(self) -> NumberFormat:
        return self._parts[1]

    @property
    def core(self) -> Multiplier:
        return self._parts[2]

    def __eq__(self, other):
        return isinstance(other, DecodedMultiplier) and self._parts == other._parts

    def __hash__(self):
        return hash(self._parts)

    def __repr__(self):
        return f"DecodedMultiplier({self.a_format!r}, {self.b_format!r}, {self.core!r})"

    @property
    def spec(self) -> str:
        """``'<core spec> a=<format spec> b=<format spec>'``."""
        return f"{self.core.spec} a={self.a_format.spec} b={self.b_format.spec}"

    def mul_codes(self, ca, cb) -> torch.Tensor:
        """Product of the operands with format codes ``ca`` and ``cb`` (broadcast)."""
        ma, ea = self.a_format.decode(ca)
        mb, eb = self.b_format.decode(cb)
        ma, mb = torch.broadcast_tensors(ma, mb)
        ea, eb = torch.broadcast_tensors(ea, eb)
        return self.core.mul(ma, mb) << (ea + eb)

    def mul(self, a, b) -> torch.Tensor:
        """Product of grid values ``a`` and ``b`` (integer units), as the hardware computes it."""
        a, b = as_int64(a), as_int64(b)
        try:
            ca = self.a_format.encode(a)
        except ValueError as e:
            raise ValueError(f"decoded: operand a: {e}") from None
        try:
            cb = self.b_format.encode(b)
        except ValueError as e:
            raise ValueError(f"decoded: operand b: {e}") from None
        return self.mul_codes(ca, cb)

    def table(self) -> torch.Tensor:
        """``T[ca, cb]`` over all codes of both formats (int64)."""
        if not self.has_table:
            return super().table()  # raises with the size limit
        cached = self.__dict__.get("_table_cache")
        if cached is None:
            cached = self.mul_codes(self.a_format.codes()[:, None], self.b_format.codes()[None, :])
            object.__setattr__(self, "_table_cache", cached)
        return cached.clone()


def decoded(core_spec: str, a_fmt_spec: str | None = None,
            b_fmt_spec: str | None = None) -> DecodedMultiplier:
    """Build a :class:`DecodedMultiplier` from spec strings.

    Either three specs, ``decoded("exact:n=4", "flint", "flint:signed=1")``, or the combined
    ``decoded("exact:n=4 a=flint b=flint:signed=1")`` that ``.spec`` gives.

    >>> decoded("exact:n=4 a=flint b=int:bits=3,signed=1").mul(24, -3).item()
    -72
    """
    if a_fmt_spec is None and b_fmt_spec is None:
        parts = core_spec.split()
        if len(parts) != 3 or not parts[1].startswith("a=") or not parts[2].startswith("b="):
            raise ValueError(
                f"decoded spec must look like '<core spec> a=<format spec> b=<format spec>', "
                f"not {core_spec!r}"
            )
        core_spec, a_fmt_spec, b_fmt_spec = parts[0], parts[1][2:], parts[2][2:]
    elif a_fmt_spec is None or b_fmt_spec is None:
        raise ValueError("decoded: give both a_fmt_spec and b_fmt_spec, or one combined spec")
    return DecodedMultiplier(number_format(a_fmt_spec), number_format(b_fmt_spec),
                             multiplier(core_spec))

