"""Data sets (MSD-style folders with dataset.json): the clear errors for a bad folder, and the seeded split."""

from __future__ import annotations

import json
from pathlib import Path

from SparseSegLib.dataset import load_dataset, split_cases
from SparseSegLib.io import write_image

from test_io import error_of, ramp


def write_dataset(root: Path, entries: list[dict]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({"name": "Tiny", "labels": {"0": "background", "1": "Organ"}, "training": entries}))
    return root


def test_dataset_json_pointing_to_a_missing_file_is_rejected(tmp_path, rotated_geometry):
    """Every listed file must exist; the error names how many are missing and one of them."""
    root = tmp_path / "tiny"
    write_image(ramp(rotated_geometry), rotated_geometry, root / "imagesTr" / "a.nrrd")
    write_dataset(root, [{"image": "./imagesTr/a.nrrd", "label": "./labelsTr/a.nrrd"}])
    error = error_of(load_dataset, root)
    assert "1 missing file" in error.message and "labelsTr" in error.message
    assert "dataset.json" in error.hint


def test_folder_without_dataset_json_is_rejected(tmp_path):
    assert "no dataset.json" in error_of(load_dataset, tmp_path).message


def test_invalid_dataset_json_is_rejected(tmp_path):
    (tmp_path / "dataset.json").write_text("{not json")
    assert "not valid JSON" in error_of(load_dataset, tmp_path).message


def test_split_of_200_cases_is_140_30_30_disjoint_and_reproducible():
    case_ids = [f"case_{n:03d}" for n in range(200)]
    split = split_cases(case_ids, (0.7, 0.15, 0.15), seed=1)
    assert [len(split[part]) for part in ("train", "val", "test")] == [140, 30, 30]
    parts = [set(split[part]) for part in ("train", "val", "test")]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert set().union(*parts) == set(case_ids)
    assert split_cases(case_ids, (0.7, 0.15, 0.15), seed=1) == split
    assert split_cases(case_ids, (0.7, 0.15, 0.15), seed=2) != split


def test_split_fractions_must_sum_to_one():
    assert "summing to 1" in error_of(split_cases, ["a", "b", "c"], (0.5, 0.5, 0.5)).message
