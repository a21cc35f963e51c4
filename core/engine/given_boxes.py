"""Masks for given boxes: Detectron2's ``forward_with_given_boxes``, with features kept.

A box drawn by a reviewer, or one from another detector, gets its mask from the model's own
mask head (pooled Mask R-CNN head or PointRend's point subdivision) on the image's backbone
features. :func:`encode` runs the backbone once per image; every :func:`masks_for_boxes` after
that costs only the ROI heads. The frames follow upstream: boxes in original-image pixels are
scaled into the resized input frame (``x * new_w / w``, ``y * new_h / h``, as ``ResizeTransform``
does), the mask head runs there, and ``detector_postprocess`` scales boxes back, clips them,
drops empty ones and pastes the masks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..io import to_model_input
from ..structures import Instances
from .meta_arch import postprocess
from .preprocess import resize_shortest_edge


@dataclass(frozen=True)
class Encoded:
    """One image's backbone features, ready for box prompts.

    ``features``: FPN level name -> (1, C, H_l, W_l) tensor (NCHW, on the model's device);
    ``input_size``: (h, w) of the resized model input; ``image_size``: (H, W) of the image.
    """

    features: dict[str, torch.Tensor]
    input_size: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in self.features.values())


def encode(predictor, image: np.ndarray) -> Encoded:
    """Run the backbone on an image (resized as for prediction) and keep its features.

    Args:
        predictor: a loaded :class:`~cellseg.core.engine.predictor.Predictor`.
        image: (H, W[, C]) array as ``read_image`` returns it.

    Returns:
        Encoded features for :func:`masks_for_boxes`.
    """
    cfg, model = predictor.cfg, predictor.model
    image = to_model_input(image, cfg.INPUT.FORMAT)
    resized = resize_shortest_edge(image, cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    tensor = torch.from_numpy(resized.astype(np.float32).transpose(2, 0, 1))
    with torch.inference_mode():
        batch, sizes = model.preprocess([tensor])
        features = {k: v.contiguous() for k, v in model.backbone(batch).items()}
    return Encoded(features, tuple(sizes[0]), tuple(image.shape[:2]))


def masks_for_boxes(predictor, encoded: Encoded, boxes: np.ndarray,
                    classes: np.ndarray | None = None,
                    scores: np.ndarray | None = None) -> Instances:
    """Predict a mask for each given box.

    Args:
        predictor: the Predictor whose backbone made ``encoded``.
        encoded: the image's features (:func:`encode`).
        boxes: (N, 4) XYXY boxes in original-image pixels.
        classes: (N,) 0-based classes; None: the class the box head scores highest for each
            box (:func:`best_classes`).
        scores: (N,) scores to carry through; None: 1.0.

    Returns:
        Instances in original-image pixels: each box (scaled to the input frame and back, then
        clipped; boxes empty after clipping are dropped, as upstream), its class and score, and
        the pasted mask.
    """
    model = predictor.model
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    device = model.device
    (in_h, in_w), (h, w) = encoded.input_size, encoded.image_size
    scaled = torch.as_tensor(boxes, device=device).clone()
    scaled[:, 0::2] *= in_w / w
    scaled[:, 1::2] *= in_h / h
    with torch.inference_mode():
        if classes is None:
            cls = best_classes(model.roi_heads, encoded.features, scaled)
        else:
            cls = torch.as_tensor(np.asarray(classes, np.int64).reshape(-1), device=device)
        if len(cls) != n:
            raise ValueError(f"{len(cls)} classes for {n} boxes")
        sc = torch.ones(n, device=device) if scores is None else torch.as_tensor(
            np.asarray(scores, np.float32).reshape(-1), device=device)
        det = model.masks_for_boxes(encoded.features, [(scaled, cls, sc)])[0]
        det["boxes"] = scaled
        return postprocess(det, encoded.input_size, encoded.image_size)


def best_classes(roi_heads, features: dict, boxes: torch.Tensor) -> torch.Tensor:
    """(N,) the foreground class the box head scores highest for each given box.

    Standard heads classify the boxes as proposals; a cascade runs its stages from them (each
    stage on the previous stage's refined boxes, as in inference) and averages the stages'
    probabilities, as its inference does.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    stages = getattr(roi_heads, "num_cascade_stages", 0)
    if not stages:
        predictions = roi_heads.box_predictions(features, [boxes])
        probs = roi_heads.box_predictor.predict_probs(predictions, [boxes])[0]
    else:
        current, total = [boxes], 0
        for k in range(stages):
            predictions = roi_heads.run_stage(features, current, k)
            predictor = roi_heads.box_predictor[k]
            total = total + predictor.predict_probs(predictions, current)[0]
            current = list(predictor.predict_boxes(predictions, current))
        probs = total / stages
    return probs[:, :-1].argmax(dim=1)  # the last column is background
