"""Graphics items of the canvas: a raster layer (image or overlay), boxes/labels, hover outline.

Each is ONE item however many instances there are; they only paint what is exposed.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QLineF, QPointF, QRect, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem

from cellseg.core.structures import Instances


class RasterLayer(QGraphicsItem):
    """Draws a QImage at scene pixel coordinates (pixel (0, 0) covers [0, 1) x [0, 1))."""

    def __init__(self, smooth_when_zoomed_out: bool = False) -> None:
        super().__init__()
        self._image: QImage | None = None
        self._keep = None  # numpy buffer the QImage points into
        self._smooth = smooth_when_zoomed_out
        self._mips: dict[int, QImage] = {}  # 2**k -> smoothly downscaled copy (static layers)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)

    def set_image(self, image: QImage | None, keep=None) -> None:
        old = self.boundingRect()
        self._image, self._keep = image, keep
        self._mips: dict[int, QImage] = {}
        if self.boundingRect() != old:
            self.prepareGeometryChange()
        self.update()

    def image(self) -> QImage | None:
        return self._image

    def boundingRect(self) -> QRectF:
        if self._image is None:
            return QRectF()
        return QRectF(0, 0, self._image.width(), self._image.height())

    def update_rect(self, rect: tuple[int, int, int, int] | None) -> None:
        self._mips.clear()
        if rect is None:
            self.update()
        else:
            x0, y0, x1, y1 = rect
            self.update(QRectF(x0, y0, x1 - x0, y1 - y0))

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        if self._image is None:
            return
        exposed = option.exposedRect.toAlignedRect().intersected(
            QRect(0, 0, self._image.width(), self._image.height()))
        if exposed.isEmpty():
            return
        scale = painter.worldTransform().m11()
        # nearest-neighbour when zoomed in (pixels stay crisp squares); smooth for the image
        # when zoomed out, so texture does not alias
        smooth = self._smooth and scale < 1.0
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, smooth)
        level = 1
        while smooth and scale * level * 2 <= 1.0:
            level *= 2
        if level > 1:
            # a smooth-scaled 4M-pixel image on every repaint is the slow part of zoomed-out
            # redraws; a cached half/quarter-size copy of the (static) image makes it cheap
            mip = self._mips.get(level)
            if mip is None:
                mip = self._image.scaled(max(1, self._image.width() // level),
                                         max(1, self._image.height() // level),
                                         Qt.AspectRatioMode.IgnoreAspectRatio,
                                         Qt.TransformationMode.SmoothTransformation)
                self._mips[level] = mip
            sx = mip.width() / self._image.width()
            sy = mip.height() / self._image.height()
            src = QRectF(exposed.x() * sx, exposed.y() * sy, exposed.width() * sx,
                         exposed.height() * sy)
            painter.drawImage(QRectF(exposed), mip, src)
            return
        painter.drawImage(QRectF(exposed), self._image, QRectF(exposed))


def grey_or_rgb_qimage(display: np.ndarray) -> QImage:
    """uint8 (H, W) or (H, W, 3) -> QImage sharing the array's memory (caller keeps it alive)."""
    display = np.ascontiguousarray(display)
    h, w = display.shape[:2]
    if display.ndim == 2:
        return QImage(display.data, w, h, w, QImage.Format.Format_Grayscale8)
    return QImage(display.data, w, h, 3 * w, QImage.Format.Format_RGB888)


