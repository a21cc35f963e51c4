"""Missed-cell candidates: the model's detections just under the score threshold.

A reviewer looking for cells the model missed at its threshold is shown the detections that
scored between a second, lower threshold and the review threshold, minus those lying mostly on
instances already there (a lower-scoring duplicate of a shown cell is no missed cell). The
detections are composed exactly as the shown ones are (same Soft-NMS, same WBF ensemble), so
accepting a candidate adds that very detection.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from ..structures import Instances

MAX_COVERED = 0.3  # a candidate with more of its pixels on existing instances is a duplicate


def candidate_pool(raw: Mapping[str, Instances], settings, low: float) -> Instances:
    """Detections scoring in ``[low, settings.score_threshold)``, highest score first.

    Args:
        raw: model key -> the model's raw Instances (as :func:`compose` takes them).
        settings: the review's post-processing (:class:`~.pipeline.Settings`; its threshold is
            the upper bound).
        low: the candidates' lower score bound.

    Returns:
        The composed detections in that score range (the cap on detections is not applied:
        it keeps the best shown ones, and candidates are below them).
    """
    from .pipeline import compose  # (imports torch: the window must start without it)

    below = compose(raw, replace(settings, score_threshold=float(low), max_detections=None))
    keep = np.flatnonzero(below.scores < settings.score_threshold)
    return below[keep[np.argsort(-below.scores[keep], kind="stable")]]


def uncovered(candidates: Instances, occupied: np.ndarray,
              max_covered: float = MAX_COVERED) -> np.ndarray:
    """Indices of the candidates lying mostly off existing instances, in their order.

    Args:
        candidates: Instances with masks.
        occupied: (H, W) bool, the pixels existing instances cover.
        max_covered: the largest fraction of a candidate's pixels that may be occupied.

    Returns:
        (K,) int64 indices into ``candidates`` (empty masks are dropped too).
    """
    n = len(candidates)
    if n == 0 or candidates.masks is None:
        return np.zeros(0, np.int64)
    inst, ys, xs = candidates.masks.pixel_coordinates()
    area = np.bincount(inst, minlength=n)
    covered = np.bincount(inst, weights=occupied[ys, xs], minlength=n)
    return np.flatnonzero((area > 0) & (covered <= max_covered * area))


def occupancy(masks, image_size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the pixels any of ``masks`` (CroppedMasks) sets."""
    out = np.zeros(image_size, bool)
    if masks is not None and len(masks):
        _, ys, xs = masks.pixel_coordinates()
        out[ys, xs] = True
    return out
