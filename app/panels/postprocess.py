"""Post-processing panel: model choice, TTA, Soft-NMS, score threshold, max detections.

``settings()`` reads the panel as one :class:`~cellseg.core.review.settings.ReviewSettings`
(its ``pipeline()`` is what ``compose`` takes); the controls start at its defaults (a score
threshold of 0.5, so a first look is not buried under low-confidence detections). The model
choice says which raw outputs are composed; TTA is a model-run option (part of the raw-output
cache key), not a post-processing setting.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QLabel, QSlider, QSpinBox, QWidget)

from cellseg.core.postprocess.soft_nms import METHODS
from cellseg.core.review.settings import MODELS_OF_CHOICE, ReviewSettings

CHOICES = (("cascade", "Cascade Mask R-CNN"), ("pointrend", "PointRend"),
           ("ensemble", "Ensemble (WBF of both)"))


class PostprocessPanel(QWidget):
    changed = Signal()  # post-processing only: re-compose from cached raw outputs
    run_options_changed = Signal()  # model choice or TTA: may need model runs

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        form = QFormLayout(self)
        self.model = QComboBox(self)
        for key, title in CHOICES:
            self.model.addItem(title, key)
        self.tta = QCheckBox("Test-time augmentation", self)
        self.soft_nms = QCheckBox("Soft-NMS", self)
        defaults = ReviewSettings()
        self.method = QComboBox(self)
        self.method.addItems(list(METHODS))
        self.method.setCurrentText(defaults.soft_nms_method)
        self.sigma = QDoubleSpinBox(self)
        self.sigma.setRange(0.01, 5.0)
        self.sigma.setSingleStep(0.05)
        self.sigma.setValue(defaults.soft_nms_sigma)
        self.score = QSlider(Qt.Orientation.Horizontal, self)
        self.score.setRange(0, 100)
        self.score.setValue(round(defaults.score_threshold * 100))
        self.score_label = QLabel("0.50", self)
        self.score_label.setMinimumWidth(32)
        self.max_det = QSpinBox(self)
        self.max_det.setRange(0, 100000)
        self.max_det.setSpecialValueText("no limit")  # 0 -> Settings.max_detections None
        self.max_det.setValue(defaults.max_detections or 0)

        score_row = QHBoxLayout()
        score_row.addWidget(self.score)
        score_row.addWidget(self.score_label)
        form.addRow("Model", self.model)
        form.addRow(self.tta)
        form.addRow(self.soft_nms)
        form.addRow("Soft-NMS method", self.method)
        form.addRow("Soft-NMS sigma", self.sigma)
        form.addRow("Score threshold", score_row)
        form.addRow("Max detections", self.max_det)

        self.model.currentIndexChanged.connect(self.run_options_changed)
        self.tta.toggled.connect(self.run_options_changed)
        for signal in (self.soft_nms.toggled, self.method.currentIndexChanged,
                       self.sigma.valueChanged, self.max_det.valueChanged):
            signal.connect(self.changed)
        self.score.valueChanged.connect(self._score_moved)
        self.soft_nms.toggled.connect(self._enable)
        self._enable(False)

    def set_model_cap(self, cap: int) -> None:
        """Say what "no limit" means: the model itself (and TTA's merge) keeps at most the
        config's TEST.DETECTIONS_PER_IMAGE detections."""
        text = f"model's cap ({cap})" if cap > 0 else "no limit"
        self.max_det.setSpecialValueText(text)
        self.max_det.setToolTip(f"Keep the N best detections per image. 0 = {text}: the "
                                "config's TEST.DETECTIONS_PER_IMAGE caps what the model returns "
                                "(with or without TTA); raise it in the config for more.")

    def _score_moved(self, value: int) -> None:
        self.score_label.setText(f"{value / 100:.2f}")
        self.changed.emit()

    def _enable(self, on: bool) -> None:
        self.method.setEnabled(on)
        self.sigma.setEnabled(on)

    # ------------------------------------------------------------------ values
    def model_choice(self) -> str:
        return self.model.currentData()

    def set_model_choice(self, key: str) -> None:
        self.model.setCurrentIndex([k for k, _ in CHOICES].index(key))

    def models(self) -> tuple[str, ...]:
        return MODELS_OF_CHOICE[self.model_choice()]

    def score_threshold(self) -> float:
        return self.score.value() / 100

    def set_score_threshold(self, value: float) -> None:
        self.score.setValue(round(value * 100))

    def settings(self) -> ReviewSettings:
        """What the panel shows, as the review session's typed settings."""
        return ReviewSettings(model=self.model_choice(), tta=self.tta.isChecked(),
                              soft_nms=self.soft_nms.isChecked(),
                              soft_nms_method=self.method.currentText(),
                              soft_nms_sigma=float(self.sigma.value()),
                              score_threshold=self.score_threshold(),
                              max_detections=int(self.max_det.value()) or None)
