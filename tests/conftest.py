"""Shared test fixtures: paths to the real data and Detectron2 fixtures in ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, settings

from cellseg.core.project.records import Category
from cellseg.core.project.states import Origin
from cellseg.core.project.store import ProjectStore
from cellseg.core.structures import CroppedMasks, Instances

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Hypothesis: the same examples on every run in CI (derandomised; a failure prints the example
# and the seed to reproduce it), random search on a developer's machine.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CELLSEG_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "detectron2"
NUCLEI = SHARED / "data" / "nuclei"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"Detectron2 fixtures not found at {FIXTURES} (set CELLSEG_SHARED)")
    return FIXTURES


@pytest.fixture(scope="session")
def nuclei_dir() -> Path:
    if not NUCLEI.is_dir():
        pytest.fail(f"nuclei data not found at {NUCLEI} (set CELLSEG_SHARED)")
    return NUCLEI


@pytest.fixture(scope="module")
def nuclei(nuclei_dir):
    labels = tifffile.imread(nuclei_dir / "mask2d.tif")
    masks, ids = CroppedMasks.from_label_image(labels)
    n = len(ids)
    scores = np.linspace(0.2, 0.99, n).astype(np.float32)
    return labels, ids, Instances(labels.shape, masks.tight_boxes(), scores, np.zeros(n), masks)


@pytest.fixture
def project(tmp_path, nuclei, nuclei_dir):
    labels, ids, inst = nuclei
    store = ProjectStore.create(tmp_path / "p.cellseg", nuclei_dir)
    store.set_categories([Category(0, 1, "nucleus")])
    image = store.add_image("img2d.tif", *labels.shape)
    store.add_instances(image.id, inst, Origin.MODEL, label_ids=ids)
    yield store, image
    store.close()
