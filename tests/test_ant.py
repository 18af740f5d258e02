"""ANT's alpha search and type selection (sw/ant.py) against a literal transcription of the repo."""

from __future__ import annotations

import math

import pytest
import torch
from mixpe.sw.ant import MODES, candidates, fake_quantize, search_mse, select_type
from mixpe.sw.formats import FlintFormat, FloatFormat, IntFormat, PotFormat, number_format


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # these tensors are tiny: on the shared 2-core machine torch's thread pool only adds
    # contention (10x slower under load); restore the setting for other modules
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

# -- ANT quant_modules.py / quant_kernel.cu, transcribed line by line ----------------------------
# (the float32 grid itself is checked against ANT's value lists in test_formats.py)


def ant_grid(fmt):
    g = fmt.normalized_grid()
    if len(g) < 2**fmt.bits:  # convert_tensor pads with 0.0; the duplicate cannot change z
        g, _ = torch.sort(torch.cat([g, torch.zeros(1)]))
    return g


def ant_kernel(x_flat, grid):
    best = torch.full_like(x_flat, 102400.0)
    z = torch.zeros_like(x_flat)
    for y in grid:
        sub = (x_flat - y).abs()
        take = sub <= best
        best = torch.where(take, sub, best)
        z = torch.where(take, y, z)
    return z


def ant_forward(data, grid, alpha, is_perchannel):
    scale = alpha / torch.max(grid)
    if is_perchannel:
        data = (data.view(data.shape[0], -1) / scale).view(data.shape)
    else:
        data = data / scale
    quant_data = ant_kernel(data.reshape(-1), grid).view(data.shape)
    tensor = (quant_data - data).detach() + data
    if is_perchannel:
        tensor = (tensor.view(tensor.shape[0], -1) * scale).view(data.shape)
    else:
        tensor = tensor * scale
    return tensor


def ant_search_mse(tensor, grid, bit, is_perchannel, low=75, up=150):
    if is_perchannel:
        x_max, _ = tensor.view(tensor.shape[0], -1).abs().max(1)
        x_max = x_max.unsqueeze(1)
        best_score = torch.ones_like(x_max) * 1e10
        alpha = x_max.clone()
        base_alpha = x_max.clone()
        lb = 95 if bit > 6 else int(low)
        for i in range(lb, int(up)):
            new_alpha = base_alpha * (i * 0.01)
            quant_tensor = ant_forward(tensor, grid, new_alpha, True)
            score = (quant_tensor - tensor).abs().pow(2.0).view(quant_tensor.shape[0], -1)
            score = score.mean(-1).unsqueeze(1)
            alpha[score < best_score] = new_alpha[score < best_score]
            best_score[score < best_score] = score[score < best_score]
    else:
        x_max = tensor.abs().max()
        best_score = 1e10
        alpha = x_max.clone()
        base_alpha = alpha.clone()
        lb = 95 if bit > 6 else int(low)
        for i in range(lb, int(up)):
            new_alpha = base_alpha * (i * 0.01)
            quant_tensor = ant_forward(tensor, grid, new_alpha, False)
            score = (quant_tensor - tensor).abs().pow(2).mean()
            if score < best_score:
                best_score = score
                alpha = new_alpha
    return best_score.sum(), alpha, (alpha / x_max).mean().item()


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


GEN = torch.Generator().manual_seed(2022)
W_CONV = torch.randn(6, 3, 3, 3, generator=GEN) * 0.1
W_CONV[2] = 0.0  # a pruned channel: ANT keeps score 1e10 and alpha 0 there
W_LAP = torch.distributions.Laplace(0.0, 1.0).sample((8, 40))
A_RELU = torch.relu(torch.randn(300, generator=GEN))
A_SIGNED = torch.randn(2, 150, generator=GEN) * 3


@pytest.mark.parametrize(
    "x,fmt,per_channel,lb,ub",
    [
        (W_CONV, FlintFormat(bits=4, signed=True), True, 75, 150),
        (W_CONV, IntFormat(bits=4, signed=True), True, 75, 150),
        (W_LAP, PotFormat(bits=4, signed=True), True, 75, 150),
        (W_LAP, FlintFormat(bits=6, signed=True), True, 100, 150),
        (A_RELU, FlintFormat(bits=4), False, 75, 150),
        (A_RELU, FloatFormat(bits=5), False, 50, 120),
        (A_SIGNED, IntFormat(bits=8, signed=True), False, 75, 150),  # bits > 6: lb = 95
        (A_SIGNED, FlintFormat(bits=3, signed=True), False, 25, 80),
    ],
    ids=lambda v: v.spec if hasattr(v, "spec") else None,
)
def test_search_mse_bit_exact(x, fmt, per_channel, lb, ub):
    mse, alpha, ratio = search_mse(x, fmt, per_channel=per_channel, lb=lb, ub=ub)
    ref_mse, ref_alpha, ref_ratio = ant_search_mse(x, ant_grid(fmt), fmt.bits, per_channel, lb, ub)
    assert mse == ref_mse.item()
    assert alpha.dtype == torch.float32 and torch.equal(alpha, ref_alpha)
    assert same_float(ratio, ref_ratio)
    if per_channel:
        assert alpha.shape == (x.shape[0], 1)


def test_search_mse_pruned_channel_and_bounds():
    _, alpha, ratio = search_mse(W_CONV, IntFormat(bits=4, signed=True), per_channel=True)
    assert alpha[2].item() == 0.0 and math.isnan(ratio)
    # the search picks a ratio from the range, in steps of 0.01
    _, alpha, ratio = search_mse(A_RELU, FlintFormat(bits=4), per_channel=False, lb=90, ub=91)
    assert alpha.item() == (A_RELU.max() * 0.9).item() and ratio == pytest.approx(0.9)
    _, _, ratio = search_mse(A_RELU, IntFormat(bits=8), per_channel=False, lb=10, ub=96)
    assert ratio == pytest.approx(0.95)  # lb = 95 for 8 bits leaves one ratio
    with pytest.raises(ValueError, match="lb"):
        search_mse(A_RELU, IntFormat(bits=4), per_channel=False, lb=150, ub=75)


