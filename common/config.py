"""One configuration mechanism for every entry point.

A run's settings are a dataclass. They are filled, in this order, from the dataclass defaults, an optional
saved/base mapping, an optional YAML/JSON file (`--config`), the entry point's explicit flags, and dotted
`key=value` overrides. Every value is checked and converted by the type the dataclass declares *before*
anything runs, so a typo or a value of the wrong type is one clear `ConfigError` at start (never a failure
recorded against the data later), and an unknown key names the closest known one.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml


class ConfigError(ValueError):
    """A setting that cannot be used: unknown key, wrong type, unreadable file. Entry points print it as one
    `error: ...` line and exit with code 2."""


# ------------------------------------------------------------------------------------------- reading


def read_config_file(path: str | Path) -> dict:
    """A YAML or JSON file holding a (partial) nested mapping of settings."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist" if not p.exists() else f"config {str(path)!r} is not a file")
    text = p.read_text()
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config file {str(path)!r} is not valid {'JSON' if p.suffix == '.json' else 'YAML'}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of settings, not {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """A `key=value` value: parsed as a YAML scalar/flow value (`0.5`, `true`, `[a, b]`, `null`), else the
    text itself. The declared type decides later whether it is acceptable."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_overrides(items: Iterable[str]) -> dict:
    """`['a.b=1', 'c=x']` -> `{'a': {'b': 1}, 'c': 'x'}`."""
    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. pixel_diff.min=0.02)")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        set_dotted(out, key, parse_value(value.strip()))
    return out


def set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        if not isinstance(cur.get(p), dict):
            cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value


def deep_merge(into: dict, new: Mapping) -> dict:
    """Merge `new` into `into` (nested mappings merge key by key; anything else replaces)."""
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = dict(v) if isinstance(v, Mapping) else v
    return into


# ------------------------------------------------------------------------------------------- typing


def closest(name: str, candidates: Iterable[str]) -> str | None:
    m = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return m[0] if m else None


def unknown_key_message(key: str, known: Iterable[str], what: str = "setting", where: str = "") -> str:
    """`unknown setting 'decode.short_sid' (did you mean 'decode.short_side'?); known: ...`"""
    known = sorted(known)
    leaf = key.rsplit(".", 1)[-1]
    near = closest(leaf, known)
    hint = f" (did you mean {key[: len(key) - len(leaf)] + near!r}?)" if near else ""
    return f"unknown {what} {key!r}{where}{hint}; known: {', '.join(known)}"


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


_PLAIN_NAMES = {int: "an integer", float: "a number", str: "text", bool: "true or false", list: "a list",
                tuple: "a list", dict: "a mapping", type(None): "null"}


def _type_name(tp: Any) -> str:
    """A declared type in words: `int | None` -> 'an integer or null'."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in sorted(typing.get_args(tp), key=lambda a: a is type(None)))
    if origin is not None:
        return _PLAIN_NAMES.get(origin, str(tp).replace("typing.", ""))
    if tp in _PLAIN_NAMES:
        return _PLAIN_NAMES[tp]
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def convert(value: Any, tp: Any, key: str) -> Any:
    """`value` as the declared type `tp`, or a ConfigError naming the key, the value and the type."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return convert(value, a, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{key}={value!r}: expected one of {', '.join(map(repr, args))}")
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r}: expected a list, e.g. a,b or [a, b]")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{key}={value!r}: expected {len(args)} values")
            return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(args, value)))
        item_tp = args[0] if args else Any
        items = [convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return (origin or tp)(items) if (origin or tp) is not list else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r}: expected a mapping")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}={value!r}: expected a mapping of {tp.__name__} settings")
        return build(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (str, int)) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise ConfigError(f"{key}={value!r}: expected true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}={value!r}: expected a number")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}={value!r}: expected text")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    if tp is Path and isinstance(value, str):
        return Path(value)
    raise ConfigError(f"{key}={value!r}: expected {_type_name(tp)}")


def field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls, data: Mapping, prefix: str = ""):
    """An instance of dataclass `cls` from a (partial) nested mapping, every value converted by type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = field_types(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for k, v in data.items():
        if k not in fields:
            raise ConfigError(unknown_key_message(prefix + str(k), fields))
        kwargs[k] = convert(v, hints[k], prefix + k)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: {e}") from None
    return obj


def to_dict(obj) -> dict:
    """A dataclass as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def load(cls, path: str | Path | None = None, overrides: Iterable[str] = (), base: Mapping | dict | None = None,
         explicit: Mapping[str, Any] | None = None):
    """Defaults <- `base` <- file `path` <- `explicit` (dotted keys; None values ignored) <- `overrides`."""
    data: dict = json.loads(json.dumps(base, default=str)) if base else {}
    if dataclasses.is_dataclass(base):
        data = to_dict(base)
    if path:
        deep_merge(data, read_config_file(path))
    for k, v in (explicit or {}).items():
        if v is not None:
            set_dotted(data, k, v)
    deep_merge(data, parse_overrides(overrides))
    return build(cls, data)


# ------------------------------------------------------------------------------------------- docs


def field_docs(cls) -> dict[str, str]:
    """The attribute docstrings of a dataclass (the string literal right after a field), for `--help`."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for a, b in zip(body, body[1:]):
            if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
                    and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def describe(cls, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) for every setting of `cls`, nested dataclasses flattened."""
    rows = []
    hints = field_types(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(describe(hints[f.name], prefix + f.name + "."))
        else:
            rows.append((prefix + f.name, _type_name(hints[f.name]), default, docs.get(f.name, "")))
    return rows


__all__ = ["ConfigError", "read_config_file", "parse_overrides", "parse_value", "set_dotted", "deep_merge", "closest",
           "unknown_key_message", "convert", "build", "load", "to_dict", "field_docs", "describe"]
