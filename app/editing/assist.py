"""Model-assisted correction: the Box tool, missed-cell candidates and Refine.

* **Box tool (D)**: drag a box around a cell; the current model's mask head (Cascade,
  PointRend, or both fused as the ensemble fuses them) predicts the mask inside it on the image's
  cached backbone features, with the class its box head scores highest (or the *Draw as* class
  when *Box class* says so). The new instance is one undoable edit, counted as *assisted*.
  Shift-drag gives the selected instance (or the one under the press) a new box: its mask is
  predicted again inside it, its class kept.
* **Candidates**: while the Box tool is active, the model's detections scoring between *Candidates
  from* and the score threshold that lie mostly off existing instances are drawn as faint dashed
  outlines. A click accepts one, Shift+A all those in view, Tab / Shift+Tab walk them by score
  (highest first) and Enter accepts the one reached.
* **Refine (R)**: the selected instance's mask predicted again inside its box by PointRend's
  subdivision (the PointRend slot's model), as an undoable replacement.

The model work runs in the model thread (:class:`~cellseg.app.assist_service.AssistService`);
this module only turns gestures into requests and results into edits.
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QObject, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QGraphicsRectItem, QLabel

from cellseg.core.postprocess.candidates import candidate_pool, occupancy, uncovered
from cellseg.core.project import edits as E
from cellseg.core.project.states import Region

from ..assist_service import AssistService
from ..canvas.candidates import CandidatesLayer
from .tools import LEFT, Tool, _button, _modifiers

MIN_BOX_PX = 3.0  # a smaller drag (in image pixels) is a click: it accepts a candidate
REFINE_MARGIN = 0.05  # the refine box: the instance's box grown by this fraction per side
LOW_DEFAULT = 0.2


class Assist(QObject):
    """Box prompts, candidates and refine for one review window's editing controller.

    ``mask_shown(label)`` after a model-made edit is on screen; ``candidates_changed(n)`` when
    the candidates shown change; ``failed(message)`` when a prompt could not be answered.
    """

    mask_shown = Signal(str)
    candidates_changed = Signal(int)
    failed = Signal(str)

    def __init__(self, controller) -> None:
        super().__init__(controller)
        self.c = controller
        self.window = controller.window
        self.service = AssistService(self.window.service, parent=self)
        self.low = LOW_DEFAULT
        self.model_class = True  # False: boxes get the Draw-as class
        self.active = False
        self.layer = CandidatesLayer()
        self.layer.setZValue(8)
        self.layer.hide()
        self.window.canvas.scene().addItem(self.layer)
        self._pool = None  # Instances: composed detections in [low, threshold)
        self._pool_key = None
        self.shown = np.zeros(0, np.int64)  # pool indices of the candidates drawn
        self.current = -1  # position in ``shown`` Tab reached
        self.window.image_shown.connect(self._image_shown)
        self.c.changed.connect(self._annotations_changed)

    # ------------------------------------------------------------------ helpers
    def _image(self):
        path = self.window.current_path()
        return (path, self.window.image) if path and self.window.image is not None else (None, None)

    def models(self) -> tuple[str, ...]:
        return tuple(self.window.post_panel.models())

    def set_active(self, active: bool) -> None:
        self.active = bool(active)
        self.layer.setVisible(self.active)
        if self.active:
            path, image = self._image()
            if path is not None:
                self.service.prepare(path, image, self.models())
            self.refresh_candidates()

    def _image_shown(self, _index: int) -> None:
        path, image = self._image()
        self.service.drop_images(keep=path)  # features go with the image
        self._pool, self._pool_key = None, None
        self._set_shown(np.zeros(0, np.int64))
        if self.active and path is not None:
            self.service.prepare(path, image, self.models())

    # ------------------------------------------------------------------ box prompts
    def box_prompt(self, box, adjust_uid: int | None = None) -> bool:
        """Ask the model for a mask in ``box`` (XYXY image pixels): a new instance, or the new
        mask of ``adjust_uid``. The edit comes when the model thread answers."""
        path, image = self._image()
        if path is None or self.c.ann is None:
            self.failed.emit("no image to edit")
            return False
        box = np.asarray(box, np.float32).reshape(1, 4)
        if adjust_uid is not None:
            classes = np.array([self.c.ann.state(adjust_uid).class_id])
        else:
            classes = None if self.model_class else np.array([self.c.current_class])
        ann = self.c.ann
        return bool(self.service.predict(
            path, image, self.models(), box, classes,
            lambda inst: self._answer(path, ann, inst, adjust_uid, "Box prompt"),
            self._failed))

    def refine(self, uid: int | None = None) -> bool:
        """Predict the mask of ``uid`` (default: the selected instance) again with PointRend's
        subdivision inside its box grown by :data:`REFINE_MARGIN`; an undoable replacement."""
        uid = self.c.single_selected() if uid is None else uid
        path, image = self._image()
        if uid is None or self.c.ann is None or path is None:
            self.failed.emit("refine: select one instance")
            return False
        if not self.window.service.has_model("pointrend"):
            self.failed.emit("refine needs a PointRend model (Model > Set PointRend model…)")
            return False
        s = self.c.ann.state(uid)
        x0, y0, x1, y1 = s.window
        mx, my = REFINE_MARGIN * (x1 - x0), REFINE_MARGIN * (y1 - y0)
        h, w = self.c.ann.image_size
        box = np.array([[max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)]],
                       np.float32)
        ann = self.c.ann
        return bool(self.service.predict(
            path, image, ("pointrend",), box, np.array([s.class_id]),
            lambda inst: self._answer(path, ann, inst, uid, "Refine"), self._failed))

    def _failed(self, message: str) -> None:
        self.window.statusBar().showMessage(message, 8000)
        self.failed.emit(message)

    def _answer(self, path, ann, inst, uid, label: str) -> None:
        """(GUI thread) the model's mask: one undoable edit, if the image is still the same."""
        if path != self.window.current_path() or ann is not self.c.ann:
            return  # the reviewer moved on: the answer is for an image no longer edited
        if len(inst) == 0 or inst.masks is None or inst.masks.areas().sum() == 0:
            self._failed("the model found no cell pixel in that box")
            return
        region = Region(tuple(inst.masks.windows[0]), inst.masks.crop(0))
        c = self.c
        if uid is None:
            ok = c.run(lambda a: E.add_instances(a, [region], inst.classes[:1], [1.0],
                                                 allow_overlap=c.allow_overlap, label=label))
        elif uid in set(c.ann.uids.tolist()):
            ok = c.run(lambda a: E.replace_mask(a, uid, region, c.allow_overlap,
                                                label=f"{label} instance {uid}"))
        else:
            return
        if ok:
            if label == "Refine":
                self.window.statusBar().showMessage("refined: Ctrl+Z restores the mask", 5000)
            self.mask_shown.emit(label)

    # ------------------------------------------------------------------ candidates
    def set_model_class(self, index: int) -> None:
        """0: the box head's best class for a prompt; 1: the Draw-as class."""
        self.model_class = index == 0

    def set_low(self, low: float) -> None:
        self.low = float(low)
        self.refresh_candidates()

    def refresh_candidates(self) -> None:
        """Compose the candidate pool (light thread) if the image, models, post-processing or
        bounds changed, then show those lying off existing instances."""
        if not self.active:
            return
        path, _ = self._image()
        if path is None or self.window.index < 0:
            return
        keys = self.window.results.keys(self.window.index)
        raws = {k.model: self.window.service.cached(k) for k in keys}
        if not raws or any(v is None for v in raws.values()):
            self._set_shown(np.zeros(0, np.int64))
            return  # no model output yet: the window runs the models; raw_ready refreshes
        settings = self.window.post_panel.settings().pipeline()
        key = (tuple(keys), settings, self.low)
        if key == self._pool_key and self._pool is not None:
            self._filter()
            return
        low = min(self.low, settings.score_threshold)
        self.window.service.submit_light(
            lambda: candidate_pool(raws, settings, low),
            lambda pool: self._pool_done(key, pool), self._failed, tag="assist-candidates")

    def _pool_done(self, key, pool) -> None:
        self._pool, self._pool_key = pool, key
        self._filter()

    def _annotations_changed(self) -> None:
        if self.active and self._pool is not None:
            self._filter()

    def _filter(self) -> None:
        ann = self.c.ann
        if ann is None or self._pool is None:
            self._set_shown(np.zeros(0, np.int64))
            return
        shown = uncovered(self._pool, occupancy(ann.masks, ann.image_size))
        if not np.array_equal(shown, self.shown):
            self._set_shown(shown)

    def _set_shown(self, shown: np.ndarray) -> None:
        self.shown = shown
        self.current = -1
        self.layer.set_candidates(self._pool.masks[shown] if len(shown) else None)
        self.candidates_changed.emit(len(shown))

    def candidates(self):
        """The candidates shown (Instances, highest score first)."""
        return self._pool[self.shown] if self._pool is not None else None

    def candidate_at(self, x: float, y: float) -> int:
        """Position in :attr:`shown` of the best candidate covering pixel (x, y), or -1."""
        if self._pool is None or not len(self.shown):
            return -1
        masks = self._pool.masks[self.shown]
        xi, yi = int(np.floor(x)), int(np.floor(y))
        w = masks.windows
        inside = np.flatnonzero((w[:, 0] <= xi) & (xi < w[:, 2]) & (w[:, 1] <= yi) & (yi < w[:, 3]))
        for k in inside:  # the handful whose box holds the point, best score first
            if masks.crop(int(k))[yi - w[k, 1], xi - w[k, 0]]:
                return int(k)
        return -1

    def accept(self, positions) -> bool:
        """Add the candidates at ``positions`` (of :attr:`shown`) as they are: one edit."""
        positions = [int(p) for p in positions if 0 <= int(p) < len(self.shown)]
        if not positions or self.c.ann is None:
            return False
        chosen = self._pool[self.shown[positions]]
        regions = [Region(tuple(chosen.masks.windows[i]), chosen.masks.crop(i))
                   for i in range(len(chosen))]
        c = self.c
        label = "Accept candidate"
        ok = c.run(lambda a: E.add_instances(a, regions, chosen.classes, chosen.scores,
                                             allow_overlap=c.allow_overlap, label=label))
        if ok:
            self.mask_shown.emit(label)
        return ok

    def accept_in_view(self) -> bool:
        """Accept every candidate whose box centre is in the visible part of the canvas."""
        if self._pool is None or not len(self.shown):
            return False
        canvas = self.window.canvas
        view = canvas.mapToScene(canvas.viewport().rect()).boundingRect()
        b = self._pool.boxes[self.shown]
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        inside = np.flatnonzero((cx >= view.left()) & (cx <= view.right())
                                & (cy >= view.top()) & (cy <= view.bottom()))
        return self.accept(inside)

    def walk(self, step: int) -> bool:
        """Tab: the next candidate by score (centred, drawn solid); False when there is none."""
        if not len(self.shown):
            return False
        self.current = (self.current + step) % len(self.shown) if self.current >= 0 else (
            0 if step > 0 else len(self.shown) - 1)
        self.layer.set_current(self.current)
        x0, y0, x1, y1 = self._pool.boxes[self.shown[self.current]]
        self.window.canvas.center_on_pixel((x0 + x1) / 2, (y0 + y1) / 2)
        score = float(self._pool.scores[self.shown[self.current]])
        self.window.statusBar().showMessage(
            f"candidate {self.current + 1}/{len(self.shown)}, score {score:.2f}: Enter or a "
            "click accepts it", 5000)
        return True

    def accept_current(self) -> bool:
        return self.current >= 0 and self.accept([self.current])


