"""Which plane of a TIFF is "the image", decided from its directories before any pixel is read.

Microscopy TIFFs are often more than one 2-D image. The rule:

* a **3-D stack** (a Z axis with more than one plane, as Fiji/ImageJ, OME-TIFF or tifffile
  record it, or a single volumetric page) is refused with a message: segmenting one arbitrary
  optical section of a volume would look like a result and be wrong. Save the plane you want,
  or a projection (Fiji: Image > Stacks > Z Project...), as a 2-D TIFF;
* any other multi-page TIFF (time-lapse, channels stored as pages, pyramids, pages without
  axis metadata) gives its **first page**, as before;
* planar colour pages (samples first) are returned samples-last, ``(H, W, S)``.

Both functions raise on corrupt files with tifffile's own exception types; ``read_image`` turns
them into one-line ImageReadErrors.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import ImageReadError


def tiff_plane_shape(path: str | Path) -> tuple[int, ...]:
    """Shape ``(H, W)`` or ``(H, W, S)`` of the plane :func:`read_tiff_plane` returns, read from
    the TIFF directories only (no pixel data). Raises ImageReadError for a 3-D stack or a
    corrupt file."""
    import tifffile

    path = Path(path)
    with _corrupt_tiff_errors(path) as warnings, tifffile.TiffFile(path) as tif:
        _, shape = _first_plane(tif, path, warnings)
    return shape


def read_tiff_plane(path: str | Path, check_size: Callable[[int, int], None]) -> np.ndarray:
    """The first 2-D plane of a TIFF, dtype kept, after ``check_size`` accepted its size.

    Args:
        path: the TIFF file.
        check_size: called with the plane's (height, width) before any pixel is read; raises to
            refuse the image (``read_image`` passes the pixel limit,
            :func:`cellseg.core.io.header.check_pixels`; passed in because
            :mod:`.header` reads TIFF sizes through this module).

    Returns:
        ``(H, W)`` or ``(H, W, S)`` array.

    Raises:
        ImageReadError: one line naming the file (3-D stack, too large, truncated, corrupt).
    """
    import tifffile

    path = Path(path)
    with _corrupt_tiff_errors(path) as warnings, tifffile.TiffFile(path) as tif:
        page, shape = _first_plane(tif, path, warnings)
        check_size(shape[0], shape[1])
        offsets, counts = page.dataoffsets, page.databytecounts
        if offsets and max(o + c for o, c in zip(offsets, counts)) > tif.filehandle.size:
            raise ImageReadError(f"cannot decode image {path}: truncated TIFF (its pixel data "
                                 "runs past the end of the file; was it copied completely?)")
        image = page.asarray()
        kept = [(a, n) for a, n in zip(page.axes, page.shape) if not (a == "Z" and n == 1)]
        image = image.reshape([n for _, n in kept])
    if kept[0][0] == "S":  # planar configuration: samples stored as separate planes
        image = np.moveaxis(image, 0, -1)
    return image


class _ThreadWarnings(logging.Handler):
    """Collects the warnings tifffile logs in one thread (instead of printing them to stderr,
    which would break the one-line error rule of the command line)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _corrupt_tiff_errors(path: Path) -> Iterator[list[str]]:
    """tifffile's warnings for this thread, and its exceptions as one ImageReadError line."""
    logger = logging.getLogger("tifffile")
    handler = _ThreadWarnings()
    logger.addHandler(handler)
    try:
        yield handler.messages
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # tifffile raises many types (and numpy errors) on damaged files
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ImageReadError(f"cannot decode image {path}: corrupt TIFF ({reason})") from exc
    finally:
        logger.removeHandler(handler)


def _first_plane(tif, path: Path, warnings: list[str]):
    if not tif.pages:
        raise ImageReadError(f"cannot decode image {path}: the TIFF has no pages")
    series = tif.series[0] if tif.series else None
    if series is not None and "Z" in series.axes:
        depth = series.shape[series.axes.index("Z")]
        if depth > 1:
            raise _stack_error(path, depth, series.shape, series.axes)
    page = tif.pages.first if hasattr(tif.pages, "first") else tif.pages[0]
    axes, shape = page.axes, tuple(int(s) for s in page.shape)
    if "Z" in axes and shape[axes.index("Z")] > 1:
        raise _stack_error(path, shape[axes.index("Z")], shape, axes)
    dims = {a: n for a, n in zip(axes, shape) if not (a == "Z" and n == 1)}
    if set(dims) - {"Y", "X", "S"} or "Y" not in dims or "X" not in dims:
        raise ImageReadError(f"cannot decode image {path}: unsupported TIFF page layout "
                             f"{axes} {shape} (expected a 2-D image, grayscale or colour)")
    plane = (dims["Y"], dims["X"]) + ((dims["S"],) if "S" in dims else ())
    offsets, counts = page.dataoffsets, page.databytecounts
    if not offsets or len(offsets) != len(counts) or not any(counts):
        # tifffile would return zeros: a black image that looks like data
        why = f" ({warnings[0]})" if warnings else ""
        raise ImageReadError(f"cannot decode image {path}: corrupt TIFF, the page has no pixel "
                             f"data{why}")
    return page, plane


def _stack_error(path: Path, depth: int, shape, axes: str) -> ImageReadError:
    return ImageReadError(
        f"image {path} is a 3-D stack ({depth} Z-planes, axes {axes} {tuple(shape)}); cellseg "
        "segments 2-D images: save one plane or a projection (Fiji: Image > Stacks > "
        "Z Project) as a 2-D TIFF")
