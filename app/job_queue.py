"""A serial job queue on a QThread: the app's model thread and light thread are two of them.

The queue is managed on the GUI thread; the worker thread only ever holds the one job it is
running. That keeps reordering (run-now jumps ahead of prefetch), cancelling (drop what is
pending) and de-duplication free of locks. Errors in a job come back as a one-line message;
the thread keeps serving. A running job can be asked to stop through its ``threading.Event``.
"""
from __future__ import annotations

import itertools
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from cellseg.core.errors import CellsegError


class _Runner(QObject):
    """Lives in the worker thread; runs one callable per call."""

    finished = Signal(int, object)
    failed = Signal(int, str)

    @Slot(int, object)
    def run(self, job_id: int, fn: Callable[[], Any]) -> None:
        try:
            result = fn()
        except (KeyboardInterrupt, SystemExit):
            raise  # the user or the interpreter is stopping the program: let it stop
        except BaseException as exc:  # noqa: BLE001 - every other failure becomes a message
            # (GeneratorExit, a library's BaseException subclass...): the queue must go on
            self.failed.emit(job_id, describe_error(exc))
            return
        self.finished.emit(job_id, result)


def describe_error(exc: BaseException) -> str:
    """One line a user can act on."""
    if isinstance(exc, CellsegError):
        return str(exc)
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
            return ("out of GPU memory: choose the CPU device or close other GPU programs "
                    f"({str(exc).splitlines()[0]})")
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, MemoryError):
        return "out of memory while processing this image"
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    site = f" (at {Path(where.filename).name}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{site}"


@dataclass
class _Job:
    id: int
    fn: Callable[[], Any]
    on_done: Callable[[Any], None] | None
    on_error: Callable[[str], None] | None
    tag: Any = None
    stop: threading.Event | None = None  # set to ask the running job to end early


_gui_thread_gc = None


def collect_garbage_on_gui_thread() -> None:
    """Run Python's cyclic garbage collector only on the GUI thread (once per process).

    With worker threads, an automatic collection can start in a worker and destroy Qt widgets
    that ended up in reference cycles there; PySide then dead-locks (seen here: a worker
    building a model froze the app). pyqtgraph's GarbageCollector turns automatic collection
    off and collects from a QTimer on the GUI thread instead.
    """
    global _gui_thread_gc
    if _gui_thread_gc is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _gui_thread_gc = GarbageCollector(interval=1.0)


class JobQueue(QObject):
    """One background thread running submitted callables in order, one at a time."""

    _start = Signal(int, object)
    started = Signal(object)  # the tag of the job that starts running
    idle = Signal()
    job_failed = Signal(str)  # any job's error message (besides its own on_error)

    _ids = itertools.count(1)

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        collect_garbage_on_gui_thread()
        self._thread = QThread()
        self._thread.setObjectName(name)
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._start.connect(self._runner.run)
        self._runner.finished.connect(self._finished)
        self._runner.failed.connect(self._failed)
        self._pending: deque[_Job] = deque()
        self._running: _Job | None = None
        self._thread.start()

    def submit(self, fn: Callable[[], Any], on_done=None, on_error=None, tag=None,
               front: bool = False, stop: threading.Event | None = None) -> int:
        """Queue ``fn``; ``stop`` is the event :meth:`stop_running` sets (``fn`` polls it)."""
        job = _Job(next(self._ids), fn, on_done, on_error, tag, stop)
        (self._pending.appendleft if front else self._pending.append)(job)
        self._next()
        return job.id

    def cancel_pending(self, predicate: Callable[[Any], bool] = lambda tag: True) -> int:
        keep = deque(j for j in self._pending if not predicate(j.tag))
        dropped = len(self._pending) - len(keep)
        self._pending = keep
        return dropped

    def stop_running(self) -> bool:
        """Ask the running job to end early (True if it can be asked: it has a stop event).
        Its on_done/on_error still come, with whatever the job returns or raises."""
        if self._running is None or self._running.stop is None:
            return False
        self._running.stop.set()
        return True

    @property
    def stopping(self) -> bool:
        """The running job was asked to stop (its result is on the way)."""
        return bool(self._running and self._running.stop and self._running.stop.is_set())

    def promote(self, predicate: Callable[[Any], bool]) -> bool:
        """Move pending jobs whose tag matches to the front; True if any."""
        hit = [j for j in self._pending if predicate(j.tag)]
        if hit:
            self._pending = deque(hit + [j for j in self._pending if not predicate(j.tag)])
        return bool(hit)

    def pending_tags(self) -> list:
        return [j.tag for j in self._pending]

    @property
    def running_tag(self):
        return self._running.tag if self._running else None

    @property
    def busy(self) -> bool:
        return self._running is not None or bool(self._pending)

    def _next(self) -> None:
        if self._running is None and self._pending:
            self._running = self._pending.popleft()
            self._start.emit(self._running.id, self._running.fn)
            self.started.emit(self._running.tag)

    @Slot(int, object)
    def _finished(self, job_id: int, result) -> None:
        job, self._running = self._running, None
        try:
            if job is not None and job.on_done is not None:
                job.on_done(result)
        finally:
            self._after()

    @Slot(int, str)
    def _failed(self, job_id: int, message: str) -> None:
        job, self._running = self._running, None
        try:
            if job is not None and job.on_error is not None:
                job.on_error(message)
            self.job_failed.emit(message)
        finally:
            self._after()

    def _after(self) -> None:
        self._next()
        if not self.busy:
            self.idle.emit()

    def shutdown(self, wait_ms: int = 30000) -> None:
        self._pending.clear()
        self.stop_running()  # a model run ends at its next stage instead of running out
        self._thread.quit()
        self._thread.wait(wait_ms)
