"""Class-aware hard NMS, via torchvision's batched_nms (the same kernel Detectron2 uses)."""
from __future__ import annotations

import numpy as np


def nms(boxes, scores, classes=None, iou_threshold: float = 0.5) -> np.ndarray:
    """Indices of the detections kept, highest score first.

    Boxes of different classes never suppress each other. ``boxes`` (N, 4) XYXY.
    """
    # imported here, not at module level: the app imports the post-processing settings at
    # start-up, and torch + torchvision take most of a start-up on a small CPU (10+ s)
    import torch
    from torchvision.ops import batched_nms

    boxes = torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4))
    scores = torch.as_tensor(np.asarray(scores, np.float32).reshape(-1))
    if classes is None:
        classes = torch.zeros(len(scores), dtype=torch.int64)
    else:
        classes = torch.as_tensor(np.asarray(classes, np.int64).reshape(-1))
    if not (len(boxes) == len(scores) == len(classes)):
        raise ValueError("boxes, scores and classes must have the same length")
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    return batched_nms(boxes, scores, classes, float(iou_threshold)).numpy().astype(np.int64)
