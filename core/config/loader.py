"""``load_config``: defaults, then the ``_BASE_`` chain, then the file, then overrides."""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .compat import INERT_DUPLICATES, pop_inert_duplicates, upgrade_renamed_keys
from .defaults import DEFAULTS
from .merge import merge_mapping
from .node import CfgNode
from .yaml_safe import read_yaml_mapping

#: newest config VERSION that Detectron2 has written (it has been 2 since the public release)
LATEST_VERSION = 2


def get_default_config() -> CfgNode:
    """A fresh, modifiable copy of the full default tree (Detectron2 + PointRend keys)."""
    return CfgNode(copy.deepcopy(DEFAULTS))


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> CfgNode:
    """Read a Detectron2 config file into a frozen :class:`CfgNode`.

    The file's ``_BASE_`` (a path relative to the including file, or absolute, or ``~/...``)
    is merged first, recursively, so the including file wins. ``overrides`` is a
    ``["KEY.PATH", "value", ...]`` list applied last (see :meth:`CfgNode.merge_from_list`).
    Raises :class:`ConfigError` naming the file and key for anything it cannot accept.
    """
    cfg = get_default_config()
    duplicates: dict[str, tuple[Any, str]] = {}
    _merge_file(cfg, Path(path), [], duplicates)
    _check_inert_duplicates(cfg, duplicates)
    if overrides:
        cfg.merge_from_list(list(overrides))
    return cfg.freeze()


def _merge_file(cfg: CfgNode, path: Path, chain: list[Path],
                duplicates: dict[str, tuple[Any, str]]) -> None:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in [*chain, resolved])
        raise ConfigError(f"{path}: _BASE_ chain includes itself ({cycle})")
    data = read_yaml_mapping(path)

    base = data.pop("_BASE_", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: _BASE_ must be a file path, got {base!r:.80}")
        if base.startswith(("http://", "https://")):
            raise ConfigError(f"{path}: _BASE_ {base!r} is a URL; download it and refer to the "
                              "local file")
        base_path = Path(os.path.expanduser(base))
        if not base_path.is_absolute():
            base_path = path.parent / base_path  # relative to the including file, as upstream
        if not base_path.exists():
            raise ConfigError(f"{path}: _BASE_ file not found: {base_path}")
        _merge_file(cfg, base_path, [*chain, resolved], duplicates)

    version = data.pop("VERSION", LATEST_VERSION)
    if type(version) is not int or not 1 <= version <= LATEST_VERSION:
        raise ConfigError(f"{path}: 'VERSION' must be an integer from 1 to {LATEST_VERSION}, "
                          f"got {version!r:.40}")
    model = data.get("MODEL")
    meta = model.get("META_ARCHITECTURE") if isinstance(model, dict) else None
    upgrade_renamed_keys(data, meta or cfg.MODEL.META_ARCHITECTURE, str(path))
    for key, value in pop_inert_duplicates(data).items():
        duplicates[key] = (value, str(path))
    merge_mapping(cfg, data, str(path))


def _check_inert_duplicates(cfg: CfgNode, duplicates: dict[str, tuple[Any, str]]) -> None:
    for key, (value, source) in duplicates.items():
        real = INERT_DUPLICATES[key]
        node: Any = cfg
        for part in real.split("."):
            node = node[part]
        if not _same_numbers(value, node):
            raise ConfigError(
                f"{source}: '{key}' is not a Detectron2 config key; Detectron2 reads '{real}' "
                f"= {node!r}, but this file also gives '{key}' = {value!r}. Remove '{key}' "
                f"(or set '{real}' to the value the model was trained with)")


def _same_numbers(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_numbers(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return False