class BoxesLayer(QGraphicsItem):
    """Optional boxes, class labels and scores of the visible instances."""

    def __init__(self) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self._boxes = np.zeros((0, 4), np.float32)
        self._texts: list[str] = []
        self._visible = np.zeros(0, bool)
        self._size = (0, 0)
        self.show_boxes = False
        self.show_labels = False
        self.show_scores = False
        self.class_names: list[str] = []
        self._instances: Instances | None = None

    def set_instances(self, instances: Instances | None, visible: np.ndarray | None = None,
                      image_size=(0, 0)) -> None:
        self.prepareGeometryChange()
        self._instances = instances
        self._size = instances.image_size if instances is not None else tuple(image_size)
        self._boxes = instances.boxes if instances is not None else np.zeros((0, 4), np.float32)
        self._visible = (np.ones(len(self._boxes), bool) if visible is None
                         else np.asarray(visible, bool))
        self._texts = []
        self.update()

    def set_visible_instances(self, visible: np.ndarray) -> None:
        self._visible = np.asarray(visible, bool)
        self.update()

    def set_options(self, boxes: bool | None = None, labels: bool | None = None,
                    scores: bool | None = None) -> None:
        if boxes is not None:
            self.show_boxes = boxes
        if labels is not None:
            self.show_labels = labels
        if scores is not None:
            self.show_scores = scores
        self.update()

    def boundingRect(self) -> QRectF:
        h, w = self._size
        return QRectF(-50, -50, w + 100, h + 100)

    def _text(self, i: int) -> str:
        inst = self._instances
        parts = []
        if self.show_labels:
            c = int(inst.classes[i])
            parts.append(self.class_names[c] if c < len(self.class_names) else f"class {c}")
        if self.show_scores:
            parts.append(f"{inst.scores[i]:.2f}")
        return " ".join(parts)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        if self._instances is None or not len(self._boxes):
            return
        if not (self.show_boxes or self.show_labels or self.show_scores):
            return
        ex = option.exposedRect
        b = self._boxes
        inside = (self._visible & (b[:, 2] >= ex.left()) & (b[:, 0] <= ex.right())
                  & (b[:, 3] >= ex.top()) & (b[:, 1] <= ex.bottom()))
        idx = np.flatnonzero(inside)
        if self.show_boxes:
            pen = QPen(QColor(255, 255, 0, 220))
            pen.setCosmetic(True)  # 1 screen pixel whatever the zoom
            pen.setWidthF(1.0)
            painter.setPen(pen)
            painter.setBrush(Qt.BrushStyle.NoBrush)
            # rectangles only for the boxes exposed (32,000 QRectF per result would cost ~50 ms)
            painter.drawRects([QRectF(x0, y0, x1 - x0, y1 - y0)
                               for x0, y0, x1, y1 in b[idx].tolist()])
        scale = painter.worldTransform().m11()
        # text is per instance by nature: only for what is on screen and legible
        if (self.show_labels or self.show_scores) and scale >= 0.5 and len(idx) <= 2000:
            world = painter.worldTransform()  # item -> device; text is drawn unscaled
            painter.save()
            painter.resetTransform()
            font = QFont()
            font.setPointSizeF(8)
            painter.setFont(font)
            painter.setPen(QColor(255, 255, 255))
            for i in idx.tolist():
                p = world.map(QPointF(float(b[i, 0]), float(b[i, 1])))
                painter.drawText(p + QPointF(1, -2), self._text(i))
            painter.restore()


class HoverLayer(QGraphicsItem):
    """A white outline around one instance (the hovered one), from its mask crop only."""

    def __init__(self) -> None:
        super().__init__()
        self._image: QImage | None = None
        self._keep = None
        self._rect = QRectF()
        self.index = -1

    def set_instance(self, instances: Instances | None, index: int) -> None:
        if index == self.index and instances is not None:
            return
        self.prepareGeometryChange()
        self.index = index
        self._image = None
        if instances is None or index < 0 or instances.masks is None or index >= len(instances):
            self._rect = QRectF()
            self.update()
            return
        x0, y0, x1, y1 = (int(v) for v in instances.masks.windows[index])
        crop = np.pad(instances.masks.crop(index), 1)
        inner = crop[1:-1, 1:-1]
        edge = inner & ~(crop[:-2, 1:-1] & crop[2:, 1:-1] & crop[1:-1, :-2] & crop[1:-1, 2:])
        argb = np.where(edge, np.uint32(0xFFFFFFFF), np.where(inner, np.uint32(0x30303030),
                                                              np.uint32(0)))
        self._keep = np.ascontiguousarray(argb.astype(np.uint32))
        h, w = self._keep.shape
        if h and w:
            self._image = QImage(self._keep.data, w, h, 4 * w,
                                 QImage.Format.Format_ARGB32_Premultiplied)
        self._rect = QRectF(x0, y0, x1 - x0, y1 - y0)
        self.update()

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if self._image is not None:
            painter.drawImage(self._rect, self._image)


