"""Spec strings: one textual name for every arithmetic unit and number format.

A spec string is ``family:key=value,key=value``. The family selects a registered frozen
dataclass; the keys are its field names (the parameter names of the seed papers, e.g. ``n``,
``k``, ``l``, ``p``, ``r``, ``c``). Keys left out take the dataclass defaults, and the canonical
spec of an object lists only the keys that differ from the defaults, so ``exact:n=8`` and
``roup:n=8,p=1,r=4`` are stable names in the CLI, in configs and in reports.

Value syntax: integers in decimal, booleans as ``0``/``1`` (``true``/``false`` accepted),
strings bare. A field may define its own codec through ``_spec_codecs`` on the class:
``{"field": (parse: str -> value, format: value -> str)}``.

>>> from dataclasses import dataclass
>>> @register("demo", kind="example")
... @dataclass(frozen=True)
... class Demo:
...     n: int = 8
...     fast: bool = False
>>> d = from_spec("demo:n=4,fast=1", kind="example"); d
Demo(n=4, fast=True)
>>> to_spec(d)
'demo:n=4,fast=1'
"""

from __future__ import annotations

import dataclasses
import typing

__all__ = ["SpecError", "register", "registry", "parse_spec", "from_spec", "to_spec", "spec_dict"]


class SpecError(ValueError):
    """A spec string that cannot be parsed, or names an unknown family or key."""


_REGISTRIES: dict[str, dict[str, type]] = {}


def register(family: str, *, kind: str):
    """Class decorator: register a frozen dataclass under ``family`` in the ``kind`` registry.

    ``kind`` separates name spaces (``"mult"`` for multipliers, ``"format"`` for number formats).
    The class gets a ``family`` class attribute.
    """

    def deco(cls):
        reg = _REGISTRIES.setdefault(kind, {})
        if family in reg and reg[family] is not cls:
            raise ValueError(f"{kind} family {family!r} is already registered")
        reg[family] = cls
        cls.family = family
        return cls

    return deco


def registry(kind: str) -> dict[str, type]:
    """The ``{family: class}`` mapping of one kind (a copy)."""
    return dict(_REGISTRIES.get(kind, {}))


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split ``family:k=v,...`` into ``(family, {k: v})`` without interpreting the values.

    >>> parse_spec("roup:n=8,p=1,r=4")
    ('roup', {'n': '8', 'p': '1', 'r': '4'})
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"spec must be a non-empty string like 'family:key=value', not {spec!r}")
    family, _, rest = spec.strip().partition(":")
    family = family.strip()
    if not family:
        raise SpecError(f"spec {spec!r} has no family name before ':'")
    params: dict[str, str] = {}
    if rest.strip():
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            key, value = key.strip(), value.strip()
            if not eq or not key:
                raise SpecError(f"spec {spec!r}: item {item!r} is not of the form key=value")
            if key in params:
                raise SpecError(f"spec {spec!r}: key {key!r} given twice")
            params[key] = value
    return family, params


def _field_type(cls, field: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    return hints.get(field.name, field.type)


def _parse_value(cls, field: dataclasses.Field, text: str):
    codecs = getattr(cls, "_spec_codecs", {})
    if field.name in codecs:
        return codecs[field.name][0](text)
    tp = _field_type(cls, field)
    origin = typing.get_origin(tp)
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.lower() in ("none", ""):
            return None
        tp = args[0]
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise SpecError(f"{cls.family}: key {field.name!r} must be 0 or 1, not {text!r}")
    if tp is int:
        try:
            return int(text, 0)
        except ValueError:
            raise SpecError(f"{cls.family}: key {field.name!r} must be an integer, not {text!r}")
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise SpecError(f"{cls.family}: key {field.name!r} must be a number, not {text!r}")
    return text


def _format_value(cls, field: dataclasses.Field, value) -> str:
    codecs = getattr(cls, "_spec_codecs", {})
    if field.name in codecs:
        return codecs[field.name][1](value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _spec_fields(cls):
    return [f for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]


def from_spec(spec: str, *, kind: str):
    """Build the registered object named by ``spec`` (its ``__post_init__`` validates it).

    Raises :class:`SpecError` (a ``ValueError``) for an unknown family or key, and whatever
    ``ValueError`` the class raises for a value out of range.
    """
    family, params = parse_spec(spec)
    reg = _REGISTRIES.get(kind, {})
    if family not in reg:
        known = ", ".join(sorted(reg)) or "none"
        raise SpecError(f"unknown {kind} family {family!r} in spec {spec!r}; known: {known}")
    cls = reg[family]
    fields = {f.name: f for f in _spec_fields(cls)}
    kwargs = {}
    for key, text in params.items():
        if key not in fields:
            raise SpecError(
                f"{family}: unknown key {key!r} in spec {spec!r}; keys: {', '.join(fields)}"
            )
        kwargs[key] = _parse_value(cls, fields[key], text)
    return cls(**kwargs)


def spec_dict(obj) -> dict[str, object]:
    """The fields of ``obj`` that differ from their defaults, in declaration order."""
    out = {}
    for f in _spec_fields(type(obj)):
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out[f.name] = value
    return out


def to_spec(obj) -> str:
    """Canonical spec string of a registered object: family plus non-default keys."""
    cls = type(obj)
    items = [
        f"{name}={_format_value(cls, next(f for f in _spec_fields(cls) if f.name == name), v)}"
        for name, v in spec_dict(obj).items()
    ]
    return cls.family + (":" + ",".join(items) if items else "")
