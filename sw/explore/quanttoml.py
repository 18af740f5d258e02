"""Explorer configs ↔ the model flow's quant TOML (``sw/model/qconfig.py``), and verification.

:func:`to_quant_dict` writes a :class:`~mixpe.sw.explore.space.Config` as the quant-config
schema that ``mixpe compare`` / ``mixpe build`` read: per layer (``[layers.<name>]``)
``weight_bits`` (one value, or a list per output channel), ``weight_types`` (the single type of
the channels with ≤ 6 bits — the flow forces int above 6 bits — so ANT's selection has one
candidate and the format is exactly the explorer's), and ``mult`` (one spec or a list per
filter). Activations are int8, accumulators 32-bit saturating, calibration = max over 4×64
training images, as in :class:`~mixpe.sw.explore.qnet.QNet`.

A layer whose ≤ 6-bit channels mix number types cannot be written (the flow has one type list
per layer): ``ValueError``. :func:`from_quant_dict` reads such a file back exactly.

:func:`reference_accuracy` evaluates a config with the model flow's bit-exact
``ReferenceExecutor`` (slow, seconds per config), to verify the explorer's fast accuracy.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..formats import number_format
from .space import Config, LayerQuant

__all__ = ["to_quant_dict", "from_quant_dict", "save_quant_toml", "load_quant_toml",
           "reference_accuracy", "expressible"]


def _layer_entry(lq: LayerQuant) -> dict:
    fmts = [number_format(s) for s in lq.w_formats]
    bits = [f.bits for f in fmts]
    fams = sorted({f.spec.split(":")[0] for f in fmts if f.bits <= 6})
    for f in fmts:
        if f.bits > 6 and f.spec.split(":")[0] != "int":
            raise ValueError(f"layer {lq.name}: {f.spec} has more than 6 bits; the model flow "
                             "uses int above 6 bits")
    if len(fams) > 1:
        raise ValueError(f"layer {lq.name}: channels of ≤ 6 bits mix the types {fams}; the "
                         "quant config has one weight type list per layer")
    entry = {"weight_bits": bits[0] if len(set(bits)) == 1 else bits,
             "weight_types": fams or ["int"]}
    ms = list(lq.mults)
    if lq.per_kernel:
        cg = max(len(e) for e in ms if not isinstance(e, str))
        entry["mult"] = lq.kernel_mults(cg)
    else:
        entry["mult"] = ms[0] if len(set(ms)) == 1 else ms
    return entry


def expressible(cfg: Config) -> bool:
    """Whether :func:`to_quant_dict` can write ``cfg``."""
    try:
        for lq in cfg.layers:
            _layer_entry(lq)
    except ValueError:
        return False
    return True


def to_quant_dict(cfg: Config, *, name: str = "explore", description: str = "") -> dict:
    return {
        "name": name,
        "description": description or f"mixpe explore config for {cfg.model}",
        "defaults": {"activation_bits": 8, "weight_bits": 8, "weight_types": ["int"],
                     "mult": "exact", "acc_bits": 32, "overflow": "saturate"},
        "calibration": {"batches": 4, "batch_size": 64, "method": "max"},
        "layers": {lq.name: _layer_entry(lq) for lq in cfg.layers},
    }


def from_quant_dict(d: dict, layers, *, model: str = "") -> Config:
    """Config of a quant-config dict for the model's ``layers`` (``(name, channels)`` pairs)."""
    defaults = d.get("defaults", {})
    ent = d.get("layers", {})
    out = []
    for k, (name, c) in enumerate(layers):
        e = dict(defaults)
        for key in ("first" if k == 0 else None, "last" if k == len(layers) - 1 else None, name):
            if key and key in ent:
                e.update(ent[key])
        bits = e.get("weight_bits", 8)
        bits = [bits] * c if isinstance(bits, int) else list(bits)
        types = list(e.get("weight_types", ["int"]))
        if len(types) != 1 and any(b <= 6 for b in bits):
            raise ValueError(f"layer {name}: weight_types {types} leaves the type to ANT's "
                             "selection; the explorer reads configs with one type per layer")
        specs = [number_format(f"int:bits={b},signed=1" if b > 6 else
                               f"{types[0]}:bits={b},signed=1").spec for b in bits]
        m = e.get("mult", "exact")
        ms = [m] * c if isinstance(m, str) else [x if isinstance(x, str) else tuple(x)
                                                 for x in m]
        out.append(LayerQuant(name, tuple(specs), tuple(ms)))
    return Config(model, tuple(out))


def save_quant_toml(cfg: Config, path, **kw) -> Path:
    """Write ``to_quant_dict(cfg)`` (validated by the flow's ``QuantConfig`` when present)."""
    import tomli_w

    d = to_quant_dict(cfg, **kw)
    text = tomli_w.dumps(d)
    try:
        from ..model.qconfig import QuantConfig
    except ImportError:  # the model flow is optional for the explorer
        QuantConfig = None
    if QuantConfig is not None:
        QuantConfig.loads(text)  # raises ValueError when the schema does not accept it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def load_quant_toml(path, layers, *, model: str = "") -> Config:
    import tomllib

    with open(path, "rb") as f:
        return from_quant_dict(tomllib.load(f), layers, model=model)


def reference_accuracy(cfg: Config, *, model: str = "digits-cnn", dataset: str = "digits",
                       epochs: int | None = None, n_eval: int = 0) -> float:
    """Top-1 accuracy (%) of ``cfg`` through the model flow (``quantize`` + ReferenceExecutor)."""
    import dataclasses

    import tomli_w

    from .. import models
    from ..data import load_dataset
    from ..model import ReferenceExecutor, import_model, quantize
    from ..model.qconfig import QuantConfig

    data = load_dataset(dataset)
    tc = None
    if epochs is not None:
        tc = dataclasses.replace(models.TRAIN_DEFAULTS.get((model, dataset),
                                                           models.TrainConfig()), epochs=epochs)
    m = models.trained_model(model, dataset, cfg=tc, progress=False)
    g = import_model(m, data.x_train[:2])
    qc = QuantConfig.loads(tomli_w.dumps(to_quant_dict(cfg)))
    ig = quantize(g, qc, data.x_train)
    n = n_eval or len(data.y_test)
    out, _ = ig.run(data.x_test[:n], ReferenceExecutor(), record=False)
    return 100.0 * float((out.argmax(1) == data.y_test[:n]).float().mean())
