"""Colour tables for the overlay (numpy only).

Colours are computed for all instances at once; the overlay looks colours up by label id, so a
change of colour mode, opacity or visibility costs O(instances), never O(pixels) here.
"""
from __future__ import annotations

import numpy as np

# Ten well-separated class colours (matplotlib "tab10"), RGB.
CLASS_PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
], np.uint8)

_GOLDEN = 0.6180339887498949
ACCEPTED_EDGE = np.array([40, 200, 70], np.uint8)  # review state: accepted instances' contour
REJECTED_FILL = np.array([150, 150, 150], np.uint8)  # rejected: grey, faint, red contour
REJECTED_EDGE = np.array([230, 40, 40], np.uint8)
REJECTED_HATCH = np.array([255, 70, 70], np.uint8)  # rejected: diagonal lines over the fill


def class_colours(classes: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB by class id (cycling the palette past ten classes)."""
    return CLASS_PALETTE[np.asarray(classes, np.int64) % len(CLASS_PALETTE)]


def instance_colours(n: int, seed: int = 0) -> np.ndarray:
    """(N, 3) uint8 RGB, bright and distinct for neighbours: hues walk the golden ratio, so
    instance i and i+1 never share a hue, and the colours stay put when instances are appended."""
    return key_colours(np.arange(n, dtype=np.int64) + seed)


def key_colours(keys: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB of instances by a stable key (the editing model's uid): an instance
    keeps its colour when others are deleted, drawn or re-ordered (``instance_colours`` of
    ``arange(n)`` gives the same colours for keys 0..n-1)."""
    i = np.asarray(keys, np.float64)
    hue = (i * _GOLDEN) % 1.0
    sat = 0.55 + 0.35 * ((i * 0.37) % 1.0)
    return hsv_to_rgb(hue, sat, np.ones(len(i)))


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    h6 = (np.asarray(h) % 1.0) * 6.0
    sector = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    rgb = np.choose(sector[None, :], [
        np.stack([v, t, p]), np.stack([q, v, p]), np.stack([p, v, t]),
        np.stack([p, q, v]), np.stack([t, p, v]), np.stack([v, p, q]),
    ]).T
    return np.round(rgb * 255).astype(np.uint8)


def premultiplied_argb(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB and (N,) alpha in [0, 1] -> (N,) uint32 in QImage's
    Format_ARGB32_Premultiplied layout (0xAARRGGBB), the format Qt draws without conversion."""
    a = np.clip(np.asarray(alpha, np.float64), 0.0, 1.0)
    c = np.round(rgb.astype(np.float64) * a[:, None]).astype(np.uint32)
    a8 = np.round(a * 255).astype(np.uint32)
    return (a8 << 24) | (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
