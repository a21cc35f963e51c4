"""Large images read a window at a time instead of whole.

``open_large(path)`` gives a :class:`LargeImage`: the full-resolution plane and any pyramid
levels as array-likes that read only what a slice asks for:

* **TIFF**: the plane the TIFF rule picks (:mod:`.tiff`, 3-D stacks refused alike). An
  uncompressed, contiguous page is memory-mapped (``tifffile.memmap``); a tiled or compressed
  one is read through tifffile's zarr store, one TIFF tile per chunk; the levels of a pyramidal
  (OME-)TIFF (SubIFDs or reduced-resolution pages) come along.
* **OME-Zarr** (a ``.zarr`` folder, NGFF 0.4 or 0.5): the ``multiscales`` datasets, first time
  point and Z plane (more than one Z plane is refused as for TIFF); one to three channels kept
  (samples last), more than three: the first channel, as for multi-page TIFFs.

Other files (PNG, JPEG, BMP, TIFF layouts the lazy path does not cover) are read whole by
``read_image`` and wrapped, so callers need one code path.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ImageReadError

OVERVIEW_PIXELS = 1 << 22  # the coarsest level with at least this many pixels gives the stretch


def is_zarr(path: str | Path) -> bool:
    """A folder holding a zarr group or array (v2 ``.zattrs``/``.zgroup`` or v3 ``zarr.json``)."""
    path = Path(path)
    return path.is_dir() and any((path / n).is_file()
                                 for n in ("zarr.json", ".zgroup", ".zattrs", ".zarray"))


@dataclass
class LargeImage:
    """One 2-D image as lazily read levels.

    ``levels[0]`` is full resolution, ``(H, W)`` or ``(H, W, C)``; ``levels[k]`` are smaller
    copies (pyramid). Slicing the image, ``image[y0:y1, x0:x1]``, reads that window of level 0
    into a numpy array. Close it (or use ``with``) to release the file.
    """

    path: Path
    levels: tuple[Any, ...]
    _close: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.levels[0].shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.levels[0].dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        return np.asarray(self.levels[0][key])

    def overview(self, min_pixels: int = OVERVIEW_PIXELS) -> np.ndarray:
        """The coarsest level with at least ``min_pixels`` pixels (or the finest), read whole:
        enough to find the grey-level stretch or draw a thumbnail without reading level 0."""
        for level in reversed(self.levels):
            if level.shape[0] * level.shape[1] >= min_pixels:
                return np.asarray(level[:])
        return np.asarray(self.levels[0][:])

    def downsample(self, k: int) -> float:
        """Level ``k``'s size relative to level 0 (0.5: half the width)."""
        return self.levels[k].shape[1] / self.levels[0].shape[1]

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None

    def __enter__(self) -> "LargeImage":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_large(path: str | Path) -> LargeImage:
    """Open an image for windowed reading (see the module docstring for what is lazy).

    Args:
        path: a TIFF/PNG/JPEG/BMP file or an OME-Zarr folder.

    Returns:
        LargeImage; its levels read from the file on demand.

    Raises:
        ImageReadError: one line naming the file and what is wrong with it.
    """
    from .header import sniff_format
    from .image import read_image

    path = Path(path)
    if is_zarr(path):
        return _open_zarr(path)
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(32)
        if sniff_format(head) == "tiff":
            lazy = _open_tiff(path)
            if lazy is not None:
                return lazy
    return LargeImage(path, (read_image(path),))


def _open_tiff(path: Path) -> LargeImage | None:
    """Lazy levels of a 2-D TIFF series, or None when its layout needs the eager reader."""
    import tifffile
    import zarr

    from .header import check_pixels, max_pixels
    from .tiff import _corrupt_tiff_errors, _first_plane

    with _corrupt_tiff_errors(path) as warnings:
        tif = tifffile.TiffFile(path)
        try:
            _, plane = _first_plane(tif, path, warnings)
            check_pixels(plane[0], plane[1], path, max_pixels())
            series = tif.series[0]
            if (series.axes not in ("YX", "YXS") or tuple(series.shape) != plane
                    or len(plane) == 3 and plane[2] not in (2, 3) or series.dtype == bool):
                # RGBA, bool and planar layouts: the eager reader's rule handles them
                tif.close()
                return None
            page = series.pages[0]
            if page.is_contiguous and page.compression == 1 and len(series.levels) == 1:
                tif.close()
                return LargeImage(path, (tifffile.memmap(path, mode="r"),))
            levels = tuple(zarr.open(series.aszarr(level=k), mode="r")
                           for k in range(len(series.levels)))
        except BaseException:
            tif.close()
            raise
    return LargeImage(path, levels, tif.close)


