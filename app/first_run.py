"""First-run guidance: what a newcomer sees before any model is configured.

* a guidance box at the top of the Models panel (shown while neither model slot is filled) that
  says how to get predictions: File > Open sample, or a Detectron2 ``config.yaml`` + checkpoint
  typed/browsed in the panel, set from the Model menu, or dropped onto the window;
* drag-and-drop onto the window: model files (a config, a checkpoint, or both; the missing half
  is looked for next to the dropped one), and images / folders / COCO ``.json`` to open;
* tooltips on every toggle saying what it does and what it costs.

:class:`FirstRun` (built by ``app.assembly`` with the window) wires all of it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Qt
from PySide6.QtWidgets import QFrame, QLabel, QPushButton, QVBoxLayout

from cellseg.core.errors import CellsegError

from .sample import open_sample

CONFIG_SUFFIXES = {".yaml", ".yml"}
WEIGHTS_SUFFIXES = {".pth", ".pkl"}
# names Detectron2 training runs and model-zoo downloads use, tried first when looking for the
# other half of a dropped file
WEIGHTS_NAMES = ("model_final.pth", "model_final.pkl")
CONFIG_NAMES = ("config.yaml",)

GUIDANCE = """\
<p><b>No model yet.</b> To see cells segmented:</p>
<ul style="margin-left:-20px">
<li><b>File &gt; Open sample</b>: a nuclei image with two small demo models (Cascade and
PointRend, shown as their ensemble).</li>
<li>Your own <b>Detectron2</b> model: its <code>config.yaml</code> and checkpoint
(<code>model_final.pth</code>, or a model-zoo <code>.pkl</code>) in the Config and Weights fields
below, or <b>Model &gt; Set Cascade model…</b>, or <b>drag both files onto the window</b> (one is
enough when the other lies next to it). PointRend configs go to the PointRend slot.</li>
<li>Then open images: <b>File &gt; Open folder</b>, or drop images, a folder or a COCO
<code>.json</code> onto the window.</li>
</ul>
<p>Hover over a control to see what it does.</p>"""

TOOLTIPS = {  # (panel attribute, widget attribute) -> what it does, and what it costs
    ("post_panel", "model"): "Which model's predictions to show. Ensemble runs both models and "
        "fuses their boxes and masks with Weighted Boxes Fusion: about the time of both models.",
    ("post_panel", "tta"): "Test-time augmentation: run the model at several sizes and flipped, "
        "then merge the results. Often finds more small or faint cells; about 10-20x slower "
        "per image (the config's TEST.AUG sizes).",
    ("post_panel", "soft_nms"): "Soft-NMS: overlapping detections get lower scores instead of "
        "being deleted, so touching cells are kept apart. Post-processing only: instant, the "
        "model is not re-run.",
    ("post_panel", "method"): "linear: score x (1 - IoU) for overlaps; gaussian: score x "
        "exp(-IoU^2 / sigma); hard: classic NMS (delete the lower-scoring overlap).",
    ("post_panel", "sigma"): "Width of the Gaussian decay: larger keeps overlapping detections "
        "for longer.",
    ("post_panel", "score"): "Hide detections scoring below this. Instant (no model re-run); "
        "lower it to see what the model is unsure about.",
    ("post_panel", "max_det"): "Keep at most this many detections per image, highest scores "
        "first (0 = no limit). Raise it for crowded images.",
    ("display_panel", "channel"): "Which channel the contrast sliders act on.",
    ("display_panel", "low"): "Display minimum: pixel values at or below it are black. Display "
        "only: the model always sees the full image.",
    ("display_panel", "high"): "Display maximum: pixel values at or above it are white. Display "
        "only: the model always sees the full image.",
    ("display_panel", "show_overlay"): "Show or hide all instances (O).",
    ("display_panel", "fill"): "Fill each instance with its colour.",
    ("display_panel", "contours"): "Draw each instance's outline.",
    ("display_panel", "opacity"): "Opacity of the filled instances.",
    ("display_panel", "colour_by"): "instance: a distinct colour per cell; class: one colour per "
        "class (see the Legend).",
    ("display_panel", "boxes"): "Draw each instance's bounding box.",
    ("display_panel", "labels"): "Write each instance's class name.",
    ("display_panel", "scores"): "Write each instance's score.",
    ("models_panel", "device"): "Where the models run: auto = the GPU when PyTorch finds one, "
        "else the CPU. cuda:N picks one of several GPUs.",
    ("models_panel", "run_all_button"): "Run the models on every image of the list in the "
        "background (results are cached; post-processing changes do not re-run them).",
    ("models_panel", "cancel_button"): "Stop the model run (Esc): the current image's, "
        "between two stages or TTA passes, and the rest of a batch. Nothing is cached; Run "
        "runs it again.",
}


def apply_tooltips(window) -> int:
    """Give every listed control its tooltip (keeping one a panel already set); the count set."""
    count = 0
    for (panel, name), text in TOOLTIPS.items():
        widget = getattr(getattr(window, panel, None), name, None)
        if widget is not None and not widget.toolTip():
            widget.setToolTip(text)
            count += 1
    return count


# ---------------------------------------------------------------------- dropped files
@dataclass
class DropPlan:
    """What a drop of ``paths`` means: models to set, a path to open, halves still missing."""

    models: list[tuple[str, str]] = field(default_factory=list)  # (config, weights)
    open: str | None = None
    lone_configs: list[str] = field(default_factory=list)
    lone_weights: list[str] = field(default_factory=list)


def _sibling(path: Path, names: tuple[str, ...], suffixes: set[str]) -> Path | None:
    """The other half of a model next to ``path``: a conventional name, else the only match."""
    for name in names:
        if (path.parent / name).is_file():
            return path.parent / name
    found = [p for p in path.parent.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    return found[0] if len(found) == 1 else None


def plan_drop(paths: list[str | Path], pending_config: str | None = None,
              pending_weights: str | None = None) -> DropPlan:
    """Sort dropped paths into model pairs and something to open.

    A config pairs with a checkpoint dropped with it (same folder first, else the only one
    dropped), else an earlier lone drop, else a checkpoint lying next to it; a checkpoint alike.
    """
    from cellseg.core.io import IMAGE_SUFFIXES

    paths = [Path(p) for p in paths]
    configs = [p for p in paths if p.suffix.lower() in CONFIG_SUFFIXES and p.is_file()]
    weights = [p for p in paths if p.suffix.lower() in WEIGHTS_SUFFIXES and p.is_file()]
    plan = DropPlan()
    free = list(weights)
    for c in configs:
        w = next((w for w in free if w.parent == c.parent), None)
        if w is None and len(configs) == 1 and len(free) == 1:
            w = free[0]
        if w is None and pending_weights and not weights:
            w = Path(pending_weights)
        if w is None:
            w = _sibling(c, WEIGHTS_NAMES, WEIGHTS_SUFFIXES)
        if w is None:
            plan.lone_configs.append(str(c))
            continue
        if w in free:
            free.remove(w)
        plan.models.append((str(c), str(w)))
    for w in free:
        c = Path(pending_config) if pending_config and not configs else \
            _sibling(w, CONFIG_NAMES, CONFIG_SUFFIXES)
        if c is None:
            plan.lone_weights.append(str(w))
        else:
            plan.models.append((str(c), str(w)))
    openable = [p for p in paths if p.is_dir() or p.suffix.lower() == ".json"
                or p.suffix.lower() in IMAGE_SUFFIXES]
    if openable:
        images = [p for p in openable if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if len(images) > 1 and len({p.parent for p in images}) == 1 and len(openable) == len(images):
            plan.open = str(images[0].parent)  # several images of one folder: that folder
        else:
            plan.open = str(openable[0])
    return plan


def model_slot(config: str | Path) -> str:
    """The models-panel slot a config belongs in: "pointrend" for PointRend heads, else
    "cascade" (Cascade and plain Mask R-CNN configs alike)."""
    from cellseg.core.config import load_config

    cfg = load_config(config)
    names = (cfg.MODEL.ROI_HEADS.NAME, cfg.MODEL.ROI_MASK_HEAD.NAME)
    return "pointrend" if any("PointRend" in str(n) for n in names) else "cascade"


class DropHandler(QObject):
    """Takes drags of local files anywhere over the main window and acts on the drop.

    It filters the application's events rather than the window's: the canvas (a graphics view)
    and the path fields (line edits) take drops themselves and would otherwise swallow a dropped
    file or paste its URL as text. Only events whose receiver lies in this window and that carry
    local file URLs are taken; everything else goes on as usual.
    """

    def __init__(self, window, first_run: "FirstRun") -> None:
        super().__init__(window)
        self.window = window
        self.first_run = first_run
        self.pending_config: str | None = None
        self.pending_weights: str | None = None
        window.setAcceptDrops(True)
        from PySide6.QtWidgets import QApplication

        QApplication.instance().installEventFilter(self)
        window.destroyed.connect(self._remove)

    def _remove(self, *_args) -> None:
        from PySide6.QtWidgets import QApplication

        app = QApplication.instance()
        if app is not None:
            app.removeEventFilter(self)

    def _mine(self, obj) -> bool:
        from PySide6.QtWidgets import QWidget

        return isinstance(obj, QWidget) and (obj is self.window or self.window.isAncestorOf(obj))

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        kind = event.type()
        if kind not in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop):
            return False
        if not self._mine(obj):
            return False
        paths = _local_paths(event.mimeData())
        if not paths:
            return False
        event.acceptProposedAction()
        if kind == QEvent.Type.Drop:
            self.handle(paths)
        return True

    def handle(self, paths: list[str]) -> DropPlan:
        w = self.window
        plan = plan_drop(paths, self.pending_config, self.pending_weights)
        messages = []
        for config, weights in plan.models:
            try:
                slot = model_slot(config)
            except CellsegError as exc:
                w.show_error(str(exc))
                continue
            w.set_model(slot, config, weights)
            others = [k for k in w.models_panel.rows if k != slot]
            if not any(all(w.models_panel.model_paths(k)) for k in others):
                w.post_panel.set_model_choice(slot)
            messages.append(f"{slot} model set: {Path(config).name} + {Path(weights).name}")
            self.pending_config = self.pending_weights = None
        if plan.lone_configs:
            self.pending_config = plan.lone_configs[-1]
            messages.append(f"{Path(self.pending_config).name} received: now drop its checkpoint "
                            "(.pth/.pkl)")
        if plan.lone_weights:
            self.pending_weights = plan.lone_weights[-1]
            messages.append(f"{Path(self.pending_weights).name} received: now drop its "
                            "config.yaml")
        if plan.open:
            w.open_path(plan.open)
        elif not plan.models and not plan.lone_configs and not plan.lone_weights:
            w.show_error("nothing to open in the dropped files: drop images, a folder, a COCO "
                         ".json, or a Detectron2 config.yaml and checkpoint (.pth/.pkl)")
        if messages:
            w.statusBar().showMessage("; ".join(messages), 15000)
        self.first_run.update()
        return plan


def _local_paths(mime) -> list[str]:
    if mime is None or not mime.hasUrls():
        return []
    return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]


# ---------------------------------------------------------------------- guidance box
class Guidance(QFrame):
    def __init__(self, window, sample_tip: str) -> None:
        super().__init__(window.models_panel)
        self.setObjectName("first-run-guidance")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#first-run-guidance { background: #eef4fb; border: 1px solid #b8cde6;"
                           " border-radius: 4px; }")
        self.label = QLabel(GUIDANCE, self)
        self.label.setWordWrap(True)
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.sample_button = QPushButton("Open sample", self)
        self.sample_button.setToolTip(sample_tip)
        self.sample_button.clicked.connect(lambda: open_sample(window))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 8)
        layout.addWidget(self.label)
        layout.addWidget(self.sample_button, 0, Qt.AlignmentFlag.AlignLeft)


def has_any_model(window) -> bool:
    panel = window.models_panel
    return any(all(panel.model_paths(k)) for k in panel.rows)


class FirstRun:
    """File > Open sample's companions: the guidance box (at the top of the Models panel, while
    no model is set), drag-and-drop onto the window, and the controls' tooltips.

    Args:
        window: the review window (its Models panel, model and open commands).
        sample_tip: what Open sample does (the button says it too).
    """

    def __init__(self, window, sample_tip: str) -> None:
        self.window = window
        self.guidance = Guidance(window, sample_tip)
        window.models_panel.layout().insertWidget(0, self.guidance)
        for config, weights in window.models_panel.rows.values():
            for row in (config, weights):
                row.edit.textChanged.connect(lambda _=None: self.update())
        apply_tooltips(window)
        self.drops = DropHandler(window, self)
        self.update()

    def update(self) -> None:
        """Guidance while no model slot is filled."""
        self.guidance.setVisible(not has_any_model(self.window))
