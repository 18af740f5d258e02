"""Table multiplier: a product ROM, twin of :class:`mixpe.sw.mult.table.TableMultiplier`.

Any product table (an EvoApproxLib circuit, a synthesized approximate multiplier, or the table
of another family, ``np.save(f, m.table().numpy())``) becomes one
:class:`amaranth.lib.memory.Memory` of ``2^(na+nb)`` signed words, initialised from
``config.table()`` and addressed by the operand codes ``{a, b}`` (``a`` in the high address
bits, so that the address is ``a·2^nb + b``, the row-major index of ``T[a, b]``). The read port
is asynchronous (``domain="comb"``): the unit is combinational like every other multiplier.

Cost: Yosys maps the constant async-read memory to logic, each product bit a function of the
``na + nb`` address bits minimised by ABC; it does not see the arithmetic structure of the
table, so a ROM of the exact 8×8 product costs more LUTs than the behavioural multiplier (see
``tests/test_hw_table.py`` and the report numbers). A synchronous read port would map to block
RAM instead (a 64 K × 16 table is 1 Mbit: more than the whole iCE40 UP5K EBR), which is why the
ROM stays combinational here.
"""

from __future__ import annotations

from amaranth import hdl
from amaranth.hdl import Cat, Module
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from mixpe.sw.mult.table import TableMultiplier as _SwTable

from . import register

__all__ = ["TableMultiplier"]


@register("table")
class TableMultiplier(wiring.Component):
    """Product-table ROM multiplier (combinational).

    Parameters
    ----------
    path : str
        ``.npy`` product table (see :class:`mixpe.sw.mult.table.TableMultiplier`) or
        ``mem:NAME``.
    sa, sb : bool
        Row / column codes are two's complement (only changes how the sw twin decodes
        values; the ROM is addressed by codes either way).

    Members
    -------
    a : In(na)
        Activation code (row index).
    b : In(nb)
        Weight code (column index).
    p : Out(signed(out_bits))
        ``T[a, b]``.
    """

    latency = 0

    def __init__(self, *, path, sa=False, sb=False):
        self._config = _SwTable(path=path, sa=sa, sb=sb)
        cfg = self._config
        super().__init__({
            "a": In(cfg.a_format.bits),
            "b": In(cfg.b_format.bits),
            "p": Out(hdl.signed(cfg.out_bits)),
        })

    @property
    def config(self) -> _SwTable:
        """The sw twin (validated, frozen)."""
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        table = cfg.table().flatten().tolist()
        m.submodules.rom = rom = memory.Memory(
            shape=hdl.signed(cfg.out_bits), depth=len(table), init=table)
        port = rom.read_port(domain="comb")
        m.d.comb += [
            port.addr.eq(Cat(self.b, self.a)),
            self.p.eq(port.data),
        ]
        return m
