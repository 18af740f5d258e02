"""The ISA: field tables, encode/decode, text form, stream row packing, counter bank."""

from __future__ import annotations

import doctest
import importlib
import random
import re

import pytest
import torch
from mixpe.sw import isa
from mixpe.sw.core_config import CORE_PRESETS, ArrayConfig, CoreConfig
from mixpe.sw.isa import (
    FIELDS,
    Instr,
    Mem,
    Opcode,
    assemble,
    decode,
    disassemble,
    encode,
    field_offsets,
    struct_fields,
)
from mixpe.sw.pe import PEConfig


def _random_instr(op: Opcode, rng: random.Random) -> Instr:
    vals = {}
    for f in FIELDS[op]:
        lo, hi = isa._field_range(f)
        vals[f.name] = rng.choice([lo, hi, rng.randint(lo, hi)])
    if op == Opcode.LOAD:
        vals["mem"] = rng.choice([0, 1, 2, 3])
    if op == Opcode.STORE:
        vals["mem"] = rng.choice([0, 1, 2, 3, 4])
    return Instr(op, **vals)


@pytest.mark.parametrize("op", list(Opcode))
def test_encode_decode_round_trip(op):
    rng = random.Random(int(op))
    for _ in range(50):
        ins = _random_instr(op, rng)
        word = encode(ins)
        assert 0 <= word < 1 << 64
        assert word >> isa.OPCODE_LSB == int(op)
        assert decode(word) == ins
        assert assemble(str(ins)) == ins
        assert hash(decode(word)) == hash(ins)


def test_fields_fit_and_positions():
    for op, fields in FIELDS.items():
        assert sum(f.width for f in fields) <= isa.PAYLOAD_BITS
        names = [f.name for f in fields]
        assert len(set(names)) == len(names)
        layout = struct_fields(op)
        assert sum(w for _, w, _ in layout) == isa.PAYLOAD_BITS
        offs = field_offsets(op)
        lsb = 0
        for f in fields:
            assert offs[f.name] == (lsb, f.width)
            lsb += f.width
    # the contract's field lists (docs/core.md) in order
    assert [f.name for f in FIELDS[Opcode.CONFIG]] == [
        "mode", "relu", "zp", "lo", "hi", "acc_overwrite_default"]
    assert [f.name for f in FIELDS[Opcode.LOAD]] == ["mem", "addr", "rows"]
    assert [f.name for f in FIELDS[Opcode.COMPUTE]] == [
        "asp_addr", "acc_addr", "m_outer", "m_inner", "a_stride_outer", "a_stride_inner",
        "acc_stride", "accumulate", "swap"]
    assert [f.name for f in FIELDS[Opcode.REQUANT]] == ["acc_addr", "asp_addr", "rows",
                                                       "qsp_addr"]


def test_docstring_table_matches_fields():
    doc = isa.__doc__
    for op, fields in FIELDS.items():
        m = re.search(rf"^{op.name}\s+{int(op)}\s+(.*?)(?=^\S|\Z)", doc, re.M | re.S)
        assert m, op
        text = " ".join(m.group(1).split())
        want = ", ".join(f"{f.name} {f.width}{'s' if f.signed else ''}" for f in fields) or "—"
        assert text.startswith(want), (op, text)


def test_single_field_bits():
    assert encode(Instr(Opcode.COMPUTE, swap=1)) == (5 << 59) | (1 << 58)
    assert encode(Instr(Opcode.CONFIG, zp=-1)) == (1 << 59) | (0xFFFF << 4)
    assert decode((1 << 59) | (0x8000 << 4)).zp == -32768
    assert encode(Instr(Opcode.END)) == 8 << 59


@pytest.mark.parametrize("op, field, value, rng", [
    (Opcode.LOAD, "addr", 4096, "[0, 4095]"),
    (Opcode.LOAD, "rows", -1, "[0, 8191]"),
    (Opcode.COMPUTE, "a_stride_inner", 8, "[0, 7]"),
    (Opcode.CONFIG, "zp", 40000, "[-32768, 32767]"),
    (Opcode.PRELOAD, "k_rows", 128, "[0, 127]"),
    (Opcode.CONFIG, "relu", 2, "[0, 1]"),
])
def test_field_range_errors(op, field, value, rng):
    with pytest.raises(ValueError, match=re.escape(f"{field}={value} is out of range; allowed: "
                                                   f"{field} in {rng}")):
        Instr(op, **{field: value})


def test_instr_errors():
    with pytest.raises(ValueError, match="unknown field"):
        Instr(Opcode.FENCE, addr=1)
    with pytest.raises(ValueError, match="op must be an Opcode"):
        Instr(99)
    with pytest.raises(ValueError, match="mem=4 is out of range"):
        Instr(Opcode.LOAD, mem=Mem.CNT)
    with pytest.raises(ValueError, match="mem=7 is out of range"):
        Instr(Opcode.STORE, mem=7)
    with pytest.raises(ValueError, match="unknown opcode 31"):
        decode(31 << 59)
    with pytest.raises(ValueError, match="reserved bits"):
        decode((7 << 59) | 1)
    with pytest.raises(ValueError, match="word must be"):
        decode(1 << 64)
    with pytest.raises(ValueError, match="unknown opcode"):
        assemble("JUMP addr=3")
    with pytest.raises(ValueError, match="expected name=value"):
        assemble("LOAD 3")
    with pytest.raises(ValueError, match="unknown mem"):
        assemble("LOAD mem=dram")
    with pytest.raises(AttributeError):
        Instr(Opcode.NOP).foo  # noqa: B018
    ins = Instr(Opcode.LOAD, mem=Mem.ACC, rows=3)
    with pytest.raises(AttributeError):
        ins.rows = 4
    assert ins.replace(rows=4).rows == 4 and ins.rows == 3


