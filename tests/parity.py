"""The fixture README's parity rule, as a reusable test helper.

Every reference instance must be matched by one prediction of the same class with box corners
within 0.5 px, score within 1e-3 and mask IoU >= 0.99 (or at most 3 differing pixels). Up to 1%
of the reference instances (at least 2) may instead hold looser bounds (box 2 px, score 1e-2,
mask IoU >= 0.9 or at most 10 pixels). No unmatched prediction may score above 0.1, and only
instances within 2e-3 of the reference's lowest score (the score threshold or per-image cap)
may be missing or extra.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from cellseg.core.structures import Instances

STRICT = dict(box=0.5, score=1e-3, iou=0.99, pixels=3)
LOOSE = dict(box=2.0, score=1e-2, iou=0.9, pixels=10)
CUT_MARGIN = 2e-3
MAX_UNMATCHED_SCORE = 0.1


@dataclass
class ParityReport:
    n_reference: int
    n_predicted: int
    strict: int = 0
    loose: list = field(default_factory=list)
    missing_at_cut: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        head = (f"{self.n_reference} reference / {self.n_predicted} predicted: {self.strict} "
                f"strict, {len(self.loose)} loose, {len(self.missing_at_cut)} missing at the cut; "
                f"max box diff {self.max_box_diff:.4f}px, max score diff {self.max_score_diff:.2e}")
        return head + "".join(f"\n  FAIL {f}" for f in self.failures)


def load_reference(path: Path, key: str) -> dict:
    return json.loads(Path(path).read_text())[key]


def compare(pred: Instances, ref: dict) -> ParityReport:
    rb = np.asarray(ref["boxes"], np.float64).reshape(-1, 4)
    rs = np.asarray(ref["scores"], np.float64)
    rc = np.asarray(ref["classes"], np.int64)
    n_ref = len(rs)
    report = ParityReport(n_ref, len(pred))
    if n_ref == 0:
        extra = pred.scores[pred.scores > MAX_UNMATCHED_SCORE]
        if len(extra):
            report.failures.append(f"{len(extra)} predictions above {MAX_UNMATCHED_SCORE} but "
                                   "the reference is empty")
        return report
    ref_masks = mask_util.decode(ref["masks"]).astype(bool)  # (H, W, n)
    pred_masks = pred.masks.to_dense() if len(pred) else np.zeros((0,) + ref_masks.shape[:2], bool)
    pb = pred.boxes.astype(np.float64)
    ps = pred.scores.astype(np.float64)
    pc = pred.classes
    box_diff = np.abs(rb[:, None, :] - pb[None, :, :]).max(axis=2)  # (n_ref, n_pred)
    score_diff = np.abs(rs[:, None] - ps[None, :])
    same_class = rc[:, None] == pc[None, :]
    cut = rs.min() + CUT_MARGIN
    loose_budget = max(2, int(np.floor(0.01 * n_ref)))
    used = np.zeros(len(pred), bool)

    def mask_ok(i, j, bounds):
        r, p = ref_masks[:, :, i], pred_masks[j]
        diff = int((r != p).sum())
        union = int((r | p).sum())
        iou = 1.0 if union == 0 else (r & p).sum() / union
        return diff <= bounds["pixels"] or iou >= bounds["iou"]

    def find(i, bounds):
        cand = np.where(same_class[i] & ~used & (box_diff[i] <= bounds["box"])
                        & (score_diff[i] <= bounds["score"]))[0]
        for j in cand[np.argsort(box_diff[i, cand] + score_diff[i, cand])]:
            if mask_ok(i, j, bounds):
                return j
        return None

    for i in np.argsort(-rs, kind="stable"):
        j = find(i, STRICT)
        if j is not None:
            report.strict += 1
        else:
            j = find(i, LOOSE)
            if j is not None:
                report.loose.append(int(i))
            elif rs[i] <= cut:
                report.missing_at_cut.append(int(i))
                continue
            else:
                report.failures.append(f"reference #{i} (class {rc[i]}, score {rs[i]:.4f}, box "
                                       f"{np.round(rb[i], 2).tolist()}) has no matching prediction")
                continue
        used[j] = True
        report.max_box_diff = max(report.max_box_diff, float(box_diff[i, j]))
        report.max_score_diff = max(report.max_score_diff, float(score_diff[i, j]))
    if len(report.loose) > loose_budget:
        report.failures.append(f"{len(report.loose)} instances need the loose bounds "
                               f"(at most {loose_budget} may)")
    for j in np.where(~used)[0]:
        if ps[j] > MAX_UNMATCHED_SCORE or ps[j] > cut:
            report.failures.append(f"unmatched prediction #{j} (class {pc[j]}, score {ps[j]:.4f})")
    return report
