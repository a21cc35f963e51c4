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

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import ImageReadError
from .tiff import tiff_plane_shape

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
        path: the file (used for messages, and read when ``data`` is None: only the header and
            the chunk/segment headers are read, with seeks, never the pixel data).
        data: the file's bytes if already in memory (PNG, JPEG, BMP). TIFFs are opened with
            tifffile, which reads the directories only.

    Returns:
        ImageHeader with the size of the plane that ``read_image`` returns.

    Raises:
        ImageReadError: empty file, unknown content, a truncated or inconsistent header, or a
            TIFF that is a 3-D (Z) stack.
    """
    path = Path(path)
    if data is not None:  # in memory anyway: also check the PNG chunks' CRCs
        return _header(io.BytesIO(data), len(data), path, verify=True)
    try:
        with open(path, "rb") as fh:
            return _header(fh, os.fstat(fh.fileno()).st_size, path, verify=False)
    except OSError as exc:
        raise ImageReadError(f"cannot read image {path}: {exc.strerror or exc}") from exc


def _header(fh: BinaryIO, size: int, path: Path, verify: bool) -> ImageHeader:
    head = fh.read(32)
    if not head:
        raise ImageReadError(f"cannot decode image {path}: the file is empty (0 bytes)")
    fmt = sniff_format(head)
    if fmt is None:
        raise ImageReadError(f"cannot decode image {path}: not a TIFF, PNG, JPEG or BMP file "
                             f"(it starts with {bytes(head[:8])!r})")
    if fmt == "tiff":
        h, w = tiff_plane_shape(path)[:2]
        return ImageHeader(fmt, h, w)
    if fmt == "png":
        h, w = _png_size(fh, size, path, verify)
    else:
        h, w = {"jpeg": _jpeg_size, "bmp": _bmp_size}[fmt](fh, size, path)
    if h <= 0 or w <= 0:
        raise ImageReadError(f"cannot decode image {path}: its header gives a size of {w}x{h}")
    return ImageHeader(fmt, h, w)


def _read_at(fh: BinaryIO, pos: int, n: int) -> bytes:
    fh.seek(pos)
    return fh.read(n)


def _truncated(path: Path, what: str) -> ImageReadError:
    return ImageReadError(f"cannot decode image {path}: truncated {what} (the file ends early; "
                          "was it copied completely?)")


def _png_size(fh: BinaryIO, size: int, path: Path, verify: bool) -> tuple[int, int]:
    """Size from IHDR; every chunk must lie inside the file (and, with ``verify``, match its
    CRC): libpng would otherwise print its own error to stderr and fail later."""
    # chunks: 4-byte length, 4-byte type, data, 4-byte CRC; IHDR first, IEND last
    ihdr = _read_at(fh, 8, 25)
    if len(ihdr) < 25:
        raise _truncated(path, "PNG header")
    if ihdr[4:8] != b"IHDR":
        raise ImageReadError(f"cannot decode image {path}: PNG without an IHDR header chunk")
    w, h, depth, colour = struct.unpack(">IIBB", ihdr[8:18])
    if depth not in (1, 2, 4, 8, 16) or colour not in (0, 2, 3, 4, 6):
        raise ImageReadError(f"cannot decode image {path}: corrupt PNG header (bit depth "
                             f"{depth}, colour type {colour})")
    pos = 8
    while pos + 8 <= size:  # hop from chunk header to chunk header
        length, kind = struct.unpack(">I4s", _read_at(fh, pos, 8))
        if verify and pos + 12 + length <= size:
            body = fh.read(length + 4)
            if zlib.crc32(body[:-4], zlib.crc32(kind)) != struct.unpack(">I", body[-4:])[0]:
                raise ImageReadError(f"cannot decode image {path}: corrupt PNG (CRC error in "
                                     f"the {kind.decode('latin-1')!r} chunk at byte {pos})")
        pos += 12 + length
        if kind == b"IEND":
            break
    else:
        raise _truncated(path, "PNG")
    if pos > size:
        raise _truncated(path, "PNG")
    return int(h), int(w)


def _jpeg_size(fh: BinaryIO, size: int, path: Path) -> tuple[int, int]:
    frame, pos = None, 2
    while pos + 4 <= size:
        seg = _read_at(fh, pos, 9)
        if seg[0] != 0xFF:
            raise ImageReadError(f"cannot decode image {path}: corrupt JPEG (bad marker at byte "
                                 f"{pos})")
        marker = seg[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in _JPEG_SOF and len(seg) == 9:
            frame = struct.unpack(">HH", seg[5:9])
        if marker == 0xDA:  # start of scan: entropy-coded data follows, then EOI
            if frame is None:
                raise ImageReadError(f"cannot decode image {path}: corrupt JPEG (no frame "
                                     "header)")
            if not _has_end_marker(fh, pos, size):
                raise _truncated(path, "JPEG")
            return int(frame[0]), int(frame[1])
        pos += 2 + struct.unpack(">H", seg[2:4])[0]
    raise _truncated(path, "JPEG")


def _has_end_marker(fh: BinaryIO, start: int, size: int, block: int = 1 << 16) -> bool:
    """An EOI marker after ``start``: inside entropy-coded data 0xFF is always followed by 0x00
    or RSTn, never 0xD9. Searched from the end (where it is) backwards, in blocks."""
    end = size
    while end > start:
        lo = max(start, end - block)
        if b"\xff\xd9" in _read_at(fh, lo, end - lo + (1 if end < size else 0)):
            return True
        end = lo
    return False


def _bmp_size(fh: BinaryIO, size: int, path: Path) -> tuple[int, int]:
    head = _read_at(fh, 0, 26)
    info = struct.unpack("<I", head[14:18])[0]
    if info == 12:  # BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack("<HH", head[18:22])
    else:
        if len(head) < 26:
            raise _truncated(path, "BMP header")
        w, h = struct.unpack("<ii", head[18:26])
    return abs(int(h)), int(w)  # a negative height means rows stored top-down
