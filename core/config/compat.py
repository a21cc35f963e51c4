"""Old key names that still load: upstream's renames, and two duplicates found in real dumps.

Upstream's ``detectron2/config/compat.py`` upgrades VERSION 1 configs by renaming keys
(ConverterV1 and ConverterV2). Those old names are accepted here in any file and mapped to the
current names; giving an old and a new name for the same key in one file is an error.
"""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError

#: old dotted key -> current dotted key (upstream ConverterV1 + ConverterV2 simple renames)
RENAMED_KEYS: dict[str, str] = {
    "MODEL.RPN_HEAD.NAME": "MODEL.RPN.HEAD_NAME",
    "MODEL.WEIGHT": "MODEL.WEIGHTS",
    "MODEL.PANOPTIC_FPN.SEMANTIC_LOSS_SCALE": "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT",
    "MODEL.PANOPTIC_FPN.RPN_LOSS_SCALE": "MODEL.RPN.LOSS_WEIGHT",
    "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_SCALE": "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT",
    "MODEL.PANOPTIC_FPN.COMBINE_ON": "MODEL.PANOPTIC_FPN.COMBINE.ENABLED",
    "MODEL.PANOPTIC_FPN.COMBINE_OVERLAP_THRESHOLD": "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH",
    "MODEL.PANOPTIC_FPN.COMBINE_STUFF_AREA_LIMIT": "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT",
    "MODEL.PANOPTIC_FPN.COMBINE_INSTANCES_CONFIDENCE_THRESHOLD":
        "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
    "MODEL.ROI_HEADS.SCORE_THRESH": "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.ROI_HEADS.NMS": "MODEL.ROI_HEADS.NMS_THRESH_TEST",
    "MODEL.RETINANET.INFERENCE_SCORE_THRESHOLD": "MODEL.RETINANET.SCORE_THRESH_TEST",
    "MODEL.RETINANET.INFERENCE_TOPK_CANDIDATES": "MODEL.RETINANET.TOPK_CANDIDATES_TEST",
    "MODEL.RETINANET.INFERENCE_NMS_THRESHOLD": "MODEL.RETINANET.NMS_THRESH_TEST",
    "TEST.DETECTIONS_PER_IMG": "TEST.DETECTIONS_PER_IMAGE",
    "TEST.AUG_ON": "TEST.AUG.ENABLED",
    "TEST.AUG_MIN_SIZES": "TEST.AUG.MIN_SIZES",
    "TEST.AUG_MAX_SIZE": "TEST.AUG.MAX_SIZE",
    "TEST.AUG_FLIP": "TEST.AUG.FLIP",
}

# VERSION 1 kept anchor settings twice, under RPN and RETINANET; ConverterV2 keeps the pair that
# the meta-architecture used (RETINANET's for RetinaNet, RPN's otherwise) as ANCHOR_GENERATOR.*,
# and drops the other pair and RETINANET.ANCHOR_STRIDES (which nothing ever read).
_V1_ANCHOR_FIELDS = {"ANCHOR_SIZES": "SIZES", "ANCHOR_ASPECT_RATIOS": "ASPECT_RATIOS"}
_V1_DROPPED = ("MODEL.RETINANET.ANCHOR_STRIDES",)

#: keys that NO Detectron2 version defines, accepted only as exact copies of the real key.
#: ``fixtures/detectron2/cascade_gn_dconv/config.yaml`` (a ``cfg.dump()`` of an upstream training
#: run) carries them, presumably set by the training script (an unfrozen yacs node accepts new
#: attributes). Upstream's CascadeROIHeads reads only the ROI_BOX_CASCADE_HEAD keys, so they
#: are dropped after checking that they agree; a different value is an error, because the file
#: would then say two things about the cascade.
INERT_DUPLICATES: dict[str, str] = {
    "MODEL.ROI_HEADS.CASCADE_IOUS": "MODEL.ROI_BOX_CASCADE_HEAD.IOUS",
    "MODEL.ROI_HEADS.CASCADE_BBOX_REG_WEIGHTS": "MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS",
}

_MISSING = object()


def _pop(data: dict[str, Any], dotted: str) -> Any:
    """Remove a dotted key from nested dicts (and sections it leaves empty); _MISSING if absent."""
    *parents, leaf = dotted.split(".")
    chain = [data]
    for part in parents:
        node = chain[-1].get(part)
        if not isinstance(node, dict):
            return _MISSING
        chain.append(node)
    if leaf not in chain[-1]:
        return _MISSING
    value = chain[-1].pop(leaf)
    for parent, part in zip(reversed(chain[:-1]), reversed(parents)):
        if parent[part]:
            break
        del parent[part]
    return value


def _has(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _put(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return  # a non-mapping section: the type check of the merge will report it
    node[leaf] = value


def upgrade_renamed_keys(data: dict[str, Any], meta_architecture: str, source: str) -> None:
    """Rename old keys in one file's nested mapping, in place, to their current names."""
    moves = dict(RENAMED_KEYS)
    use = "RETINANET" if meta_architecture == "RetinaNet" else "RPN"
    for owner in ("RPN", "RETINANET"):
        for old, new in _V1_ANCHOR_FIELDS.items():
            if owner == use:
                moves[f"MODEL.{owner}.{old}"] = f"MODEL.ANCHOR_GENERATOR.{new}"
    for old, new in moves.items():
        if not _has(data, old):
            continue
        if _has(data, new):
            raise ConfigError(f"{source}: both '{old}' (the old name) and '{new}' are given; "
                              f"keep only '{new}'")
        _put(data, new, _pop(data, old))
    unused = "RPN" if use == "RETINANET" else "RETINANET"
    for dropped in (*(f"MODEL.{unused}.{old}" for old in _V1_ANCHOR_FIELDS), *_V1_DROPPED):
        _pop(data, dropped)


def pop_inert_duplicates(data: dict[str, Any]) -> dict[str, Any]:
    """Take the :data:`INERT_DUPLICATES` keys out of one file's mapping: {dotted key: value}."""
    found = {}
    for dotted in INERT_DUPLICATES:
        value = _pop(data, dotted)
        if value is not _MISSING:
            found[dotted] = value
    return found
