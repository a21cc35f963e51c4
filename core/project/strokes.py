"""Live brush and eraser strokes: dabs applied as the mouse moves, folded into one Edit at the end.

The canvas shows every dab at once (each is applied to the model as a small edit), while the
undo stack and the project store receive a single :class:`Edit` per stroke.
"""
from __future__ import annotations

from .annotations import ImageAnnotations
from .edits import add_region, draw_instance, erase_region
from .geometry import Window
from .raster import brush_region
from .states import Edit, EditError, InstanceState


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

