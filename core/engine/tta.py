"""Test-time augmentation equivalent to Detectron2's GeneralizedRCNNWithTTA.

For every size in TEST.AUG.MIN_SIZES (and its horizontal flip when TEST.AUG.FLIP): detect boxes
on the augmented image, map them back to the original image, merge all of them with per-class
NMS; then map the merged boxes into every augmented image, predict masks there, undo the flip
and average the soft masks; finally paste at the original size. Augmented images are run in
batches of three, as upstream does: batching pads images to a common size, which changes
features near the border, so the batch layout is part of the numerics.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..structures import Instances
from .meta_arch import GeneralizedRCNN, postprocess
from .preprocess import resize_shortest_edge
from ..progress import TTA_PASS, checkpoint
from .roi_heads.box_head import fast_rcnn_inference_single_image

BATCH_SIZE = 3
# features of all augmented batches are kept between the box and mask passes up to this size
FEATURE_CACHE_BYTES = 3 * 2**30


@dataclass(frozen=True)
class Augmentation:
    image: np.ndarray  # (h, w, C) uint8, as the model receives it
    flip: bool

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[:2]


def augmentations(image: np.ndarray, min_sizes, max_size: int, flip: bool) -> list[Augmentation]:
    out = []
    for size in min_sizes:
        resized = resize_shortest_edge(image, size, max_size)
        out.append(Augmentation(resized, False))
        if flip:
            out.append(Augmentation(np.ascontiguousarray(resized[:, ::-1]), True))
    return out


def to_original(boxes: torch.Tensor, aug: Augmentation, orig_size) -> torch.Tensor:
    """Boxes in an augmented image -> the original image (undo flip, then resize)."""
    h, w = aug.size
    b = boxes.clone()
    if aug.flip:
        b = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    b[:, 0::2] = b[:, 0::2] * (orig_size[1] * 1.0 / w)
    b[:, 1::2] = b[:, 1::2] * (orig_size[0] * 1.0 / h)
    return b


def to_augmented(boxes: torch.Tensor, aug: Augmentation, orig_size) -> torch.Tensor:
    """Boxes in the original image -> an augmented image (resize, then flip)."""
    h, w = aug.size
    b = boxes.clone()
    b[:, 0::2] = b[:, 0::2] * (w * 1.0 / orig_size[1])
    b[:, 1::2] = b[:, 1::2] * (h * 1.0 / orig_size[0])
    if aug.flip:
        b = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
    return b


def _batches(items: list, size: int = BATCH_SIZE):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def inference_with_tta(model: GeneralizedRCNN, image: np.ndarray, *, min_sizes, max_size: int,
                       flip: bool, num_classes: int, nms_thresh: float, max_dets: int,
                       mask_on: bool, feature_cache_bytes: int = FEATURE_CACHE_BYTES) -> Instances:
    orig_size = image.shape[:2]
    augs = augmentations(image, min_sizes, max_size, flip)
    batches = list(_batches(augs))
    # Upstream runs the backbone twice per augmented image (boxes, then masks). The features
    # are the same both times (same images, same batch padding), so they are kept for the mask
    # pass when they fit the budget: half the backbone work, identical numbers.
    keep_features = mask_on and _feature_bytes(model, batches) <= feature_cache_bytes
    cached = []
    # a pass is one batch through the model: boxes for each batch, then masks for each batch
    passes = len(batches) * (2 if mask_on else 1)
    checkpoint(TTA_PASS, 0, passes)
    # 1. boxes from every augmented image, in original coordinates
    boxes, scores, classes = [], [], []
    for batch in batches:
        dets, features = model.boxes_and_features([_tensor(a.image) for a in batch])
        cached.append(features if keep_features else None)
        for aug, det in zip(batch, dets):
            boxes.append(to_original(det["boxes"], aug, orig_size))
            scores.append(det["scores"])
            classes.append(det["classes"])
        del features
        checkpoint(TTA_PASS, len(cached), passes)
    boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
    # 2. merge with per-class NMS (one score column per box: its own class)
    scores_2d = torch.zeros(len(boxes), num_classes + 1, device=boxes.device)
    scores_2d[torch.arange(len(boxes), device=boxes.device), classes] = scores
    merged = fast_rcnn_inference_single_image(boxes, scores_2d, orig_size, 1e-8, nms_thresh,
                                              max_dets)
    if mask_on:
        # 3. masks for the merged boxes in every augmented image, averaged
        probs = []
        for done, (batch, features) in enumerate(zip(batches, cached), len(batches) + 1):
            given = [(to_augmented(merged["boxes"], a, orig_size), merged["classes"],
                      merged["scores"]) for a in batch]
            if features is not None:
                dets = model.masks_for_boxes(features, given)
            else:
                dets = model.forward_detections([_tensor(a.image) for a in batch],
                                                given_boxes=given)
            for aug, det in zip(batch, dets):
                p = det["mask_probs"]
                probs.append(p.flip(dims=[3]) if aug.flip else p)
            checkpoint(TTA_PASS, done, passes)
        cached.clear()
        merged["mask_probs"] = torch.stack(probs).mean(dim=0)
    return postprocess(merged, orig_size, orig_size)


def _feature_bytes(model: GeneralizedRCNN, batches) -> int:
    """Upper bound of the memory all batches' FPN features take (float32, padded batches)."""
    div = max(model.backbone.size_divisibility, 1)
    channels = sum(s.channels / s.stride ** 2 for s in model.backbone.output_shape().values())
    total = 0
    for batch in batches:
        h = max(a.size[0] for a in batch)
        w = max(a.size[1] for a in batch)
        h, w = -(-h // div) * div, -(-w // div) * div
        total += len(batch) * h * w * channels * 4
    return int(total)
