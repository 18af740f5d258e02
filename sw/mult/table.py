"""Multipliers given by a product table, e.g. an EvoApproxLib 8×8 circuit or a synthesized one.

``table:path=FILE.npy`` loads an integer array of shape ``(2**na, 2**nb)`` (operand widths come
from the shape). ``T[i, j]`` is the product of the operands whose **codes** are ``i`` and ``j``;
``sa``/``sb`` say how codes decode (two's complement when set, else unsigned), exactly like
``Multiplier.table()``, so ``np.save(f, m.table().numpy())`` round-trips any multiplier.

Where the file is looked up: an absolute path, else relative to the working directory, else
relative to the shipped data folder ``sw/data/`` (so ``table:path=mul8u_trunc7.npy`` works
everywhere).

In-memory tables: :meth:`TableMultiplier.from_array` registers an array in this process under
``mem:NAME`` (default ``NAME`` = the first 16 hex digits of the SHA-256 of the table's shape and
int64 contents) and returns ``table:path=mem:NAME``; the spec is valid only in that process.

Shipped table (``sw/data/``, regenerate with :func:`truncated_array_table`):

``mul8u_trunc7.npy``
    8×8 unsigned **truncated array multiplier**: the AND array of the partial-product bits
    ``a_u·b_v`` keeps only the columns ``u + v ≥ 7`` and has no correction constant,
    ``T[a, b] = Σ_{u+v≥7} a_u·b_v·2^(u+v)``. It is always ≤ the exact product.

>>> from mixpe.sw.mult import multiplier
>>> m = multiplier("table:path=mul8u_trunc7.npy")
>>> m.a_format.bits, m.mul(255, 255).item(), 255 * 255
(8, 64256, 65025)
>>> import numpy as np
>>> m2 = TableMultiplier.from_array(np.array([[0, 0], [0, 1]]))
>>> m2.spec.startswith("table:path=mem:"), m2.mul(1, 1).item()
(True, 1)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..spec import register
from .base import TABLE_MAX_BITS, Multiplier, OperandFormat, check_bool_param

__all__ = ["TableMultiplier", "TableFileNotFoundError", "DATA_DIR", "truncated_array_table"]

#: Folder of the shipped tables.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"

_MEMORY_PREFIX = "mem:"
_MEMORY_TABLES: dict[str, np.ndarray] = {}


class TableFileNotFoundError(FileNotFoundError, ValueError):
    """The ``path`` of a table multiplier names no file (also a ``ValueError``, like every
    other invalid multiplier parameter)."""


def truncated_array_table(n: int, t: int) -> np.ndarray:
    """``T[a, b] = Σ_{u+v≥t} a_u·b_v·2^(u+v)`` for unsigned ``n``-bit ``a``, ``b`` (int64).

    The array multiplier with the partial-product columns below ``t`` removed.

    >>> truncated_array_table(2, 1).tolist()
    [[0, 0, 0, 0], [0, 0, 2, 2], [0, 2, 4, 6], [0, 2, 6, 8]]
    """
    a = np.arange(1 << n, dtype=np.int64)[:, None]
    b = np.arange(1 << n, dtype=np.int64)[None, :]
    out = np.zeros((1 << n, 1 << n), dtype=np.int64)
    for u in range(n):
        for v in range(n):
            if u + v >= t:
                out += (((a >> u) & 1) * ((b >> v) & 1)) << (u + v)
    return out


def _bits_of(size: int, axis: str, path: str) -> int:
    bits = size.bit_length() - 1
    if size < 2 or size != 1 << bits or bits > TABLE_MAX_BITS:
        raise ValueError(
            f"table: {path!r} has {size} {axis}; allowed: 2**bits {axis} with bits in "
            f"[1, {TABLE_MAX_BITS}]"
        )
    return bits


def _validate(array, path: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"table: {path!r} has shape {array.shape}; allowed: a 2-D table of "
                         f"shape (2**na, 2**nb)")
    _bits_of(array.shape[0], "rows", path)
    _bits_of(array.shape[1], "columns", path)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"table: {path!r} has dtype {array.dtype}; allowed: an integer dtype")
    if array.dtype == np.uint64 and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise ValueError(f"table: {path!r} has entries above the int64 range")
    return np.ascontiguousarray(array, dtype=np.int64)


def _resolve(path: str) -> Path:
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, DATA_DIR / p]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise TableFileNotFoundError(
        f"table: path={path!r} names no file; looked in: " + ", ".join(map(str, candidates))
    )


@register("table", kind="mult")
@dataclass(frozen=True)
class TableMultiplier(Multiplier):
    """A multiplier defined by its product table (a ``.npy`` file or an in-memory array).

    Parameters
    ----------
    path : str
        ``.npy`` file (see the module docstring for the lookup) or ``mem:NAME``.
    sa, sb : bool
        Row / column codes are two's complement (``1``) or unsigned (``0``).
    """

    path: str
    sa: bool = False
    sb: bool = False

    def __post_init__(self):
        object.__setattr__(self, "sa", check_bool_param(self.family, "sa", self.sa))
        object.__setattr__(self, "sb", check_bool_param(self.family, "sb", self.sb))
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"table: path={self.path!r} must be a file name or mem:NAME")
        if self.path.startswith(_MEMORY_PREFIX):
            if self.path not in _MEMORY_TABLES:
                raise ValueError(f"table: path={self.path!r} names no in-memory table of this "
                                 f"process; register one with TableMultiplier.from_array")
            array = _MEMORY_TABLES[self.path]
        else:
            file = _resolve(self.path)
            try:
                raw = np.load(file, allow_pickle=False)
            except (ValueError, OSError) as e:
                raise ValueError(f"table: cannot read {str(file)!r} as a .npy array: {e}"
                                 ) from None
            array = _validate(raw, self.path)
        object.__setattr__(self, "_array", torch.tensor(array, dtype=torch.int64))

    @classmethod
    def from_array(cls, table, *, sa: bool = False, sb: bool = False,
                   name: str | None = None) -> TableMultiplier:
        """Register ``table`` in this process and return its multiplier (``path=mem:NAME``)."""
        array = _validate(table, name or "<array>")
        if name is None:
            digest = hashlib.sha256(repr(array.shape).encode() + array.tobytes()).hexdigest()
            name = digest[:16]
        if any(ch in name for ch in ",="):
            raise ValueError(f"table: in-memory name {name!r} must not contain ',' or '='")
        key = name if name.startswith(_MEMORY_PREFIX) else _MEMORY_PREFIX + name
        array.setflags(write=False)
        _MEMORY_TABLES[key] = array
        return cls(path=key, sa=sa, sb=sb)

    @property
    def a_format(self) -> OperandFormat:
        bits = self._array.shape[0].bit_length() - 1
        return OperandFormat(bits, "twos" if self.sa else "unsigned")

    @property
    def b_format(self) -> OperandFormat:
        bits = self._array.shape[1].bit_length() - 1
        return OperandFormat(bits, "twos" if self.sb else "unsigned")

    def _mul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ca = a & ((1 << self.a_format.bits) - 1)  # value -> code (two's complement or unsigned)
        cb = b & ((1 << self.b_format.bits) - 1)
        return self._array[ca, cb]
