"""Shared fixtures: paths to the project, its catalogue and the real drop photos."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import components  # noqa: F401  (TF_USE_LEGACY_KERAS before anything imports TensorFlow)

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DROPS = REPO_ROOT.parent / "shared" / "real-drops"


@pytest.fixture
def real_drops() -> Path:
    """The twelve real MARCO photographs kept beside the project (CC BY 4.0)."""
    if not (REAL_DROPS / "labels.csv").is_file():
        pytest.skip(f"real MARCO photographs not found at {REAL_DROPS}")
    return REAL_DROPS


@pytest.fixture
def catalogue_copy(tmp_path: Path) -> Path:
    """A writable copy of the project's catalogue folder."""
    from schemas import SOURCES_DIR

    target = tmp_path / "sources"
    shutil.copytree(SOURCES_DIR, target)
    return target