def test_disassemble():
    words = [encode(Instr(Opcode.LOAD, mem=Mem.WSP, addr=2, rows=4)),
             encode(Instr(Opcode.PRELOAD, wsp_addr=2, k_rows=4)),
             encode(Instr(Opcode.END))]
    text = disassemble(words)
    assert text.splitlines() == ["0000: LOAD mem=wsp addr=2 rows=4",
                                 "0001: PRELOAD wsp_addr=2 k_rows=4 sel_addr=0 sel_en=0",
                                 "0002: END"]
    assert [encode(assemble(line.split(": ", 1)[1])) for line in text.splitlines()] == words


_CFGS = [CORE_PRESETS["tiny-2x2"], CORE_PRESETS["ice40-4x4"], CORE_PRESETS["ulx3s-8x8"],
         CoreConfig(array=ArrayConfig(rows=3, cols=5, pe=PEConfig(acc_bits=37))),
         CoreConfig(array=ArrayConfig(rows=2, cols=3, pe=PEConfig(mult="axbxp:mode=composable",
                                                                  acc_bits=24)))]


@pytest.mark.parametrize("cfg", _CFGS, ids=lambda c: f"{c.array.rows}x{c.array.cols}")
@pytest.mark.parametrize("mem", ["wsp", "asp", "acc", "qsp"])
def test_pack_unpack_rows(cfg, mem):
    g = torch.Generator().manual_seed(3)
    elems = isa.row_elements(mem, cfg)
    n = 5
    cols = []
    for w, s in elems:
        lo, hi = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if s else (0, (1 << w) - 1)
        c = torch.randint(0, 1 << 62, (n,), generator=g) % (hi - lo + 1) + lo
        c[0], c[1] = lo, hi
        cols.append(c)
    rows = torch.stack(cols, 1)
    words = isa.pack_rows(mem, rows, cfg)
    assert len(words) == n * cfg.row_words(mem)
    assert all(0 <= w < 1 << 32 for w in words)
    assert torch.equal(isa.unpack_rows(mem, words, cfg), rows)
    # element e of a row sits at bits [e·w, e·w + w) of the little-endian word sequence
    v = sum(wd << (32 * i) for i, wd in enumerate(words[:cfg.row_words(mem)]))
    lsb = 0
    for e, (w, s) in enumerate(elems):
        x = (v >> lsb) & ((1 << w) - 1)
        assert x == int(rows[0, e]) & ((1 << w) - 1)
        lsb += w
    assert v >> lsb == 0  # zero padding


def test_pack_rows_errors():
    cfg = CORE_PRESETS["tiny-2x2"]
    with pytest.raises(ValueError, match="asp element 1 must lie in"):
        isa.pack_rows("asp", torch.tensor([[0, 256]]), cfg)
    with pytest.raises(ValueError, match="need shape"):
        isa.pack_rows(Mem.WSP, torch.zeros(2, 3, dtype=torch.int64), cfg)
    with pytest.raises(ValueError, match="counter bank has no rows"):
        isa.pack_rows(Mem.CNT, torch.zeros(1, 1, dtype=torch.int64), cfg)
    with pytest.raises(ValueError, match="not a multiple"):
        isa.unpack_rows("qsp", [1], cfg)
    with pytest.raises(ValueError, match="mem must be one of"):
        isa.pack_rows("dram", [[1]], cfg)


def test_counters():
    assert [n for n, _ in isa.COUNTERS] == ["cycles", "busy", "stall_in", "stall_out",
                                            "stall_dep", "macs", "overflow"]
    vals = {"cycles": 2**32 - 1, "busy": 5, "macs": 2**47 + 3, "overflow": 1}
    words = isa.pack_counters(vals)
    assert len(words) == len(isa.COUNTERS) * isa.COUNTER_WORDS
    back = isa.unpack_counters(words)
    assert back["cycles"] == 2**32 - 1 and back["macs"] == 2**47 + 3 and back["stall_in"] == 0
    part = isa.pack_counters(vals, first=isa.counter_index("macs"), count=2)
    assert isa.unpack_counters(part, first=5) == {"macs": 2**47 + 3, "overflow": 1}
    with pytest.raises(ValueError, match="unknown counter"):
        isa.counter_index("ipc")
    with pytest.raises(ValueError, match="exceeds the bank"):
        isa.unpack_counters([0] * 4, first=6)


def test_doctests():
    assert doctest.testmod(importlib.import_module("mixpe.sw.isa")).failed == 0
