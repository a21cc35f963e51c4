"""Fuse the masks of WBF clusters: score-weighted average of member probabilities, >= 0.5.

For each fused cluster every member's soft mask is sampled over the cluster's union window --
the members' paste windows (box grown to whole pixels plus one, as Detectron2 pastes) and binary
mask windows together -- with the bilinear ``grid_sample`` arithmetic of Detectron2's
``paste_masks_in_image``. Members without ``mask_probs`` count as their binary mask (0/1).
Weights are the members' WBF weights (score x model weight) normalised per cluster, so the fused
mask moves with the fused box.

``mask_probs`` are kept as float16 while the engine thresholded float32 probabilities, so a
boundary pixel's stored probability can sit on the wrong side of 0.5 from the model's own mask.
Each member's probability is therefore first clamped to agree with its binary mask (>= 0.5
inside, < 0.5 outside). Then a cluster of one detection, or of identical detections (a model
ensembled with itself), gives back exactly the member's mask; disagreements are settled by the
weighted probabilities.

All members are sampled in a few batched ``grid_sample`` calls (grouped by window size) and
accumulated with ``np.add.at`` into one flat buffer of all clusters' windows; no Python loop
runs per instance or per pixel.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..structures import CroppedMasks, Instances
from .box_fusion import BoxFusion

# members x window pixels per grid_sample batch
_CHUNK_ELEMENTS = 1 << 22
_BELOW_HALF = np.nextafter(np.float32(0.5), np.float32(0))


def paste_windows(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) int64 [x0, y0, x1, y1]: where a pasted box-frame mask can be non-zero (the box
    grown to whole pixels plus one pixel, as Detectron2's paste; empty for degenerate boxes)."""
    h, w = image_size
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    x0 = np.clip(np.floor(b[:, 0]) - 1, 0, w)
    y0 = np.clip(np.floor(b[:, 1]) - 1, 0, h)
    x1 = np.clip(np.ceil(b[:, 2]) + 1, 0, w)
    y1 = np.clip(np.ceil(b[:, 3]) + 1, 0, h)
    win = np.stack([x0, y0, np.maximum(x1, x0), np.maximum(y1, y0)], 1)
    return win.astype(np.int64)


def fuse_masks(models: Sequence[Instances], fusion: BoxFusion) -> CroppedMasks:
    """One binary mask per fused cluster of ``fusion`` (built from ``models``)."""
    size = models[0].image_size
    n_clusters = len(fusion)
    if n_clusters == 0:
        return CroppedMasks.empty(size)
    cluster = np.repeat(np.arange(n_clusters), np.diff(fusion.starts))
    weight = fusion.member_weight / np.repeat(
        np.add.reduceat(fusion.member_weight, fusion.starts[:-1]), np.diff(fusion.starts))
    # a member's reach: its binary mask's window and, with probabilities, its paste window
    reach = np.zeros((len(cluster), 4), np.int64)
    for t, m in enumerate(models):
        rows = np.flatnonzero(fusion.member_model == t)
        idx = fusion.member_index[rows]
        win = m.masks.windows[idx]
        if m.mask_probs is not None:
            pw = paste_windows(m.boxes[idx], size)
            win = np.concatenate([np.minimum(win[:, :2], pw[:, :2]),
                                  np.maximum(win[:, 2:], pw[:, 2:])], 1)
        reach[rows] = win
    union = np.empty((n_clusters, 4), np.int64)
    union[:, :2] = np.minimum.reduceat(reach[:, :2], fusion.starts[:-1])
    union[:, 2:] = np.maximum.reduceat(reach[:, 2:], fusion.starts[:-1])
    uw, uh = union[:, 2] - union[:, 0], union[:, 3] - union[:, 1]
    starts = np.concatenate([[0], np.cumsum(uw * uh)]).astype(np.int64)
    acc = np.zeros(int(starts[-1]), np.float64)

    for t, m in enumerate(models):
        rows = np.flatnonzero(fusion.member_model == t)
        if len(rows) == 0:
            continue
        idx = fusion.member_index[rows]
        if m.mask_probs is None:
            _add_binary(acc, m.masks[idx], weight[rows], union[cluster[rows]],
                        starts[cluster[rows]])
        else:
            _add_soft(acc, m, idx, weight[rows], union[cluster[rows]], starts[cluster[rows]])
    data = acc >= 0.5
    return CroppedMasks(size, union, data, starts)


