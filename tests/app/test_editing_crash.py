"""SIGKILL the app mid-session: reopening the project restores every edit that finished."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from cellseg.core.project.exchange import create_project
from cellseg.core.project.records import Category
from cellseg.core.project.states import Origin
from cellseg.core.project.store import ProjectStore

CHILD = textwrap.dedent("""
    import os, sys, time
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import numpy as np
    from PySide6.QtWidgets import QApplication
    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow
    from cellseg.core.project import edits as E
    from cellseg.core.project.raster import brush_region, polygon_region

    app = QApplication([])
    window = MainWindow(AppSettings.from_file(sys.argv[2]))
    window.show()
    c = window.editing
    assert c.open_project(sys.argv[1])
    deadline = time.monotonic() + 60
    while not (c.ann is not None and c.stored) and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    rng = np.random.default_rng(1)
    i = 0
    while True:  # edit through the window's controller and undo stack until killed
        ann = c.ann
        u = int(rng.choice(ann.uids))
        x, y = rng.uniform(20, 490, 2)
        if i % 4 == 0:
            edit = E.add_region(ann, u, brush_region([(x, y), (x + 8, y + 2)], 5, ann.image_size))
        elif i % 4 == 1:
            edit = E.delete(ann, [u])
        elif i % 4 == 2:
            edit = E.draw_instance(ann, polygon_region([(x, y), (x + 9, y), (x, y + 9)],
                                                         ann.image_size), 1)
        else:
            edit = E.set_class(ann, [u], 1)
        preview = ann.copy()
        preview.apply(edit)
        print("pending", i, preview.digest(), flush=True)
        c.push(edit)
        app.processEvents()
        print("done", i, flush=True)
        i += 1
""")


def test_sigkilled_app_loses_no_finished_edit(tmp_path, nuclei_dir, nuclei_instances):
    images = tmp_path / "images"
    images.mkdir()
    (images / "img2d.tif").write_bytes((nuclei_dir / "img2d.tif").read_bytes())
    path = tmp_path / "p.cellseg"
    create_project(images, path)
    with ProjectStore.open(path) as store:
        store.set_categories([Category(0, 1, "a"), Category(1, 2, "b")])
        image_id = store.image_by_name("img2d.tif").id
        store.add_instances(image_id, nuclei_instances.replace(
            classes=np.zeros(len(nuclei_instances), np.int64)), Origin.MODEL)
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(tmp_path / "s.ini")],
                             stdout=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            line = child.stdout.readline()
            assert line, "the app process ended early"
            lines.append(line.split())
            if lines[-1][0] == "done" and int(lines[-1][1]) >= 12:
                break
        child.send_signal(signal.SIGKILL)
        lines += [l.split() for l in child.stdout.read().splitlines()]
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    pending = {int(l[1]): l[2] for l in lines if l[0] == "pending"}
    last_done = max(int(l[1]) for l in lines if l[0] == "done")
    assert last_done >= 12
    with ProjectStore.open(path) as again:
        assert again.integrity_ok()
        got = again.load(image_id).digest()
    # every finished edit is there; at most the edit in flight made it too
    assert got in {pending[last_done], pending.get(last_done + 1)}
