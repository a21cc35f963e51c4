"""Merging per-tile instances into one image-wide result.

The merge rule. Two instances *match* when they come from *different* tiles and, inside the
rectangle both tiles saw, the intersection of their masks covers at least ``threshold``
(default 0.5) of the smaller of the two masks' parts in that rectangle (intersection over the
smaller mask, measured where both tiles had the same view). An instance is *cut* when its mask
reaches an edge of its tile that is not an edge of the image. Then:

1. Duplicates: of two matching instances, at most one stays. A whole (uncut) instance beats a
   cut one; between two whole ones, or two cut ones matched to a whole one, the higher score
   wins. This is greedy in that order, so an instance removed by a better one removes nothing
   itself: an object lying in the overlap of tiles comes back once, exactly as the tile that
   saw it whole predicted it.
2. Seams: cut instances that match each other and survive step 1 (an object larger than the
   overlap, so that no tile saw it whole) are merged into one: mask union, box union, the
   highest score and that part's class. Merging is transitive (an object across the corner of
   four tiles becomes one instance).

Instances from the *same* tile are never matched: overlapping detections the model makes
within one tile stay as the untiled model has them (Soft-NMS or the WBF ensemble deal with
those as they would without tiles). Two different cells from neighbouring tiles that merely
touch share few pixels and stay apart.

Everything is array arithmetic over the masks' pixels in the tiles' overlaps: no Python loop
per instance or per pair.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..structures import CroppedMasks, Instances

CHUNK = 4096  # instances tested against all tiles at once (bounds the N x T boolean matrix)


def shift(instances: Instances, window: np.ndarray, image_size: tuple[int, int]) -> Instances:
    """Move one tile's instances into image coordinates.

    Args:
        instances: predictions on the tile, in tile pixels, with masks.
        window: the tile's ``[x0, y0, x1, y1]`` in the image.
        image_size: (H, W) of the whole image.

    Returns:
        The same instances in image pixels (``mask_probs`` dropped: they belong to the model's
        box frame and a merged instance has no single one).
    """
    offset = np.array([window[0], window[1], window[0], window[1]])
    masks = instances.masks
    if masks is None:
        raise ValueError("tiled prediction needs a model that predicts masks (MODEL.MASK_ON)")
    placed = CroppedMasks(tuple(image_size), masks.windows + offset.astype(np.int64),
                          masks.data, masks.starts)
    return Instances(image_size, instances.boxes + offset.astype(np.float32), instances.scores,
                     instances.classes, placed)


def stitch(parts: Sequence[Instances], windows: np.ndarray, image_size: tuple[int, int],
           threshold: float = 0.5) -> Instances:
    """Merge the instances predicted on each tile into one result (rule: module docstring).

    Args:
        parts: T per-tile predictions, each in its tile's pixels, with masks.
        windows: (T, 4) int ``[x0, y0, x1, y1]`` of the tiles in the image.
        image_size: (H, W) of the whole image.
        threshold: intersection over the smaller mask, inside the tiles' shared rectangle, from
            which two instances of different tiles match.

    Returns:
        Instances in image pixels, highest score first (stable), without ``mask_probs``.
    """
    windows = np.asarray(windows, np.int64).reshape(-1, 4)
    if len(parts) != len(windows):
        raise ValueError(f"{len(parts)} tile predictions for {len(windows)} tiles")
    image_size = (int(image_size[0]), int(image_size[1]))
    if not parts:
        return Instances.empty(image_size)
    placed = Instances.cat([shift(p, w, image_size) for p, w in zip(parts, windows)])
    tile_of = np.repeat(np.arange(len(parts)), [len(p) for p in parts])
    a, b = _matches(placed.masks, tile_of, windows, threshold)
    cut = _cut(placed.masks.windows, windows[tile_of], image_size)
    margin = _margin(placed.boxes, windows[tile_of], image_size)
    keep = _keep_best(len(placed), a, b, cut, margin)
    both = keep[a] & keep[b] & cut[a] & cut[b]
    groups = _components(len(placed), a[both], b[both])
    kept = np.flatnonzero(keep)
    return _merge(placed[kept], groups[kept]).sorted_by_score()


def _cut(mask_windows: np.ndarray, tiles: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N,) bool: the mask reaches an edge of its tile that is inside the image."""
    h, w = image_size
    return (((mask_windows[:, 0] <= tiles[:, 0]) & (tiles[:, 0] > 0))
            | ((mask_windows[:, 1] <= tiles[:, 1]) & (tiles[:, 1] > 0))
            | ((mask_windows[:, 2] >= tiles[:, 2]) & (tiles[:, 2] < w))
            | ((mask_windows[:, 3] >= tiles[:, 3]) & (tiles[:, 3] < h)))


