"""Anchor generation on a grid of feature-map positions (Detectron2's DefaultAnchorGenerator)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import ANCHOR_GENERATOR


def _broadcast(values, num_levels: int, name: str) -> list[list[float]]:
    """A list of lists per level, or one list used for every level."""
    if not isinstance(values[0], (list, tuple)):
        return [list(values)] * num_levels
    if len(values) == 1:
        return [list(values[0])] * num_levels
    if len(values) != num_levels:
        raise ValueError(f"MODEL.ANCHOR_GENERATOR.{name}: {len(values)} entries for "
                         f"{num_levels} feature levels")
    return [list(v) for v in values]


class DefaultAnchorGenerator(nn.Module):
    box_dim = 4

    def __init__(self, sizes, aspect_ratios, strides, offset: float = 0.0):
        super().__init__()
        self.strides = list(strides)
        self.num_features = len(self.strides)
        sizes = _broadcast(sizes, self.num_features, "SIZES")
        ratios = _broadcast(aspect_ratios, self.num_features, "ASPECT_RATIOS")
        self.cell_anchors = [self._cell_anchors(s, r) for s, r in zip(sizes, ratios)]
        if not 0.0 <= offset < 1.0:
            raise ValueError("MODEL.ANCHOR_GENERATOR.OFFSET must be in [0, 1)")
        self.offset = offset

    @staticmethod
    def _cell_anchors(sizes, aspect_ratios) -> torch.Tensor:
        anchors = []
        for size in sizes:  # sizes outer, ratios inner: the order the RPN head's outputs use
            area = size ** 2.0
            for ratio in aspect_ratios:
                w = math.sqrt(area / ratio)
                h = ratio * w
                anchors.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
        return torch.tensor(anchors)

    @property
    def num_anchors(self) -> list[int]:
        return [len(a) for a in self.cell_anchors]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for feat, stride, base in zip(features, self.strides, self.cell_anchors):
            h, w = feat.shape[-2:]
            device = feat.device
            shifts_x = torch.arange(self.offset * stride, w * stride, step=stride,
                                    dtype=torch.float32, device=device)
            shifts_y = torch.arange(self.offset * stride, h * stride, step=stride,
                                    dtype=torch.float32, device=device)
            sy, sx = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            sx, sy = sx.reshape(-1), sy.reshape(-1)
            shifts = torch.stack((sx, sy, sx, sy), dim=1)
            out.append((shifts.view(-1, 1, 4) + base.to(device).view(1, -1, 4)).reshape(-1, 4))
        return out


@ANCHOR_GENERATOR.register("DefaultAnchorGenerator")
def build_default_anchor_generator(cfg, input_shape):
    a = cfg.MODEL.ANCHOR_GENERATOR
    return DefaultAnchorGenerator(a.SIZES, a.ASPECT_RATIOS, [s.stride for s in input_shape],
                                  a.OFFSET)
