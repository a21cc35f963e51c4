"""Speed estimate before a run: real training iterations, timed with the run's own settings.

``cellseg train ... --estimate`` (the Fine-tune dialog's *Measure*) builds the model, starting
weights, optimizer and data loader as the run would and times whole iterations (next batch,
forward, backward, SGD step; CUDA synchronised) on the chosen device with the run's thread
count, then multiplies by ``SOLVER.MAX_ITER``. Nothing is written.

Two choices keep one short measurement honest:

* The first iteration carries one-time costs (oneDNN primitive creation, CUDA kernel loading,
  allocator growth). It is reported, but a later iteration's time is used when there is one.
* Training sizes are random (``INPUT.MIN_SIZE_TRAIN`` sampled per image) and the time grows
  with the pixel count, so the measured images get the short edge whose square is the mean
  square of the sampled sizes (:func:`mean_area_short_edge`): an average iteration.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .augment import AugmentSettings
from .data import DataSource, TrainLoader

MIN_ITERATIONS = 2  # the first pays start-up costs; the second is the one that counts
MAX_ITERATIONS = 5
BUDGET_S = 20.0  # more iterations only while they fit in this (fast GPUs get a median of 4)


@dataclass(frozen=True)
class SpeedEstimate:
    """Measured iteration times (seconds, first one included) and what they stand for."""

    times: tuple[float, ...]
    short_edge: int
    batch: int
    device: str

    @property
    def seconds_per_iteration(self) -> float:
        """Median of the iterations after the first (the first alone if it is the only one)."""
        later = self.times[1:]
        return statistics.median(later) if later else self.times[0]

    def total_seconds(self, iterations: int) -> float:
        return self.seconds_per_iteration * max(0, int(iterations))


def mean_area_short_edge(settings: AugmentSettings) -> int:
    """The short edge with the sampling's mean pixel count: sqrt(E[s^2]) over the listed sizes
    (``choice``) or over the integers of ``[lo, hi]`` (``range``).

    Args:
        settings: the run's augmentation settings (``AugmentSettings.from_config``).
    Returns:
        a short edge in pixels (the long edge is still capped by ``max_size`` when resizing).
    """
    if settings.sampling == "range":
        lo, hi = settings.min_sizes
        sizes = range(int(lo), int(hi) + 1)
    else:
        sizes = settings.min_sizes
    return int(round(math.sqrt(statistics.fmean(float(s) ** 2 for s in sizes))))


def time_iterations(cfg, source: DataSource, weights: str | None, device: str,
                    on_iteration: Callable[[int, float], None] | None = None,
                    budget_s: float = BUDGET_S) -> SpeedEstimate:
    """Time real training iterations of the model ``cfg`` describes on ``source``.

    Args:
        cfg: the run's config (mutable clone; its short edge is fixed here, see module doc).
        source: the training data.
        weights: starting checkpoint (its detections drive the ROI heads' work) or None.
        device: ``"cpu"`` or ``"cuda"``.
        on_iteration: called with (1-based index, seconds) after each timed iteration.
        budget_s: after :data:`MIN_ITERATIONS`, go on (up to :data:`MAX_ITERATIONS`) while the
            iterations after the first took less than this in all.
    Returns:
        the measured times.
    """
    from cellseg.core.engine.meta_arch import build_model

    from .checkpointing import load_pretrained
    from .loop import backward, update
    from .solver import build_lr_scheduler, build_optimizer, gradient_clipper

    short = mean_area_short_edge(AugmentSettings.from_config(cfg))
    cfg.INPUT.MIN_SIZE_TRAIN = (short,)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    amp = bool(cfg.SOLVER.AMP.ENABLED) and dev.type == "cuda"
    model = build_model(cfg).to(dev)
    model.train()
    if weights:
        load_pretrained(model, weights)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_lr_scheduler(optimizer, cfg)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    clip = gradient_clipper(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    batch = int(cfg.SOLVER.IMS_PER_BATCH)
    loader = TrainLoader(source, cfg, batch, seed=0)
    times: list[float] = []
    while len(times) < MIN_ITERATIONS or (len(times) < MAX_ITERATIONS
                                          and sum(times[1:]) < budget_s):
        t0 = time.perf_counter()
        images, targets = next(loader)
        images = [im.to(dev) for im in images]
        targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
        with torch.autocast(dev.type, enabled=amp):
            loss_dict = model.forward_train(images, targets)
        backward(sum(loss_dict.values()), optimizer, scaler)
        update(optimizer, scheduler, scaler, clip, params)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)  # kernels run asynchronously: time their end
        times.append(time.perf_counter() - t0)
        if on_iteration is not None:
            on_iteration(len(times), times[-1])
    return SpeedEstimate(tuple(times), short, batch, str(dev))


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 20 min"``, ``"2 d 7 h"``."""
    s = int(round(max(seconds, 0)))
    if s < 90:
        return f"{s} s"
    if s < 90 * 60:
        return f"{round(s / 60)} min"
    if s < 48 * 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


__all__ = ["SpeedEstimate", "mean_area_short_edge", "time_iterations", "format_duration"]
