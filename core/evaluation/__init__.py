"""COCO evaluation (box and mask AP, per class) for dense cell images."""
from .coco_eval import IOU_TYPES, METRICS, Evaluation, evaluate

__all__ = ["evaluate", "Evaluation", "METRICS", "IOU_TYPES"]
