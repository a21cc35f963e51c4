"""The project file while the real window holds it: a file dialog browsing its folder, the CLI
reading it, a second window, a read-only file, then SIGKILL: no finished edit is lost."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from PySide6.QtCore import Qt

from cellseg.core.project.store import ProjectStore

from test_editing_tools import centre, click, editing, key, project_path  # noqa: F401 (fixtures)
from tests.test_project_safety import HOLDER, _read_only

CHILD = textwrap.dedent("""
    import os, subprocess, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    from pathlib import Path
    from PySide6.QtWidgets import QApplication, QFileDialog
    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow
    from cellseg.core.project import edits as E

    def pump(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            time.sleep(0.01)

    app = QApplication([])
    window = MainWindow(AppSettings.from_file(sys.argv[2]))
    window.show()
    c = window.editing
    assert c.open_project(sys.argv[1])
    deadline = time.monotonic() + 60
    while not (c.ann is not None and c.stored) and time.monotonic() < deadline:
        pump(0.01)
    c.push(E.delete(c.ann, [int(c.ann.uids[0])]))
    # the user browses the project's folder in a file dialog (Qt's own widget dialog lists the
    # folder, asks each file's type and icon), and the CLI reads the project meanwhile
    dialog = QFileDialog(window, "Open image", str(Path(sys.argv[1]).parent))
    dialog.setOption(QFileDialog.Option.DontUseNativeDialog)
    dialog.setViewMode(QFileDialog.ViewMode.Detail)
    dialog.show()
    pump(1.5)
    dialog.close()
    info = subprocess.run([sys.executable, "-m", "cellseg.core.cli", "project", "info",
                           sys.argv[1]], capture_output=True, text=True)
    print("info", info.returncode, flush=True)
    c.push(E.delete(c.ann, [int(c.ann.uids[0])]))
    pump(0.2)
    print("done", c.ann.digest(), flush=True)
    pump(600)  # until killed
""")


def test_file_dialog_and_cli_while_the_window_edits_then_sigkill(tmp_path, project_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(project_path),
                              str(tmp_path / "s.ini")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().split() == ["info", "0"]
        done, digest = child.stdout.readline().split()
        assert done == "done"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    with ProjectStore.open(project_path) as again:
        assert again.integrity_ok()
        image_id = again.image_by_name("img2d.tif").id
        assert again.load(image_id).digest() == digest  # both edits
        assert again.counts(image_id).deleted == 2


def test_second_window_is_refused_naming_the_holder(qtbot, window, editing, settings,
                                                    project_path):
    from cellseg.app.window import MainWindow

    second = MainWindow(settings)
    qtbot.addWidget(second)
    c2 = second.editing
    assert not c2.open_project(project_path)
    assert "is already open in" in second.last_error and f"pid {os.getpid()} " in second.last_error
    assert second.banner.isVisibleTo(second) and c2.store is None
    # the first window goes on saving
    uid = int(editing.ann.uids[3])
    click(qtbot, window.canvas, *centre(editing, uid))
    key(qtbot, window, Qt.Key.Key_Delete)
    with ProjectStore.open(project_path, read_only=True) as reader:
        assert reader.counts(editing.image_id).deleted == 1
    second.close()


def test_project_held_by_another_process_is_refused_in_the_window(qtbot, window,
                                                                  project_path):

    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLDER), str(project_path)],
                             stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "holding"
        c = window.editing
        assert not c.open_project(project_path)
        assert f"pid {child.pid} on " in window.last_error
        assert window.banner.isVisibleTo(window)
    finally:
        child.kill()
        child.wait()


def test_read_only_project_shows_a_banner_and_takes_refused_edits_back(qtbot, window,
                                                                     project_path):

    with _read_only(project_path):
        c = window.editing
        assert c.open_project(project_path)
        qtbot.waitUntil(lambda: c.ann is not None and c.stored and len(c.ann) == 125,
                        timeout=10000)
        assert "open read-only (the project file is read-only)" in window.last_error
        assert window.banner.isVisibleTo(window)
        window.activateWindow()
        window.canvas.setFocus()
        before = c.ann.copy()
        uid = int(c.ann.uids[7])
        click(qtbot, window.canvas, *centre(c, uid))
        assert c.selected == {uid}
        window.last_error = None
        key(qtbot, window, Qt.Key.Key_Delete)
        assert "the edit was not saved" in window.last_error
        assert c.ann.same_as(before)  # what is shown is what is saved
        assert window.undo_stack.count() == 0
        c.close_project()


PROBE = textwrap.dedent("""
    import fcntl, os, sys
    # SQLite (unix VFS) keeps a shared lock on these bytes while a WAL connection is open:
    # taking them exclusively must fail, unless that process lost its POSIX locks
    fd = os.open(sys.argv[1], os.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 510, 0x40000002)
        print("unlocked")
    except OSError:
        print("locked")
""")


def _sqlite_lock_held(path) -> bool:
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True,
                         text=True, check=True).stdout.strip()
    return out == "locked"


def _browse(qtbot, dialog) -> None:
    dialog.setViewMode(dialog.ViewMode.Detail)  # the Type column asks every file's type
    dialog.show()
    qtbot.wait(1500)
    dialog.close()


def test_file_dialogs_never_open_the_files_they_list(qtbot, project_path):
    from PySide6.QtWidgets import QFileDialog

    from cellseg.app.file_dialogs import NameOnlyFileDialog

    folder = str(project_path.parent)
    with ProjectStore.open(project_path) as store:
        assert _sqlite_lock_held(project_path)
        _browse(qtbot, NameOnlyFileDialog(None, "Open", folder, "", QFileDialog.FileMode.ExistingFile,
                                          QFileDialog.AcceptMode.AcceptOpen))
        assert _sqlite_lock_held(project_path)
        # control: Qt's stock dialog sniffs the project file and so drops SQLite's locks
        stock = QFileDialog(None, "Open", folder)
        stock.setOption(QFileDialog.Option.DontUseNativeDialog)
        _browse(qtbot, stock)
        assert not _sqlite_lock_held(project_path)
        store.set_setting("still", "saved")  # the project lock kept the project safe anyway
    with ProjectStore.open(project_path, read_only=True) as again:
        assert again.get_setting("still") == "saved"
