"""Screenshot of the Box tool on the sample with missed-cell candidates (docs/assist_candidates.png).

The sample's demo ensemble at its default threshold (0.5), the Box tool chosen (D) with
*Candidates from* 0.05: the detections scoring 0.05-0.5 that lie off the shown cells are faint
dashed outlines; Tab has reached the best one (drawn solid), the whole image in view:

    xvfb-run -s "-screen 0 1600x1000x24" python docs/make_assist_figure.py docs/assist_candidates.png
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_cancel_figure import wait_for  # noqa: E402


def main(out: str) -> None:
    app = QApplication.instance() or QApplication(["cellseg-gui"])
    from cellseg.app.main import build_parser, configure
    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow

    settings = AppSettings.from_file(Path(tempfile.mkdtemp()) / "settings.ini")
    window = MainWindow(settings)
    c = window.editing
    configure(window, build_parser().parse_args(["--sample", "--device", "cpu"]))
    window.resize(1400, 900)
    window.show()
    wait_for(app, lambda: window.current_instances() is not None and c.ann is not None
             and len(c.ann) > 0)
    window.activateWindow()
    wait_for(app, window.isActiveWindow, timeout_s=5)
    a = c.assist
    a.low_box.setValue(0.05)
    QTest.keyClick(window.canvas, Qt.Key.Key_D)
    wait_for(app, lambda: len(a.candidates() or []) > 0 and not window.service.busy)
    QTest.keyClick(window.canvas, Qt.Key.Key_Tab)  # the best candidate, drawn solid
    window.canvas.fit_to_window()
    app.processEvents()
    print(f"{len(a.candidates())} candidates; Tab reached score "
          f"{float(a.candidates().scores[a.current]):.2f}")
    window.grab().save(out)
    window.forget_unsaved()
    window.close()


if __name__ == "__main__":
    main(sys.argv[1])