class BoxTool(Tool):
    """Drag a box: the model predicts the cell in it. Shift-drag: a new box for the selected
    instance (or the one under the press). A click on a dashed candidate accepts it."""
    name = "box"

    def __init__(self, controller, assist: Assist) -> None:
        super().__init__(controller)
        self.assist = assist
        self._press = None
        self._adjust = None
        self.preview = QGraphicsRectItem()
        pen = QPen(QColor(255, 230, 0), 0, Qt.PenStyle.DashLine)
        self.preview.setPen(pen)
        self.preview.setZValue(10)

    def activate(self) -> None:
        self.c.canvas.scene().addItem(self.preview)
        self.preview.hide()
        self.assist.set_active(True)

    def deactivate(self) -> None:
        self._press = None
        if self.preview.scene() is not None:
            self.preview.scene().removeItem(self.preview)
        self.assist.set_active(False)

    def mouse_press(self, x, y, event) -> bool:
        if _button(event) != LEFT or self.c.ann is None:
            return False
        self._press = (x, y)
        self._adjust = None
        if _modifiers(event) & Qt.KeyboardModifier.ShiftModifier:
            self._adjust = self.c.single_selected()
            if self._adjust is None:
                self._adjust = self.c.ann.instance_at(x, y, self.c.visible())
        return True

    def mouse_move(self, x, y, event) -> bool:
        if self._press is None:
            return False
        px, py = self._press
        self.preview.setRect(QRectF(min(px, x), min(py, y), abs(x - px), abs(y - py)))
        self.preview.show()
        return True

    def mouse_release(self, x, y, event) -> bool:
        if self._press is None or _button(event) != LEFT:
            return False
        (px, py), self._press = self._press, None
        self.preview.hide()
        if max(abs(x - px), abs(y - py)) < MIN_BOX_PX:
            k = self.assist.candidate_at(px, py)
            if k >= 0:
                self.assist.accept([k])
            else:
                self.message("box tool: drag a box around a cell, or click a dashed candidate")
            return True
        if self._adjust is None and _modifiers(event) & Qt.KeyboardModifier.ShiftModifier:
            self.message("Shift-drag: select the instance whose box to change first")
            return True
        self.assist.box_prompt((min(px, x), min(py, y), max(px, x), max(py, y)),
                               adjust_uid=self._adjust)
        return True

    def walk(self, step: int) -> bool:
        return self.assist.walk(step)

    def finish(self) -> bool:
        return self.assist.accept_current()


