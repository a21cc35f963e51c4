"""Box arithmetic on (N, 4) XYXY tensors, as Detectron2 computes it."""
from __future__ import annotations

import math

import torch
from torchvision.ops import boxes as tv_boxes

# Upstream's cap on exp(dw): boxes grow at most 1000/16 times per regression step
SCALE_CLAMP = math.log(1000.0 / 16)


class Box2BoxTransform:
    """The R-CNN (dx, dy, dw, dh) parametrisation with per-coordinate weights."""

    def __init__(self, weights, scale_clamp: float = SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def get_deltas(self, src: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        src_w = src[:, 2] - src[:, 0]
        src_h = src[:, 3] - src[:, 1]
        src_x = src[:, 0] + 0.5 * src_w
        src_y = src[:, 1] + 0.5 * src_h
        tgt_w = target[:, 2] - target[:, 0]
        tgt_h = target[:, 3] - target[:, 1]
        tgt_x = target[:, 0] + 0.5 * tgt_w
        tgt_y = target[:, 1] + 0.5 * tgt_h
        wx, wy, ww, wh = self.weights
        return torch.stack((wx * (tgt_x - src_x) / src_w, wy * (tgt_y - src_y) / src_h,
                            ww * torch.log(tgt_w / src_w), wh * torch.log(tgt_h / src_h)), dim=1)

    def apply_deltas(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """deltas (N, k*4) applied to boxes (N, 4) -> (N, k*4)."""
        deltas = deltas.float()
        boxes = boxes.to(deltas.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = deltas[:, 0::4] / wx
        dy = deltas[:, 1::4] / wy
        dw = torch.clamp(deltas[:, 2::4] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[:, 3::4] / wh, max=self.scale_clamp)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]
        x1 = pred_ctr_x - 0.5 * pred_w
        y1 = pred_ctr_y - 0.5 * pred_h
        x2 = pred_ctr_x + 0.5 * pred_w
        y2 = pred_ctr_y + 0.5 * pred_h
        return torch.stack((x1, y1, x2, y2), dim=-1).reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Clamp XYXY boxes into [0, W] x [0, H] (returns a new tensor)."""
    h, w = image_size
    x1 = boxes[:, 0].clamp(min=0, max=w)
    y1 = boxes[:, 1].clamp(min=0, max=h)
    x2 = boxes[:, 2].clamp(min=0, max=w)
    y2 = boxes[:, 3].clamp(min=0, max=h)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def nonempty(boxes: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return tv_boxes.box_iou(a, b)


def batched_nms(boxes, scores, idxs, iou_threshold: float) -> torch.Tensor:
    """Class-aware NMS (torchvision); float32 because half precision lacks the range."""
    return tv_boxes.batched_nms(boxes.float(), scores, idxs, iou_threshold)
