"""Shared fixtures: the bundled hippocampus sample data and small synthetic volumes.

Paths are computed from this file, never hard-coded, so the tests run from any checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run from a plain checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

from SparseSegLib.case import Case, Geometry  # noqa: E402
from SparseSegLib.dataset import Dataset, load_dataset  # noqa: E402


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The bundled MSD hippocampus sample (12 small MRI cases with two labelled classes)."""
    path = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "hippocampus"
    assert (path / "dataset.json").is_file(), f"sample data missing at {path}"
    return path


@pytest.fixture(scope="session")
def sample_dataset(sample_dir: Path) -> Dataset:
    """The sample folder read as a :class:`Dataset`."""
    return load_dataset(sample_dir)


@pytest.fixture(scope="session")
def _sample_case_cached(sample_dataset: Dataset) -> Case:
    return sample_dataset.load(sample_dataset.cases[0])


@pytest.fixture
def sample_case(_sample_case_cached: Case) -> Case:
    """The first sample case (hippocampus_001) with image, geometry, label and class names.

    Loaded once per session; each test gets its own copy of the arrays, so tests may modify them.
    """
    cached = _sample_case_cached
    return Case(
        case_id=cached.case_id,
        image=cached.image.copy(),
        geometry=cached.geometry,
        label=None if cached.label is None else cached.label.copy(),
        annotated=None if cached.annotated is None else cached.annotated.copy(),
        class_names=dict(cached.class_names),
        class_colors=dict(cached.class_colors),
    )


@pytest.fixture
def sample_label(sample_case: Case) -> np.ndarray:
    """The first sample case's label map in ``(k, j, i)`` order (values 0, 1, 2)."""
    assert sample_case.label is not None
    return sample_case.label


@pytest.fixture
def rotated_geometry() -> Geometry:
    """A small grid with anisotropic spacing, an off-zero origin and a 30 degree rotation about k."""
    angle = np.deg2rad(30.0)
    c, s = np.cos(angle), np.sin(angle)
    direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return Geometry(
        size=(7, 6, 5),
        spacing=(0.7, 1.3, 2.5),
        origin=(-12.5, 30.25, 4.0),
        direction=tuple(float(d) for d in direction.ravel()),
    )


@pytest.fixture(scope="module")
def cohort(sample_dataset: Dataset) -> list[Case]:
    """The first four sample cases, each with only its central slice annotated (the self-labelling tests' cohort)."""
    from SparseSegLib.annotation import annotate_case

    return [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:4]]


@pytest.fixture
def scene():
    """An empty MRML scene of a headless Slicer (the ``slicer-core`` wheel), cleared after the test (the Slicer
    session tests, test_slicer_session*.py; they skip without the wheel)."""
    from SparseSegLib.session.headless import make_headless_slicer

    scene, _, _ = make_headless_slicer()
    yield scene
    scene.Clear(1)
