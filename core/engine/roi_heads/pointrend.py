"""PointRend mask head (Kirillov et al. 2020) as Detectron2's PointRend project builds it.

A coarse head predicts a low-resolution mask from point-sampled box features; inference then
refines it by adaptive subdivision: upsample 2x, pick the most uncertain points (logit nearest
0), re-predict them with a point head from fine-grained features, repeat.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..layers import Conv2d, ShapeSpec, c2_msra_fill, c2_xavier_fill
from ...progress import MASK_HEAD, SUBDIVISION, checkpoint
from ..point_features import (point_sample, point_uncertainty,
                              regular_grid_coords, sample_fine_features, sample_point_features,
                              uncertain_grid_points)
from ..registry import POINT_HEAD, ROI_HEADS, ROI_MASK_HEAD
from .mask_head import select_class_masks


# ------------------------------------------------------------------ heads
class ConvFCHead(nn.Module):
    """Coarse mask head: optional 1x1 channel reduction, 2x2/2 conv, fcs, linear mask logits."""

    def __init__(self, input_shape: ShapeSpec, *, conv_dim: int, fc_dims, output_shape):
        super().__init__()
        in_ch, in_h, in_w = input_shape.channels, input_shape.height, input_shape.width
        if in_ch < conv_dim:
            raise ValueError(
                f"MODEL.ROI_MASK_HEAD.CONV_DIM ({conv_dim}) must not exceed the channels of "
                f"the PointRend coarse head's input features ({in_ch}, MODEL.FPN.OUT_CHANNELS)")
        self.output_shape = tuple(output_shape)
        self.conv_layers = []
        if in_ch > conv_dim:
            self.reduce_channel_dim_conv = Conv2d(in_ch, conv_dim, 1, activation=F.relu)
            self.conv_layers.append(self.reduce_channel_dim_conv)
        self.reduce_spatial_dim_conv = Conv2d(conv_dim, conv_dim, 2, stride=2, activation=F.relu)
        self.conv_layers.append(self.reduce_spatial_dim_conv)
        dim = conv_dim * in_h * in_w // 4
        self.fcs = []
        for k, fc_dim in enumerate(fc_dims):
            fc = nn.Linear(dim, fc_dim)
            self.add_module(f"fc{k + 1}", fc)
            self.fcs.append(fc)
            dim = fc_dim
        self.prediction = nn.Linear(dim, int(np.prod(self.output_shape)))
        nn.init.normal_(self.prediction.weight, std=0.001)
        nn.init.constant_(self.prediction.bias, 0)
        for layer in self.conv_layers:
            c2_msra_fill(layer)
        for layer in self.fcs:
            c2_xavier_fill(layer)

    def forward(self, x):
        n = x.shape[0]
        for layer in self.conv_layers:
            x = layer(x)
        x = torch.flatten(x, start_dim=1)
        for layer in self.fcs:
            x = F.relu(layer(x))
        return self.prediction(x).view(n, *self.output_shape)


class StandardPointHead(nn.Module):
    """Shared MLP (1x1 Conv1d) over [fine features, coarse logits] at each point."""

    def __init__(self, in_channels: int, *, num_classes: int, fc_dim: int, num_fc: int,
                 cls_agnostic: bool, coarse_pred_each_layer: bool):
        super().__init__()
        self.coarse_pred_each_layer = coarse_pred_each_layer
        dim = in_channels + num_classes
        self.fc_layers = []
        for k in range(num_fc):
            fc = nn.Conv1d(dim, fc_dim, kernel_size=1)
            self.add_module(f"fc{k + 1}", fc)
            self.fc_layers.append(fc)
            dim = fc_dim + (num_classes if coarse_pred_each_layer else 0)
        self.predictor = nn.Conv1d(dim, 1 if cls_agnostic else num_classes, kernel_size=1)
        for layer in self.fc_layers:
            c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def forward(self, fine, coarse):
        """(R, C, P) fine features and (R, K, P) coarse logits -> (R, classes, P) logits."""
        x = torch.cat([fine, coarse], dim=1).transpose(1, 2)
        return self.forward_points(x, coarse.transpose(1, 2)).transpose(1, 2)

    def forward_points(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Points-major: (R, P, C + K) [fine, coarse] rows and (R, P, K) coarse -> (R, P, classes).

        Each 1x1 Conv1d of upstream is one GEMM over all R*P points here (not R small ones),
        on the same concatenated inputs, so the sums are upstream's.
        """
        for layer in self.fc_layers:
            x = F.relu_(F.linear(x, layer.weight[:, :, 0], layer.bias))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse], dim=2)
        return F.linear(x, self.predictor.weight[:, :, 0], self.predictor.bias)


@POINT_HEAD.register("StandardPointHead")
def build_standard_point_head(cfg, in_channels: int):
    p = cfg.MODEL.POINT_HEAD
    return StandardPointHead(in_channels, num_classes=p.NUM_CLASSES, fc_dim=p.FC_DIM,
                             num_fc=p.NUM_FC, cls_agnostic=p.CLS_AGNOSTIC_MASK,
                             coarse_pred_each_layer=p.COARSE_PRED_EACH_LAYER)


