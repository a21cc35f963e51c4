"""Hostile image files built byte by byte (shared by the core and the app tests)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A valid-looking PNG that declares ``width`` x ``height`` 8-bit grayscale pixels (2.5 GP
    by default) in ~60 bytes: signature, IHDR with a correct CRC, a tiny IDAT, IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray, no interlace
    idat = zlib.compress(b"\x00" * 64)  # the first scanline's filter bytes; the rest is missing
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat)
                     + _chunk(b"IEND", b""))
    return path


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


def tiff_bomb(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A little-endian TIFF whose one deflate strip claims ``width`` x ``height`` 8-bit pixels
    but holds ~20 bytes: a header, one directory of nine tags, the strip."""
    strip = zlib.compress(b"\x00" * 64)
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1),
            (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    ifd_size = 2 + 12 * len(tags) + 4
    data_at = 8 + ifd_size
    entries = b"".join(struct.pack("<HHII", tag, kind, 1, data_at if tag == 273 else value)
                       for tag, kind, value in tags)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries
                     + struct.pack("<I", 0) + strip)
    return path
