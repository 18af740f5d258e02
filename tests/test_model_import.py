"""torch.fx import: BN folding exactness, ReLU fusion, errors for unsupported ops."""

import pytest
import torch
from mixpe.sw.model import import_model
from mixpe.sw.models import build_model
from torch import nn


def _randomize_bn(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name, cin", [("digits-cnn", 1), ("resnet8", 1), ("resnet8", 3)])
def test_bn_folding_exact(name, cin):
    torch.manual_seed(0)
    model = _randomize_bn(build_model(name, cin, 10))
    size = 8 if cin == 1 else 32
    x = torch.randn(5, cin, size, size)
    g = import_model(model, x[:1])
    assert not any(n.path.startswith("bn") and "+" not in n.path for n in g.nodes)
    with torch.no_grad():
        ref = model(x)
        out = g(x)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5), (out - ref).abs().max()
    ops = [n.op for n in g.nodes]
    assert "relu" not in ops  # every ReLU fused into its producer
    if name == "resnet8":
        assert ops.count("add") == 3 and ops.count("conv2d") == 9
        assert all(n.relu for n in g.nodes if n.op == "add")


def test_bn_fold_math():
    conv = nn.Conv2d(2, 3, 1, bias=True)
    bn = nn.BatchNorm2d(3)
    model = _randomize_bn(nn.Sequential(conv, bn))
    g = import_model(model, torch.zeros(1, 2, 4, 4))
    node = g.compute_nodes()[0]
    k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(node.weight, conv.weight * k.reshape(-1, 1, 1, 1))
    assert torch.allclose(node.bias, (conv.bias - bn.running_mean) * k + bn.bias)
    assert node.path == "0+1"


class _Gelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.conv(x))


class _Sigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


class _View(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        return self.conv(x).view(-1, 72)


class _LoneBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.BatchNorm2d(1))

    def forward(self, x):
        return self.block(x)


@pytest.mark.parametrize("cls, pattern", [
    (_Gelu, r"unsupported op nn.GELU at node 'act' \(module 'act'\)"),
    (_Sigmoid, r"unsupported op function 'sigmoid' at node 'sigmoid'"),
    (_View, r"unsupported op method 'view' at node 'view'"),
    (_LoneBN, r"unsupported op nn.BatchNorm2d at node 'block_1' \(module 'block.1'\).*only "
              r"supported right after a conv2d"),
])
def test_unsupported_ops(cls, pattern):
    with pytest.raises(ValueError, match=pattern):
        import_model(cls(), torch.zeros(1, 1, 8, 8))


def test_dilated_conv_rejected():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2))
    with pytest.raises(ValueError, match=r"nn.Conv2d at node '_0'.*dilation"):
        import_model(model, torch.zeros(1, 1, 8, 8))


def test_functional_ops():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = torch.nn.functional.relu(self.conv(x))
            y = torch.nn.functional.max_pool2d(y, 2)
            y = torch.nn.functional.adaptive_avg_pool2d(y + y, 1)
            return self.fc(y.flatten(1))

    m = M().eval()
    x = torch.randn(2, 1, 8, 8)
    g = import_model(m, x)
    assert [n.op for n in g.nodes] == ["input", "conv2d", "maxpool2d", "add", "avgpool2d",
                                       "flatten", "linear"]
    assert g.nodes[4].attrs["kernel"] == (4, 4)
    with torch.no_grad():
        assert torch.allclose(g(x), m(x), atol=1e-6)
