"""Models of the flow: a LeNet-style CNN for the 8×8 digits and a CIFAR-style ResNet-8.

``digits-cnn`` (:class:`DigitsCNN`)::

    conv 1→8 3×3 pad 1, BN, ReLU, max-pool 2   (8×8 → 4×4)
    conv 8→16 3×3 pad 1, BN, ReLU, avg-pool 2  (4×4 → 2×2)
    flatten (64), linear 64→10

``resnet8`` (:class:`ResNet8`): conv 3×3 (w) + BN + ReLU, three basic blocks (w, 2w stride 2,
4w stride 2; two 3×3 conv+BN each, a 1×1 conv+BN shortcut where the shape changes, residual
add, ReLU), global average pool, linear. ``width=16`` is the CIFAR topology; the digits variant
uses ``width=8``.

:func:`trained_model` trains deterministically on the CPU (seeded, ``torch.use_deterministic_
algorithms``, one thread) and caches the state dict under :func:`cache_dir` keyed by a hash of
the model/training source code and the hyper-parameters, so a second call loads in
milliseconds. Training ``digits-cnn`` takes a few seconds.

>>> m = build_model("digits-cnn")
>>> tuple(m(torch.zeros(2, 1, 8, 8)).shape)
(2, 10)
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .data import Split, load_dataset

__all__ = [
    "DigitsCNN",
    "ResNet8",
    "BasicBlock",
    "MODELS",
    "TrainConfig",
    "TRAIN_DEFAULTS",
    "build_model",
    "train",
    "trained_model",
    "accuracy",
    "cache_dir",
]


class DigitsCNN(nn.Module):
    """LeNet-style CNN for ``[N, 1, 8, 8]`` digits (see the module doc)."""

    def __init__(self, in_channels: int = 1, classes: int = 10, c1: int = 8, c2: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c2 * 4, classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(self.flatten(x))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet8(nn.Module):
    """CIFAR-style ResNet-8 (see the module doc)."""

    def __init__(self, in_channels: int = 3, classes: int = 10, width: int = 16):
        super().__init__()
        w = width
        self.conv = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(w)
        self.layer1 = BasicBlock(w, w, 1)
        self.layer2 = BasicBlock(w, 2 * w, 2)
        self.layer3 = BasicBlock(2 * w, 4 * w, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


#: Model names → constructors taking ``(in_channels, classes)``.
MODELS = {
    "digits-cnn": lambda cin, classes: DigitsCNN(cin, classes),
    "resnet8": lambda cin, classes: ResNet8(cin, classes, width=8 if cin == 1 else 16),
}


def build_model(name: str, in_channels: int = 1, classes: int = 10) -> nn.Module:
    """A freshly initialised model by name (one of :data:`MODELS`)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, not {name!r}")
    return MODELS[name](in_channels, classes)


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (part of the cache key)."""

    epochs: int = 40
    batch: int = 64
    lr: float = 0.01
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, not {self.lr!r}")


#: Default hyper-parameters per (model, dataset).
TRAIN_DEFAULTS = {
    ("digits-cnn", "digits"): TrainConfig(),
    ("resnet8", "digits"): TrainConfig(epochs=30),
}


def cache_dir() -> Path:
    """``$MIXPE_CACHE/models`` or ``~/.cache/mixpe/models``."""
    base = os.environ.get("MIXPE_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "mixpe") / "models"


def accuracy(model, x, y, batch: int = 512) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``x``, ``y``."""
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            hits += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    return hits / max(1, len(y))


def train(model: nn.Module, data: Split, cfg: TrainConfig = TrainConfig(), *,
          progress: bool = True) -> nn.Module:
    """Train ``model`` in place with Adam + cosine learning rate, deterministically on the CPU.

    The seed fixes the initial weights (re-initialised from it) and the batch order; the
    computation uses deterministic algorithms and one thread, so the result is reproducible.
    """
    from rich.progress import Progress

    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        torch.manual_seed(cfg.seed)
        for mod in model.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.epochs)
        loss_fn = nn.CrossEntropyLoss()
        n = len(data.y_train)
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task("training", total=cfg.epochs)
            for _ in range(cfg.epochs):
                model.train()
                perm = torch.randperm(n, generator=gen)
                for i in range(0, n, cfg.batch):
                    idx = perm[i:i + cfg.batch]
                    opt.zero_grad()
                    loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
                    opt.step()
                sched.step()
                bar.advance(task)
        model.eval()
        return model
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)


def _cache_key(name: str, dataset: str, cfg: TrainConfig, in_channels: int, classes: int) -> str:
    src = "".join(inspect.getsource(o) for o in (DigitsCNN, BasicBlock, ResNet8, train))
    blob = json.dumps({"name": name, "dataset": dataset, "train": asdict(cfg), "cin": in_channels,
                       "classes": classes, "src": src, "torch": torch.__version__.split("+")[0]},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trained_model(name: str = "digits-cnn", dataset: str = "digits", *, root=None,
                  cfg: TrainConfig | None = None, progress: bool = True,
                  cache: bool = True) -> nn.Module:
    """The model ``name`` trained on ``dataset`` (eval mode), from the cache when present.

    ``cfg`` defaults to :data:`TRAIN_DEFAULTS` (or :class:`TrainConfig`). The cache file is
    ``cache_dir()/<name>-<dataset>-<key>.pt`` (written to a temporary file, then renamed).
    """
    data = load_dataset(dataset, root)
    cin, classes = data.input_shape[0], data.classes
    cfg = cfg or TRAIN_DEFAULTS.get((name, dataset), TrainConfig())
    model = build_model(name, cin, classes)
    path = cache_dir() / f"{name}-{dataset}-{_cache_key(name, dataset, cfg, cin, classes)}.pt"
    if cache and path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval()
    train(model, data, cfg, progress=progress)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(model.state_dict(), tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return model.eval()
