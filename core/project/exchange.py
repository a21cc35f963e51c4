"""Creating projects, importing COCO files into them and exporting their corrected annotations.

Reading and writing COCO is :mod:`cellseg.core.coco`'s job (validation, deterministic writer,
label-TIFF folders); this module maps between those files and a project:

* images keep their COCO ids and ``file_name`` (relative to the project's images folder);
* categories keep their COCO ids and names; class index k is the k-th category by id;
* instances are exported in id order, without deleted or rejected ones; an instance's
  ``label_id`` (its value in a label image it came from) is kept, so export -> import -> export
  gives the same bytes and label-TIFF exports restore the original label values.

Anything that can fail on user input is checked before the first write, and every import is one
transaction: a bad file leaves the project (and its file) as it was.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..coco.checks import MAX_ID
from ..coco.dataset import CocoCategory, CocoDataset, CocoImage, load_coco
from ..coco.research_folder import coco_to_seed
from ..coco.writer import write_coco
from ..errors import CheckpointError, DataError, ImageReadError
from ..io.header import read_header
from ..io.image import IMAGE_SUFFIXES, looks_like_label_image, one_line
from .states import Origin, Review
from .lock import ProjectLock, lock_path
from .records import Category
from .store import ProjectStore


@dataclass(frozen=True)
class ImportSummary:
    images_added: int
    images_matched: int
    instances: int
    categories: list[str]


# ------------------------------------------------------------------------ project creation
def create_project(images_dir: str | Path, out: str | Path, coco_json: str | Path | None = None,
                   models: Sequence[tuple[str | Path, str | Path]] = (),
                   overwrite: bool = False) -> ImportSummary:
    """Make a project for the images in ``images_dir`` (top level; COCO ``file_name``s may
    point into sub-folders), optionally starting from a COCO file's annotations.

    The project is built in a temporary file beside ``out`` and moved into place at the end,
    so a failure leaves no half-made project (and never touches an existing one).
    """
    images_dir, out = Path(images_dir), Path(out)
    if not images_dir.is_dir():
        raise ImageReadError(f"images folder not found: {images_dir}")
    if out.exists() and not overwrite:
        raise DataError(f"project file already exists: {out} (choose another --out)")
    model_list = [_check_model(c, w) for c, w in models]
    dataset = load_coco(coco_json) if coco_json is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    guard = None
    try:
        # replacing a project: hold its lock, so one open in the app is refused, not swapped away
        guard = ProjectLock.acquire(out) if out.exists() else None
        with ProjectStore.create(tmp, images_dir, overwrite=True) as store:
            # (the temporary file lies beside ``out``: the images folder's relative path holds)
            for config, weights, _ in model_list:
                store.add_model(config, weights)
            summary = ImportSummary(0, 0, 0, [])
            if dataset is not None:
                summary = import_coco(store, dataset, images_root=images_dir)
            on_disk = sorted(p.name for p in images_dir.iterdir()
                             if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                             and not p.name.startswith(".") and not looks_like_label_image(p))
            with store.transaction():
                added = 0
                for name in on_disk:
                    if store.image_by_name(name) is None:
                        h, w = image_size(images_dir / name)
                        store.add_image(name, h, w)
                        added += 1
            if not store.categories():
                k = max([n for _, _, n in model_list], default=1)
                store.set_categories([Category(i, i + 1, f"class{i + 1}") for i in range(k)])
            summary = ImportSummary(summary.images_added + added, summary.images_matched,
                                    summary.instances, [c.name for c in store.categories()])
        for suffix in ("-wal", "-shm"):
            Path(f"{tmp}{suffix}").unlink(missing_ok=True)
        os.replace(tmp, out)
    finally:
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), lock_path(tmp)):
            p.unlink(missing_ok=True)
        if guard is not None:
            guard.release()
    return summary


def _check_model(config, weights) -> tuple[Path, Path, int]:
    from ..config.loader import load_config

    config, weights = Path(config), Path(weights)
    cfg = load_config(config)  # ConfigError naming the file/key on a bad config
    if not weights.is_file():
        raise CheckpointError(f"model weights not found: {weights}")
    return config, weights, int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header (format sniffed from the content; nothing is
    decoded). Raises ImageReadError naming the file when it is empty, corrupt or a 3-D stack."""
    try:
        header = read_header(path)
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many types for corrupt files
        raise ImageReadError(f"cannot decode image {path}: {one_line(exc)}") from exc
    return header.height, header.width


