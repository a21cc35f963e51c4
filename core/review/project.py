"""How a review session's images meet a project: names relative to the project's images folder,
each image's stored status, and edits made before the project existed."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import CellsegError, DataError
from ..project.annotations import ImageAnnotations
from ..project.states import Edit, Origin
from ..project.status import ImageStatus, image_statuses
from ..project.store import ProjectStore
from .sources import ImageSource, open_source
from .state import ReviewImage


def create(path: str | Path, images_dir: str | Path,
           models: Iterable[tuple[str | Path, str | Path]], unsaved: list[tuple[Path, ImageAnnotations]]) -> None:
    """Create a project for ``images_dir`` holding ``models`` and the ``unsaved`` edits.
    Raises CellsegError (nothing is left behind)."""
    from ..project.exchange import create_project

    create_project(images_dir, path, models=list(models))
    if unsaved:
        with ProjectStore.open(path) as store:
            save_unsaved(store, unsaved)


def open_project(path: str | Path) -> tuple[ProjectStore, ImageSource]:
    """The project (its lock taken) and its images folder. Raises CellsegError."""
    store = ProjectStore.open(path)
    try:
        return store, open_source(store.images_dir)
    except BaseException:
        store.close()
        raise


def read_only_note(store: ProjectStore) -> str:
    """What a user is told on opening a project that cannot be written."""
    return (f"project {store.path} is open read-only ({store.read_only}): you can look and "
            "export, but edits are not saved")


def project_name(store: ProjectStore, path: str | Path) -> str:
    """The name the project knows an image file by (relative to its images folder, POSIX)."""
    return Path(os.path.relpath(Path(path).resolve(), store.images_dir)).as_posix()


def statuses(store: ProjectStore, image_id: int | None = None) -> dict[str, ImageStatus]:
    """Each project image's status by name (one query); see :func:`image_statuses`."""
    return image_statuses(store, image_id)


def save_unsaved(store: ProjectStore, edited: Iterable[tuple[Path, ImageAnnotations]]) -> int:
    """Write annotations edited before the project existed into it, in one transaction.

    Instances keep their origin and review (an untouched prediction stays "model", a drawn one
    "drawn"); an image marked reviewed is marked reviewed in the project too.

    Args:
        store: the new, writable project.
        edited: (image path, its annotations) pairs; images the project lacks are skipped.

    Returns:
        How many images were written.
    """
    written = 0
    with store.transaction():
        for path, ann in edited:
            record = store.image_by_name(project_name(store, path))
            if record is None or record.image_size != ann.image_size:
                continue
            inst = ann.to_instances()
            for origin in np.unique(ann.origins):
                rows = np.flatnonzero(ann.origins == origin)
                store.add_instances(record.id, inst[rows], Origin(int(origin)),
                                    ids=ann.uids[rows], reviews=ann.reviews[rows])
            if ann.reviewed:
                store.save_edit(record.id, Edit("Mark image reviewed", reviewed=(False, True)))
            written += 1
    return written


def attach(store: ProjectStore, images: Iterable[ReviewImage]) -> None:
    """Match images to the project by name: its id for each, and what it holds of each."""
    known = statuses(store)
    for rec in images:
        name = project_name(store, rec.entry.path)
        record = store.image_by_name(name)
        status = known.get(name)
        rec.image_id = None if record is None else record.id
        if status is not None:
            rec.project_status, rec.project_cells = status.status, status.cells
            rec.stored = status.status != "not run"


def detach(images: Iterable[ReviewImage]) -> None:
    """Forget what a closed project held of each image (it is all saved there)."""
    for rec in images:
        rec.ann, rec.ann_from, rec.touched, rec.stored = None, None, False, False
        rec.image_id = rec.project_status = rec.project_cells = None


def refresh(store: ProjectStore, rec: ReviewImage) -> None:
    """Read the image's status and cell count back from the project (after a save)."""
    status = statuses(store, rec.image_id).get(project_name(store, rec.entry.path))
    if status is not None:
        rec.project_status, rec.project_cells = status.status, status.cells


def save(store: ProjectStore, rec: ReviewImage, edit: Edit, applied: bool) -> str | None:
    """Write ``edit`` of ``rec``'s annotations (see :func:`write_edit`); the project gets the
    image first if it lacks it. Why the project refused the write, or None when saved."""
    image_id = rec.image_id
    if image_id is None:
        try:
            h, w = rec.ann.image_size
            image_id = store.add_image(project_name(store, rec.entry.path), h, w).id
        except (CellsegError, sqlite3.Error) as exc:
            return f"cannot save to the project: {exc}"
    refused = write_edit(store, image_id, rec.ann, edit, applied, first=not rec.stored)
    if refused is None:
        rec.image_id, rec.stored = image_id, True  # only once committed
    return refused


def write_edit(store: ProjectStore, image_id: int, ann: ImageAnnotations, edit: Edit,
               applied: bool, first: bool) -> str | None:
    """Write one edit of an image's annotations as one transaction.

    The first edit of an image also writes the predictions it was made on: a prediction
    becomes part of the project when it is first edited.

    Args:
        store: the open project.
        image_id: the project's id of the image.
        ann: the image's annotations.
        edit: the edit (or an undo's inverse).
        applied: ``ann`` already shows the edit (a live brush stroke).
        first: the project holds nothing of this image yet (``ann`` is a model result).

    Returns:
        Why the project refused the write, or None when it is saved.
    """
    try:
        if store.read_only is not None:
            raise DataError(f"project {store.path} is open read-only ({store.read_only}): the "
                            "edit was not saved")
        with store.transaction():
            if first:
                original = ann.copy()
                if applied:
                    original.undo(edit)
                store.add_instances(image_id, original.to_instances(), Origin.MODEL,
                                    ids=original.uids)
            store.save_edit(image_id, edit)
    except (CellsegError, sqlite3.Error) as exc:
        return f"cannot save to the project: {exc}"
    return None
