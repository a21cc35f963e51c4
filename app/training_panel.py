"""The live panel of Train > Fine-tune...: progress, loss and AP curves (pyqtgraph), the log's
tail, Stop, and at the end AP before/after and the new weights to load."""
from __future__ import annotations

import json
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from .training_run import (MetricsReader, TrainingJob, TrainingRunner, checkpoint_iteration,
                           fmt_value)

LOG_LINES = 400
# Stop: how long the trainer gets to end by itself (it checks between layers, so a second is
# usual), and how much longer once it says it is writing its checkpoint (a full-size model's
# is a few GB on a slow disk); then the process is ended.
STOP_GRACE_S = 10.0
SAVE_GRACE_S = 120.0
SAVING_LINE = "stopping: writing checkpoint"
CURVE_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf"]


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
        # a coarse timer may fire 5% early: the grace promised is the grace given
        self.grace.setTimerType(Qt.TimerType.PreciseTimer)
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
            for j, v in enumerate((name, fmt_value(b), fmt_value(a))):
                self.ap_table.setItem(i, j, QTableWidgetItem(v))
        self.ap_table.setVisible(True)

    def _load(self) -> None:
        if self.weights is not None and self.job is not None:
            self.load_requested.emit(str(Path(self.job.output) / "config.yaml"),
                                     str(self.weights))
