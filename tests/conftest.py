"""Shared test fixtures: paths to the real data and Detectron2 fixtures in ../shared."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

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
