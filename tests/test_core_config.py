"""CoreConfig and its parts: validation, presets, JSON round trip, hash."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json

import pytest
from mixpe.sw.core_config import (
    CORE_PRESETS,
    DEFAULT_CORE,
    ArrayConfig,
    CoreConfig,
    HostConfig,
    MemoryConfig,
)
from mixpe.sw.pe import PEConfig


@pytest.mark.parametrize("name", sorted(CORE_PRESETS))
def test_preset_round_trip_and_hash(name):
    cfg = CORE_PRESETS[name]
    text = cfg.to_json()
    assert CoreConfig.from_json(text) == cfg
    assert CoreConfig.from_json(text).hash == cfg.hash
    assert json.loads(text)["array"]["pe"]["mult"] == cfg.array.pe.mult
    assert len(cfg.hash) == 64 and int(cfg.hash, 16) >= 0
    assert cfg.hash32 == int(cfg.hash[:8], 16)


def test_preset_names_and_shapes():
    assert set(CORE_PRESETS) == {"tiny-2x2", "ice40-4x4", "ulx3s-8x8", "ulx3s-8x8-mixed"}
    assert (CORE_PRESETS["tiny-2x2"].array.rows, CORE_PRESETS["tiny-2x2"].array.cols) == (2, 2)
    ice = CORE_PRESETS["ice40-4x4"]
    assert (ice.array.rows, ice.array.cols) == (4, 4)
    assert ice.array.pe.mult == "exact" and 20 <= ice.array.acc_bits <= 24
    # iCE40UP5K: 30 EBRs of 4 Kbit; the memories (rounded up to whole 16-bit-wide EBR
    # columns of 256 rows) must leave room
    ebrs = 0
    for mem in ("wsp", "asp", "acc", "qsp", "imem"):
        depth, width = ice.memory.depth(mem), ice.row_bits(mem)
        ebrs += -(-width // 16) * -(-depth // 256)
    assert ebrs <= 30
    ul = CORE_PRESETS["ulx3s-8x8"]
    assert (ul.array.rows, ul.array.cols) == (8, 8) and ul.array.pe.pipeline >= 1
    assert sum(ul.memory_bits().values()) < 208 * 18 * 1024


def test_hash_changes_with_any_field():
    a = DEFAULT_CORE
    b = dataclasses.replace(a, memory=dataclasses.replace(a.memory, asp_depth=512))
    c = dataclasses.replace(a, array=dataclasses.replace(a.array, dataflow="os"))
    assert len({a.hash, b.hash, c.hash}) == 3
    assert hash(a) == hash(CoreConfig.from_json(a.to_json()))  # frozen, hashable


def test_dicts_are_converted():
    cfg = CoreConfig(array={"rows": 2, "cols": 3, "pe": {"acc_bits": 12}},
                     memory={"wsp_depth": 8}, host={"baud": 9600})
    assert cfg.array.pe == PEConfig(acc_bits=12)
    assert cfg.memory.wsp_depth == 8 and cfg.host.baud == 9600


def test_variants_canonical_and_derived():
    arr = ArrayConfig(rows=2, cols=2, variants=("roup:n=8,p=1,r=4", "axbxp:l=2"))
    assert arr.variants == ("roup:p=1,r=4", "axbxp:l=2")
    assert arr.n_variants == 3 and arr.sel_bits == 2
    assert [p.mult for p in arr.pe_configs] == ["exact", "roup:p=1,r=4", "axbxp:l=2"]
    assert ArrayConfig.from_dict(arr.to_dict()) == arr


def test_composable_lanes_and_bits():
    arr = ArrayConfig(rows=2, cols=2, pe=PEConfig(mult="axbxp:mode=composable"))
    assert arr.modes == (2, 4, 8)
    assert [arr.lanes(m) for m in range(3)] == [16, 4, 1]
    assert arr.a_bits == 32
    cfg = CoreConfig(array=arr)
    assert cfg.row_bits("asp") == 64 and cfg.row_words("asp") == 2


@pytest.mark.parametrize("kwargs, name", [
    (dict(rows=0), "rows"),
    (dict(cols=65), "cols"),
    (dict(rows=True), "rows"),
    (dict(dataflow="xs"), "dataflow"),
    (dict(pe="exact"), "pe"),
    (dict(pe={"acc_bits": 1}), "acc_bits"),
    (dict(pe={"bogus": 1}), "bogus"),
    (dict(variants="roup"), "variants"),
    (dict(variants=("exact",) * 8), "variants"),
    (dict(variants=("exact:n=4",)), "variants[0]"),
    (dict(variants=("nope:x=1",)), "variants[0]"),
])
def test_array_validation(kwargs, name):
    with pytest.raises(ValueError, match=name.replace("[", r"\[").replace("]", r"\]")):
        ArrayConfig(**kwargs)


@pytest.mark.parametrize("name, value", [
    ("wsp_depth", 1), ("asp_depth", 4097), ("acc_depth", 0), ("qsp_depth", "8"),
    ("imem_depth", 70000),
])
def test_memory_validation(name, value):
    with pytest.raises(ValueError, match=f"{name} must be an integer in"):
        MemoryConfig(**{name: value})


@pytest.mark.parametrize("kwargs, name", [
    (dict(baud=0), "baud"),
    (dict(clk_hz=10), "clk_hz"),
    (dict(sim_clocks_per_bit=1), "sim_clocks_per_bit"),
    (dict(baud=6_000_000, clk_hz=12_000_000), "baud"),
])
def test_host_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HostConfig(**kwargs)


def test_core_validation_and_json_errors():
    with pytest.raises(ValueError, match="array must be an ArrayConfig"):
        CoreConfig(array=4)
    with pytest.raises(ValueError, match="unknown core config keys: extra"):
        CoreConfig.from_json('{"extra": 1}')
    with pytest.raises(ValueError, match="unknown memory keys: foo"):
        CoreConfig.from_json('{"memory": {"foo": 1}}')
    with pytest.raises(ValueError, match="core config JSON"):
        CoreConfig.from_json("{")
    with pytest.raises(ValueError, match="mem must be one of"):
        DEFAULT_CORE.row_bits("dram")


def test_row_bits_table():
    cfg = CoreConfig(array=ArrayConfig(rows=3, cols=5, pe=PEConfig(acc_bits=20)))
    assert cfg.row_bits("wsp") == 40 and cfg.row_bits("asp") == 24
    assert cfg.row_bits("acc") == 100 and cfg.row_words("acc") == 4
    assert cfg.row_bits("qsp") == 20 + 32 + 6 and cfg.row_bits("imem") == 64


def test_doctests():
    assert doctest.testmod(importlib.import_module("mixpe.sw.core_config")).failed == 0
