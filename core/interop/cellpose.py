"""cellpose (and StarDist) label images: ``*_seg.npy``, ``*_cp_masks.png/.tif``, label TIFFs.

Import: cellpose's GUI file ``<image>_seg.npy`` (a pickled dict; its ``masks`` label image, or
its ``outlines`` filled when it has no masks) or any instance-label image
(``<image>_cp_masks.png``, StarDist's label TIFFs): each label value is an instance and is kept
as its ``label_id``. The ``.npy`` is unpickled with a loader that admits numpy arrays and plain
containers only, so a file that references anything else is refused before any code runs.

Export: ``<image>_cp_masks.png``, the 16-bit label image cellpose itself writes (more than 65535
instances: ``.tif``, as cellpose does), which its GUI opens (File > Load masks) and which its
training reads. Labels are 1..N in instance order; **where masks overlap, the later instance
wins** (a label image has one value per pixel).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..structures.instances import Instances
from ..structures.masks import CroppedMasks
from .common import ImportedImage

LABEL_SUFFIXES = (".png", ".tif", ".tiff")

# (module, name) pairs a cellpose _seg.npy may reference: numpy arrays and scalars only
_SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise DataError(f"refusing to load: the file references {module}.{name}, which could "
                        "run code (a cellpose _seg.npy holds numpy arrays only)")


def read_seg_npy(path: str | Path) -> np.ndarray:
    """The (H, W) instance-label image of a cellpose ``_seg.npy``.

    Args:
        path: the file cellpose's GUI or ``io.masks_flows_to_seg`` wrote.

    Returns:
        Its ``masks`` (0 = background), or its ``outlines`` filled when it has no masks.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"cellpose file not found: {path}")
    try:
        with open(path, "rb") as fh:
            fmt = np.lib.format
            version = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) \
                else fmt.read_array_header_2_0
            _, _, dtype = read_header(fh)
            # cellpose saves a dict: a 0-d object array whose data is a pickle
            data = _SafeUnpickler(fh).load() if dtype.hasobject else None
        if data is None:  # a plain array saved as _seg.npy: take it as the label image
            data = np.load(path, allow_pickle=False)
    except DataError:
        raise
    except Exception as exc:  # not .npy, truncated, bad pickle
        raise DataError(f"{path}: not a cellpose _seg.npy ({exc})") from exc
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
        data = data.item()
    if isinstance(data, np.ndarray) and data.dtype != object:
        return _label_array(data, path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a cellpose _seg.npy (expected a dict, got "
                        f"{type(data).__name__})")
    if data.get("masks") is not None:
        return _label_array(np.asarray(data["masks"]), path)
    if data.get("outlines") is not None:
        return fill_outlines(_label_array(np.asarray(data["outlines"]), path))
    raise DataError(f"{path}: the _seg.npy has neither 'masks' nor 'outlines'")


def read_label_image(path: str | Path) -> np.ndarray:
    """An instance-label image (PNG via OpenCV with its 16 bits kept, TIFF via tifffile)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"label image not found: {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            labels = tifffile.imread(path)
        else:
            import cv2

            labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if labels is None:
                raise ValueError("OpenCV cannot decode it")
    except Exception as exc:
        raise DataError(f"cannot read label image {path}: {exc}") from exc
    return _label_array(np.asarray(labels), path)


def labels_to_imported(labels: np.ndarray) -> ImportedImage:
    """Each label value an instance (``label_id`` kept), in increasing label order."""
    masks, ids = CroppedMasks.from_label_image(labels)
    return ImportedImage(masks, [None] * len(masks), label_ids=ids.astype(np.int64))


def read_cellpose(path: str | Path) -> ImportedImage:
    """``_seg.npy`` or a label image, by suffix."""
    path = Path(path)
    if path.name.endswith(".npy"):
        return labels_to_imported(read_seg_npy(path))
    if path.suffix.lower() in LABEL_SUFFIXES:
        return labels_to_imported(read_label_image(path))
    raise DataError(f"{path}: a cellpose file is *_seg.npy or a label image "
                    f"({', '.join(LABEL_SUFFIXES)})")


def write_cp_masks(stem_path: str | Path, instances: Instances) -> tuple[Path, int]:
    """Write ``<stem>_cp_masks.png`` (uint16; ``.tif`` beyond 65535 instances) as cellpose does.

    Args:
        stem_path: the image's path without suffix (``out/img2d``).
        instances: one image's instances; later ones win where masks overlap.

    Returns:
        The written path and the number of pixels that went to a later, overlapping instance.
    """
    n = len(instances)
    labels = instances.masks.label_image(dtype=np.uint32)
    overlap = int(instances.masks.areas().sum() - np.count_nonzero(labels))
    stem_path = Path(stem_path)
    if n < 2 ** 16:
        import cv2

        path = stem_path.with_name(stem_path.name + "_cp_masks.png")
        tmp = path.with_name(f".{path.name}.tmp.png")
        ok = cv2.imwrite(str(tmp), labels.astype(np.uint16))
    else:
        import tifffile

        path = stem_path.with_name(stem_path.name + "_cp_masks.tif")
        tmp = path.with_name(f".{path.name}.tmp.tif")
        tifffile.imwrite(tmp, labels)
        ok = True
    try:
        if not ok:
            raise DataError(f"cannot write {path}")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, overlap


def fill_outlines(outlines: np.ndarray) -> np.ndarray:
    """A label image from cellpose outlines (each label's boundary pixels): fill each one."""
    import cv2

    masks, ids = CroppedMasks.from_label_image(outlines)
    labels = np.zeros(outlines.shape, np.uint32)
    for k in range(len(masks)):
        crop = masks.crop(k).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        filled = np.zeros_like(crop)
        cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
        x0, y0, x1, y1 = masks.windows[k]
        view = labels[y0:y1, x0:x1]
        view[filled.astype(bool)] = ids[k]
    return labels


def _label_array(labels: np.ndarray, path: Path) -> np.ndarray:
    labels = np.squeeze(labels)
    if labels.ndim != 2:
        raise DataError(f"{path}: a label image must be 2-D, got shape {labels.shape} "
                        "(3-D cellpose results are not supported)")
    if labels.dtype.kind not in "ui" or (labels.dtype.kind == "i" and labels.min() < 0):
        if labels.dtype.kind == "f" and np.array_equal(labels, np.round(labels)) \
                and labels.min() >= 0:
            return labels.astype(np.int64)
        raise DataError(f"{path}: a label image holds non-negative integers, got "
                        f"{labels.dtype}")
    return labels
