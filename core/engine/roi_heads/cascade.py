"""Cascade R-CNN box heads (Cai & Vasconcelos 2018) on Detectron2's StandardROIHeads layout.

Each stage pools the previous stage's boxes, runs its own box head and class-agnostic
predictor with its own regression weights; at test time the class scores of all stages are
averaged and the last stage's boxes are kept. The mask head runs once, on the final boxes.
"""
from __future__ import annotations

import torch
from torch import nn

from ..box_ops import Box2BoxTransform, clip_boxes
from ..poolers import build_pooler
from ...progress import BOX_HEAD, checkpoint
from ..registry import ROI_BOX_HEAD, ROI_HEADS
from .box_head import build_box_predictor, fast_rcnn_inference
from .standard import StandardROIHeads, build_mask_branch, pooled_shape


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; gradient scaled by 1/num_stages (shared features get one stage's worth)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


class CascadeROIHeads(StandardROIHeads):
    def __init__(self, *, box_heads, box_predictors, proposal_matchers, **kwargs):
        if not (len(box_heads) == len(box_predictors) == len(proposal_matchers)):
            raise ValueError("cascade stages need one head, predictor and matcher each")
        super().__init__(box_head=nn.ModuleList(box_heads),
                         box_predictor=nn.ModuleList(box_predictors), **kwargs)
        self.num_cascade_stages = len(box_heads)
        self.proposal_matchers = proposal_matchers

    def run_stage(self, features, boxes: list[torch.Tensor], stage: int):
        x = self.box_pooler([features[f] for f in self.box_in_features], boxes)
        if self.training:
            x = _ScaleGradient.apply(x, 1.0 / self.num_cascade_stages)
        return self.box_predictor[stage](self.box_head[stage](x))

    def detect_boxes(self, image_sizes, features, proposals) -> list[dict]:
        boxes = [p["boxes"] for p in proposals]
        stage_probs = []
        for k in range(self.num_cascade_stages):
            if k > 0:
                # next stage's proposals: this stage's boxes, clipped; empty boxes are kept so
                # that the stages' scores stay aligned for averaging
                boxes = [clip_boxes(b.detach(), size) for b, size in zip(prev_boxes, image_sizes)]
            predictions = self.run_stage(features, boxes, k)
            predictor = self.box_predictor[k]
            prev_boxes = predictor.predict_boxes(predictions, boxes)
            stage_probs.append(predictor.predict_probs(predictions, boxes))
            checkpoint(BOX_HEAD, k + 1, self.num_cascade_stages)
        # mean over stages, written as upstream writes it (sum, then times 1/n) for identical rounding
        scores = [sum(list(per_image)) * (1.0 / self.num_cascade_stages)
                  for per_image in zip(*stage_probs)]
        last = self.box_predictor[-1]
        return fast_rcnn_inference(prev_boxes, scores, image_sizes, last.test_score_thresh,
                                   last.test_nms_thresh, last.test_topk_per_image)


@ROI_HEADS.register("CascadeROIHeads")
def build_cascade_roi_heads(cfg, input_shape):
    from ..matcher import Matcher

    r = cfg.MODEL.ROI_HEADS
    b = cfg.MODEL.ROI_BOX_HEAD
    c = cfg.MODEL.ROI_BOX_CASCADE_HEAD
    if len(c.BBOX_REG_WEIGHTS) != len(c.IOUS):
        raise ValueError("MODEL.ROI_BOX_CASCADE_HEAD.BBOX_REG_WEIGHTS and IOUS must have the "
                         "same length (one per stage)")
    if not b.CLS_AGNOSTIC_BBOX_REG:
        raise ValueError("CascadeROIHeads needs MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG: true")
    in_features = list(r.IN_FEATURES)
    shape = pooled_shape(b, input_shape, in_features)
    heads, predictors, matchers = [], [], []
    for weights, iou in zip(c.BBOX_REG_WEIGHTS, c.IOUS):
        head = ROI_BOX_HEAD.get(b.NAME)(cfg, shape)
        heads.append(head)
        predictors.append(build_box_predictor(cfg, head.output_shape, Box2BoxTransform(weights)))
        matchers.append(Matcher([iou], [0, 1], allow_low_quality_matches=False))
    return CascadeROIHeads(
        box_in_features=in_features, box_pooler=build_pooler(b, input_shape, in_features),
        box_heads=heads, box_predictors=predictors, proposal_matchers=matchers,
        num_classes=r.NUM_CLASSES, batch_size_per_image=r.BATCH_SIZE_PER_IMAGE,
        positive_fraction=r.POSITIVE_FRACTION, proposal_matcher=matchers[0],
        proposal_append_gt=r.PROPOSAL_APPEND_GT, train_on_pred_boxes=b.TRAIN_ON_PRED_BOXES,
        **build_mask_branch(cfg, input_shape),
    )
