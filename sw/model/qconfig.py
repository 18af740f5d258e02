"""Quantization configuration: a TOML file that round-trips (``tomllib`` / ``tomli_w``).

Example (``configs/ant4-roup.toml``)::

    name = "ant4-roup"
    description = "4-bit weights with ANT type selection, one ROUP layer"

    [defaults]
    activation_bits = 8         # bits of every layer's output activations (signed int, zp 0)
    weight_bits = 4             # per layer, or a list per output channel
    weight_types = ["int", "flint"]   # ANT candidates (int, flint, pot, float); MSE picks one
    mult = "exact"              # multiplier spec: per layer, per filter ([OC]), per kernel
    acc_bits = 32               # ([OC][C/groups] lists)
    overflow = "saturate"

    [calibration]
    batches = 4
    batch_size = 64
    method = "max"              # or "percentile" (with percentile = 99.99)

    [finetune]                  # optional QAT / approximation-aware fine-tuning (STE)
    epochs = 0

    [layers.first]              # "first", "last", a node name or a module path
    weight_bits = 8
    [layers.conv2]
    mult = "roup:p=1,r=4"

Every layer setting of ``[defaults]`` can be overridden per layer; the effective setting of a
layer is :meth:`QuantConfig.layer`. Activations are signed integers with zero point 0
(``activation_bits`` in 2 … 8, ReLU outputs use ``[0, 2^(b-1) − 1]``); weights use one format
per layer (or per group of output channels with equal bits) chosen by ANT among
``weight_types`` with per-output-channel clipping (``bits > 6`` → int), ``weight_bits`` in
2 … 8. ``load(text or path) → QuantConfig``, ``dumps()``; ``loads(dumps(c)) == c``.
Unknown keys and bad values raise ``ValueError`` naming the key and the allowed values.

>>> c = QuantConfig.loads('[defaults]\\nweight_bits = 4\\n[layers.fc]\\nweight_bits = 8\\n')
>>> c.layer("fc", 1, 2).weight_bits, c.layer("conv1", 0, 2).weight_bits
(8, 4)
>>> QuantConfig.loads(c.dumps()) == c
True
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "QuantConfig",
    "LayerQuant",
    "Calibration",
    "Finetune",
    "WEIGHT_TYPES",
    "BITS_RANGE",
    "config_path",
    "load_config",
    "CONFIG_DIR",
]

#: ANT weight type candidates, in ANT's search order.
WEIGHT_TYPES = ("int", "flint", "pot", "float")
#: Inclusive range of activation and weight bits.
BITS_RANGE = (2, 8)
#: Shipped configs (``configs/*.toml`` at the repository root).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"

_LAYER_KEYS = ("activation_bits", "weight_bits", "weight_types", "mult", "acc_bits", "overflow")


def _bits(v, key):
    lo, hi = BITS_RANGE
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{key} must be an integer in [{lo}, {hi}], not {v!r}")
    return v


def _spec(v, key):
    from ..mult import multiplier

    if not isinstance(v, str):
        raise ValueError(f"{key} must be a multiplier spec string, not {v!r}")
    try:
        multiplier(v)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
    return v


@dataclass(frozen=True)
class LayerQuant:
    """Quantization of one layer (``None``: inherit from ``[defaults]``).

    ``weight_bits``: an int or a tuple per output channel. ``mult``: a spec, a tuple of specs
    per output channel (filter), or a tuple of tuples ``[OC][C/groups]`` (kernel).
    """

    activation_bits: Any = None
    weight_bits: Any = None
    weight_types: Any = None
    mult: Any = None
    acc_bits: Any = None
    overflow: Any = None

    def __post_init__(self):
        if self.activation_bits is not None:
            _bits(self.activation_bits, "activation_bits")
        wb = self.weight_bits
        if isinstance(wb, list):
            wb = tuple(wb)
            object.__setattr__(self, "weight_bits", wb)
        if isinstance(wb, tuple):
            if not wb:
                raise ValueError("weight_bits: a per-channel list must not be empty")
            for i, b in enumerate(wb):
                _bits(b, f"weight_bits[{i}]")
        elif wb is not None:
            _bits(wb, "weight_bits")
        wt = self.weight_types
        if wt is not None:
            if isinstance(wt, str) or not isinstance(wt, (list, tuple)) or not wt:
                raise ValueError(f"weight_types must be a non-empty list of "
                                 f"{', '.join(WEIGHT_TYPES)}, not {wt!r}")
            for t in wt:
                if t not in WEIGHT_TYPES:
                    raise ValueError(f"weight_types: {t!r} is not one of "
                                     f"{', '.join(WEIGHT_TYPES)}")
            object.__setattr__(self, "weight_types", tuple(wt))
        m = self.mult
        if isinstance(m, list):
            m = tuple(tuple(r) if isinstance(r, list) else r for r in m)
            object.__setattr__(self, "mult", m)
        if isinstance(m, tuple):
            if not m:
                raise ValueError("mult: a per-filter list must not be empty")
            nested = [isinstance(r, tuple) for r in m]
            if any(nested) and not all(nested):
                raise ValueError("mult: a list must hold only specs (per filter) or only lists "
                                 "of specs (per kernel)")
            for i, r in enumerate(m):
                for j, s in enumerate(r if isinstance(r, tuple) else (r,)):
                    _spec(s, f"mult[{i}]" + (f"[{j}]" if isinstance(r, tuple) else ""))
        elif m is not None:
            _spec(m, "mult")
        if self.acc_bits is not None:
            a = self.acc_bits
            if isinstance(a, bool) or not isinstance(a, int) or not 8 <= a <= 48:
                raise ValueError(f"acc_bits must be an integer in [8, 48], not {a!r}")
        if self.overflow is not None and self.overflow not in ("wrap", "saturate"):
            raise ValueError(f"overflow must be 'wrap' or 'saturate', not {self.overflow!r}")

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "LayerQuant":
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be a table, not {type(d).__name__}")
        unknown = sorted(set(d) - set(_LAYER_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(unknown)}; allowed: "
                             f"{', '.join(_LAYER_KEYS)}")
        try:
            return cls(**d)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def to_dict(self) -> dict:
        out = {}
        for k in _LAYER_KEYS:
            v = getattr(self, k)
            if v is not None:
                out[k] = _listify(v)
        return out


def _listify(v):
    if isinstance(v, tuple):
        return [_listify(x) for x in v]
    return v


DEFAULT_LAYER = LayerQuant(activation_bits=8, weight_bits=8, weight_types=("int",),
                           mult="exact", acc_bits=32, overflow="saturate")


@dataclass(frozen=True)
class Calibration:
    """Post-training calibration: ``batches`` × ``batch_size`` training images; the activation
    range of a node is its max |value| (``method="max"``) or the ``percentile`` of |value|."""

    batches: int = 4
    batch_size: int = 64
    method: str = "max"
    percentile: float = 99.99

    def __post_init__(self):
        for k in ("batches", "batch_size"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"calibration.{k} must be a positive integer, not {v!r}")
        if self.method not in ("max", "percentile"):
            raise ValueError(f"calibration.method must be 'max' or 'percentile', not "
                             f"{self.method!r}")
        if not isinstance(self.percentile, (int, float)) or not 50 <= self.percentile <= 100:
            raise ValueError(f"calibration.percentile must be in [50, 100], not "
                             f"{self.percentile!r}")


@dataclass(frozen=True)
class Finetune:
    """Optional fine-tuning with fake quantization and a straight-through estimator:
    ``epochs`` (0: none) of Adam at ``lr``; ``approx_aware`` uses the layers' multipliers
    (through their product tables) in the forward pass."""

    epochs: int = 0
    lr: float = 1e-4
    batch_size: int = 64
    approx_aware: bool = True

    def __post_init__(self):
        for k, lo in (("epochs", 0), ("batch_size", 1)):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"finetune.{k} must be an integer >= {lo}, not {v!r}")
        if not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise ValueError(f"finetune.lr must be positive, not {self.lr!r}")
        if not isinstance(self.approx_aware, bool):
            raise ValueError(f"finetune.approx_aware must be a bool, not {self.approx_aware!r}")


_TOP_KEYS = ("name", "description", "defaults", "calibration", "finetune", "layers")


@dataclass(frozen=True)
class QuantConfig:
    """The whole quantization configuration (see the module doc)."""

    name: str = ""
    description: str = ""
    defaults: LayerQuant = DEFAULT_LAYER
    calibration: Calibration = field(default_factory=Calibration)
    finetune: Finetune = field(default_factory=Finetune)
    layers: tuple = ()  # ((key, LayerQuant), ...) in file order

    def __post_init__(self):
        for k in ("name", "description"):
            if not isinstance(getattr(self, k), str):
                raise ValueError(f"{k} must be a string")
        # defaults: fill what the file does not set
        merged = {k: getattr(self.defaults, k) if getattr(self.defaults, k) is not None
                  else getattr(DEFAULT_LAYER, k) for k in _LAYER_KEYS}
        if isinstance(merged["weight_bits"], tuple) or isinstance(merged["mult"], tuple):
            raise ValueError("defaults: weight_bits and mult must be single values (lists "
                             "belong to a layer)")
        object.__setattr__(self, "defaults", LayerQuant(**merged))
        if isinstance(self.layers, dict):
            object.__setattr__(self, "layers", tuple(self.layers.items()))
        seen = set()
        for key, lq in self.layers:
            if not isinstance(key, str) or not key:
                raise ValueError(f"layers: keys must be non-empty strings, not {key!r}")
            if key in seen:
                raise ValueError(f"layers: {key!r} appears twice")
            seen.add(key)
            if not isinstance(lq, LayerQuant):
                raise ValueError(f"layers.{key} must be a LayerQuant")

    # -- lookup -----------------------------------------------------------------------------
    def layer(self, name: str, index: int, count: int, path: str = "") -> LayerQuant:
        """Effective settings of compute layer ``name`` (fx node name), ``index`` of ``count``
        compute layers, module ``path``: defaults, then every matching ``[layers.*]`` table in
        file order (``first``, ``last``, the node name, the module path or its part before
        ``+`` (a folded batch-norm))."""
        keys = {name, path, path.split("+")[0]}
        if index == 0:
            keys.add("first")
        if index == count - 1:
            keys.add("last")
        eff = dataclasses.asdict(self.defaults)
        for key, lq in self.layers:
            if key in keys:
                for k in _LAYER_KEYS:
                    v = getattr(lq, k)
                    if v is not None:
                        eff[k] = v
        return LayerQuant(**eff)

    def check_layers(self, names: list[tuple[str, str]]) -> None:
        """``ValueError`` when a ``[layers.*]`` key matches no compute layer
        (``names``: ``(node name, module path)`` pairs)."""
        known = {"first", "last"}
        for n, p in names:
            known |= {n, p, p.split("+")[0]}
        for key, _ in self.layers:
            if key not in known:
                raise ValueError(f"layers.{key}: no compute layer has this name; allowed: "
                                 f"{', '.join(sorted(known))}")

    # -- TOML ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict = {}
        if self.name:
            d["name"] = self.name
        if self.description:
            d["description"] = self.description
        d["defaults"] = self.defaults.to_dict()
        d["calibration"] = dataclasses.asdict(self.calibration)
        d["finetune"] = dataclasses.asdict(self.finetune)
        if self.layers:
            d["layers"] = {k: lq.to_dict() for k, lq in self.layers}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        if not isinstance(d, dict):
            raise ValueError("a quant config must be a TOML table")
        unknown = sorted(set(d) - set(_TOP_KEYS))
        if unknown:
            raise ValueError(f"quant config: unknown keys {', '.join(unknown)}; allowed: "
                             f"{', '.join(_TOP_KEYS)}")
        kw: dict = {k: d[k] for k in ("name", "description") if k in d}
        kw["defaults"] = LayerQuant.from_dict(d.get("defaults", {}), "defaults")
        for key, c in (("calibration", Calibration), ("finetune", Finetune)):
            sub = d.get(key, {})
            if not isinstance(sub, dict):
                raise ValueError(f"{key} must be a table")
            names = {f.name for f in dataclasses.fields(c)}
            bad = sorted(set(sub) - names)
            if bad:
                raise ValueError(f"{key}: unknown keys {', '.join(bad)}; allowed: "
                                 f"{', '.join(sorted(names))}")
            kw[key] = c(**sub)
        layers = d.get("layers", {})
        if not isinstance(layers, dict):
            raise ValueError("layers must be a table of tables")
        kw["layers"] = tuple((k, LayerQuant.from_dict(v, f"layers.{k}"))
                             for k, v in layers.items())
        return cls(**kw)

    @classmethod
    def loads(cls, text: str) -> "QuantConfig":
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"quant config TOML: {e}") from None
        return cls.from_dict(d)

    def dumps(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def save(self, path) -> Path:
        """Write the TOML file (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self.dumps())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def config_path(name_or_path) -> Path:
    """Path of a config: an existing file, or a shipped name (``"int8"`` →
    ``configs/int8.toml``); ``FileNotFoundError`` listing the shipped names."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    for cand in (CONFIG_DIR / f"{name_or_path}.toml", CONFIG_DIR / str(name_or_path),
                 Path.cwd() / "configs" / f"{name_or_path}.toml"):
        if cand.is_file():
            return cand
    shipped = sorted(q.stem for q in CONFIG_DIR.glob("*.toml")) if CONFIG_DIR.is_dir() else []
    raise FileNotFoundError(f"quant config {name_or_path!r}: no such file and not a shipped "
                            f"config; shipped: {', '.join(shipped) or '(none)'}")


def load_config(name_or_path) -> QuantConfig:
    """Load a config file or a shipped config by name (see :func:`config_path`)."""
    path = config_path(name_or_path)
    try:
        return QuantConfig.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