def _open_zarr(path: Path) -> LargeImage:
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        meta = attrs.get("ome", attrs)
        multiscales = meta["multiscales"][0]
        axes = [a["name"] if isinstance(a, dict) else str(a) for a in multiscales["axes"]]
        arrays = [group[d["path"]] for d in multiscales["datasets"]]
    except ImageReadError:
        raise
    except Exception as exc:  # zarr and JSON errors of many types
        raise ImageReadError(f"cannot read OME-Zarr {path}: {' '.join(str(exc).split())[:160]}"
                             f" (expected NGFF multiscales metadata)") from exc
    shape = dict(zip(axes, arrays[0].shape))
    if shape.get("z", 1) > 1:
        raise ImageReadError(
            f"image {path} is a 3-D stack ({shape['z']} Z-planes); cellseg segments 2-D "
            "images: save one plane or a projection as a 2-D image")
    if "y" not in shape or "x" not in shape:
        raise ImageReadError(f"cannot read OME-Zarr {path}: axes {axes} have no y and x")
    from .header import check_pixels, max_pixels

    check_pixels(shape["y"], shape["x"], path, max_pixels())
    return LargeImage(path, tuple(_Plane(a, axes) for a in arrays))


class _Plane:
    """A (y, x[, c]) view of an NGFF array with axes like (t, c, z, y, x): first time point and
    Z plane, channels last (one to three kept; more: the first)."""

    def __init__(self, array, axes: list[str]) -> None:
        self.array = array
        self.axes = axes
        channels = dict(zip(axes, array.shape)).get("c", 1)
        self.channels = channels if channels in (2, 3) else 1
        self.shape = (int(array.shape[axes.index("y")]), int(array.shape[axes.index("x")])) + (
            (self.channels,) if self.channels > 1 else ())
        self.dtype = array.dtype

    def __getitem__(self, key) -> np.ndarray:
        ys, xs = (key if isinstance(key, tuple) else (key, slice(None)))[:2]
        index = []
        for a in self.axes:
            index.append(ys if a == "y" else xs if a == "x"
                         else slice(0, self.channels) if a == "c" else 0)
        out = np.asarray(self.array[tuple(index)])
        kept = [a for a in self.axes if a in ("y", "x") or (a == "c")]
        if "c" in kept:
            out = np.moveaxis(out, kept.index("c"), -1)
            if self.channels == 1:
                out = out[..., 0]
        return out


def write_ome_zarr(path: str | Path, image: np.ndarray, levels: int = 3,
                   chunk: int = 512) -> None:
    """Write a 2-D image as an NGFF 0.4 OME-Zarr with 2x-downsampled levels (tests, benchmarks
    and users who want to convert a TIFF).

    Args:
        path: the ``.zarr`` folder to create.
        image: (H, W) or (H, W, C) array.
        levels: how many resolution levels (each half the previous, by striding).
        chunk: chunk side in pixels.
    """
    import zarr

    image = np.asarray(image)
    yx = image if image.ndim == 2 else np.moveaxis(image, -1, 0)
    axes = ([{"name": "y", "type": "space"}, {"name": "x", "type": "space"}] if image.ndim == 2
            else [{"name": "c", "type": "channel"}, {"name": "y", "type": "space"},
                  {"name": "x", "type": "space"}])
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets = []
    for k in range(levels):
        step = 2 ** k
        data = yx[..., ::step, ::step]
        chunks = data.shape[:-2] + (min(chunk, data.shape[-2]), min(chunk, data.shape[-1]))
        group.create_array(str(k), data=np.ascontiguousarray(data), chunks=chunks)
        scale = [1.0] * (data.ndim - 2) + [float(step), float(step)]
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": scale}]})
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
