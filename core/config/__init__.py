"""Detectron2 configs without Detectron2: the full default key tree, safe YAML loading with
``_BASE_`` chains, strict key/type checking, and dumps that upstream reads back.

The engine reads configs only through this API::

    cfg = load_config("model/config.yaml", ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.3"])
    cfg.MODEL.ROI_HEADS.NUM_CLASSES      # attribute or item access; cfg is frozen
"""
from .loader import get_default_config, load_config
from .node import CfgNode

__all__ = ["CfgNode", "get_default_config", "load_config"]
