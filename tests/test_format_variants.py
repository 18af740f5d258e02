"""Per-column number-format variants, reference side: spec parsing, ``ArrayConfig`` folding,
``variant_index``, the code-width rule, compiler checks and the golden model (no Amaranth)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from mixpe.sw import emulate
from mixpe.sw.compiler import compile_conv2d, compile_gemm
from mixpe.sw.core_config import CORE_PRESETS, ArrayConfig, CoreConfig
from mixpe.sw.core_ref import run_program
from mixpe.sw.formats import number_format
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.decoded import DecodedMultiplier
from mixpe.sw.mult.variants import VariantsMultiplier
from mixpe.sw.pe import PEConfig, pe_product, pe_step

MIXED = CORE_PRESETS["ulx3s-8x8-mixed"]
FLINT = "exact:nb=3 a=int:bits=8,signed=1 b=flint:bits=4,signed=1"
INT4 = "exact:nb=4 a=int:bits=8,signed=1 b=int:bits=4,signed=1"
I8 = number_format("int:bits=8,signed=1")
F4 = number_format("flint:bits=4,signed=1")
I4 = number_format("int:bits=4,signed=1")


def small_mixed(rows=2, cols=4, **pe_kw) -> CoreConfig:
    """The variants of the ulx3s mixed preset on a small array with small memories."""
    arr = MIXED.array
    pe = dataclasses.replace(arr.pe, **pe_kw)
    return CoreConfig(array=ArrayConfig(rows=rows, cols=cols, pe=pe, variants=arr.variants),
                      memory=CORE_PRESETS["tiny-2x2"].memory)


# -- the code-port variants unit -----------------------------------------------------------------

def test_code_port_unit_members_and_products():
    spec = "variants:of=exact|" + "|".join(s.replace(",", ";") for s in (FLINT, INT4))
    v = multiplier(spec)
    assert isinstance(v, VariantsMultiplier) and v.code_port
    assert multiplier(v.spec) == v  # canonical round trip
    assert isinstance(v.members[1], DecodedMultiplier) and v.members[1].b_format == F4
    assert (v.a_format.bits, v.b_format.bits) == (8, 8)
    assert v.a_format.encoding == "unsigned"  # the unit's operand values are the port codes
    ca = torch.arange(256)[:, None]
    cb = torch.arange(256)[None, :]
    # variant 0: int8 x int8 (two's complement codes)
    assert torch.equal(v.mul_sel_codes(ca, cb, 0), I8.values()[ca] * I8.values()[cb])
    # variant 1/2: only the low 4 bits of b count (code-width rule)
    assert torch.equal(v.mul_sel_codes(ca, cb, 1), I8.values()[ca] * F4.values()[cb & 15])
    assert torch.equal(v.mul_sel_codes(ca, cb, 2), I8.values()[ca] * I4.values()[cb & 15])
    assert torch.equal(v.table(), v.mul_sel_codes(ca, cb, 0))
    lo, hi = v.product_range
    assert lo == -128 * 127 and hi == 128 * 128
    assert torch.equal(v.mul_sel(ca, cb, 7), v.mul_sel_codes(ca, cb, 2))  # past the last


@pytest.mark.parametrize("of, match", [
    (("exact", "exact:n=4"), "equal operand formats"),  # plain members still must match
    (("exact", "exact:n=4 a=flint b=flint:bits=1"), "of\\[1\\].*bits"),
    (("exact", "exact:nb=2 a=int:bits=8,signed=1 b=flint:bits=4,signed=1"), "mantissas"),
    (("exact", "axbxp:mode=composable a=int:bits=8,signed=1 b=int:bits=8,signed=1"),
     "composable"),
    (("exact", "exact a=int:bits=20,signed=1 b=int:bits=8,signed=1"), "of\\[1\\]"),
])
def test_code_port_unit_rejects(of, match):
    with pytest.raises(ValueError, match=match):
        VariantsMultiplier(of=of)


# -- ArrayConfig ---------------------------------------------------------------------------------

def test_array_variants_canonical_and_folded():
    arr = ArrayConfig(rows=2, cols=2, variants=(
        "exact:n=8,nb=3 a=int:bits=8,signed=1 b=flint:bits=4,signed=1",
        {"mult": "exact:nb=4", "a_format": "int:bits=8,signed=1", "b_format": "int:signed=1"},
        "roup:n=8,p=1,r=4"))
    assert arr.variants == (
        "exact:nb=3 a=int:bits=8,signed=1 b=flint:signed=1",
        "exact:nb=4 a=int:bits=8,signed=1 b=int:signed=1",
        "roup:p=1,r=4")
    assert arr == MIXED.array.__class__(rows=2, cols=2, pe=PEConfig(), variants=arr.variants)
    assert arr.has_format_variants and arr.n_variants == 4 and arr.sel_bits == 2
    assert (arr.a_bits, arr.b_bits) == (8, 8)
    assert [arr.variant_code_bits(i) for i in range(4)] == [(8, 8), (8, 4), (8, 4), (8, 8)]
    pes = arr.pe_configs
    assert pes[1] == PEConfig(mult="exact:nb=3", a_format="int:bits=8,signed=1",
                              b_format="flint:signed=1")
    assert pes[3] == PEConfig(mult="roup:p=1,r=4")
    folded = arr.array_pe
    assert folded.a_format is None and folded.core.code_port
    assert folded.core.of == ("exact", *arr.variants)
    assert ArrayConfig.from_dict(arr.to_dict()) == arr
    cfg = dataclasses.replace(MIXED, array=arr)
    assert CoreConfig.from_json(cfg.to_json()) == cfg and cfg.row_bits("wsp") == 2 * 8


def test_plain_variants_fold_as_before():
    arr = ArrayConfig(rows=2, cols=2, variants=("roup:p=1,r=4",))
    assert not arr.has_format_variants
    assert arr.array_pe.mult == "variants:of=exact|roup:p=1;r=4"
    # a PE with formats: a plain variant replaces the core behind the PE's decoders
    pe = PEConfig(mult="exact:n=4", a_format="flint:bits=4", b_format="int:bits=4,signed=1")
    arr = ArrayConfig(rows=2, cols=2, pe=pe, variants=("axbxp:n=4,l=1",))
    assert arr.array_pe.a_format == "flint" and not arr.has_format_variants
    # ... and a format variant there makes every variant a decoded member
    arr = ArrayConfig(rows=2, cols=2, pe=pe, variants=("axbxp:n=4,l=1", INT4))
    assert arr.has_format_variants and arr.array_pe.a_format is None
    assert arr.array_pe.core.of[:2] == ("exact:n=4 a=flint b=int:signed=1",
                                        "axbxp:n=4,l=1 a=flint b=int:signed=1")
    assert (arr.a_bits, arr.b_bits) == (8, 4)
    # the same formats as the PE spelled out: a plain variant
    arr = ArrayConfig(rows=2, cols=2, pe=pe, variants=(
        "axbxp:n=4,l=1 a=flint:bits=4 b=int:bits=4,signed=1",))
    assert arr.variants == ("axbxp:n=4,l=1",) and not arr.has_format_variants


@pytest.mark.parametrize("variants, match", [
    (("exact a=int:bits=8,signed=1",), "neither a multiplier spec"),
    (({"mult": "exact", "a_format": "int:bits=8"},), "a_format and b_format"),
    (({"mult": "exact", "c_format": "int"},), "a variant dict"),
    (("exact:nb=2 a=int:bits=8,signed=1 b=flint:bits=4,signed=1",), "variants\\[0\\].*mult"),
    (("exact:n=4",), "variants\\[0\\].*own formats"),
    ((5,), "variants\\[0\\]"),
    ((INT4,) * 8, "at most 7"),
])
def test_array_variants_reject(variants, match):
    with pytest.raises(ValueError, match=match):
        ArrayConfig(rows=2, cols=2, variants=variants)


def test_format_variants_need_a_fixed_pe():
    with pytest.raises(ValueError, match="composable"):
        ArrayConfig(rows=2, cols=2, pe=PEConfig(mult="axbxp:mode=composable"), variants=(INT4,))


def test_variant_index():
    arr = MIXED.array
    assert arr.variant_index(mult="exact") == 0
    assert arr.variant_index(mult="exact:n=8,sa=1") == 0  # compared canonically
    assert arr.variant_index(mult="exact", a_format="int:bits=8,signed=1",
                             b_format="flint:signed=1") == 1
    assert arr.variant_index(mult="exact:n=8", a_format="int:signed=1,bits=8",
                             b_format="int:bits=4,signed=1") == 2
    assert arr.variant_index(mult="roup:p=1,r=4") == 3
    with pytest.raises(ValueError, match="available: 0: exact, 1: exact a=int:bits=8,"
                                         "signed=1 b=flint:signed=1, 2: .*3: roup:p=1,r=4"):
        arr.variant_index(mult="exact:nb=4", a_format="int:bits=8,signed=1",
                          b_format="flint:signed=1")
    with pytest.raises(ValueError, match="variant_index: mult"):
        arr.variant_index(mult="nosuch")
    with pytest.raises(ValueError, match="together"):
        arr.variant_index(mult="exact", a_format="int:bits=8")


def test_mixed_preset():
    arr = MIXED.array
    base = CORE_PRESETS["ulx3s-8x8"].array
    assert (arr.rows, arr.cols, arr.pe) == (base.rows, base.cols, base.pe)
    assert arr.pe.pipeline == 1 and MIXED.memory == CORE_PRESETS["ulx3s-8x8"].memory
    fams = {p.b_format and number_format(p.b_format).family for p in arr.pe_configs}
    assert {"flint", "int"} <= fams
    assert any(p.mult.startswith("roup") for p in arr.pe_configs)


# -- PE reference --------------------------------------------------------------------------------

def test_pe_reference_reads_port_codes():
    pe = MIXED.array.array_pe
    assert pe.selectable and pe.port_bits == (8, 8)
    for ca, cb in [(0x80, 0x0F), (0x7F, 0xF6), (5, 0x17)]:
        for sel, (fa, fb, mask) in enumerate([(I8, I8, 255), (I8, F4, 15), (I8, I4, 15)]):
            want = int(fa.values()[ca]) * int(fb.values()[cb & mask])
            assert pe_product(ca, cb, pe, sel=sel).item() == want
            acc, ovf = pe_step(5, False, pe, valid=1, a=ca, b=cb, sel=sel)
            assert (acc, ovf) == (5 + want, False)
    roup = multiplier("roup:p=1,r=4")
    assert pe_product(0x64, 0xB3, pe, sel=3).item() == roup.mul(100, 0xB3 - 256).item()
    with pytest.raises(ValueError, match="code-port"):
        PEConfig(mult=pe.mult, a_format="int:bits=8,signed=1", b_format="int:bits=8,signed=1")


# -- compiler and golden model -------------------------------------------------------------------

def _naive(a, b, vm, cfg):
    """Column by column with each variant's own PE multiplier on decoded values."""
    arr = cfg.array
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.int64)
    for n in range(b.shape[1]):
        pe = arr.pe_configs[int(vm[n])]
        mult = pe.multiplier
        av = mult.a_format.values()[a]
        bv = mult.b_format.values()[b[:, n:n + 1]]
        out[:, n:n + 1] = emulate.matmul(av, bv, mult, acc_bits=arr.acc_bits,
                                         overflow=pe.overflow)
    return out


