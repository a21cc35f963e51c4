"""A project: one SQLite database holding images, categories, models, settings and every
image's instances (one row per instance, its mask as a COCO RLE string).

Durability: the database runs in WAL mode with ``synchronous=FULL`` and every finished edit is
one transaction that writes only the rows the edit changed (plus one log row). A crash or a
SIGKILL loses at most the edit in flight; saving costs the same in a project of ten images or
ten thousand. Deleted instances stay as rows flagged ``deleted`` (they are counted, never
exported); an instance that an edit created and an undo removed again is dropped.

Image paths are stored relative to the images folder, and the images folder relative to the
database file when it lies below the same root, so a project folder can be moved as a whole.
"""
from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import DataError
from ..structures.instances import Instances
from ..structures.masks import CroppedMasks
from .annotations import ImageAnnotations
from .database import (JournalLostError, Transaction, check_project, connect,
                       connect_read_only, file_id, not_writable, wal_path)
from .geometry import tighten_masks
from .lock import ProjectLock
from .records import Category, ExportImage, ImageRecord, ModelRecord, ReviewCounts, image_record
from .rle import decode_rle_strings
from .rows import INSERT_SQL, ORIGIN_OF, REVIEW_OF, UPSERT_SQL, instance_rows
from .states import Edit, Origin, Review

