"""``sparseseg demo`` (``make demo``): the Slicer module's Start and one correction played on a bundled sample scan,
with a real worker, and the files a user opens afterwards; the guard that keeps it from deleting foreign files; the
picture's views."""

from __future__ import annotations

import json

import numpy as np
import pytest

from SparseSegLib.benchmarks.interactive.scans import central_slice
from SparseSegLib.cli import main
from SparseSegLib.defaults import START_METHOD
from SparseSegLib.demo import prepare_output
from SparseSegLib.errors import SparseSegError
from SparseSegLib.io import read_image, read_label, read_segmentation
from SparseSegLib.jobs.client import Job
from SparseSegLib.visualize import object_views


def test_demo_plays_start_and_one_correction_and_writes_what_the_readme_promises(tmp_path, capsys, sample_case):
    out = tmp_path / "demo-output"
    code = main(["demo", "--out", str(out), "--cases", "1", "--option", "iterations=20", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    case_id, reference, geometry = sample_case.case_id, sample_case.label, sample_case.geometry
    k = central_slice(reference)

    # Start: the module's job (Start method, rounds left to the method, painted slices along an auto axis,
    # the data set's class names), the central slice painted whole
    start, correction = Job(out / "jobs" / case_id / "stage-1"), Job(out / "jobs" / case_id / "stage-2")
    spec = start.spec
    assert spec.method == START_METHOD and spec.raw["parameters"]["rounds"] is None
    assert spec.raw["parameters"]["method_options"] == {"iterations": 20}
    assert spec.region == {"kind": "slices", "axis": "auto"} and spec.reference is None
    assert {int(v): c["name"] for v, c in spec.raw["classes"].items()} == {1: "Anterior", 2: "Posterior"}
    painted, _ = read_image(start.directory / spec.annotation)
    assert np.array_equal(painted[k], reference[k]) and not np.delete(painted, k, axis=0).any()
    assert len(start.complete_rounds()) >= 1

    # the correction: Continue from Start's last round with one more whole slice, the reference on it
    follow = correction.spec
    assert follow.region["kind"] == "mask" and "continues" in follow.raw["description"]
    mask, _ = read_image(correction.directory / follow.region["mask"])
    whole = np.flatnonzero(mask.astype(bool).all(axis=(1, 2)))
    assert k in whole and len(whole) == 2 and mask.sum() == 2 * mask[0].size
    added = int(next(s for s in whole if s != k))
    corrected, _ = read_image(correction.directory / follow.annotation)
    assert np.array_equal(corrected[added], reference[added]) and np.array_equal(corrected[k], reference[k])
    assert correction.complete_rounds()[-1] > start.complete_rounds()[-1]  # the new slice was trained on

    # every streamed round printed with its Dice, as `sparseseg run` prints events
    for job, name in ((start, "Start"), (correction, "correction 1")):
        for index in job.complete_rounds():
            if index in start.complete_rounds() and job is correction:
                continue
            assert f"[{case_id} {name}] round {index}/" in printed
    assert printed.count("-> Dice ") == len(correction.complete_rounds())
    assert f"k={added}" in printed and "mean Dice over 1 scan(s) after Start" in printed

    # the final result on the input geometry, as a label map and as named, coloured Slicer segments
    final = correction.load_round(None, probabilities=False).label
    label = read_label(out / "labels" / f"{case_id}.nii.gz", geometry)
    assert np.array_equal(label, final)
    segments, seg_geometry, names, colors = read_segmentation(out / "segmentations" / f"{case_id}.seg.nrrd")
    assert geometry.matches(seg_geometry) and np.array_equal(segments, final)
    assert names == {1: "Anterior", 2: "Posterior"} and set(colors) == {1, 2}

    # metrics.md: a row per stage, every stage's tables; metrics.json: every round scored
    table = (out / "metrics.md").read_text()
    assert table.startswith("# SparseSeg demo")
    assert f"| {case_id} | Start | k={k} |" in table
    assert f"| {case_id} | correction 1 | k={k}, k={added} (" in table
    assert "## After Start" in table and "## After correction 1" in table and "### Posterior" in table
    record = json.loads((out / "metrics.json").read_text())
    stages = record["scans"][case_id]
    assert [s["name"] for s in stages] == ["Start", "correction 1"] and record["job"]["method"] == START_METHOD
    assert all(0.0 <= r["metrics"]["mean"]["dice"] <= 1.0 for s in stages for r in s["rounds"])
    assert stages[1]["final"]["merged"]["dice"] == pytest.approx(
        stages[1]["rounds"][-1]["metrics"]["merged"]["dice"])
    assert (out / "picture.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "model").exists()


def test_demo_errors_say_what_to_do_before_any_job_runs(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["demo", "--out", str(out), "--cases", "0"]) == 2
    assert "--cases" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--option", "iteratons=20"]) == 2
    assert "unknown option 'iteratons'" in capsys.readouterr().err
    assert main(["demo", "--out", str(out), "--method", "no-such-method"]) == 2
    assert "no-such-method" in capsys.readouterr().err
    assert not out.exists()


def test_the_demo_replaces_an_earlier_demo_but_never_touches_other_files(tmp_path):
    earlier = tmp_path / "earlier"
    (earlier / "model").mkdir(parents=True)
    (earlier / "labels").mkdir()
    (earlier / "labels" / "hippocampus_023.nii.gz").write_bytes(b"old")
    (earlier / "metrics.md").write_text("# SparseSeg demo\n\nold cohort demo\n")
    (earlier / "notes.txt").write_text("mine")
    prepare_output(earlier)
    assert sorted(p.name for p in earlier.iterdir()) == ["notes.txt"]
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "README.md").write_text("a project")
    with pytest.raises(SparseSegError, match="earlier demo did not write"):
        prepare_output(foreign)
    assert (foreign / "README.md").is_file()
    assert prepare_output(tmp_path / "new").is_dir()


def test_the_picture_shows_the_painted_slice_two_more_inside_the_object_and_a_cross_section(sample_label):
    k = central_slice(sample_label)
    painted = np.zeros(sample_label.shape, bool)
    painted[k] = True
    views = object_views(sample_label, painted)
    first, last = np.flatnonzero(sample_label.any(axis=(1, 2)))[[0, -1]]
    assert views[0] == (f"painted slice k={k}", 0, k)
    assert [v[1] for v in views] == [0, 0, 0, 1] and all(first <= v[2] <= last for v in views[1:3])
    assert all(sample_label[v[2]].any() for v in views[1:3])
    assert sample_label[:, views[3][2]].any()  # the cross-section goes through the object
