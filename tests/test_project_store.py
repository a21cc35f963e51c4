"""The SQLite project store: round trips, per-edit transactions, migrations, bad files, SIGKILL."""
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tifffile

from cellseg.core.errors import DataError
from cellseg.core.project import edits as E
from cellseg.core.project.raster import polygon_region
from cellseg.core.project.records import Category
from cellseg.core.project.schema import SCHEMA_VERSION, migrate
from cellseg.core.project.states import Review
from cellseg.core.project.store import ProjectStore
from cellseg.core.structures import CroppedMasks, Instances


def test_create_reopen_roundtrip(tmp_path, project, nuclei, nuclei_dir):
    store, image = project
    labels, ids, inst = nuclei
    store.add_model(nuclei_dir / "img2d.tif", nuclei_dir / "mask2d.tif")
    store.set_setting("brush_radius", 7)
    ann = store.load(image.id)
    assert ann.masks == inst.masks  # pixel-identical after RLE rows
    assert np.array_equal(ann.scores, inst.scores)
    assert store.schema_version == SCHEMA_VERSION
    assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    with ProjectStore.open(tmp_path / "p.cellseg") as again:
        assert again.images_dir == nuclei_dir.resolve()
        assert again.image_path(again.image(image.id)).is_file()
        assert again.get_setting("brush_radius") == 7
        assert again.categories() == [Category(0, 1, "nucleus", "")]
        assert len(again.models()) == 1
        back = again.load(image.id)
        assert back.same_as(ann)
        assert np.array_equal(back.masks.label_image(), inst.masks.label_image())


def test_each_edit_writes_only_its_rows_and_survives_reopen(tmp_path, project, nuclei):
    store, image = project
    ann = store.load(image.id)
    original = ann.copy()
    uids = ann.uids
    a, b = int(uids[3]), int(uids[10])
    edits = [E.delete(ann, [a]),
             E.set_class(ann, [b], 1),
             E.draw_instance(ann, polygon_region([(130, 2), (170, 2), (150, 40)],
                                                   ann.image_size), 0),
             E.set_review(ann, [int(uids[20])], Review.ACCEPTED),
             E.set_image_reviewed(ann)]
    for edit in edits:
        ann.apply(edit)
        before = store.total_changes
        store.save_edit(image.id, edit)
        # the changed instance rows, one log row, and the image row when its flag changes
        assert store.total_changes - before == len(edit.after) + 1 + (edit.reviewed is not None)
    store.close()
    store2 = ProjectStore.open(tmp_path / "p.cellseg")
    back = store2.load(image.id)
    assert back.same_as(ann)
    c = store2.counts(image.id)
    assert (c.deleted, c.drawn, c.edited, c.accepted) == (1, 1, 1, 2)
    assert store2.image(image.id).reviewed and store2.next_unreviewed() is None
    assert [e[2] for e in store2.edit_log(image.id)][-1] == "Mark image reviewed"
    # undo everything (saving each inverse): back to the original, and the drawn row is gone
    for edit in reversed(edits):
        back.undo(edit)
        store2.save_edit(image.id, edit.inverse())
    assert back.same_as(original)
    assert store2.load(image.id).same_as(original)
    assert store2.counts(image.id).deleted == 0
    n_rows = store2._conn.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    assert n_rows == len(original)
    store2.close()


def test_next_unreviewed_wraps_and_counts(tmp_path, nuclei_dir):
    with ProjectStore.create(tmp_path / "q.cellseg", nuclei_dir) as store:
        ims = [store.add_image(f"im{i}.tif", 8, 8) for i in range(4)]
        ann = store.load(ims[1].id)
        store.save_edit(ims[1].id, E.set_image_reviewed(ann))
        assert store.next_unreviewed().id == ims[0].id
        assert store.next_unreviewed(after_id=ims[0].id).id == ims[2].id
        assert store.next_unreviewed(after_id=ims[3].id).id == ims[0].id
        assert [i.id for i in store.images(reviewed=True)] == [ims[1].id]
        assert store.counts(ims[2].id).instances == 0


