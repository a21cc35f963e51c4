"""Canvas tools. The canvas calls ``mouse_press/move/release(x, y, event)`` with image pixel
coordinates; a tool consumes left-button events (returns True) and lets the others pan/zoom.

Each tool turns gestures into core operations (``cellseg.core.project.edits``) and hands the
finished :class:`Edit` to the controller, which pushes it on the undo stack and saves it.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsPathItem

from cellseg.core.errors import CellsegError
from cellseg.core.project import edits as E
from cellseg.core.project.raster import polygon_region
from cellseg.core.project.strokes import Stroke

LEFT = Qt.MouseButton.LeftButton
RIGHT = Qt.MouseButton.RightButton


def _button(event) -> Qt.MouseButton:
    return event.button() if event is not None else LEFT


def _modifiers(event):
    return event.modifiers() if event is not None else Qt.KeyboardModifier.NoModifier


class Tool:
    name = "tool"

    def __init__(self, controller) -> None:
        self.c = controller

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass

    def mouse_press(self, x, y, event) -> bool:
        return False

    def mouse_move(self, x, y, event) -> bool:
        return False

    def mouse_release(self, x, y, event) -> bool:
        return False

    def message(self, text: str) -> None:
        self.c.window.statusBar().showMessage(text, 5000)


class SelectTool(Tool):
    """Click: the instance under the cursor (highest score on top); Shift/Ctrl-click adds.
    A drag still pans the view: the tool never consumes the events."""
    name = "select"
    CLICK_PX = 4.0  # screen pixels a click may move

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self._press = None

    def mouse_press(self, x, y, event) -> bool:
        self._press = (x, y) if _button(event) == LEFT else None
        return False

    def mouse_release(self, x, y, event) -> bool:
        if self._press is None or _button(event) != LEFT:
            return False
        px, py = self._press
        self._press = None
        if np.hypot(x - px, y - py) * self.c.canvas.zoom <= self.CLICK_PX:
            add = bool(_modifiers(event) & (Qt.KeyboardModifier.ShiftModifier
                                             | Qt.KeyboardModifier.ControlModifier))
            self.c.select_at(px, py, add=add)
        return False


class BrushTool(Tool):
    """Paint into the selected instance (a new instance when none is selected); as eraser,
    remove pixels from the selected instance (or the one under the cursor)."""

    def __init__(self, controller, erase: bool = False) -> None:
        super().__init__(controller)
        self.erase = erase
        self.name = "eraser" if erase else "brush"
        self.stroke: Stroke | None = None
        self.cursor = QGraphicsEllipseItem()
        self.cursor.setPen(QPen(QColor(255, 255, 255), 0))
        self.cursor.setZValue(10)

    def activate(self) -> None:
        self.c.canvas.scene().addItem(self.cursor)
        self.cursor.hide()

    def deactivate(self) -> None:
        self.stroke = None
        if self.cursor.scene() is not None:
            self.cursor.scene().removeItem(self.cursor)

    def _show_cursor(self, x, y) -> None:
        r = self.c.brush_radius
        self.cursor.setRect(x - r, y - r, 2 * r, 2 * r)
        self.cursor.show()

    def mouse_press(self, x, y, event) -> bool:
        if _button(event) != LEFT or self.c.ann is None:
            return False
        uid = self.c.single_selected()
        if uid is None and self.erase:
            uid = self.c.ann.instance_at(x, y, self.c.visible())
            if uid is None:
                self.message("eraser: select an instance or start on one")
                return True
        try:
            self.stroke = Stroke(self.c.ann, uid, self.c.brush_radius, erase=self.erase,
                                   allow_overlap=self.c.allow_overlap,
                                   class_id=self.c.current_class)
        except CellsegError as exc:
            self.message(str(exc))
            return True
        self._dab(x, y)
        return True

    def _dab(self, x, y) -> None:
        rect = self.stroke.move_to(x, y)
        if self.stroke.uid is not None and not self.erase and self.c.selected != {self.stroke.uid}:
            self.c.selected = {self.stroke.uid}  # a new instance painted from nothing
        self.c.render_rect(rect)

    def mouse_move(self, x, y, event) -> bool:
        self._show_cursor(x, y)
        if self.stroke is None:
            return False
        self._dab(x, y)
        return True

    def mouse_release(self, x, y, event) -> bool:
        if self.stroke is None or _button(event) != LEFT:
            return False
        stroke, self.stroke = self.stroke, None
        edit = stroke.finish()
        if edit is not None:
            self.c.push(edit, already_applied=True)
        return True


class _PathTool(Tool):
    """Shared by the lasso, polygon and split tools: a preview path on the canvas."""

    closed = True

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self.points: list[tuple[float, float]] = []
        self.preview = QGraphicsPathItem()
        pen = QPen(QColor(255, 230, 0), 0)
        self.preview.setPen(pen)
        self.preview.setZValue(10)

    def activate(self) -> None:
        self.c.canvas.scene().addItem(self.preview)

    def deactivate(self) -> None:
        self.points = []
        if self.preview.scene() is not None:
            self.preview.scene().removeItem(self.preview)

    def _update_preview(self, extra=None) -> None:
        path = QPainterPath()
        pts = self.points + ([extra] if extra is not None else [])
        if pts:
            path.moveTo(QPointF(*pts[0]))
            for p in pts[1:]:
                path.lineTo(QPointF(*p))
            if self.closed and len(pts) > 2:
                path.closeSubpath()
        self.preview.setPath(path)

    def cancel(self) -> None:
        self.points = []
        self._update_preview()


class _DragPathTool(_PathTool):
    """Press, drag, release: the path follows the mouse; ``path_done(points)`` acts on release."""

    def mouse_press(self, x, y, event) -> bool:
        if _button(event) != LEFT:
            return False
        self.points = [(x, y)]
        return True

    def mouse_move(self, x, y, event) -> bool:
        if not self.points:
            return False
        self.points.append((x, y))
        self._update_preview()
        return True

    def mouse_release(self, x, y, event) -> bool:
        if not self.points or _button(event) != LEFT:
            return False
        self.points.append((x, y))
        points, self.points = self.points, []
        self._update_preview()
        self.path_done(points)
        return True

    def path_done(self, points) -> None:
        raise NotImplementedError


class LassoTool(_DragPathTool):
    """Press, drag around a cell, release: a new instance of the current class."""
    name = "lasso"

    def path_done(self, points) -> None:
        c = self.c
        c.run(lambda a: E.draw_instance(a, polygon_region(points, a.image_size),
                                        c.current_class, c.allow_overlap, label="Lasso"))


class PolygonTool(_PathTool):
    """Click vertices; close with a click on the first vertex, a right click or Enter."""
    name = "polygon"
    CLOSE_PX = 6.0  # screen pixels

    def mouse_press(self, x, y, event) -> bool:
        if _button(event) == RIGHT and self.points:
            self.finish()
            return True
        if _button(event) != LEFT:
            return False
        if len(self.points) >= 3:
            fx, fy = self.points[0]
            if np.hypot(x - fx, y - fy) * max(self.c.canvas.zoom, 1e-6) <= self.CLOSE_PX:
                self.finish()
                return True
        self.points.append((x, y))
        self._update_preview()
        return True

    def mouse_move(self, x, y, event) -> bool:
        if self.points:
            self._update_preview((x, y))
        return False

    def mouse_release(self, x, y, event) -> bool:
        return _button(event) == LEFT and bool(self.points)

    def finish(self) -> bool:
        points, self.points = self.points, []
        self._update_preview()
        if len(points) < 3:
            return False
        c = self.c
        return c.run(lambda a: E.draw_instance(a, polygon_region(points, a.image_size),
                                               c.current_class, c.allow_overlap, label="Polygon"))


class SplitTool(_DragPathTool):
    """Drag a line across the selected instance (or the one under the line's start)."""
    name = "split"
    closed = False

    def path_done(self, points) -> None:
        c = self.c
        uid = c.single_selected()
        if uid is None and c.ann is not None:
            # the instance most of the line runs over
            hits = [c.ann.instance_at(px, py, c.visible()) for px, py in points]
            hits = [h for h in hits if h is not None]
            uid = max(set(hits), key=hits.count) if hits else None
        if uid is None:
            self.message("split: draw the line across an instance")
            return
        c.run(lambda a: E.split(a, uid, points))


class FillTool(Tool):
    """Click inside a hole of an instance to fill it."""
    name = "fill"

    def mouse_press(self, x, y, event) -> bool:
        if _button(event) != LEFT or self.c.ann is None:
            return False
        ann = self.c.ann
        first = self.c.single_selected()
        candidates = ([first] if first is not None else []) + [
            int(u) for u in ann.overlapping((int(x), int(y), int(x) + 1, int(y) + 1))
            if int(u) != first]
        for uid in candidates:
            try:
                edit = E.fill_holes(ann, uid, at=(x, y))
            except CellsegError:
                continue
            self.c.push(edit)
            return True
        self.message("fill: click inside a hole of an instance")
        return True

    def mouse_release(self, x, y, event) -> bool:
        return _button(event) == LEFT
