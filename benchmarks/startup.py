"""Start-up to first paint and quit times of ``cellseg-gui`` over N launches, and where the
slow start-ups go.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/startup.py [-n 10] [--compare REV]

Each launch is a fresh interpreter running the real entry point's steps (QApplication, the
window with the editing tools, training menu and first-run guidance, ``show()``) with throw-away
settings. *first paint*: process start to the window's first Paint event. *quit*: ``close()``
(settings written, worker threads stopped) to the process's exit, measured by the parent
(``cellseg.app.main.leave`` included where the revision has it, as ``cellseg-gui`` runs it).
Each child also reports its phase times (interpreter + imports, window construction, show to
paint), so a slow launch says which phase was slow. ``--compare REV`` runs the same launches
of that git revision (extracted with ``git archive``, imported first on PYTHONPATH)
interleaved with this tree's, so both share the machine's load, and prints them side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
t0 = float(os.environ["STARTUP_T0"])
phases = {"python": time.time() - t0}
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
t = time.time()
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication
app = QApplication(["cellseg-gui"])
from cellseg.app.settings import AppSettings
from cellseg.app.window import MainWindow
phases["imports"] = time.time() - t
phases["torch imported"] = "torch" in sys.modules
t = time.time()
window = MainWindow(AppSettings.from_file(sys.argv[1]))
phases["window"] = time.time() - t
shown = time.time()

class FirstPaint(QObject):
    def eventFilter(self, obj, event):
        if event.type() == QEvent.Type.Paint and "paint" not in phases:
            phases["show to paint"] = time.time() - shown
            phases["first paint"] = time.time() - t0
            QTimer.singleShot(0, quit_now)
        return False

def quit_now():
    print(json.dumps(phases), flush=True)
    print("closing", time.time(), flush=True)
    window.close()
    app.quit()

f = FirstPaint()
window.installEventFilter(f)
window.resize(1400, 900)
window.show()
QTimer.singleShot(60000, quit_now)
rc = app.exec()
try:  # what cellseg-gui does after its event loop (a revision without it: plain exit)
    from cellseg.app.main import leave
except ImportError:
    leave = None
if leave is not None:
    leave(app, window, rc)
"""


def launch(pythonpath: str | None) -> dict:
    env = dict(os.environ, STARTUP_T0=repr(time.time()), QT_QPA_PLATFORM="offscreen")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    with tempfile.TemporaryDirectory() as tmp:
        env["STARTUP_T0"] = repr(time.time())
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(Path(tmp) / "s.ini")],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        phases = json.loads(proc.stdout.readline())
        closing = float(proc.stdout.readline().split()[1])
        proc.wait()
        phases["quit"] = time.time() - closing
    return phases


def checkout(rev: str) -> str:
    """``rev``'s tree as an importable ``cellseg`` package; returns the PYTHONPATH entry."""
    root = Path(tempfile.mkdtemp(prefix="cellseg-startup-"))
    tree = root / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    pkg = root / "path" / "cellseg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for folder, name in (("app", "app"), ("core", "core"), ("trainer", "trainer"),
                         ("resources", "resources")):
        (pkg / name).symlink_to(tree / folder)
    return str(root / "path")


def summary(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    return f"{statistics.median(values):6.2f} {max(values):6.2f}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=10, help="launches per tree")
    p.add_argument("--compare", metavar="REV", help="git revision to compare with")
    args = p.parse_args()
    trees = {"this tree": None}
    if args.compare:
        trees[args.compare] = checkout(args.compare)
    runs = {name: [] for name in trees}
    for i in range(args.n):
        for name, path in trees.items():  # interleaved: both see the same machine load
            r = launch(path)
            runs[name].append(r)
            print(f"{name:>10} #{i + 1}: " + "  ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()),
                file=sys.stderr)
    keys = ["first paint", "quit", "python", "imports", "window", "show to paint"]
    print(f"{'seconds (median worst)':<24}" + "".join(f"{name:>16}" for name in runs))
    for key in keys:
        print(f"{key:<24}" + "".join(f"{summary(rs, key):>16}" for rs in runs.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
