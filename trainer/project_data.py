"""Training data from a cellseg project: its reviewed images, split reproducibly into
train/validation COCO files that ``cellseg train`` reads (with ``--image-root`` = the
project's image folder)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellseg.core.coco.writer import write_coco
from cellseg.core.errors import DataError


@dataclass(frozen=True)
class ProjectSplit:
    train_json: Path
    val_json: Path | None
    image_root: Path
    train_names: list[str]
    val_names: list[str]
    class_names: list[str]


def split_names(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Reproducible split: the same names, fraction and seed always give the same split,
    whatever order the project lists its images in (names are sorted first)."""
    names = sorted(names)
    if not 0 <= val_fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(val_fraction * len(names)))
    if val_fraction > 0 and len(names) >= 2:
        n_val = min(max(n_val, 1), len(names) - 1)  # both sides keep at least one image
    else:
        n_val = 0
    order = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, val


def write_project_split(project: str | Path, out_dir: str | Path, val_fraction: float = 0.2,
                        seed: int = 0) -> ProjectSplit:
    """Export the project's reviewed images (rejected/deleted instances left out) as
    ``out_dir/train.json`` and ``out_dir/val.json``."""
    from cellseg.core.project.exchange import project_dataset
    from cellseg.core.project.store import ProjectStore

    store = ProjectStore.open(project, read_only=True)
    try:
        ds = project_dataset(store, reviewed_only=True)
        root = store.images_dir
    finally:
        store.close()
    if not ds.images:
        raise DataError(f"project {project} has no reviewed images: review (and correct) some "
                        "images first, then fine-tune on them")
    by_name = {im.file_name: im for im in ds.images}
    train, val = split_names(list(by_name), val_fraction, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def write(names: list[str], name: str) -> Path:
        ims = [by_name[n] for n in names]
        return write_coco(out_dir / f"{name}.json", ims, ds.categories,
                          {im.id: ds.instances[im.id] for im in ims})

    return ProjectSplit(write(train, "train"), write(val, "val") if val else None, root,
                        train, val, ds.class_names)
