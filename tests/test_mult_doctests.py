"""The doctest examples of the multiplier, metrics and CLI modules."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["mixpe.sw.mult.base", "mixpe.sw.mult.exact", "mixpe.sw.mult.axbxp",
           "mixpe.sw.mult.roup", "mixpe.sw.mult.lutna", "mixpe.sw.mult.table",
           "mixpe.sw.mult.catalog", "mixpe.sw.metrics", "mixpe.sw.cmd_mult"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
