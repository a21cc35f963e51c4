"""Files shipped with the app: the sample nuclei image, its licence note and two demo models.

Everything is located relative to this package (``Path(__file__)``), which holds in a source
checkout, an installed wheel and a PyInstaller bundle alike (``app.spec`` collects this folder
as ``cellseg/resources``). The demo models (a Cascade Mask R-CNN in ``sample/model_cascade``, a
PointRend in ``sample/model_pointrend``) are optional: a build without them still opens the
sample image, and :func:`sample` reports ``has_model`` False.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cellseg.core.errors import DataError

RESOURCES_DIR = Path(__file__).resolve().parent
SAMPLE_DIR = RESOURCES_DIR / "sample"
# models-panel slot -> folder of its demo model under the sample folder
MODEL_FOLDERS = (("cascade", "model_cascade"), ("pointrend", "model_pointrend"))


@dataclass(frozen=True)
class SampleModel:
    """One shipped demo model and the models-panel slot it belongs in."""

    slot: str
    config: Path
    weights: Path


@dataclass(frozen=True)
class Sample:
    """The bundled sample: a real 512x512 uint16 nuclei image and the demo models shipped."""

    image: Path
    licence: Path
    models: tuple[SampleModel, ...]

    @property
    def has_model(self) -> bool:
        return bool(self.models)


def sample(root: Path | None = None) -> Sample:
    """The bundled sample; DataError naming the missing file when the image is not there."""
    root = Path(root) if root is not None else SAMPLE_DIR
    image, licence = root / "nuclei.tif", root / "LICENSE.md"
    for path in (image, licence):
        if not path.is_file():
            raise DataError(f"sample file missing from this installation: {path}")
    models = []
    for slot, folder in MODEL_FOLDERS:
        config, weights = root / folder / "config.yaml", root / folder / "model_final.pth"
        if config.is_file() and weights.is_file():
            models.append(SampleModel(slot, config, weights))
    return Sample(image, licence, tuple(models))
