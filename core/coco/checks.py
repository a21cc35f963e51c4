"""Checks for the fields of untrusted COCO files, and their masks decoded without dense buffers.

A COCO file may come from any tool (CVAT, LabelMe, scripts) or be damaged. Every value is
checked before it is used -- type, range (ids and label values must fit the project's SQLite
integers and label TIFFs), text that SQLite can store, RLE strings that decode to exactly
height x width pixels -- and each problem becomes one :class:`DataError` line that names the
file, the record and the offending value (shortened). Nothing here raises anything else on
bad input.

Masks are decoded with :func:`cellseg.core.project.rle.decode_rle_strings` (time and memory
proportional to the set pixels, never ``H x W x N``), after a check that rules out the malformed
counts that make pycocotools' decoder write past its buffer (run lengths that do not add up to
the image size, the CVAT issue 9460 kind of export).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..structures import CroppedMasks

MAX_ID = 2 ** 63 - 1  # ids are stored as SQLite INTEGERs
MAX_LABEL = 2 ** 32 - 1  # label values go back into uint16/uint32 label TIFFs
MAX_SIDE = 2 ** 31 - 1
_RLE_MAX_GROUPS = 7  # pycocotools writes a (delta-coded, 33-bit) count in at most 7 characters


def show(value, limit: int = 60) -> str:
    """``repr`` of a user value, on one line and at most ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_json(path: Path):
    """Parse a JSON file (UTF-8, a byte-order mark allowed). DataError when it cannot."""
    if not path.is_file():
        raise DataError(f"COCO file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start}); save the file as UTF-8 JSON") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # an error at the very end (or an unterminated string) means the file was cut short
        cut = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        what = "truncated" if cut else "invalid"
        raise DataError(f"{path}: {what} JSON at line {exc.lineno} column {exc.colno}: "
                        f"{exc.msg}") from exc
    except RecursionError as exc:
        raise DataError(f"{path}: invalid JSON: nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer literal with thousands of digits
        raise DataError(f"{path}: invalid JSON: {' '.join(str(exc).split())[:120]}") from exc


def require(rec, keys: Sequence[str], where: str) -> None:
    if not isinstance(rec, dict):
        raise DataError(f"{where} is not an object (got {show(rec)})")
    for key in keys:
        if key not in rec:
            raise DataError(f"{where}: missing required field '{key}'")


def as_int(value, what: str, where: str, lo: int = 0, hi: int = MAX_ID) -> int:
    """A whole number in ``[lo, hi]`` (JSON ``3.0`` counts as 3; ``true`` does not)."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and (isinstance(value, int) or (math.isfinite(value) and value == int(value))))
    if not ok or not lo <= int(value) <= hi:
        raise DataError(f"{where}: field '{what}' must be a whole number from {lo} to {hi}, "
                        f"got {show(value)}")
    return int(value)


def as_text(value, what: str, where: str) -> str:
    """Text a project (SQLite, UTF-8) and a file system can hold."""
    if not isinstance(value, str):
        raise DataError(f"{where}: field '{what}' must be a string, got {show(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate escape such as "\udc80"
        raise DataError(f"{where}: field '{what}' is not valid Unicode text ({show(value)})"
                        ) from exc
    if any(ord(c) < 32 or ord(c) == 127 for c in value):  # NUL, newline, ...: not a name
        raise DataError(f"{where}: field '{what}' contains a control character "
                        f"({show(value)})")
    return value


def as_flag(value, what: str, where: str) -> bool:
    if value in (0, 1) and not isinstance(value, float):  # 0, 1, false, true
        return bool(value)
    raise DataError(f"{where}: field '{what}' must be 0 or 1, got {show(value)}")


def _numbers(values) -> bool:
    return all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
               for v in values)


def check_bbox(bbox, size: tuple[int, int], where: str) -> tuple[float, float, float, float]:
    """An XYWH box of finite numbers with non-negative size, inside the image (1 px slack for
    rounding by other tools). Returns it as XYXY."""
    h, w = size
    if not isinstance(bbox, list) or len(bbox) != 4 or not _numbers(bbox):
        raise DataError(f"{where}: bbox must be [x, y, width, height] numbers, got {show(bbox)}")
    x, y, bw, bh = (float(v) for v in bbox)
    if bw < 0 or bh < 0:
        raise DataError(f"{where}: bbox has negative size {show(bbox)}")
    if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
        raise DataError(f"{where}: bbox {show(bbox)} lies outside the {w}x{h} image")
    return x, y, x + bw, y + bh


def segmentation_rle(seg, size: tuple[int, int], where: str) -> str:
    """The segmentation (compressed RLE, uncompressed RLE or polygons) as one compressed RLE
    counts string, checked against the image ``size`` (H, W)."""
    from pycocotools import mask as mask_util

    h, w = size
    if isinstance(seg, dict):
        if "size" not in seg or "counts" not in seg:
            raise DataError(f"{where}: RLE segmentation needs 'size' and 'counts'")
        rle_size = seg["size"]
        if (not isinstance(rle_size, list) or len(rle_size) != 2 or not _numbers(rle_size)
                or list(rle_size) != [h, w]):
            raise DataError(f"{where}: RLE size {show(rle_size)} differs from the image size "
                            f"[{h}, {w}]")
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= h * w
                       for c in counts):
                raise DataError(f"{where}: uncompressed RLE counts must be non-negative "
                                f"integers summing to {h}*{w}")
            if sum(counts) != h * w:  # e.g. CVAT exports with runs past the mask (issue 9460)
                raise DataError(f"{where}: uncompressed RLE counts sum to {sum(counts)}, not "
                                f"height x width = {h}*{w} = {h * w}")
            return mask_util.frPyObjects(
                {"size": [h, w], "counts": counts}, h, w)["counts"].decode("ascii")
        if not isinstance(counts, str):
            raise DataError(f"{where}: RLE counts must be a string or a list, got {show(counts)}")
        _check_rle_string(counts, where)
        return counts
    if isinstance(seg, list):
        for p in seg:
            if not isinstance(p, list) or len(p) < 6 or len(p) % 2 or not _numbers(p):
                raise DataError(f"{where}: a polygon must be a flat list of at least 3 x,y pairs"
                                f" (got {show(p)})")
            xs, ys = p[0::2], p[1::2]
            if min(xs) < 0 or min(ys) < 0 or max(xs) > w or max(ys) > h:
                raise DataError(f"{where}: polygon lies outside the {w}x{h} image (x in "
                                f"[{min(xs)}, {max(xs)}], y in [{min(ys)}, {max(ys)}])")
        rle = mask_util.merge(mask_util.frPyObjects([list(map(float, p)) for p in seg], h, w))
        return rle["counts"].decode("ascii")
    raise DataError(f"{where}: segmentation must be an RLE object or a list of polygons, got "
                    f"{show(seg)}")


def _check_rle_string(counts: str, where: str) -> None:
    """The characters and value lengths of a compressed RLE string (the sums are checked when
    decoding): garbage here overflows the decoders' integers."""
    try:
        raw = counts.encode("ascii")
    except UnicodeEncodeError:
        raw = b"\x00"
    chars = np.frombuffer(raw, np.uint8).astype(np.int16) - 48
    if chars.size and (chars.min() < 0 or chars.max() > 63):
        raise DataError(f"{where}: RLE counts {show(counts, 40)} contain characters outside the "
                        "COCO RLE alphabet (not a compressed RLE string)")
    ends = np.flatnonzero((chars & 0x20) == 0)
    if chars.size and (ends.size == 0 or ends[-1] != chars.size - 1):
        raise DataError(f"{where}: RLE counts string is truncated")
    if ends.size and np.diff(ends, prepend=-1).max() > _RLE_MAX_GROUPS:
        raise DataError(f"{where}: RLE counts hold a run length too large for any image")


def decode_masks(counts: list[str], size: tuple[int, int], wheres: list[str]) -> CroppedMasks:
    """Decode one image's RLE counts strings. A string that does not describe exactly H x W
    pixels raises DataError naming its record (``wheres[i]``)."""
    from ..project.rle import decode_rle_strings

    try:
        return decode_rle_strings(counts, size)
    except DataError:
        for string, where in zip(counts, wheres):  # name the culprit
            try:
                decode_rle_strings([string], size)
            except DataError as exc:
                raise DataError(f"{where}: invalid RLE counts ({exc}); the runs must add up to "
                                f"height x width = {size[0]}x{size[1]}") from exc
        raise
