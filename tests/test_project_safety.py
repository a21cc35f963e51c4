"""The project file while it is open: one writer (named when it refuses another), readers that
never disturb it, a journal deleted behind its back, disk full, read-only files, damaged files,
and power cuts at random moments. Every test uses real processes and the real SQLite file."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from cellseg.core.errors import DataError
from cellseg.core.project import edits as E
from cellseg.core.project.database import JournalLostError
from cellseg.core.project.lock import ProjectLockedError, lock_path
from cellseg.core.project.store import ProjectStore

CLI = [sys.executable, "-m", "cellseg.core.cli"]


def _files(path: Path) -> dict[str, str]:
    """Hash of the project file and its journal files (what a failed operation must not touch)."""
    out = {}
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            out[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _child(code: str, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def project_path(project):
    store, image = project
    store.close()
    return store.path, image.id


# ---------------------------------------------------------------- the reproduction of issue 16
REPRO = """
    import os, signal, subprocess, sys
    from cellseg.core.project.store import ProjectStore
    path = sys.argv[1]
    store = ProjectStore.open(path)
    store.set_setting("first", 1)
    with open(path, "rb") as fh:  # what a file dialog sniffing the file type does
        fh.read(64)
    info = subprocess.run([sys.executable, "-m", "cellseg.core.cli", "project", "info", path],
                          capture_output=True, text=True)
    print("info", info.returncode, flush=True)
    store.set_setting("second", 2)
    print("saved", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_raw_open_and_a_second_process_then_sigkill_lose_nothing(project_path):
    path, _ = project_path
    child = _child(REPRO, path)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert out.split("\n")[:2] == ["info 0", "saved"]
    with ProjectStore.open(path) as again:
        assert again.integrity_ok()
        assert (again.get_setting("first"), again.get_setting("second")) == (1, 2)


def test_a_program_that_deletes_the_journal_is_noticed_before_the_next_write(project_path):
    """A foreign SQLite client that ignores the project lock checkpoints and deletes the -wal
    after our locks were dropped: the next save says so instead of writing into a deleted file."""
    path, _ = project_path
    store = ProjectStore.open(path)
    store.set_setting("before", 1)
    with open(path, "rb") as fh:
        fh.read(64)
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
                    " c.execute('SELECT COUNT(*) FROM images').fetchone(); c.close()", str(path)],
                   check=True)
    assert not Path(f"{path}-wal").exists()
    with pytest.raises(JournalLostError, match="was deleted by another program"):
        store.set_setting("after", 2)
    store.close()
    with ProjectStore.open(path) as again:
        assert again.get_setting("before") == 1 and again.get_setting("after") is None


# ---------------------------------------------------------------- one writer at a time
HOLDER = """
    import sys
    from cellseg.core.project.store import ProjectStore
    store = ProjectStore.open(sys.argv[1])
    store.set_setting("holder", "child")
    print("holding", flush=True)
    sys.stdin.readline()
    store.set_setting("holder", "child, later")
    print("still saving", flush=True)
    sys.stdin.readline()
"""


