"""``job.json`` without a worker process: defaults, a full job through make_job, and messages that name the
bad key and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from SparseSegLib.errors import SparseSegError
from SparseSegLib.jobs.schema import PARAMETER_DEFAULTS, make_job, read_job, validate_job


def minimal_job(**changes) -> dict:
    job = {"schema_version": 1, "method": "sparse-only",
           "inputs": {"image": "inputs/image.nrrd", "annotation": "inputs/annotation.nrrd"}}
    job.update(changes)
    return job


def test_minimal_job_gets_defaults(tmp_path):
    spec = validate_job(minimal_job(), tmp_path)
    assert spec.method == "sparse-only"
    assert spec.image == tmp_path.resolve() / "inputs" / "image.nrrd"
    assert spec.region == {"kind": "slices", "axis": "auto"}
    assert spec.parameters == PARAMETER_DEFAULTS
    assert spec.rounds is None and spec.device == "auto" and spec.seed == 0 and spec.reference is None  # None: the method decides


def test_full_job_round_trips_through_make_job(tmp_path):
    job = make_job("sparse-only", "/data/image.nrrd", "seg.seg.nrrd", region={"kind": "boxes", "boxes": [
        {"ijk": [[1, 2, 3], [4, 5, 6]]}, {"ras": [[-1.5, 2, 3], [4, 5.5, 6]]}]}, reference="ref.nii.gz",
        classes={1: {"name": "Anterior", "color": [1, 0, 0]}, 2: "Posterior"},
        parameters={"rounds": 4, "iterations_per_round": 30, "patch_size": [64, 48], "save_probabilities": True},
        device="cuda:1", seed=7, case_id="hippo")
    spec = validate_job(json.loads(json.dumps(job)), tmp_path)
    assert spec.image == Path("/data/image.nrrd")
    assert spec.annotation == tmp_path.resolve() / "seg.seg.nrrd"
    assert spec.region["boxes"][1] == {"ras": [[-1.5, 2.0, 3.0], [4.0, 5.5, 6.0]]}
    assert spec.class_names() == {1: "Anterior", 2: "Posterior"} and spec.class_colors() == {1: (1.0, 0.0, 0.0)}
    assert spec.parameters["rounds"] == 4 and spec.parameters["patch_size"] == [64, 48]
    assert spec.device == "cuda:1" and spec.seed == 7 and spec.case_id == "hippo"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"parameters": {"round": 3}}, ["unknown key 'parameters.round'", "Did you mean 'rounds'"]),
        ({"colour": 1}, ["unknown key 'colour'", "Allowed keys"]),
        ({"parameters": {"rounds": 0}}, ["parameters.rounds", "from 1 to 1000", "not 0"]),
        ({"parameters": {"rounds": True}}, ["parameters.rounds", "whole number", "not true"]),
        ({"parameters": {"learning_rate": -1}}, ["parameters.learning_rate", "positive"]),
        ({"parameters": {"network": "4d"}}, ["parameters.network", "'4d'", "Allowed: 2d, 3d"]),
        ({"parameters": {"patch_size": [64]}}, ["parameters.patch_size", "list of 2"]),
        ({"parameters": {"save_probabilities": "yes"}}, ["parameters.save_probabilities", "true or false"]),
        ({"device": "gpu"}, ["device", "'gpu'", "cuda:N"]),
        ({"seed": -1}, ["seed", ">= 0"]),
        ({"region": {"kind": "circle"}}, ["region.kind", "slices, boxes, mask, full"]),
        ({"region": {"kind": "slices", "axis": 3}}, ["region.axis", "auto"]),
        ({"region": {"kind": "slices", "boxes": []}}, ["unknown key 'region.boxes'"]),
        ({"region": {"kind": "boxes", "boxes": []}}, ["region.boxes", "non-empty list"]),
        ({"region": {"kind": "boxes", "boxes": [{"ijk": [[1, 2], [3, 4]]}]}}, ["region.boxes[0].ijk", "two corners"]),
        ({"region": {"kind": "boxes", "boxes": [{"ijk": [[1, 2, 3.5], [3, 4, 5]]}]}}, ["region.boxes[0].ijk", "whole number"]),
        ({"region": {"kind": "boxes", "boxes": [{"lps": [[1, 2, 3], [3, 4, 5]]}]}}, ["region.boxes[0]", '"ijk" or "ras"']),
        ({"region": {"kind": "mask"}}, ["region.mask", "missing"]),
        ({"classes": {"0": "Background"}}, ["classes.0", "not a class value"]),
        ({"classes": {"1": {"name": "A", "color": [2, 0, 0]}}}, ["classes.1.color", "0 to 1"]),
        ({"schema_version": 2}, ["schema_version", "newer", "Upgrade"]),
        ({"method": ""}, ["method", "non-empty string"]),
        ({"inputs": {"image": "a.nrrd"}}, ["inputs.annotation", "missing"]),
        ({"inputs": {"image": "a.nrrd", "annotation": "b.nrrd", "labels": "c"}}, ["unknown key 'inputs.labels'"]),
    ],
)
def test_invalid_job_names_key_and_allowed_values(tmp_path, change, words):
    with pytest.raises(SparseSegError) as raised:
        validate_job(minimal_job(**change), tmp_path)
    text = raised.value.message + " | " + raised.value.hint
    for word in words:
        assert word in text, text
    assert raised.value.hint


@pytest.mark.parametrize("missing", ["schema_version", "method", "inputs"])
def test_missing_required_key(tmp_path, missing):
    job = minimal_job()
    del job[missing]
    with pytest.raises(SparseSegError, match=f"missing key '{missing}'"):
        validate_job(job, tmp_path)


def test_read_job_reports_json_syntax_and_missing_file(tmp_path):
    with pytest.raises(SparseSegError, match="no job.json"):
        read_job(tmp_path)
    (tmp_path / "job.json").write_text('{"schema_version": 1,\n "method": "x",,}')
    with pytest.raises(SparseSegError, match=r"not valid JSON \(line 2"):
        read_job(tmp_path)
    with pytest.raises(SparseSegError, match="job folder not found"):
        read_job(tmp_path / "nowhere")
