"""Data sets for the model flow: scikit-learn digits (shipped), MNIST and CIFAR-10 (local files).

Nothing is downloaded. :func:`load_digits` returns the 1,797 real handwritten 8×8 digits that
scikit-learn ships, as float32 ``[N, 1, 8, 8]`` tensors scaled to ``[0, 1]`` (pixel / 16), with a
fixed split: a permutation drawn by ``numpy.random.RandomState(0)`` puts the first 1,437 images
in ``train`` and the other 360 in ``test``.

:func:`load_mnist` and :func:`load_cifar10` read the torchvision layouts under ``root``:

* MNIST: ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (optionally ``.gz``;
  ``root`` may also be the ``raw`` folder itself); images ``[N, 1, 28, 28]`` in ``[0, 1]``.
* CIFAR-10: ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (pickles with ``data``
  ``[N, 3072]`` uint8 and ``labels``); images ``[N, 3, 32, 32]`` in ``[0, 1]``.

A missing file raises ``FileNotFoundError`` naming the paths tried. :func:`write_mnist` and
:func:`write_cifar10` write those layouts (the tests use them on generated images).

>>> d = load_digits()
>>> tuple(d.x_train.shape), tuple(d.x_test.shape), float(d.x_train.max())
((1437, 1, 8, 8), (360, 1, 8, 8), 1.0)
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Split",
    "load_digits",
    "load_mnist",
    "load_cifar10",
    "load_dataset",
    "write_mnist",
    "write_cifar10",
    "DATASETS",
    "DIGITS_SPLIT",
    "DIGITS_SEED",
]

#: Train / test sizes of the fixed digits split.
DIGITS_SPLIT = (1437, 360)
#: Seed of the ``numpy.random.RandomState`` permutation of the digits split.
DIGITS_SEED = 0
#: Names accepted by :func:`load_dataset`.
DATASETS = ("digits", "mnist", "cifar10")


@dataclass(frozen=True, eq=False)
class Split:
    """A train/test split: float32 images ``[N, C, H, W]`` in ``[0, 1]`` and int64 labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    name: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.x_train.shape[1:])

    @property
    def classes(self) -> int:
        return int(max(int(self.y_train.max()), int(self.y_test.max()))) + 1


_DIGITS_CACHE: dict = {}


