"""What Train > Fine-tune... runs: the job's ``cellseg train`` arguments, the process that runs
it, and the run folder's metrics and checkpoints as the live panel reads them."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, Signal

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
def python_child(parent: QObject, on_output, on_finished, on_error) -> QProcess:
    """A QProcess for a ``python -m cellseg...`` child: stdout and stderr merged and
    unbuffered (lines arrive as they are printed), its three signals connected."""
    process = QProcess(parent)
    process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
    env = QProcessEnvironment.systemEnvironment()
    env.insert("PYTHONUNBUFFERED", "1")
    process.setProcessEnvironment(env)
    process.readyReadStandardOutput.connect(on_output)
    process.finished.connect(on_finished)
    process.errorOccurred.connect(on_error)
    return process


class TrainingRunner(QObject):
    """``cellseg train`` in a QProcess (same Python interpreter), output merged and streamed."""

    output = Signal(str)
    finished = Signal(int)  # exit code (-1 when the process crashed)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.process = python_child(self, self._read, self._finished, self._error)
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


def checkpoint_iteration(checkpoint: Path) -> int | None:
    """The 1-based iteration a ``model_NNNNNNN.pth`` holds, from its name (no loading)."""
    digits = checkpoint.stem.removeprefix("model_")
    return int(digits) + 1 if digits.isdigit() else None


def fmt_value(v) -> str:
    return "-" if v is None or v != v else f"{v:.2f}"
