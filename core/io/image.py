"""Image reading and the one conversion rule from stored pixels to what a model sees.

The rule (used by inference, TTA, training and the sample model alike):

1. ``read_image`` returns the stored pixels with their dtype kept (uint8, uint16, int, float),
   as ``(H, W)`` for grayscale or ``(H, W, C)`` in **RGB** order for colour (OpenCV's BGR is
   swapped on read; an alpha channel is dropped; multi-page TIFFs give their first page).
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

import re
from pathlib import Path

import numpy as np

from ..errors import ImageReadError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")
# names of instance-label images stored beside the images they annotate (mask2d.tif,
# img_labels.png, class1.tif): folder scans skip them
_LABEL_IMAGE_NAME = re.compile(r"(^|[_\-.])(masks?|labels?|seg|class\d+)([_\-.\d]|$)", re.I)
PERCENTILES = (1.0, 99.8)


def looks_like_label_image(path: str | Path) -> bool:
    """True for file names that hold annotations rather than images (e.g. ``mask2d.tif``)."""
    return bool(_LABEL_IMAGE_NAME.search(Path(path).stem))


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file, keeping its dtype. Raises ImageReadError with the path on failure."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageReadError(f"unsupported image type '{suffix}': {path} "
                             f"(supported: {', '.join(IMAGE_SUFFIXES)})")
    try:
        if suffix in (".tif", ".tiff"):
            image = _read_tiff(path)
        else:
            image = _read_with_opencv(path)
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile/OpenCV raise many types for corrupt files
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    return _normalise_layout(image, path)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise ImageReadError(f"TIFF has no pages: {path}")
        page = tif.pages[0]
        image = page.asarray()
        # tifffile gives planar-configured colour images as (C, H, W)
        if image.ndim == 3 and getattr(page, "planarconfig", 1) == 2 and image.shape[0] in (3, 4):
            image = np.moveaxis(image, 0, -1)
    return image


def _read_with_opencv(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)  # handles non-ASCII paths
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise ImageReadError(f"cannot decode image (corrupt or not an image): {path}")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[:, :, :3]
        image = np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB
    return image


def _normalise_layout(image: np.ndarray, path: Path) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3)):
        raise ImageReadError(f"unsupported image shape {image.shape} in {path} "
                             "(expected HxW or HxWx3)")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype.kind == "c" or image.size == 0:
        raise ImageReadError(f"unsupported pixel data ({image.dtype}, shape {image.shape}) in {path}")
    return image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Rule step 2: uint8 passes through; anything else gets the 1..99.8 percentile stretch."""
    if image.dtype == np.uint8:
        return image
    values = image.astype(np.float64, copy=False)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(finite, PERCENTILES)
    if hi <= lo:
        return np.zeros(image.shape, np.uint8)
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
