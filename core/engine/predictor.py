"""``load_predictor(config, weights, device)``: the engine's one entry point for inference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CellsegError, CheckpointError, ConfigError
from ..io import to_model_input
from ..structures import Instances
from .checkpoint import load_weights
from .meta_arch import build_model, postprocess
from .precision import Precision, apply_precision, no_tf32, resolve_precision
from .preprocess import resize_shortest_edge
from ..progress import ProgressFn, StopFn, monitored
from .tta import FEATURE_CACHE_BYTES, inference_with_tta


def resolve_device(device: str = "auto") -> torch.device:
    """The torch device for a user's choice: ``auto`` (the current GPU if PyTorch finds one,
    else the CPU), ``cpu``, ``cuda`` or ``cuda:N``. Always returns an indexed CUDA device, so
    that memory queries and messages name the GPU actually used.

    Raises:
        CellsegError: a CUDA device that does not exist here, or an unknown name.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not device.startswith("cuda"):
        raise CellsegError(f"unknown device {device!r} (expected cpu, cuda, cuda:N or auto)")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise CellsegError(f"unknown device {device!r} (expected cpu, cuda, cuda:N or auto)"
                           ) from exc
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise CellsegError(f"device {device!r} was asked for, but PyTorch finds no CUDA GPU "
                           "(use --device cpu or auto)")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= count:
        raise CellsegError(f"device {device!r} was asked for, but PyTorch finds {count} CUDA "
                           f"GPU(s): cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index)


class Predictor:
    """A loaded model: ``predictor(image, tta=False) -> Instances`` in original pixels.

    ``image`` is any array ``cellseg.core.io.read_image`` returns; the documented conversion
    rule (``cellseg.core.io.image``) turns it into the uint8 input the model was trained on.
    ``precision`` "exact" (default) or "fast" (see :mod:`.precision`); ``self.precision`` says
    what runs (``.name``, and ``.note`` for a one-line message, e.g. a fallback to exact).
    """

    def __init__(self, cfg, model: torch.nn.Module, device: torch.device, class_names=None,
                 precision: str | Precision = "exact"):
        self.cfg = cfg
        self.precision = (precision if isinstance(precision, Precision)
                          else resolve_precision(precision, device))
        self.model = apply_precision(model.eval().to(device).use_channels_last(), self.precision)
        self.device = device  # the full device (cuda:1, not just "cuda")
        self.num_classes = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
        self.class_names = list(class_names) if class_names else [
            f"class {i + 1}" for i in range(self.num_classes)]

    @property
    def mask_on(self) -> bool:
        return bool(self.cfg.MODEL.MASK_ON)

    def _feature_cache_budget(self) -> int:
        """TTA keeps backbone features between its two passes: cap them by free memory."""
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return min(FEATURE_CACHE_BYTES, free // 4)
        return FEATURE_CACHE_BYTES

    def __call__(self, image: np.ndarray, tta: bool = False, scale: float | None = None, *,
                 progress: ProgressFn | None = None, stop: StopFn | None = None) -> Instances:
        """Predict one image.

        Args:
            image: (H, W[, C]) array as ``read_image`` returns it.
            tta: test-time augmentation as the config's ``TEST.AUG`` says (Detectron2's
                GeneralizedRCNNWithTTA).
            scale: model input pixels per image pixel (tiled prediction: 1.0 = native
                resolution). None: Detectron2's rule, the short side resized to
                ``INPUT.MIN_SIZE_TEST`` (long side capped at ``INPUT.MAX_SIZE_TEST``). With TTA
                the augmentation sizes are scaled by the same factor relative to that rule.
            progress: ``progress(stage, done, total)`` after each engine stage and TTA pass
                (:mod:`cellseg.core.progress` names the stages), on the calling thread.
            stop: polled at the same points; True ends the prediction there.

        Returns:
            Instances in ``image``'s pixels.

        Raises:
            PredictionCancelled: ``stop()`` returned True (nothing is returned).
        """
        image = to_model_input(image, self.cfg.INPUT.FORMAT)
        min_size, max_size, factor = self._input_size(image.shape[:2], scale)
        exact_cuda = self.device.type == "cuda" and self.precision.dtype is None
        with monitored(progress, stop), torch.inference_mode(), no_tf32(exact_cuda):
            if tta:
                aug = self.cfg.TEST.AUG
                return inference_with_tta(
                    self.model, image,
                    min_sizes=[max(1, round(s * factor)) for s in aug.MIN_SIZES],
                    max_size=max(1, round(aug.MAX_SIZE * factor)),
                    flip=aug.FLIP, num_classes=self.num_classes,
                    nms_thresh=self.cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                    max_dets=self.cfg.TEST.DETECTIONS_PER_IMAGE, mask_on=self.mask_on,
                    feature_cache_bytes=self._feature_cache_budget())
            resized = resize_shortest_edge(image, min_size, max_size)
            # DefaultPredictor feeds float32 pixels
            tensor = torch.from_numpy(resized.astype(np.float32).transpose(2, 0, 1))
            det = self.model.forward_detections([tensor])[0]
            return postprocess(det, resized.shape[:2], image.shape[:2])

    def _input_size(self, size: tuple[int, int], scale: float | None) -> tuple[int, int, float]:
        """(short side, long-side cap) of the model input, and its ratio to the config's rule."""
        min_size, max_size = int(self.cfg.INPUT.MIN_SIZE_TEST), int(self.cfg.INPUT.MAX_SIZE_TEST)
        if scale is None:
            return min_size, max_size, 1.0
        short = max(1, round(min(size) * scale))
        cap = max(short, int(np.ceil(max(size) * scale)) + 1)
        return short, cap, short / min_size if min_size > 0 else scale


def load_predictor(config, weights, device: str = "auto", overrides: list[str] | None = None,
                   class_names=None, precision: str = "exact") -> Predictor:
    """Build the model a Detectron2 ``config.yaml`` describes and load its checkpoint.

    ``overrides`` are ``KEY VALUE`` pairs (e.g. ``["TEST.DETECTIONS_PER_IMAGE", "1000"]``).
    ``precision``: "exact" (float32, Detectron2's numerics) or "fast" (16-bit backbone where
    the hardware runs it natively; otherwise exact, with ``predictor.precision.note`` saying so).
    Raises ConfigError / CheckpointError / CellsegError with a message a user can act on.
    """
    from ..config import load_config

    cfg = config if not isinstance(config, (str, Path)) else load_config(config, overrides)
    dev = resolve_device(device)
    try:
        model = build_model(cfg)
    except CellsegError:
        raise
    except (ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"cannot build the model from {config}: {exc}") from exc
    if not Path(weights).exists():
        raise CheckpointError(f"checkpoint not found: {weights}")
    load_weights(model, weights)
    return Predictor(cfg, model, dev, class_names, precision)
