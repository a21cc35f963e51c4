"""What every foreign format shares: an image's imported annotations, matching a file to a
project image, mapping class names to project categories, and storing (all or nothing)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..project.records import Category, ImageRecord
from ..project.states import Origin, Review
from ..project.store import ProjectStore
from ..structures.instances import Instances
from ..structures.masks import CroppedMasks

# A palette for class colours in files that carry them (QuPath, ImageJ): matplotlib's tab10,
# the app's overlay colours, so a class looks the same in cellseg, QuPath and Fiji.
CLASS_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)

# suffixes tools append to an image's stem (longest first): img2d_seg.npy -> img2d
_TOOL_SUFFIXES = ("_cp_masks", "_seg", "_rois", "_masks", "_labels")


@dataclass
class ImportedImage:
    """Annotations of one image read from a foreign file, before they meet a project.

    ``class_names[i]`` is the class the file gives instance ``i`` (None: the file says none);
    ``scores`` default to 1.0; ``label_ids`` are label-image values (0: none);
    ``skipped`` says what was left out and why (e.g. "3 line ROIs").
    """

    masks: CroppedMasks
    class_names: list[str | None]
    scores: np.ndarray | None = None
    label_ids: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.masks)


@dataclass(frozen=True)
class ImportResult:
    image: str
    instances: int
    categories: list[str]
    skipped: list[str]

    def summary(self) -> str:
        text = f"{self.instances} instances into {self.image}"
        if self.skipped:
            text += f" (left out: {', '.join(self.skipped)})"
        return text


def class_colour(class_index: int) -> tuple[int, int, int]:
    return CLASS_PALETTE[class_index % len(CLASS_PALETTE)]


def find_image(store: ProjectStore, path: Path, image: str | None = None) -> ImageRecord:
    """The project image a foreign file belongs to.

    Args:
        store: the open project.
        path: the foreign file (``img2d.zip``, ``img2d_seg.npy``, ``img2d_cp_masks.png``...).
        image: the image's ``file_name`` in the project, when the file name does not say it.

    Returns:
        The image record: ``image`` if given; else the image whose file stem equals the file's
        stem without the tool's suffix; else the only image of a one-image project.
    """
    if image is not None:
        record = store.image_by_name(image)
        if record is None:
            raise DataError(f"no image {image!r} in project {store.path}")
        return record
    stem = image_stem(path.name)
    for suffix in _TOOL_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    images = store.images()
    matches = [im for im in images if image_stem(im.file_name) == stem]
    if len(matches) == 1:
        return matches[0]
    if len(images) == 1:
        return images[0]
    raise DataError(f"cannot tell which project image {path.name} belongs to "
                    f"({len(images)} images, {len(matches)} named {stem!r}); give the image")


def store_imported(store: ProjectStore, record: ImageRecord, imported: ImportedImage,
                   origin: Origin = Origin.IMPORTED, category: str | None = None,
                   new_categories: bool = True) -> ImportResult:
    """Add one image's imported annotations to the project in one transaction.

    Args:
        store: the open project.
        record: the image they belong to (its size must match).
        imported: what the file gave.
        origin: IMPORTED for annotations, MODEL for predictions made elsewhere.
        category: class of every instance (overrides the file's names); created if new.
        new_categories: whether class names the project lacks become new categories (else
            such instances take the first category).

    Returns:
        What was added.
    """
    if imported.masks.image_size != record.image_size:
        h, w = imported.masks.image_size
        raise DataError(f"the file is for a {w}x{h} image, but {record.file_name} is "
                        f"{record.width}x{record.height}")
    cats = store.categories()
    by_name = {c.name: c for c in cats}
    names = [category] * len(imported) if category is not None else imported.class_names
    fallback = cats[0].name if cats else "object"
    added: list[Category] = []
    classes = np.zeros(len(imported), np.int64)
    for i, name in enumerate(names):
        if name is None or (name not in by_name and not new_categories and category is None):
            name = fallback
        if name not in by_name:
            coco_id = max([c.coco_id for c in cats + added], default=0) + 1
            by_name[name] = Category(len(cats) + len(added), coco_id, name)
            added.append(by_name[name])
        classes[i] = by_name[name].class_index
    n = len(imported)
    scores = np.ones(n, np.float32) if imported.scores is None else imported.scores
    inst = Instances(record.image_size, imported.masks.tight_boxes(), scores, classes,
                     imported.masks)
    with store.transaction():
        if added:
            store.set_categories(cats + added)
        if n:
            store.add_instances(record.id, inst, origin, reviews=[Review.PENDING] * n,
                                label_ids=imported.label_ids)
    return ImportResult(record.file_name, n, [c.name for c in cats + added], imported.skipped)


def out_folder(out: Path) -> Path:
    """A folder to export into (created); a file in the way is an error, not overwritten."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; this format exports into a folder (one file per "
                        "image)")
    out.mkdir(parents=True, exist_ok=True)
    return out


def image_stem(file_name: str) -> str:
    """``sub/img2d.tif`` -> ``img2d``: the name exported files get (as the tools expect)."""
    return Path(file_name).name.rsplit(".", 1)[0]
