"""Reading config YAML safely: no python objects are ever built, nothing is ever executed.

Detectron2 configs dumped with ``yaml.dump`` instead of ``safe_dump`` (older yacs, user code)
contain ``!!python/tuple``; that one tag is read as a list. Every other ``python/`` tag (e.g.
``!!python/object/apply:os.system``) is refused with :class:`ConfigError` before anything is
constructed. Anchors, aliases and ``<<`` merge keys resolve to plain data.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from ..errors import ConfigError

_PYTHON_TAG_PREFIX = "tag:yaml.org,2002:python/"


class _RefusedTag(ConstructorError):
    pass


class _DuplicateKey(ConstructorError):
    pass


class SafeConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` + tuples as lists, python tags refused, duplicate keys refused."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # A repeated key silently drops the first value in PyYAML; in a config that is almost
        # always a pasted section, so say so. ``<<`` merge entries may be overridden, as YAML
        # intends.
        seen: set = set()
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # unhashable key: the base class reports it
                    break
                if duplicate:
                    raise _DuplicateKey(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def _construct_python_tuple(self, node: yaml.Node) -> list:
        return self.construct_sequence(node, deep=True)

    def _refuse_python_tag(self, suffix: str, node: yaml.Node) -> Any:
        raise _RefusedTag(None, None, f"refused python tag '!!python/{suffix}' (config files "
                          "may hold plain data only)", node.start_mark)


SafeConfigLoader.add_constructor(f"{_PYTHON_TAG_PREFIX}tuple",
                                 SafeConfigLoader._construct_python_tuple)
SafeConfigLoader.add_multi_constructor(_PYTHON_TAG_PREFIX, SafeConfigLoader._refuse_python_tag)
# YAML 1.1 (PyYAML) reads "1e-4" as a string because it lacks a dot; YAML 1.2 and Python read a
# float, and that is what a person writing BASE_LR: 1e-4 means.
SafeConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _yaml_error(source: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    if isinstance(exc, (_RefusedTag, _DuplicateKey)):
        return ConfigError(f"{source}{where}: {exc.problem}")
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return ConfigError(f"{source}: invalid YAML{where}: {problem}")


def parse_yaml_text(text: str, source: str) -> Any:
    """Parse YAML text with :class:`SafeConfigLoader`; errors name ``source``."""
    try:
        return yaml.load(text, Loader=SafeConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None


def parse_yaml_literal(text: str) -> Any:
    """One command-line value as a YAML literal ("4" -> 4, "[1, 2]" -> [1, 2], "abc" -> "abc")."""
    return parse_yaml_text(text, f"config override value {text!r}")


def read_yaml_mapping(path: Path) -> dict:
    """The top-level mapping of a config file, or ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte "
                          f"{exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from None
    data = parse_yaml_text(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: config file is empty (expected a mapping of config keys)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, "
                          f"got {type(data).__name__}")
    return data
