"""What an image file is and how big it is, from its first bytes: nothing is decoded here.

Hostile or damaged files are refused before any pixel buffer is allocated:

* the format comes from the file's magic bytes, not its name (a PNG saved as ``.tif`` opens as
  the PNG it is), and an empty file or unknown content gets its own message;
* the image size comes from the header (PNG ``IHDR``, JPEG ``SOFn``, BMP info header; TIFF via
  tifffile, which parses the directories without reading pixel data), so a decompression bomb
  (a few KB declaring 50,000 x 50,000 pixels) is refused against :func:`max_pixels` first;
* a PNG whose chunks run past the end of the file and a JPEG without its end marker are
  reported as truncated (instead of libpng/libjpeg printing to stderr and failing later).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageReadError

DEFAULT_MAX_PIXELS = 2 ** 30  # 32768 x 32768: room for a 16k x 16k stitched tile scan
MAX_PIXELS_ENV = "CELLSEG_MAX_PIXELS"

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn, TEM: no length field
FORMATS = ("tiff", "png", "jpeg", "bmp")


@dataclass(frozen=True)
class ImageHeader:
    """Format and 2-D size of an image file, read without decoding its pixels."""

    format: str  # one of FORMATS
    height: int
    width: int

    @property
    def pixels(self) -> int:
        return self.height * self.width


def sniff_format(head: bytes) -> str | None:
    """The format named by a file's first bytes (``"tiff"``, ``"png"``, ``"jpeg"``, ``"bmp"``),
    or None for anything else.

    Args:
        head: at least the first 8 bytes of the file.
    """
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    return None


def max_pixels() -> int:
    """The largest image (height x width) that will be decoded: ``CELLSEG_MAX_PIXELS`` from the
    environment, else :data:`DEFAULT_MAX_PIXELS`. Raises ImageReadError on a malformed value."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ImageReadError(f"{MAX_PIXELS_ENV} must be a positive whole number of pixels, "
                             f"got {raw!r}")
    return value


def check_pixels(height: int, width: int, path: str | Path, limit: int | None = None) -> None:
    """Refuse an image larger than ``limit`` (default :func:`max_pixels`) before decoding it.

    Raises:
        ImageReadError: naming the file, its size and how to raise the limit.
    """
    limit = max_pixels() if limit is None else int(limit)
    if height * width > limit:
        raise ImageReadError(
            f"image {path} is {width}x{height} = {height * width:,} pixels, above the limit of "
            f"{limit:,} (a damaged file or a decompression bomb; if the image is real, set the "
            f"environment variable {MAX_PIXELS_ENV} to a larger pixel count)")


def read_header(path: str | Path, data: bytes | None = None) -> ImageHeader:
    """Format and size of an image file from its header.

    Args:
        path: the file (used for messages, and read when ``data`` is None).
        data: the file's bytes if already in memory (PNG, JPEG, BMP). TIFFs are opened with
            tifffile, which reads the directories only.

    Returns:
        ImageHeader with the size of the plane that ``read_image`` returns.

    Raises:
        ImageReadError: empty file, unknown content, a truncated or inconsistent header, or a
            TIFF that is a 3-D (Z) stack.
    """
    path = Path(path)
    head = data[:32] if data is not None else _head(path)
    if not head:
        raise ImageReadError(f"cannot decode image {path}: the file is empty (0 bytes)")
    fmt = sniff_format(head)
    if fmt is None:
        raise ImageReadError(f"cannot decode image {path}: not a TIFF, PNG, JPEG or BMP file "
                             f"(it starts with {bytes(head[:8])!r})")
    if fmt == "tiff":
        from .tiff import tiff_plane_shape

        h, w = tiff_plane_shape(path)[:2]
        return ImageHeader(fmt, h, w)
    if data is None:
        data = path.read_bytes()
    h, w = {"png": _png_size, "jpeg": _jpeg_size, "bmp": _bmp_size}[fmt](memoryview(data), path)
    if h <= 0 or w <= 0:
        raise ImageReadError(f"cannot decode image {path}: its header gives a size of {w}x{h}")
    return ImageHeader(fmt, h, w)


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(32)
    except OSError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc.strerror or exc}") from exc


def _truncated(path: Path, what: str) -> ImageReadError:
    return ImageReadError(f"cannot decode image {path}: truncated {what} (the file ends early; "
                          "was it copied completely?)")


def _png_size(data: memoryview, path: Path) -> tuple[int, int]:
    # chunks: 4-byte length, 4-byte type, data, 4-byte CRC; IHDR first, IEND last
    if len(data) < 33 or bytes(data[12:16]) != b"IHDR":
        raise _truncated(path, "PNG header") if len(data) < 33 else ImageReadError(
            f"cannot decode image {path}: PNG without an IHDR header chunk")
    w, h = struct.unpack(">II", data[16:24])
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        pos += 12 + length
        if kind == b"IEND":
            break
    else:
        raise _truncated(path, "PNG")
    if pos > len(data):
        raise _truncated(path, "PNG")
    return int(h), int(w)


def _jpeg_size(data: memoryview, path: Path) -> tuple[int, int]:
    size, pos = None, 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ImageReadError(f"cannot decode image {path}: corrupt JPEG (bad marker at byte "
                                 f"{pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            h, w = struct.unpack(">HH", data[pos + 5:pos + 9])
            size = (int(h), int(w))
        if marker == 0xDA:  # start of scan: entropy-coded data follows, then EOI
            if size is None:
                break
            # inside entropy-coded data 0xFF is always followed by 0x00 or RSTn, never 0xD9
            if bytes(data[pos:]).rfind(b"\xff\xd9") < 0:
                raise _truncated(path, "JPEG")
            return size
        pos += 2 + length
    if size is None and pos + 4 <= len(data):
        raise ImageReadError(f"cannot decode image {path}: corrupt JPEG (no frame header)")
    raise _truncated(path, "JPEG")


def _bmp_size(data: memoryview, path: Path) -> tuple[int, int]:
    info = struct.unpack("<I", data[14:18])[0]
    if info == 12:  # BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack("<HH", data[18:22])
    else:
        if len(data) < 26:
            raise _truncated(path, "BMP header")
        w, h = struct.unpack("<ii", data[18:26])
    return abs(int(h)), int(w)  # a negative height means rows stored top-down
