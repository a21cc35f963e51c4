"""``CfgNode``: a nested, freezable dict with attribute access, shaped like Detectron2's config.

The data structure lives here; what counts as a valid key or value (the default tree, the type
rule, renamed keys) lives in :mod:`.defaults`, :mod:`.merge` and :mod:`.compat`, which work on
plain mappings and never import this module: ``dump`` and ``merge_from_list`` call down into
them.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import yaml

from .defaults import strip_unused_pointrend_keys
from .merge import merge_override_list


class CfgNode(dict):
    """Nested config: ``cfg.MODEL.RESNETS.DEPTH`` and ``cfg["MODEL"]["RESNETS"]["DEPTH"]`` alike.

    Nested mappings become ``CfgNode`` on construction and assignment. A frozen node (and every
    node below it) refuses any change with ``AttributeError``, like yacs; :meth:`clone` gives a
    modifiable deep copy, so a loaded config is never changed behind the engine's back.
    """

    def __init__(self, init: Mapping[str, Any] | None = None):
        super().__init__()
        object.__setattr__(self, "_frozen", False)
        for key, value in (init or {}).items():
            self[key] = value

    # -- access ------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            # Dunder lookups (copy, pickle, numpy probing) must fail quietly and cheaply.
            if name.startswith("__"):
                raise AttributeError(name) from None
            close = difflib.get_close_matches(name, [str(k) for k in self], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise AttributeError(f"config node has no key {name!r}{hint}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"config keys may not start with '_': {name!r}")
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    # -- mutation guarded by the frozen flag -----------------------------------------------------
    def _check_mutable(self) -> None:
        if self._frozen:
            raise AttributeError("config is frozen; use cfg.clone() for a modifiable copy")

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_mutable()
        if isinstance(value, Mapping) and not isinstance(value, CfgNode):
            value = CfgNode(value)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._check_mutable()
        super().__delitem__(key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._check_mutable()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, *args: Any) -> Any:
        self._check_mutable()
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self._check_mutable()
        return super().popitem()

    def clear(self) -> None:
        self._check_mutable()
        super().clear()

    def __ior__(self, other: Any) -> "CfgNode":
        self.update(other)
        return self

    # -- freezing and copying ------------------------------------------------------------------
    def freeze(self) -> "CfgNode":
        """Make this node and all nodes below it read-only; returns self."""
        self._set_frozen(True)
        return self

    def defrost(self) -> "CfgNode":
        """Undo :meth:`freeze` (yacs name); prefer :meth:`clone` for a private modifiable copy."""
        self._set_frozen(False)
        return self

    def _set_frozen(self, frozen: bool) -> None:
        object.__setattr__(self, "_frozen", frozen)
        for value in self.values():
            if isinstance(value, CfgNode):
                value._set_frozen(frozen)

    def is_frozen(self) -> bool:
        return self._frozen

    def clone(self) -> "CfgNode":
        """A deep, *unfrozen* copy (lists are copied too, so edits never leak back)."""
        return CfgNode(_plain(self))

    def __copy__(self) -> "CfgNode":
        return self.clone()

    def __deepcopy__(self, memo: dict) -> "CfgNode":
        return self.clone()

    def __reduce__(self):
        # The default dict-subclass pickling restores the frozen flag before the items, which
        # would then be refused; rebuild from plain data and freeze last instead.
        return (_rebuild, (_plain(self), self._frozen))

    # -- conversion ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (tuples become lists), safe for any YAML/JSON writer."""
        return _plain(self)

    def dump(self) -> str:
        """YAML text that this loader and upstream Detectron2 both read back.

        Plain safe YAML (no python tags, no anchors), keys sorted, tuples written as lists. On a
        full config the PointRend-project keys are left out while all of them hold their
        defaults: upstream's plain ``get_cfg()`` does not know them, and reading the file back
        here restores exactly those defaults.
        """
        data = strip_unused_pointrend_keys(_plain(self))
        return yaml.dump(data, Dumper=_PlainDumper, sort_keys=True, default_flow_style=False,
                         allow_unicode=True)

    def merge_from_list(self, items: list[str]) -> "CfgNode":
        """Apply ``["KEY.PATH", "value", ...]`` overrides; values are YAML literals.

        Keys must exist (renamed Detectron2 keys are mapped to their new names) and values pass
        the same type rule as config files; otherwise :class:`ConfigError`. Returns self.
        """
        self._check_mutable()
        merge_override_list(self, items)
        return self

    def __repr__(self) -> str:
        frozen = " frozen" if self._frozen else ""
        return f"CfgNode{frozen}({dict.__repr__(self)})"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _rebuild(data: dict, frozen: bool) -> CfgNode:
    node = CfgNode(data)
    return node.freeze() if frozen else node


class _PlainDumper(yaml.SafeDumper):
    """Safe dumper that writes repeated objects out in full instead of as anchors/aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