class TickLayer(QGraphicsItem):
    """A check mark at each accepted instance's centre, the same size on screen at any zoom.

    Drawn in viewport pixels (the painter's transform reset), so a tick stays legible at fit
    and zoomed in. The tick is rendered once into a small image (a dark halo under a green
    stroke, antialiased) and blitted at the centres inside the exposed rectangle: stroking 300+
    antialiased ticks per repaint cost 7 ms at fit, blitting them 0.3 ms."""

    SIZE = 12.0  # screen pixels, width of the tick
    # the tick's two strokes in units of SIZE, centred on the instance's centre
    SHAPE = np.array([[-0.45, 0.0, -0.1, 0.35], [-0.1, 0.35, 0.5, -0.35]], np.float64)
    HALF = (10, 8)  # half the sprite's width and height, screen pixels (SHAPE * SIZE + halo)

    def __init__(self) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self._centres = np.zeros((0, 2), np.float32)
        self._size = (0, 0)
        self._sprites: dict[float, QImage] = {}  # device pixel ratio -> rendered tick
        self.setVisible(False)  # until there are ticks

    def set_centres(self, centres: np.ndarray, image_size=(0, 0)) -> None:
        """``centres``: (M, 2) image (x, y) of the accepted instances to tick."""
        centres = np.asarray(centres, np.float32).reshape(-1, 2)
        if tuple(image_size) != self._size:
            self.prepareGeometryChange()
            self._size = tuple(image_size)
        elif np.array_equal(centres, self._centres):
            return  # (most overlay changes: opacity, colours) no repaint of its own
        self._centres = centres
        # hidden when there is nothing to tick: the view then never calls paint (a brush
        # stroke's repaints would each pay a Python call for nothing)
        self.setVisible(bool(len(centres)))
        self.update()

    def centres(self) -> np.ndarray:
        return self._centres

    def boundingRect(self) -> QRectF:
        h, w = self._size
        return QRectF(-20, -20, w + 40, h + 40)  # a tick may overhang the image by its size

    def _sprite(self, dpr: float) -> QImage:
        sprite = self._sprites.get(dpr)
        if sprite is None:
            hw, hh = self.HALF
            sprite = QImage(round(2 * hw * dpr), round(2 * hh * dpr),
                            QImage.Format.Format_ARGB32_Premultiplied)
            sprite.setDevicePixelRatio(dpr)
            sprite.fill(0)
            p = QPainter(sprite)
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            lines = [QLineF(*(s * self.SIZE + (hw, hh, hw, hh))) for s in self.SHAPE]
            for colour, width in ((QColor(0, 0, 0, 170), 4.5), (QColor(60, 235, 90), 2.2)):
                pen = QPen(colour, width)
                pen.setCapStyle(Qt.PenCapStyle.RoundCap)
                p.setPen(pen)
                p.drawLines(lines)
            p.end()
            self._sprites[dpr] = sprite
        return sprite

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        c = self._centres
        if not len(c):
            return
        ex = option.exposedRect.adjusted(-2, -2, 2, 2)
        inside = ((c[:, 0] >= ex.left()) & (c[:, 0] <= ex.right())
                  & (c[:, 1] >= ex.top()) & (c[:, 1] <= ex.bottom()))
        c = c[inside].astype(np.float64)
        if not len(c):
            return
        t = painter.worldTransform()  # item -> viewport: scale and translation only
        hw, hh = self.HALF
        corners = np.stack([c[:, 0] * t.m11() + t.dx() - hw, c[:, 1] * t.m22() + t.dy() - hh], 1)
        sprite = self._sprite(painter.device().devicePixelRatioF())
        painter.save()
        painter.resetTransform()
        for x, y in np.round(corners).tolist():  # whole pixels: the sprite is not resampled
            painter.drawImage(QPointF(x, y), sprite)
        painter.restore()
