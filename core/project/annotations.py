"""The editing model of one image: its instances as columns, plus its "reviewed" flag.

:class:`ImageAnnotations` answers the questions the canvas and the tools ask (which instance
is under the cursor, which windows overlap, what a review filter shows) and installs finished
:class:`~cellseg.core.project.states.Edit` records; it never decides what an edit changes (that
is :mod:`cellseg.core.project.edits`).

Instances are kept sorted by their uid (the project's row id, unique across the project), so the
model's content is a pure function of its set of instance states: undoing a delete puts the
instance back at the very same position, and the rendering order never depends on history.
Masks stay in :class:`CroppedMasks` form; installing an edit copies the mask buffer once and
writes only the changed crops.
"""
from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from ..structures.instances import Instances
from ..structures.masks import CroppedMasks
from .geometry import Window, tighten_masks
from .states import Edit, EditError, InstanceState, Origin, Review


class ImageAnnotations:
    """The current image's instances, in uid order, plus its "reviewed" flag."""

    def __init__(self, image_size, uids, classes, scores, origins, reviews, masks: CroppedMasks,
                 reviewed: bool = False, uid_source: Callable[[], int] | None = None):
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.uids = np.asarray(uids, np.int64).reshape(-1)
        n = len(self.uids)
        self.classes = np.asarray(classes, np.int64).reshape(-1)
        self.scores = np.asarray(scores, np.float32).reshape(-1)
        self.origins = np.asarray(origins, np.int8).reshape(-1)
        self.reviews = np.asarray(reviews, np.int8).reshape(-1)
        if not (len(self.classes) == len(self.scores) == len(self.origins) == len(self.reviews)
                == len(masks) == n):
            raise ValueError("instance fields have different lengths")
        if tuple(masks.image_size) != self.image_size:
            raise ValueError("masks do not match the image size")
        if n and np.any(np.diff(self.uids) <= 0):
            order = np.argsort(self.uids, kind="stable")
            if np.any(np.diff(self.uids[order]) == 0):
                raise ValueError("instance uids are not unique")
            self.uids, self.classes, self.scores = self.uids[order], self.classes[order], self.scores[order]
            self.origins, self.reviews, masks = self.origins[order], self.reviews[order], masks[order]
        self.masks = masks
        self.reviewed = bool(reviewed)
        self._uid_source = uid_source
        self._next_uid = int(self.uids.max()) + 1 if n else 1

    def digest(self) -> str:
        """SHA-256 of uids, classes, origins, reviews and mask pixels (RLE counts).

        Scores, the image size and the image's reviewed flag are left out: equal digests mean
        the same instances with the same classes, review states and pixels, not equal objects.
        """
        import hashlib

        h = hashlib.sha256()
        for a in (self.uids, self.classes, self.origins, self.reviews):
            h.update(np.ascontiguousarray(a).tobytes())
        for r in self.masks.to_rle():
            h.update(r["counts"].encode())
        return h.hexdigest()

    # ------------------------------------------------------------ construction
    @staticmethod
    def from_instances(instances: Instances, uids=None, origin: Origin = Origin.MODEL,
                       reviews=None, reviewed: bool = False,
                       uid_source: Callable[[], int] | None = None) -> "ImageAnnotations":
        if instances.masks is None:
            raise EditError("instances without masks cannot be edited")
        n = len(instances)
        uids = np.arange(1, n + 1) if uids is None else np.asarray(uids, np.int64)
        origins = np.full(n, int(origin), np.int8) if np.ndim(origin) == 0 else origin
        reviews = np.zeros(n, np.int8) if reviews is None else reviews
        return ImageAnnotations(instances.image_size, uids, instances.classes, instances.scores,
                                origins, reviews, tighten_masks(instances.masks), reviewed,
                                uid_source)

    @staticmethod
    def empty(image_size, uid_source=None) -> "ImageAnnotations":
        z = np.zeros(0, np.int64)
        return ImageAnnotations(image_size, z, z, z, z, z, CroppedMasks.empty(image_size),
                                uid_source=uid_source)

    def new_uid(self) -> int:
        """A uid no instance of the project has (the store hands them out when attached)."""
        if self._uid_source is not None:
            return int(self._uid_source())
        uid = max(self._next_uid, int(self.uids.max()) + 1 if len(self.uids) else 1)
        self._next_uid = uid + 1
        return uid

    # ------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.uids)

    def __contains__(self, uid) -> bool:
        i = np.searchsorted(self.uids, uid)
        return bool(i < len(self.uids) and self.uids[i] == uid)

    def index_of(self, uid: int) -> int:
        i = int(np.searchsorted(self.uids, uid))
        if i >= len(self.uids) or self.uids[i] != uid:
            raise EditError(f"no instance with id {uid} on this image")
        return i

    def state(self, uid: int) -> InstanceState:
        i = self.index_of(uid)
        crop = self.masks.crop(i)
        crop.setflags(write=False)  # a view of the shared buffer, which is never written
        return InstanceState(uid, tuple(self.masks.windows[i]), crop, self.classes[i],
                             self.scores[i], self.origins[i], self.reviews[i])

    def states(self) -> list[InstanceState]:
        return [self.state(int(u)) for u in self.uids]

    def to_instances(self) -> Instances:
        """The current annotations as :class:`Instances` (boxes = tight mask boxes)."""
        return Instances(self.image_size, self.masks.windows.astype(np.float32), self.scores,
                         self.classes, self.masks)

    def same_as(self, other: "ImageAnnotations") -> bool:
        """Same instances (pixel-identical masks, same fields) and the same reviewed flag."""
        return (self.image_size == other.image_size and self.reviewed == other.reviewed
                and np.array_equal(self.uids, other.uids)
                and np.array_equal(self.classes, other.classes)
                and np.array_equal(self.scores, other.scores)
                and np.array_equal(self.origins, other.origins)
                and np.array_equal(self.reviews, other.reviews)
                and self.masks == other.masks)

    def copy(self) -> "ImageAnnotations":
        return ImageAnnotations(self.image_size, self.uids.copy(), self.classes.copy(),
                                self.scores.copy(), self.origins.copy(), self.reviews.copy(),
                                self.masks, self.reviewed, self._uid_source)

    def instance_at(self, x: float, y: float, visible: np.ndarray | None = None) -> int | None:
        """uid of the instance owning pixel (x, y); where several do, the highest score wins."""
        xi, yi = int(np.floor(x)), int(np.floor(y))
        w = self.masks.windows
        hit = (w[:, 0] <= xi) & (xi < w[:, 2]) & (w[:, 1] <= yi) & (yi < w[:, 3])
        if visible is not None:
            hit &= visible
        cand = np.flatnonzero(hit)
        if cand.size == 0:
            return None
        width = w[cand, 2] - w[cand, 0]
        on = self.masks.data[self.masks.starts[cand] + (yi - w[cand, 1]) * width + (xi - w[cand, 0])]
        cand = cand[on]
        if cand.size == 0:
            return None
        # highest score first, then the newest instance
        best = cand[np.lexsort((-self.uids[cand], -self.scores[cand]))[0]]
        return int(self.uids[best])

    def overlapping(self, window: Window, exclude: Iterable[int] = ()) -> np.ndarray:
        """uids whose windows intersect ``window``."""
        x0, y0, x1, y1 = window
        w = self.masks.windows
        hit = (w[:, 0] < x1) & (x0 < w[:, 2]) & (w[:, 1] < y1) & (y0 < w[:, 3])
        out = self.uids[hit]
        ex = np.fromiter(exclude, np.int64)
        return out[~np.isin(out, ex)] if ex.size else out

    def visible(self, min_score: float | None = None, max_score: float | None = None,
                class_id: int | None = None, hide_rejected: bool = False) -> np.ndarray:
        """Boolean mask of the instances a review filter shows."""
        keep = np.ones(len(self), bool)
        if min_score is not None:
            keep &= self.scores >= min_score
        if max_score is not None:
            keep &= self.scores < max_score
        if class_id is not None:
            keep &= self.classes == class_id
        if hide_rejected:
            keep &= self.reviews != Review.REJECTED
        return keep

    def counts(self) -> dict[str, int]:
        return {"instances": len(self),
                "accepted": int((self.reviews == Review.ACCEPTED).sum()),
                "rejected": int((self.reviews == Review.REJECTED).sum()),
                "pending": int((self.reviews == Review.PENDING).sum()),
                "edited": int((self.origins == Origin.EDITED).sum()),
                "drawn": int((self.origins == Origin.DRAWN).sum()),
                "assisted": int((self.origins == Origin.ASSISTED).sum())}

    # ------------------------------------------------------------ applying edits
    def apply(self, edit: Edit) -> None:
        """Install ``edit.after``; cost is one copy of the mask buffer plus the changed crops."""
        self._install(edit.after)
        if edit.reviewed is not None:
            self.reviewed = bool(edit.reviewed[1])

    def undo(self, edit: Edit) -> None:
        self.apply(edit.inverse())

    def _install(self, changes: Mapping[int, InstanceState | None]) -> None:
        if not changes:
            return
        changed = np.array(sorted(changes), np.int64)
        keep = ~np.isin(self.uids, changed)
        keep_idx = np.flatnonzero(keep)
        new = [changes[int(u)] for u in changed if changes[int(u)] is not None]
        for s in new:
            if tuple(s.crop.shape) != (s.window[3] - s.window[1], s.window[2] - s.window[0]):
                raise ValueError("state crop does not match its window")
        m = len(new)
        uids = np.concatenate([self.uids[keep_idx], np.array([s.uid for s in new], np.int64)])
        src = np.concatenate([keep_idx, -1 - np.arange(m)])  # >= 0 old row, < 0 new state
        order = np.argsort(uids, kind="stable")
        src = src[order]

        def pick(old: np.ndarray, attr: str, dtype) -> np.ndarray:
            return np.concatenate([old[keep_idx], np.array([getattr(s, attr) for s in new],
                                                          dtype)])[order]

        new_windows = (np.array([s.window for s in new], np.int64).reshape(-1, 4))
        windows = np.concatenate([self.masks.windows[keep_idx], new_windows])[order]
        # copy the flat buffer as runs of consecutive old rows plus the new crops: the number
        # of pieces grows with the edit, not with the image's instance count
        n = len(src)
        pieces = []
        if n:
            old = src >= 0
            run_start = np.ones(n, bool)
            run_start[1:] = ~old[1:] | ~old[:-1] | (src[1:] != src[:-1] + 1)
            bounds = np.append(np.flatnonzero(run_start), n)
            starts = self.masks.starts
            for a, b in zip(bounds[:-1], bounds[1:]):
                if src[a] >= 0:
                    pieces.append(self.masks.data[starts[src[a]]:starts[src[b - 1] + 1]])
                else:
                    pieces.append(new[-1 - src[a]].crop.ravel())
        data = np.concatenate(pieces) if pieces else np.zeros(0, bool)
        sizes = (windows[:, 2] - windows[:, 0]) * (windows[:, 3] - windows[:, 1])
        mstarts = np.zeros(n + 1, np.int64)
        np.cumsum(sizes, out=mstarts[1:])
        self.masks = CroppedMasks(self.image_size, windows, data, mstarts)
        self.classes = pick(self.classes, "class_id", np.int64)
        self.scores = pick(self.scores, "score", np.float32)
        self.origins = pick(self.origins, "origin", np.int8)
        self.reviews = pick(self.reviews, "review", np.int8)
        self.uids = uids[order]
        if len(self.uids):
            self._next_uid = max(self._next_uid, int(self.uids.max()) + 1)

