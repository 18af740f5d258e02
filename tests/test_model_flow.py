"""The model flow end to end on the digits: accuracy floors, reference vs core model
bit-exact for several quantization configs, integer host ops, comparison reports."""

import dataclasses

import pytest
import torch
from mixpe.sw import emulate
from mixpe.sw.core_config import CORE_PRESETS
from mixpe.sw.data import load_digits
from mixpe.sw.model import (
    CoreModelExecutor,
    QuantConfig,
    ReferenceExecutor,
    compare,
    import_model,
    load_config,
    quantize,
    resolve_variants,
)
from mixpe.sw.model.quantize import IntNode, host_op
from mixpe.sw.models import accuracy, trained_model
from mixpe.sw.mult import multiplier

BOARD = CORE_PRESETS["ulx3s-8x8"]
# the board core plus a ROUP variant (plain int8 ports): fast to model
ROUP_CORE = dataclasses.replace(BOARD, array=dataclasses.replace(
    BOARD.array, variants=("roup:p=1,r=4",)))


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def model():
    return trained_model("digits-cnn", progress=False)


@pytest.fixture(scope="module")
def graph(model, digits):
    return import_model(model, digits.x_train[:2])


def _int_acc(ig, d):
    out, _ = ig.run(d.x_test, ReferenceExecutor(), record=False)
    return float((out.argmax(1) == d.y_test).float().mean())


def test_accuracy_floors(model, graph, digits):
    assert accuracy(model, digits.x_test, digits.y_test) >= 0.95
    ig = quantize(graph, load_config("int8"), digits.x_train)
    assert _int_acc(ig, digits) >= 0.94
    assert _int_acc(quantize(graph, load_config("ant4-roup"), digits.x_train), digits) >= 0.9


# (config, core, images): >= 3 configs, bit-exact on the core's golden model
PER_KERNEL = """
name = "per-kernel-flint"
[defaults]
weight_bits = 8
[layers.conv2]
weight_bits = 4
weight_types = ["flint"]
[layers.fc]
mult = [%s]
""" % ", ".join("[" + ", ".join('"roup:p=1,r=4"' if (o + i) % 3 == 0 else '"exact"'
                                for i in range(64)) + "]" for o in range(10))


@pytest.mark.parametrize("config, core, n_img", [
    ("int8", BOARD, 24),
    ("ant4-roup", ROUP_CORE, 12),
    ("mixed", ROUP_CORE, 12),
    (PER_KERNEL, CORE_PRESETS["ulx3s-8x8-mixed"], 2),
])
def test_core_model_bit_exact(config, core, n_img, model, graph, digits):
    cfg = QuantConfig.loads(config) if "\n" in config else load_config(config)
    ig = quantize(graph, cfg, digits.x_train)
    x, y = digits.x_test[:n_img], digits.y_test[:n_img]
    res = compare(model, ig, [ReferenceExecutor(), CoreModelExecutor(core)], x, y)
    assert res.first_mismatch["core-model"] is None, res.first_mismatch
    assert res.bit_exact
    assert all(v == 1.0 for v in res.match["core-model"].values())
    assert set(res.match["core-model"]) == {n.name for n in ig.nodes}
    assert res.accuracy["reference"] == res.accuracy["core-model"]
    assert set(res.cycles["core-model"]) == {"conv1", "conv2", "fc"}
    assert all(c > 0 for c in res.cycles["core-model"].values())
    if config == PER_KERNEL:
        node = ig["conv2"]
        assert node.keys == (("exact", "flint:signed=1"),)
        fc = ig["fc"]
        assert fc.key_map is not None and fc.key_map.shape == (10, 64)
        # the flint layer runs on the flint4 format variant, fc on exact + ROUP variants
        arr = core.array
        assert resolve_variants(node, core) == [arr.variant_index(
            mult="exact", a_format="int:bits=8,signed=1", b_format="flint:signed=1")]
        assert sorted(resolve_variants(fc, core)) == [0, arr.variant_index(mult="roup:p=1,r=4")]


