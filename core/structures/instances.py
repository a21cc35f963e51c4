"""The one result type that flows from model to post-processing, overlay, project and export."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .masks import CroppedMasks


@dataclass(frozen=True)
class Instances:
    """Detections on one image, in original-image pixel coordinates.

    ``boxes`` XYXY float32 (N, 4); ``scores`` float32 (N,); ``classes`` int64 (N,), 0-based;
    ``masks`` compact binary masks (or None for box-only results); ``mask_probs`` optionally keeps
    the model's soft masks in each box's frame, float16 (N, M, M), as Detectron2's
    ``pred_masks`` before pasting (used to fuse masks in the WBF ensemble).
    """

    image_size: tuple[int, int]  # (H, W)
    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: CroppedMasks | None = None
    mask_probs: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        object.__setattr__(self, "boxes", np.asarray(self.boxes, np.float32).reshape(-1, 4))
        object.__setattr__(self, "scores", np.asarray(self.scores, np.float32).reshape(-1))
        object.__setattr__(self, "classes", np.asarray(self.classes, np.int64).reshape(-1))
        n = len(self.boxes)
        if len(self.scores) != n or len(self.classes) != n:
            raise ValueError("boxes, scores and classes must have the same length")
        if self.masks is not None and (len(self.masks) != n
                                       or tuple(self.masks.image_size) != self.image_size):
            raise ValueError("masks do not match the instances or image size")
        if self.mask_probs is not None and len(self.mask_probs) != n:
            raise ValueError("mask_probs do not match the instances")

    @staticmethod
    def empty(image_size, with_masks: bool = True) -> "Instances":
        return Instances(image_size, np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                         np.zeros(0, np.int64),
                         CroppedMasks.empty(image_size) if with_masks else None)

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, index) -> "Instances":
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        return Instances(
            self.image_size, self.boxes[idx], self.scores[idx], self.classes[idx],
            None if self.masks is None else self.masks[idx],
            None if self.mask_probs is None else self.mask_probs[idx],
        )

    def replace(self, **changes) -> "Instances":
        return replace(self, **changes)

    @staticmethod
    def cat(items: list["Instances"]) -> "Instances":
        if not items:
            raise ValueError("cat of no instances")
        size = items[0].image_size
        has_masks = all(i.masks is not None for i in items)
        has_probs = all(i.mask_probs is not None for i in items) and len(
            {i.mask_probs.shape[1:] for i in items}) == 1
        return Instances(
            size,
            np.concatenate([i.boxes for i in items]),
            np.concatenate([i.scores for i in items]),
            np.concatenate([i.classes for i in items]),
            CroppedMasks.cat([i.masks for i in items]) if has_masks else None,
            np.concatenate([i.mask_probs for i in items]) if has_probs else None,
        )

    def sorted_by_score(self) -> "Instances":
        return self[np.argsort(-self.scores, kind="stable")]

    def to_coco_results(self, image_id: int, file_name: str | None = None) -> list[dict]:
        """COCO *results* records: category_id = class + 1, bbox XYWH, compressed RLE."""
        rles = self.masks.to_rle() if self.masks is not None else [None] * len(self)
        out = []
        for box, score, cls, rle in zip(self.boxes.tolist(), self.scores.tolist(),
                                        self.classes.tolist(), rles):
            rec = {"image_id": image_id, "category_id": int(cls) + 1,
                   "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                   "score": float(score)}
            if file_name is not None:
                rec["file_name"] = file_name
            if rle is not None:
                rec["segmentation"] = rle
            out.append(rec)
        return out
