"""The model flow on other cores and through the driver: tiling to small scratchpads,
segmented programs, overflow behaviour, the AcceleratorExecutor over the driver."""

import pytest
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
)
from mixpe.sw.models import trained_model

BOARD = CORE_PRESETS["ulx3s-8x8"]


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def model():
    return trained_model("digits-cnn", progress=False)


@pytest.fixture(scope="module")
def graph(model, digits):
    return import_model(model, digits.x_train[:2])


def test_accelerator_executor_through_driver(model, graph, digits):
    """The driver (model transport of the board core) runs the lowered programs."""
    driver = pytest.importorskip("mixpe.sw.driver")
    from mixpe.sw.model import AcceleratorExecutor

    ig = quantize(graph, load_config("int8"), digits.x_train)
    acc = driver.connect("model://ulx3s-8x8", config=BOARD)
    ex = AcceleratorExecutor(acc)
    assert ex.cfg == BOARD
    res = compare(model, ig, [ReferenceExecutor(), ex], digits.x_test[:4], digits.y_test[:4])
    assert res.bit_exact and res.first_mismatch["accelerator"] is None
    assert set(ex.programs) == {"conv1", "conv2", "fc"}
    assert all(c > 0 for c in res.cycles["accelerator"].values())


@pytest.mark.parametrize("core, toml", [
    ("ice40-4x4", "[defaults]\nacc_bits = 20\n"),                      # 20-bit saturating
    ("tiny-2x2", "[defaults]\nacc_bits = 16\noverflow = 'wrap'\n"),     # wraps, segments
])
def test_small_cores_tiled(core, toml, graph, digits):
    """Layers far larger than the scratchpads / imem: tiled (and split into segments) and
    still bit-exact, overflow behaviour included."""
    cfg = CORE_PRESETS[core]
    ig = quantize(graph, QuantConfig.loads(toml), digits.x_train)
    ex = CoreModelExecutor(cfg)
    res = compare(None, ig, [ReferenceExecutor(), ex], digits.x_test[:2])
    assert res.bit_exact, res.first_mismatch
    conv2 = ex.programs["conv2"]
    assert conv2.info["mapping"] == ["im2col"] and conv2.info["k_tiles"] > 1
    if core == "tiny-2x2":
        assert len(conv2.instructions) > cfg.memory.imem_depth  # ran as segments


def test_run_compare_api_batches():
    """The CLI entry point: batches aggregate into one report (text and JSON)."""
    import json

    from mixpe.sw.model import format_comparison, run_compare

    r = run_compare(config="ant4-roup", core="ulx3s-8x8-mixed", images=6, batch=4,
                    progress=False)
    assert r.images == 6 and r.bit_exact
    assert r.meta == dict(model="digits-cnn", config="ant4-roup", dataset="digits",
                          core="ulx3s-8x8-mixed", executor="core-model")
    assert set(r.cycles["core-model"]) == {"conv1", "conv2", "fc"}
    d = json.loads(json.dumps(r.to_dict()))
    assert d["bit_exact"] is True and d["match"]["core-model"]["fc"] == 1.0
    text = format_comparison(r)
    assert "bit-exact" in text and "core-model accuracy" in text
    with pytest.raises(ValueError, match="core must be a CoreConfig or one of"):
        run_compare(core="nope", progress=False)