def _margin(boxes: np.ndarray, tiles: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(N,) distance in pixels from each box to the nearest edge of its tile inside the image
    (edges on the image border do not count: the untiled model has the same border there)."""
    h, w = image_size
    far = np.float32(max(h, w))
    return np.minimum.reduce([
        np.where(tiles[:, 0] > 0, boxes[:, 0] - tiles[:, 0], far),
        np.where(tiles[:, 1] > 0, boxes[:, 1] - tiles[:, 1], far),
        np.where(tiles[:, 2] < w, tiles[:, 2] - boxes[:, 2], far),
        np.where(tiles[:, 3] < h, tiles[:, 3] - boxes[:, 3], far)])


def _keep_best(n: int, a: np.ndarray, b: np.ndarray, cut: np.ndarray,
               margin: np.ndarray) -> np.ndarray:
    """Greedy duplicate removal over matched pairs (rule step 1), in rounds of array operations.

    Priority: whole before cut, then the larger margin to the tile's inner edges (the tile that
    saw the object with the most context around it), then lower index. A pair with a whole member
    is a duplicate pair (the better one removes the other); cut-cut pairs are left to merging.
    Each round settles every instance whose better partners are all settled: it is removed if
    one of them was kept, else kept. Rounds are as many as the longest chain of partners.
    """
    rank = np.empty(n, np.int64)
    rank[np.lexsort((np.arange(n), -margin, cut))] = np.arange(n)
    dup = ~(cut[a] & cut[b])
    better = np.where(rank[a] < rank[b], a, b)[dup]
    worse = np.where(rank[a] < rank[b], b, a)[dup]
    state = np.zeros(n, np.int8)  # 0 open, 1 kept, -1 removed
    while True:
        open_ = state == 0
        if not open_.any():
            break
        beaten = np.zeros(n, bool)
        waiting = np.zeros(n, bool)
        beaten[worse[state[better] == 1]] = True
        waiting[worse[state[better] == 0]] = True
        state[open_ & beaten] = -1
        state[open_ & ~beaten & ~waiting] = 1
    return state == 1


def _matches(masks: CroppedMasks, tile_of: np.ndarray, windows: np.ndarray,
                  threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of instances of different tiles that match (rule: module docstring)."""
    empty = np.zeros(0, np.int64)
    cand = np.flatnonzero(_reaches_other_tile(masks.windows, tile_of, windows))
    if len(cand) < 2:
        return empty, empty
    inst, ys, xs = masks[cand].pixel_coordinates()
    sizes = np.bincount(inst, minlength=len(cand))
    seg_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    owner = cand[inst]
    width = masks.image_size[1]
    lo, hi, inter = _shared_pixels(ys * width + xs, owner, tile_of)
    if len(lo) == 0:
        return empty, empty
    # the rectangle both tiles saw; intersections can only lie there
    ta, tb = windows[tile_of[lo]], windows[tile_of[hi]]
    rect = np.concatenate([np.maximum(ta[:, :2], tb[:, :2]), np.minimum(ta[:, 2:], tb[:, 2:])], 1)
    pos = np.full(len(tile_of), -1, np.int64)
    pos[cand] = np.arange(len(cand))
    area_lo = _pixels_inside(rect, seg_start[pos[lo]], sizes[pos[lo]], ys, xs)
    area_hi = _pixels_inside(rect, seg_start[pos[hi]], sizes[pos[hi]], ys, xs)
    same = inter >= threshold * np.minimum(area_lo, area_hi)
    return lo[same], hi[same]


def _reaches_other_tile(mask_windows: np.ndarray, tile_of: np.ndarray,
                        windows: np.ndarray) -> np.ndarray:
    """(N,) bool: the instance's mask window meets a tile other than its own."""
    out = np.zeros(len(mask_windows), bool)
    for s in range(0, len(mask_windows), CHUNK):
        mw = mask_windows[s:s + CHUNK]
        meets = ((mw[:, None, 0] < windows[None, :, 2]) & (mw[:, None, 2] > windows[None, :, 0])
                 & (mw[:, None, 1] < windows[None, :, 3]) & (mw[:, None, 3] > windows[None, :, 1]))
        meets[np.arange(len(mw)), tile_of[s:s + CHUNK]] = False
        out[s:s + CHUNK] = meets.any(axis=1)
    return out


