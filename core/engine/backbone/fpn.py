"""Feature Pyramid Network on top of a ResNet (Detectron2's build_resnet_fpn_backbone)."""
from __future__ import annotations

import math

from torch import nn
from torch.nn import functional as F

from ..layers import Conv2d, ShapeSpec, c2_xavier_fill, get_norm
from ..registry import BACKBONE
from .resnet import build_resnet


class LastLevelMaxPool(nn.Module):
    """P6 = stride-2 subsampling of P5 (Faster/Mask R-CNN)."""

    num_levels = 1
    in_feature = "p5"

    def forward(self, x):
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


class LastLevelP6P7(nn.Module):
    """P6, P7 from C5 or P5 (RetinaNet)."""

    num_levels = 2

    def __init__(self, in_channels, out_channels, in_feature="res5"):
        super().__init__()
        self.p6 = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, 2, 1)
        self.in_feature = in_feature
        for m in (self.p6, self.p7):
            c2_xavier_fill(m)

    def forward(self, x):
        p6 = self.p6(x)
        return [p6, self.p7(F.relu(p6))]


class FPN(nn.Module):
    def __init__(self, bottom_up, in_features, out_channels, norm="", top_block=None,
                 fuse_type="sum", square_pad=0):
        super().__init__()
        shapes = bottom_up.output_shape()
        strides = [shapes[f].stride for f in in_features]
        channels = [shapes[f].channels for f in in_features]
        use_bias = norm == ""
        self.lateral_convs, self.output_convs = [], []
        for in_ch, stride in zip(channels, strides):
            stage = int(math.log2(stride))
            lateral = Conv2d(in_ch, out_channels, 1, bias=use_bias, norm=get_norm(norm, out_channels))
            output = Conv2d(out_channels, out_channels, 3, padding=1, bias=use_bias,
                            norm=get_norm(norm, out_channels))
            c2_xavier_fill(lateral)
            c2_xavier_fill(output)
            self.add_module(f"fpn_lateral{stage}", lateral)
            self.add_module(f"fpn_output{stage}", output)
            self.lateral_convs.append(lateral)
            self.output_convs.append(output)
        # top-down order: coarsest first
        self.lateral_convs = self.lateral_convs[::-1]
        self.output_convs = self.output_convs[::-1]
        self.top_block = top_block
        self.in_features = tuple(in_features)
        self.bottom_up = bottom_up
        self._strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for s in range(last, last + top_block.num_levels):
                self._strides[f"p{s + 1}"] = 2 ** (s + 1)
        self._out_features = list(self._strides)
        self._out_channels = out_channels
        self._size_divisibility = strides[-1]
        self._square_pad = square_pad
        if fuse_type not in ("avg", "sum"):
            raise ValueError("MODEL.FPN.FUSE_TYPE must be 'sum' or 'avg'")
        self._fuse_type = fuse_type

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict:
        return {"square_size": self._square_pad}

    def forward(self, x):
        bottom_up = self.bottom_up(x)
        results = []
        prev = self.lateral_convs[0](bottom_up[self.in_features[-1]])
        results.append(self.output_convs[0](prev))
        for idx, (lateral, output) in enumerate(zip(self.lateral_convs, self.output_convs)):
            if idx == 0:
                continue
            feature = bottom_up[self.in_features[-idx - 1]]
            top_down = F.interpolate(prev, scale_factor=2.0, mode="nearest")
            prev = lateral(feature) + top_down
            if self._fuse_type == "avg":
                prev = prev / 2
            results.insert(0, output(prev))
        if self.top_block is not None:
            source = self.top_block.in_feature
            if source in bottom_up:
                top_input = bottom_up[source]
            else:
                top_input = results[self._out_features.index(source)]
            results.extend(self.top_block(top_input))
        return dict(zip(self._out_features, results))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_channels, stride=self._strides[n])
                for n in self._out_features}


@BACKBONE.register("build_resnet_fpn_backbone")
def build_resnet_fpn_backbone(cfg, input_channels: int = 3):
    bottom_up = build_resnet(cfg, input_channels)
    return FPN(bottom_up, cfg.MODEL.FPN.IN_FEATURES, cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)


@BACKBONE.register("build_retinanet_resnet_fpn_backbone")
def build_retinanet_resnet_fpn_backbone(cfg, input_channels: int = 3):
    bottom_up = build_resnet(cfg, input_channels)
    in_ch = bottom_up.output_shape()["res5"].channels
    return FPN(bottom_up, cfg.MODEL.FPN.IN_FEATURES, cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM,
               top_block=LastLevelP6P7(in_ch, cfg.MODEL.FPN.OUT_CHANNELS),
               fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
