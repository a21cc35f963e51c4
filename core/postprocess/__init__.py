"""Post-processing of model outputs: Soft-NMS, hard NMS, WBF ensembles with mask fusion, and
the settings-driven pipeline the GUI and ``cellseg predict`` share."""
from .nms import nms
from .soft_nms import soft_nms

__all__ = ["soft_nms", "nms"]
