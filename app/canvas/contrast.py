"""Display contrast for microscopy images (numpy only, no Qt).

This is what the *eye* sees: a per-channel window ``[lo, hi]`` mapped linearly to 0..255. It is
deliberately separate from ``core.io.image.to_uint8`` (what the *model* sees): moving the sliders
never changes predictions.

Integer images are mapped through a lookup table (one gather per pixel, no float copy of a
4096x4096 uint16 image); float images are scaled arithmetically.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AUTO_PERCENTILES = (1.0, 99.8)  # same default as the model rule, so both look alike at first
_SAMPLE_LIMIT = 1 << 20  # percentiles from at most ~1M pixels: fast on 4096x4096, same to the eye


@dataclass
class Contrast:
    """Per-channel display windows. ``limits`` is (C, 2) float [lo, hi]; ``channel`` None shows
    all channels (grayscale or RGB composite), an int shows that channel alone in grayscale."""

    limits: np.ndarray
    data_range: tuple[float, float]
    channel: int | None = None
    percentiles: tuple[float, float] = field(default=AUTO_PERCENTILES)

    @property
    def num_channels(self) -> int:
        return len(self.limits)


def channels_of(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


def data_range(image: np.ndarray) -> tuple[float, float]:
    """Slider range: 0..255 for uint8; the finite min..max of the data otherwise (a 16-bit
    image using 200 of 65,536 levels would leave the sliders nothing to move over)."""
    if image.dtype == np.uint8:
        return 0.0, 255.0
    step = max(1, image.size // (4 * _SAMPLE_LIMIT))
    values = image.reshape(-1)[::step] if image.flags.c_contiguous else image.ravel()[::step]
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def auto_contrast(image: np.ndarray, percentiles=AUTO_PERCENTILES) -> Contrast:
    """Percentile stretch per channel (each channel its own window)."""
    c = channels_of(image)
    flat = image.reshape(-1, c)
    step = max(1, len(flat) // _SAMPLE_LIMIT)
    sample = flat[::step].astype(np.float64)
    limits = np.zeros((c, 2))
    for ch in range(c):  # C <= 4: a loop over channels, not pixels
        values = sample[:, ch]
        values = values[np.isfinite(values)]
        if values.size == 0:
            limits[ch] = (0.0, 1.0)
            continue
        lo, hi = np.percentile(values, percentiles)
        if hi <= lo:
            lo, hi = float(values.min()), float(values.max())
            if hi <= lo:
                hi = lo + 1.0
        limits[ch] = (lo, hi)
    return Contrast(limits, data_range(image), None, tuple(percentiles))


def apply_contrast(image: np.ndarray, contrast: Contrast) -> np.ndarray:
    """Image -> uint8 (H, W) grayscale or (H, W, 3) RGB for display."""
    if contrast.channel is not None:
        ch = contrast.channel
        plane = image if image.ndim == 2 else image[:, :, ch]
        return _stretch(plane, *contrast.limits[ch])
    if image.ndim == 2:
        return _stretch(image, *contrast.limits[0])
    out = np.zeros(image.shape[:2] + (3,), np.uint8)
    for ch in range(min(3, image.shape[2])):  # two-channel images leave blue empty
        out[:, :, ch] = _stretch(image[:, :, ch], *contrast.limits[ch])
    return out


def _stretch(plane: np.ndarray, lo: float, hi: float) -> np.ndarray:
    hi = hi if hi > lo else lo + 1e-6
    if plane.dtype in (np.uint8, np.uint16):
        values = np.arange(np.iinfo(plane.dtype).max + 1, dtype=np.float64)
        lut = np.clip((values - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
        return lut[plane]
    scaled = (plane.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)
