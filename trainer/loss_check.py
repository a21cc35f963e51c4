"""``cellseg train --loss-check``: the training losses on a fixed first batch, reproducibly.

No training: the model (config + starting weights) computes its loss dict on the first
``SOLVER.IMS_PER_BATCH`` images of the training data in file order, under rules that take every
random choice out of a training iteration, so that any Detectron2 build given the same rules
computes the same numbers:

* **fixed resize**: each image's shortest edge to the config's first ``INPUT.MIN_SIZE_TRAIN``
  (at most ``INPUT.MAX_SIZE_TRAIN``), no crop, no flip;
* **deterministic sampling**: ``MODEL.RPN.BATCH_SIZE_PER_IMAGE`` = the number of anchors,
  ``MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE`` = ``RPN.POST_NMS_TOPK_TRAIN`` + the most
  ground-truth instances of an image, ``POSITIVE_FRACTION`` 1.0 for both: every anchor and
  proposal is a sample (sums do not depend on the random order they are drawn in);
* **PointRend's points**: uniform draws from :class:`FixedPointDraws`
  (seed 0), the same points for every ROI.

``tests/fixtures/training/make_reference.py`` applies the same rules to upstream Detectron2.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cellseg.core.errors import ConfigError, DataError

from .augment import AugmentSettings, augment
from .data import DataSource, ImageCache, _no_masks

POINT_DRAWS_SEED = 0


class FixedPointDraws:
    """Reproducible point draws for parity checks: the k-th call returns the k-th block of
    ``torch.rand(P, 2)`` from a generator seeded with ``seed``, the same block for every ROI.

    Sharing the points between ROIs makes them independent of the ROIs' order, which
    upstream's random foreground sampling permutes, so an engine and Detectron2 given the same
    draws sample exactly the same points on the same boxes.
    """

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, num_rois: int, num_points: int, device: torch.device) -> torch.Tensor:
        block = torch.rand(num_points, 2, generator=self.generator)
        return block.to(device).expand(num_rois, -1, -1).contiguous()


@dataclass
class FixedBatch:
    """Model inputs ((C, H, W) uint8), targets in that frame, and the COCO image ids."""

    images: list[torch.Tensor]
    targets: list[dict[str, torch.Tensor]]
    image_ids: list[int]


def fixed_resize_settings(cfg) -> AugmentSettings:
    """The config's first MIN_SIZE_TRAIN, capped by MAX_SIZE_TRAIN; no crop, no flip."""
    sizes = cfg.INPUT.MIN_SIZE_TRAIN
    first = int(sizes[0] if isinstance(sizes, (list, tuple)) else sizes)
    return AugmentSettings((first,), int(cfg.INPUT.MAX_SIZE_TRAIN), "choice", "none")


def first_batch(source: DataSource, cfg) -> FixedBatch:
    """The first ``SOLVER.IMS_PER_BATCH`` images of ``source`` in file order (those without
    annotations skipped when ``DATALOADER.FILTER_EMPTY_ANNOTATIONS``), resized as
    :func:`fixed_resize_settings` says."""
    ids = [im.id for im in source.dataset.images]
    if cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS:
        ids = [i for i in ids if len(source.dataset.instances[i])]
    if not ids:
        raise DataError(f"{source.spec}: no image has annotations to compute losses on")
    ids = ids[:max(1, int(cfg.SOLVER.IMS_PER_BATCH))]
    settings = fixed_resize_settings(cfg)
    cache = ImageCache(source, cfg.INPUT.FORMAT)
    rng = np.random.default_rng(0)  # nothing is drawn: no crop, no flip, one size
    images, targets = [], []
    for image_id in ids:
        inst = source.dataset.instances[image_id]
        masks = inst.masks if inst.masks is not None else _no_masks(inst)
        image, target = augment(cache(image_id), masks, inst.classes, settings, rng,
                                boxes=inst.boxes)
        images.append(image)
        targets.append(target)
    return FixedBatch(images, targets, ids)


def make_sampling_deterministic(model: nn.Module, batch: FixedBatch) -> dict[str, float]:
    """Every anchor and proposal becomes a sample (see the module docstring).

    The anchor count is only known once the RPN has seen the features, so a forward hook on
    the anchor generator sets it, before the RPN's losses run, on every forward.

    Returns:
        The settings as config keys; the RPN's batch size is filled in by the first forward.
    """
    rpn, roi = model.proposal_generator, model.roi_heads
    max_gt = max(len(t["boxes"]) for t in batch.targets)
    settings = {"MODEL.RPN.BATCH_SIZE_PER_IMAGE": None, "MODEL.RPN.POSITIVE_FRACTION": 1.0,
                "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": rpn.post_nms_topk[True] + max_gt,
                "MODEL.ROI_HEADS.POSITIVE_FRACTION": 1.0}

    def all_anchors(_module, _inputs, anchors):
        rpn.batch_size_per_image = sum(len(a) for a in anchors)
        settings["MODEL.RPN.BATCH_SIZE_PER_IMAGE"] = rpn.batch_size_per_image

    rpn.anchor_generator.register_forward_hook(all_anchors)
    rpn.positive_fraction = 1.0
    roi.batch_size_per_image = settings["MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE"]
    roi.positive_fraction = 1.0
    mask_head = getattr(roi, "mask_head", None)
    if hasattr(mask_head, "point_draws"):
        mask_head.point_draws = FixedPointDraws(POINT_DRAWS_SEED)
    return settings


def build_for_loss_check(cfg, source: DataSource, weights: str | None,
                         device: str = "cpu") -> tuple[nn.Module, FixedBatch, dict, list[str]]:
    """Model in training mode with deterministic sampling, and the fixed first batch.

    Returns:
        (model, batch, sampling settings, lines about the starting weights).
    """
    from cellseg.core.engine.meta_arch import build_model

    from .checkpointing import load_pretrained

    torch.manual_seed(max(int(cfg.SEED), 0))
    try:
        model = build_model(cfg)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"cannot build the model from the config: {exc}") from exc
    lines = load_pretrained(model, weights).lines() if weights else ["no starting weights: "
                                                                      "random initialisation"]
    model.to(device).train()
    batch = first_batch(source, cfg)
    settings = make_sampling_deterministic(model, batch)
    return model, batch, settings, lines


def loss_dict(model: nn.Module, batch: FixedBatch, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's training losses on the batch (the sampling order seeded by ``seed``)."""
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    images = [im.to(device) for im in batch.images]
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch.targets]
    return model.forward_train(images, targets)


def run_loss_check(cfg, source: DataSource, weights: str | None, out: str | Path,
                   device: str = "cpu") -> dict:
    """Compute the losses and write ``{"losses", "image_ids", "sampling", ...}`` to ``out``."""
    model, batch, settings, lines = build_for_loss_check(cfg, source, weights, device)
    with torch.no_grad():
        losses = loss_dict(model, batch, max(int(cfg.SEED), 0))
    mask_head = getattr(model.roi_heads, "mask_head", None)
    result = {
        "losses": {k: float(v) for k, v in sorted(losses.items())},
        "image_ids": batch.image_ids,
        "image_sizes": [list(im.shape[1:]) for im in batch.images],
        "sampling": settings,
        "min_size_train": fixed_resize_settings(cfg).min_sizes[0],
        "point_draws_seed": POINT_DRAWS_SEED if hasattr(mask_head, "point_draws") else None,
        "weights": lines,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result