def step(controller, step: int) -> None:
    """Tab / Shift+Tab: the Box tool walks its candidates (while any), else the instances."""
    tool = controller.active_tool
    if not (isinstance(tool, BoxTool) and tool.walk(step)):
        controller.select_next(step)


def assist_controls(window, assist: Assist) -> list:
    """The toolbar widgets of the Box tool (candidates' lower score, the prompt's class), and
    the connections that keep its candidates current; ``app.assembly`` places them."""
    low = QDoubleSpinBox(window)
    low.setRange(0.0, 1.0)
    low.setSingleStep(0.05)
    low.setValue(assist.low)
    low.setToolTip("Box tool: show the model's detections scoring from this value up to the "
                   "score threshold as dashed candidates (those lying off existing cells)")
    low.valueChanged.connect(assist.set_low)
    klass = QComboBox(window)
    klass.addItems(["model's class", "Draw as class"])
    klass.setToolTip("Class of a box prompt's cell: the one the model's box head scores "
                     "highest, or the Draw as class")
    klass.currentIndexChanged.connect(assist.set_model_class)
    assist.low_box, assist.class_box = low, klass
    window.service.raw_ready.connect(lambda _key: assist.refresh_candidates())
    window.post_panel.changed.connect(assist.refresh_candidates)
    window.post_panel.run_options_changed.connect(lambda: assist.set_active(assist.active))
    return [QLabel(" Candidates from ", window), low, klass]
