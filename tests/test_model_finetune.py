"""Fine-tuning: QAT with a straight-through estimator and the approximation-aware forward."""

import pytest
import torch
from mixpe.sw.data import load_digits
from mixpe.sw.model import QuantConfig, ReferenceExecutor, import_model, load_config, quantize
from mixpe.sw.model.finetune import fake_quant_forward
from mixpe.sw.models import trained_model


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def model():
    return trained_model("digits-cnn", progress=False)


def _int_acc(ig, d):
    out, _ = ig.run(d.x_test, ReferenceExecutor(), record=False)
    return float((out.argmax(1) == d.y_test).float().mean())


def test_finetune_improves_low_precision(model, digits):
    from mixpe.sw.model.finetune import finetune

    cfg = QuantConfig.loads("[defaults]\nweight_bits = 2\nactivation_bits = 3\n"
                            "[finetune]\nepochs = 5\nlr = 0.001\n")
    g = import_model(model, digits.x_train[:2])
    before = _int_acc(quantize(g, cfg, digits.x_train), digits)
    g2, ig, _ = finetune(model, g, cfg, digits, progress=False)
    after = _int_acc(ig, digits)
    assert after > before + 0.03, (before, after)



def test_approx_aware_forward_tracks_emulation(model, digits):
    """With approx_aware the fake-quant forward of a ROUP layer takes the emulated products:
    its logits are much closer to the integer graph's than the exact-product forward's."""
    g = import_model(model, digits.x_train[:2])
    ig = quantize(g, load_config("ant4-roup"), digits.x_train)
    params = {n.name: (n.weight, n.bias) for n in g.compute_nodes()}
    x = digits.x_test[:200]
    with torch.no_grad():
        aware = fake_quant_forward(g, ig, params, x, approx_aware=True)
        plain = fake_quant_forward(g, ig, params, x, approx_aware=False)
    out, _ = ig.run(x, ReferenceExecutor(), record=False)
    deq = out.to(torch.float32) * ig[ig.output].scale
    err_aware = float((aware - deq).abs().max())
    err_plain = float((plain - deq).abs().max())
    assert err_aware < 0.5 * err_plain, (err_aware, err_plain)
    assert float((aware.argmax(1) == out.argmax(1)).float().mean()) >= 0.99
