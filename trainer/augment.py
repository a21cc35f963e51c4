"""Training augmentations from the config, in Detectron2's DatasetMapper order.

``RandomCrop`` (when ``INPUT.CROP.ENABLED``) first, then ``ResizeShortestEdge`` with
``MIN_SIZE_TRAIN`` sampled by ``MIN_SIZE_TRAIN_SAMPLING`` (``choice`` of the listed sizes or a
uniform integer in the ``range``) and ``MAX_SIZE_TRAIN`` as cap, then ``RandomFlip``
(``INPUT.RANDOM_FLIP``: horizontal / vertical / none, probability 0.5). Images are resized the
way the engine resizes at test time (Pillow bilinear for uint8), masks with nearest neighbour
at pixel centres (Pillow's NEAREST rule, which upstream uses for bitmasks). Boxes are the
annotation's boxes put through the same resize and flip and clipped to the image, as upstream's
``transform_instance_annotations``; when cropping they are recomputed from the transformed masks
(upstream's ``recompute_boxes``). Instances whose box or mask is empty afterwards are dropped
(upstream's ``filter_empty_instances``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cellseg.core.engine.preprocess import resize_image, shortest_edge_size
from cellseg.core.errors import ConfigError
from cellseg.core.structures import CroppedMasks

CROP_TYPES = ("relative_range", "relative", "absolute", "absolute_range")


@dataclass(frozen=True)
class AugmentSettings:
    min_sizes: tuple[int, ...]
    max_size: int
    sampling: str = "choice"  # or "range"
    flip: str = "horizontal"  # "vertical" or "none"
    crop_type: str | None = None  # one of CROP_TYPES, None = no crop
    crop_size: tuple[float, float] = (0.9, 0.9)

    @classmethod
    def from_config(cls, cfg) -> "AugmentSettings":
        i = cfg.INPUT
        sampling = i.MIN_SIZE_TRAIN_SAMPLING
        sizes = tuple(int(s) for s in (i.MIN_SIZE_TRAIN if isinstance(i.MIN_SIZE_TRAIN, (list, tuple))
                                       else [i.MIN_SIZE_TRAIN]))
        if sampling not in ("choice", "range"):
            raise ConfigError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING: expected 'choice' or 'range', "
                              f"got {sampling!r}")
        if not sizes or (sampling == "range" and len(sizes) != 2):
            raise ConfigError(f"INPUT.MIN_SIZE_TRAIN: 'range' sampling needs two sizes, got "
                              f"{list(sizes)}")
        if i.RANDOM_FLIP not in ("horizontal", "vertical", "none"):
            raise ConfigError(f"INPUT.RANDOM_FLIP: expected horizontal, vertical or none, got "
                              f"{i.RANDOM_FLIP!r}")
        crop_type = None
        if i.CROP.ENABLED:
            crop_type = i.CROP.TYPE
            if crop_type not in CROP_TYPES:
                raise ConfigError(f"INPUT.CROP.TYPE: expected one of {', '.join(CROP_TYPES)}, "
                                  f"got {crop_type!r}")
        return cls(sizes, int(i.MAX_SIZE_TRAIN), sampling, i.RANDOM_FLIP, crop_type,
                   tuple(float(v) for v in i.CROP.SIZE))


def crop_size(h: int, w: int, crop_type: str, size, rng: np.random.Generator) -> tuple[int, int]:
    """Detectron2's RandomCrop.get_crop_size."""
    ch, cw = size
    if crop_type == "relative":
        return int(h * ch + 0.5), int(w * cw + 0.5)
    if crop_type == "relative_range":
        ch, cw = np.asarray(size, np.float32) + rng.random(2) * (1 - np.asarray(size, np.float32))
        return int(h * ch + 0.5), int(w * cw + 0.5)
    if crop_type == "absolute":
        return min(int(ch), h), min(int(cw), w)
    # absolute_range: [min, max] sizes
    lo, hi = int(size[0]), int(size[1])
    return (min(int(rng.integers(min(h, lo), min(h, hi) + 1)), h),
            min(int(rng.integers(min(w, lo), min(w, hi) + 1)), w))


def sample_short_edge(settings: AugmentSettings, rng: np.random.Generator) -> int:
    if settings.sampling == "range":
        return int(rng.integers(settings.min_sizes[0], settings.min_sizes[1] + 1))
    return int(settings.min_sizes[int(rng.integers(len(settings.min_sizes)))])


def dense_in_window(masks: CroppedMasks, y0: int, x0: int, h: int, w: int) -> torch.Tensor:
    """(N, h, w) bool tensor of all masks inside the window, built from the set pixels only."""
    out = torch.zeros((len(masks), h, w), dtype=torch.bool)
    inst, ys, xs = masks.pixel_coordinates()
    keep = (ys >= y0) & (ys < y0 + h) & (xs >= x0) & (xs < x0 + w)
    out[torch.from_numpy(inst[keep]), torch.from_numpy(ys[keep] - y0),
        torch.from_numpy(xs[keep] - x0)] = True
    return out


