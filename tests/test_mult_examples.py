"""The seed spec's worked examples as literal tests (Ax-BxP §1.4, LUT-NA §3.4, ROUP §4.6)."""

from __future__ import annotations

import pytest
from mixpe.sw.mult import multiplier
from mixpe.sw.mult.roup import booth_digits
from naive_models import naive_axbxp, naive_lutna, naive_roup

# §1.4: x, w, (N, K, L), select, Ax-BxP product, exact product
AXBXP_TABLE = [
    (109, 23, (8, 2, 2), "dynamic", 1920, 2507),
    (109, 23, (8, 2, 3), "dynamic", 2484, 2507),
    (109, 23, (8, 4, 1), "dynamic", 1536, 2507),
    (109, -23, (8, 2, 2), "dynamic", -1920, -2507),
    (109, 23, (8, 2, 2), "static", 1536, 2507),
    (5, 3, (8, 2, 2), "dynamic", 15, 15),
    (200, 77, (8, 2, 2), "dynamic", 12288, 15400),
]


@pytest.mark.parametrize("x, w, nkl, select, approx, exact", AXBXP_TABLE)
def test_axbxp_worked_table(x, w, nkl, select, approx, exact):
    n, k, l = nkl
    signed = x < 128  # 200 needs an unsigned activation port
    m = multiplier(f"axbxp:n={n},k={k},l={l},select={select},sa={int(signed)}")
    assert m.mul(x, w).item() == approx
    assert naive_axbxp(x, w, n=n, k=k, l=l, select=select) == approx
    assert x * w == exact


def test_axbxp_worked_table_row1_blocks():
    # kept x blocks (3,1),(2,2) -> 96; kept w blocks (2,1),(1,1) -> 20
    m = multiplier("axbxp:l=2")
    assert m.approximate([109, 23]).tolist() == [96, 20]


# §4.6: A, B, Booth digits, exact, (1,0), (2,0), (0,4) RA/RPP, (1,4) RA/RPP, (2,6) RA/RPP
ROUP_TABLE = [
    (93, -45, [-1, 1, 1, -1], -4185, -4092, -4464, (-4320, -4192), (-4224, -4096),
     (-3072, -4480)),
    (127, 127, [-1, 0, 0, 2], 16129, 16256, 16256, (16256, 16128), (16384, 16256),
     (16384, 16256)),
    (-128, 127, [-1, 0, 0, 2], -16256, -16384, -16384, (-16256, -16256), (-16384, -16384),
     (-16384, -16384)),
    (57, 100, [0, 1, -2, 2], 5700, 5700, 5472, (6400, 5696), (6400, 5696), (6144, 5504)),
    (-77, -3, [1, -1, 0, 0], 231, 308, 0, (240, 224), (320, 304), (0, 0)),
]


def _roup_cells(row):
    a, b, _, exact, p10, p20, r04, r14, r26 = row
    cells = [((0, 0), "operand", exact), ((1, 0), "operand", p10), ((2, 0), "operand", p20),
             ((1, 0), "pp_row", p10), ((2, 0), "pp_row", p20)]
    for pr, (ra, rpp) in (((0, 4), r04), ((1, 4), r14), ((2, 6), r26)):
        cells += [(pr, "operand", ra), (pr, "pp_row", rpp)]
    return [(a, b, p, r, rnd, want) for (p, r), rnd, want in cells]


@pytest.mark.parametrize("a, b, p, r, rnd, want",
                         [c for row in ROUP_TABLE for c in _roup_cells(row)])
def test_roup_worked_table(a, b, p, r, rnd, want):
    m = multiplier(f"roup:n=8,p={p},r={r},round={rnd}")
    assert m.mul(a, b).item() == want
    assert naive_roup(a, b, n=8, p=p, r=r, round=rnd) == want


@pytest.mark.parametrize("row", ROUP_TABLE)
def test_roup_worked_table_booth_digits(row):
    a, b, digits, exact = row[:4]
    assert [int(d) for d in booth_digits(b, 8)] == digits
    assert a * b == exact
    assert sum(d * 4**j for j, d in enumerate(digits)) == b


def test_roup_perforation_hand_check():
    # §4.6: B_1 = floor(-45/4)*4 + b_1*4 = -48 + 4 = -44
    assert multiplier("roup:p=1").perforate(-45).item() == -44


def test_lutna_worked_example():
    a, w = 183, -94
    assert [multiplier(s).mul(a, w).item() for s in ("lutna:c=4", "lutna:c=4,split=act")] \
        == [-17202, -17202]
    assert naive_lutna(a, w, n=8, nb=9, c=4) == -17202
    assert naive_lutna(a, w, n=8, nb=9, c=4, split="act") == -17202
    # A-LUT-NA dropping the (0, 0) term: -(17202 - LUT[7][14] = 98)
    assert multiplier("lutna:c=4,drop=0.0").mul(a, w).item() == -17104
    assert naive_lutna(a, w, n=8, nb=9, c=4, drop=[(0, 0)]) == -17104
    # tau=1 keeps p+q >= 1: the same single dropped term for two chunks per operand
    assert multiplier("lutna:tau=1").mul(a, w).item() == -17104


def test_lutna_worked_example_lut_entries():
    # LUT[11][5] = 55, LUT[11][14] = 154, LUT[7][5] = 35, LUT[7][14] = 98
    assert (55 << 8) + ((154 + 35) << 4) + 98 == 17202
    # programmable variant: LUT_w[11] << 4 + LUT_w[7] = 1034*16 + 658
    assert 94 * 11 * 16 + 94 * 7 == 17202
    # the sign-magnitude code of -94 on the 9-bit port
    m = multiplier("lutna")
    assert m.b_format.encode(-94).item() == 256 + 94
    assert m.mul_codes(183, 256 + 94).item() == -17202


@pytest.mark.parametrize("spec, x, want", [
    ("axbxp:l=2,round=1,sa=0", 46, 48),     # 00 10 11 10: field 1011 + bit 1 -> 1100
    ("axbxp:l=2,round=1,sa=0", 62, 60),     # 00 11 11 10: field 1111 would carry out: saturate
    ("axbxp:l=2,round=1,sa=0", 254, 240),   # 11 11 11 10: saturate at the top
    ("axbxp:l=2,round=1,sa=0", 5, 5),       # nothing dropped, nothing rounded
    ("axbxp:l=2,round=1", -46, -48),        # sign-magnitude: rounds the magnitude
    ("axbxp:l=2,round=1,select=static,sa=0", 23, 16),   # 00 01 | 01 11: bit 3 = 0
    ("axbxp:l=2,round=1,select=static,sa=0", 24, 32),   # 00 01 | 10 00: bit 3 = 1
])
def test_axbxp_rounding_carry_handling(spec, x, want):
    m = multiplier(spec)
    assert m.approximate(x).item() == want
    assert m.mul(x, 1).item() == naive_axbxp(x, 1, n=8, k=2, l=2, select=m.select, round=True)
