"""StandardROIHeads: pool proposals, box head + predictor, then the mask branch on final boxes."""
from __future__ import annotations

import torch
from torch import nn

from ..layers import ShapeSpec
from ..losses import standard_roi_heads_losses
from ..poolers import build_pooler
from ...progress import BOX_HEAD, checkpoint
from ..registry import ROI_BOX_HEAD, ROI_HEADS, ROI_MASK_HEAD
from .box_head import build_box_predictor
from .mask_head import select_class_masks


class MaskBranch:
    """Mixin: the mask head on given boxes, pooled (Mask R-CNN) or point-based (PointRend)."""

    mask_on: bool
    mask_in_features: list
    mask_pooler: nn.Module | None
    mask_head: nn.Module

    def predict_masks(self, features: dict, detections: list[dict]) -> list[dict]:
        """Adds ``mask_probs`` (R, 1, M, M) to each image's detections."""
        if not self.mask_on:
            return detections
        boxes = [d["boxes"] for d in detections]
        classes = [d["classes"] for d in detections]
        if self.mask_pooler is not None:
            feats = [features[f] for f in self.mask_in_features]
            x = self.mask_pooler(feats, boxes)
            # an empty batch flows through the convs as well: no special case
            probs = select_class_masks(self.mask_head.layers(x), torch.cat(classes))
        else:
            probs = self.mask_head.predict({f: features[f] for f in self.mask_in_features},
                                           boxes, classes)
        for d, p in zip(detections, probs.split([len(b) for b in boxes])):
            d["mask_probs"] = p
        return detections


class StandardROIHeads(MaskBranch, nn.Module):
    def __init__(self, *, box_in_features, box_pooler, box_head, box_predictor,
                 mask_in_features=None, mask_pooler=None, mask_head=None, num_classes: int,
                 batch_size_per_image=512, positive_fraction=0.25, proposal_matcher=None,
                 proposal_append_gt=True, train_on_pred_boxes=False):
        super().__init__()
        self.num_classes = num_classes
        self.box_in_features = list(box_in_features)
        self.box_pooler = box_pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.mask_on = mask_head is not None
        if self.mask_on:
            self.mask_in_features = list(mask_in_features)
            self.mask_pooler = mask_pooler
            self.mask_head = mask_head
        # training-only settings (read by ..losses)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.proposal_matcher = proposal_matcher
        self.proposal_append_gt = proposal_append_gt
        self.train_on_pred_boxes = train_on_pred_boxes

    def forward(self, image_sizes, features, proposals, targets=None):
        if self.training and targets is not None:
            return None, standard_roi_heads_losses(self, image_sizes, features, proposals, targets)
        detections = self.detect_boxes(image_sizes, features, proposals)
        return self.predict_masks(features, detections), {}

    def box_predictions(self, features, proposal_boxes: list[torch.Tensor]):
        x = self.box_pooler([features[f] for f in self.box_in_features], proposal_boxes)
        return self.box_predictor(self.box_head(x))

    def detect_boxes(self, image_sizes, features, proposals) -> list[dict]:
        boxes = [p["boxes"] for p in proposals]
        predictions = self.box_predictions(features, boxes)
        checkpoint(BOX_HEAD)
        return self.box_predictor.inference(predictions, boxes, image_sizes)


def pooled_shape(cfg_head, input_shape, in_features) -> ShapeSpec:
    channels = {input_shape[f].channels for f in in_features}
    if len(channels) != 1:
        raise ValueError("ROI head input features must have the same channel count")
    r = cfg_head.POOLER_RESOLUTION
    return ShapeSpec(channels=channels.pop(), height=r, width=r)


def build_mask_branch(cfg, input_shape):
    if not cfg.MODEL.MASK_ON:
        return {}
    m = cfg.MODEL.ROI_MASK_HEAD
    # a pooled head gets the ROI_HEADS features; a pooler-free head (PointRend) gets them as a
    # dict and picks its own levels, as upstream does
    in_features = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
    if m.POOLER_TYPE:
        pooler = build_pooler(m, input_shape, in_features)
        head = ROI_MASK_HEAD.get(m.NAME)(cfg, pooled_shape(m, input_shape, in_features))
    else:
        pooler = None
        head = ROI_MASK_HEAD.get(m.NAME)(cfg, {f: input_shape[f] for f in in_features})
    return {"mask_in_features": in_features, "mask_pooler": pooler, "mask_head": head}


@ROI_HEADS.register("StandardROIHeads")
def build_standard_roi_heads(cfg, input_shape):
    from ..matcher import Matcher

    r = cfg.MODEL.ROI_HEADS
    b = cfg.MODEL.ROI_BOX_HEAD
    in_features = list(r.IN_FEATURES)
    box_head = ROI_BOX_HEAD.get(b.NAME)(cfg, pooled_shape(b, input_shape, in_features))
    return StandardROIHeads(
        box_in_features=in_features, box_pooler=build_pooler(b, input_shape, in_features),
        box_head=box_head, box_predictor=build_box_predictor(cfg, box_head.output_shape),
        num_classes=r.NUM_CLASSES, batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
        positive_fraction=r.POSITIVE_FRACTION,
        proposal_matcher=Matcher(r.IOU_THRESHOLDS, r.IOU_LABELS, allow_low_quality_matches=False),
        proposal_append_gt=r.PROPOSAL_APPEND_GT, train_on_pred_boxes=b.TRAIN_ON_PRED_BOXES,
        **build_mask_branch(cfg, input_shape),
    )