def test_second_writer_is_refused_with_the_holder_named_and_readers_still_work(
        project_path, tmp_path):
    path, _ = project_path
    child = _child(HOLDER, path)
    try:
        assert child.stdout.readline().strip() == "holding"
        with pytest.raises(ProjectLockedError, match=f"pid {child.pid} on "):
            ProjectStore.open(path)
        # a CLI write is refused the same way, and changes nothing
        before = _files(path)
        proc = subprocess.run([*CLI, "project", "create", str(tmp_path), "--out", str(path),
                               "--force"], capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.strip().count("\n") == 0 and f"pid {child.pid}" in proc.stderr
        assert _files(path) == before
        # read-only commands work from a snapshot while the holder goes on saving
        proc = subprocess.run([*CLI, "project", "info", str(path)], capture_output=True,
                              text=True)
        assert proc.returncode == 0 and "1 images" in proc.stdout
        with ProjectStore.open(path, read_only=True) as reader:
            assert reader.get_setting("holder") == "child"
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "still saving"
            assert reader.get_setting("holder") == "child"  # its snapshot
        proc = subprocess.run([*CLI, "export", str(path), "--out", str(tmp_path / "e.json")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    finally:
        child.kill()
        child.wait()
    # the kernel released the dead holder's lock: no stale lock to clear by hand
    with ProjectStore.open(path) as again:
        assert again.get_setting("holder") == "child, later"
    assert lock_path(path).exists()


def test_reader_store_refuses_writes_with_one_line(project_path):
    path, image_id = project_path
    with ProjectStore.open(path, read_only=True) as reader:
        assert reader.read_only == "opened read-only"
        ann = reader.load(image_id)
        with pytest.raises(DataError, match="read-only.*this edit was not saved"):
            reader.save_edit(image_id, E.delete(ann, [int(ann.uids[0])]))


# ---------------------------------------------------------------- read-only and damaged files
@contextmanager
def _read_only(path: Path):
    """Make the file read-only for this process too (root ignores permission bits, not the
    immutable flag)."""
    os.chmod(path, 0o444)
    immutable = os.geteuid() == 0
    if immutable:
        proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            os.chmod(path, 0o644)
            pytest.skip(f"running as root and chattr +i is refused here: {proc.stderr.strip()}")
    try:
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        os.chmod(path, 0o644)


def test_read_only_project_file_opens_read_only(project_path):
    path, image_id = project_path
    before = _files(path)
    with _read_only(path):
        with ProjectStore.open(path) as store:
            assert store.read_only == "the project file is read-only"
            ann = store.load(image_id)
            assert len(ann) == 125
            with pytest.raises(DataError, match="read-only"):
                store.save_edit(image_id, E.delete(ann, [int(ann.uids[0])]))
        # (a read-only reader may leave an empty -wal and an -shm index beside it)
        assert _files(path)[path.name] == before[path.name]


@pytest.mark.parametrize("damage", ["zero bytes", "text", "foreign sqlite", "torn pages"])
def test_damaged_or_foreign_file_is_a_clear_error_and_never_written(project_path, tmp_path,
                                                                    damage):
    path, _ = project_path
    if damage == "zero bytes":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("cell,x,y\n1,2,3\n")
    elif damage == "foreign sqlite":
        import sqlite3
        path.unlink()
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE t(x)")
        conn.commit()
        conn.close()
    else:  # a crash of the disk, not of SQLite: pages of the instance table overwritten
        data = bytearray(path.read_bytes())
        assert len(data) >= 12 * 4096
        data[4 * 4096:8 * 4096] = os.urandom(4 * 4096)
        path.write_bytes(bytes(data))
    before = _files(path)
    with pytest.raises(DataError) as err:
        ProjectStore.open(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert ("damaged" in message) if damage == "torn pages" else ("not a cellseg project" in message)
    assert _files(path) == before
    proc = subprocess.run([*CLI, "project", "info", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert _files(path)[path.name] == before[path.name]  # (a reader's -shm may stay beside it)


# ---------------------------------------------------------------- disk full
DISK_FULL = """
    import os, resource, signal, sys
    from cellseg.core.errors import DataError
    from cellseg.core.project import edits as E
    from cellseg.core.project.raster import brush_region
    from cellseg.core.project.store import ProjectStore

    path, image_id = sys.argv[1], int(sys.argv[2])
    store = ProjectStore.open(path)
    ann = store.load(image_id)
    edit = E.delete(ann, [int(ann.uids[0])])
    ann.apply(edit)
    store.save_edit(image_id, edit)
    print("saved small", flush=True)
    # from here on the journal cannot take one more page: the disk is full
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(path + "-wal") + 1024, hard))
    region = brush_region([(40, 40), (470, 470)], 40, ann.image_size)
    big = E.draw_instance(ann, region, 0)  # a large new mask: many pages
    try:
        store.save_edit(image_id, big)
        print("saved big", flush=True)
    except DataError as exc:
        print("refused", exc, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space freed again
    ann.apply(big)
    store.save_edit(image_id, big)
    print("saved big after space was freed", flush=True)
    store.close()
"""


def test_disk_full_during_an_edit_is_one_message_and_loses_nothing_saved(project_path):
    path, image_id = project_path
    child = _child(DISK_FULL, path, image_id)
    out, _ = child.communicate(timeout=120)
    lines = out.strip().split("\n")
    assert child.returncode == 0, out
    assert lines[0] == "saved small"
    assert lines[1].startswith("refused could not save to project")
    assert "this edit was not saved, everything saved before it is safe" in lines[1]
    assert lines[2] == "saved big after space was freed"
    with ProjectStore.open(path) as again:
        assert again.integrity_ok()
        labels = [label for _, _, label, _ in again.edit_log()]
        assert len(labels) == 2 and labels[0].startswith("Delete")
        assert labels[1] == "Draw instance"
        assert again.counts(image_id).drawn == 1


# ---------------------------------------------------------------- power cuts
EDITOR = """
    import sys
    import numpy as np
    from cellseg.core.project import edits as E
    from cellseg.core.project.raster import polygon_region
    from cellseg.core.project.store import ProjectStore

    path, image_id, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = ProjectStore.open(path)
    ann = store.load(image_id)
    rng = np.random.default_rng(0)
    for i in range(1, n + 1):
        x, y = rng.uniform(30, 480, 2)
        region = polygon_region([(x, y), (x + 12, y), (x + 6, y + 14)], ann.image_size)
        edit = E.draw_instance(ann, region, 0)
        ann.apply(edit)
        with store.transaction():  # the edit and its counter commit together
            store.save_edit(image_id, edit)
            store.set_setting("edits", i)
        print(i, flush=True)
"""


def test_power_cut_at_random_moments_leaves_a_prefix_of_the_edits(project_path, tmp_path):
    """Freeze the editing process at random moments and copy the database and its journal as
    a power cut would leave them (no -shm: memory is lost); every copy must open, pass SQLite's
    integrity check and hold exactly the first k edits, k at least those reported done."""
    path, image_id = project_path
    n = 100_000  # more than the cuts can ever see: the editor is killed after the last cut
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(EDITOR), str(path),
                              str(image_id), str(n)], stdout=subprocess.PIPE)
    fd = child.stdout.fileno()
    os.set_blocking(fd, False)
    rng = random.Random(0)
    copies, done, buffer = [], 0, b""
    try:
        while child.poll() is None and len(copies) < 30:
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(child.pid, signal.SIGSTOP)
            try:
                try:
                    buffer += os.read(fd, 1 << 20)
                except BlockingIOError:
                    pass
                done = max([done] + [int(v) for v in buffer.split(b"\n")[:-1]])
                where = tmp_path / f"cut{len(copies):02d}"
                where.mkdir()
                for p in (path, Path(f"{path}-wal")):
                    if p.exists():
                        shutil.copyfile(p, where / p.name)
                copies.append((where / path.name, done))
            finally:
                os.kill(child.pid, signal.SIGCONT)
    finally:
        child.kill()
        child.wait()
    assert len(copies) == 30, f"the editor finished after {len(copies)} cuts: raise n"
    assert copies[-1][1] > copies[0][1], "the cuts must fall during the stream of edits"
    for copy, reported in copies:
        with ProjectStore.open(copy) as store:
            assert store.integrity_ok()
            k = store.get_setting("edits", 0)
            log = store.edit_log(image_id)
            assert reported <= k <= n
            assert len(log) == k and all(label == "Draw instance" for _, _, label, _ in log)
            # (a later drawing may cover an earlier one whole, which removes it)
            assert store.counts(image_id).drawn <= k and (k == 0 or store.counts(image_id).drawn > 0)
