"""Invalid parameters raise ValueError naming the parameter and the allowed range."""

from __future__ import annotations

import pytest
from mixpe.sw.mult import multiplier, replace
from mixpe.sw.mult.axbxp import AxBxPMultiplier
from mixpe.sw.mult.exact import ExactMultiplier
from mixpe.sw.mult.lutna import LutNaMultiplier
from mixpe.sw.mult.roup import RoupMultiplier
from mixpe.sw.spec import SpecError

BAD = [
    # exact
    ("exact:n=0", r"exact: n=0 is out of range; allowed: n in \[1, 32\]"),
    ("exact:n=33", r"n in \[1, 32\]"),
    ("exact:nb=40", r"nb in \[0, 32\]"),
    ("exact:n=32,nb=32,sa=0,sb=0", r"n \+ nb <= 63"),
    ("exact:sa=2", r"key 'sa' must be 0 or 1"),
    # axbxp
    ("axbxp:k=3", r"k=3 does not divide n=8; allowed: k in \{1, 2, 4, 8\}"),
    ("axbxp:k=9", r"k=9 .*k in \[1, 8\]"),
    ("axbxp:l=5", r"l=5 .*l in \[0, 4\]"),
    ("axbxp:k=4,l=3", r"l in \[0, 2\]"),
    ("axbxp:select=random", r"unknown select='random'; allowed: select in \{dynamic, static\}"),
    ("axbxp:mode=fused", r"mode in \{fixed, composable\}"),
    ("axbxp:out=sum", r"out in \{dot, lanes\}"),
    ("axbxp:out=lanes", r"out='lanes' needs mode=composable"),
    ("axbxp:mode=composable,l=2", r"l=2 .*mode=composable; allowed: l in \[0, 0\]"),
    ("axbxp:mode=composable,l=4", r"l in \[0, 0\]"),
    ("axbxp:mode=composable,round=1", r"round=1 .*mode=composable"),
    ("axbxp:n=12,k=4,mode=composable", r"n/k=3 .*power of two"),
    ("axbxp:n=32,sa=0,sb=0", r"n in \[1, 31\]"),
    ("axbxp:round=2", r"key 'round' must be 0 or 1"),
    # roup
    ("roup:p=5", r"roup: p=5 is out of range; allowed: p in \[0, 4\] \(p <= n/2"),
    ("roup:n=12,p=7", r"p in \[0, 6\]"),
    ("roup:n=7", r"n=7 is odd; allowed: n even in \[2, 32\]"),
    ("roup:n=34", r"n in \[2, 32\]"),
    ("roup:n=32,signed=0", r"n in \[2, 30\]"),
    ("roup:r=9", r"r=9 .*r in \[0, 8\]"),
    ("roup:r=-1", r"r in \[0, 8\]"),
    ("roup:round=matrix", r"round in \{operand, pp_row\}"),
    ("roup:booth=w", r"booth in \{b, a\}"),
    # lutna
    ("lutna:c=3", r"c=3 does not divide n=8; allowed: c in \{1, 2, 4, 8\}"),
    ("lutna:nb=8", r"c=4 does not divide nb-1=7; allowed: c in \{1\}"),
    ("lutna:c=9", r"c in \[1, 8\]"),
    ("lutna:nb=1", r"nb in \[2, 32\]"),
    ("lutna:split=weight", r"split in \{both, act\}"),
    ("lutna:drop=2.0", r"drop term 2\.0 is out of range; allowed: p in \[0, 1\], q in \[0, 1\]"),
    ("lutna:split=act,drop=0.1", r"q in \[0, 0\] \(split=act: q = 0\)"),
    ("lutna:tau=3", r"tau=3 .*tau in \[0, 2\]"),
    ("lutna:trunc=9", r"trunc=9 .*trunc in \[0, 8\]"),
    ("lutna:split=act,trunc=13", r"trunc in \[0, 12\]"),
    # spec syntax
    ("lutna:drop=0", r"drop term '0' is not of the form p\.q"),
    ("roup:q=1", r"unknown key 'q'"),
    ("roup:p=x", r"key 'p' must be an integer"),
    ("nosuch:n=8", r"unknown mult family 'nosuch'"),
]


@pytest.mark.parametrize("spec, message", BAD)
def test_bad_spec(spec, message):
    with pytest.raises(ValueError, match=message):
        multiplier(spec)


def test_spec_syntax_errors_are_spec_errors():
    with pytest.raises(SpecError):
        multiplier("lutna:drop=a.b")


@pytest.mark.parametrize("cls, kwargs, message", [
    (ExactMultiplier, {"n": 8.0}, r"n=8\.0 is out of range"),
    (ExactMultiplier, {"n": True}, r"n=True is out of range"),
    (ExactMultiplier, {"sa": 2}, r"sa=2 is out of range; allowed: sa in \{0, 1\}"),
    (AxBxPMultiplier, {"round": 2}, r"round in \{0, 1\}"),
    (AxBxPMultiplier, {"k": "2"}, r"k='2' is out of range"),
    (RoupMultiplier, {"signed": "yes"}, r"signed in \{0, 1\}"),
    (LutNaMultiplier, {"drop": [1]}, r"drop=\[1\] must be a sequence of \(p, q\) terms"),
])
def test_bad_constructor_arguments(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_replace_revalidates():
    with pytest.raises(ValueError, match="p in"):
        replace(multiplier("roup"), p=6)


def test_operands_out_of_range():
    with pytest.raises(ValueError, match=r"roup: operand a must lie in \[-128, 127\], got 128"):
        multiplier("roup").mul(128, 1)
    with pytest.raises(ValueError, match=r"lutna: operand b must lie in \[-255, 255\]"):
        multiplier("lutna").mul(1, -256)


def test_canonical_specs_round_trip():
    for spec in ["exact:n=12,nb=10,sb=0", "axbxp:n=16,k=4,l=2,select=static,round=1",
                 "roup:n=10,p=2,r=3,round=pp_row,booth=a,signed=0",
                 "lutna:n=12,nb=13,c=6,split=act,drop=0.0+1.0,tau=1,trunc=2"]:
        assert multiplier(spec).spec == spec
    # drop terms are normalised: sorted, without duplicates
    assert multiplier("lutna:drop=1.1+0.0+1.1").spec == "lutna:drop=0.0+1.1"
    assert LutNaMultiplier(drop=[[1, 0], (0, 0)]).drop == ((0, 0), (1, 0))
    assert ExactMultiplier(sa=1) == ExactMultiplier()
