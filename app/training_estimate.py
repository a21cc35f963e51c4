"""The Fine-tune dialog's time estimate: *Measure* times real training iterations of the chosen
settings in a separate ``cellseg train --estimate`` process (cancellable: the process is ended;
the window never waits for it) and the dialog multiplies by the iterations asked for.

:class:`Estimate` (Qt-free) holds what was measured and for which settings; changing a setting
that changes the cost of an iteration (model, weights, data, batch, device, overrides) makes it
stale, changing the iteration count only changes the product.
"""
from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass, field

from PySide6.QtCore import QProcess, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from .training_run import python_child


TIMED = re.compile(r"^timed iteration (\d+): ([0-9.]+) s")
RESULT = re.compile(r"^per iteration: ([0-9.]+) s on (\S+)")


@dataclass
class Estimate:
    """What one measurement found. ``settings``: the cost-relevant settings it was made with."""

    settings: tuple
    times: list[float] = field(default_factory=list)
    seconds_per_iteration: float | None = None  # the process's final figure
    device: str = ""

    def feed(self, line: str) -> bool:
        """Take one output line of ``cellseg train --estimate``; True if it changed anything."""
        if m := TIMED.match(line):
            self.times.append(float(m.group(2)))
            return True
        if m := RESULT.match(line):
            self.seconds_per_iteration, self.device = float(m.group(1)), m.group(2)
            return True
        return False

    @property
    def done(self) -> bool:
        return self.seconds_per_iteration is not None

    def text(self, iterations: int, current: tuple) -> str:
        if not self.times:
            return "measuring: starting the model and data (the window stays usable)..."
        if not self.done:
            return (f"measuring: first iteration {self.times[0]:.1f} s (includes start-up "
                    "costs), timing another...")
        # the trainer's formatting, imported here: its module loads torch, which the window's
        # start-up must not (it cost most of a start-up)
        from cellseg.trainer.estimate import format_duration

        per = self.seconds_per_iteration
        text = (f"about {_seconds(per)} per iteration on {self.device} (measured) -> "
                f"~{format_duration(per * iterations)} for {iterations} iterations "
                "(evaluations come on top)")
        if current != self.settings:
            text = f"Stale (settings changed): press Measure again. Was {text}"
        return text


def _seconds(s: float) -> str:
    return f"{s:.2f} s" if s < 10 else f"{s:.0f} s"


class EstimateRow(QWidget):
    """The estimate text and its Measure / Cancel button; runs and reads the estimate process.

    The owner gives ``start(arguments, settings, tmp)`` the ``python -m cellseg.app.cli ...``
    arguments, the cost-relevant settings and the temporary folder holding the exported data
    (removed when the measurement ends), and calls :meth:`refresh` when the form changes.
    """

    measure_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.label = QLabel("Not measured yet: Measure times real training iterations of these "
                            "settings on the chosen device.")
        self.label.setWordWrap(True)
        # room for two lines: a wrapped label in a row is otherwise given one line and clipped
        self.label.setMinimumHeight(2 * self.label.fontMetrics().lineSpacing() + 6)
        self.button = QPushButton("Measure")
        self.button.setToolTip("Runs a few real training iterations (forward, backward, step) "
                               "of the chosen model on the training data, in the background")
        self.button.clicked.connect(self._clicked)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label, 1)
        lay.addWidget(self.button)
        self.estimate: Estimate | None = None
        self.log: list[str] = []
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._buffer = ""
        self._state: tuple[int, tuple] = (0, ())
        self.process = python_child(self, self._read, self._finished, self._error)

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def start(self, arguments: list[str], settings: tuple, tmp: tempfile.TemporaryDirectory):
        self.cancel()
        self.estimate = Estimate(settings)
        self.log, self._buffer, self._tmp = [], "", tmp
        self.button.setText("Cancel")
        self.process.start(sys.executable, arguments)
        self._show()

    def cancel(self) -> None:
        """End a measurement in progress (the process is killed: nothing of it is kept)."""
        if self.running():
            self.estimate = None
            self.process.kill()
            self.process.waitForFinished(5000)
            self.label.setText("Measurement cancelled.")

    def refresh(self, iterations: int, settings: tuple) -> None:
        self._state = (iterations, settings)
        self._show()

    def error(self, text: str) -> None:
        self.label.setText(f"Cannot measure: {text}")

    def _show(self) -> None:
        if self.estimate is not None:
            self.label.setText(self.estimate.text(*self._state))

    def _clicked(self) -> None:
        if self.running():
            self.cancel()
        else:
            self.measure_requested.emit()

    def _read(self) -> None:
        self._buffer += bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self.log.append(line)
            if self.estimate is not None and self.estimate.feed(line.strip()):
                self._show()

    def _finished(self, code: int, status) -> None:
        self._read()
        self.button.setText("Measure")
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        if self.estimate is not None and not self.estimate.done:
            last = next((ln for ln in reversed(self.log) if ln.strip()), f"exit code {code}")
            self.estimate = None
            self.label.setText(f"Measurement failed: {last.strip()}")

    def _error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self.estimate = None
            self._finished(-1, None)
            self.label.setText(f"Cannot start {sys.executable}: {self.process.errorString()}")


__all__ = ["Estimate", "EstimateRow"]
