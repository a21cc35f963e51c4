"""Where the tiles go: a regular grid of overlapping windows covering the whole image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileSettings:
    """How an image is cut and at what scale each tile is predicted.

    ``tile``: tile side in image pixels; ``overlap``: pixels shared by neighbouring tiles (an
    object narrower than this is seen whole by at least one tile); ``scale``: model input pixels
    per image pixel (1.0: the image's native resolution, 2.0: tiles enlarged two-fold).
    """

    tile: int = 512
    overlap: int = 64
    scale: float = 1.0

    def __post_init__(self):
        if self.tile < 16:
            raise ValueError(f"tile must be at least 16 px, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile), got {self.overlap} for tile "
                             f"{self.tile}")
        if not self.scale > 0:
            raise ValueError(f"tile scale must be positive, got {self.scale}")


def default_tile_settings(cfg) -> TileSettings:
    """Tiles the size of the model's largest training input, at native resolution.

    Args:
        cfg: a loaded Detectron2 config (``INPUT.MIN_SIZE_TRAIN`` / ``INPUT.MIN_SIZE_TEST``).

    Returns:
        TileSettings with ``tile`` = the largest of ``MIN_SIZE_TRAIN`` (else ``MIN_SIZE_TEST``,
        else 800), ``overlap`` = tile / 8 and ``scale`` 1.0: the model sees each tile at the
        size it trained on without shrinking the image.
    """
    sizes = [int(s) for s in (cfg.INPUT.MIN_SIZE_TRAIN or ()) if int(s) > 0]
    tile = max(sizes) if sizes else int(cfg.INPUT.MIN_SIZE_TEST or 0) or 800
    return TileSettings(tile=tile, overlap=tile // 8, scale=1.0)


def _starts(length: int, tile: int, stride: int) -> np.ndarray:
    if length <= tile:
        return np.zeros(1, np.int64)
    starts = np.arange(0, length - tile, stride, dtype=np.int64)
    # the last tile ends at the image edge (shifted back) so every tile is full size
    return np.unique(np.append(starts, length - tile))


def tile_windows(image_size: tuple[int, int], settings: TileSettings) -> np.ndarray:
    """Windows of the tiles covering an image, row by row.

    Args:
        image_size: (H, W) of the image.
        settings: tile size and overlap (the scale plays no part here).

    Returns:
        (T, 4) int64 windows ``[x0, y0, x1, y1]`` (exclusive ends) inside the image.
        Neighbours share at least ``settings.overlap`` pixels; a side shorter than the tile
        gives one tile that spans it.
    """
    h, w = int(image_size[0]), int(image_size[1])
    stride = settings.tile - settings.overlap
    ys = _starts(h, settings.tile, stride)
    xs = _starts(w, settings.tile, stride)
    y0, x0 = np.meshgrid(ys, xs, indexing="ij")
    x0, y0 = x0.ravel(), y0.ravel()
    return np.stack([x0, y0, np.minimum(x0 + settings.tile, w),
                     np.minimum(y0 + settings.tile, h)], axis=1)