def _add_binary(acc, masks: CroppedMasks, weight, union, base):
    """acc += weight at each member's mask pixels (probability 1 inside, 0 outside)."""
    inst, ys, xs = masks.pixel_coordinates()
    u = union[inst]
    pos = base[inst] + (ys - u[:, 1]) * (u[:, 2] - u[:, 0]) + (xs - u[:, 0])
    np.add.at(acc, pos, weight[inst])


def _add_soft(acc, model: Instances, idx, weight, union, base):
    """acc += weight * probability, sampled over each member's cluster window in batches."""
    probs_all = model.mask_probs
    sizes = np.stack([union[:, 2] - union[:, 0], union[:, 3] - union[:, 1]], 1)
    order = np.argsort(sizes[:, 0] * sizes[:, 1], kind="stable")
    k = 0
    while k < len(order):  # chunks of similar window size bound padding and memory
        mw, mh = sizes[order[k]]
        end = k + 1
        while end < len(order):
            nw, nh = np.maximum([mw, mh], sizes[order[end]])
            if (end + 1 - k) * max(nw, 1) * max(nh, 1) > _CHUNK_ELEMENTS:
                break
            mw, mh = nw, nh
            end += 1
        sel = order[k:end]
        k = end
        mh, mw = max(int(mh), 1), max(int(mw), 1)
        vals = _sample(probs_all[idx[sel]], model.boxes[idx[sel]], union[sel], mh, mw)
        # clamp to agree with the member's own binary mask (see the module docstring)
        inside = np.zeros(vals.shape, bool)
        sub = model.masks[idx[sel]]
        inst, ys, xs = sub.pixel_coordinates()
        inside[inst, ys - union[sel][inst, 1], xs - union[sel][inst, 0]] = True
        vals = np.where(inside, np.maximum(vals, np.float32(0.5)),
                        np.minimum(vals, _BELOW_HALF))
        # keep each member's own (h, w) top-left block and add it to its cluster's window
        bh = sizes[sel, 1]
        bw = sizes[sel, 0]
        valid = ((np.arange(mh)[None, :, None] < bh[:, None, None])
                 & (np.arange(mw)[None, None, :] < bw[:, None, None]))
        b, yy, xx = np.nonzero(valid)
        pos = base[sel][b] + yy * bw[b] + xx
        np.add.at(acc, pos, weight[sel][b] * vals[b, yy, xx].astype(np.float64))


def _sample(probs: np.ndarray, boxes: np.ndarray, windows: np.ndarray, mh: int, mw: int
            ) -> np.ndarray:
    """grid_sample of box-frame probabilities at the pixel centres of each window (float32
    arithmetic of Detectron2's paste: centre, normalised to the box into [-1, 1])."""
    # torch only here: importing the post-processing (the app's start-up) must not load it
    import torch
    from torch.nn import functional as F

    p = torch.from_numpy(np.asarray(probs, np.float32))[:, None]
    b = torch.from_numpy(np.asarray(boxes, np.float32))
    win = torch.from_numpy(windows)
    k = len(p)
    ys = torch.arange(mh, dtype=torch.float32)[None, :] + win[:, 1:2].float() + 0.5
    xs = torch.arange(mw, dtype=torch.float32)[None, :] + win[:, 0:1].float() + 0.5
    ys = (ys - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]) * 2 - 1
    xs = (xs - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]) * 2 - 1
    grid = torch.stack([xs[:, None, :].expand(k, mh, mw), ys[:, :, None].expand(k, mh, mw)], 3)
    return F.grid_sample(p, grid, align_corners=False)[:, 0].numpy()
