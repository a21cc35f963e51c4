"""Editing operations: each one returns the :class:`Edit` a correction makes, without applying it.

An operation reads the :class:`ImageAnnotations` it is given and *describes* the change as the
full before/after states of the instances it touches; the caller applies it (and pushes it on
the undo stack, and the store saves it). Operations decode and rewrite only the crop windows
they overlap (a brush dab touches the selected cell and its neighbours, never the whole image).

Overlap rule (``allow_overlap=False``, the default): an edit never makes two instances share a
pixel. Pixels *added* to an instance by the brush, by drawing a new instance or by a split are
taken away from every other instance that had them (the latest stroke wins); an instance left
with no pixels is deleted in the same edit. Hole filling only fills pixels no other instance owns.
Merging unites the chosen instances only. Overlaps already present in model predictions stay
until edited. With ``allow_overlap=True`` other instances are never touched.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import cv2
import numpy as np

from .annotations import ImageAnnotations
from .geometry import paste, subtract, tighten, union
from .states import Edit, EditError, InstanceState, Origin, Region, Review


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
    window, crop = union(target.window, target.crop, region.window, region.crop)
    after = {uid: target.with_mask(Region(window, crop))}
    before = {uid: target}
    if not allow_overlap:
        _take_from_others(ann, region, {uid}, before, after)
    return Edit(label, before, after)


def erase_region(ann: ImageAnnotations, uid: int, region: Region, label: str = "Eraser") -> Edit:
    """Remove ``region`` from instance ``uid``; an instance erased completely is deleted."""
    target = ann.state(uid)
    crop = subtract(target.window, target.crop, region.window, region.crop)
    after = {uid: target.with_mask(Region(target.window, crop)) if crop.any() else None}
    return Edit(label, {uid: target}, after)


def draw_instance(ann: ImageAnnotations, region: Region, class_id: int,
                  allow_overlap: bool = False, label: str = "Draw instance",
                  uid: int | None = None) -> Edit:
    """A new hand-drawn instance covering ``region``."""
    if region.empty:
        raise EditError("the drawn shape covers no pixel")
    uid = ann.new_uid() if uid is None else int(uid)
    window, crop = tighten(region.window, region.crop)
    state = InstanceState(uid, window, crop, class_id, 1.0, Origin.DRAWN, Review.ACCEPTED)
    before: dict = {uid: None}
    after: dict = {uid: state}
    if not allow_overlap:
        _take_from_others(ann, state.region, {uid}, before, after)
    return Edit(label, before, after)


def add_instances(ann: ImageAnnotations, regions: list[Region], classes, scores,
                  origin: Origin = Origin.ASSISTED, allow_overlap: bool = False,
                  label: str = "Add instance") -> Edit:
    """New instances made by a model for the reviewer (a box prompt, accepted candidates).

    Args:
        ann: the image's editing model.
        regions: one mask per new instance (empty ones are skipped).
        classes: (N,) their classes; scores: (N,) their scores.
        origin: what the review counts call them.
        allow_overlap: False: each new mask takes its pixels from every instance it overlaps,
            earlier new ones of the same edit included (the later one wins, as with drawing).
        label: the History's name of the edit.

    Returns:
        One Edit adding them all (accepted: the reviewer chose them).
    """
    before: dict = {}
    after: dict = {}
    added: list[int] = []
    for region, class_id, score in zip(regions, np.asarray(classes).reshape(-1),
                                       np.asarray(scores).reshape(-1)):
        if region.empty:
            continue
        uid = ann.new_uid()
        window, crop = tighten(region.window, region.crop)
        state = InstanceState(uid, window, crop, int(class_id), float(score), origin,
                              Review.ACCEPTED)
        if not allow_overlap:
            _take_from_others(ann, state.region, set(added) | {uid}, before, after)
            for prev in added:  # new ones of this edit are not in ann yet
                p = after[prev]
                if p is None:
                    continue
                crop_p = subtract(p.window, p.crop, state.window, state.crop)
                if not crop_p.any():
                    after[prev] = None
                elif not np.array_equal(crop_p, p.crop):
                    w_p, c_p = tighten(p.window, crop_p)
                    after[prev] = replace(p, window=w_p, crop=c_p)
        before[uid], after[uid] = None, state
        added.append(uid)
    if not added:
        raise EditError("the model found no pixel of a cell there")
    return Edit(label if len(added) == 1 else f"{label} x{len(added)}", before, after)


def replace_mask(ann: ImageAnnotations, uid: int, region: Region, allow_overlap: bool = False,
                 label: str = "Replace mask") -> Edit:
    """Instance ``uid`` with a new mask (re-predicted in a new box, refined), its class, score
    and review kept; pixels it gains are taken from others unless overlap is allowed."""
    if region.empty:
        raise EditError("the new mask covers no pixel")
    target = ann.state(uid)
    before: dict = {uid: target}
    after: dict = {uid: target.with_mask(region)}
    if not allow_overlap:
        _take_from_others(ann, after[uid].region, {uid}, before, after)
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
        holes &= ~paste(o.window, o.crop, s.window)
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
        window, crop = union(window, crop, s.window, s.crop)
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
            w, c = tighten(s.window, part)
            origin = Origin.DRAWN if s.origin == Origin.DRAWN else Origin.EDITED
            after[new_uid] = InstanceState(new_uid, w, c, s.class_id, s.score, origin, s.review)
            before[new_uid] = None
    return Edit(f"Split instance into {len(order)}", before, after)



def _label(verb: str, uids) -> str:
    return f"{verb} {_count(uids)}"


def _count(uids) -> str:
    return f"instance {uids[0]}" if len(uids) == 1 else f"{len(uids)} instances"



def _take_from_others(ann: ImageAnnotations, region: Region, exclude: set[int],
                      before: dict, after: dict) -> None:
    """Remove ``region`` from every other instance it touches (the overlap rule), starting from
    the state ``after`` already gives it (an edit adding several instances)."""
    for other in ann.overlapping(region.window, exclude=exclude):
        o = after[int(other)] if int(other) in after else ann.state(int(other))
        if o is None:
            continue
        crop = subtract(o.window, o.crop, region.window, region.crop)
        if np.array_equal(crop, o.crop):
            continue
        before.setdefault(o.uid, ann.state(o.uid))
        after[o.uid] = o.with_mask(Region(o.window, crop)) if crop.any() else None
