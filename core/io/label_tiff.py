"""Instance-label TIFFs (one integer label per pixel, 0 = background), also for huge images.

Up to :data:`TILED_ABOVE` pixels the label image is built whole and written as a plain TIFF
(what Fiji, cellpose and StarDist read). Above it, the TIFF is written tiled and compressed,
one band of tile rows at a time from the instances' cropped masks, so a 16k x 16k image with
32,000 cells never needs its full label image (1 GiB as int32) in memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..structures import CroppedMasks

TILED_ABOVE = 1 << 24  # pixels (4096 x 4096): larger label images are written tile by tile
TILE = 256


def write_label_tiff(path: str | Path, masks: CroppedMasks, values: np.ndarray, dtype,
                     tiled_above: int = TILED_ABOVE, tile: int = TILE) -> int:
    """Write the label image of ``masks``: pixel = ``values[i]`` of the instance covering it.

    Args:
        path: the TIFF to write.
        masks: N instance masks of one image.
        values: (N,) positive labels (same order as ``masks``).
        dtype: the TIFF's integer dtype (uint16 or uint32).
        tiled_above: images with more pixels are written tiled (``tile`` x ``tile``, zlib).
        tile: tile side for the tiled layout (a multiple of 16).

    Returns:
        The number of pixels where instances overlap (there the later instance wins, as
        ``CroppedMasks.label_image`` does).
    """
    import tifffile

    h, w = masks.image_size
    table = np.concatenate([[0], np.asarray(values)]).astype(dtype)
    if h * w <= tiled_above:
        idx = masks.label_image(dtype=np.int64)
        tifffile.imwrite(path, table[idx], compression=None)
        return int(masks.areas().sum() - np.count_nonzero(idx))
    covered = [0]

    def tiles():
        top, bottom = masks.windows[:, 1], masks.windows[:, 3]
        for y0 in range(0, h, tile):
            y1 = min(y0 + tile, h)
            band = np.zeros((y1 - y0, w), np.int64)
            meets = np.flatnonzero((top < y1) & (bottom > y0))
            if len(meets):
                inst, ys, xs = masks[meets].pixel_coordinates()
                inside = (ys >= y0) & (ys < y1)
                # ascending instance order and numpy's last-write-wins: later instances on top
                band[ys[inside] - y0, xs[inside]] = meets[inst[inside]] + 1
            covered[0] += np.count_nonzero(band)
            labels = table[band]
            for x0 in range(0, w, tile):
                out = np.zeros((tile, tile), dtype)
                part = labels[:, x0:x0 + tile]
                out[:part.shape[0], :part.shape[1]] = part
                yield out

    tifffile.imwrite(path, tiles(), shape=(h, w), dtype=dtype, tile=(tile, tile),
                     compression="zlib")
    return int(masks.areas().sum() - covered[0])
