"""Files shipped with the app: the sample nuclei image, its licence note and a demo model.

Everything is located relative to this package (``Path(__file__)``), which holds in a source
checkout, an installed wheel and a PyInstaller bundle alike (``app.spec`` collects this folder
as ``cellseg/resources``). The demo model is optional: a build without it still opens the
sample image, and :func:`sample` reports ``has_model`` False.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cellseg.core.errors import DataError

RESOURCES_DIR = Path(__file__).resolve().parent
SAMPLE_DIR = RESOURCES_DIR / "sample"


@dataclass(frozen=True)
class Sample:
    """The bundled sample: a real 512x512 uint16 nuclei image and (if shipped) its demo model."""

    image: Path
    licence: Path
    config: Path | None
    weights: Path | None

    @property
    def has_model(self) -> bool:
        return self.config is not None and self.weights is not None


def sample(root: Path | None = None) -> Sample:
    """The bundled sample; DataError naming the missing file when the image is not there."""
    root = Path(root) if root is not None else SAMPLE_DIR
    image, licence = root / "nuclei.tif", root / "LICENSE.md"
    for path in (image, licence):
        if not path.is_file():
            raise DataError(f"sample file missing from this installation: {path}")
    config, weights = root / "model" / "config.yaml", root / "model" / "model_final.pth"
    if not (config.is_file() and weights.is_file()):
        config = weights = None
    return Sample(image, licence, config, weights)
