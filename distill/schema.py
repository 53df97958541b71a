"""Config schema machinery: fields with a default, a meaning and allowed values; dicts <-> dataclasses.

    name: str = spec("run", "experiment name")                  # a field of a config section
    cfg = from_dict(SectionClass, {"name": "x"}, prefix="sec.")  # every key checked
    to_dict(cfg)                                                 # back to plain YAML-ready dicts

Unknown keys, wrong types and out-of-range values raise `ConfigError` naming the dotted key
and what is allowed, in one line. The sections themselves live in `distill.config`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from dataclasses import field
from typing import Any

import yaml

from distill.errors import ConfigError


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader reading numbers the YAML 1.2 way: `1e-3` and `3e-4` are floats
    (YAML 1.1, PyYAML's default, wants a dot and a signed exponent and reads them as strings)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str):
    """YAML text -> Python values, numbers read as YAML 1.2 does (see `YamlLoader`)."""
    return yaml.load(text, Loader=YamlLoader)


def spec(default, help: str, *, choices=None, ge=None, gt=None, le=None, lt=None, key=None, join=None,
         words=None):
    """A config field: default, meaning, and the allowed values checked on load. `join`: a string
    field that may also be given as a list of strings, stored joined by this separator. `words`:
    names that stand for a value (`{"auto": None}`: `train.threads=auto` is stored as null)."""
    meta = {"help": help, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt, "key": key, "join": join,
            "words": words}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- dict <-> dataclass


def _yaml_key(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_describe(args[0])} or null"
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string", dict: "a mapping"}.get(
        tp, str(tp))


def _coerce(value, tp, key: str):
    """Check `value` against the annotation `tp`; return it converted (int -> float only)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of keys, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
        (inner,) = typing.get_args(tp)
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, dict),
    }[tp]
    if not ok:
        raise ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")
    if tp is float and not math.isfinite(value):
        raise ConfigError(f"{key}: {value} is not allowed; give a finite number")
    return float(value) if tp is float else value


def _check_range(value, meta, key: str):
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {', '.join(map(str, choices))}")
    for name, bad, word in (("ge", lambda v, b: v < b, ">="), ("gt", lambda v, b: v <= b, ">"),
                            ("le", lambda v, b: v > b, "<="), ("lt", lambda v, b: v >= b, "<")):
        bound = meta.get(name)
        if bound is None:
            continue
        items = value if isinstance(value, list) else [value]
        for v in items:
            if isinstance(v, (int, float)) and bad(v, bound):
                raise ConfigError(f"{key}: {v!r} is out of range; it must be {word} {bound}")


def _checked(value, tp, meta: dict, key: str):
    """`value` for a field of type `tp` with `meta` (spec's): converted, type and range checked."""
    if isinstance(value, str) and value in (meta.get("words") or {}):
        value = meta["words"][value]
    if meta.get("join") and isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        value = meta["join"].join(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a section given as itself
        allowed = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if not any(isinstance(value, a) for a in allowed):
            raise ConfigError(f"{key}: expected {_describe(tp)}, got {type(value).__name__}")
        return value
    value = _coerce(value, tp, key)
    _check_range(value, meta, key)
    return value


_HINTS: dict[type, dict] = {}


def _hints(cls) -> dict:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


class Section:
    """Base of every config section: a value assigned in Python (`cfg.distill.temperature = -3`)
    is checked as the same value in YAML would be, so a config cannot leave validation by
    assignment. Cross-key checks (`distill.config.validate`) run when a config is built.

    A section with `OPEN = True` (distill: each method declares its own options) takes keys
    beyond its fields into `options`; the registry that declares them checks them
    (`distill.config.check_names`), and reading one that was not given returns its declared default."""

    def __setattr__(self, name, value):
        fields = {f.name: f for f in dataclasses.fields(self)} if dataclasses.is_dataclass(self) else {}
        if name in fields:
            f = fields[name]
            key = self.__dict__.get("_prefix", "") + _yaml_key(f)
            value = _checked(value, _hints(type(self))[name], f.metadata, key)
        object.__setattr__(self, name, value)


def _name_sections(obj, prefix: str) -> None:
    """Tell each section its dotted key prefix (for the messages of checks on assignment)."""
    object.__setattr__(obj, "_prefix", prefix)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Section):
            _name_sections(value, prefix + _yaml_key(f) + ".")


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a (possibly partial) dict, checking every key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {data!r}")
    hints = _hints(cls)
    fields = {_yaml_key(f): f for f in dataclasses.fields(cls)}
    extra = {key: value for key, value in data.items() if key not in fields}
    for key in extra if not getattr(cls, "OPEN", False) else ():
            close = [k for k in fields if k.startswith(str(key)[:3])]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{prefix}{key}: unknown key{hint}; allowed keys are {', '.join(fields)}")
    kwargs = {f.name: _checked(data[ykey], hints[f.name], f.metadata, prefix + ykey)
              for ykey, f in fields.items() if ykey in data}
    obj = cls(**kwargs)
    if extra:  # an open section's other keys: checked against their registry later (see Section)
        object.__setattr__(obj, "options", copy.deepcopy(extra))
    if isinstance(obj, Section):
        _name_sections(obj, prefix)
    return obj


def to_dict(obj) -> dict:
    """A dataclass tree as plain dicts, with YAML key names."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out[_yaml_key(f)] = to_dict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    out.update(copy.deepcopy(obj.__dict__.get("options", {})))  # an open section's keys given beyond its fields
    return out


# ---------------------------------------------------------------- key=value overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", key):
        raise ConfigError(f"override {text!r}: {key!r} is not a dotted key like train.epochs")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({_yaml_reason(err)})") from None
    return key.split("."), value


def set_dotted(data: dict, path: list[str], value) -> None:
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a section, cannot set a key below it")
        node = child
    node[path[-1]] = value


def _yaml_reason(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or "parse error"
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else str(problem)
