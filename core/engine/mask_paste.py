"""Paste box-frame soft masks into the image, as Detectron2's paste_masks_in_image (CPU path).

Upstream samples each mask with ``grid_sample`` at the pixel centres of a window reaching one
pixel beyond its box, then thresholds. Pixels further out sample only zero padding, so the
window holds every pixel that can be set. Here all masks are sampled in a few batched
``grid_sample`` calls over their windows (grouped by window size to bound memory) and the
results go straight into :class:`CroppedMasks`, never into an (N, H, W) tensor.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..structures import CroppedMasks

# elements of one grid_sample batch; windows are grouped so that padding waste stays small
_CHUNK_ELEMENTS = 1 << 24


def paste_windows(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """(N, 4) int64 windows [x0, y0, x1, y1]: the box grown to whole pixels plus one pixel."""
    h, w = image_size
    x0 = torch.clamp(boxes[:, 0].floor() - 1, min=0)
    y0 = torch.clamp(boxes[:, 1].floor() - 1, min=0)
    x1 = torch.clamp(boxes[:, 2].ceil() + 1, max=w)
    y1 = torch.clamp(boxes[:, 3].ceil() + 1, max=h)
    win = torch.stack([x0, y0, x1, y1], 1).to(torch.int64)
    # degenerate boxes: empty windows
    win[:, 2] = torch.maximum(win[:, 2], win[:, 0])
    win[:, 3] = torch.maximum(win[:, 3], win[:, 1])
    return win


def _chunks(sizes: torch.Tensor) -> tuple[list[int], list[tuple[int, int, int, int]]]:
    """Order windows by area and cut into chunks whose padded batch fits the element budget."""
    area = (sizes[:, 0] * sizes[:, 1]).clamp(min=1)
    order = torch.argsort(area).tolist()
    # sorted by area, a chunk's padded size is bounded by its last element's extent; a
    # running max over the sorted widths/heights gives the padding each prefix needs
    w_sorted = torch.cummax(sizes[order, 0].clamp(min=1), 0).values.tolist()
    h_sorted = torch.cummax(sizes[order, 1].clamp(min=1), 0).values.tolist()
    chunks, start = [], 0
    for end in range(1, len(order) + 1):
        last = end == len(order)
        if last or (end + 1 - start) * h_sorted[end] * w_sorted[end] > _CHUNK_ELEMENTS:
            chunks.append((start, end, h_sorted[end - 1], w_sorted[end - 1]))
            start = end
    return order, chunks


def paste_masks(probs: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                threshold: float = 0.5) -> CroppedMasks:
    """(N, 1, M, M) probabilities in box frames -> binary CroppedMasks in the image."""
    if len(probs) == 0:
        return CroppedMasks.empty(image_size)
    windows = paste_windows(boxes, image_size)
    sizes = (windows[:, 2:] - windows[:, :2]).cpu()
    order, chunks = _chunks(sizes)
    parts = []
    for start, end, mh, mw in chunks:
        idx = torch.tensor(order[start:end], device=probs.device)
        vals = _sample_chunk(probs[idx], boxes[idx], windows[idx], mh, mw)
        # keep each window's own (h_i, w_i) top-left block, row-major per mask, in one gather
        h_i = sizes[order[start:end], 1].to(vals.device)
        w_i = sizes[order[start:end], 0].to(vals.device)
        inside = ((torch.arange(mh, device=vals.device)[None, :, None] < h_i[:, None, None])
                  & (torch.arange(mw, device=vals.device)[None, None, :] < w_i[:, None, None]))
        data = (vals[inside] >= threshold).cpu().numpy()
        win = windows[idx].cpu().numpy()
        parts.append(CroppedMasks(tuple(image_size), win, data, _starts(win)))
    merged = CroppedMasks.cat(parts)
    inverse = np.empty(len(order), np.int64)
    inverse[np.asarray(order)] = np.arange(len(order))
    return merged[inverse]


def _starts(win: np.ndarray) -> np.ndarray:
    sizes = (win[:, 2] - win[:, 0]) * (win[:, 3] - win[:, 1])
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _sample_chunk(probs, boxes, windows, mh, mw):
    k = len(probs)
    dev = probs.device
    # same float32 arithmetic as upstream: pixel centre, normalised to the box in [-1, 1]
    ys = torch.arange(mh, device=dev, dtype=torch.float32)[None, :] + windows[:, 1:2].float() + 0.5
    xs = torch.arange(mw, device=dev, dtype=torch.float32)[None, :] + windows[:, 0:1].float() + 0.5
    x0, y0, x1, y1 = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]
    ys = (ys - y0) / (y1 - y0) * 2 - 1
    xs = (xs - x0) / (x1 - x0) * 2 - 1
    gx = xs[:, None, :].expand(k, mh, mw)
    gy = ys[:, :, None].expand(k, mh, mw)
    grid = torch.stack([gx, gy], dim=3)
    masks = probs if probs.dtype.is_floating_point else probs.float()
    return F.grid_sample(masks, grid.to(masks.dtype), align_corners=False)[:, 0]
