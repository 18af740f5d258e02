"""An exploration problem: model + data + board → objectives of any config, cached on disk.

:class:`ProblemSpec` is a small picklable description (model name, board, image counts,
energy-table path, training epochs); :func:`get_problem` builds the :class:`Problem` once per
process (workers of a process pool or of a Dask cluster rebuild it from the spec, reading the
trained model from the model cache).

:meth:`Problem.evaluate` returns a :class:`Result` dict::

    {"hash", "accuracy" (% top-1 on the evaluation images), "loss" (int8 accuracy − accuracy,
     points), "lut4", "ff", "dsp", "bram", "fits", "cycles" (one image), "energy" (toggles per
     image, or None without an energy table), "seconds" (evaluation time)}

:class:`ResultCache` stores one JSON file per config hash under ``DIR/cache/`` (temp file +
rename), so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .costs import CostModel, Cycles, EnergyTable
from .qnet import QNet
from .space import Config, Space

__all__ = ["ProblemSpec", "Problem", "get_problem", "ResultCache", "OBJECTIVES"]

#: Version of the evaluation semantics (bump when QNet / costs change; part of the cache key).
EVAL_VERSION = 4

#: Objectives, all minimized: accuracy loss (points), LUT4, cycles, energy proxy.
OBJECTIVES = ("loss", "lut4", "cycles", "energy")


@dataclass(frozen=True)
class ProblemSpec:
    """Picklable description of a problem.

    Parameters
    ----------
    model : str
        A model of :mod:`mixpe.sw.models` (``digits-cnn``) trained on ``dataset``.
    board : str
        A board of :data:`mixpe.sw.explore.costs.BOARDS`.
    n_eval : int
        Test images used for accuracy (the first ``n_eval`` of the fixed test split; 0 = all).
    n_calib : int
        Training images used to calibrate activation scales.
    energy : str or None
        Path of the energy table JSON (``sim/energy.py``); None leaves ``energy`` out.
    epochs : int or None
        Training epochs (None: the model's default; small values for fast tests).
    variants : str or None
        Path of the decoded-variant cost table (default: ``bench/results/explore_variants.json``).
    """

    model: str = "digits-cnn"
    dataset: str = "digits"
    board: str = "ulx3s-85f"
    n_eval: int = 0
    n_calib: int = 256
    energy: str | None = None
    epochs: int | None = None
    variants: str | None = None

    def __post_init__(self):
        for name in ("n_eval", "n_calib"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {v!r}")
        if self.epochs is not None and (not isinstance(self.epochs, int) or self.epochs < 1):
            raise ValueError(f"epochs must be a positive integer or None, not {self.epochs!r}")

    @property
    def key(self) -> str:
        """Digest of the spec, the evaluation semantics version and the energy table contents
        (the result cache lives under it, so stale results are never reused)."""
        blob = {"spec": asdict(self), "version": EVAL_VERSION}
        if self.energy:
            blob["energy"] = hashlib.sha256(Path(self.energy).read_bytes()).hexdigest()
        if self.variants:
            blob["variants"] = hashlib.sha256(Path(self.variants).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def load_float_model(spec: ProblemSpec, progress: bool = False):
    """The trained float model and the data split (from :mod:`mixpe.sw.models`)."""
    from .. import models
    from ..data import load_dataset

    data = load_dataset(spec.dataset)
    cfg = None
    if spec.epochs is not None:
        base = models.TRAIN_DEFAULTS.get((spec.model, spec.dataset), models.TrainConfig())
        import dataclasses
        cfg = dataclasses.replace(base, epochs=spec.epochs)
    model = models.trained_model(spec.model, spec.dataset, cfg=cfg, progress=progress)
    return model, data


class Problem:
    """Evaluates configs of one model on one board (see the module doc)."""

    def __init__(self, spec: ProblemSpec, *, progress: bool = False):
        self.spec = spec
        model, data = load_float_model(spec, progress)
        self.data = data
        calib = data.x_train[: spec.n_calib] if spec.n_calib else data.x_train
        self.net = QNet(model, calib, name=spec.model)
        n = spec.n_eval or len(data.y_test)
        self.x, self.y = data.x_test[:n], data.y_test[:n]
        self.costs = CostModel(spec.board, variants=spec.variants)
        self.cycles = Cycles(self.costs.core_cfg, self.net.layers)
        self.energy = EnergyTable.load(spec.energy) if spec.energy else None
        self._int8 = None
        self._order = None

    # -- the space --------------------------------------------------------------------------
    def sensitivity_order(self) -> list:
        """Per layer, output channels from least to most sensitive.

        Sensitivity of filter ``c`` = Σ over the calibration images of the squared change of
        the layer's accumulators (normalized by the channel's accumulator energy) when the
        filter's weights go from int8 to the coarsest format (int4) and its multiplier to the
        most approximate one; a per-filter error-injection measure as in MAx-DNN.
        """
        if self._order is None:
            from .space import LayerQuant
            calib = self.data.x_train[:128]
            base = self.int8_config()
            ins: list = []
            self.net.forward_codes(calib, base, collect=ins)
            order = []
            for i, L in enumerate(self.net.layers):
                c = L.channels
                ref, _ = self.net.layer_acc(i, ins[i], base.layers[i])
                pert, _ = self.net.layer_acc(i, ins[i], LayerQuant(
                    L.name, ("int:bits=4,signed=1",) * c, ("roup:p=2",) * c))
                d = (pert - ref).to(torch.float64).movedim(1, 0).reshape(c, -1)
                r = ref.to(torch.float64).movedim(1, 0).reshape(c, -1)
                sens = (d ** 2).sum(1) / ((r ** 2).sum(1) + 1.0)
                order.append([int(k) for k in torch.argsort(sens, stable=True)])
            self._order = order
        return self._order

    def kernel_order(self, i: int) -> list:
        """Kernels ``(oc, ic)`` of conv layer ``i`` from least to most sensitive ([] when the
        layer is not a groups=1 conv with more than one input channel).

        Sensitivity of kernel ``(o, c)`` = Σ over calibration images of the squared change of
        its partial accumulator (input channel ``c`` alone into filter ``o``) under int4 weights
        and ``roup:p=2``, normalized by filter ``o``'s accumulator energy.
        """
        from ..emulate import conv2d as emu_conv2d
        from .qnet import _multiplier

        L = self.net.layers[i]
        if L.kind != "conv" or L.groups != 1 or L.weight.shape[1] < 2:
            return []
        if not hasattr(self, "_korder"):
            self._korder = {}
        if i not in self._korder:
            calib = self.data.x_train[:64]
            ins: list = []
            self.net.forward_codes(calib, self.int8_config(), collect=ins)
            a = ins[i]
            w8, _ = self.net.layer_weights(i, "int:bits=8,signed=1")
            w4, _ = self.net.layer_weights(i, "int:bits=4,signed=1")
            m8 = _multiplier("exact", "int:bits=8,signed=1")
            m4 = _multiplier("roup:p=2", "int:bits=4,signed=1")
            oc, cg = w8.shape[:2]
            err = torch.zeros(oc, cg, dtype=torch.float64)
            tot = torch.zeros(oc, dtype=torch.float64)
            for c in range(cg):
                kw = dict(stride=L.stride, padding=L.padding, acc_bits=64)
                r = emu_conv2d(a[:, c:c + 1], w8[:, c:c + 1], m8, **kw).to(torch.float64)
                q = emu_conv2d(a[:, c:c + 1], w4[:, c:c + 1], m4, **kw).to(torch.float64)
                d = (q - r).movedim(1, 0).reshape(oc, -1)
                err[:, c] = (d ** 2).sum(1)
                tot += (r.movedim(1, 0).reshape(oc, -1) ** 2).sum(1)
            sens = (err / (tot[:, None] + 1.0)).flatten()
            order = torch.argsort(sens, stable=True).tolist()
            self._korder[i] = [(k // cg, k % cg) for k in order]
        return self._korder[i]

    def space(self, **kw) -> Space:
        L = self.net.layers
        kw["mults"] = tuple(m for m in kw.get("mults", _default_mults())
                            if m == "exact" or self.costs.known(m))
        return Space([x.name for x in L], [x.channels for x in L], self.sensitivity_order(),
                     model=self.spec.model, **kw)

    def int8_config(self) -> Config:
        from .space import INT8, LayerQuant
        return Config(self.spec.model, tuple(
            LayerQuant(L.name, (INT8,) * L.channels, ("exact",) * L.channels)
            for L in self.net.layers))

    @property
    def int8_accuracy(self) -> float:
        if self._int8 is None:
            self._int8 = self.net.accuracy(self.int8_config(), self.x, self.y)
        return self._int8

    # -- objectives -------------------------------------------------------------------------
    def evaluate(self, config: Config) -> dict:
        t0 = time.perf_counter()
        acc = self.net.accuracy(config, self.x, self.y)
        res = self.costs.resources(config.variant_set)
        cyc = self.cycles.total(config)
        energy = self.energy.total(config, self.net.layers) if self.energy else None
        return {"hash": config.hash, "accuracy": acc, "loss": self.int8_accuracy - acc,
                "lut4": res["lut4"], "ff": res["ff"], "dsp": res["dsp"], "bram": res["bram"],
                "fits": res["fits"], "variants": res["variants"], "cycles": cyc,
                "energy": energy,
                "seconds": time.perf_counter() - t0}


def _default_mults():
    from .space import DEFAULT_MULTS
    return DEFAULT_MULTS


_PROBLEMS: dict = {}


def get_problem(spec: ProblemSpec) -> Problem:
    """The process-wide :class:`Problem` of ``spec`` (built on first use)."""
    p = _PROBLEMS.get(spec)
    if p is None:
        torch.set_num_threads(1)
        p = _PROBLEMS[spec] = Problem(spec)
    return p


def evaluate_task(spec: ProblemSpec, config_dict: dict) -> dict:
    """Top-level task (picklable for process pools and Dask): evaluate one config."""
    config = Config.from_dict(config_dict)
    r = get_problem(spec).evaluate(config)
    r["config"] = config_dict
    r["pid"] = os.getpid()
    return r


class ResultCache:
    """One JSON file per config hash under ``root`` (atomic writes; resumable)."""

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, h: str) -> Path:
        return self.root / f"{h}.json"

    def get(self, h: str) -> dict | None:
        p = self._path(h)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return None  # torn by a crash before the rename cannot happen; be safe anyway

    def put(self, result: dict) -> None:
        p = self._path(result["hash"])
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=p.name + ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, sort_keys=True)
        os.replace(tmp, p)

    def all(self) -> list[dict]:
        out = []
        for p in sorted(self.root.glob("*.json")):
            try:
                out.append(json.loads(p.read_text()))
            except json.JSONDecodeError:
                continue
        return out

    def __len__(self):
        return sum(1 for _ in self.root.glob("*.json"))
