"""One function from raw model outputs to what the user sees, driven by a settings dataclass.

``compose(raw, settings)``: for each model (TTA already applied by the engine) optional Soft-NMS
or class-aware hard NMS -> with two or more models, the WBF ensemble (masks fused) -> score
threshold -> optional cap on the number of detections (highest scores kept). With every option
off, one model's output passes through unchanged.

The GUI binds its toggles to a :class:`Settings` and calls ``compose`` on cached raw outputs
whenever one changes, so this runs on the CPU on numpy arrays (milliseconds for a few hundred
detections). Because it never touches the accelerator, identical raw outputs and settings give
bit-identical results whichever device produced the raw outputs; only the engine's own float
noise between devices can differ.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

from ..structures import Instances
from .nms import nms
from .soft_nms import METHODS, soft_nms
from .box_fusion import CONF_TYPES
from .wbf import weighted_boxes_fusion


@dataclass(frozen=True)
class Settings:
    """Post-processing options (defaults: everything off).

    Soft-NMS takes precedence over hard NMS when both are set. ``model_weights`` are WBF
    weights in the order of the ``raw`` mapping (None: all 1). ``score_threshold`` keeps
    detections scoring at least that much; ``max_detections`` keeps the highest-scoring ones.
    """

    soft_nms: bool = False
    soft_nms_method: str = "linear"
    soft_nms_sigma: float = 0.5
    soft_nms_iou_threshold: float = 0.3
    soft_nms_score_threshold: float = 0.001
    soft_nms_on_masks: bool = False
    nms_iou_threshold: float | None = None
    wbf: bool = False
    wbf_iou_thr: float = 0.55
    wbf_skip_box_thr: float = 0.0
    wbf_conf_type: str = "avg"
    model_weights: tuple[float, ...] | None = None
    score_threshold: float = 0.0
    max_detections: int | None = None

    def __post_init__(self):
        if self.soft_nms_method not in METHODS:
            raise ValueError(f"soft_nms_method must be one of {METHODS}, got "
                             f"{self.soft_nms_method!r}")
        if self.wbf_conf_type not in CONF_TYPES:
            raise ValueError(f"wbf_conf_type must be one of {CONF_TYPES}, got "
                             f"{self.wbf_conf_type!r}")
        if not self.soft_nms_sigma > 0:
            raise ValueError("soft_nms_sigma must be positive")
        for name in ("soft_nms_iou_threshold", "wbf_iou_thr"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.nms_iou_threshold is not None and not 0.0 <= self.nms_iou_threshold <= 1.0:
            raise ValueError("nms_iou_threshold must be in [0, 1] or None")
        if self.max_detections is not None and self.max_detections < 0:
            raise ValueError("max_detections must be >= 0 or None")
        if self.model_weights is not None:
            object.__setattr__(self, "model_weights", tuple(float(w) for w in self.model_weights))
            if any(not w > 0 for w in self.model_weights):
                raise ValueError("model_weights must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


def suppress(inst: Instances, settings: Settings) -> Instances:
    """One model's Soft-NMS or hard NMS step (unchanged when neither is on)."""
    if settings.soft_nms:
        if settings.soft_nms_on_masks and inst.masks is None:
            raise ValueError("Soft-NMS on masks needs instances with masks")
        keep, new_scores = soft_nms(
            inst.boxes, inst.scores, inst.classes, method=settings.soft_nms_method,
            sigma=settings.soft_nms_sigma, iou_threshold=settings.soft_nms_iou_threshold,
            score_threshold=settings.soft_nms_score_threshold,
            masks=inst.masks if settings.soft_nms_on_masks else None)
        return inst[keep].replace(scores=new_scores)
    if settings.nms_iou_threshold is not None:
        return inst[nms(inst.boxes, inst.scores, inst.classes, settings.nms_iou_threshold)]
    return inst


def compose(raw: Mapping[str, Instances], settings: Settings = Settings()) -> Instances:
    """Post-process raw outputs of one image (model key -> Instances) as ``settings`` say.

    One model: its post-processed output. Two or more: their WBF ensemble when
    ``settings.wbf``, else ValueError (the caller picks one model).
    """
    if not raw:
        raise ValueError("compose needs at least one model's output")
    keys = list(raw)
    if len(keys) > 1 and not settings.wbf:
        raise ValueError(f"{len(keys)} models ({', '.join(keys)}) but WBF is off: enable WBF "
                         "to ensemble them or pass one model")
    if settings.model_weights is not None and len(settings.model_weights) != len(keys):
        raise ValueError(f"{len(settings.model_weights)} model weights for {len(keys)} models "
                         f"({', '.join(keys)})")
    per_model = [suppress(raw[k], settings) for k in keys]
    if len(per_model) == 1:
        out = per_model[0]
    else:
        out = weighted_boxes_fusion(per_model, settings.model_weights, settings.wbf_iou_thr,
                                    settings.wbf_skip_box_thr, settings.wbf_conf_type)
    if settings.score_threshold > 0:
        out = out[np.flatnonzero(out.scores >= settings.score_threshold)]
    if settings.max_detections is not None and len(out) > settings.max_detections:
        top = np.argsort(-out.scores, kind="stable")[:settings.max_detections]
        out = out[np.sort(top)]
    return out
