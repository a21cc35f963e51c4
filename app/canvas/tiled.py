"""The multiscale canvas for large images: image and overlay drawn per tile from pyramid levels.

Why: the one-image :class:`~.overlay.Overlay` keeps a label image, a code image and an ARGB
image the size of the picture (12 bytes a pixel: 3 GB at 16384 px) and re-gathers all of it on
every toggle. Here nothing full-size exists. The view paints only the tiles it exposes, at the
pyramid level whose pixels are about one screen pixel (level ``L``: every ``2**L``-th image
pixel). A tile of the overlay is rasterised when first painted, from the cropped masks of the
instances that a uniform grid index (:class:`GridIndex`) finds under it, and keeps its pixel
codes (``4 * label + 2 * stripe + edge``, the Overlay's own scheme and colour table), so opacity, colours,
contours, hidden classes and selection re-gather only the tiles painted next. Tiles are kept in
an LRU bounded by bytes; an edit re-renders only the part of the cached tiles it touches.

Editing tools keep working as with the Overlay: they write ``overlay.labels[y0:y1, x0:x1] = ...``
(kept as sparse patches over the instances until the next ``set_instances``) and call
``overlay.update_region``.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem

from cellseg.core.structures import CroppedMasks, Instances
from cellseg.core.structures.masks import _ranges

from .contrast import Contrast, apply_contrast
from .overlay import Overlay, Rect, _edge_code, _hatch
from .tile_index import TILE, GridIndex, PatchedLabels, level_for, max_level_of

OVERLAY_CACHE_BYTES = 128 << 20  # codes + ARGB: 512 KB a tile, 256 tiles
IMAGE_CACHE_BYTES = 64 << 20


# ======================================================================== overlay tiles
class _Tile:
    __slots__ = ("code", "argb", "image", "version")

    def __init__(self, code: np.ndarray) -> None:
        self.code = code
        self.argb = np.zeros(code.shape, np.uint32)
        h, w = code.shape
        self.image = QImage(self.argb.data, w, h, 4 * w, QImage.Format.Format_ARGB32_Premultiplied)
        self.version = -1

    @property
    def nbytes(self) -> int:
        return self.code.nbytes + self.argb.nbytes


class TiledOverlay(Overlay):
    """The :class:`Overlay` API (style, selection, review state, colours, ``update_region``,
    ``instance_at``) with tiles rasterised on demand instead of full-size images."""

    tiled = True

    def __init__(self, tile: int = TILE, cache_bytes: int = OVERLAY_CACHE_BYTES) -> None:
        super().__init__()
        self.tile_size = tile
        self.cache_bytes = cache_bytes
        self.size = (0, 0)
        self.max_level = 0
        self._masks = CroppedMasks.empty((0, 0))
        self._rank = np.zeros(0, np.int64)  # drawing priority (higher scores on top)
        self._index = GridIndex(np.zeros((0, 4), np.int64), (1, 1))
        self._tiles: OrderedDict[tuple[int, int, int], _Tile] = OrderedDict()
        self._bytes = 0
        self._version = 0  # bumped when the colour table changes
        self.labels = PatchedLabels(self, (0, 0))

    # ------------------------------------------------------------------ full updates
    def set_instances(self, instances: Instances | None, selected=frozenset(),
                      image_size: tuple[int, int] | None = None, prepared=None) -> None:
        """Replace the whole overlay (``prepared`` is ignored: there is no label image)."""
        self.instances = instances
        self.selected = frozenset(int(i) for i in selected)
        size = instances.image_size if instances is not None else image_size
        self.size = tuple(int(v) for v in (size if size is not None else self.size))
        self.max_level = max_level_of(self.size, self.tile_size)
        n = len(instances) if instances is not None else 0
        masks = instances.masks if instances is not None else None
        # box-only results draw nothing, as in the Overlay
        self._masks = masks if masks is not None else CroppedMasks.empty(self.size)
        order = (np.argsort(instances.scores, kind="stable") if len(self._masks)
                 else np.zeros(0, np.int64))
        self._rank = np.empty(len(self._masks), np.int64)
        self._rank[order] = np.arange(len(self._masks))
        self._index = GridIndex(self._masks.windows, self.size)
        self._classes = (instances.classes.copy() if instances is not None
                         else np.zeros(0, np.int64))
        self._keys, self._reviews = None, np.zeros(n, np.int8)
        self._assign_colours(n)
        self.labels = PatchedLabels(self, self.size)
        self._tiles.clear()
        self._bytes = 0
        self._rebuild_lut()
        self._render_all()

    def _render_all(self) -> None:
        self._version += 1  # cached tiles re-gather their colours when next painted
        self._notify(None)

    # ------------------------------------------------------------------ rasterising
    def rasterise(self, level: int, lx0: int, ly0: int, w: int, h: int) -> np.ndarray:
        """Labels (instance index + 1) sampled at level ``level``: (h, w) int32, element
        ``[i, j]`` is image pixel ``((lx0 + j) * 2**level, (ly0 + i) * 2**level)``; 0 outside
        the image and where no instance is. Where masks overlap the higher score wins."""
        s = 1 << level
        out = np.zeros((h, w), np.int32)
        if w <= 0 or h <= 0:
            return out
        ids = self._index.query(lx0 * s, ly0 * s, (lx0 + w - 1) * s + 1, (ly0 + h - 1) * s + 1)
        if len(ids):
            ids = ids[np.argsort(self._rank[ids], kind="stable")]  # lowest priority first
            win = self._masks.windows[ids]
            # level samples inside each window: x0 <= lx * s < x1
            ax0 = np.maximum(-(-win[:, 0] // s), lx0)
            ax1 = np.minimum(-(-win[:, 2] // s), lx0 + w)
            ay0 = np.maximum(-(-win[:, 1] // s), ly0)
            ay1 = np.minimum(-(-win[:, 3] // s), ly0 + h)
            nx, ny = np.maximum(ax1 - ax0, 0), np.maximum(ay1 - ay0, 0)
            count = nx * ny
            k = np.repeat(np.arange(len(ids)), count)
            ly, lx = np.divmod(_ranges(np.zeros(len(ids), np.int64), count),
                               np.maximum(nx, 1)[k])
            xs, ys = ax0[k] + lx, ay0[k] + ly
            flat = (self._masks.starts[ids][k] + (ys * s - win[k, 1]) * (win[k, 2] - win[k, 0])
                    + xs * s - win[k, 0])
            on = self._masks.data[flat]
            # samples are in priority order: numpy keeps the last write of a repeated index
            out[ys[on] - ly0, xs[on] - lx0] = ids[k[on]] + 1
        if self.labels:
            self.labels.paint_into(out, s, lx0, ly0)
        return out

    def codes(self, level: int, lx0: int, ly0: int, w: int, h: int) -> np.ndarray:
        """Pixel codes ``4 * label + 2 * stripe + edge`` of a level window (the Overlay's
        scheme); a one-sample halo decides the edges, and outside the image counts as
        background (cells cut by the border close). The hatch lines of rejected instances are
        placed by level coordinates, so neighbouring tiles continue them."""
        labels = self.rasterise(level, lx0 - 1, ly0 - 1, w + 2, h + 2)
        hatch = _hatch(labels.shape, (lx0 - 1, ly0 - 1))
        return _edge_code(labels, (False, False, False, False), hatch=hatch)[1:-1, 1:-1]

    def level_size(self, level: int) -> tuple[int, int]:
        s = 1 << level
        return -(-self.size[0] // s), -(-self.size[1] // s)

    def tile(self, level: int, ty: int, tx: int) -> QImage:
        """The ARGB tile ``(ty, tx)`` of ``level`` (cached, coloured with the current table)."""
        key = (level, ty, tx)
        t = self._tiles.get(key)
        if t is None:
            lh, lw = self.level_size(level)
            T = self.tile_size
            t = _Tile(self.codes(level, tx * T, ty * T, min(T, lw - tx * T), min(T, lh - ty * T)))
            self._tiles[key] = t
            self._bytes += t.nbytes
            while self._bytes > self.cache_bytes and len(self._tiles) > 1:
                _, old = self._tiles.popitem(last=False)
                self._bytes -= old.nbytes
        else:
            self._tiles.move_to_end(key)
        if t.version != self._version:
            np.take(self._lut, t.code, out=t.argb, mode="clip")
            t.version = self._version
        return t.image

    @property
    def cached_bytes(self) -> int:
        return self._bytes

    @property
    def blank(self) -> bool:
        return not self.style.visible or self.instances is None

    # ------------------------------------------------------------------ partial updates
    def update_region(self, x0: int, y0: int, x1: int, y1: int) -> Rect | None:
        """Re-render ``[x0, x1) x [y0, y1)`` (after a tool wrote :attr:`labels`) in the cached
        tiles of every level that it touches; tiles not cached are rendered when painted."""
        h, w = self.size
        x0, y0 = max(0, int(np.floor(x0)) - 1), max(0, int(np.floor(y0)) - 1)
        x1, y1 = min(w, int(np.ceil(x1)) + 1), min(h, int(np.ceil(y1)) + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        top = self.labels.max_in(x0, y0, x1, y1)
        if top > len(self._rgb):
            self._grow(top)
        T = self.tile_size
        for level in range(self.max_level + 1):
            s = 1 << level
            # samples whose pixel or 4-neighbours changed: ceil(x0 / s) - 1 .. ceil(x1 / s)
            lx0, ly0 = -(-x0 // s) - 1, -(-y0 // s) - 1
            lx1, ly1 = -(-x1 // s) + 1, -(-y1 // s) + 1
            for ty in range(max(0, ly0) // T, (ly1 - 1) // T + 1):
                for tx in range(max(0, lx0) // T, (lx1 - 1) // T + 1):
                    t = self._tiles.get((level, ty, tx))
                    if t is None:
                        continue
                    th, tw = t.code.shape
                    a0, b0 = max(lx0, tx * T), max(ly0, ty * T)
                    a1, b1 = min(lx1, tx * T + tw), min(ly1, ty * T + th)
                    if a1 <= a0 or b1 <= b0:
                        continue
                    sub = np.s_[b0 - ty * T:b1 - ty * T, a0 - tx * T:a1 - tx * T]
                    t.code[sub] = self.codes(level, a0, b0, a1 - a0, b1 - b0)
                    if t.version == self._version:
                        np.take(self._lut, t.code[sub], out=t.argb[sub], mode="clip")
        rect = (x0, y0, x1, y1)
        self._notify(rect)
        return rect

    # ------------------------------------------------------------------ queries
    def instance_at(self, x: float, y: float) -> int:
        """Index of the instance drawn at image pixel (x, y), or -1 (through the grid index)."""
        h, w = self.size
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < w and 0 <= yi < h):
            return -1
        patched = self.labels.value_at(xi, yi)
        if patched is not None:
            return patched - 1
        ids = self._index.query(xi, yi, xi + 1, yi + 1)
        if not len(ids):
            return -1
        win = self._masks.windows[ids]
        on = self._masks.data[self._masks.starts[ids] + (yi - win[:, 1]) * (win[:, 2] - win[:, 0])
                              + xi - win[:, 0]]
        hits = ids[on]
        return int(hits[np.argmax(self._rank[hits])]) if len(hits) else -1


# ======================================================================== image tiles
class ImageTiles:
    """Display tiles of an image (numpy array, memory map or ``LargeImage`` with ``.levels``),
    read a tile at a time from the pyramid level nearest below the one asked for (striding
    when the file has no such level), with the display contrast applied per tile."""

    def __init__(self, image, contrast: Contrast, tile: int = TILE,
                 cache_bytes: int = IMAGE_CACHE_BYTES) -> None:
        levels = getattr(image, "levels", None) or (image,)
        h, w = levels[0].shape[:2]
        self.size = (int(h), int(w))
        # (factor, array): level k of a file is ``factor`` times smaller than level 0
        self._levels = [(max(1, int(round(w / lv.shape[1]))), lv) for lv in levels]
        self.tile_size = tile
        self.cache_bytes = cache_bytes
        self.max_level = max_level_of(self.size, tile)
        self._tiles: OrderedDict[tuple[int, int, int], tuple[QImage, np.ndarray]] = OrderedDict()
        self._bytes = 0
        self.blank = False
        self.set_contrast(contrast)

    def set_contrast(self, contrast: Contrast) -> None:
        self.contrast = contrast
        self._lut = None
        dtype = np.dtype(self._levels[0][1].dtype)
        if dtype in (np.uint8, np.uint16) and len(self._levels[0][1].shape) == 2:
            # one table per contrast straight to opaque 0xFFgggggg: a tile is one gather, and
            # Qt draws RGB32 without the per-paint conversion a Grayscale8 image would need
            values = np.arange(np.iinfo(dtype).max + 1, dtype=dtype)
            grey = apply_contrast(values[None, :], contrast)[0].astype(np.uint32)
            self._lut = np.uint32(0xFF000000) | (grey << 16) | (grey << 8) | grey
        self._tiles.clear()
        self._bytes = 0

    def raw(self, level: int, lx0: int, ly0: int, w: int, h: int) -> np.ndarray:
        """Image values sampled at level ``level`` (every ``2**level``-th pixel)."""
        s = 1 << level
        factor, array = max(((f, a) for f, a in self._levels if s % f == 0),
                            key=lambda fa: fa[0])
        step = s // factor
        y0, x0 = ly0 * step, lx0 * step
        return np.asarray(array[y0:y0 + h * step:step, x0:x0 + w * step:step])

    def tile(self, level: int, ty: int, tx: int) -> QImage:
        key = (level, ty, tx)
        hit = self._tiles.get(key)
        if hit is not None:
            self._tiles.move_to_end(key)
            return hit[0]
        s, T = 1 << level, self.tile_size
        lh, lw = -(-self.size[0] // s), -(-self.size[1] // s)
        raw = self.raw(level, tx * T, ty * T, min(T, lw - tx * T), min(T, lh - ty * T))
        if self._lut is not None:
            display = np.take(self._lut, raw)
        else:  # float or multi-channel: the canvas's contrast rule, then one conversion
            rgb = apply_contrast(raw, self.contrast)
            rgb = np.repeat(rgb[:, :, None], 3, 2) if rgb.ndim == 2 else rgb
            display = np.empty(rgb.shape[:2], np.uint32)
            display[:] = np.uint32(0xFF000000)
            display |= (rgb[:, :, 0].astype(np.uint32) << 16) | (rgb[:, :, 1].astype(
                np.uint32) << 8) | rgb[:, :, 2]
        h, w = display.shape
        image = QImage(display.data, w, h, 4 * w, QImage.Format.Format_RGB32)
        self._tiles[key] = (image, display)
        self._bytes += display.nbytes
        while self._bytes > self.cache_bytes and len(self._tiles) > 1:
            _, (_, old) = self._tiles.popitem(last=False)
            self._bytes -= old.nbytes
        return image


# ======================================================================== the graphics item
class TileLayer(QGraphicsItem):
    """Paints the exposed tiles of a tile source (:class:`ImageTiles` or :class:`TiledOverlay`)
    at the level the view's scale asks for; one item however large the image."""

    def __init__(self, smooth_when_zoomed_out: bool = False) -> None:
        super().__init__()
        self.source = None
        self._smooth = smooth_when_zoomed_out
        self._rect = QRectF()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)

    def set_source(self, source) -> None:
        self.prepareGeometryChange()
        self.source = source
        h, w = source.size if source is not None else (0, 0)
        self._rect = QRectF(0, 0, w, h)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect

    def update_rect(self, rect: Rect | None) -> None:
        if rect is None:
            self.update()
        else:
            x0, y0, x1, y1 = rect
            self.update(QRectF(x0, y0, x1 - x0, y1 - y0))

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        src = self.source
        if src is None or src.blank or self._rect.isEmpty():
            return
        exposed = option.exposedRect.intersected(self._rect)
        if exposed.isEmpty():
            return
        scale = painter.worldTransform().m11()
        # on a high-DPI screen a scene pixel covers several device pixels: pick by those
        level = level_for(scale * painter.device().devicePixelRatioF(), src.max_level)
        s = 1 << level
        span = src.tile_size * s  # image pixels per tile side
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform,
                              self._smooth and scale < 1.0)
        painter.setClipRect(self._rect)  # the last level sample may reach past the image
        tx0, tx1 = int(exposed.left() // span), int(np.ceil(exposed.right() / span))
        ty0, ty1 = int(exposed.top() // span), int(np.ceil(exposed.bottom() / span))
        for ty in range(ty0, ty1):  # the tiles on screen: tens, whatever the image size
            for tx in range(tx0, tx1):
                image = src.tile(level, ty, tx)
                painter.drawImage(QRectF(tx * span, ty * span, image.width() * s,
                                         image.height() * s), image)
