"""Large images read a window at a time: pyramidal/tiled TIFF, memory-mapped TIFF, OME-Zarr."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr

from cellseg.core.errors import ImageReadError
from cellseg.core.io import read_image
from cellseg.core.io.large import LargeImage, is_zarr, open_large, write_ome_zarr

from .conftest import REPO


@pytest.fixture(scope="module")
def big(nuclei_dir) -> np.ndarray:
    return np.tile(tifffile.imread(nuclei_dir / "img2d.tif"), (3, 2))  # 1536 x 1024, uint16


def test_pyramidal_tiled_tiff_reads_windows_and_levels_lazily(tmp_path, big):
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tw:
        tw.write(big, tile=(256, 256), compression="zlib", subifds=2)
        tw.write(big[::2, ::2], tile=(256, 256), compression="zlib", subfiletype=1)
        tw.write(big[::4, ::4], tile=(256, 256), compression="zlib", subfiletype=1)
    with open_large(path) as image:
        assert image.shape == big.shape and image.dtype == np.uint16
        assert len(image.levels) == 3 and image.downsample(2) == 0.25
        assert all(isinstance(level, zarr.Array) for level in image.levels)  # nothing read yet
        np.testing.assert_array_equal(image[700:900, 300:812], big[700:900, 300:812])
        np.testing.assert_array_equal(image.overview(min_pixels=1), big[::4, ::4])
    np.testing.assert_array_equal(read_image(path), big)  # the eager reader agrees


def test_plain_tiff_is_memory_mapped(tmp_path, big):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, big)
    with open_large(path) as image:
        assert isinstance(image.levels[0], np.memmap)
        np.testing.assert_array_equal(image[5:9, 1000:1024], big[5:9, 1000:1024])


def test_rgba_tiff_falls_back_to_the_eager_rule(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 255, (64, 80, 4), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    with open_large(tmp_path / "rgba.tif") as image:
        assert image.shape == (64, 80, 3)  # alpha dropped, as read_image does


def test_ome_zarr_levels_channels_and_refusals(tmp_path, big):
    path = tmp_path / "image.zarr"
    write_ome_zarr(path, big, levels=3, chunk=256)
    assert is_zarr(path) and not is_zarr(tmp_path)
    with open_large(path) as image:
        assert image.shape == big.shape and len(image.levels) == 3
        np.testing.assert_array_equal(image[100:300, 200:260], big[100:300, 200:260])
        np.testing.assert_array_equal(image.levels[1][:], big[::2, ::2])
    rgb = np.random.default_rng(1).integers(0, 255, (100, 120, 3), dtype=np.uint8)
    write_ome_zarr(tmp_path / "rgb.zarr", rgb, levels=1)
    with open_large(tmp_path / "rgb.zarr") as image:
        assert image.shape == (100, 120, 3)
        np.testing.assert_array_equal(image[10:20, 30:50], rgb[10:20, 30:50])
    stack = zarr.open_group(str(tmp_path / "stack.zarr"), mode="w", zarr_format=2)
    stack.create_array("0", data=np.zeros((4, 32, 32), np.uint8))
    stack.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "z", "type": "space"}, {"name": "y", "type": "space"},
        {"name": "x", "type": "space"}], "datasets": [{"path": "0"}]}]
    with pytest.raises(ImageReadError, match="3-D stack"):
        open_large(tmp_path / "stack.zarr")
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    plain.create_array("0", data=np.zeros((32, 32), np.uint8))
    with pytest.raises(ImageReadError, match="multiscales"):
        open_large(tmp_path / "plain.zarr")


def test_large_image_is_what_predict_tiled_slices(big):
    image = LargeImage(REPO, (big,))
    assert image[3:5, 7:9].tolist() == big[3:5, 7:9].tolist() and image.ndim == 2


@pytest.mark.slow
def test_cli_tiles_an_ome_zarr_like_the_same_tiff(tmp_path, nuclei_dir):
    image = np.tile(tifffile.imread(nuclei_dir / "img2d.tif"), (1, 2))
    tifffile.imwrite(tmp_path / "wide.tif", image, tile=(256, 256), compression="zlib")
    write_ome_zarr(tmp_path / "wide.zarr", image, levels=2)
    demo = REPO / "resources" / "sample" / "model_pointrend"
    outs = []
    for name in ("wide.tif", "wide.zarr"):
        out = tmp_path / f"{name}.json"
        run = subprocess.run(
            [sys.executable, "-m", "cellseg.core.cli", "predict", str(tmp_path / name),
             "--config", str(demo / "config.yaml"), "--weights", str(demo / "model_final.pth"),
             "--device", "cpu", "--tile", "512", "--overlap", "64", "--out", str(out)],
            capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        outs.append([(r["bbox"], r["score"]) for r in json.loads(out.read_text())])
    assert outs[0] == outs[1] and len(outs[0]) > 150
