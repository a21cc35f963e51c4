"""IoU-based matching of predictions to ground truth (Detectron2's Matcher semantics)."""
from __future__ import annotations

import torch


class Matcher:
    """Assign each prediction (column) the best ground truth (row) and a label by IoU bands.

    ``thresholds`` [t1, ..., tk] split IoU into k+1 bands labelled by ``labels`` (1 positive,
    0 negative, -1 ignore). With ``allow_low_quality_matches`` every ground truth's best
    predictions are made positive even below the positive threshold.
    """

    def __init__(self, thresholds, labels, allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        if thresholds[0] < 0:
            raise ValueError("IoU thresholds must be >= 0")
        self.thresholds = [-float("inf")] + thresholds + [float("inf")]
        if len(labels) != len(self.thresholds) - 1:
            raise ValueError("need one label per IoU band")
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality: torch.Tensor):
        if match_quality.numel() == 0:
            n = match_quality.shape[1]
            default = match_quality.new_full((n,), 0, dtype=torch.int64)
            labels = match_quality.new_full((n,), self.labels[0], dtype=torch.int8)
            return default, labels
        matched_vals, matches = match_quality.max(dim=0)
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, low, high in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            band = (matched_vals >= low) & (matched_vals < high)
            match_labels[band] = label
        if self.allow_low_quality_matches:
            best_per_gt, _ = match_quality.max(dim=1)
            _, pred_idx = torch.nonzero(match_quality == best_per_gt[:, None], as_tuple=True)
            match_labels[pred_idx] = 1
        return matches, match_labels