class PointRendMaskHead(nn.Module):
    def __init__(self, *, coarse_head, point_head, feature_strides: dict[str, int],
                 roi_in_features, roi_size: int, point_in_features, init_resolution: int,
                 subdivision_steps: int, subdivision_points: int, train_num_points: int = 196,
                 oversample_ratio: float = 3.0, importance_sample_ratio: float = 0.75):
        super().__init__()
        self.coarse_head = coarse_head
        self.point_head = point_head
        self.mask_point_on = point_head is not None
        self._scales = {k: 1.0 / s for k, s in feature_strides.items()}
        self.roi_in_features = list(roi_in_features)
        self.roi_size = roi_size
        self.point_in_features = list(point_in_features)
        # start subdivision at the largest grid whose 2x upsampling needs no more than the
        # point budget, so every step refines at most ``subdivision_points`` points
        self.init_resolution, self.subdivision_steps = init_resolution, subdivision_steps
        while 4 * self.init_resolution ** 2 <= subdivision_points:
            self.init_resolution *= 2
            self.subdivision_steps -= 1
        self.subdivision_points = subdivision_points
        # training (read by ..losses)
        self.train_num_points = train_num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        # where the training points' uniform draws come from: None = torch.rand; a callable
        # (num_rois, num_points, device) -> (num_rois, num_points, 2) makes them injectable
        # (the trainer's --loss-check and the parity tests use fixed draws)
        self.point_draws = None

    def roi_features(self, features: dict, boxes: list[torch.Tensor]) -> torch.Tensor:
        """Box features on a regular roi_size grid by point sampling (all levels concatenated)."""
        n = sum(len(b) for b in boxes)
        coords = regular_grid_coords(n, self.roi_size, boxes[0].device)
        feats = sample_fine_features([features[k] for k in self.roi_in_features],
                                     [self._scales[k] for k in self.roi_in_features], boxes, coords)
        return feats.view(n, feats.shape[1], self.roi_size, self.roi_size)

    def point_logits(self, features: dict, boxes, coords, coarse):
        """(R, classes, P) point head logits at ``coords`` (R, P, 2) of the boxes."""
        coarse_pts = point_sample(coarse, coords).transpose(1, 2)  # (R, P, K)
        x = sample_point_features([features[k] for k in self.point_in_features],
                                  [self._scales[k] for k in self.point_in_features], boxes,
                                  coords, coarse_pts)
        return self.point_head.forward_points(x, coarse_pts).transpose(1, 2)

    def predict(self, features: dict, boxes: list[torch.Tensor], classes: list[torch.Tensor]):
        """(R, 1, S, S) mask probabilities of each box's class (S = final subdivision size)."""
        coarse = self.coarse_head(self.roi_features(features, boxes))
        checkpoint(MASK_HEAD)
        classes = torch.cat(classes)
        if not self.mask_point_on:
            return select_class_masks(coarse, classes)
        n = len(classes)
        logits = None
        steps = self.subdivision_steps + 1
        for step in range(steps):
            if logits is None:
                coords = regular_grid_coords(n, self.init_resolution, coarse.device)
            else:
                logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
                idx, coords = uncertain_grid_points(point_uncertainty(logits, classes),
                                                    self.subdivision_points)
            pts = self.point_logits(features, boxes, coords, coarse)
            if logits is None:
                r, c, _ = pts.shape
                logits = pts.reshape(r, c, self.init_resolution, self.init_resolution)
                if n == 0:
                    break
            else:
                r, c, h, w = logits.shape
                idx = idx.unsqueeze(1).expand(-1, c, -1)
                logits = logits.reshape(r, c, h * w).scatter_(2, idx, pts).view(r, c, h, w)
            checkpoint(SUBDIVISION, step + 1, steps)
        return select_class_masks(logits, classes)


@ROI_MASK_HEAD.register("PointRendMaskHead")
def build_pointrend_mask_head(cfg, input_shape: dict):
    m = cfg.MODEL.ROI_MASK_HEAD
    p = cfg.MODEL.POINT_HEAD
    roi_in = list(m.IN_FEATURES)
    in_ch = int(sum(input_shape[f].channels for f in roi_in))
    coarse = ConvFCHead(
        ShapeSpec(channels=in_ch, height=m.POOLER_RESOLUTION, width=m.POOLER_RESOLUTION),
        conv_dim=m.CONV_DIM, fc_dims=[m.FC_DIM] * m.NUM_FC,
        output_shape=(cfg.MODEL.ROI_HEADS.NUM_CLASSES, m.OUTPUT_SIDE_RESOLUTION,
                      m.OUTPUT_SIDE_RESOLUTION))
    point_head = None
    if m.POINT_HEAD_ON:
        if p.NUM_CLASSES != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
            raise ValueError(f"MODEL.POINT_HEAD.NUM_CLASSES ({p.NUM_CLASSES}) must equal "
                             f"MODEL.ROI_HEADS.NUM_CLASSES ({cfg.MODEL.ROI_HEADS.NUM_CLASSES})")
        point_ch = int(sum(input_shape[f].channels for f in p.IN_FEATURES))
        point_head = POINT_HEAD.get(p.NAME)(cfg, point_ch)
    return PointRendMaskHead(
        coarse_head=coarse, point_head=point_head,
        feature_strides={k: v.stride for k, v in input_shape.items()},
        roi_in_features=roi_in, roi_size=m.POOLER_RESOLUTION, point_in_features=p.IN_FEATURES,
        init_resolution=m.OUTPUT_SIDE_RESOLUTION, subdivision_steps=p.SUBDIVISION_STEPS,
        subdivision_points=p.SUBDIVISION_NUM_POINTS, train_num_points=p.TRAIN_NUM_POINTS,
        oversample_ratio=p.OVERSAMPLE_RATIO, importance_sample_ratio=p.IMPORTANCE_SAMPLE_RATIO)


@ROI_HEADS.register("PointRendROIHeads")
def build_pointrend_roi_heads(cfg, input_shape):
    """Upstream's PointRendROIHeads is StandardROIHeads plus legacy-checkpoint key renames."""
    from .standard import build_standard_roi_heads

    return build_standard_roi_heads(cfg, input_shape)
