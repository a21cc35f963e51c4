"""Masks <-> polygons along pixel edges, shared by the ImageJ and GeoJSON formats.

Coordinates are those of ImageJ, QuPath and COCO: pixel ``(x, y)`` covers the square
``[x, x + 1) x [y, y + 1)``, so a polygon traced along the outer edges of a mask's pixels has
integer vertices and exactly the mask's pixel count as its area. Rasterising sets the pixels
whose centres lie inside (pycocotools' rule, which ImageJ and QuPath share), so a traced polygon
gives back exactly its mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..structures.masks import CroppedMasks


@dataclass(frozen=True)
class Part:
    """One connected part of a mask: its outer ring and its holes, (K, 2) float64 x, y."""

    exterior: np.ndarray
    holes: list[np.ndarray]

    @property
    def area(self) -> float:
        return _ring_area(self.exterior) - sum(_ring_area(h) for h in self.holes)


def trace_mask(masks: CroppedMasks, i: int) -> list[Part]:
    """The connected parts of mask ``i`` as polygons along its pixels' outer edges.

    Args:
        masks: compact masks of one image.
        i: which mask.

    Returns:
        One :class:`Part` per 8-connected component (largest area first), each ring closed
        implicitly (first vertex not repeated) with redundant collinear vertices removed.
        Two pixels that touch only at a corner give a ring that touches itself there; callers
        that need OGC-valid geometry repair it (see :mod:`.geojson`).
    """
    import cv2

    crop = masks.crop(i).astype(np.uint8)
    if crop.size == 0 or not crop.any():
        return []
    x0, y0 = (int(v) for v in masks.windows[i, :2])
    # Trace the 2x upsampled mask. Its boundary pixels are the first (even index) or last (odd
    # index) half of an original pixel, so index u maps to the pixel edge ceil(u / 2): left and
    # top edges for even u, right and bottom edges (x + 1) for odd u. Hole contours run on the
    # foreground pixels around the hole and map to the hole's edges the same way.
    big = np.kron(crop, np.ones((2, 2), np.uint8))
    contours, hierarchy = cv2.findContours(big, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    rings = [_simplify((c[:, 0, :].astype(np.int64) + 1) // 2 + (x0, y0)) for c in contours]
    parts = []
    for k, (_, _, _, parent) in enumerate(hierarchy):
        if parent >= 0 or len(rings[k]) < 3:
            continue
        holes = [rings[j] for j, h in enumerate(hierarchy) if h[3] == k and len(rings[j]) >= 3]
        parts.append(Part(rings[k].astype(np.float64), [h.astype(np.float64) for h in holes]))
    parts.sort(key=lambda p: -p.area)
    return parts


def rasterize(rings: list[tuple[np.ndarray, list[np.ndarray]]], image_size: tuple[int, int]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Pixels whose centres lie inside polygons with holes.

    Args:
        rings: ``(exterior, holes)`` pairs in image coordinates, each ring (K, 2) x, y.
        image_size: (H, W); the result is clipped to the image.

    Returns:
        ``window`` [x0, y0, x1, y1] (int64, exclusive ends) and the (y1 - y0, x1 - x0) bool
        crop; an empty (0-size) window when no pixel centre is covered.
    """
    from pycocotools import mask as mask_util

    h, w = image_size
    pts = np.concatenate([r for r, _ in rings]) if rings else np.zeros((0, 2))
    if len(pts) == 0:
        return np.zeros(4, np.int64), np.zeros((0, 0), bool)
    lo = np.clip(np.floor(pts.min(0)).astype(np.int64), 0, [w, h])
    hi = np.clip(np.ceil(pts.max(0)).astype(np.int64) + 1, 0, [w, h])
    ww, wh = int(hi[0] - lo[0]), int(hi[1] - lo[1])
    if ww <= 0 or wh <= 0:
        return np.zeros(4, np.int64), np.zeros((0, 0), bool)

    def fill(ring: np.ndarray) -> np.ndarray:
        if len(ring) < 3:
            return np.zeros((wh, ww), bool)
        flat = (np.asarray(ring, np.float64) - lo).ravel().tolist()
        return mask_util.decode(mask_util.frPyObjects([flat], wh, ww))[:, :, 0].astype(bool)

    crop = np.zeros((wh, ww), bool)
    for exterior, holes in rings:
        part = fill(exterior)
        for hole in holes:
            part &= ~fill(hole)
        crop |= part
    window = np.array([lo[0], lo[1], hi[0], hi[1]], np.int64)
    return window, crop


def masks_from_rings(items: list[list[tuple[np.ndarray, list[np.ndarray]]]],
                     image_size: tuple[int, int]) -> tuple[CroppedMasks, np.ndarray]:
    """Rasterise one polygon set per instance.

    Returns:
        The compact masks and a bool (N,) array that is False where an instance covers no
        pixel centre (callers drop or report those).
    """
    windows, crops = [], []
    for rings in items:
        win, crop = rasterize(rings, image_size)
        windows.append(win)
        crops.append(crop)
    masks = CroppedMasks.from_crops(image_size, np.array(windows, np.int64).reshape(-1, 4), crops)
    return masks, masks.areas() > 0


def _simplify(ring: np.ndarray) -> np.ndarray:
    """Drop repeated vertices and vertices in the middle of straight runs."""
    keep = np.any(ring != np.roll(ring, 1, axis=0), axis=1)
    ring = ring[keep] if keep.any() else ring[:1]
    if len(ring) < 3:
        return ring
    prev, nxt = np.roll(ring, 1, axis=0), np.roll(ring, -1, axis=0)
    cross = (ring[:, 0] - prev[:, 0]) * (nxt[:, 1] - ring[:, 1]) \
        - (ring[:, 1] - prev[:, 1]) * (nxt[:, 0] - ring[:, 0])
    return ring[cross != 0]


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0