def test_search_mse_smallest_ratio_wins_ties():
    # for this tensor the ratios 0.87 and 0.88 give the same float32 MSE (the minimum)
    x = torch.tensor([0.0, 0.5, 0.375])
    fmt = FlintFormat(bits=3)
    s87 = (fake_quantize(x, fmt, x.max() * 0.87) - x).pow(2).mean()
    s88 = (fake_quantize(x, fmt, x.max() * 0.88) - x).pow(2).mean()
    assert s87 == s88
    r = search_mse(x, fmt, per_channel=False)
    assert r.alpha.item() == (x.max() * (87 * 0.01)).item() and r.mse == s87.item()
    # per channel, with a second channel that does not tie
    w = torch.stack([x, torch.tensor([0.2, -0.9, 0.4])])
    fmt = FlintFormat(bits=4, signed=True)
    r = search_mse(w, fmt, per_channel=True)
    ref = ant_search_mse(w, ant_grid(fmt), fmt.bits, True)
    assert r.mse == ref[0].item() and torch.equal(r.alpha, ref[1])


def test_fake_quantize_is_ste_form():
    f = FlintFormat(bits=4)
    x = torch.tensor([0.33, 1.7, 2.0, 0.05, -0.2, 4.4, 4.8, 7.5])
    out = fake_quantize(x, f, 6.4)
    assert [f"{v:.8g}" for v in out.tolist()] == [
        "0.29999998", "1.5999999", "2.3999999", "0.099999994", "0", "3.1999998", "6.3999996",
        "6.3999996"]
    assert torch.equal(out, ant_forward(x, ant_grid(f), torch.tensor(6.4), False))


def test_candidates_order():
    specs = {m: [f.spec for f in candidates(m, 4, True)] for m in MODES}
    assert specs == {
        "int": ["int:signed=1"],
        "ant-int-pot": ["int:signed=1", "pot:signed=1"],
        "ant-int-pot-float": ["int:signed=1", "pot:signed=1", "float:signed=1"],
        "ant-int-pot-flint": ["int:signed=1", "flint:signed=1", "pot:signed=1"],
        "ant-int-pot-float-flint": ["int:signed=1", "flint:signed=1", "pot:signed=1",
                                    "float:signed=1"],
    }
    assert [f.spec for f in candidates("ant-int-pot-flint", 8, False)] == ["int:bits=8"]


def test_select_type_is_argmin_of_searches():
    x = W_LAP[:4]
    r = select_type(x, 4, "ant-int-pot-float-flint", is_weight=True)
    scores = [(f.spec, search_mse(x, f, per_channel=True).mse)
              for f in candidates("ant-int-pot-float-flint", 4, True)]
    assert list(r.scores) == scores
    best = min(range(len(scores)), key=lambda i: (scores[i][1], i))
    assert r.format == number_format(scores[best][0])
    ref = search_mse(x, r.format, per_channel=True)
    assert r.mse == ref.mse and torch.equal(r.alpha, ref.alpha) and r.alpha.shape == (4, 1)


def test_select_type_ties_and_signs():
    # all-zero weights: every candidate scores C * 1e10, the first one (int) wins
    r = select_type(torch.zeros(3, 8), 4, "ant-int-pot-flint", is_weight=True)
    assert r.format == IntFormat(bits=4, signed=True)
    assert len({s for _, s in r.scores}) == 1
    # activations: unsigned unless the minimum is negative; one alpha
    r = select_type(A_RELU, 4, "ant-int-pot-flint", is_weight=False)
    assert not r.format.signed and r.alpha.dim() == 0
    r = select_type(A_SIGNED, 4, "ant-int-pot-flint", is_weight=False)
    assert r.format.signed
    # weights are signed even when non-negative
    assert select_type(A_RELU.view(3, 100), 4, "int", is_weight=True).format.signed
    # more than 6 bits: int, no type search
    r = select_type(A_SIGNED, 8, "ant-int-pot-float-flint", is_weight=False)
    assert r.format == IntFormat(bits=8, signed=True) and len(r.scores) == 1


def test_select_type_smoke_distributions():
    """§5.8.4 expectation: Gaussian → int or flint, Laplace (long tail) → flint or pot."""
    g = torch.Generator().manual_seed(7)
    gauss = torch.randn(8, 128, generator=g)
    u = torch.rand(8, 128, generator=g) - 0.5
    laplace = -torch.sign(u) * torch.log1p(-2 * u.abs())
    mode = "ant-int-pot-float-flint"
    assert select_type(gauss, 4, mode, is_weight=True).format.family in ("int", "flint")
    assert select_type(laplace, 4, mode, is_weight=True).format.family in ("flint", "pot")


def test_bad_arguments():
    with pytest.raises(ValueError) as info:
        select_type(A_RELU, 4, "ant-int-flint", is_weight=False)
    for m in MODES:
        assert m in str(info.value)
    with pytest.raises(ValueError, match="mode"):
        candidates("float", 4, False)
    with pytest.raises(ValueError, match=r"bits.*\[2, 16\]"):
        select_type(A_RELU, 1, "int", is_weight=False)
    # signed flint needs 2 magnitude bits
    with pytest.raises(ValueError, match=r"bits=2.*\[3, 8\]"):
        select_type(A_SIGNED, 2, "ant-int-pot-flint", is_weight=True)
