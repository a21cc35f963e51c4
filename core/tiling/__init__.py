"""Tiled prediction for images larger than a model's input: tile, predict, stitch.

``predict_tiled`` streams tiles of the image through a predictor at a chosen scale and
``stitch`` merges the per-tile instances into one result in image coordinates. The merge rule
is documented in :mod:`.stitch`.
"""
from .grid import TileSettings, default_tile_settings, tile_windows
from .predict import predict_tiled
from .stitch import stitch

__all__ = ["TileSettings", "default_tile_settings", "predict_tiled", "stitch", "tile_windows"]
