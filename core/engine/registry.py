"""Registries keyed by the config's NAME fields, as in Detectron2.

Each builder takes ``(cfg, ...)`` and returns a module; only these small builders read the
config, the modules themselves take plain arguments.
"""
from __future__ import annotations

from typing import Callable

from ..errors import ConfigError


class Registry:
    def __init__(self, name: str, config_key: str):
        self.name = name
        self.config_key = config_key
        self._items: dict[str, Callable] = {}

    def register(self, name: str | None = None):
        def deco(obj):
            self._items[name or obj.__name__] = obj
            return obj
        return deco

    def get(self, name: str) -> Callable:
        if name not in self._items:
            raise ConfigError(f"{self.config_key}: unknown {self.name} {name!r} "
                              f"(this engine supports: {', '.join(sorted(self._items))})")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items


META_ARCH = Registry("meta architecture", "MODEL.META_ARCHITECTURE")
BACKBONE = Registry("backbone", "MODEL.BACKBONE.NAME")
PROPOSAL_GENERATOR = Registry("proposal generator", "MODEL.PROPOSAL_GENERATOR.NAME")
RPN_HEAD = Registry("RPN head", "MODEL.RPN.HEAD_NAME")
ANCHOR_GENERATOR = Registry("anchor generator", "MODEL.ANCHOR_GENERATOR.NAME")
ROI_HEADS = Registry("ROI heads", "MODEL.ROI_HEADS.NAME")
ROI_BOX_HEAD = Registry("box head", "MODEL.ROI_BOX_HEAD.NAME")
ROI_MASK_HEAD = Registry("mask head", "MODEL.ROI_MASK_HEAD.NAME")
POINT_HEAD = Registry("point head", "MODEL.POINT_HEAD.NAME")
