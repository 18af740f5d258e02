"""Hardware multipliers: one ``wiring.Component`` per sw family, built from a sw config.

Every family lives in ``hw/mult/<family>.py`` (module name = sw family name) and defines a
Component named like its sw twin (``ExactMultiplier``, ``RoupMultiplier``, …) whose
keyword-only constructor takes the sw dataclass fields, builds the sw config to validate and
keeps it as ``.config``. The combinational contract (``docs/CONTRACT.md``)::

    a: In(a_bits)            operand code of the activation
    b: In(b_bits)            operand code of the weight
    p: Out(signed(out_bits)) product, equal to ``config.table()[a, b]``

Plugging a family in needs nothing else: :func:`create` imports ``mixpe.hw.mult.<family>``
on demand and finds the class either in the registry (``@register("family")``) or, by the
naming convention, as the module attribute named like the sw class; a class whose
constructor does not take the sw fields as keywords adds a ``from_config(cfg)`` classmethod.
A class may declare ``latency`` (clock cycles from operands to product; default 0 =
combinational, no clock) and ``table_inputs`` (values of extra input members, e.g.
``{"mode": 0}``, under which ``p`` equals the sw table). The generic cocotb testbench
(``sim/mult_tests.py``) honours both; the synthesis wrapper (``hw/synth.py``) clocks a unit
with latency and drives extra inputs from registers like the operands. Every shipped config
(``sw/mult/catalog.py``) of a family with a hardware twin is then proven exhaustively by
``sim/test_mult.py`` without further code.

>>> from mixpe.hw.mult import create
>>> create("exact:n=4,sa=0").signature.members["p"].shape
signed(8)
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil

from amaranth.lib import wiring

__all__ = [
    "register",
    "registry",
    "hw_class",
    "hw_families",
    "create",
    "sw_config",
    "config_kwargs",
    "latency_of",
    "table_inputs_of",
]

_REGISTRY: dict[str, type] = {}


def register(family: str):
    """Class decorator: register a hardware multiplier Component for a sw ``family``.

    >>> @register("myfam")          # doctest: +SKIP
    ... class MyFamMultiplier(wiring.Component): ...
    """
    if not isinstance(family, str) or not family:
        raise TypeError(f"Family must be a non-empty string, not {family!r}")

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, wiring.Component)):
            raise TypeError(f"{cls!r} is not a wiring.Component subclass")
        old = _REGISTRY.get(family)
        if old is not None and old is not cls and old.__qualname__ != cls.__qualname__:
            raise ValueError(f"hw multiplier family {family!r} is already registered to {old!r}")
        _REGISTRY[family] = cls
        return cls

    return deco


def registry() -> dict[str, type]:
    """``{family: Component class}`` of every family importable from ``hw/mult/`` (a copy)."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            _lookup(mod.name)
    return dict(_REGISTRY)


def hw_families() -> list[str]:
    """Names of the sw multiplier families that have a hardware twin."""
    return sorted(registry())


def _sw_class(family: str):
    from mixpe.sw.mult import families  # noqa: F401  (registers every sw family)
    from mixpe.sw.spec import registry as sw_registry

    return sw_registry("mult").get(family)


def _lookup(family: str):
    cls = _REGISTRY.get(family)
    if cls is not None:
        return cls
    try:
        mod = importlib.import_module(f"{__name__}.{family}")
    except ModuleNotFoundError as e:
        if e.name == f"{__name__}.{family}":
            return None
        raise
    cls = _REGISTRY.get(family)
    if cls is None:
        sw_cls = _sw_class(family)
        cand = getattr(mod, sw_cls.__name__, None) if sw_cls is not None else None
        if isinstance(cand, type) and issubclass(cand, wiring.Component):
            cls = _REGISTRY[family] = cand
    return cls


def hw_class(family: str) -> type:
    """The Component class of a sw family; ``ValueError`` when it has no hardware twin."""
    cls = _lookup(family)
    if cls is None:
        known = ", ".join(hw_families()) or "none"
        raise ValueError(f"multiplier family {family!r} has no hardware twin yet; with hw: {known}")
    return cls


def _as_config(cfg):
    if isinstance(cfg, str):
        return sw_config(cfg)
    from mixpe.sw.mult import Multiplier

    if not isinstance(cfg, Multiplier):
        raise TypeError(f"Expected a sw multiplier config or a spec string, not {cfg!r}")
    return cfg


def config_kwargs(cfg) -> dict:
    """The constructor keywords of a sw config (its dataclass init fields)."""
    return {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.init and not f.name.startswith("_")
    }


def create(cfg) -> wiring.Component:
    """Build the hardware twin of a sw multiplier config (or of a spec string).

    The class is built from the config's dataclass fields, or by its ``from_config(cfg)``
    classmethod when it has one. A :class:`~mixpe.sw.mult.decoded.DecodedMultiplier` (number
    formats around a core) becomes :class:`mixpe.hw.formats.DecodedMultiplierComponent`.
    Raises ``ValueError`` for an unknown spec or a family without hardware.
    """
    cfg = _as_config(cfg)
    if cfg.family == "decoded" and "decoded" not in _REGISTRY:
        from mixpe.hw.formats import DecodedMultiplierComponent

        return DecodedMultiplierComponent(a_format=cfg.a_format, b_format=cfg.b_format,
                                          core=cfg.core)
    cls = hw_class(cfg.family)
    if hasattr(cls, "from_config"):
        return cls.from_config(cfg)
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{cls.__name__} needs a from_config() classmethod for {cfg!r}")
    return cls(**config_kwargs(cfg))


def sw_config(spec: str, a_format: str | None = None, b_format: str | None = None):
    """The sw config named by a multiplier spec, wrapped in number formats when given.

    ``sw_config("exact:n=4", "flint", "flint")`` is the decoded multiplier of
    :mod:`mixpe.sw.mult.decoded`; so is the combined spec ``"exact:n=4 a=flint b=flint"``.
    """
    if (a_format is None) != (b_format is None):
        raise ValueError("give both --a-format and --b-format, or neither")
    if a_format is not None or " a=" in spec.strip():
        from mixpe.sw.mult.decoded import decoded

        return decoded(spec, a_format, b_format)
    from mixpe.sw.mult import multiplier

    return multiplier(spec)


def latency_of(component) -> int:
    """Clock cycles from operands to product (0: combinational)."""
    latency = getattr(component, "latency", 0)
    if not isinstance(latency, int) or latency < 0:
        raise TypeError(f"{component!r}: latency must be a non-negative integer, not {latency!r}")
    return latency


def table_inputs_of(component) -> dict[str, int]:
    """Values of the extra input members under which ``p`` equals the sw table."""
    return dict(getattr(component, "table_inputs", {}) or {})
