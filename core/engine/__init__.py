"""Detectron2-compatible inference engine (GeneralizedRCNN with standard, cascade and PointRend
heads) on PyTorch + torchvision ops. Entry point: :func:`load_predictor`."""
from .predictor import Predictor, load_predictor, resolve_device

__all__ = ["Predictor", "load_predictor", "resolve_device"]
