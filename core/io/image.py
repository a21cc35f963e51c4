"""Image reading and the one conversion rule from stored pixels to what a model sees.

The rule (used by inference, TTA, training and the sample model alike):

1. ``read_image`` returns the stored pixels with their dtype kept (uint8, uint16, int, float),
   as ``(H, W)`` for grayscale or ``(H, W, C)`` in **RGB** order for colour (OpenCV's BGR is
   swapped on read). What counts as the image:

   * the format is read from the file's content, not its extension (TIFF, PNG, JPEG, BMP);
   * images above ``CELLSEG_MAX_PIXELS`` (default 2**30 = 32768 x 32768) height x width are
     refused from their header, before decoding (decompression bombs, damaged headers);
   * multi-page TIFFs give their first page; a 3-D (Z) stack is refused with a message
     (:mod:`cellseg.core.io.tiff`);
   * 4 channels are RGBA: alpha is dropped; bool images become 0/255 uint8;
   * empty, truncated and corrupt files raise one-line ImageReadErrors naming the file.
2. ``to_uint8`` maps any non-uint8 image to uint8 with a per-image percentile stretch: the 1st
   and 99.8th percentiles of all pixel values (all channels together, so colour balance is kept)
   map to 0 and 255, values outside are clipped, and the result is floored
   (``floor(clip((x - p1) / (p99.8 - p1), 0, 1) * 255)``). A constant image becomes 0.
   uint8 images pass through unchanged. This is exactly how the fixtures' ``nuclei.png`` was made
   from the 16-bit ``img2d.tif``.
3. ``to_model_input`` makes the uint8 image 3-channel (grayscale is repeated) and orders the
   channels as the config's ``INPUT.FORMAT`` says (``BGR`` or ``RGB``), giving ``(H, W, 3)`` uint8:
   what Detectron2's ``DefaultPredictor`` receives.

The display stretch in the app is separate and never changes what the model sees.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import ImageReadError
from .header import check_pixels, read_header, sniff_format
from .header import max_pixels as header_limit
from .tiff import read_tiff_plane

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
# names of instance-label images stored beside the images they annotate (mask2d.tif,
# img_labels.png, class1.tif): folder scans skip them
_LABEL_IMAGE_NAME = re.compile(r"(^|[_\-.])(masks?|labels?|seg|class\d+)([_\-.\d]|$)", re.I)
PERCENTILES = (1.0, 99.8)
STRETCH_SAMPLES = 1 << 25  # values read to find the stretch (exact below this)
# OpenCV refuses to decode more than OPENCV_IO_MAX_IMAGE_PIXELS (2**30), a value it reads once
# when cv2 is imported. The header check against CELLSEG_MAX_PIXELS is the gate here, so lift
# OpenCV's own limit (unless the user set it) for images the user has allowed.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(2 ** 40))


def looks_like_label_image(path: str | Path) -> bool:
    """True for file names that hold annotations rather than images (e.g. ``mask2d.tif``)."""
    return bool(_LABEL_IMAGE_NAME.search(Path(path).stem))


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file, keeping its dtype (see the module docstring for the rule).

    Args:
        path: a TIFF, PNG, JPEG or BMP file; the format is taken from its content, so a file
            with the wrong extension still reads.
        max_pixels: refuse images with more pixels (height x width) than this, checked in the
            header before decoding; default ``CELLSEG_MAX_PIXELS`` or 2**30.

    Returns:
        ``(H, W)`` or ``(H, W, C)`` array (C = 2 or 3, colour in RGB order).

    Raises:
        ImageReadError: one line naming the file and what is wrong with it.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(f"unsupported image type '{suffix}': {path} "
                             f"(supported: {', '.join(IMAGE_SUFFIXES)})")
    limit = header_limit() if max_pixels is None else int(max_pixels)
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
        if sniff_format(head) == "tiff":
            image = read_tiff_plane(path, lambda h, w: check_pixels(h, w, path, limit))
        else:
            data = path.read_bytes()
            header = read_header(path, data)  # empty, unknown or truncated: refused here
            check_pixels(header.height, header.width, path, limit)
            image = _decode_with_opencv(data, path)
    except ImageReadError:
        raise
    except OSError as exc:  # permissions, a vanished network share
        raise ImageReadError(f"cannot read image {path}: {exc.strerror or one_line(exc)}"
                             ) from exc
    except MemoryError as exc:
        raise ImageReadError(f"cannot read image {path}: not enough memory to decode it"
                             ) from exc
    except Exception as exc:  # tifffile/OpenCV raise many types for corrupt files
        raise ImageReadError(f"cannot decode image {path}: {one_line(exc)}") from exc
    return _normalise_layout(image, path)


def one_line(exc: BaseException) -> str:
    """A library's exception as one short line (messages from C libraries span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _decode_with_opencv(data: bytes, path: Path) -> np.ndarray:
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE" in str(exc):  # cv2 was imported before this module lifted it
            raise ImageReadError(f"cannot decode image {path}: larger than OpenCV's own limit; "
                                 "set the environment variable OPENCV_IO_MAX_IMAGE_PIXELS as "
                                 "high as CELLSEG_MAX_PIXELS") from exc
        raise
    if image is None:
        raise ImageReadError(f"cannot decode image {path}: corrupt, or not an image")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[:, :, :3]
        image = np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB
    return image


