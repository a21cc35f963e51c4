"""The review states picture (docs/review_states.png): the real window under a display.

A project of the nuclei image with its 125 ground-truth nuclei (two classes, named), some
accepted and some rejected through the editing controller, reopened so that the Legend shows
the project's class names, zoomed to 250% (a third argument sets the zoom, 0 fits the window):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_review_states_figure.py \\
        ../shared/data/nuclei docs/review_states.png
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile


def main(nuclei_dir: str, out: str, zoom: str = "2.5") -> int:
    from PySide6.QtWidgets import QApplication

    app = QApplication(["cellseg-gui"])
    from cellseg.app.settings import AppSettings
    from cellseg.app.window import MainWindow
    from cellseg.core.project.edits import Origin, Review
    from cellseg.core.project.exchange import create_project
    from cellseg.core.project.store import Category, ProjectStore
    from cellseg.core.structures import CroppedMasks, Instances

    tmp = Path(tempfile.mkdtemp(prefix="cellseg-figure-"))
    (tmp / "images").mkdir()
    (tmp / "images" / "img2d.tif").write_bytes((Path(nuclei_dir) / "img2d.tif").read_bytes())
    labels = tifffile.imread(Path(nuclei_dir) / "mask2d.tif")
    masks, ids = CroppedMasks.from_label_image(labels)
    n = len(ids)
    classes = (np.arange(n) % 7 == 3).astype(np.int64)  # every 7th a "mitotic" one
    instances = Instances(labels.shape, masks.tight_boxes(),
                          np.linspace(0.3, 1.0, n, dtype=np.float32), classes, masks)
    project = tmp / "nuclei.cellseg"
    create_project(tmp / "images", project)
    with ProjectStore.open(project) as store:
        store.set_categories([Category(0, 1, "nucleus"), Category(1, 2, "mitotic")])
        store.add_instances(store.image_by_name("img2d.tif").id, instances, Origin.MODEL)

    window = MainWindow(AppSettings.from_file(tmp / "settings.ini"))
    c = window.editing
    window.resize(1400, 900)
    window.show()

    def wait_open() -> None:
        deadline = time.monotonic() + 60
        while not (c.ann is not None and c.stored) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.01)

    c.open_project(project)
    wait_open()
    uids = [int(u) for u in c.ann.uids]
    for state, chosen in ((Review.ACCEPTED, uids[::3]), (Review.REJECTED, uids[1::7])):
        c.selected = set(chosen)
        c.review_selected(state)  # what A and X do with these selected
    c.selected = set()
    c.close_project()  # reopened: the Legend names come from the project
    c.open_project(project)
    wait_open()
    window.canvas.fit_to_window()
    if float(zoom) > 0:  # 0: fit to the window
        window.canvas.zoom_by(float(zoom) / window.canvas.zoom)
        window.canvas.center_on_pixel(260, 250)
    for _ in range(30):
        app.processEvents()
        time.sleep(0.01)
    ok = window.grab().save(out)
    window.close()
    print(f"saved {out}" if ok else f"cannot write {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
