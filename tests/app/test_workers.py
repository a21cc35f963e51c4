"""The background job queues and the inference service, with real files and real models."""
from __future__ import annotations

import threading

import pytest
import tifffile

from cellseg.app.workers import InferenceService, JobQueue
from cellseg.core.errors import ImageReadError
from cellseg.core.io import read_image
from cellseg.core.structures import Instances


@pytest.fixture
def queue(qtbot):
    q = JobQueue("test-queue")
    yield q
    q.shutdown()


@pytest.fixture
def service(qtbot):
    s = InferenceService("cpu")
    yield s
    s.shutdown()


def test_queue_runs_off_the_gui_thread_in_order_with_front_jobs_first(queue, qtbot):
    gate = threading.Event()
    seen, threads = [], []

    def job(name):
        def run():
            if name == "first":
                gate.wait(10)  # hold the worker so the rest stay pending
            threads.append(threading.current_thread().name)
            return name
        return run

    for name in ("first", "second", "third"):
        queue.submit(job(name), seen.append, tag=name)
    queue.submit(job("urgent"), seen.append, tag="urgent", front=True)
    assert queue.pending_tags() == ["urgent", "second", "third"]
    assert queue.cancel_pending(lambda tag: tag == "third") == 1
    gate.set()
    with qtbot.waitSignal(queue.idle, timeout=10000):
        pass
    assert seen == ["first", "urgent", "second"]
    assert threading.main_thread().name not in threads


def test_queue_reports_a_real_error_and_keeps_serving(queue, qtbot, tmp_path, nuclei_dir):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 this is not a tiff")
    errors, results = [], []
    queue.submit(lambda: read_image(broken), results.append, errors.append)
    queue.submit(lambda: read_image(nuclei_dir / "img2d.tif").shape, results.append, errors.append)
    with qtbot.waitSignal(queue.idle, timeout=10000):
        pass
    assert len(errors) == 1 and "broken.tif" in errors[0]
    assert results == [(512, 512)]
    with pytest.raises(ImageReadError):  # the same error the user sees, raised directly
        read_image(broken)


def test_bad_checkpoint_then_good_model_and_cache(service, qtbot, tmp_path, fast_cascade,
                                                  crop_folder):
    config, weights = fast_cascade
    image = crop_folder / "crop_a.tif"
    garbage = tmp_path / "model_final.pth"
    garbage.write_bytes(b"\x80\x02 definitely not a checkpoint")
    service.set_model("cascade", config, garbage)
    key = service.key_for(image, "cascade", tta=False)
    with qtbot.waitSignal(service.error, timeout=60000) as err:
        assert service.request(key)
    message, failed_key = err.args
    assert str(garbage) in message and failed_key == key
    assert service.failure(key) == message and service.cached(key) is None

    service.set_model("cascade", config, weights)
    good = service.key_for(image, "cascade", tta=False)
    assert good != key  # the weights are part of the cache key
    with qtbot.waitSignal(service.raw_ready, timeout=120000) as ready:
        service.request(good)
    assert ready.args == [good]
    raw = service.cached(good)
    assert isinstance(raw, Instances) and len(raw) > 0
    assert raw.image_size == tifffile.imread(image).shape
    assert service.info["cascade"].device == "cpu"
    assert len(service.info["cascade"].class_names) == 4
    assert service.request(good) is False  # cached: no second run


def test_run_all_progress_and_cancel(service, qtbot, fast_cascade, crop_folder):
    service.set_model("cascade", *fast_cascade)
    images = sorted(crop_folder.glob("*.tif"))
    keys = [service.key_for(p, "cascade", tta=False) for p in images]
    progress, cancelled, errors = [], [], []
    service.batch_progress.connect(lambda d, t: progress.append((d, t)))
    service.run_cancelled.connect(cancelled.append)
    service.error.connect(lambda message, key: errors.append(message))
    with qtbot.waitSignal(service.raw_ready, timeout=120000):
        assert service.run_all(keys) == len(keys)
    assert service.models.running_tag == keys[1]  # the next image started at once
    with qtbot.waitSignal(service.batch_finished, timeout=10000) as finished:
        service.cancel()
    assert finished.args == [True]
    assert progress[0] == (0, len(keys)) and (1, len(keys)) in progress
    with qtbot.waitSignal(service.models.idle, timeout=120000, raising=False):
        pass
    # the running image was stopped between two stages, the pending one dropped
    assert [k for k in keys if service.cached(k) is not None] == keys[:1]
    assert cancelled == [keys[1]] and errors == []
    assert service.failure(keys[1]) is None
    assert service.request(keys[1]) and service.models.running_tag == keys[1]  # runs again
    with qtbot.waitSignal(service.raw_ready, timeout=120000):
        pass
    assert service.cached(keys[1]) is not None


class _LibraryAbort(BaseException):
    """What some libraries raise to unwind (not an Exception subclass)."""


def test_queue_reports_base_exceptions_and_keeps_serving(queue, qtbot):
    def abort():
        raise _LibraryAbort("worker aborted by a library")

    def generator_exit():
        raise GeneratorExit

    errors, results = [], []
    queue.submit(abort, results.append, errors.append)
    queue.submit(generator_exit, results.append, errors.append)
    queue.submit(lambda: "still serving", results.append, errors.append)
    with qtbot.waitSignal(queue.idle, timeout=10000):
        pass
    assert results == ["still serving"]
    assert len(errors) == 2
    assert "_LibraryAbort: worker aborted by a library" in errors[0]
    assert errors[1].startswith("GeneratorExit")
    assert queue.pending_tags() == []
