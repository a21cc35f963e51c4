"""Box head (convs + fcs) and the box predictor with Detectron2's inference."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..box_ops import Box2BoxTransform, batched_nms, clip_boxes, nonempty
from ..layers import Conv2d, ShapeSpec, c2_msra_fill, c2_xavier_fill, get_norm
from ..registry import ROI_BOX_HEAD


class FastRCNNConvFCHead(nn.Sequential):
    """conv1..convN (3x3, norm, ReLU), flatten, fc1..fcM (ReLU)."""

    def __init__(self, input_shape: ShapeSpec, *, conv_dims, fc_dims, conv_norm=""):
        super().__init__()
        shape = (input_shape.channels, input_shape.height, input_shape.width)
        self.conv_norm_relus = []
        for k, dim in enumerate(conv_dims):
            conv = Conv2d(shape[0], dim, 3, padding=1, bias=not conv_norm,
                          norm=get_norm(conv_norm, dim), activation=nn.ReLU())
            self.add_module(f"conv{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            shape = (dim, shape[1], shape[2])
        self.fcs = []
        for k, dim in enumerate(fc_dims):
            if k == 0:
                self.add_module("flatten", nn.Flatten())
            fc = nn.Linear(int(np.prod(shape)), dim)
            self.add_module(f"fc{k + 1}", fc)
            self.add_module(f"fc_relu{k + 1}", nn.ReLU())
            self.fcs.append(fc)
            shape = (dim,)
        for layer in self.conv_norm_relus:
            c2_msra_fill(layer)
        for layer in self.fcs:
            c2_xavier_fill(layer)
        self._output_size = shape

    @property
    def output_shape(self) -> ShapeSpec:
        s = self._output_size
        return ShapeSpec(channels=s[0]) if len(s) == 1 else ShapeSpec(channels=s[0], height=s[1], width=s[2])


@ROI_BOX_HEAD.register("FastRCNNConvFCHead")
def build_fast_rcnn_conv_fc_head(cfg, input_shape: ShapeSpec):
    h = cfg.MODEL.ROI_BOX_HEAD
    return FastRCNNConvFCHead(input_shape, conv_dims=[h.CONV_DIM] * h.NUM_CONV,
                              fc_dims=[h.FC_DIM] * h.NUM_FC, conv_norm=h.NORM)


class FastRCNNOutputLayers(nn.Module):
    """Linear class scores (K+1, background last) and box deltas (per class or agnostic)."""

    def __init__(self, input_size: int, num_classes: int, box2box_transform: Box2BoxTransform,
                 cls_agnostic_bbox_reg: bool = False, test_score_thresh: float = 0.05,
                 test_nms_thresh: float = 0.5, test_topk_per_image: int = 100,
                 smooth_l1_beta: float = 0.0, box_reg_loss_type: str = "smooth_l1",
                 loss_weight=1.0, use_sigmoid_ce: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.cls_score = nn.Linear(input_size, num_classes + 1)
        num_reg = 1 if cls_agnostic_bbox_reg else num_classes
        self.bbox_pred = nn.Linear(input_size, num_reg * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        for layer in (self.cls_score, self.bbox_pred):
            nn.init.constant_(layer.bias, 0)
        self.box2box_transform = box2box_transform
        self.test_score_thresh = test_score_thresh
        self.test_nms_thresh = test_nms_thresh
        self.test_topk_per_image = test_topk_per_image
        self.smooth_l1_beta = smooth_l1_beta
        self.box_reg_loss_type = box_reg_loss_type
        if isinstance(loss_weight, float):
            loss_weight = {"loss_cls": loss_weight, "loss_box_reg": loss_weight}
        self.loss_weight = loss_weight
        self.use_sigmoid_ce = use_sigmoid_ce

    def forward(self, x):
        if x.dim() > 2:
            x = torch.flatten(x, start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)

    def predict_boxes(self, predictions, proposals: list[torch.Tensor]) -> list[torch.Tensor]:
        if not len(proposals):
            return []
        _, deltas = predictions
        boxes = torch.cat(proposals, dim=0)
        pred = self.box2box_transform.apply_deltas(deltas, boxes)
        return pred.split([len(p) for p in proposals])

    def predict_probs(self, predictions, proposals: list[torch.Tensor]) -> list[torch.Tensor]:
        scores, _ = predictions
        if self.use_sigmoid_ce:
            probs = torch.sigmoid(scores)
        else:
            probs = F.softmax(scores, dim=-1)
        return probs.split([len(p) for p in proposals], dim=0)

    def inference(self, predictions, proposals, image_sizes):
        boxes = self.predict_boxes(predictions, proposals)
        scores = self.predict_probs(predictions, proposals)
        return fast_rcnn_inference(boxes, scores, image_sizes, self.test_score_thresh,
                                   self.test_nms_thresh, self.test_topk_per_image)


def fast_rcnn_inference(boxes, scores, image_sizes, score_thresh, nms_thresh, topk_per_image):
    return [fast_rcnn_inference_single_image(b, s, size, score_thresh, nms_thresh, topk_per_image)
            for b, s, size in zip(boxes, scores, image_sizes)]


def fast_rcnn_inference_single_image(boxes, scores, image_size, score_thresh, nms_thresh,
                                     topk_per_image) -> dict:
    """Per-class score threshold, per-class NMS and top-k on one image.

    ``boxes`` (R, K*4) or (R, 4) for class-agnostic regression; ``scores`` (R, K+1).
    Returns ``boxes`` (D, 4), ``scores`` (D,), ``classes`` (D,) and ``indices`` (D,) of the
    originating rows.
    """
    valid = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores).all(dim=1)
    rows = torch.arange(len(boxes), device=boxes.device)
    if not valid.all():
        boxes, scores, rows = boxes[valid], scores[valid], rows[valid]
    scores = scores[:, :-1]  # drop background
    num_reg = boxes.shape[1] // 4
    boxes = clip_boxes(boxes.reshape(-1, 4), image_size).view(-1, num_reg, 4)
    mask = scores > score_thresh
    inds = mask.nonzero()
    boxes = boxes[inds[:, 0], 0] if num_reg == 1 else boxes[mask]
    scores = scores[mask]
    keep = batched_nms(boxes, scores, inds[:, 1], nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    return {"boxes": boxes[keep], "scores": scores[keep], "classes": inds[keep, 1],
            "indices": rows[inds[keep, 0]]}


def build_box_predictor(cfg, input_shape: ShapeSpec, box2box_transform=None):
    h = cfg.MODEL.ROI_BOX_HEAD
    size = input_shape.channels * (input_shape.width or 1) * (input_shape.height or 1)
    return FastRCNNOutputLayers(
        size, cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        box2box_transform or Box2BoxTransform(h.BBOX_REG_WEIGHTS),
        cls_agnostic_bbox_reg=h.CLS_AGNOSTIC_BBOX_REG,
        test_score_thresh=cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        test_nms_thresh=cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
        test_topk_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        smooth_l1_beta=h.SMOOTH_L1_BETA, box_reg_loss_type=h.BBOX_REG_LOSS_TYPE,
        loss_weight={"loss_box_reg": h.BBOX_REG_LOSS_WEIGHT, "loss_cls": 1.0},
        use_sigmoid_ce=h.USE_SIGMOID_CE,
    )


__all__ = ["FastRCNNConvFCHead", "FastRCNNOutputLayers", "fast_rcnn_inference",
           "fast_rcnn_inference_single_image", "build_box_predictor", "nonempty"]
