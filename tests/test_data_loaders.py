"""Data sets: the shipped digits split and the MNIST / CIFAR-10 loaders on generated files."""

import gzip

import pytest
import torch
from mixpe.sw.data import (
    DIGITS_SPLIT,
    load_cifar10,
    load_dataset,
    load_digits,
    load_mnist,
    write_cifar10,
    write_mnist,
)


def test_digits_split_fixed():
    d = load_digits()
    assert (len(d.y_train), len(d.y_test)) == DIGITS_SPLIT
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == torch.float32
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert d.classes == 10
    # every label present in both halves, no image shared by index
    assert set(d.y_test.tolist()) == set(range(10))
    # deterministic: the sklearn order permuted by RandomState(0)
    import numpy as np
    from sklearn.datasets import load_digits as sk
    perm = np.random.RandomState(0).permutation(1797)
    assert torch.equal(d.y_test, torch.tensor(sk().target[perm[1437:]]))


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_generated(tmp_path, gz):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (7, 28, 28), generator=g)
    y = torch.randint(0, 10, (7,), generator=g)
    xt = torch.randint(0, 256, (3, 28, 28), generator=g)
    yt = torch.randint(0, 10, (3,), generator=g)
    write_mnist(tmp_path, x, y, train=True, gz=gz)
    raw = write_mnist(tmp_path, xt, yt, train=False, gz=gz)
    if gz:
        assert gzip.open(raw / "train-images-idx3-ubyte.gz").read(4) == b"\0\0\x08\x03"
    xs, ys = load_mnist(tmp_path, train=True)
    assert xs.shape == (7, 1, 28, 28) and torch.equal(ys, y)
    assert torch.equal((xs * 255).round().to(torch.int64).squeeze(1), x)
    split = load_dataset("mnist", tmp_path)
    assert split.x_test.shape == (3, 1, 28, 28) and torch.equal(split.y_test, yt)
    # the raw folder itself works as root too
    assert torch.equal(load_mnist(raw, train=False)[1], yt)


def test_cifar_generated(tmp_path):
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (11, 3, 32, 32), generator=g)
    y = torch.randint(0, 10, (11,), generator=g)
    write_cifar10(tmp_path, x, y, train=True)
    write_cifar10(tmp_path, x[:4], y[:4], train=False)
    xs, ys = load_cifar10(tmp_path, train=True)
    assert xs.shape == (11, 3, 32, 32) and torch.equal(ys, y)
    assert torch.equal((xs * 255).round().to(torch.int64), x)
    assert torch.equal(load_cifar10(tmp_path, train=False)[1], y[:4])


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="data_batch_1"):
        load_cifar10(tmp_path)
    with pytest.raises(ValueError, match="needs root"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("imagenet", tmp_path)


def test_corrupt_idx(tmp_path):
    d = tmp_path / "MNIST" / "raw"
    d.mkdir(parents=True)
    (d / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0\0\0\x02" * 3 + b"\0" * 5)
    (d / "train-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x01\0\0\0\x02\x01\x02")
    with pytest.raises(ValueError, match="header says"):
        load_mnist(tmp_path)
