"""The small values of a review session: each image's state and record, the key of one raw
model output, a read-only view of one image, and the undo history of the current image."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from ..project.annotations import ImageAnnotations
from ..project.states import Edit
from ..project.status import cells as cells_of
from ..structures import Instances
from ..tiling.grid import TileSettings
from .sources import ImageEntry


class ImageState(str, Enum):
    """Where an image stands in the review; the values are what the image list shows."""

    NOT_RUN = "not run"
    RUNNING = "running"
    PREDICTED = "predicted"  # a composed model result, untouched
    ANNOTATED = "annotated"  # the project holds instances for it (imported or stored), untouched
    EDITED = "edited"
    REVIEWED = "reviewed"
    ERROR = "error"


@dataclass(frozen=True)
class RawKey:
    """One raw model output: the image, the model slot and everything that changes the output
    (checkpoint, device, precision, TTA, tiling). Outputs are cached under it, so
    post-processing never re-runs a model. ``tile``: predict images larger than one tile tile by
    tile (None: whole, resized as the config says)."""

    image: str
    model: str
    config: str
    weights: str
    device: str
    tta: bool
    precision: str = "exact"  # "exact" or "fast": fast outputs differ slightly, never mixed
    tile: TileSettings | None = None


@dataclass(frozen=True)
class ImageInfo:
    """What the image list shows of one image."""

    name: str
    path: Path
    state: ImageState
    cells: int | None  # instances neither rejected nor empty; None before any result
    message: str = ""  # why the image is in the error state


@dataclass(eq=False)
class ReviewImage:
    """The session's record of one image of the list (mutable; only the session changes it)."""

    entry: ImageEntry
    composed: tuple[tuple, Instances] | None = None  # (compose key, result)
    ann: ImageAnnotations | None = None  # the editing model, while there is one
    ann_from: Instances | None = None  # the result ``ann`` was made from (None: not a result)
    touched: bool = False  # edited in this session: the annotations no longer follow results
    running: bool = False
    message: str = ""  # the last run's error
    image_id: int | None = None  # the project's id for it
    stored: bool = False  # the project holds this image's annotations
    project_status: str | None = None  # ``image_statuses``' word for it
    project_cells: int | None = None

    @property
    def reviewed(self) -> bool:
        if self.ann is not None:
            return self.ann.reviewed
        return self.project_status == "reviewed"

    @property
    def state(self) -> ImageState:
        if self.running:
            return ImageState.RUNNING
        if self.message:
            return ImageState.ERROR
        if self.reviewed:
            return ImageState.REVIEWED
        if self.touched or self.project_status == "edited":
            return ImageState.EDITED
        if self.stored:
            return ImageState.ANNOTATED
        return ImageState.PREDICTED if self.composed is not None else ImageState.NOT_RUN

    @property
    def cells(self) -> int | None:
        """Instances neither rejected nor empty (a model result: all its instances)."""
        if self.ann is not None and (self.touched or self.stored):
            return cells_of(self.ann)
        if self.project_cells is not None:
            return self.project_cells
        return len(self.composed[1]) if self.composed is not None else None

    def result(self, compose_key: tuple) -> Instances | None:
        """The composed result if it was composed under ``compose_key``."""
        if self.composed is None or self.composed[0] != compose_key:
            return None
        return self.composed[1]

    def compose(self, compose_key: tuple, make: Callable[[], Instances | None]) -> None:
        """Keep ``make()``'s result under ``compose_key`` unless one is kept for it already
        (``make`` returns None while a raw output is missing)."""
        if self.result(compose_key) is None:
            result = make()
            if result is not None:
                self.composed = (compose_key, result)

    def follow(self, result: Instances | None, uid_source: Callable[[], int] | None,
               rebuild: bool = False) -> bool:
        """Make the editing model the new ``result`` (fresh uids from ``uid_source``, the
        project's when one is open); True if ``ann`` changed. Edited images keep theirs."""
        if self.touched or self.stored:
            return False
        before = self.ann
        if result is None:
            self.ann = None
        elif self.ann is None or rebuild or self.ann_from is not result:
            uids = None if uid_source is None else [uid_source() for _ in range(len(result))]
            self.ann = ImageAnnotations.from_instances(result, uids=uids, uid_source=uid_source)
        self.ann_from = result
        return self.ann is not before

    def info(self) -> ImageInfo:
        return ImageInfo(self.entry.name, Path(self.entry.path), self.state, self.cells,
                         self.message)


class History:
    """Undo and redo stacks of finished :class:`Edit`s (one image's; napari's labels layer
    keeps its own history the same way). Pure bookkeeping: the session applies and saves."""

    def __init__(self) -> None:
        self._done: list[Edit] = []
        self._undone: list[Edit] = []

    def push(self, edit: Edit) -> None:
        self._done.append(edit)
        self._undone.clear()

    def clear(self) -> None:
        self._done.clear()
        self._undone.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._done)

    @property
    def can_redo(self) -> bool:
        return bool(self._undone)

    @property
    def undo_label(self) -> str:
        return self._done[-1].label if self._done else ""

    @property
    def redo_label(self) -> str:
        return self._undone[-1].label if self._undone else ""

    def labels(self) -> list[str]:
        """Labels of the done edits, oldest first (what a History view lists)."""
        return [e.label for e in self._done]

    def next_undo(self) -> Edit | None:
        return self._done[-1] if self._done else None

    def next_redo(self) -> Edit | None:
        return self._undone[-1] if self._undone else None

    def undone(self) -> None:
        """The edit :meth:`next_undo` named was taken back (and saved)."""
        self._undone.append(self._done.pop())

    def redone(self) -> None:
        """The edit :meth:`next_redo` named was applied again (and saved)."""
        self._done.append(self._undone.pop())
