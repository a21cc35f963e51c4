"""Predicting an image tile by tile at a chosen scale, streaming the tiles."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ..io.image import stretch_limits, to_uint8
from ..progress import TILE, PredictionCancelled, ProgressFn, StopFn
from ..structures import Instances
from .grid import TileSettings, tile_windows
from .stitch import stitch


class ScalablePredictor(Protocol):
    """What tiling needs of a model: ``Predictor`` is one."""

    def __call__(self, image: np.ndarray, tta: bool = False, scale: float | None = None, *,
                 progress: ProgressFn | None = None, stop: StopFn | None = None
                 ) -> Instances: ...


def predict_tiled(predictor: ScalablePredictor, image, settings: TileSettings,
                  tta: bool = False, progress: ProgressFn | None = None,
                  stop: StopFn | None = None,
                  limits: tuple[float, float] | None = None) -> Instances:
    """Predict a large image tile by tile and stitch the result.

    The intensity conversion (the 1..99.8 percentile stretch of 16-bit and float images) is
    computed once for the whole image, so every tile sees the same grey levels. Tiles are read
    from ``image`` one at a time (slicing a memory-mapped or lazily read array reads only that
    tile), predicted at ``settings.scale`` and kept as cropped masks; the full-resolution label
    image is never built.

    Args:
        predictor: the model, called as ``predictor(tile, tta=tta, scale=settings.scale)``.
        image: (H, W) or (H, W, C) array-like supporting 2-D slicing (numpy array, memmap).
        settings: tile size, overlap and scale.
        tta: test-time augmentation per tile, as the config's TEST.AUG says.
        progress: ``progress(stage, done, total)``: ``(TILE, k, n)`` before the first tile
            (k = 0) and after each, and every engine stage of each tile in between
            (:mod:`cellseg.core.progress`).
        stop: polled between tiles and between the stages of each tile; True ends the
            prediction with PredictionCancelled.
        limits: the grey-level stretch (``stretch_limits``) when the caller has it from an
            overview level; by default found from ``image`` itself.

    Returns:
        Instances in image pixels, merged across tile seams (rule: :mod:`.stitch`).

    Raises:
        PredictionCancelled: ``stop()`` returned True.
    """
    h, w = int(image.shape[0]), int(image.shape[1])
    windows = tile_windows((h, w), settings)
    if limits is None:
        limits = stretch_limits(image)
    watch = {k: v for k, v in (("progress", progress), ("stop", stop)) if v is not None}
    parts = []
    for done, (x0, y0, x1, y1) in enumerate(windows):
        if progress is not None:
            progress(TILE, done, len(windows))
        if stop is not None and stop():
            raise PredictionCancelled(f"tiled prediction cancelled after {done} tiles")
        tile = to_uint8(np.asarray(image[y0:y1, x0:x1]), limits)
        out = predictor(tile, tta=tta, scale=settings.scale, **watch)
        parts.append(out.replace(mask_probs=None))
    if progress is not None:
        progress(TILE, len(windows), len(windows))
    return stitch(parts, windows, (h, w))
