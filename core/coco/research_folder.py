"""Research ("seed") folders <-> COCO, losslessly.

One folder per sample holds ``image.tif`` and instance-label masks ``class1.tif`` ...
``classK.tif``. :func:`seed_to_coco` and :func:`coco_to_seed` convert both ways; the original
label value of each instance is kept in an extra annotation field ``label_id`` (ignored by other
tools) so a round trip restores the label images pixel for pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from ..structures import CroppedMasks, Instances
from .dataset import CocoCategory, CocoDataset, CocoImage, load_coco
from .writer import write_coco


@dataclass(frozen=True)
class SeedSample:
    """One research-folder sample: ``folder/image.tif`` and ``folder/class{k}.tif``."""
    name: str
    image: Path
    class_masks: dict[int, Path]  # 1-based class number -> label TIFF


def find_seed_samples(root: str | Path) -> list[SeedSample]:
    """The sample folders under ``root`` (sorted by name) that hold an ``image.tif``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"not a folder: {root}")
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        image = _first_existing(folder, "image")
        if image is None:
            continue
        masks = {}
        for p in folder.iterdir():
            stem, suffix = p.stem.lower(), p.suffix.lower()
            if suffix in (".tif", ".tiff") and stem.startswith("class") and stem[5:].isdigit():
                k = int(stem[5:])
                if k < 1:
                    raise DataError(f"{p}: class numbers start at 1")
                masks[k] = p
        samples.append(SeedSample(folder.name, image, dict(sorted(masks.items()))))
    if not samples:
        raise DataError(f"{root}: no sample folders with an image.tif found (expected "
                        "<root>/<sample>/image.tif and class1.tif ... classK.tif)")
    return samples


def _first_existing(folder: Path, stem: str) -> Path | None:
    for suffix in (".tif", ".tiff"):
        p = folder / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def _read_labels(path: Path) -> np.ndarray:
    import tifffile

    try:
        labels = tifffile.imread(path)
    except Exception as exc:
        raise DataError(f"cannot read label image {path}: {exc}") from exc
    labels = np.squeeze(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise DataError(f"{path}: a label image must be a 2-D integer image, got "
                        f"{labels.dtype} {labels.shape}")
    if labels.dtype.kind == "i" and labels.min() < 0:
        raise DataError(f"{path}: negative label values")
    return labels


def seed_to_coco(root: str | Path, out_json: str | Path,
                 class_names: Sequence[str] | None = None,
                 segmentation: str = "rle") -> CocoDataset:
    """Convert a seed folder tree to one COCO file; ``file_name`` is relative to ``root``.

    Categories are ``class1``..``classK`` (ids 1..K, K the highest class file found) unless
    ``class_names`` gives K names. Each label value of ``class{k}.tif`` becomes one instance
    of category k; its value is kept as ``label_id``. Returns the dataset as written.
    """
    from ..io.image import read_image

    root = Path(root)
    samples = find_seed_samples(root)
    k_max = max((max(s.class_masks) for s in samples if s.class_masks), default=0)
    if class_names is not None:
        if k_max > len(class_names):
            raise DataError(f"{root}: class{k_max}.tif exists but only {len(class_names)} class "
                            "names were given")
        k_max = len(class_names)
    if k_max == 0:
        raise DataError(f"{root}: no class1.tif ... classK.tif masks found")
    names = list(class_names) if class_names is not None else [f"class{k}"
                                                               for k in range(1, k_max + 1)]
    categories = [CocoCategory(k + 1, n) for k, n in enumerate(names)]
    images, instances, label_ids = [], {}, {}
    for image_id, s in enumerate(samples, start=1):
        shape = read_image(s.image).shape[:2]
        parts, ids = [], []
        for k, p in s.class_masks.items():
            labels = _read_labels(p)
            if labels.shape != shape:
                raise DataError(f"{p}: mask size {labels.shape} differs from the image "
                                f"{s.image.name} size {shape}")
            masks, values = CroppedMasks.from_label_image(labels)
            parts.append(Instances(shape, masks.tight_boxes(), np.ones(len(masks)),
                                   np.full(len(masks), k - 1), masks))
            ids.append(values.astype(np.int64))
        inst = Instances.cat(parts) if parts else Instances.empty(shape)
        im = CocoImage(image_id, s.image.relative_to(root).as_posix(), shape[0], shape[1])
        images.append(im)
        instances[image_id] = inst
        label_ids[image_id] = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    write_coco(out_json, images, categories, instances, segmentation, label_ids)
    return CocoDataset(images, categories, instances, label_ids, 0, Path(out_json))


def coco_to_seed(coco: str | Path | CocoDataset, out_root: str | Path,
                 image_root: str | Path | None = None) -> dict:
    """Write one seed folder per image: ``class{k}.tif`` label images (uint16, or uint32 when
    labels exceed 65535) for every category k, plus ``image.tif`` when the image is found under
    ``image_root`` (default: the COCO file's folder). Label images above 4096 x 4096 pixels are
    written tiled and compressed, band by band (:mod:`cellseg.core.io.label_tiff`).

    Label values come from ``label_id`` where present, else 1..n in annotation order. Where
    instances of one class overlap, the later annotation wins; the number of such pixels is
    reported. Returns a summary dict (images, instances, overlap_pixels, images_missing).
    """
    import tifffile

    from ..io.image import read_image
    from ..io.label_tiff import write_label_tiff

    dataset = coco if isinstance(coco, CocoDataset) else load_coco(coco)
    if image_root is None and dataset.path is not None:
        image_root = dataset.path.parent
    out_root = Path(out_root)
    summary = {"images": 0, "instances": 0, "overlap_pixels": 0, "images_missing": []}
    used: set[str] = set()
    for im in dataset.images:
        inst = dataset.instances[im.id]
        if len(inst) and inst.masks is None:
            raise DataError(f"image {im.file_name}: annotations have no masks; label images "
                            "need segmentations")
        name = _sample_name(im, used)
        folder = out_root / name
        folder.mkdir(parents=True, exist_ok=True)
        labels_of = dataset.label_ids.get(im.id, np.zeros(len(inst), np.int64))
        for k in range(len(dataset.categories)):
            sel = np.flatnonzero(inst.classes == k)
            values = labels_of[sel] if len(sel) else np.zeros(0, np.int64)
            if len(sel) and (values <= 0).any():
                values = np.arange(1, len(sel) + 1)
            if len(set(values.tolist())) != len(values):
                raise DataError(f"image {im.file_name}, category {dataset.categories[k].name}: "
                                "duplicate label_id values")
            dtype = np.uint16 if (values.max(initial=0) < 2 ** 16) else np.uint32
            masks = inst.masks[sel] if len(sel) else CroppedMasks.empty(im.size)
            summary["overlap_pixels"] += write_label_tiff(folder / f"class{k + 1}.tif", masks,
                                                          values, dtype)
        summary["instances"] += len(inst)
        summary["images"] += 1
        src = Path(image_root) / im.file_name if image_root is not None else None
        if src is not None and src.is_file():
            if src.suffix.lower() in (".tif", ".tiff"):
                (folder / "image.tif").write_bytes(src.read_bytes())
            else:
                tifffile.imwrite(folder / "image.tif", read_image(src))
        else:
            summary["images_missing"].append(im.file_name)
    return summary


def _sample_name(im: CocoImage, used: set[str]) -> str:
    p = Path(im.file_name)
    name = p.parent.name if p.parent.name else p.stem
    if name in used:  # two images in one folder: fall back to the image stem, then the id
        name = f"{name}_{p.stem}"
        if name in used:
            name = f"{name}_{im.id}"
    used.add(name)
    return name
