"""Where the tiled canvas looks things up: pyramid levels, a uniform grid index of the
instances' mask windows, and the editing tools' live label patches (:mod:`.tiled` draws)."""
from __future__ import annotations

import numpy as np

from cellseg.core.structures.masks import _ranges

TILED_MIN_PIXELS = 1 << 24  # images of at least this many pixels (4096 x 4096) are tiled
TILE = 256  # level pixels per tile side (about screen pixels: a 1920x1080 view shows ~40)


def uses_tiles(image_size) -> bool:
    """Whether the canvas shows an image of ``(H, W)`` through the tiles of :mod:`.tiled`."""
    h, w = image_size[:2]
    return h * w > 0 and h * w >= TILED_MIN_PIXELS


def level_for(scale: float, max_level: int) -> int:
    """Pyramid level for a view scale (screen px per image px): the coarsest level whose
    pixels are not larger than a screen pixel, so detail never drops below the screen's."""
    if scale >= 1.0:
        return 0
    return int(min(max_level, np.floor(np.log2(1.0 / scale) + 1e-9)))


def max_level_of(image_size, tile: int = TILE) -> int:
    """The level at which the whole image fits in about one tile."""
    return max(0, int(np.ceil(np.log2(max(max(image_size[:2]), 1) / tile))))


