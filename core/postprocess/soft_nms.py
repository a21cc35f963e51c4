"""Soft-NMS (Bodla et al., ICCV 2017), class-aware, on box IoU or mask IoU.

The reference algorithm: among the remaining detections pick the highest score (ties: lowest
index), decay every other remaining detection of the same class by a weight of its IoU with the
pick (linear: ``1 - iou`` where ``iou > iou_threshold``; gaussian: ``exp(-iou**2 / sigma)``;
hard: 0 where ``iou > iou_threshold``), drop those that fall below ``score_threshold``, repeat.
Detections scoring below ``score_threshold`` to begin with are never kept. IoU is
``inter / (area_a + area_b - inter)`` without Detectron1's legacy ``+1``.

The research code ran this as a Python loop over boxes calling a per-box IoU: O(N^2)
interpreted steps. Here it runs in *rounds* over a sparse overlap graph:

* Only overlapping same-class pairs can change a score (a weight of exactly 1.0 is a no-op), so
  the pairs are found once, vectorised, and everything else is skipped.
* A detection whose (score, -index) key beats every still-undecided neighbour's is final now:
  scores only ever decrease, so nothing picked later can reach it. All such local maxima are
  picked in one vectorised step; picks of one round never overlap each other.
* The reference applies decays to a detection in global pick order, which is the order of the
  picks' final keys (a pick can only precede another by having the larger key). Each round
  re-forms every affected detection's score as its start score times its picked neighbours'
  weights in that order, with the same float64 multiplications, one position per step.

The result (which are kept, in which order, with which scores) is bit-identical to the reference
loop (:func:`soft_nms_reference`, kept here for tests and benchmarks), which the property tests
check on random and adversarial inputs.
"""
from __future__ import annotations

import numpy as np

from ..structures import CroppedMasks

METHODS = ("linear", "gaussian", "hard")

# bound on pair candidates generated at once while finding overlaps (memory, not results)
_PAIR_BLOCK = 1 << 22