# ------------------------------------------------------------------------ import
def import_coco(store: ProjectStore, coco: str | Path | CocoDataset,
                images_root: str | Path | None = None) -> ImportSummary:
    """Add a COCO file's images and annotations to a project, in one transaction.

    Images are matched by ``file_name``; new ones are added with their COCO id (or a fresh id
    when the project already uses it). Categories are matched by name; new names are appended.
    With ``images_root``, every image must exist there with the size the file states.
    Annotations become instances of origin "imported" (score 1.0, pending review).
    """
    dataset = coco if isinstance(coco, CocoDataset) else load_coco(coco)
    source = dataset.path or "COCO data"
    _check_unique(source, "image file_name", [im.file_name for im in dataset.images])
    _check_unique(source, "category name", dataset.class_names)
    for im in dataset.images:
        if dataset.instances.get(im.id) is not None and len(dataset.instances[im.id]) \
                and dataset.instances[im.id].masks is None:
            raise DataError(f"{source}: image {im.file_name} has annotations without "
                            "segmentation; a project needs masks")
        existing = store.image_by_name(im.file_name)
        if existing is not None and existing.image_size != im.size:
            raise DataError(f"{source}: image {im.file_name} is {im.width}x{im.height}, the "
                            f"project has it as {existing.width}x{existing.height}")
        if images_root is not None:
            path = Path(images_root) / im.file_name
            if not path.is_file():
                raise DataError(f"{source}: image file_name {im.file_name!r} not found under "
                                f"{images_root}")
            try:
                h, w = image_size(path)
            except ImageReadError as exc:  # the file's fault as much as the image's
                raise DataError(f"{source}: image file_name {im.file_name!r}: {exc}") from exc
            if (h, w) != im.size:
                raise DataError(f"{source}: image {im.file_name} is {w}x{h} on disk but "
                                f"{im.width}x{im.height} in the file")
    # categories: by name; class index k of the file -> project class index
    cats = store.categories()
    by_name = {c.name: c for c in cats}
    new_cats = list(cats)
    remap = np.zeros(len(dataset.categories), np.int64)
    used_ids = {c.coco_id for c in cats}
    for k, c in enumerate(dataset.categories):
        if c.name in by_name:
            remap[k] = by_name[c.name].class_index
            continue
        coco_id = c.id if c.id not in used_ids else max(used_ids) + 1
        if coco_id > MAX_ID:
            raise DataError(f"{source}: no free category id for {c.name!r}")
        cat = Category(len(new_cats), coco_id, c.name)
        new_cats.append(cat)
        by_name[c.name] = cat
        used_ids.add(coco_id)
        remap[k] = cat.class_index
    if [c.coco_id for c in new_cats] != sorted(c.coco_id for c in new_cats):
        raise DataError(f"{source}: its category ids would reorder the project's classes "
                        f"({[(c.name, c.coco_id) for c in new_cats]})")
    taken = {im.id for im in store.images()}
    added = matched = n_inst = 0
    with store.transaction():
        if new_cats != cats:
            store.set_categories(new_cats)
        for im in dataset.images:
            record = store.image_by_name(im.file_name)
            if record is None:
                record = store.add_image(im.file_name, im.height, im.width,
                                         image_id=None if im.id in taken else im.id)
                taken.add(record.id)
                added += 1
            else:
                matched += 1
            inst = dataset.instances.get(im.id)
            if inst is None or len(inst) == 0:
                continue
            inst = inst.replace(classes=remap[inst.classes])
            labels = dataset.label_ids.get(im.id)
            store.add_instances(record.id, inst, Origin.IMPORTED,
                                reviews=[Review.PENDING] * len(inst), label_ids=labels)
            n_inst += len(inst)
    return ImportSummary(added, matched, n_inst, [c.name for c in new_cats])


def _check_unique(source, what: str, values: list[str]) -> None:
    """A project keys images by file name and classes by name: duplicates would merge."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise DataError(f"{source}: {what} {value!r} appears more than once")
        seen.add(value)


# ------------------------------------------------------------------------ export
def project_dataset(store: ProjectStore, reviewed_only: bool = False) -> CocoDataset:
    """The project's exportable annotations as a :class:`CocoDataset` (in memory)."""
    cats = store.categories()
    images, instances, label_ids = [], {}, {}
    for ex in store.exportable(reviewed_only):
        im = CocoImage(ex.image.id, ex.image.file_name, ex.image.height, ex.image.width)
        images.append(im)
        instances[im.id] = ex.instances
        label_ids[im.id] = ex.label_ids
        if len(ex.instances) and ex.instances.classes.max() >= len(cats):
            raise DataError(f"project {store.path}: image {im.file_name} has class "
                            f"{int(ex.instances.classes.max()) + 1} but only {len(cats)} "
                            "categories are defined")
    return CocoDataset(images, [CocoCategory(c.coco_id, c.name) for c in cats], instances,
                       label_ids, 0, None)


def export_coco(store: ProjectStore, out: str | Path, segmentation: str = "rle",
                reviewed_only: bool = False) -> CocoDataset:
    """Write the corrected annotations as COCO JSON (atomically: a temp file, then rename)."""
    if segmentation not in ("rle", "polygon"):
        raise DataError(f"segmentation must be 'rle' or 'polygon', got {segmentation!r}")
    ds = project_dataset(store, reviewed_only)
    labels = ds.label_ids if any(v.any() for v in ds.label_ids.values()) else None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        write_coco(tmp, ds.images, ds.categories, ds.instances, segmentation, labels)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ds


def export_label_tiffs(store: ProjectStore, out_root: str | Path,
                       reviewed_only: bool = False) -> dict:
    """One folder per image with ``class{k}.tif`` instance-label images (and ``image.tif``)."""
    ds = project_dataset(store, reviewed_only)
    return coco_to_seed(ds, out_root, image_root=store.images_dir)