def pillow_nearest_index(size_in: int, size_out: int) -> torch.Tensor:
    """Source index of each output pixel of Pillow's NEAREST resize along one axis.

    Pillow walks the source coordinate ``(i + 0.5) * size_in / size_out`` by repeated float64
    addition and truncates it; reproducing that sum (not the closed form) matters where the
    exact value is an integer: e.g. 512 -> 614 px, column 153 reads source column 128 in
    Pillow but 127 in ``interpolate(mode="nearest-exact")``.
    """
    step = size_in / size_out
    walk = np.full(size_out, step)
    walk[0] = step * 0.5
    index = np.add.accumulate(walk).astype(np.int64)
    return torch.from_numpy(np.minimum(index, size_in - 1))


def resize_masks(masks: torch.Tensor, new_h: int, new_w: int) -> torch.Tensor:
    """Nearest-neighbour resize of (N, H, W) masks exactly as Pillow's NEAREST, the rule
    upstream applies to bitmask annotations."""
    if masks.shape[-2:] == (new_h, new_w):
        return masks
    if masks.shape[0] == 0:
        return masks.new_zeros((0, new_h, new_w))
    ys = pillow_nearest_index(masks.shape[1], new_h)
    xs = pillow_nearest_index(masks.shape[2], new_w)
    return masks.index_select(1, ys).index_select(2, xs)


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (exclusive right/bottom edge) of (N, H, W) bool masks; zeros if empty."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    x_any = masks.any(dim=1)
    y_any = masks.any(dim=2)
    x0 = x_any.to(torch.uint8).argmax(dim=1)
    y0 = y_any.to(torch.uint8).argmax(dim=1)
    x1 = w - x_any.flip(1).to(torch.uint8).argmax(dim=1)
    y1 = h - y_any.flip(1).to(torch.uint8).argmax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
    boxes[~x_any.any(dim=1)] = 0
    return boxes


def transform_boxes(boxes: np.ndarray, size: tuple[int, int], new_size: tuple[int, int],
                    flip: str | None) -> torch.Tensor:
    """Annotation boxes through a resize and an optional flip, clipped to the new image.

    Args:
        boxes: (N, 4) XYXY boxes in the ``size`` = (H, W) frame.
        new_size: (H', W') after the resize.
        flip: ``"horizontal"``, ``"vertical"`` or None.

    Returns:
        (N, 4) float32 boxes; computed in float64 as upstream's ``Transform.apply_box``.
    """
    (h, w), (new_h, new_w) = size, new_size
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, 0::2] *= new_w * 1.0 / w
    b[:, 1::2] *= new_h * 1.0 / h
    if flip == "horizontal":
        b[:, [0, 2]] = new_w - b[:, [2, 0]]
    elif flip == "vertical":
        b[:, [1, 3]] = new_h - b[:, [3, 1]]
    b = np.minimum(b.clip(min=0), [new_w, new_h, new_w, new_h])
    return torch.from_numpy(b.astype(np.float32))


def augment(image: np.ndarray, masks: CroppedMasks, classes: np.ndarray,
            settings: AugmentSettings, rng: np.random.Generator,
            boxes: np.ndarray | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training sample: (H, W, C) uint8 image + its instances -> model input and target.

    Args:
        boxes: (N, 4) XYXY annotation boxes; None (or a crop) recomputes them from the masks.

    Returns a (C, H', W') uint8 tensor and ``{"boxes", "classes", "masks"}`` in that frame.
    """
    h, w = image.shape[:2]
    size = (h, w)
    y0 = x0 = 0
    if settings.crop_type is not None:
        ch, cw = crop_size(h, w, settings.crop_type, settings.crop_size, rng)
        y0 = int(rng.integers(h - ch + 1))
        x0 = int(rng.integers(w - cw + 1))
        image = image[y0:y0 + ch, x0:x0 + cw]
        h, w = ch, cw
        boxes = None  # upstream recomputes boxes from the masks when cropping
    dense = dense_in_window(masks, y0, x0, h, w)
    short = sample_short_edge(settings, rng)
    if short > 0:
        new_h, new_w = shortest_edge_size(h, w, short, settings.max_size)
        image = resize_image(np.ascontiguousarray(image), new_h, new_w)
        dense = resize_masks(dense, new_h, new_w)
    flip = None
    if settings.flip != "none" and rng.random() < 0.5:
        flip = settings.flip
        axis = 1 if flip == "horizontal" else 0
        image = np.flip(image, axis=axis)
        dense = dense.flip(2 if axis == 1 else 1)
    if boxes is None:
        boxes = boxes_from_masks(dense)
    else:
        boxes = transform_boxes(boxes, size, image.shape[:2], flip)
    keep = ((boxes[:, 2] - boxes[:, 0] > 1e-5) & (boxes[:, 3] - boxes[:, 1] > 1e-5)
            & dense.flatten(1).any(1))
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
    return tensor, {"boxes": boxes[keep], "classes": torch.as_tensor(classes, dtype=torch.int64)[keep],
                    "masks": dense[keep]}