def _shared_pixels(pix: np.ndarray, owner: np.ndarray, tile_of: np.ndarray):
    """Pairs of instances from different tiles that share pixels, and how many they share.

    Sorting the pixels brings together every instance covering the same pixel; comparing each
    position with the one ``d`` further on, for growing ``d``, lists every pair within a run of
    equal pixels (runs are as long as the number of instances stacked on a pixel: a few).
    """
    order = np.argsort(pix, kind="stable")
    p, o = pix[order], owner[order]
    firsts, seconds = [], []
    d = 1
    while d < len(p):
        same = p[:-d] == p[d:]
        if not same.any():
            break
        x, y = o[:-d][same], o[d:][same]
        other = tile_of[x] != tile_of[y]
        firsts.append(x[other])
        seconds.append(y[other])
        d += 1
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    x, y = np.concatenate(firsts), np.concatenate(seconds)
    lo, hi = np.minimum(x, y), np.maximum(x, y)
    n = len(tile_of)
    codes, inter = np.unique(lo * n + hi, return_counts=True)
    return codes // n, codes % n, inter


def _pixels_inside(rect: np.ndarray, seg_start: np.ndarray, seg_size: np.ndarray,
                   ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """For each pair p: how many pixels of its instance's segment lie inside ``rect[p]``."""
    idx = _ranges(seg_start, seg_size)
    pair = np.repeat(np.arange(len(rect)), seg_size)
    y, x, r = ys[idx], xs[idx], rect[pair]
    inside = (x >= r[:, 0]) & (x < r[:, 2]) & (y >= r[:, 1]) & (y < r[:, 3])
    return np.bincount(pair, weights=inside, minlength=len(rect))


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each (s, n), without a Python loop."""
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(sizes)
    return np.arange(total) + np.repeat(starts - (ends - sizes), sizes)


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n,) component label of each node of the graph with edges (a, b): its smallest member."""
    labels = np.arange(n)
    while len(a):
        new = labels.copy()
        np.minimum.at(new, a, labels[b])
        np.minimum.at(new, b, labels[a])
        new = new[new]  # pointer jumping: halves the remaining path lengths
        if np.array_equal(new, labels):
            break
        labels = new
    return labels


def _merge(placed: Instances, groups: np.ndarray) -> Instances:
    """One instance per group: singletons unchanged, larger groups merged (module rule)."""
    _, index, size = np.unique(groups, return_inverse=True, return_counts=True)
    alone = size[index] == 1
    if alone.all():
        return placed
    member = np.flatnonzero(~alone)
    ids, gid = np.unique(index[member], return_inverse=True)
    g = len(ids)
    # the best-scoring member gives the class (and the score)
    order = np.lexsort((-placed.scores[member], gid))
    first = order[np.r_[0, np.flatnonzero(np.diff(gid[order])) + 1]]
    scores = placed.scores[member][first]
    classes = placed.classes[member][first]
    boxes = np.empty((g, 4), np.float32)
    boxes[:, :2] = np.inf
    boxes[:, 2:] = -np.inf
    mb = placed.boxes[member]
    np.minimum.at(boxes[:, 0], gid, mb[:, 0]); np.minimum.at(boxes[:, 1], gid, mb[:, 1])
    np.maximum.at(boxes[:, 2], gid, mb[:, 2]); np.maximum.at(boxes[:, 3], gid, mb[:, 3])
    masks = _union_masks(placed.masks, member, gid, g)
    merged = Instances(placed.image_size, boxes, scores, classes, masks)
    return Instances.cat([placed[np.flatnonzero(alone)], merged])


def _union_masks(masks: CroppedMasks, member: np.ndarray, gid: np.ndarray, g: int
                 ) -> CroppedMasks:
    """Union of the members' masks per group, each cropped to its tight window."""
    inst, ys, xs = masks[member].pixel_coordinates()
    return CroppedMasks.from_pixel_coordinates(masks.image_size, gid[inst], ys, xs, g)
