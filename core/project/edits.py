"""Editing model of one image: its instances, and every correction as a reversible :class:`Edit`.

An operation never mutates anything by itself: it *describes* a change as the full state of every
instance it touches, before and after (``None`` = absent). Applying the edit installs the
"after" states; undoing applies the "before" states. Because whole states are swapped, undo and
redo are exact (pixel-identical masks, same classes, scores, flags) by construction, and the
project store can persist an edit by writing just those rows.

Instances are kept sorted by their uid (the project's row id, unique across the project), so the
model's content is a pure function of its set of instance states: undoing a delete puts the
instance back at the very same position, and the rendering order never depends on history.

Masks stay in :class:`CroppedMasks` form; an operation only decodes and rewrites the crop windows
it overlaps (a brush dab touches the selected cell and its neighbours, never the whole image).

Overlap rule (``allow_overlap=False``, the default): an edit never makes two instances share a
pixel. Pixels *added* to an instance by the brush, by drawing a new instance or by a split are
taken away from every other instance that had them (the latest stroke wins); an instance left
with no pixels is deleted in the same edit. Hole filling only fills pixels no other instance owns.
Merging unites the chosen instances only. Overlaps already present in model predictions stay
until edited. With ``allow_overlap=True`` other instances are never touched.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Callable, Iterable, Mapping

import cv2
import numpy as np

from ..errors import CellsegError
from ..structures.instances import Instances
from ..structures.masks import CroppedMasks
from .rle import _from_coordinates

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 with exclusive ends


class EditError(CellsegError):
    """An edit that cannot be made as asked (unknown instance, a line that cuts nothing, ...)."""


class Origin(IntEnum):
    MODEL = 0  # a model prediction, untouched
    IMPORTED = 1  # from an imported COCO file, untouched
    EDITED = 2  # a prediction or import whose mask or class was corrected
    DRAWN = 3  # created by hand


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
        window, crop = _tighten(region.window, region.crop)
        origin = Origin.EDITED if self.origin in (Origin.MODEL, Origin.IMPORTED) else self.origin
        return replace(self, window=window, crop=crop, origin=origin)

    def same_as(self, other: "InstanceState | None") -> bool:
        if other is None:
            return False
        return (self.uid == other.uid and self.class_id == other.class_id
                and self.score == other.score and self.origin == other.origin
                and self.review == other.review
                and _same_pixels(self.window, self.crop, other.window, other.crop))


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


# -------------------------------------------------------------------- the editing model
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
                "drawn": int((self.origins == Origin.DRAWN).sum())}

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


# -------------------------------------------------------------------- operations
def delete(ann: ImageAnnotations, uids: Iterable[int]) -> Edit:
    uids = sorted({int(u) for u in uids})
    before = {u: ann.state(u) for u in uids}
    return Edit(_label("Delete", uids), before, {u: None for u in uids})


def set_class(ann: ImageAnnotations, uids: Iterable[int], class_id: int) -> Edit:
    uids = sorted({int(u) for u in uids})
    before = {u: ann.state(u) for u in uids}
    after = {}
    for u, s in before.items():
        origin = Origin.EDITED if s.origin in (Origin.MODEL, Origin.IMPORTED) else s.origin
        after[u] = s if s.class_id == class_id else replace(s, class_id=int(class_id), origin=origin)
    return Edit(f"Class {class_id + 1} for {_count(uids)}", before, after)


def set_review(ann: ImageAnnotations, uids: Iterable[int], review: Review) -> Edit:
    uids = sorted({int(u) for u in uids})
    before = {u: ann.state(u) for u in uids}
    after = {u: replace(s, review=Review(review)) for u, s in before.items()}
    verb = {Review.ACCEPTED: "Accept", Review.REJECTED: "Reject", Review.PENDING: "Unreview"}
    return Edit(_label(verb[Review(review)], uids), before, after)


def set_image_reviewed(ann: ImageAnnotations, reviewed: bool = True) -> Edit:
    return Edit("Mark image reviewed" if reviewed else "Mark image unreviewed",
                reviewed=(ann.reviewed, bool(reviewed)))


def add_region(ann: ImageAnnotations, uid: int, region: Region, allow_overlap: bool = False,
               label: str = "Brush") -> Edit:
    """Add ``region`` to instance ``uid`` (brush), taking the pixels from others unless overlap."""
    target = ann.state(uid)
    window, crop = _union(target.window, target.crop, region.window, region.crop)
    after = {uid: target.with_mask(Region(window, crop))}
    before = {uid: target}
    if not allow_overlap:
        _take_from_others(ann, region, {uid}, before, after)
    return Edit(label, before, after)


def erase_region(ann: ImageAnnotations, uid: int, region: Region, label: str = "Eraser") -> Edit:
    """Remove ``region`` from instance ``uid``; an instance erased completely is deleted."""
    target = ann.state(uid)
    crop = _subtract(target.window, target.crop, region.window, region.crop)
    after = {uid: target.with_mask(Region(target.window, crop)) if crop.any() else None}
    return Edit(label, {uid: target}, after)


def draw_instance(ann: ImageAnnotations, region: Region, class_id: int,
                  allow_overlap: bool = False, label: str = "Draw instance",
                  uid: int | None = None) -> Edit:
    """A new hand-drawn instance covering ``region``."""
    if region.empty:
        raise EditError("the drawn shape covers no pixel")
    uid = ann.new_uid() if uid is None else int(uid)
    window, crop = _tighten(region.window, region.crop)
    state = InstanceState(uid, window, crop, class_id, 1.0, Origin.DRAWN, Review.ACCEPTED)
    before: dict = {uid: None}
    after: dict = {uid: state}
    if not allow_overlap:
        _take_from_others(ann, state.region, {uid}, before, after)
    return Edit(label, before, after)


def fill_holes(ann: ImageAnnotations, uid: int, at: tuple[float, float] | None = None) -> Edit:
    """Fill the hole of ``uid`` containing point ``at`` (or every hole), leaving other
    instances' pixels alone."""
    s = ann.state(uid)
    x0, y0, x1, y1 = s.window
    padded = np.ones((y1 - y0 + 2, x1 - x0 + 2), np.uint8)
    padded[1:-1, 1:-1] = ~s.crop
    # background components not connected to the outside border are holes; 4-connectivity
    # for the background, since an 8-connected outline encloses them
    _, labels = cv2.connectedComponents(padded, connectivity=4)
    outside_label = labels[0, 0]
    labels = labels[1:-1, 1:-1]
    holes = ~s.crop & (labels != outside_label)
    if at is not None:
        xi, yi = int(np.floor(at[0])) - x0, int(np.floor(at[1])) - y0
        if not (0 <= xi < x1 - x0 and 0 <= yi < y1 - y0) or not holes[yi, xi]:
            raise EditError(f"no hole of instance {uid} at ({at[0]:.0f}, {at[1]:.0f})")
        holes = labels == labels[yi, xi]
    # pixels another instance owns stay theirs
    for other in ann.overlapping(s.window, exclude=[uid]):
        o = ann.state(int(other))
        holes &= ~_paste(o.window, o.crop, s.window)
    if not holes.any():
        raise EditError(f"instance {uid} has no hole to fill")
    after = s.with_mask(Region(s.window, s.crop | holes))
    return Edit("Fill hole", {uid: s}, {uid: after})


