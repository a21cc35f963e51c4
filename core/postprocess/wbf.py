"""Weighted Boxes Fusion of several models' detections, masks included: the boxes are fused
by :mod:`.box_fusion`, then each cluster's masks by :mod:`.mask_fusion`."""
from __future__ import annotations

from typing import Sequence

from ..structures import Instances
from .box_fusion import fuse_boxes
from .mask_fusion import fuse_masks as _fuse_masks  # the flag below is called fuse_masks


def weighted_boxes_fusion(models: Sequence[Instances], weights: Sequence[float] | None = None,
                          iou_thr: float = 0.55, skip_box_thr: float = 0.0,
                          conf_type: str = "avg", fuse_masks: bool = True) -> Instances:
    """Fuse several models' detections on one image into one Instances.

    Boxes and scores are WBF's; each fused mask is the score-weighted average of its members'
    mask probabilities thresholded at 0.5 (see :func:`.mask_fusion.fuse_masks`). Masks are
    fused when every model has masks (else the result is box-only). Output is sorted by score.
    """
    if not models:
        raise ValueError("no models to fuse")
    size = models[0].image_size
    if any(m.image_size != size for m in models):
        raise ValueError("all models must be on the same image size")
    fusion = fuse_boxes([m.boxes for m in models], [m.scores for m in models],
                        [m.classes for m in models], size, weights, iou_thr, skip_box_thr,
                        conf_type)
    masks = None
    if fuse_masks and all(m.masks is not None for m in models):
        masks = _fuse_masks(models, fusion)
    return Instances(size, fusion.boxes, fusion.scores, fusion.labels, masks)
