"""Draw an exported QuPath GeoJSON and ImageJ ROI set over their image (docs/interop.png).

The shapes are read back with the other side's libraries (shapely for GeoJSON, roifile for the
ROI set), not with cellseg's reader, so the picture shows what QuPath and Fiji get:

    cellseg export PROJECT --out /tmp/x --format geojson
    cellseg export PROJECT --out /tmp/x --format imagej
    python docs/make_interop_figure.py IMAGE /tmp/x/img2d.geojson /tmp/x/img2d.zip docs/interop.png
"""
from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import roifile
from shapely.geometry import shape

from cellseg.core.io import read_image, to_uint8

SCALE = 3  # zoom so that single-pixel steps of the outlines are visible
CROP = (0, 0, 200, 160)  # x0, y0, x1, y1 of the image region shown


def _canvas(image: np.ndarray) -> np.ndarray:
    x0, y0, x1, y1 = CROP
    grey = to_uint8(image)[y0:y1, x0:x1]
    big = cv2.resize(grey, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)


def _pts(coords) -> np.ndarray:
    xy = (np.asarray(coords, np.float64) - CROP[:2]) * SCALE
    return np.round(xy).astype(np.int32).reshape(-1, 1, 2)


def draw_geojson(canvas: np.ndarray, path: str) -> np.ndarray:
    fill = canvas.copy()
    for feat in json.loads(open(path, encoding="utf-8").read())["features"]:
        geom = shape(feat["geometry"])
        r, g, b = feat["properties"]["classification"]["color"]
        for poly in getattr(geom, "geoms", [geom]):
            rings = [_pts(poly.exterior.coords)] + [_pts(h.coords) for h in poly.interiors]
            cv2.fillPoly(fill, rings, (b, g, r))  # even-odd: holes stay open
            cv2.polylines(canvas, rings, True, (b, g, r), 1, cv2.LINE_AA)
    return cv2.addWeighted(fill, 0.35, canvas, 0.65, 0)


def draw_rois(canvas: np.ndarray, path: str) -> np.ndarray:
    for roi in roifile.roiread(path):
        _, r, g, b = roi.stroke_color
        cv2.polylines(canvas, [_pts(roi.coordinates())], True, (b, g, r), 1, cv2.LINE_AA)
    return canvas


def _title(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((28, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def main(argv: list[str]) -> int:
    image_path, geojson_path, roi_path, out = argv
    image = read_image(image_path)
    left = _title(draw_geojson(_canvas(image), geojson_path), "QuPath GeoJSON (shapely)")
    right = _title(draw_rois(_canvas(image), roi_path), "ImageJ ROI set (roifile)")
    gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
    cv2.imwrite(out, np.hstack([left, gap, right]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