# ======================================================================== spatial index
class GridIndex:
    """Uniform grid of buckets over instance windows: which instances may cover a rectangle.

    Args:
        windows: (N, 4) int [x0, y0, x1, y1], exclusive ends (empty windows are never found).
        image_size: (H, W).
        cell: bucket side in image pixels.
    """

    def __init__(self, windows: np.ndarray, image_size, cell: int = 256) -> None:
        h, w = image_size[:2]
        self.windows = np.asarray(windows, np.int64).reshape(-1, 4)
        self.cell = cell
        self.gw, self.gh = max(1, -(-w // cell)), max(1, -(-h // cell))
        x0, y0, x1, y1 = self.windows.T
        ok = (x1 > x0) & (y1 > y0)
        cx0, cy0 = np.clip(x0 // cell, 0, self.gw - 1), np.clip(y0 // cell, 0, self.gh - 1)
        cx1 = np.clip((x1 - 1) // cell, 0, self.gw - 1)
        cy1 = np.clip((y1 - 1) // cell, 0, self.gh - 1)
        nx, ny = np.where(ok, cx1 - cx0 + 1, 0), np.where(ok, cy1 - cy0 + 1, 0)
        count = nx * ny
        owner = np.repeat(np.arange(len(count)), count)
        ly, lx = np.divmod(_ranges(np.zeros(len(count), np.int64), count), np.maximum(nx, 1)[owner])
        cells = (cy0[owner] + ly) * self.gw + cx0[owner] + lx
        order = np.argsort(cells, kind="stable")
        self._ids = owner[order]  # instance ids bucket by bucket (CSR)
        self._starts = np.zeros(self.gw * self.gh + 1, np.int64)
        np.cumsum(np.bincount(cells, minlength=self.gw * self.gh), out=self._starts[1:])

    def query(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Sorted ids of the instances whose windows meet ``[x0, x1) x [y0, y1)``."""
        c = self.cell
        cx0, cx1 = max(0, x0 // c), min(self.gw - 1, (x1 - 1) // c)
        cy0, cy1 = max(0, y0 // c), min(self.gh - 1, (y1 - 1) // c)
        if cx1 < cx0 or cy1 < cy0 or not len(self._ids):
            return np.zeros(0, np.int64)
        rows = np.arange(cy0, cy1 + 1) * self.gw  # a row's buckets are contiguous in the CSR
        lo, hi = self._starts[rows + cx0], self._starts[rows + cx1 + 1]
        ids = np.unique(self._ids[_ranges(lo, hi - lo)])
        win = self.windows[ids]
        meet = (win[:, 0] < x1) & (win[:, 2] > x0) & (win[:, 1] < y1) & (win[:, 3] > y0)
        return ids[meet]


# ======================================================================== live edit patches
class PatchedLabels:
    """``overlay.labels`` of the tiled overlay: label values written by editing tools, kept as
    256 px chunks over what the instances' masks say, until the next ``set_instances``.

    Supports ``labels[y0:y1, x0:x1] = values`` (what tools write) and reading ``labels[y, x]``
    or a window (rasterised from the masks and patches: for tests and tools, not per frame).
    """

    CHUNK = 256

    def __init__(self, overlay, image_size) -> None:  # overlay: the TiledOverlay it serves
        self._overlay = overlay
        self.shape = tuple(int(v) for v in image_size[:2])
        self.dtype = np.dtype(np.int32)
        self._chunks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __bool__(self) -> bool:
        return bool(self._chunks)

    def _window(self, key) -> tuple[int, int, int, int]:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise IndexError("tiled overlay labels take [rows, columns]")
        h, w = self.shape
        out = []
        for k, n in zip(key, (h, w)):
            if isinstance(k, slice):
                a, b, step = k.indices(n)
                if step != 1:
                    raise IndexError("tiled overlay labels take unit-step slices")
                out += [a, max(a, b)]
            else:
                k = int(k) + (n if int(k) < 0 else 0)
                out += [k, k + 1]
        y0, y1, x0, x1 = out
        return x0, y0, x1, y1

    def __setitem__(self, key, value) -> None:
        x0, y0, x1, y1 = self._window(key)
        values = np.broadcast_to(np.asarray(value, np.int32), (y1 - y0, x1 - x0))
        c = self.CHUNK
        for cy in range(y0 // c, (y1 - 1) // c + 1):  # chunks a brush dab touches: 1-4
            for cx in range(x0 // c, (x1 - 1) // c + 1):
                labels, written = self._chunks.get((cy, cx)) or (
                    np.zeros((c, c), np.int32), np.zeros((c, c), bool))
                self._chunks[(cy, cx)] = labels, written
                ax0, ay0 = max(x0, cx * c), max(y0, cy * c)
                ax1, ay1 = min(x1, cx * c + c), min(y1, cy * c + c)
                dst = np.s_[ay0 - cy * c:ay1 - cy * c, ax0 - cx * c:ax1 - cx * c]
                labels[dst] = values[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0]
                written[dst] = True

    def __getitem__(self, key):
        x0, y0, x1, y1 = self._window(key)
        region = self._overlay.rasterise(0, x0, y0, x1 - x0, y1 - y0)
        scalar = not any(isinstance(k, slice) for k in key)
        return int(region[0, 0]) if scalar else region

    def max_in(self, x0: int, y0: int, x1: int, y1: int) -> int:
        top, c = 0, self.CHUNK
        for (cy, cx), (labels, _) in self._chunks.items():
            if cx * c < x1 and cx * c + c > x0 and cy * c < y1 and cy * c + c > y0:
                top = max(top, int(labels.max()))
        return top

    def paint_into(self, out: np.ndarray, step: int, lx0: int, ly0: int) -> None:
        """Overwrite ``out`` (level samples at image ``(x, y) = ((lx0 + j) * step, (ly0 + i) *
        step)``) where a patch was written."""
        c = self.CHUNK
        h, w = out.shape
        for (cy, cx), (labels, written) in self._chunks.items():
            # level samples inside this chunk: ceil(cx * c / step) <= lx < ceil((cx + 1) c / step)
            jx0, jx1 = max(lx0, -(-cx * c // step)), min(lx0 + w, -(-(cx + 1) * c // step))
            jy0, jy1 = max(ly0, -(-cy * c // step)), min(ly0 + h, -(-(cy + 1) * c // step))
            if jx1 <= jx0 or jy1 <= jy0:
                continue
            sub = np.s_[jy0 * step - cy * c:jy1 * step - cy * c:step,
                        jx0 * step - cx * c:jx1 * step - cx * c:step]
            dst = out[jy0 - ly0:jy1 - ly0, jx0 - lx0:jx1 - lx0]
            np.copyto(dst, labels[sub], where=written[sub])

    def value_at(self, x: int, y: int) -> int | None:
        c = self.CHUNK
        chunk = self._chunks.get((y // c, x // c))
        if chunk is None or not chunk[1][y % c, x % c]:
            return None
        return int(chunk[0][y % c, x % c])
