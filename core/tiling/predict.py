"""Predicting an image tile by tile at a chosen scale, streaming the tiles."""
from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from ..io.image import stretch_limits, to_uint8
from ..structures import Instances
from .grid import TileSettings, tile_windows
from .stitch import stitch


class ScalablePredictor(Protocol):
    """What tiling needs of a model: ``Predictor`` is one."""

    def __call__(self, image: np.ndarray, tta: bool = False,
                 scale: float | None = None) -> Instances: ...


def predict_tiled(predictor: ScalablePredictor, image, settings: TileSettings,
                  tta: bool = False,
                  progress: Callable[[int, int], None] | None = None,
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
        progress: called with (tiles done, tiles in all) after each tile; it may raise (for
            example to cancel) and the exception propagates between tiles.
        limits: the grey-level stretch (``stretch_limits``) when the caller has it from an
            overview level; by default found from ``image`` itself.

    Returns:
        Instances in image pixels, merged across tile seams (rule: :mod:`.stitch`).
    """
    h, w = int(image.shape[0]), int(image.shape[1])
    windows = tile_windows((h, w), settings)
    if limits is None:
        limits = stretch_limits(image)
    parts = []
    for done, (x0, y0, x1, y1) in enumerate(windows, 1):
        tile = to_uint8(np.asarray(image[y0:y1, x0:x1]), limits)
        parts.append(predictor(tile, tta=tta, scale=settings.scale).replace(mask_probs=None))
        if progress is not None:
            progress(done, len(windows))
    return stitch(parts, windows, (h, w))
