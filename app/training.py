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

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDoubleSpinBox, QFormLayout,
                               QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit,
                               QProgressBar, QPushButton, QSpinBox, QStackedWidget,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from . import file_dialogs
from . import training_recipe as recipe
from .training_estimate import EstimateRow

LOG_LINES = 400
# Stop: how long the trainer gets to end by itself (it checks between layers, so a second is
# usual), and how much longer once it says it is writing its checkpoint (a full-size model's
# is a few GB on a slow disk); then the process is ended.
STOP_GRACE_S = 10.0
SAVE_GRACE_S = 120.0
SAVING_LINE = "stopping: writing checkpoint"
CURVE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf"]


@dataclass
class TrainingJob:
    """What the dialog collected; ``command()`` turns it into ``cellseg train`` arguments."""

    config: str
    output: str
    train_json: str
    image_root: str
    val_json: str | None = None
    weights: str | None = None
    max_iter: int = 20000
    base_lr: float = 1e-4
    batch: int = 4
    checkpoint_period: int = 5000
    eval_period: int = 1000
    device: str = "auto"
    log_period: int = 20
    extra: list[tuple[str, str]] = field(default_factory=list)
    resume: bool = False  # continue the run in ``output`` from its last checkpoint

    def arguments(self, estimate: bool = False) -> list[str]:
        """The run's arguments, or with ``estimate`` those of ``cellseg train --estimate`` for
        the same model, data and settings (no run folder, no validation)."""
        args = ["-m", "cellseg.app.cli", "train", "--config", self.config,
                "--train", self.train_json, "--image-root", self.image_root,
                "--device", self.device,
                "--set", "SOLVER.MAX_ITER", str(self.max_iter),
                "--set", "SOLVER.BASE_LR", repr(float(self.base_lr)),
                "--set", "SOLVER.IMS_PER_BATCH", str(self.batch)]
        if self.weights:
            args += ["--weights", self.weights]
        if estimate:
            return args + [x for k, v in self.extra for x in ("--set", k, v)] + ["--estimate"]
        args += ["--output", self.output, "--log-period", str(self.log_period),
                 "--set", "SOLVER.CHECKPOINT_PERIOD", str(self.checkpoint_period),
                 "--set", "TEST.EVAL_PERIOD", str(self.eval_period if self.val_json else 0)]
        if self.val_json:
            args += ["--val", self.val_json, "--eval-initial"]
        for key, value in self.extra:
            args += ["--set", key, value]
        if self.resume:
            args.append("--resume")
        return args


def parse_extra(text: str) -> list[tuple[str, str]]:
    """``"KEY VALUE KEY VALUE"`` (values may be tuples without spaces, e.g. (128,256))."""
    parts = text.split()
    if len(parts) % 2:
        raise ValueError("extra settings must be KEY VALUE pairs")
    return list(zip(parts[0::2], parts[1::2]))


def mask_head_key(config: str) -> str:
    """Which of the window's model slots a config belongs in."""
    from cellseg.core.config import load_config

    cfg = load_config(config)
    return "pointrend" if cfg.MODEL.ROI_MASK_HEAD.NAME == "PointRendMaskHead" else "cascade"


# ============================================================================== process runner
class TrainingRunner(QObject):
    """``cellseg train`` in a QProcess (same Python interpreter), output merged and streamed."""

    output = Signal(str)
    finished = Signal(int)  # exit code (-1 when the process crashed)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        env = QProcessEnvironment.systemEnvironment()
        env.insert("PYTHONUNBUFFERED", "1")
        self.process.setProcessEnvironment(env)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.output_dir: Path | None = None

    def start(self, job: TrainingJob) -> None:
        self.output_dir = Path(job.output)
        self.process.start(sys.executable, job.arguments())

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def request_stop(self) -> None:
        """Ask the trainer to checkpoint and exit after the current iteration (works on every
        platform, unlike signals)."""
        if self.output_dir is not None and self.running():
            (self.output_dir / "STOP").write_text("stop requested from the app\n")

    def _read(self) -> None:
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        if text:
            self.output.emit(text)

    def _finished(self, code: int, status) -> None:
        self._read()
        crashed = status == QProcess.ExitStatus.CrashExit
        self.finished.emit(-1 if crashed else int(code))

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.output.emit(f"cannot start {sys.executable}: {self.process.errorString()}\n")
            self.finished.emit(-1)