def soft_nms(boxes, scores, classes=None, method: str = "linear", sigma: float = 0.5,
             iou_threshold: float = 0.3, score_threshold: float = 0.001,
             masks: CroppedMasks | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class-aware Soft-NMS. Returns ``(keep_indices, new_scores)``.

    ``boxes`` (N, 4) XYXY, ``scores`` (N,), ``classes`` (N,) ints (None: one class).
    ``masks``: when given, IoU is computed between the masks instead of the boxes.
    ``keep_indices`` (int64) index the input in pick order (non-increasing new score);
    ``new_scores`` (float32) are the decayed scores of those detections.
    """
    boxes, scores, classes = _check(boxes, scores, classes, method, sigma, masks)
    cand = np.flatnonzero(scores >= score_threshold)
    m = len(cand)
    if m == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if masks is not None:
        a, b, iou = _mask_overlaps(masks[cand], classes[cand])
    else:
        a, b, iou = _box_overlaps(boxes[cand], classes[cand])
    w = _weights(iou, method, sigma, iou_threshold)
    change = w < 1.0
    a, b, w = a[change], b[change], w[change]
    # both directions: the pick (src) decays the other (dst)
    src = np.concatenate([a, b])
    dst = np.concatenate([b, a])
    w = np.concatenate([w, w])

    s0 = scores[cand]
    cur = s0.copy()
    final = np.zeros(m)
    active = np.ones(m, bool)
    picked = np.zeros(m, bool)
    idx = np.arange(m)  # local index order == input order (cand is ascending)
    while active.any():
        both = active[src] & active[dst]
        s_, d_ = src[both], dst[both]
        beaten = (cur[s_] > cur[d_]) | ((cur[s_] == cur[d_]) & (s_ < d_))
        lost = np.zeros(m, bool)
        lost[d_[beaten]] = True
        new = active & ~lost
        picked |= new
        active &= ~new
        final[new] = cur[new]

        hit = new[src] & active[dst]
        if hit.any():
            affected = np.zeros(m, bool)
            affected[dst[hit]] = True
            sel = picked[src] & affected[dst]
            cur_aff = _ordered_products(s0, final, src[sel], dst[sel], w[sel])
            nodes = np.flatnonzero(affected)
            cur[nodes] = cur_aff[nodes]
            active[nodes[cur[nodes] < score_threshold]] = False
        # edges into decided detections, or from dropped ones, never matter again
        live = active[dst] & (active[src] | picked[src])
        src, dst, w = src[live], dst[live], w[live]

    order = np.lexsort((idx[picked], -final[picked]))
    local = np.flatnonzero(picked)[order]
    return cand[local].astype(np.int64), final[local].astype(np.float32)


def _ordered_products(s0, final, src, dst, w):
    """For each dst: s0[dst] times w of its picked srcs, multiplied in the srcs' key order
    (final score descending, index ascending), one factor at a time as the reference does."""
    out = s0.copy()
    if len(dst) == 0:
        return out
    m = len(s0)
    rank = np.empty(m, np.int64)  # position in key order (final desc, index asc)
    rank[np.lexsort((np.arange(m), -final))] = np.arange(m)
    order = np.argsort(dst * m + rank[src])  # (dst, src) pairs are unique: no ties
    dst, w = dst[order], w[order]
    first = np.ones(len(dst), bool)
    first[1:] = dst[1:] != dst[:-1]
    starts = np.flatnonzero(first)
    lengths = np.diff(np.append(starts, len(dst)))
    owners = dst[starts]
    vals = s0[owners].copy()
    for j in range(int(lengths.max())):
        rows = np.flatnonzero(lengths > j)
        vals[rows] *= w[starts[rows] + j]
    out[owners] = vals
    return out


def _weights(iou: np.ndarray, method: str, sigma: float, iou_threshold: float) -> np.ndarray:
    if method == "linear":
        return np.where(iou > iou_threshold, 1.0 - iou, 1.0)
    if method == "gaussian":
        return np.exp(-(iou * iou) / sigma)
    return np.where(iou > iou_threshold, 0.0, 1.0)


def _check(boxes, scores, classes, method, sigma, masks):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    n = len(boxes)
    classes = (np.zeros(n, np.int64) if classes is None
               else np.asarray(classes, np.int64).reshape(-1))
    if len(scores) != n or len(classes) != n:
        raise ValueError("boxes, scores and classes must have the same length")
    if method not in METHODS:
        raise ValueError(f"unknown Soft-NMS method {method!r} (expected one of {METHODS})")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"Soft-NMS sigma must be positive, got {sigma}")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError("boxes and scores must be finite")
    if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
        raise ValueError("boxes must be XYXY with x1 >= x0 and y1 >= y0")
    if masks is not None and len(masks) != n:
        raise ValueError("masks must match the boxes")
    return boxes, scores, classes


# ------------------------------------------------------------------------------- overlaps
def _box_overlaps(boxes: np.ndarray, classes: np.ndarray):
    """Pairs (a < b) of same-class boxes with positive intersection, and their IoU.

    A sweep along x per class: with boxes sorted by (class, x0), box i can only meet the boxes
    after it of its class whose x0 is below its x1, a contiguous range; the ranges are expanded
    without a Python loop, pruned by y, and only the survivors get an IoU.
    """
    n = len(boxes)
    # one sort key for (class, x): classes shifted apart by more than any coordinate span
    # (exact in float64: the float32-sized coordinates and small class ids fit its mantissa)
    lo = float(min(boxes[:, 0].min(), 0.0)) if n else 0.0
    span = float(boxes[:, 2].max() - lo) + 1.0 if n else 1.0
    _, cls = np.unique(classes, return_inverse=True)
    key0 = cls * span + (boxes[:, 0] - lo)
    key1 = cls * span + (boxes[:, 2] - lo)
    order = np.argsort(key0, kind="stable")
    ends = np.searchsorted(key0[order], key1[order], side="left")
    counts = np.maximum(ends - np.arange(n) - 1, 0)
    a_all, b_all, iou_all = [], [], []
    cum = np.concatenate([[0], np.cumsum(counts)])
    i = 0
    while i < n:  # blocks of rows bound the memory of the candidate list
        j = int(np.searchsorted(cum, cum[i] + _PAIR_BLOCK, side="right")) - 1
        j = max(j, i + 1)
        rows = np.arange(i, j)
        k = counts[rows]
        pa = order[np.repeat(rows, k)]
        pb = order[_ranges(rows + 1, k)]
        ymeet = ((boxes[pa, 1] < boxes[pb, 3]) & (boxes[pb, 1] < boxes[pa, 3])
                 & (boxes[pa, 0] < boxes[pb, 2]) & (boxes[pb, 0] < boxes[pa, 2]))
        pa, pb = pa[ymeet], pb[ymeet]
        iou, meet = _pair_iou(boxes[pa], boxes[pb])
        pa, pb, iou = pa[meet], pb[meet], iou[meet]
        a_all.append(np.minimum(pa, pb))
        b_all.append(np.maximum(pa, pb))
        iou_all.append(iou)
        i = j
    if not a_all:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(a_all), np.concatenate(b_all), np.concatenate(iou_all)


def _pair_iou(ba: np.ndarray, bb: np.ndarray):
    """IoU of row pairs, with the reference's float64 operation order; and 'they intersect'."""
    iw = np.minimum(ba[:, 2], bb[:, 2]) - np.maximum(ba[:, 0], bb[:, 0])
    ih = np.minimum(ba[:, 3], bb[:, 3]) - np.maximum(ba[:, 1], bb[:, 1])
    meet = (iw > 0) & (ih > 0)
    inter = iw * ih
    area_a = (ba[:, 2] - ba[:, 0]) * (ba[:, 3] - ba[:, 1])
    area_b = (bb[:, 2] - bb[:, 0]) * (bb[:, 3] - bb[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(meet, inter / (area_a + area_b - inter), 0.0)
    return iou, meet


def _mask_overlaps(masks: CroppedMasks, classes: np.ndarray):
    """Pairs (a < b) of same-class masks sharing pixels, and their mask IoU.

    Set pixels are grouped by image position; every two instances covering one pixel form a
    pair, and the pair's intersection is the number of pixels it was formed at.
    """
    h, w = masks.image_size
    inst, ys, xs = masks.pixel_coordinates()
    areas = masks.areas()
    lin = ys.astype(np.int64) * w + xs
    order = np.lexsort((inst, lin))
    inst, lin = inst[order], lin[order]
    first = np.ones(len(lin), bool)
    first[1:] = lin[1:] != lin[:-1]
    group_start = np.flatnonzero(first)
    group_size = np.diff(np.append(group_start, len(lin)))
    start_of = np.repeat(group_start, group_size)
    size_of = np.repeat(group_size, group_size)
    pos = np.arange(len(lin))
    after = start_of + size_of - pos - 1  # members after this one in its pixel group
    pa = np.repeat(pos, after)
    pb = _ranges(pos + 1, after)
    a, b = inst[pa], inst[pb]  # a < b: sorted by instance within a group
    same = classes[a] == classes[b]
    a, b = a[same], b[same]
    n = len(masks)
    key, inter = np.unique(a * n + b, return_counts=True)
    a, b = np.divmod(key, n)
    iou = inter / (areas[a] + areas[b] - inter)
    return a, b, iou


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + k) for each (s, k), vectorised."""
    sizes = np.asarray(sizes, np.int64)
    total = int(sizes.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    return np.arange(total, dtype=np.int64) + offsets


# ------------------------------------------------------------------------------ reference
def soft_nms_reference(boxes, scores, classes=None, method: str = "linear", sigma: float = 0.5,
                       iou_threshold: float = 0.3, score_threshold: float = 0.001,
                       masks: CroppedMasks | None = None):
    """The straightforward algorithm, one Python step per (pick, remaining box) pair.

    Slow (O(N^2) interpreted IoU calls); it is the definition :func:`soft_nms` is tested and
    benchmarked against.
    """
    boxes, scores, classes = _check(boxes, scores, classes, method, sigma, masks)
    bx = boxes.tolist()
    dense = masks.to_dense() if masks is not None else None
    area = dense.sum(axis=(1, 2)).tolist() if dense is not None else None
    cur = scores.tolist()
    cls = classes.tolist()
    remaining = [i for i in range(len(cur)) if cur[i] >= score_threshold]
    keep, new = [], []
    while remaining:
        best = remaining[0]
        for i in remaining:  # highest score, lowest index on ties
            if cur[i] > cur[best]:
                best = i
        remaining.remove(best)
        keep.append(best)
        new.append(cur[best])
        for j in list(remaining):
            if cls[j] != cls[best]:
                continue
            if dense is None:
                iou = _box_iou_scalar(bx[best], bx[j])
            else:
                inter = int(np.count_nonzero(dense[best] & dense[j]))
                iou = inter / (area[best] + area[j] - inter) if inter else 0.0
            if method == "linear":
                weight = 1.0 - iou if iou > iou_threshold else 1.0
            elif method == "gaussian":
                # numpy's exp, as the vectorised code uses (libm's may differ in the last bit)
                weight = float(np.exp(-(iou * iou) / sigma))
            else:
                weight = 0.0 if iou > iou_threshold else 1.0
            cur[j] = cur[j] * weight
            if cur[j] < score_threshold:
                remaining.remove(j)
    return np.array(keep, np.int64), np.array(new, np.float32)


def _box_iou_scalar(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
