"""Multi-level ROI pooling with Detectron2's box-to-level assignment."""
from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import roi_align


def assign_boxes_to_levels(boxes: list[torch.Tensor], min_level: int, max_level: int,
                           canonical_box_size: int = 224, canonical_level: int = 4):
    """FPN paper eq. 1: level = floor(k0 + log2(sqrt(area) / 224)), clamped, as 0-based index."""
    sizes = torch.sqrt(torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes]))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8))
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


def boxes_to_pooler_format(boxes: list[torch.Tensor]) -> torch.Tensor:
    """List of per-image (Ri, 4) boxes -> (sum Ri, 5) with the batch index first."""
    return torch.cat([torch.cat([torch.full((len(b), 1), float(i), dtype=b.dtype,
                                            device=b.device), b], dim=1)
                      for i, b in enumerate(boxes)], dim=0)


class ROIPooler(nn.Module):
    def __init__(self, output_size: int, scales: list[float], sampling_ratio: int,
                 pooler_type: str, canonical_box_size: int = 224, canonical_level: int = 4):
        super().__init__()
        if pooler_type not in ("ROIAlign", "ROIAlignV2"):
            raise ValueError(f"unsupported POOLER_TYPE {pooler_type!r} "
                             "(this engine supports ROIAlign and ROIAlignV2)")
        self.output_size = (output_size, output_size)
        self.scales = list(scales)
        self.sampling_ratio = sampling_ratio
        self.aligned = pooler_type == "ROIAlignV2"  # V2 = half-pixel-correct sampling
        self.min_level = int(-math.log2(scales[0]))
        self.max_level = int(-math.log2(scales[-1]))
        if len(scales) != self.max_level - self.min_level + 1:
            raise ValueError("pooler scales must be consecutive powers of 1/2")
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def forward(self, features: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        rois = boxes_to_pooler_format(boxes)
        channels = features[0].shape[1]
        if len(self.scales) == 1:
            return self._pool(features[0], rois, self.scales[0])
        levels = assign_boxes_to_levels(boxes, self.min_level, self.max_level,
                                        self.canonical_box_size, self.canonical_level)
        # every box is assigned exactly one level, so every row is written: no zero-fill
        out = features[0].new_empty((len(rois), channels) + self.output_size)
        for level, (feat, scale) in enumerate(zip(features, self.scales)):
            inds = torch.nonzero(levels == level, as_tuple=True)[0]
            if len(inds):
                out.index_put_((inds,), self._pool(feat, rois[inds], scale))
        return out

    def _pool(self, feat, rois, scale):
        return roi_align(feat, rois.to(feat.dtype), self.output_size, scale,
                         self.sampling_ratio, self.aligned)


def build_pooler(cfg_head, input_shape: dict, in_features) -> ROIPooler:
    scales = [1.0 / input_shape[f].stride for f in in_features]
    return ROIPooler(cfg_head.POOLER_RESOLUTION, scales, cfg_head.POOLER_SAMPLING_RATIO,
                     cfg_head.POOLER_TYPE)
