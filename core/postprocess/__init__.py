"""Post-processing of model outputs: Soft-NMS, hard NMS, WBF ensembles with mask fusion, and
the settings-driven pipeline (``compose(raw, Settings)``) the GUI and ``cellseg predict`` share."""
from .nms import nms
from .pipeline import Settings, compose
from .soft_nms import soft_nms
from .wbf import weighted_boxes_fusion

__all__ = ["soft_nms", "nms", "weighted_boxes_fusion", "Settings", "compose"]
