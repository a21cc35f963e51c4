"""Hostile and odd image files: each is read by the documented rule or refused with one line
naming the file, before any large buffer is allocated."""
from __future__ import annotations

import contextlib
import io
import struct
import subprocess
import sys
import tracemalloc

import cv2
import numpy as np
import pytest
import tifffile

from cellseg.core.cli import main
from cellseg.core.errors import ImageReadError
from cellseg.core.io import read_header, read_image, to_model_input, to_uint8

from .hostile_images import png_bomb, tiff_bomb, truncated_copy


def refused(path, match: str, **kwargs) -> str:
    with pytest.raises(ImageReadError, match=match) as err:
        read_image(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.fixture(scope="module")
def nuclei16(nuclei_dir) -> np.ndarray:
    return tifffile.imread(nuclei_dir / "img2d.tif")


def test_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 100
    assert read_header(bomb).pixels == 50_000 * 50_000
    tracemalloc.start()
    try:
        message = refused(bomb, "50000x50000 = 2,500,000,000 pixels, above the limit of "
                                "1,073,741,824")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # refused from the header: no pixel buffer was made
    assert "CELLSEG_MAX_PIXELS" in message
    # the same bytes behind a .tif name: the content decides, the limit still holds
    disguised = tmp_path / "bomb.tif"
    disguised.write_bytes(bomb.read_bytes())
    refused(disguised, "above the limit")


def test_tiff_bomb_is_refused_from_its_directory(tmp_path):
    bomb = tiff_bomb(tmp_path / "bomb.tif")
    assert bomb.stat().st_size < 200
    assert read_header(bomb).pixels == 50_000 * 50_000  # tifffile parses it as a real TIFF
    tracemalloc.start()
    try:
        refused(bomb, "50000x50000 = 2,500,000,000 pixels, above the limit")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000
    small = tiff_bomb(tmp_path / "small.tif", 8, 8)  # the same layout at a sane size decodes
    assert read_image(small).shape == (8, 8) and not read_image(small).any()


def test_pixel_limit_from_the_environment_and_the_argument(tmp_path, nuclei_dir, monkeypatch):
    image = nuclei_dir / "img2d.tif"
    monkeypatch.setenv("CELLSEG_MAX_PIXELS", "100000")
    refused(image, "512x512 = 262,144 pixels, above the limit of 100,000")
    assert read_image(image, max_pixels=512 * 512).shape == (512, 512)  # argument wins
    monkeypatch.setenv("CELLSEG_MAX_PIXELS", str(512 * 512))
    assert read_image(image).shape == (512, 512)
    monkeypatch.setenv("CELLSEG_MAX_PIXELS", "lots")
    with pytest.raises(ImageReadError, match="CELLSEG_MAX_PIXELS must be a positive whole"):
        read_image(image)


@pytest.mark.parametrize("name", ["empty.png", "empty.tif", "empty.jpg"])
def test_zero_byte_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    refused(tmp_path / name, "the file is empty")


def test_truncated_files(tmp_path, nuclei_dir, nuclei16):
    refused(truncated_copy(nuclei_dir / "img2d.tif", tmp_path / "half.tif"), "truncated TIFF")
    head = truncated_copy(nuclei_dir / "img2d.tif", tmp_path / "head.tif", 0.0001)
    refused(head, "cannot decode")
    cv2.imwrite(str(tmp_path / "full.png"), nuclei16)
    refused(truncated_copy(tmp_path / "full.png", tmp_path / "half.png"), "truncated PNG")
    cv2.imwrite(str(tmp_path / "full.jpg"), to_uint8(nuclei16))
    refused(truncated_copy(tmp_path / "full.jpg", tmp_path / "half.jpg", 0.7), "truncated JPEG")


def test_damaged_tiff_directory_is_one_error_and_one_line_on_stderr(tmp_path):
    good = tiff_bomb(tmp_path / "good.tif", 8, 8)  # a sane 8x8 deflate TIFF
    data = good.read_bytes()
    entry = struct.pack("<HHI", 273, 4, 1)  # StripOffsets: where the pixels are
    assert data.count(entry) == 1
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "no_offsets.tif").write_bytes(data.replace(entry, struct.pack("<HHI", 273, 4, 0)))
    (folder / "bad_type.tif").write_bytes(data.replace(entry, struct.pack("<HHI", 273, 99, 1)))
    # tifffile would return zeros for these: a black image that looks like data
    refused(folder / "no_offsets.tif", "corrupt TIFF, the page has no pixel data")
    refused(folder / "bad_type.tif", "corrupt TIFF, the page has no pixel data")
    # tifffile logs warnings about them; a real process prints only our one line
    proc = subprocess.run([sys.executable, "-m", "cellseg.core.cli", "project", "create", folder,
                           "--out", tmp_path / "p.cellseg"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "bad_type.tif: corrupt TIFF" in proc.stderr


def test_png_bit_flip_is_a_crc_error_before_libpng_sees_it(tmp_path, nuclei16):
    cv2.imwrite(str(tmp_path / "ok.png"), nuclei16)
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit inside the compressed pixels
    (tmp_path / "flipped.png").write_bytes(bytes(data))
    refused(tmp_path / "flipped.png", "corrupt PNG \\(CRC error in the 'IDAT' chunk")
    assert read_header(tmp_path / "flipped.png").width == 512  # the header alone is fine


def test_wrong_extension_reads_by_content(tmp_path, nuclei16):
    cv2.imwrite(str(tmp_path / "real.png"), nuclei16)
    tifffile.imwrite(tmp_path / "real.tif", nuclei16)
    cv2.imwrite(str(tmp_path / "real.jpg"), to_uint8(nuclei16))
    cases = {"png_named.tif": "real.png", "tif_named.png": "real.tif",
             "jpg_named.png": "real.jpg"}
    for fake, real in cases.items():
        (tmp_path / fake).write_bytes((tmp_path / real).read_bytes())
        assert np.array_equal(read_image(tmp_path / fake), read_image(tmp_path / real)), fake
        assert read_header(tmp_path / fake).format == read_header(tmp_path / real).format
    (tmp_path / "notes.tif").write_text("sample 3, stained with DAPI\n")
    refused(tmp_path / "notes.tif", "not a TIFF, PNG, JPEG or BMP file")


def test_dtypes_follow_the_conversion_rule(tmp_path, nuclei16):
    reference = to_model_input(nuclei16, "BGR")
    # the 16-bit rule is untouched: the nuclei image gives the fixtures' nuclei.png pixels
    for dtype in (np.float64, np.int32, np.float32):
        tifffile.imwrite(tmp_path / "x.tif", nuclei16.astype(dtype))
        image = read_image(tmp_path / "x.tif")
        assert image.dtype == dtype
        assert np.array_equal(to_model_input(image, "BGR"), reference), dtype
    signed = nuclei16.astype(np.int32) - 30000  # negative values: same stretch, same pixels
    tifffile.imwrite(tmp_path / "s.tif", signed)
    assert np.array_equal(to_model_input(read_image(tmp_path / "s.tif")), reference)
    mask = nuclei16 > np.percentile(nuclei16, 80)
    tifffile.imwrite(tmp_path / "b.tif", mask)
    binary = read_image(tmp_path / "b.tif")
    assert binary.dtype == np.uint8 and set(np.unique(binary)) == {0, 255}
    assert np.array_equal(binary == 255, mask)


def test_four_channels_drop_alpha(tmp_path, nuclei16):
    gray = to_uint8(nuclei16)
    rgba = np.dstack([gray, gray // 2, gray // 3, np.full_like(gray, 7)])
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb")
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba[:, :, [2, 1, 0, 3]])  # OpenCV writes BGRA
    for name in ("rgba.tif", "rgba.png"):
        assert np.array_equal(read_image(tmp_path / name), rgba[:, :, :3]), name
    planar = np.ascontiguousarray(np.moveaxis(rgba[:, :, :3], -1, 0))
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "planar.tif"), rgba[:, :, :3])
    five = np.zeros((8, 8, 5), np.uint8)
    tifffile.imwrite(tmp_path / "five.tif", five, photometric="minisblack", planarconfig="contig")
    refused(tmp_path / "five.tif", "unsupported image shape")


def test_multi_page_gives_the_first_page_and_z_stacks_are_refused(tmp_path, nuclei16):
    pages = np.stack([nuclei16, nuclei16[::-1], nuclei16[:, ::-1]])
    tifffile.imwrite(tmp_path / "pages.tif", pages, photometric="minisblack")  # plain pages
    tifffile.imwrite(tmp_path / "time.tif", pages, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "channels.tif", pages, imagej=True, metadata={"axes": "CYX"})
    for name in ("pages.tif", "time.tif", "channels.tif"):
        assert np.array_equal(read_image(tmp_path / name), nuclei16), name
        header = read_header(tmp_path / name)
        assert (header.format, header.height, header.width) == ("tiff", 512, 512)
    tifffile.imwrite(tmp_path / "z.tif", pages, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "z.ome.tif", pages, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "volume.tif", pages, volumetric=True, photometric="minisblack")
    for name in ("z.tif", "z.ome.tif", "volume.tif"):
        message = refused(tmp_path / name, "3-D stack \\(3 Z-planes")
        assert "Z Project" in message
        with pytest.raises(ImageReadError, match="3-D stack"):
            read_header(tmp_path / name)
    # a single Z plane is just a 2-D image
    tifffile.imwrite(tmp_path / "z1.tif", nuclei16[None], imagej=True, metadata={"axes": "ZYX"})
    assert np.array_equal(read_image(tmp_path / "z1.tif"), nuclei16)


def test_bmp_and_headers_agree_with_pixels(tmp_path, nuclei16):
    gray = to_uint8(nuclei16)[:300, :200]
    cv2.imwrite(str(tmp_path / "g.bmp"), gray)
    cv2.imwrite(str(tmp_path / "g.jpg"), gray)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    tifffile.imwrite(tmp_path / "g.tif", gray)
    for name, fmt in (("g.bmp", "bmp"), ("g.jpg", "jpeg"), ("g.png", "png"), ("g.tif", "tiff")):
        header = read_header(tmp_path / name)
        assert (header.format, header.height, header.width) == (fmt, 300, 200), name
        assert read_image(tmp_path / name).shape == (300, 200), name
    assert np.array_equal(read_image(tmp_path / "g.bmp"), gray)


def test_cli_refuses_a_hostile_image_with_one_line(tmp_path, nuclei_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.tif").write_bytes((nuclei_dir / "img2d.tif").read_bytes())
    (folder / "b.png").write_bytes(b"")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["project", "create", str(folder), "--out", str(tmp_path / "p.cellseg")])
    assert rc == 2
    assert err.getvalue().count("\n") == 1 and "b.png" in err.getvalue()
    assert "the file is empty" in err.getvalue()
    assert not (tmp_path / "p.cellseg").exists()
