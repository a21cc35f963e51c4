"""The project's SQLite connection: opening it safely, transactions, and the errors a user sees.

Kept apart from :mod:`.store` (what the project holds) because this is about durability: WAL
journal with ``synchronous=FULL``, a header check that reads only through SQLite (a raw
``open()`` of the database file would drop SQLite's POSIX locks), read-only connections that can
never checkpoint or delete the journal, and write failures (disk full, read-only file, a journal
deleted by another program) turned into one message that says what was and was not saved.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Protocol

from ..errors import DataError
from .schema import APPLICATION_ID, SCHEMA_VERSION, migrate


class Store(Protocol):
    """What a transaction needs to know of the project that owns the connection (the
    :class:`~.store.ProjectStore`, which imports this module; hence a protocol, not an import)."""

    path: Path
    read_only: str | None  # why the project is read-only, or None

    def check_journal(self) -> None:
        """Raise :class:`JournalLostError` if the write-ahead log was deleted."""


class JournalLostError(DataError):
    """The project's write-ahead log disappeared while the project was open."""


class Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error); the connection runs in
    autocommit mode so that nothing else opens transactions behind our back. Inside an outer
    transaction it does nothing: the outer one commits or rolls back everything.

    A write that SQLite refuses (disk full, I/O error, read-only file) is rolled back and
    becomes one :class:`DataError` saying that this edit, and only this one, was not saved.
    """

    def __init__(self, conn, store: Store):
        self.conn = conn
        self.store = store
        self.outer = False

    def __enter__(self):
        if self.store.read_only is not None:  # (its snapshot is a read transaction)
            raise DataError(f"could not save to project {self.store.path}: the project is "
                            f"read-only ({self.store.read_only}); this edit was not saved")
        self.outer = not self.conn.in_transaction
        if self.outer:
            self.store.check_journal()
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise write_error(self.store, exc) from exc

    def __exit__(self, exc_type, exc, tb):
        if not self.outer:
            return False
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return False
            except sqlite3.Error as commit_exc:
                exc = commit_exc
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # SQLite already rolled back (e.g. after SQLITE_FULL)
        if isinstance(exc, sqlite3.Error) and not isinstance(exc, sqlite3.IntegrityError):
            raise write_error(self.store, exc) from exc
        return False


def write_error(store: Store, exc: sqlite3.Error) -> DataError:
    text = str(exc)
    if store.read_only is not None or "readonly" in text:
        why = f"the project is read-only ({store.read_only or text})"
    elif "full" in text:
        why = "the disk is full (free some space, then repeat the edit)"
    else:
        why = f"{text} (is the disk full or removed?)"
    return DataError(f"could not save to project {store.path}: {why}; this edit was not "
                     "saved, everything saved before it is safe")


def wal_path(path: Path) -> Path:
    return Path(f"{path}-wal")


def file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def not_writable(path: Path) -> str | None:
    """Why the project cannot be opened for writing (None if it can)."""
    if not os.access(path, os.W_OK):
        return "the project file is read-only"
    if not os.access(path.parent if str(path.parent) else ".", os.W_OK | os.X_OK):
        return "the project's folder is read-only"
    return None


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that can neither write nor checkpoint: it never deletes the ``-wal``."""
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        raise DataError(f"cannot read project {path}: {exc}") from exc
    return conn


def check_project(conn: sqlite3.Connection, path: Path, read_only: bool = False) -> None:
    """Read the header through SQLite; raise DataError unless this is a sound cellseg project
    this version can read (``read_only``: without migrating it). Runs before anything is
    written to the file."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise DataError(f"not a cellseg project (an empty or foreign SQLite database): {path}")
        if version > SCHEMA_VERSION:
            raise DataError(f"project {path} has schema version {version}, newer than this "
                            f"cellseg understands ({SCHEMA_VERSION}); update cellseg")
        if read_only and version < SCHEMA_VERSION:
            raise DataError(f"project {path} was made by an older cellseg (schema version "
                            f"{version}); open it once with write access to upgrade it")
        problem = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise DataError(f"not a cellseg project (not an SQLite database): {path}") from exc
        raise DataError(f"project {path} is damaged and was left as it is ({exc}); restore it "
                        "from a backup") from exc
    if problem != "ok":
        problem = " ".join(problem.split())[:200]  # SQLite's report spans lines
        raise DataError(f"project {path} is damaged and was left as it is ({problem}); restore "
                        "it from a backup")


def connect(path: Path, existing: bool = False) -> sqlite3.Connection:
    """The writer's connection: WAL journal, full sync, migrated to the current schema.

    ``existing``: the file must already be a sound cellseg project (:func:`check_project`,
    before anything is written to it)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    if existing:
        try:
            check_project(conn, path)
        except BaseException:
            conn.close()
            raise
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # a finished edit survives a power cut too
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise DataError(f"cannot open project {path}: {exc}") from exc
    return conn


