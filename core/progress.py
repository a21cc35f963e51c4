"""Observing and stopping a prediction between its stages.

The engine calls :func:`checkpoint` after each stage of a forward pass (backbone, proposals,
each box stage, mask head, each PointRend subdivision step) and test-time augmentation after
each of its passes. Nothing happens unless a caller wrapped the prediction in
:func:`monitored`: then its ``progress(stage, done, total)`` hears about the stage and its
``stop()`` may end the prediction there with :class:`PredictionCancelled`.

The monitor travels in a context variable rather than as an argument through every head: the
heads keep their upstream signatures, each thread (the app's model thread, a CLI) has its own
monitor, and an unobserved prediction pays one ``ContextVar.get`` per stage. It lives outside
``core.engine`` so that the app can name the stages without importing torch at start-up.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator

ProgressFn = Callable[[str, int, int], None]
StopFn = Callable[[], bool]

# stage names a progress callback receives
BACKBONE = "backbone"
PROPOSALS = "proposals"
BOX_HEAD = "box head"  # done/total: cascade stage k of n (1/1 for a standard head)
MASK_HEAD = "mask head"  # done/total: Mask R-CNN head layer k of n (PointRend's coarse head: 1/1)
SUBDIVISION = "subdivision"  # done/total: PointRend's point head, subdivision step k of n
TTA_PASS = "TTA pass"  # done/total: test-time augmentation passes finished (0 before the first)
TILE = "tile"  # done/total: tiles of a tiled prediction finished (0 before the first)


class PredictionCancelled(Exception):
    """The caller's ``stop()`` asked a prediction to end; raised between two stages.

    Not a :class:`~cellseg.core.errors.CellsegError`: nothing went wrong.
    """


@dataclass(frozen=True)
class Monitor:
    """What a caller observes a prediction with; both parts are optional.

    Args:
        progress: called on the predicting thread as ``progress(stage, done, total)`` after
            each stage (stage names are this module's constants).
        stop: polled after each stage; True ends the prediction with PredictionCancelled.
    """

    progress: ProgressFn | None = None
    stop: StopFn | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)
        if self.stop is not None and self.stop():
            raise PredictionCancelled(f"prediction cancelled after {stage} {done}/{total}")


_monitor: ContextVar[Monitor | None] = ContextVar("cellseg_prediction_monitor", default=None)


def checkpoint(stage: str, done: int = 1, total: int = 1) -> None:
    """The engine's hook between stages: report to and poll the current monitor, if any.

    Raises:
        PredictionCancelled: the monitor's ``stop()`` returned True.
    """
    monitor = _monitor.get()
    if monitor is not None:
        monitor(stage, done, total)


@contextmanager
def monitored(progress: ProgressFn | None = None, stop: StopFn | None = None) -> Iterator[None]:
    """Observe (``progress``) and allow stopping (``stop``) the predictions run inside.

    Raises:
        PredictionCancelled: at once if ``stop()`` is already True, else from the first stage
            after it becomes True.
    """
    monitor = Monitor(progress, stop) if (progress or stop) else None
    if stop is not None and stop():
        raise PredictionCancelled("prediction cancelled before it started")
    token = _monitor.set(monitor)
    try:
        yield
    finally:
        _monitor.reset(token)
