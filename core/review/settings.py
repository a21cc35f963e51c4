"""What the Post-processing panel edits, as one frozen value: which model's outputs to show,
whether the models run with test-time augmentation, and the post-processing of their outputs.

The model choice and TTA decide *which raw outputs* an image needs (they are part of the
raw-output cache key: changing them may need model runs); everything else only re-composes
cached outputs through :func:`cellseg.core.postprocess.pipeline.compose`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..postprocess.pipeline import Settings
from ..postprocess.soft_nms import METHODS

# the Post-processing panel's model choices and the model slots each one composes
MODELS_OF_CHOICE: dict[str, tuple[str, ...]] = {
    "cascade": ("cascade",), "pointrend": ("pointrend",), "ensemble": ("cascade", "pointrend")}


@dataclass(frozen=True)
class ReviewSettings:
    """The review's model choice, TTA and post-processing (the panel's defaults).

    The score threshold starts at 0.5, not at :class:`Settings`' 0: a first look should not be
    buried under low-confidence detections. ``max_detections`` None keeps the model's own cap.
    """

    model: str = "cascade"  # a key of MODELS_OF_CHOICE; "ensemble" fuses both with WBF
    tta: bool = False
    soft_nms: bool = False
    soft_nms_method: str = Settings.soft_nms_method
    soft_nms_sigma: float = Settings.soft_nms_sigma
    score_threshold: float = 0.5
    max_detections: int | None = None

    def __post_init__(self):
        if self.model not in MODELS_OF_CHOICE:
            raise ValueError(f"model must be one of {tuple(MODELS_OF_CHOICE)}, got {self.model!r}")
        if self.soft_nms_method not in METHODS:
            raise ValueError(f"soft_nms_method must be one of {METHODS}, got "
                             f"{self.soft_nms_method!r}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError("score_threshold must be in [0, 1]")
        if self.max_detections is not None and self.max_detections < 0:
            raise ValueError("max_detections must be >= 0 or None")
        object.__setattr__(self, "tta", bool(self.tta))
        object.__setattr__(self, "soft_nms_sigma", float(self.soft_nms_sigma))
        object.__setattr__(self, "score_threshold", float(self.score_threshold))

    @property
    def models(self) -> tuple[str, ...]:
        """The model slots whose raw outputs are composed ("cascade", "pointrend")."""
        return MODELS_OF_CHOICE[self.model]

    def pipeline(self) -> Settings:
        """The post-processing part, as :func:`compose` takes it (WBF iff the ensemble)."""
        return Settings(soft_nms=self.soft_nms, soft_nms_method=self.soft_nms_method,
                        soft_nms_sigma=self.soft_nms_sigma, wbf=self.model == "ensemble",
                        score_threshold=self.score_threshold,
                        max_detections=self.max_detections)

    def needs_runs_after(self, previous: "ReviewSettings") -> bool:
        """Whether going from ``previous`` to these settings may need model runs."""
        return (self.model, self.tta) != (previous.model, previous.tta)

    def replace(self, **changes) -> "ReviewSettings":
        return replace(self, **changes)
