"""Number formats composed with a core multiplier (sw/mult/decoded.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from mixpe.sw.formats import FlintFormat, FloatFormat, IntFormat, PotFormat, number_format
from mixpe.sw.mult import Multiplier, OperandFormat, multiplier
from mixpe.sw.mult.decoded import DecodedMultiplier, decoded


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # these tensors are tiny: on the shared 2-core machine torch's thread pool only adds
    # contention (10x slower under load); restore the setting for other modules
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def exact_core(fa, fb):
    """The smallest exact core that holds both formats' mantissas."""
    return multiplier(f"exact:n={fa.m_bits},nb={fb.m_bits},sa={int(fa.m_signed)},"
                      f"sb={int(fb.m_signed)}")


def test_flint_vector_5_8():
    """§5.8: flint4u(1101) · flint4u(1011) = 24 · 14 = (110 · 111) << (2 + 1) = 336."""
    f = number_format("flint:bits=4")
    dm = DecodedMultiplier(f, f, multiplier("exact:n=4"))
    assert dm.mul_codes(0b1101, 0b1011).item() == 336
    assert dm.mul(24, 14).item() == 336
    assert dm.table()[0b1101, 0b1011].item() == 336


PAIRS = [
    (FlintFormat(bits=4), FlintFormat(bits=4)),
    (FlintFormat(bits=4), FlintFormat(bits=4, signed=True)),
    (FlintFormat(bits=5, signed=True), IntFormat(bits=4, signed=True)),
    (IntFormat(bits=4), FlintFormat(bits=6)),
    (PotFormat(bits=4, signed=True), FlintFormat(bits=4, signed=True)),
    (FloatFormat(bits=4), IntFormat(bits=3, signed=True)),
    (FloatFormat(bits=6, e=2, signed=True), PotFormat(bits=3)),
    (FlintFormat(bits=8), FlintFormat(bits=8, signed=True)),
]


@pytest.mark.parametrize("fa,fb", PAIRS, ids=lambda f: f.spec)
def test_exact_core_gives_exact_products(fa, fb):
    for core in (exact_core(fa, fb), multiplier("exact:n=8")):
        if fa.m_bits > 8 or fb.m_bits > 8:
            continue
        dm = DecodedMultiplier(fa, fb, core)
        expect = fa.values()[:, None] * fb.values()[None, :]
        assert torch.equal(dm.table(), expect)
        # mul on values: the grid products, broadcast
        ga, gb = fa.grid(), fb.grid()
        assert torch.equal(dm.mul(ga[:, None], gb[None, :]), ga[:, None] * gb[None, :])
        assert dm.product_range == (int(expect.min()), int(expect.max()))


def test_product_range_flint_times_signed_flint():
    """§5.3: max |product| of unsigned flint4 × signed flint4 is 64 · 16 = 1024."""
    dm = DecodedMultiplier(FlintFormat(bits=4), FlintFormat(bits=4, signed=True),
                           multiplier("exact:n=4"))
    assert dm.product_range == (-1024, 1024)
    assert dm.out_bits == 12


@dataclass(frozen=True)
class DropLsb(Multiplier):
    """A deliberately inexact 4-bit core: clears the LSB of the product."""

    family = "droplsb"

    @property
    def a_format(self):
        return OperandFormat(4, "twos")

    @property
    def b_format(self):
        return OperandFormat(4, "twos")

    @property
    def spec(self):
        return "droplsb"

    def _mul(self, a, b):
        return (a * b) & ~1


def test_approximate_core_acts_on_mantissas():
    fa, fb = FlintFormat(bits=4), FlintFormat(bits=4, signed=True)
    dm = DecodedMultiplier(fa, fb, DropLsb())
    ca, cb = fa.codes()[:, None], fb.codes()[None, :]
    (ma, ea), (mb, eb) = fa.decode(ca), fb.decode(cb)
    assert torch.equal(dm.table(), ((ma * mb) & ~1) << (ea + eb))
    assert not torch.equal(dm.table(), fa.values()[:, None] * fb.values()[None, :])
    assert dm.mul(24, -3).item() == ((6 * -3) & ~1) << 2


def test_spec_and_parser():
    dm = decoded("exact:n=4", "flint", "flint:signed=1")
    assert dm.spec == "exact:n=4 a=flint b=flint:signed=1"
    assert decoded(dm.spec) == dm
    assert str(dm) == dm.spec
    assert dm.core == multiplier("exact:n=4") and dm.a_format == FlintFormat()
    assert hash(dm) == hash(decoded(dm.spec))
    with pytest.raises(AttributeError):
        dm.core = None


@pytest.mark.parametrize(
    "make,words",
    [
        # unsigned flint6 mantissas are 0…31; a signed 4-bit core holds -8…7
        (lambda: decoded("exact:n=4", "flint:bits=6", "int"), ["operand a", "[-8, 7]", "31"]),
        (lambda: decoded("exact:n=4", "int:bits=3", "int:bits=5,signed=1"),
         ["operand b", "[-8, 7]"]),
        (lambda: decoded("exact:n=3,sa=0,sb=0", "int:bits=3", "flint:signed=1"),
         ["operand b", "[0, 7]", "-3"]),
        (lambda: decoded("exact:n=2", "pot:bits=6,signed=1", "pot:bits=6,signed=1"),
         ["2**62"]),
        (lambda: decoded("exact:n=4 a=flint"), ["a=<format spec> b=<format spec>"]),
        (lambda: decoded("exact:n=4", "flint"), ["both"]),
        (lambda: decoded("exact:n=4", "nope:bits=4", "flint"), ["nope"]),
        (lambda: DecodedMultiplier("flint", FlintFormat(), multiplier("exact:n=4")),
         ["a_format", "NumberFormat"]),
        (lambda: DecodedMultiplier(FlintFormat(), FlintFormat(), "exact:n=4"), ["core"]),
        (lambda: decoded("exact:n=4", "flint", "flint").mul(9, 8), ["operand a", "value 9"]),
        (lambda: decoded("exact:n=4", "flint", "flint").mul(8, 80), ["operand b", "value 80"]),
        (lambda: decoded("exact:n=4", "flint", "flint").mul_codes(16, 0), ["code", "[0, 15]"]),
    ],
)
def test_bad_parameters(make, words):
    with pytest.raises(ValueError) as info:
        make()
    for w in words:
        assert w in str(info.value)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(PAIRS[:-1]), st.data())
def test_mul_codes_broadcast_equals_table(pair, data):
    fa, fb = pair
    dm = DecodedMultiplier(fa, fb, exact_core(fa, fb))
    n = data.draw(st.integers(1, 12))
    ca = torch.tensor(data.draw(st.lists(st.integers(0, 2**fa.bits - 1), min_size=n, max_size=n)))
    cb = torch.tensor(data.draw(st.lists(st.integers(0, 2**fb.bits - 1), min_size=n, max_size=n)))
    assert torch.equal(dm.mul_codes(ca, cb), dm.table()[ca, cb])
    assert torch.equal(dm.mul_codes(ca[:, None], cb[None, :]), dm.table()[ca][:, cb])
    assert torch.equal(dm.mul(fa.value(ca), fb.value(cb)), fa.value(ca) * fb.value(cb))