def load_digits() -> Split:
    """The scikit-learn digits with the fixed 1,437 / 360 split (see the module doc)."""
    if "digits" not in _DIGITS_CACHE:
        from sklearn.datasets import load_digits as _sk_digits

        d = _sk_digits()
        x = torch.tensor(d.images, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        y = torch.tensor(d.target, dtype=torch.int64)
        perm = torch.as_tensor(np.random.RandomState(DIGITS_SEED).permutation(len(y)))
        n_train = DIGITS_SPLIT[0]
        tr, te = perm[:n_train], perm[n_train:]
        _DIGITS_CACHE["digits"] = Split(x[tr].contiguous(), y[tr].contiguous(),
                                        x[te].contiguous(), y[te].contiguous(), "digits")
    return _DIGITS_CACHE["digits"]


# -- MNIST (idx files) --------------------------------------------------------------------------

_MNIST_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(candidates: list[Path], what: str) -> Path:
    for p in candidates:
        if p.is_file():
            return p
    raise FileNotFoundError(f"{what}: none of these files exists: "
                            f"{', '.join(str(p) for p in candidates)}")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: too short for an idx{ndim} header")
    zero, dtype, nd = data[0:2], data[2], data[3]
    if zero != b"\0\0" or dtype != 0x08 or nd != ndim:
        raise ValueError(f"{path}: not an unsigned-byte idx{ndim} file (magic "
                         f"{data[:4].hex()}, expected 000008{ndim:02x})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} = {int(np.prod(dims))} bytes, "
                         f"the file holds {body.size}")
    return body.reshape(dims)


def _mnist_dirs(root) -> list[Path]:
    root = Path(root)
    return [root / "MNIST" / "raw", root / "raw", root]


def load_mnist(root, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from torchvision's raw files under ``root``: ``(x [N, 1, 28, 28] float32 in
    [0, 1], y [N] int64)``; ``FileNotFoundError`` naming the paths tried when missing."""
    out = []
    for name, ndim in zip(_MNIST_FILES[bool(train)], (3, 1)):
        cands = [d / (name + ext) for d in _mnist_dirs(root) for ext in ("", ".gz")]
        out.append(_read_idx(_find(cands, f"MNIST {name}"), ndim))
    imgs, labels = out
    if imgs.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST under {root}: {imgs.shape[0]} images but {labels.shape[0]} "
                         f"labels")
    x = torch.tensor(imgs, dtype=torch.float32).unsqueeze(1) / 255.0
    return x, torch.tensor(labels, dtype=torch.int64)


def write_mnist(root, x, y, train: bool = True, gz: bool = False) -> Path:
    """Write ``x`` (uint8-valued ``[N, 28, 28]`` or ``[N, 1, H, W]``) and labels ``y`` as
    torchvision MNIST raw files under ``root/MNIST/raw``; returns that folder."""
    x = np.asarray(torch.as_tensor(x).reshape(len(y), *torch.as_tensor(x).shape[-2:]),
                   dtype=np.uint8)
    y = np.asarray(torch.as_tensor(y), dtype=np.uint8)
    d = Path(root) / "MNIST" / "raw"
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(_MNIST_FILES[bool(train)], (x, y)):
        head = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
        data = head + arr.tobytes()
        path = d / (name + (".gz" if gz else ""))
        _atomic_write(path, gzip.compress(data) if gz else data)
    return d


# -- CIFAR-10 (python pickles) ------------------------------------------------------------------

_CIFAR_DIR = "cifar-10-batches-py"


def _cifar_batches(train: bool) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]


def load_cifar10(root, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py`` pickles under ``root`` (or ``root``
    itself being that folder): ``(x [N, 3, 32, 32] float32 in [0, 1], y [N] int64)``."""
    xs, ys = [], []
    for name in _cifar_batches(train):
        path = _find([Path(root) / _CIFAR_DIR / name, Path(root) / name], f"CIFAR-10 {name}")
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data = d.get(b"data", d.get("data"))
        labels = d.get(b"labels", d.get("labels"))
        if data is None or labels is None:
            raise ValueError(f"{path}: a CIFAR-10 batch needs 'data' and 'labels' entries")
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(labels):
            raise ValueError(f"{path}: data must be [N, 3072] with N = {len(labels)} labels, "
                             f"got {data.shape}")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(np.asarray(labels, dtype=np.int64))
    x = torch.tensor(np.concatenate(xs), dtype=torch.float32) / 255.0
    return x, torch.tensor(np.concatenate(ys), dtype=torch.int64)


def write_cifar10(root, x, y, train: bool = True) -> Path:
    """Write uint8-valued ``x`` ``[N, 3, 32, 32]`` and labels ``y`` as CIFAR-10 pickles under
    ``root/cifar-10-batches-py`` (train: split over the five data batches); returns it."""
    x = np.asarray(torch.as_tensor(x), dtype=np.uint8).reshape(len(y), 3072)
    y = [int(v) for v in torch.as_tensor(y).tolist()]
    d = Path(root) / _CIFAR_DIR
    d.mkdir(parents=True, exist_ok=True)
    names = _cifar_batches(train)
    parts = np.array_split(np.arange(len(y)), len(names))
    for name, idx in zip(names, parts):
        blob = pickle.dumps({b"data": x[idx], b"labels": [y[i] for i in idx],
                             b"batch_label": name.encode()})
        _atomic_write(d / name, blob)
    return d


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_dataset(name: str, root=None) -> Split:
    """A :class:`Split` by name: ``"digits"`` (shipped), ``"mnist"``/``"cifar10"`` (need
    ``root``)."""
    if name == "digits":
        return load_digits()
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, not {name!r}")
    if root is None:
        raise ValueError(f"dataset {name!r} needs root (the folder holding the torchvision "
                         f"files; nothing is downloaded)")
    loader = load_mnist if name == "mnist" else load_cifar10
    xtr, ytr = loader(root, train=True)
    xte, yte = loader(root, train=False)
    return Split(xtr, ytr, xte, yte, name)
