"""Image reading and the one conversion rule (8/16-bit, grayscale/colour, corrupt files)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import tifffile

from cellseg.core.errors import ImageReadError
from cellseg.core.io import read_image, to_model_input, to_uint8


def test_sixteen_bit_tiff_keeps_its_dtype(nuclei_dir):
    image = read_image(nuclei_dir / "img2d.tif")
    assert image.dtype == np.uint16 and image.shape == (512, 512)


def test_percentile_rule_is_floor_of_clipped_stretch():
    values = np.arange(1000, dtype=np.uint16).reshape(20, 50) * 7
    lo, hi = np.percentile(values, (1.0, 99.8))
    expected = np.floor(np.clip((values - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(to_uint8(values), expected)
    assert to_uint8(values).min() == 0 and to_uint8(values).max() == 255
    assert not to_uint8(np.full((4, 4), 7, np.uint16)).any()  # constant image -> 0
    floats = np.linspace(-1, 1, 100, dtype=np.float32).reshape(10, 10)
    floats[0, 0] = np.nan  # NaN must not poison the percentiles
    assert to_uint8(floats).dtype == np.uint8


def test_same_pixels_from_png_tiff_and_colour_files(tmp_path, nuclei_dir):
    gray16 = read_image(nuclei_dir / "img2d.tif")
    gray8 = to_uint8(gray16)
    cv2.imwrite(str(tmp_path / "gray.png"), gray8)
    tifffile.imwrite(tmp_path / "gray8.tif", gray8)
    cv2.imwrite(str(tmp_path / "colour.png"), np.dstack([gray8] * 3))
    cv2.imwrite(str(tmp_path / "gray16.png"), gray16)
    rgba = np.dstack([gray8] * 3 + [np.full_like(gray8, 255)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    reference = to_model_input(gray16, "BGR")
    for name in ("gray.png", "gray8.tif", "colour.png", "gray16.png", "rgba.png"):
        assert np.array_equal(to_model_input(read_image(tmp_path / name), "BGR"), reference), name


def test_colour_is_rgb_and_format_orders_channels(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    rgb = read_image(tmp_path / "c.png")
    assert rgb[0, 0].tolist() == [200, 0, 10]
    assert to_model_input(rgb, "BGR")[0, 0].tolist() == [10, 0, 200]
    assert to_model_input(rgb, "RGB")[0, 0].tolist() == [200, 0, 10]


@pytest.mark.parametrize("content,expect", [
    (b"", "the file is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "truncated PNG header"),
])
def test_corrupt_png(tmp_path, content, expect):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=expect):
        read_image(path)


def test_corrupt_tiff_missing_file_and_unsupported_type(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\xff" * 20)
    with pytest.raises(ImageReadError, match="bad.tif"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ImageReadError, match="unsupported image type"):
        read_image(tmp_path / "notes.txt")