class ProjectStore:
    """Open with :meth:`create` or :meth:`open`; use as a context manager or call :meth:`close`.

    A writable store holds the project's :class:`~.lock.ProjectLock` until it is closed, so a
    second writer (another window, ``cellseg project create --force``) is refused with the
    holder's name. A read-only store (``open(..., read_only=True)``, or a project file the user
    may not write) takes no lock and reads one consistent snapshot: the state of the last edit
    committed before it opened, whatever the writer does meanwhile.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: ProjectLock | None = None,
                 read_only: str | None = None):
        self.path = Path(path)
        self._conn = conn
        self._lock = lock
        self.read_only = read_only  # why the store cannot be written (None: writable)
        self._journal = None if read_only else file_id(wal_path(self.path))
        self._next_uid = (conn.execute("SELECT MAX(id) FROM instances").fetchone()[0] or 0) + 1

    # ------------------------------------------------------------ open / create
    @classmethod
    def create(cls, path: str | Path, images_dir: str | Path, overwrite: bool = False
               ) -> "ProjectStore":
        path = Path(path)
        if path.exists() and not overwrite:
            raise DataError(f"project file already exists: {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = ProjectLock.acquire(path)  # refuses to replace a project open elsewhere
        try:
            for p in (path, wal_path(path), Path(f"{path}-shm")):
                p.unlink(missing_ok=True)
            store = cls(path, connect(path), lock)
            store.set_setting("images_dir", _portable(Path(images_dir), path.parent))
        except BaseException:
            lock.release()
            raise
        return store

    @classmethod
    def open(cls, path: str | Path, read_only: bool = False) -> "ProjectStore":
        """Open a project for editing (taking its lock), or ``read_only`` (no lock, a snapshot).

        A project file or folder the user may not write opens read-only too; ``read_only`` on
        the returned store says why. Raises DataError (ProjectLockedError when another process
        holds the project) with a message naming the file; a file that is not a sound cellseg
        project is never written to.
        """
        path = Path(path)
        if not path.is_file():
            raise DataError(f"project not found: {path}")
        reason = "opened read-only" if read_only else not_writable(path)
        if reason is not None:
            conn = connect_read_only(path)
            try:
                check_project(conn, path, read_only=True)
                conn.execute("BEGIN")  # one snapshot for the store's lifetime
                conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
            except BaseException:
                conn.close()
                raise
            return cls(path, conn, None, reason)
        lock = ProjectLock.acquire(path)
        try:
            # the header is read through SQLite itself: no raw open of the file
            return cls(path, connect(path, existing=True), lock)
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "ProjectStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_journal(self) -> None:
        """Raise :class:`JournalLostError` if the project's ``-wal`` was deleted or replaced
        behind this connection's back (by a program that ignores the project lock), before
        anything is written into a file no one will ever read again."""
        if self._journal is not None and file_id(wal_path(self.path)) != self._journal:
            raise JournalLostError(
                f"the journal of project {self.path} ({wal_path(self.path).name}) was deleted "
                "by another program while the project was open: this edit was NOT saved (every "
                "edit before it is in the project file). Close and reopen the project to go on")

    @property
    def schema_version(self) -> int:
        return self._conn.execute("PRAGMA user_version").fetchone()[0]

    @property
    def total_changes(self) -> int:
        """Rows written through this connection so far (shows what a save costs)."""
        return self._conn.total_changes

    # ------------------------------------------------------------ settings and models
    def get_setting(self, key: str, default=None):
        row = self._conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_setting(self, key: str, value) -> None:
        with self._tx():
            self._conn.execute("INSERT INTO settings(key, value) VALUES (?, ?) ON CONFLICT(key) "
                               "DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    @property
    def images_dir(self) -> Path:
        return (self.path.parent / self.get_setting("images_dir", ".")).resolve()

    def add_model(self, config: str | Path, weights: str | Path) -> ModelRecord:
        with self._tx():
            cur = self._conn.execute("INSERT INTO models(config, weights) VALUES (?, ?)",
                                     (str(Path(config).resolve()), str(Path(weights).resolve())))
        return ModelRecord(cur.lastrowid, str(Path(config).resolve()), str(Path(weights).resolve()))

    def models(self) -> list[ModelRecord]:
        return [ModelRecord(*r) for r in
                self._conn.execute("SELECT id, config, weights FROM models ORDER BY id")]

    # ------------------------------------------------------------ categories
    def set_categories(self, categories: Iterable[Category]) -> None:
        cats = list(categories)
        with self._tx():
            self._conn.execute("DELETE FROM categories")
            self._conn.executemany(
                "INSERT INTO categories(class_index, coco_id, name, supercategory) "
                "VALUES (?, ?, ?, ?)",
                [(c.class_index, c.coco_id, c.name, c.supercategory) for c in cats])

    def categories(self) -> list[Category]:
        return [Category(*r) for r in self._conn.execute(
            "SELECT class_index, coco_id, name, supercategory FROM categories ORDER BY class_index")]

    # ------------------------------------------------------------ images
    def add_image(self, file_name: str, height: int, width: int, image_id: int | None = None
                  ) -> ImageRecord:
        try:
            with self._tx():
                cur = self._conn.execute(
                    "INSERT INTO images(id, file_name, height, width) VALUES (?, ?, ?, ?)",
                    (image_id, str(file_name), int(height), int(width)))
        except sqlite3.IntegrityError as exc:
            raise DataError(f"image {file_name!r} (id {image_id}) is already in the project"
                            ) from exc
        return ImageRecord(cur.lastrowid, str(file_name), int(height), int(width), False)

    def images(self, reviewed: bool | None = None) -> list[ImageRecord]:
        sql = "SELECT id, file_name, height, width, reviewed FROM images"
        if reviewed is not None:
            sql += f" WHERE reviewed = {int(reviewed)}"
        return [image_record(r) for r in self._conn.execute(sql + " ORDER BY id")]

    def image(self, image_id: int) -> ImageRecord:
        row = self._conn.execute("SELECT id, file_name, height, width, reviewed FROM images "
                                 "WHERE id = ?", (int(image_id),)).fetchone()
        if row is None:
            raise DataError(f"no image with id {image_id} in project {self.path}")
        return image_record(row)

    def image_by_name(self, file_name: str) -> ImageRecord | None:
        row = self._conn.execute("SELECT id, file_name, height, width, reviewed FROM images "
                                 "WHERE file_name = ?", (str(file_name),)).fetchone()
        return None if row is None else image_record(row)

    def image_path(self, image: ImageRecord) -> Path:
        return self.images_dir / image.file_name

    def next_unreviewed(self, after_id: int | None = None) -> ImageRecord | None:
        """The first unreviewed image after ``after_id`` (wrapping around), or None."""
        sql = ("SELECT id, file_name, height, width, reviewed FROM images WHERE reviewed = 0 "
               "ORDER BY (id <= ?), id LIMIT 1")
        row = self._conn.execute(sql, (-1 if after_id is None else int(after_id),)).fetchone()
        return None if row is None else image_record(row)

    def review_tallies(self, image_id: int | None = None) -> list[tuple[str, int, int, int, int]]:
        """Per image (or only ``image_id``), in one query: ``(file_name, reviewed, stored rows,
        cells, touched rows)``; cells are present, not rejected and not empty, touched rows are
        deleted, edited, drawn or reviewed (``core.project.status`` words them)."""
        where = "" if image_id is None else "WHERE im.id = ? "
        return self._conn.execute(
            "SELECT im.file_name, im.reviewed, COUNT(i.id), "
            "SUM(i.deleted = 0 AND i.review != 'rejected' AND i.area > 0), "
            "SUM(i.deleted = 1 OR i.origin IN ('edited', 'drawn', 'assisted') OR i.review != 'pending') "
            "FROM images im LEFT JOIN instances i ON i.image_id = im.id " + where +
            "GROUP BY im.id", () if image_id is None else (int(image_id),)).fetchall()

    # ------------------------------------------------------------ instances
    def new_uid(self) -> int:
        """A fresh instance id: ids are never reused within a session, even after an undo."""
        uid = self._next_uid
        self._next_uid += 1
        return uid

    def add_instances(self, image_id: int, instances: Instances, origin: Origin = Origin.MODEL,
                      ids: Iterable[int] | None = None, reviews: Iterable[int] | None = None,
                      label_ids: Iterable[int] | None = None) -> list[int]:
        """Store predictions or imported annotations of one image in one transaction."""
        image = self.image(image_id)
        if instances.image_size != image.image_size:
            raise DataError(f"instances are for a {instances.image_size} image, but "
                            f"{image.file_name} is {image.image_size}")
        n = len(instances)
        if ids is None:
            ids = [self.new_uid() for _ in range(n)]
        ids = [int(i) for i in ids]
        reviews = [Review.PENDING] * n if reviews is None else [Review(r) for r in reviews]
        masks = tighten_masks(instances.masks)
        rows = instance_rows(image_id, ids, masks, instances.classes, instances.scores,
                     [origin] * n, reviews)
        try:
            with self._tx():
                labels = [0] * n if label_ids is None else [int(v) for v in label_ids]
                self._conn.executemany(INSERT_SQL, [r + (0, v) for r, v in zip(rows, labels)])
        except sqlite3.IntegrityError as exc:
            raise DataError(f"instance ids already used in the project: {exc}") from exc
        self._next_uid = max(self._next_uid, max(ids, default=0) + 1)
        return ids

    def load(self, image_id: int) -> ImageAnnotations:
        """The image's current instances, ready to edit (new ids come from this store)."""
        image = self.image(image_id)
        rows = self._conn.execute(
            "SELECT id, class_index, score, origin, review, rle FROM instances "
            "WHERE image_id = ? AND deleted = 0 ORDER BY id", (image.id,)).fetchall()
        try:
            masks = decode_rle_strings([r[5] for r in rows], image.image_size)
        except DataError as exc:
            raise DataError(f"project {self.path}, image {image.file_name}: {exc}") from exc
        ids = np.array([r[0] for r in rows], np.int64)
        origins = np.array([ORIGIN_OF[r[3]] for r in rows], np.int8)
        reviews = np.array([REVIEW_OF[r[4]] for r in rows], np.int8)
        return ImageAnnotations(image.image_size, ids, [r[1] for r in rows],
                                [r[2] for r in rows], origins, reviews, masks,
                                reviewed=image.reviewed, uid_source=self.new_uid)

    def save_edit(self, image_id: int, edit: Edit) -> None:
        """Persist a finished edit (or the inverse of one, for undo) as one transaction."""
        changes = edit.after
        present = [s for s in changes.values() if s is not None]
        gone = [u for u, s in changes.items() if s is None]
        rows = []
        if present:
            h, w = self.image(image_id).image_size
            masks = CroppedMasks.from_crops((h, w), [s.window for s in present],
                                            [s.crop for s in present])
            rows = instance_rows(image_id, [s.uid for s in present], masks,
                         [s.class_id for s in present], [s.score for s in present],
                         [s.origin for s in present], [s.review for s in present])
        with self._tx():
            if rows:
                self._conn.executemany(UPSERT_SQL, rows)
            if gone:
                # undoing a creation drops the row; deleting a prediction keeps it, flagged
                self._conn.executemany("DELETE FROM instances WHERE id = ? AND created = 1",
                                       [(u,) for u in gone])
                self._conn.executemany("UPDATE instances SET deleted = 1 WHERE id = ?",
                                       [(u,) for u in gone])
            if edit.reviewed is not None:
                self._conn.execute(
                    "UPDATE images SET reviewed = ?, reviewed_at = CASE WHEN ? THEN "
                    "strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END WHERE id = ?",
                    (int(edit.reviewed[1]), int(edit.reviewed[1]), int(image_id)))
            self._conn.execute("INSERT INTO edit_log(image_id, label, instances) VALUES (?, ?, ?)",
                               (int(image_id), edit.label, len(changes)))

    def counts(self, image_id: int | None = None) -> ReviewCounts | dict[int, ReviewCounts]:
        """Review counts of one image, or of every image (one query)."""
        sql = ("SELECT image_id, "
               "SUM(deleted = 0), SUM(deleted = 0 AND review = 'accepted'), "
               "SUM(deleted = 0 AND review = 'rejected'), SUM(deleted = 0 AND review = 'pending'), "
               "SUM(deleted = 0 AND origin = 'edited'), SUM(deleted = 0 AND origin = 'drawn'), "
               "SUM(deleted), SUM(deleted = 0 AND origin = 'assisted') FROM instances")
        if image_id is not None:
            row = self._conn.execute(sql + " WHERE image_id = ?", (int(image_id),)).fetchone()
            return ReviewCounts(*[int(v or 0) for v in row[1:]])
        return {r[0]: ReviewCounts(*[int(v or 0) for v in r[1:]])
                for r in self._conn.execute(sql + " GROUP BY image_id")}

    def exportable(self, reviewed_only: bool = False) -> Iterator["ExportImage"]:
        """Each image's exportable instances in id order: deleted, rejected and empty ones (no
        pixel: a model's empty mask, box [0, 0, 0, 0]) left out."""
        for image in self.images(reviewed=True if reviewed_only else None):
            ann = self.load(image.id)
            keep = np.flatnonzero((ann.reviews != Review.REJECTED) & (ann.masks.areas() > 0))
            labels = dict(self._conn.execute(
                "SELECT id, label_id FROM instances WHERE image_id = ? AND deleted = 0",
                (image.id,)).fetchall())
            uids = ann.uids[keep]
            yield ExportImage(image, ann.to_instances()[keep], uids, ann.origins[keep],
                              np.array([labels[int(u)] for u in uids], np.int64))

    def edit_log(self, image_id: int | None = None) -> list[tuple[int, str, str, int]]:
        sql = "SELECT image_id, at, label, instances FROM edit_log"
        args: tuple = ()
        if image_id is not None:
            sql, args = sql + " WHERE image_id = ?", (int(image_id),)
        return self._conn.execute(sql + " ORDER BY id", args).fetchall()

    def integrity_ok(self) -> bool:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    def transaction(self):
        """Group several store calls into one transaction (all or nothing)."""
        return self._tx()

    # ------------------------------------------------------------ internals
    def _tx(self):
        return Transaction(self._conn, self)


def _portable(images_dir: Path, base: Path) -> str:
    """images_dir relative to the project's folder when possible, else absolute."""
    target = images_dir.resolve()
    try:
        return os.path.relpath(target, base.resolve())
    except ValueError:  # another drive on Windows
        return str(target)
