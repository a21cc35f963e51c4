"""Mask R-CNN mask head: conv stack, 2x deconv, per-class 1x1 predictor."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import Conv2d, ShapeSpec, c2_msra_fill, get_norm
from ...progress import MASK_HEAD, checkpoint
from ..registry import ROI_MASK_HEAD


class MaskRCNNConvUpsampleHead(nn.Sequential):
    def __init__(self, input_shape: ShapeSpec, *, num_classes: int, conv_dims, conv_norm="",
                 cls_agnostic: bool = False, loss_weight: float = 1.0, vis_period: int = 0):
        super().__init__()
        if len(conv_dims) < 1:
            raise ValueError("MODEL.ROI_MASK_HEAD.NUM_CONV must be >= 1")
        self.loss_weight = loss_weight
        self.cls_agnostic = cls_agnostic
        self.conv_norm_relus = []
        ch = input_shape.channels
        for k, dim in enumerate(conv_dims[:-1]):
            conv = Conv2d(ch, dim, 3, padding=1, bias=not conv_norm,
                          norm=get_norm(conv_norm, dim), activation=nn.ReLU())
            self.add_module(f"mask_fcn{k + 1}", conv)
            self.conv_norm_relus.append(conv)
            ch = dim
        self.deconv = nn.ConvTranspose2d(ch, conv_dims[-1], kernel_size=2, stride=2)
        self.add_module("deconv_relu", nn.ReLU())
        self.predictor = nn.Conv2d(conv_dims[-1], 1 if cls_agnostic else num_classes, 1)
        for layer in self.conv_norm_relus + [self.deconv]:
            c2_msra_fill(layer)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 0)

    def layers(self, x):
        # a checkpoint after each layer: with TTA's hundreds of boxes per image this head is
        # the longest stage, and a cancel should not wait for all of it
        n = len(self)
        for k, layer in enumerate(self, 1):
            x = layer(x)
            checkpoint(MASK_HEAD, k, n)
        return x


def select_class_masks(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(R, C, M, M) logits -> (R, 1, M, M) probabilities of each instance's predicted class."""
    if logits.shape[1] == 1:
        probs = logits.sigmoid()
    else:
        idx = torch.arange(len(logits), device=logits.device)
        probs = logits[idx, classes][:, None].sigmoid()
    return probs


@ROI_MASK_HEAD.register("MaskRCNNConvUpsampleHead")
def build_mask_rcnn_head(cfg, input_shape: ShapeSpec):
    m = cfg.MODEL.ROI_MASK_HEAD
    return MaskRCNNConvUpsampleHead(
        input_shape, num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES,
        conv_dims=[m.CONV_DIM] * (m.NUM_CONV + 1), conv_norm=m.NORM,
        cls_agnostic=m.CLS_AGNOSTIC_MASK, vis_period=cfg.VIS_PERIOD)


__all__ = ["MaskRCNNConvUpsampleHead", "select_class_masks", "F"]
