"""ResNet-8 (CIFAR-style topology, width 8 for the digits): residual adds and BN folding
through the whole flow, bit-exact on the core model."""

import dataclasses

import pytest
from mixpe.sw.core_config import CORE_PRESETS
from mixpe.sw.data import load_digits
from mixpe.sw.model import (
    CoreModelExecutor,
    ReferenceExecutor,
    compare,
    import_model,
    load_config,
    quantize,
)
from mixpe.sw.models import accuracy, trained_model

BOARD = CORE_PRESETS["ulx3s-8x8"]
ROUP_CORE = dataclasses.replace(BOARD, array=dataclasses.replace(
    BOARD.array, variants=("roup:p=1,r=4",)))


@pytest.fixture(scope="module")
def setup():
    d = load_digits()
    m = trained_model("resnet8", progress=False)  # ~20 s the first time, then cached
    return m, import_model(m, d.x_train[:2]), d


@pytest.mark.parametrize("config, core", [("int8", BOARD), ("ant4-roup", ROUP_CORE)])
def test_resnet8_bit_exact(setup, config, core):
    m, g, d = setup
    assert [n.op for n in g.nodes].count("add") == 3
    ig = quantize(g, load_config(config), d.x_train)
    adds = [n for n in ig.nodes if n.op == "add"]
    assert all(n.relu and n.lo == 0 for n in adds)
    res = compare(m, ig, [ReferenceExecutor(), CoreModelExecutor(core)], d.x_test[:3],
                  d.y_test[:3])
    assert res.bit_exact, res.first_mismatch
    assert len(res.cycles["core-model"]) == 10  # 9 convs + fc on the core


def test_resnet8_accuracy(setup):
    m, g, d = setup
    assert accuracy(m, d.x_test, d.y_test) >= 0.95
    ig = quantize(g, load_config("int8"), d.x_train)
    out, _ = ig.run(d.x_test, ReferenceExecutor(), record=False)
    assert float((out.argmax(1) == d.y_test).float().mean()) >= 0.94