def _normalise_layout(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:  # RGBA (or 4 samples): alpha dropped
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3)):
        raise ImageReadError(f"unsupported image shape {image.shape} in {path} "
                             "(expected HxW, HxWx2, HxWx3 or HxWx4)")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype.kind not in "uif" or image.size == 0:
        raise ImageReadError(f"unsupported pixel data ({image.dtype}, shape {image.shape}) "
                             f"in {path}")
    return image


def stretch_limits(image, max_samples: int = STRETCH_SAMPLES) -> tuple[float, float] | None:
    """Rule step 2's grey levels for an image: its 1 and 99.8 percentiles (None for uint8).

    Args:
        image: (H, W[, C]) array-like of any dtype.
        max_samples: above this many values the percentiles are taken on a regular grid of
            pixels (every k-th row and column) so that a 16k x 16k image needs no float copy of
            itself; below it they are exact.

    Returns:
        (lo, hi) for :func:`to_uint8`, (0, 0) when there is no finite value, or None when the
        image is uint8 (which passes through unchanged).
    """
    if image.dtype == np.uint8:
        return None
    step = max(1, int(np.ceil(np.sqrt(np.prod(image.shape) / max_samples))))
    values = np.asarray(image[::step, ::step]).astype(np.float64, copy=False)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 0.0
    lo, hi = np.percentile(finite, PERCENTILES)
    return float(lo), float(hi)


def to_uint8(image: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
    """Rule step 2: uint8 passes through; anything else gets the 1..99.8 percentile stretch.

    ``limits``: (lo, hi) from :func:`stretch_limits` of a larger image this one is a part of
    (a tile), so that all parts share one stretch; by default this image's own.
    """
    if image.dtype == np.uint8:
        return image
    lo, hi = stretch_limits(image) if limits is None else limits
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
    values = image.astype(np.float64, copy=False)
    scaled = np.clip((np.nan_to_num(values, nan=lo) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    return np.floor(scaled).astype(np.uint8)


def to_model_input(image: np.ndarray, input_format: str = "BGR") -> np.ndarray:
    """Rule steps 2-3: any read image -> (H, W, 3) uint8 in the config's channel order."""
    image = to_uint8(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 2:  # two-channel microscopy: third channel empty
        image = np.concatenate([image, np.zeros_like(image[:, :, :1])], axis=2)
    fmt = input_format.upper()
    if fmt == "BGR":
        image = image[:, :, ::-1]
    elif fmt != "RGB":
        raise ValueError(f"unsupported INPUT.FORMAT {input_format!r} (expected BGR or RGB)")
    return np.ascontiguousarray(image)