# ============================================================================== live panel
class MetricsReader:
    """Reads the new complete lines of metrics.json since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.rows: list[dict] = []

    def poll(self) -> list[dict]:
        if not self.path.is_file():
            return []
        size = self.path.stat().st_size
        if size < self.offset:  # rewritten (a resumed run trims it): read again
            self.offset, self.rows = 0, []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next poll
        new = []
        for line in data[:end].splitlines():
            try:
                new.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        self.offset += end
        self.rows.extend(new)
        return new


class TrainingPanel(QWidget):
    """Progress, loss/AP curves, log tail, Stop, and at the end AP before/after + load."""

    metrics_updated = Signal(int)  # rows read so far
    load_requested = Signal(str, str)  # config, weights
    settings_requested = Signal(bool)  # back to the form; True: a checkpoint to resume from
    done = Signal(int)

    def __init__(self, parent=None, poll_ms: int = 1000):
        super().__init__(parent)
        self.runner = TrainingRunner(self)
        self.runner.output.connect(self._append_log)
        self.runner.finished.connect(self._finished)
        self.job: TrainingJob | None = None
        self.reader: MetricsReader | None = None
        self.exit_code: int | None = None
        self.weights: Path | None = None
        self.stop_grace_s = STOP_GRACE_S
        self.stopping = False
        self.saving = False  # the trainer said it is writing its stop checkpoint
        self.ended = False  # the process was ended after the grace period
        self.grace = QTimer(self)
        self.grace.setSingleShot(True)
        self.grace.timeout.connect(self._grace_over)

        self.status = QLabel("not started")
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m iterations")
        pg.setConfigOptions(antialias=True)
        self.loss_plot = pg.PlotWidget(title="losses")
        self.loss_plot.setLabel("bottom", "iteration")
        self.loss_plot.setLogMode(y=True)
        self.loss_plot.addLegend(offset=(-10, 10))
        self.ap_plot = pg.PlotWidget(title="validation AP (%)")
        self.ap_plot.setLabel("bottom", "iteration")
        self.ap_plot.addLegend(offset=(-10, 10))
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_LINES)
        self.stop_button = QPushButton("Stop (save a checkpoint)")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        self.load_button = QPushButton("Load the new weights")
        self.load_button.setEnabled(False)
        self.load_button.clicked.connect(self._load)
        self.back_button = QPushButton("Back to the settings")
        self.back_button.setToolTip("Change settings, Resume this run or start another")
        self.back_button.setEnabled(False)
        self.back_button.clicked.connect(
            lambda: self.settings_requested.emit(self.weights is not None
                                                 and self.weights.name != "model_final.pth"))
        self.ap_table = QTableWidget(0, 3)
        self.ap_table.setHorizontalHeaderLabels(["metric", "before", "after"])
        self.ap_table.setVisible(False)

        plots = QHBoxLayout()
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.ap_plot)
        buttons = QHBoxLayout()
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.back_button)
        buttons.addStretch(1)
        buttons.addWidget(self.load_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.status)
        lay.addWidget(self.progress)
        lay.addLayout(plots, 3)
        lay.addWidget(self.ap_table, 1)
        lay.addWidget(self.log, 2)
        lay.addLayout(buttons)
        self.timer = QTimer(self)
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.poll)

    # ------------------------------------------------------------------ control
    def start(self, job: TrainingJob) -> None:
        self.job = job
        self.exit_code = None
        self.reader = MetricsReader(Path(job.output) / "metrics.json")
        self.progress.setRange(0, job.max_iter)
        self.progress.setValue(0)
        self.status.setText(f"training: {job.output}")
        self.stopping = self.saving = self.ended = False
        self.stop_button.setEnabled(True)
        self.load_button.setEnabled(False)
        self.back_button.setEnabled(False)
        self.ap_table.setVisible(False)
        self.runner.start(job)
        self.timer.start()

    def stop(self) -> None:
        """Ask the trainer to stop now; end the process if it has not after the grace period."""
        if not self.runner.running() or self.stopping:
            return
        self.stopping = True
        self.stop_button.setEnabled(False)
        self.status.setText("stopping...")
        self._append_log(f"stop requested: the trainer abandons the iteration in progress and "
                         f"saves the last completed one (ended after {self.stop_grace_s:.0f} s "
                         "if it has not stopped by then)")
        self.runner.request_stop()
        self.grace.start(int(self.stop_grace_s * 1000))

    def _grace_over(self) -> None:
        if not self.runner.running():
            return
        if self.saving:  # cutting the write short would only cost the new checkpoint
            self.saving = False
            self.status.setText("stopping... (writing the checkpoint)")
            self.grace.start(int(SAVE_GRACE_S * 1000))
            return
        self.ended = True
        self._append_log(f"the trainer did not stop within {self.stop_grace_s:.0f} s: ending it")
        self.runner.process.kill()

    # ------------------------------------------------------------------ updates
    def poll(self) -> None:
        if self.reader is None:
            return
        new = self.reader.poll()
        if not new:
            return
        rows = self.reader.rows
        loss_rows = [r for r in rows if "total_loss" in r]
        if loss_rows:
            self.progress.setValue(min(int(loss_rows[-1]["iteration"]) + 1,
                                       self.progress.maximum()))
        keys = sorted({k for r in loss_rows for k in r if k.startswith("loss")})
        for k in ["total_loss"] + keys:
            self._curve(self.loss_plot, k, loss_rows)
        for k in ("segm/AP", "bbox/AP"):
            self._curve(self.ap_plot, k, [r for r in rows if k in r])
        self.metrics_updated.emit(len(rows))

    def _curve(self, plot, key, rows) -> None:
        pts = [(r["iteration"], r[key]) for r in rows
               if isinstance(r.get(key), (int, float)) and r[key] == r[key]
               and (r[key] > 0 or plot is not self.loss_plot)]
        if not pts:
            return
        if key not in self.curves:
            colour = CURVE_COLOURS[len(self.curves) % len(CURVE_COLOURS)]
            self.curves[key] = plot.plot([], [], name=key, pen=pg.mkPen(colour, width=2),
                                         symbol="o" if plot is self.ap_plot else None,
                                         symbolSize=6, symbolBrush=colour)
        xs, ys = zip(*pts)
        self.curves[key].setData(list(xs), list(ys))

    def _append_log(self, text: str) -> None:
        for line in text.replace("\r", "\n").splitlines():
            if line.strip():
                self.log.appendPlainText(line)
                if line.startswith(SAVING_LINE):
                    self.saving = True

    def _finished(self, code: int) -> None:
        self.timer.stop()
        self.grace.stop()
        self.poll()
        self.exit_code = code
        self.stop_button.setEnabled(False)
        self.back_button.setEnabled(True)
        out = Path(self.job.output)
        final = out / "model_final.pth"
        last = out / "last_checkpoint"
        self.weights = None
        if final.is_file() and not self.stopping:
            self.weights = final
        elif last.is_file() and (out / last.read_text().strip()).is_file():
            self.weights = out / last.read_text().strip()
        if self.stopping:
            self._stopped()
        elif code == 0 and self.weights is not None:
            self.status.setText(f"finished: {self.weights.name}. Load the new weights into "
                                "the app?")
            self.load_button.setEnabled(True)
            self._show_ap(out / "evaluation")
        else:
            self.status.setText(f"training ended with code {code}: see the log below")
        self.done.emit(code)

    def _stopped(self) -> None:
        how = (f"ended after {self.stop_grace_s:.0f} s" if self.ended else "the trainer stopped")
        if self.weights is None:
            kept = ("no checkpoint had been written yet: nothing to resume; Start begins the run "
                    "again")
        elif self.weights.name == "model_final.pth":
            kept = "the run had already finished: model_final.pth"
            self.load_button.setEnabled(True)
        else:
            it = checkpoint_iteration(self.weights)
            kept = (f"kept {self.weights.name}" + (f" (iteration {it})" if it else "") +
                    "; Back to the settings, tick Resume and Start to continue from it")
            self.load_button.setEnabled(True)
        self.status.setText(f"stopped ({how}): {kept}")
        self._append_log(f"stopped ({how}): {kept}")

    def _show_ap(self, folder: Path) -> None:
        def read(name):
            p = folder / name
            return json.loads(p.read_text()) if p.is_file() else {}

        before, after = read("initial.json"), read("final.json")
        if not after:
            return
        rows = []
        for t in ("bbox", "segm"):
            for k, v in after.get(t, {}).items():
                if k in ("AP", "AP50", "AP75") or k.startswith("AP-"):
                    rows.append((f"{t} {k}", before.get(t, {}).get(k), v))
        self.ap_table.setRowCount(len(rows))
        for i, (name, b, a) in enumerate(rows):
            for j, v in enumerate((name, _fmt(b), _fmt(a))):
                self.ap_table.setItem(i, j, QTableWidgetItem(v))
        self.ap_table.setVisible(True)

    def _load(self) -> None:
        if self.weights is not None and self.job is not None:
            self.load_requested.emit(str(Path(self.job.output) / "config.yaml"),
                                     str(self.weights))


def checkpoint_iteration(checkpoint: Path) -> int | None:
    """The 1-based iteration a ``model_NNNNNNN.pth`` holds, from its name (no loading)."""
    digits = checkpoint.stem.removeprefix("model_")
    return int(digits) + 1 if digits.isdigit() else None


def _fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:.2f}"


# ============================================================================== dialog
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


# ============================================================================== menu
def _find_menu(window, title: str):
    for action in window.menuBar().actions():
        menu = action.menu()
        if menu is not None and action.text().replace("&", "") == title:
            return menu
    return window.menuBar().addMenu(f"&{title}")


def install_training(window) -> QAction:
    """Add Train > Fine-tune... to ``window`` (reusing a placeholder Fine-tune action if the
    window has one); returns the action. The dialog is kept as ``window.training_dialog``."""
    menu = _find_menu(window, "Train")
    action = next((a for a in menu.actions() if a.text().replace("&", "").startswith("Fine-tune")),
                  None)
    if action is None:
        action = QAction("&Fine-tune...", window)
        menu.addAction(action)
    else:
        try:
            action.triggered.disconnect()
        except (RuntimeError, TypeError):
            pass
        action.setText("&Fine-tune...")

    def open_dialog():
        dialog = getattr(window, "training_dialog", None)
        if dialog is None or not dialog.isVisible() and not dialog.panel.runner.running():
            dialog = FineTuneDialog(window)
            window.training_dialog = dialog
        dialog.show()
        dialog.raise_()

    action.triggered.connect(open_dialog)
    window.training_dialog = None
    return action


__all__ = ["FineTuneDialog", "TrainingPanel", "TrainingRunner", "TrainingJob", "install_training",
           "parse_extra"]