def test_migrates_a_version_1_project(tmp_path, nuclei):
    labels, ids, inst = nuclei
    path = tmp_path / "old.cellseg"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=1)
    rle = inst.masks[:1].to_rle()[0]["counts"]
    conn.execute("INSERT INTO settings VALUES ('images_dir', '\".\"')")
    conn.execute("INSERT INTO images(id, file_name, height, width) VALUES (5, 'a.tif', 512, 512)")
    conn.execute("INSERT INTO instances(id, image_id, class_index, score, origin, review, x0, y0,"
                 " x1, y1, area, rle) VALUES (9, 5, 0, 0.5, 'model', 'pending', 0, 0, 1, 1, 1, ?)",
                 (rle,))
    conn.close()
    with ProjectStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        ann = store.load(5)
        assert ann.masks == inst.masks[:1] and list(ann.uids) == [9]
        store.save_edit(5, E.set_image_reviewed(ann))
        assert store.edit_log(5)[0][2] == "Mark image reviewed"


def test_bad_project_files_are_clear_errors_and_untouched(tmp_path):
    text = tmp_path / "notes.cellseg"
    text.write_text("hello")
    foreign = tmp_path / "other.db"
    sqlite3.connect(foreign).execute("CREATE TABLE t(x)").connection.commit()
    newer = tmp_path / "newer.cellseg"
    conn = sqlite3.connect(newer, isolation_level=None)
    migrate(conn)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    for path, message in [(tmp_path / "missing.cellseg", "project not found"),
                          (text, "not an SQLite database"), (foreign, "foreign SQLite"),
                          (newer, "schema version 99, newer")]:
        before = path.read_bytes() if path.exists() else None
        with pytest.raises(DataError, match=message):
            ProjectStore.open(path)
        assert (path.read_bytes() if path.exists() else None) == before
    with pytest.raises(DataError, match="already exists"):
        ProjectStore.create(text, tmp_path)
    assert text.read_text() == "hello"


CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from cellseg.core.project import edits as E
    from cellseg.core.project.raster import brush_region, polygon_region
    from cellseg.core.project.store import ProjectStore

    store = ProjectStore.open(sys.argv[1])
    image_id = int(sys.argv[2])
    ann = store.load(image_id)
    rng = np.random.default_rng(0)
    i = 0
    while True:  # edit until killed
        u = int(rng.choice(ann.uids))
        x, y = rng.uniform(20, 490, 2)
        if i % 3 == 0:
            edit = E.add_region(ann, u, brush_region([(x, y), (x + 6, y + 3)], 4, ann.image_size))
        elif i % 3 == 1:
            edit = E.draw_instance(ann, polygon_region([(x, y), (x + 9, y), (x, y + 9)],
                                                         ann.image_size), 0)
        else:
            edit = E.set_class(ann, [u], i % 4)
        ann.apply(edit)
        print("pending", i, ann.digest(), flush=True)
        store.save_edit(image_id, edit)
        print("done", i, flush=True)
        i += 1
""")


def test_sigkill_mid_session_keeps_every_finished_edit(project):
    store, image = project
    path = store.path
    store.close()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(image.id)],
                             stdout=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        assert line, "editing process ended early"
        lines.append(line.split())
        if lines[-1][0] == "done" and int(lines[-1][1]) >= 25:
            break
    child.send_signal(signal.SIGKILL)  # mid-session: the next edit is already under way
    lines += [l.split() for l in child.stdout.read().splitlines()]
    child.wait()
    assert child.returncode == -signal.SIGKILL
    pending = {int(l[1]): l[2] for l in lines if l[0] == "pending"}
    last_done = max(int(l[1]) for l in lines if l[0] == "done")
    with ProjectStore.open(path) as again:
        assert again.integrity_ok()
        got = again.load(image.id).digest()
    # every finished edit is there; at most the one in flight may also have made it
    assert got in {pending[last_done], pending.get(last_done + 1)}