def merge(ann: ImageAnnotations, uids: Iterable[int]) -> Edit:
    """Unite instances into the oldest (lowest uid) one, which keeps its class and best score."""
    uids = sorted({int(u) for u in uids})
    if len(uids) < 2:
        raise EditError("select at least two instances to merge")
    states = [ann.state(u) for u in uids]
    window, crop = states[0].window, states[0].crop
    for s in states[1:]:
        window, crop = _union(window, crop, s.window, s.crop)
    keep = states[0].with_mask(Region(window, crop))
    keep = replace(keep, score=max(s.score for s in states))
    after: dict = {u: None for u in uids[1:]}
    after[uids[0]] = keep
    return Edit(f"Merge {len(uids)} instances", {s.uid: s for s in states}, after)


def split(ann: ImageAnnotations, uid: int, line: np.ndarray) -> Edit:
    """Cut instance ``uid`` along a polyline (image coordinates) into its separated parts.

    The largest part keeps the uid; every other part becomes a new instance of the same class.
    Pixels under the line go to a neighbouring part, so the union of the parts is the original.
    """
    s = ann.state(uid)
    x0, y0, x1, y1 = s.window
    pts = np.round(np.asarray(line, np.float64).reshape(-1, 2) - [x0, y0]).astype(np.int32)
    if len(pts) < 2:
        raise EditError("draw a line of at least two points to split")
    cut = np.zeros(s.crop.shape, np.uint8)
    cv2.polylines(cut, [pts.reshape(-1, 1, 2)], False, 1, thickness=1, lineType=cv2.LINE_8)
    cut = cut.astype(bool) & s.crop
    rest = s.crop & ~cut
    n, labels = cv2.connectedComponents(rest.astype(np.uint8), connectivity=4)
    if n - 1 < 2:
        raise EditError(f"the line does not cut instance {uid} into separate parts")
    # hand line pixels to a 4-neighbour's part (twice covers line crossings)
    for _ in range(2):
        todo = cut & (labels == 0)
        if not todo.any():
            break
        p = np.pad(labels, 1)
        nb = np.maximum.reduce([p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
        labels = np.where(todo, nb, labels)
    areas = np.bincount(labels.ravel(), minlength=n)
    areas[0] = 0
    order = np.argsort(-areas[1:], kind="stable") + 1
    before: dict = {uid: s}
    after: dict = {}
    lost = s.crop & (labels == 0)  # isolated line pixels with no neighbour part
    for rank, lab in enumerate(order):
        part = labels == lab
        if rank == 0:
            part |= lost
            after[uid] = s.with_mask(Region(s.window, part))
        else:
            new_uid = ann.new_uid()
            w, c = _tighten(s.window, part)
            origin = Origin.DRAWN if s.origin == Origin.DRAWN else Origin.EDITED
            after[new_uid] = InstanceState(new_uid, w, c, s.class_id, s.score, origin, s.review)
            before[new_uid] = None
    return Edit(f"Split instance into {len(order)}", before, after)


# -------------------------------------------------------------------- shapes
def brush_region(points, radius: float, image_size) -> Region:
    """Round brush footprint along the polyline ``points`` (image coordinates), clipped."""
    h, w = image_size
    pts = np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(np.int64)
    r = max(int(round(radius)), 0)
    x0 = max(int(pts[:, 0].min()) - r, 0); y0 = max(int(pts[:, 1].min()) - r, 0)
    x1 = min(int(pts[:, 0].max()) + r + 1, w); y1 = min(int(pts[:, 1].max()) + r + 1, h)
    if x1 <= x0 or y1 <= y0:
        return Region((0, 0, 0, 0), np.zeros((0, 0), bool))
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = (pts - [x0, y0]).astype(np.int32)
    for p in local:  # a handful of points per mouse move
        cv2.circle(canvas, (int(p[0]), int(p[1])), r, 1, thickness=-1, lineType=cv2.LINE_8)
    if len(local) > 1 and r > 0:
        cv2.polylines(canvas, [local.reshape(-1, 1, 2)], False, 1, thickness=2 * r + 1,
                      lineType=cv2.LINE_8)
    elif len(local) > 1:
        cv2.polylines(canvas, [local.reshape(-1, 1, 2)], False, 1, 1, cv2.LINE_8)
    return Region((x0, y0, x1, y1), canvas.astype(bool))


def polygon_region(points, image_size) -> Region:
    """Filled polygon (a closed lasso or clicked polygon), clipped to the image."""
    h, w = image_size
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    if len(pts) < 3:
        raise EditError("a polygon needs at least three points")
    x0 = max(int(np.floor(pts[:, 0].min())), 0); y0 = max(int(np.floor(pts[:, 1].min())), 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 1, w); y1 = min(int(np.ceil(pts[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        raise EditError("the polygon lies outside the image")
    canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = np.round(pts - [x0, y0]).astype(np.int32)
    cv2.fillPoly(canvas, [local.reshape(-1, 1, 2)], 1, lineType=cv2.LINE_8)
    return Region((x0, y0, x1, y1), canvas.astype(bool))


# -------------------------------------------------------------------- live brush strokes
class Stroke:
    """A brush or eraser stroke in progress, applied to ``ann`` dab by dab for live display.

    ``finish()`` folds all dabs into one :class:`Edit` (the states at the first touch of each
    instance, and their final states), which is what the undo stack and the store receive.
    With ``uid=None`` the brush paints a new instance of ``class_id``.
    """

    def __init__(self, ann: ImageAnnotations, uid: int | None, radius: float, erase: bool = False,
                 allow_overlap: bool = False, class_id: int = 0):
        if erase and uid is None:
            raise EditError("select an instance to erase from")
        self.ann, self.uid, self.radius, self.erase = ann, uid, radius, erase
        self.allow_overlap, self.class_id = allow_overlap, class_id
        self.before: dict[int, InstanceState | None] = {}
        self.reviewed_before = ann.reviewed
        self._last: tuple[float, float] | None = None
        if uid is not None:
            ann.index_of(uid)

    def move_to(self, x: float, y: float) -> Window | None:
        """Paint from the last point to (x, y); returns the image rectangle that changed."""
        pts = [(x, y)] if self._last is None else [self._last, (x, y)]
        self._last = (x, y)
        region = brush_region(pts, self.radius, self.ann.image_size)
        if region.empty:
            return None
        if self.uid is None:
            self.uid = self.ann.new_uid()
            edit = draw_instance(self.ann, region, self.class_id, self.allow_overlap,
                                 label="Brush", uid=self.uid)
        elif self.uid not in self.ann:
            return None  # erased away completely
        elif self.erase:
            edit = erase_region(self.ann, self.uid, region)
        else:
            edit = add_region(self.ann, self.uid, region, self.allow_overlap)
        for u, s in edit.before.items():
            self.before.setdefault(u, s)
        self.ann.apply(edit)
        return region.window

    def finish(self) -> Edit | None:
        after = {u: (self.ann.state(u) if u in self.ann else None) for u in self.before}
        edit = Edit("Eraser" if self.erase else "Brush", dict(self.before), after)
        return None if edit.is_noop() else edit


# -------------------------------------------------------------------- helpers
def tighten_masks(masks: CroppedMasks) -> CroppedMasks:
    """The same masks with every window shrunk to its set pixels (vectorised)."""
    inst, ys, xs = masks.pixel_coordinates()
    return _from_coordinates(masks.image_size, len(masks), inst, ys, xs)


def _label(verb: str, uids) -> str:
    return f"{verb} {_count(uids)}"


def _count(uids) -> str:
    return f"instance {uids[0]}" if len(uids) == 1 else f"{len(uids)} instances"


def _tighten(window: Window, crop: np.ndarray) -> tuple[Window, np.ndarray]:
    rows = np.flatnonzero(crop.any(axis=1))
    if rows.size == 0:
        return (window[0], window[1], window[0], window[1]), np.zeros((0, 0), bool)
    cols = np.flatnonzero(crop.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    x0, y0 = window[0], window[1]
    return (x0 + int(c0), y0 + int(r0), x0 + int(c1), y0 + int(r1)), crop[r0:r1, c0:c1].copy()


def _paste(window: Window, crop: np.ndarray, into: Window) -> np.ndarray:
    """``crop`` (at ``window``) as a bitmap of window ``into`` (clipped)."""
    out = np.zeros((into[3] - into[1], into[2] - into[0]), bool)
    ix0, iy0 = max(window[0], into[0]), max(window[1], into[1])
    ix1, iy1 = min(window[2], into[2]), min(window[3], into[3])
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - into[1]:iy1 - into[1], ix0 - into[0]:ix1 - into[0]] = \
            crop[iy0 - window[1]:iy1 - window[1], ix0 - window[0]:ix1 - window[0]]
    return out


def _union(wa, ca, wb, cb) -> tuple[Window, np.ndarray]:
    """Pixels of ``ca`` (at ``wa``) or ``cb`` (at ``wb``), tightened to their bounding window."""
    if wa[2] <= wa[0] or wa[3] <= wa[1]:
        return _tighten(wb, cb)
    win = (min(wa[0], wb[0]), min(wa[1], wb[1]), max(wa[2], wb[2]), max(wa[3], wb[3]))
    return _tighten(win, _paste(wa, ca, win) | _paste(wb, cb, win))


def _subtract(wa, ca, wb, cb) -> np.ndarray:
    """``ca`` minus region b, in window a."""
    return ca & ~_paste(wb, cb, wa)


def _same_pixels(wa, ca, wb, cb) -> bool:
    ta, tb = _tighten(wa, ca), _tighten(wb, cb)
    return ta[0] == tb[0] and np.array_equal(ta[1], tb[1])


def _take_from_others(ann: ImageAnnotations, region: Region, exclude: set[int],
                      before: dict, after: dict) -> None:
    """Remove ``region`` from every other instance it touches (the overlap rule)."""
    for other in ann.overlapping(region.window, exclude=exclude):
        o = ann.state(int(other))
        crop = _subtract(o.window, o.crop, region.window, region.crop)
        if np.array_equal(crop, o.crop):
            continue
        before[o.uid] = o
        after[o.uid] = o.with_mask(Region(o.window, crop)) if crop.any() else None
