"""What a project store returns: plain records of its images, categories, models and counts."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..structures.instances import Instances


@dataclass(frozen=True)
class ImageRecord:
    id: int
    file_name: str
    height: int
    width: int
    reviewed: bool

    @property
    def image_size(self) -> tuple[int, int]:
        return self.height, self.width


@dataclass(frozen=True)
class Category:
    class_index: int  # 0-based, as the model predicts
    coco_id: int
    name: str
    supercategory: str = ""


@dataclass(frozen=True)
class ModelRecord:
    id: int
    config: str
    weights: str


@dataclass(frozen=True)
class ReviewCounts:
    instances: int = 0  # present (not deleted), rejected included
    accepted: int = 0
    rejected: int = 0
    pending: int = 0
    edited: int = 0
    drawn: int = 0
    deleted: int = 0
    assisted: int = 0  # made by a model at the reviewer's request


@dataclass(frozen=True)
class ExportImage:
    image: ImageRecord
    instances: Instances
    uids: np.ndarray
    origins: np.ndarray
    label_ids: np.ndarray  # value in the label image the instance came from, 0 if none


def image_record(row) -> ImageRecord:
    """An ``images`` table row (id, file_name, height, width, reviewed) as a record."""
    return ImageRecord(int(row[0]), row[1], int(row[2]), int(row[3]), bool(row[4]))
