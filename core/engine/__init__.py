"""Detectron2-compatible inference engine (GeneralizedRCNN with standard, cascade and PointRend
heads) on PyTorch + torchvision ops. Entry point: :func:`load_predictor`."""
from .predictor import Predictor, load_predictor, resolve_device
from ..progress import PredictionCancelled

__all__ = ["PredictionCancelled", "Predictor", "load_predictor", "resolve_device"]
