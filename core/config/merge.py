"""Merging user values into a config: key checks (with suggestions) and the type rule.

Type rule (yacs' rule, slightly widened): a value must have the type of the key's *default*
value; list and tuple count as the same type (stored as lists); an int is accepted where a
float is expected (stored as float, so the engine can rely on the type); any value is accepted
where the default is None. ``bool`` is its own type: ``True`` is not an int here.
"""
from __future__ import annotations

import ast
import difflib
from collections.abc import Mapping, MutableMapping
from typing import Any

from ..errors import ConfigError
from .compat import upgrade_renamed_keys
from .defaults import DEFAULTS
from .yaml_safe import parse_yaml_literal

# A YAML alias bomb ("billion laughs") is cheap to parse but explodes when copied; no real
# config value comes near this many elements.
_MAX_VALUE_ELEMENTS = 1_000_000


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def _copy_value(value: Any, key: str, source: str, budget: list[int]) -> Any:
    """Deep copy with tuples as lists, refusing absurdly large (alias-bomb) values."""
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigError(f"{source}: value of '{key}' is too large "
                          f"(over {_MAX_VALUE_ELEMENTS} elements)")
    if isinstance(value, Mapping):
        return {k: _copy_value(v, key, source, budget) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy_value(v, key, source, budget) for v in value]
    return value


def check_value(key: str, value: Any, default: Any, source: str) -> Any:
    """The value to store for ``key``, or ConfigError if it breaks the type rule."""
    if isinstance(default, Mapping):
        raise ConfigError(f"{source}: '{key}' is a section (a mapping of keys), "
                          f"got {type_name(value)} {value!r:.60}")
    value = _copy_value(value, key, source, [_MAX_VALUE_ELEMENTS])
    if default is None:
        return value
    want = type(default)
    if isinstance(default, (list, tuple)):
        if isinstance(value, list):
            return value
    elif type(value) is want:
        return value
    elif want is float and type(value) is int:
        return float(value)
    raise ConfigError(f"{source}: '{key}' expects {type_name(default)}, "
                      f"got {type_name(value)} {value!r:.60}")


def unknown_key_error(key: str, known: list[str], source: str) -> ConfigError:
    """ConfigError for an unknown dotted key, suggesting the closest known key(s)."""
    close = difflib.get_close_matches(key, known, n=2, cutoff=0.75)
    if not close:  # e.g. MODEL.NUM_CLASSES: match the last part within any section
        last = key.rsplit(".", 1)[-1]
        close = [k for k in known if k.rsplit(".", 1)[-1] == last][:3]
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    return ConfigError(f"{source}: unknown config key '{key}'{hint}")


def _all_keys(node: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key, value in node.items():
        out.append(f"{prefix}{key}")
        if isinstance(value, Mapping):
            out.extend(_all_keys(value, f"{prefix}{key}."))
    return out


def _schema_for(target: Mapping) -> Mapping:
    """Types come from the default tree for a full config, else from the node's own values."""
    return DEFAULTS if DEFAULTS.keys() <= target.keys() else target


_ABSENT = object()


def _lookup(schema: Mapping, dotted: str) -> Any:
    node: Any = schema
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def merge_mapping(target: MutableMapping, data: Mapping, source: str) -> None:
    """Merge one file's nested mapping into ``target`` (a ``CfgNode``; renames already
    applied). Works on any nested mutable mapping, so that this module needs no ``CfgNode``
    (whose ``merge_from_list`` calls in here)."""
    schema = _schema_for(target)
    known: list[str] | None = None

    def walk(node: MutableMapping, values: Mapping, prefix: str) -> None:
        nonlocal known
        for key, value in values.items():
            dotted = f"{prefix}{key}"
            if not isinstance(key, str) or key not in node:
                known = known if known is not None else _all_keys(target)
                raise unknown_key_error(dotted, known, source)
            current = node[key]
            if isinstance(current, Mapping):  # a section (CfgNode)
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: '{dotted}' is a section (a mapping of keys), "
                                      f"got {type_name(value)} {value!r:.60}")
                walk(current, value, dotted + ".")
            else:
                default = _lookup(schema, dotted) if schema is not target else current
                if default is _ABSENT:  # a key added to this config outside the defaults
                    default = current
                node[key] = check_value(dotted, value, default, source)

    walk(target, data, "")


def _parse_override(text: str) -> Any:
    value = parse_yaml_literal(text)
    # Detectron2 command lines often pass tuples, "(640, 672)": YAML reads that as a string.
    if isinstance(value, str) and value.startswith("(") and value.endswith(")"):
        try:
            literal = ast.literal_eval(value)  # literals only: never evaluates code
        except (ValueError, SyntaxError):
            return value
        if isinstance(literal, tuple):
            return list(literal)
    return value


def merge_override_list(target: MutableMapping, items: list[str]) -> None:
    """``["KEY.PATH", "value", ...]`` into ``target``, with the same checks as a file."""
    source = "config override"
    if isinstance(items, (str, bytes)) or len(items) % 2:
        raise ConfigError(f"{source}: expected KEY VALUE pairs, got {items!r:.200}")
    meta = target.get("MODEL", {}).get("META_ARCHITECTURE", "")
    for i in range(0, len(items), 2):
        key, text = items[i], items[i + 1]
        if not isinstance(key, str) or not isinstance(text, str) or not key:
            raise ConfigError(f"{source}: keys and values must be strings, got {key!r} {text!r}")
        if key in ("_BASE_", "VERSION"):
            raise ConfigError(f"{source}: '{key}' cannot be overridden")
        nested: dict[str, Any] = {}
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = _parse_override(text)
        upgrade_renamed_keys(nested, meta, source)
        merge_mapping(target, nested, f"{source} {key}={text}")
