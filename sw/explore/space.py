"""The design space: per-layer / per-channel weight formats and per-filter multipliers.

A :class:`Config` is fully explicit: for every conv/linear layer, one weight number format per
output channel (``w_formats``) and one multiplier per output channel (``mults``: a spec per
filter, or a tuple of specs per input channel — per kernel — for conv layers). Activations are
int8 everywhere. ``Config.hash`` (sha256 of the canonical JSON) keys the result cache.

The catalog a search draws from is a :class:`Space`:

* ``w_formats``: weight formats whose integer grid fits the int8 weight port of the PE
  (``int:bits=8/6/4``, ``pot:bits=4``, ``flint:bits=4``, ``float:bits=4``, all signed) —
  bit widths *and* formats (int / PoT / flint / float);
* ``mults``: signed 8×8 multiplier specs (exact plus the approximate ones of the PE cost
  table). The set of distinct multipliers a config uses becomes the array's run-time variants
  (``ArrayConfig.variants``; each column selects one per weight tile).

The search strategies use a compact *genome* per layer (:class:`LayerGene`): a high and a low
weight format with the fraction of channels at the low one, and a base and an approximate
multiplier with the fraction of filters on the approximate one; channels/filters are taken in
ascending sensitivity order (least sensitive first). :func:`expand` turns genes into a Config.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..formats import number_format
from ..mult import multiplier

__all__ = ["variant_of", "A_FORMAT", "entry_specs", "LayerQuant", "Config", "LayerGene", "Space",
           "expand", "DEFAULT_W_FORMATS", "DEFAULT_MULTS", "FRACTIONS", "load_config",
           "save_config", "INT8"]

#: Weight formats (short name → format spec); every grid fits the int8 weight port.
DEFAULT_W_FORMATS = {
    "int8": "int:bits=8,signed=1",
    "int6": "int:bits=6,signed=1",
    "int4": "int:bits=4,signed=1",
    "pot4": "pot:bits=4,signed=1",
    "flint4": "flint:bits=4,signed=1",
    "float4": "float:bits=4,signed=1",
}
#: Signed 8×8 multipliers (exact first); costs come from the PE cost table.
DEFAULT_MULTS = ("exact", "roup:p=1", "roup:p=2", "roup:p=1,r=4", "axbxp:l=3",
                 "axbxp:l=2,round=1", "axbxp:k=4,l=1")
#: Fractions of channels / filters a gene may move to the low format / approximate multiplier.
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
INT8 = "int:bits=8,signed=1"


def _canon_format(spec: str) -> str:
    f = number_format(spec)
    if not f.signed:
        raise ValueError(f"w_formats: weight formats must be signed, not {spec!r}")
    lo, hi = f.range
    if lo < -128 or hi > 127:
        raise ValueError(f"w_formats: {spec!r} has values in [{lo}, {hi}], which do not fit the "
                         "int8 weight port; allowed: grids within [-128, 127]")
    return f.spec


def _canon_mult(spec: str) -> str:
    m = multiplier(spec)
    return m.spec


def _canon_entry(e):
    """A filter's multiplier: one spec, or a tuple of specs per input channel (per kernel);
    a kernel tuple whose specs are all equal collapses to the spec."""
    if isinstance(e, str):
        return _canon_mult(e)
    t = tuple(_canon_mult(x) for x in e)
    if not t:
        raise ValueError("mults: a per-kernel entry needs one spec per input channel, got ()")
    return t[0] if len(set(t)) == 1 else t


#: The activation format of every variant (int8 activations).
A_FORMAT = "int:bits=8,signed=1"


def variant_of(mult: str, w_format: str) -> str:
    """The array variant that runs ``mult`` with weights in ``w_format``: the multiplier itself
    for int weights (values on the int8 port), else the decoded variant
    ``'<mult> a=int:bits=8,signed=1 b=<format>'`` (``ArrayConfig.variants`` syntax)."""
    f = number_format(w_format)
    if f.spec.split(":")[0] == "int":
        return mult
    return f"{mult} a={A_FORMAT} b={f.spec}"


def entry_specs(e) -> tuple:
    """The specs of one filter entry (a 1-tuple for a per-filter spec)."""
    return (e,) if isinstance(e, str) else tuple(e)


@dataclass(frozen=True)
class LayerQuant:
    """Quantization of one layer: a weight format and a multiplier per output channel.

    ``mults[c]`` is one spec (the whole filter) or a tuple of specs, one per input channel of
    the filter's group (per kernel, conv layers).
    """

    name: str
    w_formats: tuple
    mults: tuple

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty layer name, not {self.name!r}")
        wf = tuple(self.w_formats)
        ms = tuple(self.mults)
        if not wf or len(wf) != len(ms):
            raise ValueError(f"layer {self.name}: w_formats and mults must be non-empty and of "
                             f"equal length (one per output channel), got {len(wf)} and {len(ms)}")
        object.__setattr__(self, "w_formats", tuple(_canon_format(s) for s in wf))
        ms = tuple(_canon_entry(s) for s in ms)
        widths = {len(e) for e in ms if not isinstance(e, str)}
        if len(widths) > 1:
            raise ValueError(f"layer {self.name}: per-kernel entries must all have one spec per "
                             f"input channel, got lengths {sorted(widths)}")
        object.__setattr__(self, "mults", ms)

    @property
    def per_kernel(self) -> bool:
        return any(not isinstance(e, str) for e in self.mults)

    def kernel_mults(self, cg: int) -> list:
        """``[OC][cg]`` spec per kernel."""
        out = []
        for e in self.mults:
            if isinstance(e, str):
                out.append([e] * cg)
            elif len(e) != cg:
                raise ValueError(f"layer {self.name}: per-kernel entry has {len(e)} specs, the "
                                 f"layer has {cg} input channels per group")
            else:
                out.append(list(e))
        return out

    def to_dict(self) -> dict:
        def compact(t):
            t = [e if isinstance(e, str) else list(e) for e in t]
            return t[0] if all(x == t[0] for x in t) and isinstance(t[0], str) else list(t)
        return {"name": self.name, "channels": len(self.mults),
                "w_format": compact(self.w_formats), "mult": compact(self.mults)}

    @classmethod
    def from_dict(cls, d: dict) -> "LayerQuant":
        try:
            n = int(d["channels"])
            wf, mu = d["w_format"], d["mult"]
        except KeyError as e:
            raise ValueError(f"layer entry {d!r}: missing key {e}") from None
        wf = [wf] * n if isinstance(wf, str) else list(wf)
        mu = [mu] * n if isinstance(mu, str) else list(mu)
        return cls(str(d.get("name", "")), tuple(wf), tuple(mu))


@dataclass(frozen=True)
class Config:
    """A point of the design space: one :class:`LayerQuant` per conv/linear layer."""

    model: str
    layers: tuple

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers or not all(isinstance(x, LayerQuant) for x in self.layers):
            raise ValueError("layers must be a non-empty sequence of LayerQuant")

    def to_dict(self) -> dict:
        return {"model": self.model, "layers": [lq.to_dict() for lq in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        if "layers" not in d:
            raise ValueError("config: missing 'layers' (one [[layers]] table per conv/linear)")
        return cls(str(d.get("model", "")), tuple(LayerQuant.from_dict(x) for x in d["layers"]))

    def canonical_json(self) -> str:
        full = {"model": self.model,
                "layers": [[lq.name, list(lq.w_formats),
                            [e if isinstance(e, str) else list(e) for e in lq.mults]]
                           for lq in self.layers]}
        return json.dumps(full, sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    @property
    def mult_set(self) -> tuple:
        """Distinct multipliers, exact first if used, then by first use."""
        seen: list = []
        for lq in self.layers:
            for e in lq.mults:
                for m in entry_specs(e):
                    if m not in seen:
                        seen.append(m)
        seen.sort(key=lambda m: 0 if m == "exact" else 1)
        return tuple(seen)

    def filter_variants(self, i: int, cg: int | None = None) -> list:
        """Layer ``i``: the variant of every filter, or (``cg`` given and the layer per kernel)
        of every kernel ``[OC][cg]``."""
        lq = self.layers[i]
        if cg is not None and lq.per_kernel:
            return [[variant_of(m, w) for m in row]
                    for row, w in zip(lq.kernel_mults(cg), lq.w_formats)]
        return [variant_of(e, w) if isinstance(e, str) else
                tuple(variant_of(m, w) for m in e) for e, w in zip(lq.mults, lq.w_formats)]

    @property
    def variant_set(self) -> tuple:
        """Distinct array variants (multiplier × weight format), plain ``exact`` first if used,
        then by first use: variant 0 is the base PE, the rest ``ArrayConfig.variants``."""
        seen: list = []
        for lq in self.layers:
            for e, w in zip(lq.mults, lq.w_formats):
                for m in entry_specs(e):
                    v = variant_of(m, w)
                    if v not in seen:
                        seen.append(v)
        seen.sort(key=lambda v: 0 if v == "exact" else 1)
        return tuple(seen)

    def summary(self) -> list[str]:
        """One short line per layer (dominant format / multiplier and mixes)."""
        out = []
        for lq in self.layers:
            def mix(t):
                from collections import Counter
                c = Counter(t)
                return "+".join(f"{k}×{v}" if len(c) > 1 else k for k, v in c.most_common())
            ms = [m for e in lq.mults for m in entry_specs(e)]
            kern = " (per kernel)" if lq.per_kernel else ""
            out.append(f"{lq.name}: w={mix(lq.w_formats)} mult={mix(ms)}{kern}")
        return out


def save_config(cfg: Config, path, *, meta: dict | None = None) -> Path:
    """Write ``cfg`` as TOML (temp file, then rename). ``meta`` goes to an ``[explore]`` table."""
    import tomli_w

    path = Path(path)
    d = cfg.to_dict()
    if meta:
        d = {"explore": meta, **d}
    text = tomli_w.dumps(d)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def load_config(path) -> Config:
    """Read a TOML written by :func:`save_config`."""
    import tomllib

    with open(path, "rb") as f:
        return Config.from_dict(tomllib.load(f))


@dataclass(frozen=True)
class LayerGene:
    """Compact per-layer choice (indices into a :class:`Space`'s catalogs)."""

    w_hi: int = 0
    w_lo: int = 0
    lo_frac: float = 0.0
    m_base: int = 0
    m_approx: int = 0
    approx_frac: float = 0.0


@dataclass
class Space:
    """Catalogs of a search plus the layer facts needed to expand genes.

    ``order[l]`` lists layer ``l``'s output channels from least to most sensitive.
    """

    layer_names: list
    channels: list
    order: list
    w_formats: dict = field(default_factory=lambda: dict(DEFAULT_W_FORMATS))
    mults: tuple = DEFAULT_MULTS
    fractions: tuple = FRACTIONS
    model: str = "model"

    def __post_init__(self):
        if not (len(self.layer_names) == len(self.channels) == len(self.order)):
            raise ValueError("layer_names, channels and order must have one entry per layer")
        self.w_formats = {name: _canon_format(spec) for name, spec in self.w_formats.items()}
        self.mults = tuple(_canon_mult(m) for m in self.mults)
        if not self.mults:
            raise ValueError("mults must list at least one multiplier spec")
        self.w_keys = list(self.w_formats)

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    # genome <-> vector (for NSGA-II): 6 integers per layer
    def bounds(self) -> tuple[list, list]:
        nw, nm, nf = len(self.w_keys), len(self.mults), len(self.fractions)
        hi = [nw - 1, nw - 1, nf - 1, nm - 1, nm - 1, nf - 1] * self.n_layers
        return [0] * len(hi), hi

    def decode(self, vec) -> list[LayerGene]:
        v = [int(round(float(x))) for x in vec]
        genes = []
        for i in range(self.n_layers):
            a = v[6 * i:6 * i + 6]
            genes.append(LayerGene(a[0], a[1], self.fractions[a[2]], a[3], a[4],
                                   self.fractions[a[5]]))
        return genes

    def encode(self, cfg: Config):
        """The gene vector of ``cfg`` (inverse of ``expand(space, decode(vec))``), or None when
        the config is not of the genome's form (at most two formats / multipliers per layer,
        the minority on a sensitivity-ordered prefix of an allowed fraction)."""
        vec = []
        for lq, order, c in zip(cfg.layers, self.order, self.channels):
            if len(lq.mults) != c:
                return None
            wsel = _split(lq.w_formats, order, self.fractions, [self.w_formats[k]
                                                                 for k in self.w_keys])
            msel = _split(lq.mults, order, self.fractions, list(self.mults))
            if wsel is None or msel is None:
                return None
            vec += [wsel[0], wsel[1], wsel[2], msel[0], msel[1], msel[2]]
        if expand(self, self.decode(vec)).hash != cfg.hash:
            return None
        return vec

    def uniform(self, w: str = "int8", mult: str = "exact") -> Config:
        """Every layer at weight format ``w`` (a key) and multiplier ``mult``."""
        spec = self.w_formats[w]
        return Config(self.model, tuple(
            LayerQuant(n, (spec,) * c, (mult,) * c)
            for n, c in zip(self.layer_names, self.channels)))

    def baseline(self) -> Config:
        """int8 weights, exact multipliers everywhere (the reference of ``--budget-acc``)."""
        return self.uniform("int8", self.mults[0])


def _split(values, order, fractions, catalog):
    """``(hi index, lo index, fraction index)`` with ``values[order[:n]] = lo`` and the rest hi."""
    c = len(values)
    kinds = list(dict.fromkeys(values))
    if len(kinds) > 2 or any(k not in catalog for k in kinds):
        return None
    for fi, f in enumerate(fractions):
        n = int(round(f * c))
        lo = {values[ch] for ch in order[:n]}
        hi = {values[ch] for ch in order[n:]}
        if len(lo) <= 1 and len(hi) <= 1:
            lo_v = lo.pop() if lo else (hi.copy().pop() if hi else kinds[0])
            hi_v = hi.pop() if hi else lo_v
            return catalog.index(hi_v), catalog.index(lo_v), fi
    return None


def expand(space: Space, genes) -> Config:
    """The explicit Config of per-layer genes: the ``lo_frac`` least sensitive channels get
    ``w_lo``, the ``approx_frac`` least sensitive filters get ``m_approx``. When ``w_hi`` and
    ``w_lo`` both have ≤ 6 bits but different number types, ``w_lo`` is replaced by ``w_hi``
    (a layer has one weight type list in the quant TOML)."""
    if len(genes) != space.n_layers:
        raise ValueError(f"genes: need {space.n_layers} layer genes, got {len(genes)}")
    layers = []
    for name, c, order, g in zip(space.layer_names, space.channels, space.order, genes):
        n_lo = int(round(g.lo_frac * c))
        n_ap = int(round(g.approx_frac * c))
        hi = space.w_formats[space.w_keys[g.w_hi]]
        lo = space.w_formats[space.w_keys[g.w_lo]]
        fh, fl = number_format(hi), number_format(lo)
        if fh.bits <= 6 and fl.bits <= 6 and type(fh) is not type(fl):
            lo = hi  # one number type per layer below 7 bits (the quant TOML's rule)
        wf = [hi] * c
        ms = [space.mults[g.m_base]] * c
        for ch in order[:n_lo]:
            wf[ch] = lo
        for ch in order[:n_ap]:
            ms[ch] = space.mults[g.m_approx]
        layers.append(LayerQuant(name, tuple(wf), tuple(ms)))
    return Config(space.model, tuple(layers))
