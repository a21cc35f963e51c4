"""Train > Fine-tune...: a dialog that starts ``cellseg train`` in a QProcess and follows it.

The dialog exports the project's reviewed images with a reproducible train/validation split
(``cellseg.trainer.project_data``), builds the command line from the chosen model, starting
weights and key settings, and runs it as a separate process (the GUI stays responsive and a
crash of the training cannot take the app down). The live panel polls the run folder's
``metrics.json`` for the progress bar and the loss and AP curves (pyqtgraph), shows the tail of
the log. Stop writes the run's ``STOP`` file: the trainer abandons the iteration in progress at
the next layer, saves the last completed one and exits; if it has not ended after
``STOP_GRACE_S`` (a trainer stuck outside the model, or still starting) the process is ended
and the log names the last checkpoint written. Checkpoints are written to a temporary file and
renamed, so an ended process never leaves a half-written one in their place. At the end the
panel shows AP before/after on the validation images and offers to load the new weights into
the window. Before starting, *Measure* times real iterations of the chosen settings
(``training_estimate``).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from PySide6.QtCore import QObject
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDoubleSpinBox, QFormLayout,
                               QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSpinBox,
                               QStackedWidget, QVBoxLayout, QWidget)

from . import file_dialogs
from . import training_recipe as recipe
from .training_estimate import EstimateRow
from .training_panel import SAVE_GRACE_S, TrainingPanel
from .training_run import TrainingJob, TrainingRunner, mask_head_key, parse_extra

class FineTuneDialog(QDialog):
    """Model, starting weights, project data + split, key settings, output folder -> panel."""

    def __init__(self, window=None, parent=None, poll_ms: int = 1000):
        super().__init__(parent or window)
        self.window = window
        self.setWindowTitle("Fine-tune a model on reviewed images")
        self.resize(1000, 760)
        self.stack = QStackedWidget()
        self.form_page = QWidget()
        self.panel = TrainingPanel(self, poll_ms)
        self.panel.load_requested.connect(self._load_weights)
        self.panel.settings_requested.connect(self._back_to_settings)
        self.stack.addWidget(self.form_page)
        self.stack.addWidget(self.panel)
        self.error = QLabel()
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)
        lay = QVBoxLayout(self)
        lay.addWidget(self.stack)
        self._build_form()
        self.split = None
        self.log_period: int | None = None  # None: about 50 points per curve, at most every 20

    def _path_row(self, edit: QLineEdit, caption: str, pattern: str | None, folder=False):
        row = QHBoxLayout()
        row.addWidget(edit, 1)
        button = QPushButton("Browse...")

        def browse():
            if folder:
                path = file_dialogs.get_existing_directory(self, caption, edit.text())
            elif pattern and "save" in caption:
                path, _ = file_dialogs.get_save_file_name(self, caption, edit.text(), pattern)
            else:
                path, _ = file_dialogs.get_open_file_name(self, caption, edit.text(), pattern or "")
            if path:
                edit.setText(path)

        button.clicked.connect(browse)
        row.addWidget(button)
        return row

    def _build_form(self) -> None:
        model = QGroupBox("Model")
        f = QFormLayout(model)
        self.config_edit = QLineEdit()
        self.weights_edit = QLineEdit()
        self.weights_edit.setPlaceholderText("empty = train from scratch")
        if self.window is not None and hasattr(self.window, "settings"):
            for key in ("cascade", "pointrend"):
                config, weights = self.window.settings.model_paths(key)
                if config and weights:
                    self.config_edit.setText(config)
                    self.weights_edit.setText(weights)
                    break
        f.addRow("Config (Detectron2 YAML)", self._path_row(self.config_edit, "Model config",
                                                            "YAML (*.yaml *.yml)"))
        f.addRow("Starting weights", self._path_row(self.weights_edit, "Starting weights",
                                                    "Checkpoint (*.pth *.pkl)"))
        data = QGroupBox("Data: the project's reviewed images")
        f = QFormLayout(data)
        self.project_edit = QLineEdit()
        store = getattr(getattr(self.window, "editing", None), "store", None)
        if store is not None:
            self.project_edit.setText(str(store.path))
        f.addRow("Project", self._path_row(self.project_edit, "Project",
                                           "cellseg project (*.cellseg *.db);;All files (*)"))
        self.val_fraction = QDoubleSpinBox()
        self.val_fraction.setRange(0.0, 0.9)
        self.val_fraction.setSingleStep(0.05)
        self.val_fraction.setValue(0.2)
        self.split_seed = QSpinBox()
        self.split_seed.setRange(0, 2 ** 31 - 1)
        f.addRow("Validation fraction", self.val_fraction)
        f.addRow("Split seed (same seed = same split)", self.split_seed)
        settings = QGroupBox("Settings (defaults: the research report's recipe for cells)")
        f = QFormLayout(settings)
        self.max_iter = QSpinBox()
        self.max_iter.setRange(1, 10_000_000)
        self.max_iter.setValue(20000)
        self.base_lr = QDoubleSpinBox()
        self.base_lr.setDecimals(6)
        self.base_lr.setRange(1e-7, 1.0)
        self.base_lr.setSingleStep(1e-4)
        self.base_lr.setValue(1e-4)
        self.batch = QSpinBox()
        self.batch.setRange(1, 1024)
        self.batch.setValue(4)
        self.checkpoint_period = QSpinBox()
        self.checkpoint_period.setRange(1, 10_000_000)
        self.checkpoint_period.setValue(5000)
        self.eval_period = QSpinBox()
        self.eval_period.setRange(0, 10_000_000)
        self.eval_period.setValue(1000)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda"])
        self.extra = QLineEdit()
        self.extra.setPlaceholderText("more config overrides: KEY VALUE ... "
                                      "e.g. INPUT.MIN_SIZE_TRAIN (512,768)")
        for label, w in (("Iterations", self.max_iter), ("Base learning rate", self.base_lr),
                         ("Images per batch", self.batch),
                         ("Checkpoint every", self.checkpoint_period),
                         ("Evaluate every (0 = at the end)", self.eval_period),
                         ("Device", self.device), ("Advanced", self.extra)):
            f.addRow(label, w)
        out = QGroupBox("Output")
        f = QFormLayout(out)
        self.output_edit = QLineEdit(recipe.remembered_folder(self.window))
        f.addRow("Run folder", self._path_row(self.output_edit, "Run folder", None, folder=True))
        self.resume = QCheckBox("Resume the run in this folder (from its last checkpoint)")
        f.addRow(self.resume)
        self.cpu_preset = QPushButton("CPU-sized run (300 iterations, 1 image per batch)")
        self.cpu_preset.setToolTip("The default recipe (20,000 iterations) suits a GPU; on a "
                                   "CPU one iteration takes about a minute.")
        self.cpu_preset.clicked.connect(lambda: recipe.apply_cpu_preset(self))
        f.addRow(self.cpu_preset)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #8a5a00")
        self.estimate = EstimateRow()
        self.estimate.measure_requested.connect(self.measure)
        # a new iteration count re-multiplies; a cost-relevant setting makes the estimate stale
        for w in (self.config_edit, self.weights_edit, self.project_edit, self.extra):
            w.textChanged.connect(self._refresh_estimate)
        for w in (self.max_iter, self.batch, self.val_fraction, self.split_seed):
            w.valueChanged.connect(self._refresh_estimate)
        self.device.currentTextChanged.connect(self._refresh_estimate)
        self.start_button = QPushButton("Start training")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        lay = QVBoxLayout(self.form_page)
        for w in (model, data, settings, out, self.estimate, self.warning, self.error):
            lay.addWidget(w)
        lay.addStretch(1)
        lay.addWidget(self.start_button)

    # ------------------------------------------------------------------ actions
    def job(self) -> TrainingJob:
        """Validate the form, export the split; raises ValueError / CellsegError."""
        output = self.output_edit.text().strip()
        self._check_inputs()
        if not output:
            raise ValueError("choose a run folder for the output")
        job = self._job(output, Path(output) / "data")
        recipe.remember_folder(self.window, output)
        return job

    def _check_inputs(self) -> None:
        config = self.config_edit.text().strip()
        weights = self.weights_edit.text().strip()
        if not config or not Path(config).is_file():
            raise ValueError(f"model config not found: {config or '(empty)'}")
        if weights and not Path(weights).is_file():
            raise ValueError(f"starting weights not found: {weights}")
        if not self.project_edit.text().strip():
            raise ValueError("choose the project whose reviewed images to train on")

    def _job(self, output: str, data_dir: Path) -> TrainingJob:
        """The job of the checked form with ``output`` as run folder, its data exported to
        ``data_dir`` (:meth:`_check_inputs` first)."""
        from cellseg.trainer.project_data import write_project_split

        config = self.config_edit.text().strip()
        project = self.project_edit.text().strip()
        weights = self.weights_edit.text().strip() or None
        extra = parse_extra(self.extra.text())
        warmup = recipe.fitted_warmup(config, self.max_iter.value(), extra)
        self.warning.setText("" if warmup is None else
                             f"The config's warm-up is {warmup[0]} iterations, more than half "
                             f"of this {self.max_iter.value()}-iteration run (the learning rate "
                             f"would stay near zero): shortened to {warmup[1]}.")
        if warmup is not None:
            extra = extra + [("SOLVER.WARMUP_ITERS", str(warmup[1]))]
        self.split = write_project_split(project, data_dir, self.val_fraction.value(),
                                         self.split_seed.value())
        return TrainingJob(
            config=config, output=output, train_json=str(self.split.train_json),
            val_json=str(self.split.val_json) if self.split.val_json else None,
            image_root=str(self.split.image_root), weights=weights,
            max_iter=self.max_iter.value(), base_lr=self.base_lr.value(),
            batch=self.batch.value(), checkpoint_period=self.checkpoint_period.value(),
            eval_period=self.eval_period.value(), device=self.device.currentText(),
            log_period=self.log_period or max(1, min(20, self.max_iter.value() // 50)),
            extra=extra, resume=self.resume.isChecked())

    def start(self) -> bool:
        from cellseg.core.errors import CellsegError

        try:
            job = self.job()
        except (ValueError, CellsegError) as exc:
            self.error.setText(str(exc))
            return False
        self.error.setText("")
        self.estimate.cancel()  # the run needs the cores the measurement would take
        self.stack.setCurrentWidget(self.panel)
        self.panel.start(job)
        return True

    def cost_settings(self) -> tuple:
        """What the time of one iteration depends on (the iteration count only multiplies)."""
        return (self.config_edit.text().strip(), self.weights_edit.text().strip(),
                self.project_edit.text().strip(), self.val_fraction.value(),
                self.split_seed.value(), self.batch.value(), self.device.currentText(),
                self.extra.text().split())

    def measure(self) -> bool:
        """Start timing real iterations of the form's settings (in a separate process, on the
        training images exported to a temporary folder); False if the form is incomplete."""
        from cellseg.core.errors import CellsegError

        tmp = tempfile.TemporaryDirectory(prefix="cellseg-estimate-")
        try:
            self._check_inputs()
            job = self._job("", Path(tmp.name))
        except (ValueError, CellsegError) as exc:
            tmp.cleanup()
            self.estimate.error(str(exc))
            return False
        self.estimate.start(job.arguments(estimate=True), self.cost_settings(), tmp)
        self._refresh_estimate()
        return True

    def _refresh_estimate(self, *_) -> None:
        self.estimate.refresh(self.max_iter.value(), self.cost_settings())

    def _back_to_settings(self, resumable: bool) -> None:
        self.resume.setChecked(resumable)
        self.stack.setCurrentWidget(self.form_page)

    def _load_weights(self, config: str, weights: str) -> None:
        if self.window is not None and hasattr(self.window, "set_model"):
            self.window.set_model(mask_head_key(config), config, weights)
            self.panel.status.setText(f"loaded {weights} into the app")

    def closeEvent(self, event) -> None:
        self.estimate.cancel()
        process = self.panel.runner.process
        if self.panel.runner.running():  # never leave an orphan training behind
            self.panel.stop()
            if not process.waitForFinished(int(self.panel.stop_grace_s * 1000)):
                if self.panel.saving:
                    process.waitForFinished(int(SAVE_GRACE_S * 1000))
                process.kill()
                process.waitForFinished(5000)
        super().closeEvent(event)


# ============================================================================== launcher
class TrainingLauncher(QObject):
    """Train > Fine-tune...: opens the dialog, or brings back the one whose training runs."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.dialog: FineTuneDialog | None = None

    def open(self) -> FineTuneDialog:
        dialog = self.dialog
        if dialog is None or not dialog.isVisible() and not dialog.panel.runner.running():
            dialog = self.dialog = FineTuneDialog(self.window)
        dialog.show()
        dialog.raise_()
        return dialog


__all__ = ["FineTuneDialog", "TrainingLauncher", "TrainingPanel", "TrainingRunner", "TrainingJob",
           "parse_extra"]
