"""A dataset of large images as a dataset of tiles, for training at native resolution.

Training resizes every image to ``INPUT.MIN_SIZE_TRAIN`` and reads it whole each time it is
drawn: a 16k x 16k slide would shrink 20-fold and cost seconds per read. Cutting it into the
tiles that tiled prediction uses (same grid, :func:`cellseg.core.tiling.tile_windows`) gives
images of the size the model trains at, each read once here (a window at a time from the file)
and written as its own TIFF with its instances cropped to it. An instance cut by a tile edge is
kept as the part inside, as Detectron2's crop augmentation keeps it, when that part has at least
``min_area`` pixels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..structures import CroppedMasks, Instances
from ..tiling.grid import TileSettings, tile_windows
from .dataset import CocoDataset, CocoImage, load_coco
from .writer import write_coco


def tile_dataset(dataset: CocoDataset, image_root: str | Path, out_dir: str | Path,
                 settings: TileSettings, min_area: int = 16) -> CocoDataset:
    """Cut every image larger than one tile into tiles; smaller images stay whole.

    Args:
        dataset: the COCO dataset (masks required).
        image_root: the folder its file names are relative to.
        out_dir: where ``images/*.tif`` and ``tiles.json`` are written.
        settings: tile size and overlap in image pixels (the scale plays no part).
        min_area: smallest part of a cut instance kept, in pixels.

    Returns:
        The tiles' dataset (its file names relative to ``out_dir``), loaded from ``tiles.json``.
    """
    import tifffile

    from ..io.large import open_large

    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    images: list[CocoImage] = []
    instances: list[Instances] = []
    for im in dataset.images:
        inst = dataset.instances[im.id]
        stem = Path(im.file_name).stem
        path = Path(im.file_name)
        with open_large(path if path.is_absolute() else Path(image_root) / path) as image:
            for x0, y0, x1, y1 in tile_windows(im.size, settings):
                name = f"images/{stem}_y{y0}_x{x0}.tif"
                tifffile.imwrite(out_dir / name, np.asarray(image[y0:y1, x0:x1]))
                images.append(CocoImage(len(images) + 1, name, int(y1 - y0), int(x1 - x0)))
                instances.append(crop_instances(inst, (x0, y0, x1, y1), min_area))
    write_coco(out_dir / "tiles.json", images, dataset.categories, instances)
    return load_coco(out_dir / "tiles.json")


def crop_instances(inst: Instances, window, min_area: int = 16) -> Instances:
    """The instances as seen in ``window`` (x0, y0, x1, y1): masks cropped to it and moved to
    its frame, boxes from the cropped masks; parts under ``min_area`` pixels dropped."""
    x0, y0, x1, y1 = (int(v) for v in window)
    size = (y1 - y0, x1 - x0)
    w = inst.masks.windows
    meets = np.flatnonzero((w[:, 0] < x1) & (w[:, 2] > x0) & (w[:, 1] < y1) & (w[:, 3] > y0))
    if len(meets) == 0:
        return Instances.empty(size)
    owner, ys, xs = inst.masks[meets].pixel_coordinates()
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    owner, ys, xs = owner[inside], ys[inside] - y0, xs[inside] - x0
    area = np.bincount(owner, minlength=len(meets))
    keep = np.flatnonzero(area >= max(1, min_area))
    rank = np.full(len(meets), -1)
    rank[keep] = np.arange(len(keep))
    sel = rank[owner] >= 0
    masks = CroppedMasks.from_pixel_coordinates(size, rank[owner[sel]], ys[sel], xs[sel],
                                                len(keep))
    chosen = meets[keep]
    return Instances(size, masks.tight_boxes(), inst.scores[chosen], inst.classes[chosen], masks)
