"""Project database schema, its version number and the migrations between versions.

The version lives in SQLite's ``PRAGMA user_version``; ``PRAGMA application_id`` marks the file
as a cellseg project so that opening some other SQLite file fails clearly. A new project is
created at version 1 and migrated up like any old one, so every migration runs in every test.
"""
from __future__ import annotations

import sqlite3

APPLICATION_ID = 0x4353_4547  # "CSEG"

# version 1: the first released layout
SCHEMA_V1 = """
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL                  -- JSON
);
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    config TEXT NOT NULL,                -- Detectron2 config path
    weights TEXT NOT NULL                -- checkpoint path
);
CREATE TABLE categories (
    class_index INTEGER PRIMARY KEY,     -- 0-based model class
    coco_id INTEGER NOT NULL UNIQUE,     -- category id in COCO files
    name TEXT NOT NULL,
    supercategory TEXT NOT NULL DEFAULT ''
);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,              -- COCO image id
    file_name TEXT NOT NULL UNIQUE,      -- relative to the images folder
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    reviewed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE instances (
    id INTEGER PRIMARY KEY,              -- uid in the editing model, COCO annotation id
    image_id INTEGER NOT NULL REFERENCES images(id),
    class_index INTEGER NOT NULL,
    score REAL NOT NULL,
    origin TEXT NOT NULL,                -- model | imported | edited | drawn | assisted
    review TEXT NOT NULL,                -- pending | accepted | rejected
    deleted INTEGER NOT NULL DEFAULT 0,  -- deleted by the user: kept, never exported
    created INTEGER NOT NULL DEFAULT 0,  -- made by an edit (not from a model or an import)
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL,
    area INTEGER NOT NULL,
    rle TEXT NOT NULL                    -- COCO compressed RLE counts of the full-image mask
);
CREATE INDEX instances_by_image ON instances(image_id, deleted);
"""

# version 2: a log of finished edits, when each image was marked reviewed, and each instance's
# value in the label image it was imported from (so label-TIFF exports restore it)
MIGRATION_V2 = """
CREATE TABLE edit_log (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    label TEXT NOT NULL,
    instances INTEGER NOT NULL           -- how many instance rows the edit wrote
);
ALTER TABLE images ADD COLUMN reviewed_at TEXT;
ALTER TABLE instances ADD COLUMN label_id INTEGER NOT NULL DEFAULT 0;
"""

MIGRATIONS: dict[int, str] = {1: SCHEMA_V1, 2: MIGRATION_V2}
SCHEMA_VERSION = max(MIGRATIONS)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring the database up to ``target``, each step in its own transaction. Returns the
    version found before migrating."""
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    for version in range(found + 1, target + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            if version == 1:
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return found


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript would commit on its own)."""
    out, buf = [], []
    for line in script.splitlines():
        code = line.split("--", 1)[0]
        buf.append(code)
        if code.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip()
            if sqlite3.complete_statement(stmt):
                out.append(stmt)
                buf = []
    rest = "\n".join(buf).strip()
    if rest:
        out.append(rest)
    return out
