"""The instance overlay as ONE label image + ONE colour lookup table -> ONE QImage.

Why this shape: with 1,000 instances on a 2048x2048 image, one graphics item per instance makes
every repaint walk 1,000 items; here the whole overlay is a single image. Each pixel holds a code
``4 * label + 2 * stripe + edge`` (label = instance index + 1, 0 = background; stripe = pixel on
a diagonal hatch line, a fixed function of its position; edge = pixel on the instance's contour).
A colour table maps codes to premultiplied ARGB, so changing opacity, colours, contours, review
states or class visibility rebuilds the table (O(instances)) and re-gathers the image in one
``np.take`` (O(pixels), vectorised); nothing is re-rasterised from masks. Rejected instances are
hatched by giving their stripe codes another colour than their fill: the hatch costs nothing
per instance, and no more per pixel than the plain overlay.

Editing tools may write into :attr:`Overlay.labels` (instance index + 1 per pixel; new ids past
the current instance count get their own colours) and call :meth:`Overlay.update_region` to
re-render only that rectangle.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
from PySide6.QtGui import QImage

from cellseg.core.structures import Instances

from .colours import (ACCEPTED_EDGE, REJECTED_EDGE, REJECTED_FILL, REJECTED_HATCH,
                      class_colours, instance_colours, key_colours, premultiplied_argb)

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends), image pixels

# Hatch of rejected instances: diagonal lines HATCH_WIDTH of every HATCH_PERIOD image pixels
# (at the nuclei's 10-30 px, two or more lines cross every cell; at fit they are a few screen
# pixels apart, zoomed in they stay stripes). Alpha of the lines: opaque enough to read over the
# faint grey fill on a bright cell.
HATCH_PERIOD, HATCH_WIDTH = 6, 2
HATCH_ALPHA = 0.8


@dataclass(frozen=True)
class OverlayStyle:
    fill: bool = True
    opacity: float = 0.45  # fill alpha
    contours: bool = True
    contour_opacity: float = 1.0
    colour_by: str = "instance"  # "instance" or "class"
    hidden_classes: frozenset = field(default_factory=frozenset)
    visible: bool = True  # the whole overlay


class Overlay:
    """Numpy state of the overlay plus the QImage that wraps its pixel buffer (no copy)."""

    def __init__(self) -> None:
        self.style = OverlayStyle()
        self.instances: Instances | None = None
        self.selected: frozenset[int] = frozenset()
        self.labels: np.ndarray = np.zeros((0, 0), np.int32)
        self._code = np.zeros((0, 0), np.int32)
        self._buffer = np.zeros((0, 0), np.uint32)
        self._hatch = _hatch((0, 0))  # stripe bits of every pixel (a view: no memory)
        self._lut = np.zeros(2, np.uint32)
        self._rgb = np.zeros((0, 3), np.uint8)  # colour of each label id - 1
        self._classes = np.zeros(0, np.int64)  # class of each label id - 1 (-1: unknown)
        self._keys: np.ndarray | None = None  # stable colour key of each label id - 1
        self._reviews = np.zeros(0, np.int8)  # 0 pending, 1 accepted, 2 rejected
        self.image: QImage | None = None
        self._listeners: list[Callable[[Rect | None], None]] = []

    # ------------------------------------------------------------------ observers
    def add_listener(self, fn: Callable[[Rect | None], None]) -> None:
        """``fn(rect)`` after a re-render: ``rect`` for a partial update, None for all."""
        self._listeners.append(fn)

    def _notify(self, rect: Rect | None) -> None:
        for fn in self._listeners:
            fn(rect)

    # ------------------------------------------------------------------ full updates
    def set_instances(self, instances: Instances | None, selected=frozenset(),
                      image_size: tuple[int, int] | None = None, prepared=None) -> None:
        """Replace the whole overlay. Higher scores are drawn on top where masks overlap.

        ``prepared`` is :func:`prepare_labels` of the same instances, computed in a worker
        thread (the O(pixels) part); without it the labels are computed here."""
        self.instances = instances
        self.selected = frozenset(int(i) for i in selected)
        size = instances.image_size if instances is not None else image_size
        if size is None:
            size = self.labels.shape if self.labels.size else (0, 0)
        h, w = size
        if prepared is None or prepared[0].shape != (h, w):
            prepared = _labels_and_codes(instances, (h, w))
        self.labels, code = prepared
        n = len(instances) if instances is not None else 0
        self._classes = (instances.classes.copy() if instances is not None
                         else np.zeros(0, np.int64))
        self._keys, self._reviews = None, np.zeros(n, np.int8)
        self._assign_colours(n)
        if self._buffer.shape != (h, w):
            self._buffer = np.zeros((h, w), np.uint32)
            self._hatch = _hatch((h, w))
            self.image = (QImage(self._buffer.data, w, h, 4 * w,
                                 QImage.Format.Format_ARGB32_Premultiplied) if h and w else None)
        self._code = code
        self._rebuild_lut()
        self._render_all()

    def set_style(self, **changes) -> None:
        """Change display style; only the colour table and one gather are redone."""
        style = replace(self.style, **changes)
        recolour = style.colour_by != self.style.colour_by
        self.style = style
        if recolour:
            self._assign_colours(len(self._rgb))
        self._rebuild_lut()
        self._render_all()

    def set_review_state(self, keys: np.ndarray, reviews: np.ndarray) -> None:
        """Stable colours and visible review state of the instances shown.

        Args:
            keys: (N,) int, a stable id per instance (the editing model's uid), so colours do
                not jump when an instance is deleted, drawn or re-ordered.
            reviews: (N,) int, 0 pending, 1 accepted (green contour; the canvas ticks them),
                2 rejected (faint grey fill hatched with red lines, red contour).
        """
        keys, reviews = np.asarray(keys, np.int64), np.asarray(reviews, np.int8)
        if len(keys) != len(self._classes) or len(reviews) != len(keys):
            return  # not the instances on the overlay
        self._keys, self._reviews = keys, reviews
        self._assign_colours(len(keys))
        self._rebuild_lut()
        self._render_all()

    def set_selected(self, selected) -> None:
        self.selected = frozenset(int(i) for i in selected)
        self._rebuild_lut()
        self._render_all()

    # ------------------------------------------------------------------ partial updates
    def update_region(self, x0: int, y0: int, x1: int, y1: int) -> Rect | None:
        """Re-render only ``[x0, x1) x [y0, y1)`` from the current :attr:`labels`.

        Contours depend on neighbours, so codes are recomputed one pixel beyond the rectangle.
        Returns the rectangle actually updated (clipped), or None if it is empty.
        """
        h, w = self.labels.shape
        x0, y0 = max(0, int(np.floor(x0)) - 1), max(0, int(np.floor(y0)) - 1)
        x1, y1 = min(w, int(np.ceil(x1)) + 1), min(h, int(np.ceil(y1)) + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        top = int(self.labels[y0:y1, x0:x1].max(initial=0))
        if top > len(self._rgb):
            self._grow(int(top))
        # neighbours one more pixel out decide whether the border pixels are edges
        px0, py0, px1, py1 = max(0, x0 - 1), max(0, y0 - 1), min(w, x1 + 1), min(h, y1 + 1)
        code = _edge_code(self.labels[py0:py1, px0:px1], (py0 == 0, py1 == h, px0 == 0, px1 == w),
                          hatch=self._hatch[py0:py1, px0:px1])
        self._code[y0:y1, x0:x1] = code[y0 - py0:y1 - py0, x0 - px0:x1 - px0]
        np.take(self._lut, self._code[y0:y1, x0:x1], out=self._buffer[y0:y1, x0:x1], mode="clip")
        rect = (x0, y0, x1, y1)
        self._notify(rect)
        return rect

    # ------------------------------------------------------------------ queries
    def instance_at(self, x: float, y: float) -> int:
        """Index of the instance drawn at image pixel (x, y), or -1."""
        h, w = self.labels.shape
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < w and 0 <= yi < h):
            return -1
        return int(self.labels[yi, xi]) - 1

    def visible_instances(self) -> np.ndarray:
        """Bool (N,) of instances whose class is shown."""
        hidden = np.array(sorted(self.style.hidden_classes), np.int64)
        return ~np.isin(self._classes, hidden)

    def accepted_centres(self) -> np.ndarray:
        """(M, 2) float32 image (x, y) of the box centres of the accepted instances on show
        (the canvas draws a tick there); (0, 2) when the overlay or nothing accepted is shown."""
        inst = self.instances
        n = len(inst) if inst is not None else 0
        if not n or not self.style.visible or len(self._reviews) < n:
            return np.zeros((0, 2), np.float32)
        show = (self._reviews[:n] == 1) & self.visible_instances()[:n]
        b = inst.boxes[show]
        return np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1).astype(np.float32)

    # ------------------------------------------------------------------ internals
    def _assign_colours(self, n: int) -> None:
        if self.style.colour_by == "class":
            self._rgb = class_colours(np.maximum(self._classes[:n], 0))
        elif self._keys is not None and len(self._keys) == n:
            self._rgb = key_colours(self._keys)
        else:
            self._rgb = instance_colours(n)

    def _grow(self, n: int) -> None:
        """Labels written by an editing tool past the instance count get new colours."""
        extra = n - len(self._rgb)
        self._classes = np.concatenate([self._classes, np.full(extra, -1, np.int64)])
        self._rgb = np.concatenate([self._rgb, instance_colours(extra, seed=len(self._rgb))])
        self._reviews = np.concatenate([self._reviews, np.zeros(extra, np.int8)])
        self._rebuild_lut()

    def _rebuild_lut(self) -> None:
        s = self.style
        n = len(self._rgb)
        shown = self.visible_instances() & s.visible
        selected = np.zeros(n, bool)
        sel = np.array([i for i in self.selected if 0 <= i < n], np.int64)
        selected[sel] = True
        reviews = self._reviews if len(self._reviews) == n else np.zeros(n, np.int8)
        accepted, rejected = reviews == 1, reviews == 2
        fill_alpha = np.where(shown & s.fill, np.where(selected, min(1.0, s.opacity + 0.25),
                                                       s.opacity), 0.0)
        fill_alpha = np.where(rejected, fill_alpha * 0.5, fill_alpha)
        fill_rgb = np.where(rejected[:, None], REJECTED_FILL, self._rgb)
        fill = premultiplied_argb(fill_rgb, fill_alpha)
        edge_rgb = np.where(accepted[:, None], ACCEPTED_EDGE,
                            np.where(rejected[:, None], REJECTED_EDGE, self._rgb))
        edge_rgb = np.where(selected[:, None], np.uint8(255), edge_rgb)
        if s.contours:
            edge = premultiplied_argb(edge_rgb, np.where(shown, s.contour_opacity, 0.0))
        else:
            edge = fill
        # rejected: hatch lines over the faint fill (shown with the fill or the contours)
        hatch_alpha = np.where(rejected & shown & (s.fill or s.contours), HATCH_ALPHA, 0.0)
        stripe = np.where(rejected, premultiplied_argb(np.broadcast_to(REJECTED_HATCH, (n, 3)),
                                                       hatch_alpha), fill)
        lut = np.zeros(4 * (n + 1), np.uint32)
        lut[4::4] = fill
        lut[5::4] = edge
        lut[6::4] = stripe
        lut[7::4] = edge if s.contours else stripe
        self._lut = lut

    def _render_all(self) -> None:
        if self._buffer.size:
            np.take(self._lut, self._code, out=self._buffer, mode="clip")
        self._notify(None)


def prepare_labels(instances: Instances | None, image_size) -> tuple[np.ndarray, np.ndarray]:
    """(label image, pixel codes) for :meth:`Overlay.set_instances`; pure numpy, thread-safe.
    None for images the canvas draws tiled (they never get a full-size label image)."""
    from .tile_index import uses_tiles

    h, w = instances.image_size if instances is not None else image_size
    if uses_tiles((h, w)):
        return None
    return _labels_and_codes(instances, (h, w))


def _labels_and_codes(instances: Instances | None, image_size) -> tuple[np.ndarray, np.ndarray]:
    h, w = image_size
    if instances is not None and instances.masks is not None and len(instances):
        order = np.argsort(instances.scores, kind="stable")
        labels = instances.masks.label_image(order=order, dtype=np.int32)
    else:
        labels = np.zeros((h, w), np.int32)
    return labels, _edge_code(labels)


def _edge_code(labels: np.ndarray, borders=(True, True, True, True),
               hatch: np.ndarray | None = None) -> np.ndarray:
    """``4 * label + 2 * stripe + edge``: edge marks labelled pixels with a 4-neighbour of
    another label, stripe the pixels on the diagonal hatch lines.

    ``borders`` (top, bottom, left, right) says which sides of ``labels`` are the image border:
    there the outside counts as background, so cells cut by the border get a closed contour.
    ``hatch``: the stripe bits (0 or 2) of these pixels when ``labels`` is a rectangle cut from
    the image (:func:`_hatch` of the image, sliced alike), so that the lines continue those
    around it; by default ``labels`` is the whole image.
    """
    edge = np.zeros(labels.shape, bool)
    if labels.size:
        v = labels[1:] != labels[:-1]
        edge[1:] |= v
        edge[:-1] |= v
        hz = labels[:, 1:] != labels[:, :-1]
        edge[:, 1:] |= hz
        edge[:, :-1] |= hz
        top, bottom, left, right = borders
        if top:
            edge[0] = True
        if bottom:
            edge[-1] = True
        if left:
            edge[:, 0] = True
        if right:
            edge[:, -1] = True
        edge &= labels > 0
    code = labels.astype(np.int32) * 4
    code += edge
    code += _hatch(labels.shape) if hatch is None else hatch
    return code


def _hatch(shape: tuple[int, int], origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(H, W) int32 view: 2 on the hatch lines (x + y) % HATCH_PERIOD < HATCH_WIDTH, else 0,
    for the rectangle whose top-left pixel is ``origin`` (x, y) of the image (or of a pyramid
    level: the tiled canvas), so that rectangles cut from one image continue each other's lines.

    Pixel (x, y) only depends on x + y, so the whole pattern is a strided view of one line of
    H + W values (row y starts y values further on): no per-pixel work and no memory."""
    h, w = shape
    start = int(origin[0]) + int(origin[1])
    line = np.where((np.arange(h + w) + start) % HATCH_PERIOD < HATCH_WIDTH, 2,
                    0).astype(np.int32)
    return np.lib.stride_tricks.as_strided(line, (h, w), (line.strides[0], line.strides[0]),
                                           writeable=False)
