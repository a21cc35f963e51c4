"""Rasterising the shapes a reviewer draws into :class:`Region` bitmaps in image coordinates.

A brush dab or drag becomes a round footprint along its polyline; a lasso or clicked polygon
becomes its filled interior. Both are clipped to the image and cover only their bounding window.
"""
from __future__ import annotations

import cv2
import numpy as np

from .states import EditError, Region


def brush_region(points, radius: float, image_size) -> Region:
    """Round brush footprint along the polyline ``points`` (image coordinates), clipped."""
    h, w = image_size
    pts = np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(np.int64)
    r = max(int(round(radius)), 0)
    x0 = max(int(pts[:, 0].min()) - r, 0); y0 = max(int(pts[:, 1].min()) - r, 0)
    x1 = min(int(pts[:, 0].max()) + r + 1, w); y1 = min(int(pts[:, 1].max()) + r + 1, h)
    if x1 <= x0 or y1 <= y0:
        return Region((0, 0, 0, 0), np.zeros((0, 0), bool))
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = (pts - [x0, y0]).astype(np.int32)
    for p in local:  # a handful of points per mouse move
        cv2.circle(canvas, (int(p[0]), int(p[1])), r, 1, thickness=-1, lineType=cv2.LINE_8)
    if len(local) > 1 and r > 0:
        cv2.polylines(canvas, [local.reshape(-1, 1, 2)], False, 1, thickness=2 * r + 1,
                      lineType=cv2.LINE_8)
    elif len(local) > 1:
        cv2.polylines(canvas, [local.reshape(-1, 1, 2)], False, 1, 1, cv2.LINE_8)
    return Region((x0, y0, x1, y1), canvas.astype(bool))


def polygon_region(points, image_size) -> Region:
    """Filled polygon (a closed lasso or clicked polygon), clipped to the image."""
    h, w = image_size
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise EditError("a polygon needs at least three points")
    x0 = max(int(np.floor(pts[:, 0].min())), 0); y0 = max(int(np.floor(pts[:, 1].min())), 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 1, w); y1 = min(int(np.ceil(pts[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        raise EditError("the polygon lies outside the image")
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = np.round(pts - [x0, y0]).astype(np.int32)
    cv2.fillPoly(canvas, [local.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8)
    return Region((x0, y0, x1, y1), canvas.astype(bool))

