"""Window geometry of cropped bitmaps: a mask is a boolean ``crop`` covering a ``window``.

Every editing operation works on crops, never on full-image bitmaps, so these helpers move
crops between windows (paste), unite and subtract them, and shrink a window to its set pixels
(tighten). ``tighten_masks`` does the latter for every mask of a :class:`CroppedMasks` at once.
"""
from __future__ import annotations

import numpy as np

from ..structures.masks import CroppedMasks
from .rle import _from_coordinates

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 with exclusive ends


def tighten(window: Window, crop: np.ndarray) -> tuple[Window, np.ndarray]:
    """Shrink ``window`` to the set pixels of ``crop``.

    Args:
        window: where ``crop`` lies in the image.
        crop: bool (y1 - y0, x1 - x0).

    Returns:
        The tight window and a copy of the crop it covers; an empty crop gives the zero-size
        window at ``window``'s corner and a (0, 0) crop.
    """
    rows = np.flatnonzero(crop.any(axis=1))
    if rows.size == 0:
        return (window[0], window[1], window[0], window[1]), np.zeros((0, 0), bool)
    cols = np.flatnonzero(crop.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    x0, y0 = window[0], window[1]
    return (x0 + int(c0), y0 + int(r0), x0 + int(c1), y0 + int(r1)), crop[r0:r1, c0:c1].copy()


def paste(window: Window, crop: np.ndarray, into: Window) -> np.ndarray:
    """``crop`` (at ``window``) as a bool bitmap of window ``into``, clipped to it.

    Returns:
        bool (into.y1 - into.y0, into.x1 - into.x0).
    """
    out = np.zeros((into[3] - into[1], into[2] - into[0]), bool)
    ix0, iy0 = max(window[0], into[0]), max(window[1], into[1])
    ix1, iy1 = min(window[2], into[2]), min(window[3], into[3])
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - into[1]:iy1 - into[1], ix0 - into[0]:ix1 - into[0]] = \
            crop[iy0 - window[1]:iy1 - window[1], ix0 - window[0]:ix1 - window[0]]
    return out


def union(wa: Window, ca: np.ndarray, wb: Window, cb: np.ndarray) -> tuple[Window, np.ndarray]:
    """Pixels of crop a or crop b, as a tight window and crop."""
    if wa[2] <= wa[0] or wa[3] <= wa[1]:
        return tighten(wb, cb)
    win = (min(wa[0], wb[0]), min(wa[1], wb[1]), max(wa[2], wb[2]), max(wa[3], wb[3]))
    return tighten(win, paste(wa, ca, win) | paste(wb, cb, win))


def subtract(wa: Window, ca: np.ndarray, wb: Window, cb: np.ndarray) -> np.ndarray:
    """``ca`` minus crop b, in window a (same shape as ``ca``)."""
    return ca & ~paste(wb, cb, wa)


def same_pixels(wa: Window, ca: np.ndarray, wb: Window, cb: np.ndarray) -> bool:
    """Whether two crops set the same image pixels, whatever their windows."""
    ta, tb = tighten(wa, ca), tighten(wb, cb)
    return ta[0] == tb[0] and np.array_equal(ta[1], tb[1])


def tighten_masks(masks: CroppedMasks) -> CroppedMasks:
    """The same masks with every window shrunk to its set pixels (vectorised)."""
    inst, ys, xs = masks.pixel_coordinates()
    return _from_coordinates(masks.image_size, len(masks), inst, ys, xs)
