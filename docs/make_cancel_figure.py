"""Screenshots of cancelling a TTA run on the sample (docs/cancel_in_progress.png).

The app as ``cellseg-gui --sample --tta`` starts it: the demo model's plain prediction shows,
TTA runs with its pass in the status bar; the first shot is taken at TTA pass 3, then Esc is
pressed and the second shot shows the cancelled run (the plain prediction kept):

    xvfb-run python docs/make_cancel_figure.py docs/cancel_in_progress.png /tmp/cancelled.png
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication


def wait_for(app, condition, timeout_s: float = 300) -> None:
    """Run the event loop until ``condition()`` (or exit after ``timeout_s``)."""
    loop = QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: condition() and loop.quit())
    timer.start(50)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    loop.exec()
    timer.stop()
    if not condition():
        raise SystemExit("timed out")


def main(during: str, after: str) -> None:
    app = QApplication.instance() or QApplication(["cellseg-gui"])
    from cellseg.app.main import build_parser, configure
    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow

    settings = AppSettings.from_file(Path(tempfile.mkdtemp()) / "settings.ini")
    window = MainWindow(settings)
    configure(window, build_parser().parse_args(["--sample", "--tta", "--device", "cpu"]))
    window.resize(1400, 880)
    window.show()
    passes = []
    window.service.run_progress.connect(
        lambda key, stage, done, total: stage == "TTA pass" and passes.append(done))
    wait_for(app, lambda: passes and passes[-1] >= 2 and window.current_instances() is not None)
    app.processEvents()
    window.grab().save(during)
    print(f"{during}: {window.run_label.text()!r}, Cancel enabled "
          f"{window.models_panel.cancel_button.isEnabled()}")
    window.activateWindow()  # shortcuts reach an active window only (Xvfb has no manager)
    wait_for(app, window.isActiveWindow, timeout_s=5)
    QTest.keyClick(window, Qt.Key.Key_Escape)
    wait_for(app, lambda: not window.service.busy)
    app.processEvents()
    window.grab().save(after)
    print(f"{after}: {window.statusBar().currentMessage()!r}, {window.result_label.text()!r}")
    window.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