def test_missing_variant_names_layer(graph, digits):
    ig = quantize(graph, load_config("ant4-roup"), digits.x_train)
    with pytest.raises(ValueError, match=r"layer fc \(fc\): the core has no multiplier "
                                         r"variant computing roup:p=1,r=4"):
        ig.run(digits.x_test[:2], CoreModelExecutor(BOARD))


def test_acc_mismatch_error(graph, digits):
    cfg = QuantConfig.loads("[defaults]\noverflow = 'wrap'\n")
    ig = quantize(graph, cfg, digits.x_train)
    with pytest.raises(ValueError, match=r"layer conv1: the graph accumulates in 32 bits "
                                         r"\(wrap\); the core in 32 bits \(saturate\)"):
        ig.run(digits.x_test[:2], CoreModelExecutor(BOARD))


def test_mixed_reference_path_independent(graph, digits):
    """The per-product path of the reference equals emulate.conv2d when every product of the
    layer is in fact exact (two keys, both exact)."""
    cfg = QuantConfig.loads("[layers.conv2]\nweight_bits = [4, 8, 4, 8, 4, 8, 4, 8, 4, 8, 4, 8,"
                            " 4, 8, 4, 8]\n")
    ig = quantize(graph, cfg, digits.x_train)
    n = ig["conv2"]
    assert n.key_map is not None and len(n.keys) == 2
    x = torch.randint(0, 128, (3, 8, 4, 4))
    acc = ReferenceExecutor().accumulate(n, x)
    want = emulate.conv2d(x, n.w, multiplier("exact"), padding=1, acc_bits=32,
                          overflow="saturate")
    assert torch.equal(acc, want)


def test_host_ops():
    avg = IntNode("p", "avgpool2d", ["x"], attrs=dict(kernel=(2, 2), stride=(2, 2)))
    x = torch.tensor([[[[1, 2], [2, 1]], [[-1, -2], [-2, -1]]]])  # sums 6, -6 over 4
    assert host_op(avg, [x]).reshape(-1).tolist() == [2, -1]      # 1.5 → 2, -1.5 → -1
    mx = IntNode("m", "maxpool2d", ["x"], attrs=dict(kernel=(2, 2), stride=(2, 2),
                                                      padding=(1, 1)))
    x = -torch.arange(4).reshape(1, 1, 2, 2) - 5
    assert host_op(mx, [x]).reshape(-1).tolist() == [-5, -6, -7, -8]
    add = IntNode("a", "add", ["x", "y"], attrs=dict(m=(1 << 19, 3 << 19), shift=20),
                  relu=True, lo=0, hi=127)
    a, b = torch.tensor([3, 100, -50]), torch.tensor([1, 100, 10])
    # (3·0.5 + 1·1.5) = 3; (50 + 150) clamps to 127; (-25 + 15) = -10 → ReLU 0
    assert host_op(add, [a, b]).tolist() == [3, 127, 0]


def test_compare_reports_first_mismatch(graph, digits):
    ig = quantize(graph, load_config("int8"), digits.x_train)

    class Broken(ReferenceExecutor):
        name = "broken"

        def compute(self, n, x):
            y = super().compute(n, x)
            if n.name == "conv2":
                y = y.clone()
                y[0, 3, 1, 2] += 1
            return y

    res = compare(None, ig, [ReferenceExecutor(), Broken()], digits.x_test[:4])
    fm = res.first_mismatch["broken"]
    assert fm["layer"] == "conv2" and fm["index"] == [0, 3, 1, 2]
    assert fm["broken"] == fm["reference"] + 1
    assert not res.bit_exact
    assert res.match["broken"]["conv1"] == 1.0 and res.match["broken"]["conv2"] < 1.0
    assert res.to_dict()["bit_exact"] is False
