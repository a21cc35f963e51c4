"""Model-assisted correction's model side: masks for boxes on the image's cached features.

A box prompt (the Box tool, Shift-drag re-prediction, Refine) costs only the ROI heads because
the image's backbone features are kept (:func:`cellseg.core.engine.given_boxes.encode`), per
image and per model (config, checkpoint, device, precision: the raw-output key without TTA).
Every model call runs as a job of the :class:`~cellseg.app.workers.InferenceService`'s model
thread, never on the GUI thread: the predictors loaded there are reused (on the GPU when the
model runs there), and a prompt jumps ahead of queued prefetches but waits for the run in
progress. The cache is bounded in bytes (least recently used first out) and the window drops the
features of an image when another image is shown.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PySide6.QtCore import QObject

from cellseg.core.structures import Instances

FEATURE_BUDGET = 1 << 30  # bytes of backbone features kept (about 20 MB per 512x512 image)


@dataclass(frozen=True)
class AssistJob:
    """The model-thread tag of an assist job; reads like a RawKey where the window shows the
    running job (``image``, ``model``, ``tta``)."""

    kind: str  # "features" | "box prompt"
    image: str
    models: tuple[str, ...]
    tta: bool = False

    @property
    def model(self) -> str:
        return f"{'+'.join(self.models)} {self.kind}"


class AssistService(QObject):
    """Masks for boxes, predicted by the current model(s) in the model thread."""

    def __init__(self, service, budget: int = FEATURE_BUDGET, parent: QObject | None = None):
        super().__init__(parent if parent is not None else service)
        self.service = service
        self.budget = int(budget)
        # written in the model thread, dropped from the GUI thread: hence the lock
        self._features: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ cache
    def feature_key(self, image: str, model: str) -> tuple:
        """The raw-output key without TTA: features depend on the model and image only."""
        k = self.service.key_for(image, model, tta=False)
        return k.image, k.model, k.config, k.weights, k.device, k.precision

    def has_features(self, image: str, model: str) -> bool:
        with self._lock:
            return self.feature_key(image, model) in self._features

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._features.values())

    def drop_images(self, keep: str | None = None) -> None:
        """Forget the features of every image but ``keep`` (the image shown)."""
        with self._lock:
            for k in [k for k in self._features if k[0] != keep]:
                del self._features[k]

    def _encoded(self, image_path: str, model: str, predictor, image: np.ndarray):
        """(model thread) the image's features for ``model``, encoding them if not cached."""
        from cellseg.core.engine.given_boxes import encode

        key = self.feature_key(image_path, model)
        with self._lock:
            hit = self._features.get(key)
            if hit is not None:
                self._features.move_to_end(key)
                return hit
        encoded = encode(predictor, image)
        with self._lock:
            # another checkpoint or device of this model slot on this image is stale now
            for k in [k for k in self._features if k[:2] == key[:2]]:
                del self._features[k]
            self._features[key] = encoded
            total = sum(e.nbytes for e in self._features.values())
            while total > self.budget and len(self._features) > 1:
                _, old = self._features.popitem(last=False)
                total -= old.nbytes
        return encoded

    # ------------------------------------------------------------------ requests
    def prepare(self, image_path: str, image: np.ndarray, models: tuple[str, ...]) -> None:
        """Encode the image for ``models`` behind queued work, so the first box is quick."""
        for m in models:
            tag = AssistJob("features", image_path, (m,))
            if (not self.service.has_model(m) or self.has_features(image_path, m)
                    or tag in self.service.models.pending_tags()):
                continue
            self.service.models.submit(lambda m=m: self._encode_job(image_path, image, m),
                                       tag=tag)

    def _encode_job(self, image_path: str, image: np.ndarray, model: str) -> None:
        key = self.service.key_for(image_path, model, tta=False)
        self._encoded(image_path, model, self.service.predictor(key), image)

    def predict(self, image_path: str, image: np.ndarray, models: tuple[str, ...],
                boxes: np.ndarray, classes: np.ndarray | None,
                on_done: Callable[[Instances], None],
                on_error: Callable[[str], None] | None = None) -> int:
        """Masks for ``boxes`` (N, 4) XYXY image pixels, by ``models`` (two: fused as the
        ensemble fuses, with WBF). ``classes`` None: the first model's box head picks each
        box's class, and the other model follows it. ``on_done`` gets Instances (N or fewer:
        boxes empty after clipping are dropped) on the GUI thread."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        missing = [m for m in models if not self.service.has_model(m)]
        if missing or not models:
            if on_error is not None:
                on_error(f"set the {' and '.join(missing) or 'a'} model to predict masks in boxes")
            return 0
        return self.service.models.submit(
            lambda: self._predict_job(image_path, image, tuple(models), boxes, classes),
            on_done, on_error, tag=AssistJob("box prompt", image_path, tuple(models)), front=True)

    def _predict_job(self, image_path, image, models, boxes, classes) -> Instances:
        """(model thread) one or two models' masks for the boxes."""
        from cellseg.core.engine.given_boxes import masks_for_boxes

        outputs = []
        for m in models:
            key = self.service.key_for(image_path, m, tta=False)
            predictor = self.service.predictor(key)
            encoded = self._encoded(image_path, m, predictor, image)
            out = masks_for_boxes(predictor, encoded, boxes, classes)
            if classes is None and len(out) == len(boxes):
                classes = out.classes  # the ensemble's second model keeps the first's class
            outputs.append(out)
        if len(outputs) == 1:
            return outputs[0]
        return fuse_per_box(outputs)


def fuse_per_box(outputs: list[Instances]) -> Instances:
    """Fuse several models' masks for the same boxes as the ensemble does (WBF: boxes averaged,
    masks by score-weighted vote), box by box so that neighbouring prompts never merge.

    Args:
        outputs: each model's Instances for the same N boxes, in the same order.

    Returns:
        N fused Instances (fewer if a model dropped a box that clipped to nothing).
    """
    from cellseg.core.postprocess.wbf import weighted_boxes_fusion

    n = min(len(o) for o in outputs)
    # a prompt is one box (or a handful when accepting): the loop is per prompt, not per cell
    fused = [weighted_boxes_fusion([o[i:i + 1] for o in outputs])
             for i in range(n)]
    return Instances.cat(fused) if fused else outputs[0][:0]
