"""Training data: COCO JSON + images or research ("seed") folders, sharded infinite sampling.

A data argument is either a COCO instance file (``*.json``; image ``file_name`` relative to
the file's folder, as the app's export writes it) or a research folder
(``<root>/<sample>/image.tif`` + ``class1.tif`` ... ``classK.tif``), which is converted to
COCO once, into the run folder, by ``cellseg.core.coco.research_folder.seed_to_coco``.

Images are read with ``cellseg.core.io.read_image`` and converted to the model's uint8 input by
the engine's documented rule (``to_model_input``: percentile scaling for 8/16-bit and float
images, INPUT.FORMAT channel order), exactly as at inference.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cellseg.core.coco.dataset import CocoDataset, load_coco
from cellseg.core.coco.research_folder import seed_to_coco
from cellseg.core.errors import DataError
from cellseg.core.io import read_image, to_model_input
from cellseg.core.structures import Instances

from .augment import AugmentSettings, augment


@dataclass(frozen=True)
class DataSource:
    """A loaded data argument: the COCO dataset and the folder its file names are relative to."""

    dataset: CocoDataset
    image_root: Path
    spec: str

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    def image_path(self, image_id: int) -> Path:
        p = Path(self.dataset.image(image_id).file_name)
        return p if p.is_absolute() else self.image_root / p

    def __len__(self) -> int:
        return len(self.dataset.images)


def load_source(spec: str | Path, work_dir: str | Path | None = None, name: str = "data",
                image_root: str | Path | None = None) -> DataSource:
    """Read a COCO file or research folder; every image must exist and have masks."""
    path = Path(spec)
    if path.is_dir():
        if work_dir is None:
            raise DataError(f"{path}: a research folder needs a run folder to convert into")
        dataset = seed_to_coco(path, Path(work_dir) / f"{name}.json")
        root = path
    elif path.is_file():
        dataset = load_coco(path)
        root = Path(image_root) if image_root else path.parent
    else:
        raise DataError(f"training data not found: {path} (expected a COCO .json file or a "
                        "research folder of <sample>/image.tif + class<k>.tif)")
    source = DataSource(dataset, root, str(spec))
    if not dataset.images:
        raise DataError(f"{path}: no images")
    missing = [str(source.image_path(im.id)) for im in dataset.images
               if not source.image_path(im.id).is_file()]
    if missing:
        raise DataError(f"{path}: {len(missing)} image file(s) not found, first: {missing[0]} "
                        f"(file names are read relative to {root})")
    if any(inst.masks is None for inst in dataset.instances.values() if len(inst)):
        raise DataError(f"{path}: annotations have no segmentation masks; instance "
                        "segmentation training needs a mask on every annotation")
    return source


def check_same_classes(train: DataSource, val: DataSource) -> None:
    if train.class_names != val.class_names:
        raise DataError(f"categories differ between training data {train.spec} "
                        f"({train.class_names}) and validation data {val.spec} "
                        f"({val.class_names}); both must list the same categories")


class ImageCache:
    """Model-input images by image id, read once and kept while under a byte budget."""

    def __init__(self, source: DataSource, input_format: str, budget_bytes: int = 2 << 30):
        self.source = source
        self.input_format = input_format
        self.budget = budget_bytes
        self._items: dict[int, np.ndarray] = {}
        self._bytes = 0

    def __call__(self, image_id: int) -> np.ndarray:
        if image_id in self._items:
            return self._items[image_id]
        path = self.source.image_path(image_id)
        image = to_model_input(read_image(path), self.input_format)
        im = self.source.dataset.image(image_id)
        if image.shape[:2] != im.size:
            raise DataError(f"{path}: image is {image.shape[1]}x{image.shape[0]} px but the "
                            f"annotations say {im.width}x{im.height}")
        if self._bytes + image.nbytes <= self.budget:
            self._items[image_id] = image
            self._bytes += image.nbytes
        return image


def training_sampler(size: int, seed: int, rank: int, world: int, start: int = 0):
    """Detectron2's TrainingSampler: an endless stream of shuffled epochs (same seed on every
    rank), of which rank r takes positions r, r + world, ... -- each rank reads its own shard.
    ``start`` skips that many of this rank's draws (continuing a resumed run's stream)."""
    def epochs():
        g = torch.Generator()
        g.manual_seed(seed)
        while True:
            yield from torch.randperm(size, generator=g).tolist()

    return itertools.islice(epochs(), rank + start * world, None, world)


class TrainLoader:
    """Endless batches ``(images, targets)`` for one rank: images (C, H, W) uint8 tensors and
    targets in the augmented frame, ``{"boxes", "classes", "masks"}``."""

    def __init__(self, source: DataSource, cfg, batch_per_rank: int, seed: int, rank: int = 0,
                 world: int = 1, start_iter: int = 0):
        self.source = source
        self.settings = AugmentSettings.from_config(cfg)
        self.cache = ImageCache(source, cfg.INPUT.FORMAT)
        ids = [im.id for im in source.dataset.images]
        if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
            ids = [i for i in ids if len(source.dataset.instances[i])]
        if not ids:
            raise DataError(f"{source.spec}: no image has annotations to train on")
        self.ids = ids
        self.batch = batch_per_rank
        self._order = training_sampler(len(ids), seed, rank, world, start_iter * batch_per_rank)
        # a different augmentation stream per rank and per resumed start
        self._rng = np.random.default_rng([seed, rank, start_iter])

    def __iter__(self):
        return self

    def __next__(self):
        images, targets = [], []
        for _ in range(self.batch):
            image_id = self.ids[next(self._order)]
            inst: Instances = self.source.dataset.instances[image_id]
            image = self.cache(image_id)
            tensor, target = augment(image, inst.masks if inst.masks is not None else
                                     _no_masks(inst), inst.classes, self.settings, self._rng,
                                     boxes=inst.boxes)
            images.append(tensor)
            targets.append(target)
        return images, targets


def _no_masks(inst: Instances):
    from cellseg.core.structures import CroppedMasks

    return CroppedMasks.empty(inst.image_size)
