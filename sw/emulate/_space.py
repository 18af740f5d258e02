"""Operand spaces: the values one multiplier port accepts and the LUT index of each value.

Every operand transform of the emulator is a small table indexed by the *value index*
``value - lo`` (dense spaces) or by the position of the value on the format's grid (grid
spaces: wide number formats whose grid is sparse). Spaces too large for a table (operands of
more than :data:`DENSE_MAX_BITS` bits) are ``"none"`` spaces: their transforms are evaluated as
functions on the values.
"""

from __future__ import annotations

import torch

from ..mult.base import OperandFormat
from ..numerics import as_int64

__all__ = ["Space", "DENSE_MAX_BITS"]

#: Largest table of a dense or grid space: ``2**DENSE_MAX_BITS`` entries.
DENSE_MAX_BITS = 20


class Space:
    """The values of one operand port and their table index.

    ``fmt`` is a :class:`~mixpe.sw.mult.base.OperandFormat` (contiguous integer range) or a
    :class:`~mixpe.sw.formats.NumberFormat` (a grid of values, possibly with gaps).
    """

    def __init__(self, fmt):
        self.fmt = fmt
        self.lo, self.hi = (int(x) for x in fmt.range)
        self.contiguous = isinstance(fmt, OperandFormat)
        grid = None if self.contiguous else as_int64(fmt.grid())
        width = self.hi - self.lo + 1
        if width <= 1 << DENSE_MAX_BITS:
            self.mode = "dense"
            self.values = torch.arange(self.lo, self.hi + 1, dtype=torch.int64)
            self.valid = None if grid is None else torch.isin(self.values, grid)
        elif grid is not None and grid.numel() <= 1 << DENSE_MAX_BITS:
            self.mode = "grid"
            self.values = grid
            self.valid = None
        else:
            self.mode = "none"
            self.values = None
            self.valid = None
        self._grid = grid
        self._device_cache: dict = {}

    @property
    def has_lut(self) -> bool:
        return self.mode != "none"

    @property
    def size(self) -> int:
        return 0 if self.values is None else self.values.numel()

    def valid_values(self) -> torch.Tensor:
        """The values of the valid table entries (all of them for contiguous formats)."""
        return self.values if self.valid is None else self.values[self.valid]

    def describe(self) -> str:
        spec = getattr(self.fmt, "spec", None)
        return spec if spec is not None else f"{self.fmt.encoding} {self.fmt.bits}-bit"

    def _on(self, t: torch.Tensor | None, device) -> torch.Tensor | None:
        if t is None or t.device == device:
            return t
        key = (id(t), device)
        hit = self._device_cache.get(key)
        if hit is None:
            hit = self._device_cache[key] = t.to(device)
        return hit

    @property
    def gapped(self) -> bool:
        """Whether some values inside ``[lo, hi]`` are not operand values (a sparse grid)."""
        return not self.contiguous

    def check(self, v: torch.Tensor, name: str, grid: bool = True) -> None:
        """``ValueError`` naming ``name`` when a value of ``v`` is not an operand value.

        ``grid=False`` checks the range only (the caller runs :meth:`check_grid`).
        """
        if not v.numel():
            return
        vmin, vmax = (int(x) for x in torch.aminmax(v))
        if vmin < self.lo or vmax > self.hi:
            bad = vmin if vmin < self.lo else vmax
            raise ValueError(f"{name}: operand values must lie in [{self.lo}, {self.hi}] "
                             f"({self.describe()}), got {bad}")
        if grid and self.gapped:
            self.check_grid(v, None, name)

    def check_grid(self, v: torch.Tensor, idx: torch.Tensor | None, name: str) -> None:
        """The grid part of :meth:`check`; ``idx`` (from :meth:`index`) is reused if given."""
        if not self.gapped or not v.numel():
            return
        if self.mode == "dense":
            if idx is None:
                idx = v - self.lo
            ok = self._on(self.valid, v.device).index_select(0, idx.reshape(-1))
            if int(ok.view(torch.uint8).min()) == 1:  # (much faster than ok.all())
                return
            bad_mask = ~ok
        else:
            grid = self._on(self._grid, v.device)
            pos = torch.searchsorted(grid, v.reshape(-1)).clamp(max=grid.numel() - 1)
            bad_mask = grid[pos] != v.reshape(-1)
        if bool(bad_mask.any()):
            bad = int(v.reshape(-1)[bad_mask][0])
            raise ValueError(f"{name}: value {bad} is not on the grid of {self.describe()}")

    def index(self, v: torch.Tensor) -> torch.Tensor:
        """Table index of each (already checked) value, same shape as ``v``."""
        if self.mode == "dense":
            return v - self.lo if self.lo else v
        if self.mode == "grid":
            grid = self._on(self._grid, v.device)
            return torch.searchsorted(grid, v.contiguous())
        raise ValueError(f"{self.describe()}: operand space too large for a table")

    def codes(self, values: torch.Tensor) -> torch.Tensor:
        """Port code of each value."""
        return self.fmt.encode(values)