@pytest.mark.parametrize("shape", [(3, 5, 4), (9, 19, 11)])
def test_gemm_mixed_variants_golden(shape):
    cfg = MIXED if shape[1] > 8 else small_mixed()
    M, K, N = shape
    gen = torch.Generator().manual_seed(sum(shape))
    vm = torch.arange(N) % 4
    a = torch.randint(0, 256, (M, K), generator=gen)
    b = torch.randint(0, 256, (K, N), generator=gen)
    narrow = (vm == 1) | (vm == 2)
    b[:, narrow] &= 15
    prog = compile_gemm(a, b, cfg, variant_map=vm)
    got = prog.outputs(run_program(prog, cfg)[0])
    assert torch.equal(got, _naive(a, b, vm, cfg))
    # the flint columns really use the flint grid (not the int8 values of the codes)
    assert not torch.equal(got[:, narrow], (I8.values()[a] @ I8.values()[b])[:, narrow])


def test_compiler_rejects_codes_wider_than_the_variant():
    cfg = small_mixed()
    a = torch.zeros(2, 3, dtype=torch.int64)
    b = torch.full((3, 4), 16)
    with pytest.raises(ValueError, match="b_codes: variant 1 .* 4-bit weight codes"):
        compile_gemm(a, b, cfg, variant_map=torch.tensor([0, 1, 0, 0]))
    compile_gemm(a, b, cfg, variant_map=torch.tensor([0, 3, 0, 3]))  # 8-bit variants: fine
    w = torch.full((2, 1, 1, 1), 20)
    with pytest.raises(ValueError, match="w_codes: variant 2"):
        compile_conv2d(torch.zeros(1, 1, 2, 2, dtype=torch.int64), w, cfg,
                       variant_map=torch.tensor([0, 2]))


def test_conv_mixed_variants_golden():
    cfg = small_mixed(acc_bits=24, overflow="wrap")
    gen = torch.Generator().manual_seed(7)
    x = torch.randint(0, 256, (1, 3, 4, 4), generator=gen)
    w = torch.randint(0, 16, (4, 3, 2, 2), generator=gen)
    vm = torch.tensor([1, 2, 1, 2])
    prog = compile_conv2d(x, w, cfg, variant_map=vm, padding=1)
    got = prog.outputs(run_program(prog, cfg)[0])
    for oc in range(4):
        mult = cfg.array.pe_configs[int(vm[oc])].multiplier
        want = emulate.conv2d(mult.a_format.values()[x], mult.b_format.values()[w[oc:oc + 1]],
                              mult, padding=1, acc_bits=24)
        assert torch.equal(got[:, oc:oc + 1], want)


@pytest.mark.parametrize("name", ["mixpe.sw.mult.variants", "mixpe.sw.core_config",
                                  "mixpe.sw.pe"])
def test_doctests(name):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
