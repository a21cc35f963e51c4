"""The missed-cell candidates layer: faint dashed outlines, the one Tab reached drawn solid.

One item for all candidates. Outlines are vector paths traced once per candidate set (cv2
contours of each candidate's crop), so they stay thin lines at any zoom and painting costs one
path stroke.
"""
from __future__ import annotations

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem

FAINT = QColor(255, 255, 255, 190)
CURRENT = QColor(255, 230, 0, 255)


def outline_path(window, crop: np.ndarray) -> QPainterPath:
    """The outer contours of a mask crop as a closed path along pixel edges (image frame)."""
    path = QPainterPath()
    x0, y0 = float(window[0]), float(window[1])
    # traced on a 2x grid so that the contour runs along pixel edges, not pixel centres
    up = np.kron(np.pad(crop, 1).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for c in contours:
        pts = c.reshape(-1, 2).astype(np.float64)
        pts = (pts + [[1, 1]] * (pts % 2 == 1)) / 2.0 - 1.0  # back to pixel-edge coordinates
        path.moveTo(QPointF(x0 + pts[0, 0], y0 + pts[0, 1]))
        for x, y in pts[1:]:
            path.lineTo(QPointF(x0 + x, y0 + y))
        path.closeSubpath()
    return path


class CandidatesLayer(QGraphicsItem):
    """Dashed outlines of candidate detections; ``current`` (a Tab stop) drawn solid."""

    def __init__(self) -> None:
        super().__init__()
        self._paths: list[QPainterPath] = []
        self._all = QPainterPath()
        self._rect = QRectF()
        self.current = -1

    def set_candidates(self, masks, current: int = -1) -> None:
        """``masks``: CroppedMasks of the candidates shown (None: none)."""
        self.prepareGeometryChange()
        n = 0 if masks is None else len(masks)
        # one path per candidate: tens of them, traced once per candidate set
        self._paths = [outline_path(masks.windows[i], masks.crop(i)) for i in range(n)]
        self._all = QPainterPath()
        for p in self._paths:
            self._all.addPath(p)
        self._rect = self._all.boundingRect().adjusted(-2, -2, 2, 2)
        self.current = current
        self.update()

    def set_current(self, index: int) -> None:
        self.current = index
        self.update()

    def __len__(self) -> int:
        return len(self._paths)

    def boundingRect(self) -> QRectF:
        return self._rect

    def paint(self, painter: QPainter, option, widget=None) -> None:
        if not self._paths:
            return
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pen = QPen(FAINT, 1.5, Qt.PenStyle.DashLine)
        pen.setCosmetic(True)  # screen pixels: faint and thin at any zoom
        painter.setPen(pen)
        painter.setBrush(Qt.BrushStyle.NoBrush)
        painter.drawPath(self._all)
        if 0 <= self.current < len(self._paths):
            pen = QPen(CURRENT, 2.5)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawPath(self._paths[self.current])
