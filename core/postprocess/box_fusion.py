"""The box part of Weighted Boxes Fusion (Solovyev et al. 2021): fused boxes and who formed them.

The box fusion is ``ensemble-boxes``' algorithm run with its own building blocks
(``find_matching_box_fast`` to match a box to the clusters so far, ``get_weighted_box`` to
re-average a cluster): boxes sorted by weighted score join the best-matching cluster of their
label (IoU > ``iou_thr``) or start a new one, then cluster scores are rescaled by
``conf_type``. Its public ``weighted_boxes_fusion`` returns only the fused boxes, and the research
code then took the mask of the nearest original box, which need not agree with the fused box.
Running the same loop here also records *which* detections formed each cluster, so
:mod:`.mask_fusion` can fuse their masks with the same score weights. The tests check that boxes,
scores and labels equal ``ensemble_boxes.weighted_boxes_fusion`` exactly.

Two deliberate differences from calling the package directly: input filtering is vectorised
(the package loops over boxes in Python and warns per box), and detections scoring exactly 0
are dropped (the package would divide by a zero weight and return NaN boxes). Clusters are kept
in a preallocated array instead of growing one with ``np.vstack`` per new cluster.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from ensemble_boxes.ensemble_boxes_wbf import find_matching_box_fast, get_weighted_box

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


@dataclass(frozen=True)
class BoxFusion:
    """Fused boxes (pixels, XYXY) with the members of each cluster.

    Members of cluster ``c`` are rows ``starts[c]:starts[c+1]`` of ``member_model`` (which
    input), ``member_index`` (which detection of it) and ``member_weight`` (its score times its
    model weight: the weight it had in the box average).
    """

    boxes: np.ndarray  # (C, 4) float32
    scores: np.ndarray  # (C,) float32
    labels: np.ndarray  # (C,) int64
    starts: np.ndarray  # (C + 1,) int64
    member_model: np.ndarray
    member_index: np.ndarray
    member_weight: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)


def fuse_boxes(boxes_list: Sequence[np.ndarray], scores_list: Sequence[np.ndarray],
               labels_list: Sequence[np.ndarray], image_size: tuple[int, int],
               weights: Sequence[float] | None = None, iou_thr: float = 0.55,
               skip_box_thr: float = 0.0, conf_type: str = "avg",
               allows_overflow: bool = False) -> BoxFusion:
    """WBF of per-model pixel boxes; same results as ``ensemble_boxes.weighted_boxes_fusion``
    on the boxes normalised by the image size, plus cluster membership."""
    n_models = len(boxes_list)
    if not (len(scores_list) == len(labels_list) == n_models):
        raise ValueError("boxes_list, scores_list and labels_list must have one entry per model")
    weights = np.ones(n_models) if weights is None else np.array(weights)
    if len(weights) != n_models:
        raise ValueError(f"{len(weights)} model weights for {n_models} models")
    if conf_type not in CONF_TYPES:
        raise ValueError(f"unknown WBF conf_type {conf_type!r} (expected one of {CONF_TYPES})")
    h, w = image_size
    scale = np.array([w, h, w, h], np.float64)

    rows, refs = _prefilter(boxes_list, scores_list, labels_list, weights, skip_box_thr, scale)
    if len(rows) == 0:
        return _empty()
    # labels in order of first appearance (model, then detection), as the package's dict
    labels_seen, first = np.unique(rows[:, 0], return_index=True)
    label_order = labels_seen[np.argsort(first)]

    overall, member_rows, member_starts = [], [], [0]
    for label in label_order:
        sel = np.flatnonzero(rows[:, 0] == label)
        current = rows[sel]
        order = current[:, 1].argsort()[::-1]  # the package's exact (unstable) sort call
        current, ref_of = current[order], sel[order]
        weighted, clusters = _cluster(current, iou_thr, conf_type)
        for c, members in enumerate(clusters):
            cb = current[members]
            weighted[c, 1] = _rescale(weighted[c], cb, weights, conf_type, allows_overflow)
            member_rows.append(ref_of[members])
            member_starts.append(member_starts[-1] + len(members))
        overall.append(weighted)
    overall = np.concatenate(overall, axis=0)
    order = overall[:, 1].argsort()[::-1]
    overall = overall[order]
    member_starts = np.asarray(member_starts, np.int64)
    sizes = np.diff(member_starts)[order]
    member_rows = np.concatenate([member_rows[c] for c in order])
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    return BoxFusion(
        boxes=(overall[:, 4:].astype(np.float64) * scale).astype(np.float32),
        scores=overall[:, 1].astype(np.float32),
        labels=overall[:, 0].astype(np.int64),
        starts=starts,
        member_model=refs[member_rows, 0],
        member_index=refs[member_rows, 1],
        member_weight=rows[member_rows, 1],
    )


def _prefilter(boxes_list, scores_list, labels_list, weights, thr, scale):
    """Rows ``[label, score * weight, weight, model, x1, y1, x2, y2]`` (normalised boxes) as
    ``ensemble_boxes.prefilter_boxes`` builds them, and (model, index) of each row."""
    rows, refs = [], []
    for t, (b, s, l) in enumerate(zip(boxes_list, scores_list, labels_list)):
        b = np.asarray(b, np.float64).reshape(-1, 4) / scale
        s = np.asarray(s, np.float64).reshape(-1)
        l = np.asarray(l).reshape(-1)
        if not (len(b) == len(s) == len(l)):
            raise ValueError(f"model {t}: boxes, scores and labels differ in length")
        x1, x2 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
        y1, y2 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
        x1, x2, y1, y2 = (np.clip(v, 0.0, 1.0) for v in (x1, x2, y1, y2))
        keep = (s >= thr) & (s > 0) & ((x2 - x1) * (y2 - y1) != 0.0)
        idx = np.flatnonzero(keep)
        k = len(idx)
        rows.append(np.stack([l[idx].astype(np.int64).astype(np.float64), s[idx] * weights[t],
                              np.full(k, float(weights[t])), np.full(k, float(t)),
                              x1[idx], y1[idx], x2[idx], y2[idx]], 1))
        refs.append(np.stack([np.full(k, t), idx], 1))
    return np.concatenate(rows), np.concatenate(refs).astype(np.int64)


def _cluster(current: np.ndarray, iou_thr: float, conf_type: str):
    """The package's clustering loop over score-sorted rows of one label, keeping members."""
    weighted = np.empty((len(current), 8))
    clusters: list[list[int]] = []
    count = 0
    for j in range(len(current)):
        index, _ = find_matching_box_fast(weighted[:count], current[j], iou_thr)
        if index != -1:
            clusters[index].append(j)
            weighted[index] = get_weighted_box(current[clusters[index]], conf_type)
        else:
            clusters.append([j])
            weighted[count] = current[j]
            count += 1
    return weighted[:count], clusters


def _rescale(box, members, weights, conf_type, allows_overflow) -> float:
    """Cluster confidence after fusion, as the package computes it for ``conf_type``."""
    score = box[1]
    n = len(members)
    if conf_type == "box_and_model_avg":
        score = score * n / box[2]
        _, idx = np.unique(members[:, 3], return_index=True)
        return score * members[idx, 2].sum() / weights.sum()
    if conf_type == "absent_model_aware_avg":
        models = np.unique(members[:, 3]).astype(int)
        absent = np.ones(len(weights), dtype=bool)
        absent[models] = False
        return score * n / (box[2] + weights[absent].sum())
    if conf_type == "max":
        return score / weights.max()
    if not allows_overflow:
        return score * min(len(weights), n) / weights.sum()
    return score * n / weights.sum()


def _empty() -> BoxFusion:
    z = np.zeros(0, np.int64)
    return BoxFusion(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), z,
                     np.zeros(1, np.int64), z, z, np.zeros(0))
