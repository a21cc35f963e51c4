"""Background work: model runs in one QThread with a job queue, light jobs (image loading,
post-processing) in another, and a cache of raw model outputs.

The queues (``app.job_queue``) are managed on the GUI thread. Errors in a job -- a bad
checkpoint, a corrupt image, running out of GPU memory -- come back as a message; the thread
keeps serving. A running model
job is stopped through its own ``threading.Event``, which the engine polls between stages
(``cellseg.core.progress``); a stopped run is neither cached nor an error.

Raw outputs are cached per (image, model, config, weights, device, precision, TTA); post-processing
settings are NOT part of that key, so a Soft-NMS/WBF/threshold toggle re-composes from the cache
instead of re-running models.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from cellseg.core.errors import CellsegError
from cellseg.core.review.state import RawKey  # the review session's key: one cache key type
from cellseg.core.structures import Instances
from cellseg.core.tiling.grid import TileSettings

from .job_queue import JobQueue

RAW_CACHE_SIZE = 256
CANCELLED = object()  # what a model job returns when it was stopped


def _larger_than_a_tile(path: str, tile: TileSettings) -> bool:
    """Whether an image needs tiles, from its header (no pixels read)."""
    from cellseg.core.io.header import read_header
    from cellseg.core.io.large import is_zarr, open_large

    if is_zarr(path):
        with open_large(path) as image:
            h, w = image.shape[:2]
    else:
        header = read_header(path)
        h, w = header.height, header.width
    return max(h, w) > tile.tile


# ---------------------------------------------------------------------- inference service
@dataclass(frozen=True)
class ModelSpec:
    key: str  # "cascade" or "pointrend"
    config: str
    weights: str


@dataclass(frozen=True)
class ModelInfo:
    key: str
    device: str
    class_names: tuple[str, ...]
    precision_note: str = ""  # what precision runs (and why, after a fallback to exact)
    max_detections: int = 0  # the config's TEST.DETECTIONS_PER_IMAGE cap (0: unknown)


class InferenceService(QObject):
    """Runs models on images in the background and caches their raw outputs.

    ``raw_ready(RawKey)`` when a result lands in the cache; ``error(message, RawKey|None)`` when
    a run fails; ``model_loaded(ModelInfo)`` after a model is (re)loaded;
    ``batch_progress(done, total)`` and ``batch_finished(cancelled)`` for run-all;
    ``run_progress(RawKey, stage, done, total)`` from the engine's stages and TTA passes of the
    running job (``cellseg.core.progress``) and ``run_cancelled(RawKey)`` when
    :meth:`cancel` stopped it.
    """

    raw_ready = Signal(object)
    run_progress = Signal(object, str, int, int)
    run_cancelled = Signal(object)
    error = Signal(str, object)
    model_loaded = Signal(object)
    batch_progress = Signal(int, int)
    batch_finished = Signal(bool)

    def __init__(self, device: str = "auto", parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.models = JobQueue("cellseg-models", self)
        self.light = JobQueue("cellseg-light", self)
        self.device = device
        self.precision = "exact"
        self.tiling: TileSettings | None = None
        self.specs: dict[str, ModelSpec] = {}
        self.info: dict[str, ModelInfo] = {}
        self._cache: OrderedDict[RawKey, Instances] = OrderedDict()
        self._failed: dict[RawKey, str] = {}
        # touched only from the model thread (inside jobs): loaded predictors and last image
        self._predictors: dict[tuple, Any] = {}
        self._last_image: tuple[str, np.ndarray] | None = None
        self._batch: set[RawKey] = set()
        self._batch_total = 0
        self._batch_done = 0

    # ------------------------------------------------------------------ configuration
    def set_model(self, key: str, config: str | Path, weights: str | Path) -> None:
        self.specs[key] = ModelSpec(key, str(config), str(weights))
        self.info.pop(key, None)

    def set_device(self, device: str) -> None:
        self.device = device
        self.info.clear()

    def set_tiling(self, tiling: TileSettings | None) -> None:
        """Tile images larger than ``tiling.tile`` (None: predict every image whole)."""
        self.tiling = tiling

    def set_precision(self, precision: str) -> None:
        self.precision = precision
        self.info.clear()

    def has_model(self, key: str) -> bool:
        spec = self.specs.get(key)
        return bool(spec and spec.config and spec.weights)

    def key_for(self, image: str | Path, model: str, tta: bool) -> RawKey:
        spec = self.specs.get(model) or ModelSpec(model, "", "")
        return RawKey(str(image), model, spec.config, spec.weights, self.device, bool(tta),
                      self.precision, self.tiling)

    # ------------------------------------------------------------------ cache
    def cached(self, key: RawKey) -> Instances | None:
        value = self._cache.get(key)
        if value is not None:
            self._cache.move_to_end(key)
        return value

    def failure(self, key: RawKey) -> str | None:
        return self._failed.get(key)

    def clear_failures(self) -> None:
        self._failed.clear()

    def _store(self, key: RawKey, instances: Instances) -> None:
        self._cache[key] = instances
        self._cache.move_to_end(key)
        while len(self._cache) > RAW_CACHE_SIZE:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------ requests
    def request(self, key: RawKey, front: bool = True) -> bool:
        """Queue a model run unless cached/queued/running. Returns True if work is pending."""
        if key in self._cache:
            return False
        if key == self.models.running_tag and not self.models.stopping:
            return True  # (a run being stopped does not count: the key is queued anew)
        if key in self.models.pending_tags():
            if front:
                self.models.promote(lambda tag: tag == key)
            return True
        stop = threading.Event()
        self.models.submit(lambda: self._run(key, stop), lambda result: self._done(key, result),
                           lambda message: self._fail(key, message), tag=key, front=front,
                           stop=stop)
        return True

    def queued(self, key: RawKey) -> bool:
        """A run of ``key`` is pending, or running and not being stopped."""
        return ((key == self.models.running_tag and not self.models.stopping)
                or key in self.models.pending_tags())

    def run_all(self, keys: list[RawKey]) -> int:
        """Queue every key not cached yet (behind current work); progress per finished key."""
        todo = [k for k in keys if k not in self._cache]
        self._batch = set(todo)
        self._batch_total, self._batch_done = len(todo), 0
        for k in todo:
            self.request(k, front=False)
        self.batch_progress.emit(0, self._batch_total)
        if not todo:
            self.batch_finished.emit(False)
        return len(todo)

    def cancel(self) -> int:
        """Drop every pending model run and stop the running one at the engine's next stage
        or TTA pass (``run_cancelled`` then; nothing is cached). Returns the runs dropped."""
        dropped = self.models.cancel_pending()
        self.models.stop_running()
        if self._batch_total:
            self._batch_total = 0
            self._batch.clear()
            self.batch_finished.emit(True)
        return dropped

    @property
    def busy(self) -> bool:
        return self.models.busy

    # ------------------------------------------------------------------ light jobs
    def submit_light(self, fn, on_done, on_error=None, tag=None) -> int:
        """Image loading and post-processing: never waits behind a model run. Pending light jobs
        with the same tag are superseded (only the latest request matters)."""
        if tag is not None:
            self.light.cancel_pending(lambda t: t == tag)
        return self.light.submit(fn, on_done, on_error, tag=tag)

    # ------------------------------------------------------------------ model thread side
    def _run(self, key: RawKey, stop: threading.Event) -> tuple[Instances, ModelInfo] | object:
        """The model run (model thread); :data:`CANCELLED` when ``stop`` was set meanwhile."""
        from cellseg.core.engine import PredictionCancelled

        if not (key.config and key.weights):
            raise CellsegError(f"no {key.model} model set: choose its config.yaml and "
                               "checkpoint in the Models panel")
        predictor = self.predictor(key)
        watch = dict(stop=stop.is_set,
                     # the signal is queued to the GUI thread: a handful per stage or tile
                     progress=lambda *step: self.run_progress.emit(key, *step))
        try:
            if key.tile is not None and _larger_than_a_tile(key.image, key.tile):
                result = self._run_tiled(predictor, key, watch)
            else:
                result = predictor(self._image(key.image), tta=key.tta, **watch)
        except PredictionCancelled:
            return CANCELLED
        names = tuple(getattr(predictor, "class_names", ()) or ())
        try:
            cap = int(predictor.cfg.TEST.DETECTIONS_PER_IMAGE)
        except (AttributeError, TypeError, ValueError):
            cap = 0
        return result, ModelInfo(key.model, str(predictor.device), names,
                                 precision_note=predictor.precision.note, max_detections=cap)

    def _image(self, path: str) -> np.ndarray:
        """The image, kept for the next model (the other slot runs on the same image)."""
        from cellseg.core.io import read_image

        if self._last_image is None or self._last_image[0] != path:
            self._last_image = (path, read_image(path))
        return self._last_image[1]

    @staticmethod
    def _run_tiled(predictor, key: RawKey, watch: dict) -> Instances:
        """Tile by tile, the image read a window at a time (memory-mapped or chunked where the
        file allows), one grey-level stretch for the whole image."""
        from cellseg.core.io.image import stretch_limits
        from cellseg.core.io.large import open_large
        from cellseg.core.tiling import predict_tiled

        with open_large(key.image) as image:
            return predict_tiled(predictor, image, key.tile, tta=key.tta,
                                 limits=stretch_limits(image.overview()), **watch)

    def predictor(self, key: RawKey):
        """The loaded model of ``key`` (model thread only: loads it on first use; one per slot)."""
        pkey = (key.config, key.weights, key.device, key.precision)
        predictor = self._predictors.get(pkey)
        if predictor is None:
            from cellseg.core.engine import load_predictor
            # keep one predictor per model slot: swapping a checkpoint frees the old one
            for old in [k for k in self._predictors if k[0] == key.config or k[1] == key.weights]:
                del self._predictors[old]
            predictor = load_predictor(key.config, key.weights, device=key.device,
                                       precision=key.precision)
            self._predictors[pkey] = predictor
        return predictor

    # ------------------------------------------------------------------ GUI thread side
    def _done(self, key: RawKey, result) -> None:
        if result is CANCELLED:
            self.run_cancelled.emit(key)
            self._batch_step(key)
            return
        instances, info = result
        self._failed.pop(key, None)
        self._store(key, instances)
        if self.info.get(key.model) != info:
            self.info[key.model] = info
            self.model_loaded.emit(info)
        self.raw_ready.emit(key)
        self._batch_step(key)

    def _fail(self, key: RawKey, message: str) -> None:
        self._failed[key] = message
        self.error.emit(message, key)
        self._batch_step(key)

    def _batch_step(self, key: RawKey) -> None:
        if key not in self._batch:
            return
        self._batch.discard(key)
        self._batch_done += 1
        self.batch_progress.emit(self._batch_done, self._batch_total)
        if not self._batch:
            self._batch_total = 0
            self.batch_finished.emit(False)

    def shutdown(self) -> None:
        self.models.shutdown()
        self.light.shutdown()
