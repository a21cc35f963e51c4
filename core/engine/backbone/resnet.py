"""ResNet / ResNeXt bottom-up backbone with Detectron2's module names (stem, res2..res5)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import Conv2d, DeformConv, FrozenBatchNorm2d, ShapeSpec, c2_msra_fill, get_norm
from ..registry import BACKBONE


class _Block(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def freeze(self):
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class BasicBlock(_Block):
    """Two 3x3 convs (ResNet-18/34)."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN"):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                norm=get_norm(norm, out_channels))
                         if in_channels != out_channels else None)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        self.conv2 = Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x):
        out = self.conv1.forward_relu(x)
        return self.conv2.forward_add_relu(out, self.shortcut(x) if self.shortcut is not None else x)


class BottleneckBlock(_Block):
    """1x1 -> 3x3 (grouped, optionally deformable) -> 1x1 with a projection shortcut."""

    def __init__(self, in_channels, out_channels, *, bottleneck_channels, stride=1, num_groups=1,
                 norm="BN", stride_in_1x1=False, dilation=1, deform=False,
                 deform_modulated=False, deform_num_groups=1):
        super().__init__(in_channels, out_channels, stride)
        self.deform = deform
        self.deform_modulated = deform_modulated
        self.shortcut = (Conv2d(in_channels, out_channels, 1, stride=stride, bias=False,
                                norm=get_norm(norm, out_channels))
                         if in_channels != out_channels else None)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False,
                            norm=get_norm(norm, bottleneck_channels))
        if deform:
            # v1 predicts (dy, dx) per tap (18 channels); v2 adds a modulation scalar (27)
            offset_channels = 27 if deform_modulated else 18
            self.conv2_offset = Conv2d(bottleneck_channels, offset_channels * deform_num_groups,
                                       3, stride=stride_3x3, padding=dilation, dilation=dilation)
            self.conv2 = DeformConv(bottleneck_channels, bottleneck_channels, 3,
                                    stride=stride_3x3, padding=dilation, dilation=dilation,
                                    groups=num_groups, deformable_groups=deform_num_groups,
                                    bias=False, norm=get_norm(norm, bottleneck_channels),
                                    modulated=deform_modulated)
        else:
            self.conv2 = Conv2d(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3,
                                padding=dilation, bias=False, groups=num_groups,
                                dilation=dilation, norm=get_norm(norm, bottleneck_channels))
        self.conv3 = Conv2d(bottleneck_channels, out_channels, 1, bias=False,
                            norm=get_norm(norm, out_channels))
        for layer in (self.conv1, self.conv2, self.conv3, self.shortcut):
            if layer is not None:
                c2_msra_fill(layer)
        if deform:  # start as a plain conv: zero offsets
            nn.init.constant_(self.conv2_offset.weight, 0)
            nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x):
        out = self.conv1.forward_relu(x)
        if self.deform:
            offset = self.conv2_offset(out)
            if self.deform_modulated:
                # first two thirds of the channels are offsets, the last third the modulation
                n = offset.shape[1] // 3
                out = self.conv2(out, offset[:, : 2 * n], offset[:, 2 * n:].sigmoid())
            else:
                out = self.conv2(out, offset)
            out = F.relu_(out)
        else:
            out = self.conv2.forward_relu(out)
        # shortcut first: the fused conv3 + sum + ReLU reads it as a finished tensor
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return self.conv3.forward_add_relu(out, shortcut)


class BasicStem(_Block):
    def __init__(self, in_channels=3, out_channels=64, norm="BN"):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(in_channels, out_channels, 7, stride=2, padding=3, bias=False,
                            norm=get_norm(norm, out_channels))
        c2_msra_fill(self.conv1)

    def forward(self, x):
        x = self.conv1.forward_relu(x)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    def __init__(self, stem: BasicStem, stages: list[list[_Block]], out_features: list[str],
                 freeze_at: int = 0):
        super().__init__()
        self.stem = stem
        self._out_features = list(out_features)
        strides = {"stem": stem.stride}
        channels = {"stem": stem.out_channels}
        self.stage_names = []
        stride = stem.stride
        for i, blocks in enumerate(stages):
            name = f"res{i + 2}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            for b in blocks:
                stride *= b.stride
            strides[name], channels[name] = stride, blocks[-1].out_channels
        self._strides, self._channels = strides, channels
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int):
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, name in enumerate(self.stage_names, start=2):
            if freeze_at >= idx:
                for block in getattr(self, name).children():
                    block.freeze()
        return self

    def forward(self, x):
        out = {}
        x = self.stem(x)
        if "stem" in self._out_features:
            out["stem"] = x
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                out[name] = x
        return out

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._channels[n], stride=self._strides[n])
                for n in self._out_features}

    @property
    def size_divisibility(self) -> int:
        return 0


def build_resnet(cfg, input_channels: int) -> ResNet:
    r = cfg.MODEL.RESNETS
    norm = r.NORM
    depth = r.DEPTH
    stem = BasicStem(input_channels, r.STEM_OUT_CHANNELS, norm)
    blocks_per_stage = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3],
                        101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
    if depth not in blocks_per_stage:
        raise ValueError(f"MODEL.RESNETS.DEPTH must be one of {sorted(blocks_per_stage)}")
    num_groups, width = r.NUM_GROUPS, r.WIDTH_PER_GROUP
    bottleneck = num_groups * width
    in_ch, out_ch = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    dilation5 = r.RES5_DILATION
    if dilation5 not in (1, 2):
        raise ValueError("MODEL.RESNETS.RES5_DILATION must be 1 or 2")
    if depth in (18, 34):
        if out_ch != 64 or dilation5 != 1 or any(r.DEFORM_ON_PER_STAGE):
            raise ValueError("ResNet-18/34 need RES2_OUT_CHANNELS 64, RES5_DILATION 1, no deform")
    stage_ids = {"res2": 2, "res3": 3, "res4": 4, "res5": 5}
    max_stage = max(stage_ids[f] for f in r.OUT_FEATURES if f in stage_ids)
    stages = []
    for idx, stage_idx in enumerate(range(2, max_stage + 1)):
        dilation = dilation5 if stage_idx == 5 else 1
        first_stride = 1 if idx == 0 or (stage_idx == 5 and dilation == 2) else 2
        n = blocks_per_stage[depth][idx]
        blocks = []
        for b in range(n):
            stride = first_stride if b == 0 else 1
            if depth in (18, 34):
                blocks.append(BasicBlock(in_ch, out_ch, stride=stride, norm=norm))
            else:
                blocks.append(BottleneckBlock(
                    in_ch, out_ch, bottleneck_channels=bottleneck, stride=stride,
                    num_groups=num_groups, norm=norm, stride_in_1x1=r.STRIDE_IN_1X1,
                    dilation=dilation, deform=bool(r.DEFORM_ON_PER_STAGE[idx]),
                    deform_modulated=r.DEFORM_MODULATED, deform_num_groups=r.DEFORM_NUM_GROUPS))
            in_ch = out_ch
        stages.append(blocks)
        out_ch *= 2
        bottleneck *= 2
    return ResNet(stem, stages, r.OUT_FEATURES, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)


@BACKBONE.register("build_resnet_backbone")
def build_resnet_backbone(cfg, input_channels: int = 3):
    return build_resnet(cfg, input_channels)
