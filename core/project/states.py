"""Value types of the editing model: one instance's full state, and a finished correction.

An :class:`Edit` *describes* a change as the full state of every instance it touches, before
and after (``None`` = absent). Applying it installs the "after" states; undoing applies the
"before" states. Because whole states are swapped, undo and redo are exact (pixel-identical
masks, same classes, scores, flags) by construction, and the project store can persist an edit
by writing just those rows. Everything here is immutable.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Mapping

import numpy as np

from ..errors import CellsegError
from .geometry import Window, same_pixels, tighten


class EditError(CellsegError):
    """An edit that cannot be made as asked (unknown instance, a line that cuts nothing, ...)."""


class Origin(IntEnum):
    MODEL = 0  # a model prediction, untouched
    IMPORTED = 1  # from an imported COCO file, untouched
    EDITED = 2  # a prediction or import whose mask or class was corrected
    DRAWN = 3  # created by hand
    ASSISTED = 4  # made by a model at the reviewer's request (box prompt, accepted candidate)


class Review(IntEnum):
    PENDING = 0
    ACCEPTED = 1
    REJECTED = 2  # kept in the project, left out of exports


# -------------------------------------------------------------------- regions and states
@dataclass(frozen=True, eq=False)
class Region:
    """A bitmap in image coordinates: ``crop`` covers ``window``."""

    window: Window
    crop: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "window", tuple(int(v) for v in self.window))
        x0, y0, x1, y1 = self.window
        crop = np.asarray(self.crop, bool)
        if crop.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"crop shape {crop.shape} does not match window {self.window}")
        object.__setattr__(self, "crop", crop)

    @property
    def empty(self) -> bool:
        return not self.crop.any()


@dataclass(frozen=True, eq=False)
class InstanceState:
    """Everything about one instance; immutable (its crop is a read-only array)."""

    uid: int
    window: Window
    crop: np.ndarray
    class_id: int
    score: float
    origin: Origin
    review: Review

    def __post_init__(self):
        object.__setattr__(self, "uid", int(self.uid))
        object.__setattr__(self, "window", tuple(int(v) for v in self.window))
        x0, y0, x1, y1 = self.window
        crop = np.asarray(self.crop, bool)
        if crop.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"crop shape {crop.shape} does not match window {self.window}")
        if crop.flags.writeable:
            crop = crop.copy()
            crop.setflags(write=False)
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "class_id", int(self.class_id))
        object.__setattr__(self, "score", float(np.float32(self.score)))
        object.__setattr__(self, "origin", Origin(self.origin))
        object.__setattr__(self, "review", Review(self.review))

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    @property
    def region(self) -> Region:
        return Region(self.window, self.crop)

    def with_mask(self, region: Region) -> "InstanceState":
        """The same instance with a new mask (tightened); marks a prediction as edited."""
        window, crop = tighten(region.window, region.crop)
        origin = Origin.EDITED if self.origin in (Origin.MODEL, Origin.IMPORTED) else self.origin
        return replace(self, window=window, crop=crop, origin=origin)

    def same_as(self, other: "InstanceState | None") -> bool:
        if other is None:
            return False
        return (self.uid == other.uid and self.class_id == other.class_id
                and self.score == other.score and self.origin == other.origin
                and self.review == other.review
                and same_pixels(self.window, self.crop, other.window, other.crop))


@dataclass(frozen=True)
class Edit:
    """A finished correction: full states of the touched instances before and after."""

    label: str
    before: Mapping[int, InstanceState | None] = field(default_factory=dict)
    after: Mapping[int, InstanceState | None] = field(default_factory=dict)
    reviewed: tuple[bool, bool] | None = None  # image "reviewed" flag (before, after)

    def inverse(self) -> "Edit":
        return Edit(self.label, self.after, self.before,
                    None if self.reviewed is None else (self.reviewed[1], self.reviewed[0]))

    @property
    def uids(self) -> list[int]:
        return sorted(self.after)

    def is_noop(self) -> bool:
        same_flag = self.reviewed is None or self.reviewed[0] == self.reviewed[1]
        return same_flag and all(
            (b is None and a is None) or (b is not None and b.same_as(a))
            for b, a in ((self.before.get(u), self.after.get(u)) for u in self.after))

