"""PointRend's point sampling: bilinear features at box-relative points, point uncertainty.

Shared by the PointRend mask head (inference, :mod:`.roi_heads.pointrend`) and its training
losses (:mod:`.losses`), as Detectron2's ``point_rend/point_features.py``.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


def point_sample(features: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of (N, C, H, W) at coords in [0, 1]^2.

    (N, P, 2) coords give (N, C, P); (N, Ho, Wo, 2) coords give (N, C, Ho, Wo).
    """
    if coords.dim() == 3:
        return F.grid_sample(features, 2.0 * coords.unsqueeze(2) - 1.0,
                             align_corners=False).squeeze(3)
    return F.grid_sample(features, 2.0 * coords - 1.0, align_corners=False)


def regular_grid_coords(num_boxes: int, side: int, device) -> torch.Tensor:
    """(R, side*side, 2) cell-centre coordinates of a side x side grid in [0, 1]^2."""
    aff = torch.tensor([[[0.5, 0, 0.5], [0, 0.5, 0.5]]], device=device)
    grid = F.affine_grid(aff, torch.Size((1, 1, side, side)), align_corners=False)
    return grid.view(1, -1, 2).expand(num_boxes, -1, -1)


def uncertain_grid_points(uncertainty: torch.Tensor, num_points: int):
    """Indices and [0, 1]^2 coordinates of the ``num_points`` most uncertain grid cells."""
    r, _, h, w = uncertainty.shape
    num_points = min(h * w, num_points)
    idx = torch.topk(uncertainty.view(r, h * w), k=num_points, dim=1)[1]
    coords = torch.zeros(r, num_points, 2, dtype=torch.float, device=uncertainty.device)
    coords[:, :, 0] = 1.0 / w / 2.0 + (idx % w).to(torch.float) * (1.0 / w)
    coords[:, :, 1] = 1.0 / h / 2.0 + (idx // w).to(torch.float) * (1.0 / h)
    return idx, coords


def coords_in_image(boxes: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Box-relative [0, 1]^2 point coordinates -> image pixel coordinates."""
    out = coords.clone()
    out[:, :, 0] = out[:, :, 0] * (boxes[:, None, 2] - boxes[:, None, 0])
    out[:, :, 1] = out[:, :, 1] * (boxes[:, None, 3] - boxes[:, None, 1])
    out[:, :, 0] += boxes[:, None, 0]
    out[:, :, 1] += boxes[:, None, 1]
    return out


def sample_fine_features(features: list[torch.Tensor], scales: list[float],
                         boxes: list[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
    """Features of every level at each box's points, concatenated over levels -> (R, C, P)."""
    in_image = coords_in_image(torch.cat(boxes), coords)
    per_image = []
    for i, pts in enumerate(torch.split(in_image, [len(b) for b in boxes])):
        levels = []
        for feat, scale in zip(features, scales):
            h, w = feat.shape[-2:]
            # normalise by the padded image size the feature map covers
            size = torch.as_tensor([w, h]) / scale
            levels.append(point_sample(feat[i:i + 1], (pts / size.to(feat.device)).unsqueeze(0))
                          .squeeze(0).transpose(1, 0))
        per_image.append(torch.cat(levels, dim=1))
    return torch.cat(per_image, dim=0)


def sample_point_features(features: list[torch.Tensor], scales: list[float],
                          boxes: list[torch.Tensor], coords: torch.Tensor,
                          extra: torch.Tensor | None = None) -> torch.Tensor:
    """Points-major fine features: (R, P, sum C [+ E]), ``extra`` (R, P, E) appended.

    The point head's input is built here in one buffer, written once per level: no
    channels-major intermediate to transpose, no separate concatenation with the coarse
    logits (upstream's ``cat`` of the two, in the same column order).
    """
    in_image = coords_in_image(torch.cat(boxes), coords)
    r, p = coords.shape[:2]
    width = sum(f.shape[1] for f in features) + (0 if extra is None else extra.shape[2])
    out = coords.new_empty((r, p, width), dtype=features[0].dtype)
    start = 0
    for i, pts in enumerate(torch.split(in_image, [len(b) for b in boxes])):
        end, col = start + len(pts), 0
        for feat, scale in zip(features, scales):
            h, w = feat.shape[-2:]
            size = torch.as_tensor([w, h]) / scale
            sampled = point_sample(feat[i:i + 1], (pts / size.to(feat.device)).unsqueeze(0))
            out[start:end, :, col:col + feat.shape[1]] = sampled[0].permute(1, 2, 0)
            col += feat.shape[1]
        start = end
    if extra is not None:
        out[:, :, col:] = extra
    return out


def point_uncertainty(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """-|logit| of each instance's class: the points nearest the decision boundary score highest."""
    if logits.shape[1] == 1:
        chosen = logits.clone()
    else:
        chosen = logits[torch.arange(logits.shape[0], device=logits.device), classes].unsqueeze(1)
    return -torch.abs(chosen)
