"""The zoomable, pannable image canvas: image layer + overlay layer + boxes + ticks of accepted
instances + hover outline.

Images below :data:`~.tile_index.TILED_MIN_PIXELS` are drawn as one image and one overlay image
(:class:`Overlay`); larger ones through the multiscale tiles of :mod:`.tiled`
(:class:`TiledOverlay`, same API), so memory and frame time do not grow with the image.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QMouseEvent, QPainter, QWheelEvent
from PySide6.QtWidgets import QGraphicsScene, QGraphicsView

from cellseg.core.structures import Instances

from .contrast import Contrast, apply_contrast, auto_contrast
from .layers import BoxesLayer, HoverLayer, RasterLayer, TickLayer, grey_or_rgb_qimage
from .overlay import Overlay
from .tile_index import uses_tiles
from .tiled import ImageTiles, TiledOverlay, TileLayer

ZOOM_STEP = 1.25
MIN_ZOOM, MAX_ZOOM = 1 / 64, 64.0
EMPTY_HINT = ("Drop images, a folder or a COCO .json here\n"
              "or use File > Open folder… (Ctrl+O) · File > Open sample")


class ImageCanvas(QGraphicsView):
    """Shows one image with its instances.

    Signals: ``cursor_moved(x, y, value_text, instance_index)`` (image pixel under the cursor,
    its value as text, -1 where no instance), ``zoom_changed(scale)``,
    ``instance_clicked(index)`` (a left click without a tool that did not start a pan).
    """

    cursor_moved = Signal(int, int, str, int)
    cursor_left = Signal()
    zoom_changed = Signal(float)
    instance_clicked = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QBrush(QColor(24, 24, 24)))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setMouseTracking(True)
        self.setRenderHint(QPainter.RenderHint.Antialiasing, False)

        self.image_layer = RasterLayer(smooth_when_zoomed_out=True)
        self.overlay_layer = RasterLayer()
        self.boxes_layer = BoxesLayer()
        self.tick_layer = TickLayer()
        self.hover_layer = HoverLayer()
        self.tile_image_layer = TileLayer(smooth_when_zoomed_out=True)
        self.tile_overlay_layer = TileLayer()
        for z, item in enumerate((self.image_layer, self.overlay_layer, self.boxes_layer,
                                  self.tick_layer, self.hover_layer)):
            item.setZValue(z)
            self.scene().addItem(item)
        for z, item in ((0, self.tile_image_layer), (1, self.tile_overlay_layer)):
            item.setZValue(z)
            item.setVisible(False)
            self.scene().addItem(item)

        self._flat_overlay = Overlay()
        self._flat_overlay.add_listener(self._overlay_changed)
        self._tiled_overlay = TiledOverlay()
        self._tiled_overlay.add_listener(self._tiles_changed)
        self.overlay: Overlay = self._flat_overlay
        self.image_tiles: ImageTiles | None = None
        self.tiled = False
        self.image: np.ndarray | None = None
        self.contrast: Contrast | None = None
        self._display: np.ndarray | None = None
        self._tool = None
        self._press_pos: QPointF | None = None
        self._fit_on_resize = True

    # ------------------------------------------------------------------ image and contrast
    def set_image(self, image: np.ndarray | None, contrast: Contrast | None = None,
                  fit: bool = True) -> None:
        """Show ``image`` (as read, any dtype; or a ``LargeImage`` read a tile at a time) with
        ``contrast`` or an automatic stretch."""
        self.image = image
        self.viewport().update()  # the empty-canvas hint comes or goes
        self.image_tiles = None
        if image is None:
            self.contrast = None
            self._display = None
            self.image_layer.set_image(None)
            self.tile_image_layer.set_source(None)
            self.set_instances(None)
            return
        self._use_tiles(uses_tiles(image.shape))
        sample = image.overview() if hasattr(image, "overview") else image
        self.contrast = contrast if contrast is not None else auto_contrast(sample)
        self._redisplay()
        h, w = image.shape[:2]
        self.scene().setSceneRect(QRectF(0, 0, w, h))
        if self.overlay.labels.shape != (h, w):
            self.set_instances(None)
        if fit:
            self.fit_to_window()

    def set_contrast(self, contrast: Contrast) -> None:
        self.contrast = contrast
        self._redisplay()

    def _redisplay(self) -> None:
        if self.tiled:
            if self.image_tiles is None:
                self.image_tiles = ImageTiles(self.image, self.contrast)
                self.tile_image_layer.set_source(self.image_tiles)
            else:
                self.image_tiles.set_contrast(self.contrast)
                self.tile_image_layer.update()
            return
        self._display = np.ascontiguousarray(apply_contrast(self.image, self.contrast))
        self.image_layer.set_image(grey_or_rgb_qimage(self._display), keep=self._display)

    # ------------------------------------------------------------------ instances
    def set_instances(self, instances: Instances | None, selected=frozenset(),
                      prepared=None) -> None:
        """Full overlay update (new result, or after an edit changed many instances).
        ``prepared``: optional ``canvas.overlay.prepare_labels`` output made off the GUI thread."""
        size = instances.image_size if instances is not None else (
            self.image.shape[:2] if self.image is not None else (0, 0))
        self.overlay.set_instances(instances, selected, image_size=size, prepared=prepared)
        self.boxes_layer.set_instances(instances, self.overlay.visible_instances(), size)
        self.hover_layer.set_instance(None, -1)

    def _use_tiles(self, on: bool) -> None:
        """Switch between the one-image and the tiled drawing; the unused one lets go of its
        buffers, the overlay style carries over."""
        if on == self.tiled:
            return
        old, self.tiled = self.overlay, on
        self.overlay = self._tiled_overlay if on else self._flat_overlay
        self.overlay.style = old.style
        old.set_instances(None, image_size=(0, 0))
        self._display = None
        self.image_layer.set_image(None)
        self.tile_image_layer.set_source(None)
        for item in (self.image_layer, self.overlay_layer):
            item.setVisible(not on)
        for item in (self.tile_image_layer, self.tile_overlay_layer):
            item.setVisible(on)

    @property
    def instances(self) -> Instances | None:
        return self.overlay.instances

    def set_overlay_style(self, **changes) -> None:
        self.overlay.set_style(**changes)
        self.boxes_layer.set_visible_instances(self.overlay.visible_instances()
                                               & self.overlay.style.visible)

    def set_annotations(self, boxes=None, labels=None, scores=None) -> None:
        self.boxes_layer.set_options(boxes, labels, scores)

    def set_class_names(self, names: list[str]) -> None:
        self.boxes_layer.class_names = list(names)
        self.boxes_layer.update()

    def _tiles_changed(self, rect) -> None:
        if rect is None:  # new instances (maybe a new size) or a new colour table
            self.tile_overlay_layer.set_source(self._tiled_overlay)
        else:
            self.tile_overlay_layer.update_rect(rect)

    def _overlay_changed(self, rect) -> None:
        image = self._flat_overlay.image
        if rect is None or self.overlay_layer.image() is not image:
            self.overlay_layer.set_image(image)
            # review states, visibility or instances changed: the ticks follow (a brush dab,
            # a partial update, changes none of them)
            self.tick_layer.set_centres(self.overlay.accepted_centres(), self.overlay.labels.shape)
        else:
            self.overlay_layer.update_rect(rect)

    # ------------------------------------------------------------------ tools
    def set_tool(self, tool) -> None:
        """Editing tool receiving ``mouse_press/move/release(x, y, event)`` in image pixels;
        returning True consumes the event, otherwise the canvas pans and zooms as usual."""
        self._tool = tool

    @property
    def tool(self):
        return self._tool

    # ------------------------------------------------------------------ zoom
    @property
    def zoom(self) -> float:
        return self.transform().m11()

    def fit_to_window(self) -> None:
        rect = self.scene().sceneRect()
        if rect.isEmpty() or self.image is None:
            return  # (the layers' empty rects would give a meaningless zoom like 742%)
        self._fit_on_resize = True
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.zoom)

    def zoom_1to1(self) -> None:
        self._fit_on_resize = False
        self.resetTransform()
        self.zoom_changed.emit(self.zoom)

    def zoom_by(self, factor: float, anchor: QPointF | None = None) -> None:
        """Zoom keeping the scene point under ``anchor`` (viewport coords) fixed."""
        target = min(MAX_ZOOM, max(MIN_ZOOM, self.zoom * factor))
        factor = target / self.zoom
        if factor == 1.0:
            return
        self._fit_on_resize = False
        if anchor is None:
            anchor = QPointF(self.viewport().rect().center())
        before = self.mapToScene(anchor.toPoint())
        old = self.transformationAnchor()
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)
        self.scale(factor, factor)
        self.setTransformationAnchor(old)
        # scroll so the scene point that was under the anchor is under it again
        moved = self.mapFromScene(before) - anchor.toPoint()
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + moved.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + moved.y())
        self.zoom_changed.emit(self.zoom)

    def center_on_pixel(self, x: float, y: float) -> None:
        self.centerOn(QPointF(x, y))

    def wheelEvent(self, event: QWheelEvent) -> None:
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(ZOOM_STEP ** steps, event.position())
        event.accept()

    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        """On the empty canvas, say how to get an image onto it (as napari and QuPath do)."""
        super().drawForeground(painter, rect)
        if self.image is not None:
            return
        painter.save()
        painter.resetTransform()  # viewport coordinates: the hint stays put and readable
        painter.setPen(QColor(170, 170, 170))
        font = painter.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        painter.setFont(font)
        painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter, EMPTY_HINT)
        painter.restore()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit_on_resize:
            self.fit_to_window()

    # ------------------------------------------------------------------ mouse
    def _image_xy(self, event: QMouseEvent) -> tuple[float, float]:
        p = self.mapToScene(event.position().toPoint())
        return p.x(), p.y()

    def mousePressEvent(self, event: QMouseEvent) -> None:
        x, y = self._image_xy(event)
        if self._tool is not None and self._tool.mouse_press(x, y, event):
            event.accept()
            return
        self._press_pos = event.position()
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        x, y = self._image_xy(event)
        self._report_cursor(x, y)
        if self._tool is not None and self._tool.mouse_move(x, y, event):
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        x, y = self._image_xy(event)
        if self._tool is not None and self._tool.mouse_release(x, y, event):
            event.accept()
            self._press_pos = None
            return
        super().mouseReleaseEvent(event)
        if (self._press_pos is not None and event.button() == Qt.MouseButton.LeftButton
                and (event.position() - self._press_pos).manhattanLength() < 4):
            self.instance_clicked.emit(self.overlay.instance_at(x, y))
        self._press_pos = None

    def leaveEvent(self, event) -> None:
        self.hover_layer.set_instance(None, -1)
        self.cursor_left.emit()
        super().leaveEvent(event)

    def _report_cursor(self, x: float, y: float) -> None:
        if self.image is None:
            return
        h, w = self.image.shape[:2]
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < w and 0 <= yi < h):
            self.hover_layer.set_instance(None, -1)
            self.cursor_left.emit()
            return
        index = self.overlay.instance_at(x, y)
        if index >= 0 and not self.overlay.style.visible:
            index = -1
        if index >= 0 and not self.overlay.visible_instances()[index]:
            index = -1
        self.hover_layer.set_instance(self.overlay.instances, index)
        self.cursor_moved.emit(xi, yi, pixel_text(self.image, xi, yi), index)


def pixel_text(image: np.ndarray, x: int, y: int) -> str:
    v = image[y, x]
    if np.ndim(v) == 0:
        return _fmt(v)
    return "(" + ", ".join(_fmt(c) for c in v) + ")"


def _fmt(v) -> str:
    return f"{float(v):.4g}" if np.issubdtype(np.asarray(v).dtype, np.floating) else str(int(v))
