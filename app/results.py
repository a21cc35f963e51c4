"""What the canvas shows for the current image: composed model results, runs and their cancels.

:class:`ResultsController` asks :class:`InferenceService` for the raw outputs an image needs
(the current one first, the next one prefetched), composes them with
``core.postprocess.pipeline.compose`` in the light thread (the overlay's label image is laid out
there too) and hands the result to the window. With TTA the plain prediction is shown first and
replaced when TTA finishes. A run the user cancelled is not queued again for the current image
until Run (or another image), so that a threshold change does not restart a cancelled TTA.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import QObject

from cellseg.core.postprocess.pipeline import Settings
from cellseg.core.structures import Instances

from .canvas.overlay import prepare_labels
from .workers import RawKey

# what the status bar's result label says while / after test-time augmentation runs
PLAIN_WHILE_TTA = "plain prediction shown; TTA running..."
PLAIN_TTA_CANCELLED = "plain prediction shown; TTA cancelled"
TTA_SHOWN = "TTA"
RUN_CANCELLED = "run cancelled: Run (Ctrl+Return) runs it again"


def compose_raw(raw: dict[str, Instances], settings: Settings):
    """Post-process raw model outputs with the panel's settings, and lay out the overlay's label
    image for the result: both O(pixels)/O(instances) work, run in the light thread."""
    from cellseg.core.postprocess.pipeline import compose

    instances = compose(raw, settings)
    return instances, prepare_labels(instances, instances.image_size)


class ResultsController(QObject):
    """The current image's composed result, and the runs that make it.

    Args:
        window: the review window: its ``service`` (model threads and raw-output cache),
            ``post_panel`` (models, TTA, post-processing), ``image_list``, status bar, and
            ``show_instances`` / ``show_error`` / ``is_edited`` / ``is_reviewed``.
    """

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.service = window.service
        self.composed: dict[int, tuple[object, Instances]] = {}  # index -> (compose key, result)
        self.prepared = None  # (instances, labels+codes) of the latest composed result
        self.wanted = None  # compose key of what the canvas should show
        self.wanted_label = ""  # the result label that goes with it
        self.cancelled_keys: set[RawKey] = set()
        s = self.service
        s.raw_ready.connect(self._raw_ready)
        s.error.connect(self._model_error)
        s.run_cancelled.connect(self._run_cancelled)

    def clear(self) -> None:
        """A new image list: nothing composed, nothing cancelled."""
        self.composed.clear()
        self.cancelled_keys.clear()
        self.wanted = None

    def take_prepared(self, instances: Instances | None):
        """The overlay labels laid out with ``instances`` (once: tools may paint into the
        overlay's label image afterwards), or None."""
        if self.prepared is not None and self.prepared[0] is instances:
            prepared, self.prepared = self.prepared[1], None
            return prepared
        return None

    # ================================================================== keys
    def keys(self, index: int) -> list[RawKey]:
        path = self.window.source.entries[index].path
        panel = self.window.post_panel
        return [self.service.key_for(path, m, panel.tta.isChecked()) for m in panel.models()]

    def compose_key(self, index: int, keys: list[RawKey] | None = None):
        keys = self.keys(index) if keys is None else keys
        return tuple(keys), self.window.post_panel.settings().pipeline()

    def _status(self, message: str, ms: int = 0) -> None:
        self.window.statusBar().showMessage(message, ms)

    # ================================================================== commands
    def run_current(self) -> None:
        """Run (or re-try after an error or a cancel) the chosen models on the current image."""
        self.cancelled_keys.clear()
        self.service.clear_failures()
        self.window.banner.hide()
        self.refresh(force=True)

    def run_all(self) -> None:
        w = self.window
        if w.source is None:
            return
        self.cancelled_keys.clear()
        self.service.clear_failures()
        keys = [self.service.key_for(e.path, m, w.post_panel.tta.isChecked())
                for e in w.source.entries for m in w.post_panel.models()
                if self.service.has_model(m)]
        if not keys:
            w.show_error("set the models first (Models panel)")
            return
        if self.service.run_all(keys):
            w.models_panel.set_batch(0, len(keys), True)

    def cancel(self) -> None:
        """Stop the model runs: the running one at its next stage or TTA pass, the rest
        (prefetch, batch) before they start. What is on the canvas stays."""
        w = self.window
        if w.source is not None and 0 <= w.index < len(w.source.entries):
            keys = self.keys(w.index)
            keys += [replace(k, tta=False) for k in keys if k.tta]
            self.cancelled_keys |= {k for k in keys if self.service.queued(k)}
        self.service.cancel()

    # ================================================================== results
    def refresh(self, force: bool = False) -> None:
        """Bring the canvas up to date with the current settings: show the composed result,
        compose it from cached raw outputs, or queue the model runs it needs."""
        w = self.window
        if w.source is None or w.index < 0 or w.image is None:
            return
        i = w.index
        if w.is_edited(i):
            w.result_label.setText("")
            w.show_instances(w.edited_instances(i))
            return
        models = w.post_panel.models()
        missing = [m for m in models if not self.service.has_model(m)]
        if missing:
            self.wanted = None
            w.show_instances(None)
            hint = "set the " + " and ".join(missing) + " model (Model menu or Models panel)"
            if len(missing) < len(models):  # an ensemble with one model
                w.show_error("Ensemble fuses the Cascade and PointRend models' predictions: "
                             f"{hint}, or choose the model you have under Post-processing > "
                             "Model. No cells are shown meanwhile.")
            self._status(hint)
            return
        keys = self.keys(i)
        failures = [self.service.failure(k) for k in keys if self.service.failure(k)]
        if failures and not force:
            w.show_instances(None)
            w.show_error(failures[0])  # Run (or new model paths) retries
            return
        raws = {k.model: self.service.cached(k) for k in keys}
        if any(v is None for v in raws.values()):
            self._run_missing(i, keys, raws)
            return
        mismatch = self._class_sets_differ([k.model for k in keys])
        if mismatch:
            self.wanted = None
            w.show_instances(None)
            w.show_error(mismatch)
            return
        self._compose(i, raws, show=True, label=TTA_SHOWN if keys[0].tta else "")
        self._prefetch(i + 1)

    def _class_sets_differ(self, models: list[str]) -> str:
        """A message when an ensemble's models predict different class sets (Weighted Boxes
        Fusion would fuse class k of one model with class k of the other), else ""."""
        infos = [self.service.info.get(m) for m in models]
        if len(models) < 2 or any(info is None for info in infos):
            return ""
        names = [tuple(info.class_names) for info in infos]
        if len(set(names)) == 1:
            return ""
        listed = "; ".join(f"{m}: {len(n)} ({', '.join(n[:6])}{', …' if len(n) > 6 else ''})"
                           for m, n in zip(models, names))
        return ("Ensemble needs models that predict the same classes, but they differ — "
                f"{listed}. Choose one model under Post-processing > Model, or set models "
                "trained on the same classes.")

    def _run_missing(self, i: int, keys: list[RawKey], raws: dict) -> None:
        """Queue the model runs the current image lacks. With TTA, the plain run goes first
        and its result is shown until TTA (10-20x longer) replaces it."""
        plain = [replace(k, tta=False) for k in keys if k.tta]
        plain_raws = {k.model: self.service.cached(k) for k in plain}
        stopped = self.cancelled_keys

        def request_plain():
            for k in plain:
                if (plain_raws[k.model] is None and self.service.failure(k) is None
                        and k not in stopped):
                    self.service.request(k, front=True)

        request_plain()  # starts at once when the model thread is idle ...
        for k in keys:
            if raws[k.model] is None and k not in stopped:
                self.service.request(k, front=True)
        request_plain()  # ... and otherwise is moved ahead of the TTA runs
        cancelled = any(raws[k.model] is None and k in stopped for k in keys)
        if not cancelled:
            self.window.image_list.set_status(i, "running")
        if plain and all(v is not None for v in plain_raws.values()):
            label = PLAIN_TTA_CANCELLED if cancelled else PLAIN_WHILE_TTA
            self._compose(i, plain_raws, show=True, keys=plain, label=label)
            self._status(RUN_CANCELLED if cancelled else PLAIN_WHILE_TTA)
            return
        if cancelled:
            self._status(RUN_CANCELLED)
            return
        self._status("running " + ", ".join(
            k.model + (" +TTA" if k.tta else "") for k in keys if raws[k.model] is None))

    def _compose(self, index: int, raws: dict, show: bool, keys: list[RawKey] | None = None,
                 label: str = "") -> None:
        ckey = self.compose_key(index, keys)
        if show:
            self.wanted, self.wanted_label = ckey, label
        done = self.composed.get(index)
        if done is not None and done[0] == ckey:
            if show:
                self.window.result_label.setText(label)
                self.window.show_instances(done[1])
            return
        settings = self.window.post_panel.settings().pipeline()
        self.service.submit_light(
            lambda: compose_raw(raws, settings),
            lambda result: self._composed_done(index, ckey, *result),
            lambda msg: self.window.show_error(f"post-processing failed: {msg}"),
            tag=("compose", index))

    def _composed_done(self, index: int, ckey, instances: Instances, prepared=None) -> None:
        w = self.window
        self.composed[index] = (ckey, instances)
        if prepared is not None:
            self.prepared = (instances, prepared)
        if not w.is_edited(index) and not w.is_reviewed(index):
            w.image_list.set_status(index, "predicted", len(instances))
        if index == w.index and ckey == self.wanted and not w.is_edited(index):
            w.result_label.setText(self.wanted_label)  # before: listeners read it
            w.show_instances(instances)

    def _raw_ready(self, key: RawKey) -> None:
        w = self.window
        if w.source is None:
            return
        for i, entry in enumerate(w.source.entries):
            if str(entry.path) != key.image:
                continue
            if i == w.index:
                self.refresh()
            elif not w.is_edited(i):  # batch or prefetch: compose for the list's count
                keys = self.keys(i)
                raws = {k.model: self.service.cached(k) for k in keys}
                if all(v is not None for v in raws.values()):
                    self._compose(i, raws, show=False)

    def _prefetch(self, index: int) -> None:
        w = self.window
        if w.source is None or not 0 <= index < len(w.source.entries):
            return
        for k in self.keys(index):
            if self.service.cached(k) is None and self.service.failure(k) is None:
                self.service.request(k, front=False)

    # ================================================================== run events
    def _run_cancelled(self, key: RawKey) -> None:
        """A run stopped by Cancel: nothing cached, no error; the canvas keeps what it shows
        (e.g. the plain prediction while TTA ran)."""
        w = self.window
        i = w.index
        if self.service.queued(key) or key.image != w.current_path():
            return  # run again meanwhile, or another image's (the batch says it was cancelled)
        self.cancelled_keys.add(key)
        if self.wanted_label == PLAIN_WHILE_TTA:
            self.wanted_label = PLAIN_TTA_CANCELLED
        if w.result_label.text() == PLAIN_WHILE_TTA:
            w.result_label.setText(PLAIN_TTA_CANCELLED)
        if not w.is_edited(i) and not w.is_reviewed(i):
            shown = w.current_instances()
            if shown is not None:
                w.image_list.set_status(i, "predicted", len(shown))
            else:
                w.image_list.set_status(i, "not run")
        self._status(RUN_CANCELLED, 10000)

    def _model_error(self, message: str, key: RawKey | None) -> None:
        w = self.window
        current = w.current_path()
        if key is not None and w.source is not None:
            for i, e in enumerate(w.source.entries):
                if str(e.path) == key.image:
                    w.image_list.set_status(i, "error", tooltip=message)
        if key is None or key.image == current:
            w.show_error(message)
        else:  # a prefetch or batch job for another image: the list shows it, no banner
            self._status(f"{Path(key.image).name}: {message}", 10000)
