"""The ``sparseseg`` command line: train -> predict keeps geometry, and bad input fails in one line.

Each bad-input case must print a single actionable line on stderr (no traceback) and exit non-zero.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SparseSegLib.cli import main
from SparseSegLib.io import geometry_of


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sparseseg: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, sample_dir) -> Path:
    """A tiny model trained through the CLI on four sample cases (enough to test the plumbing)."""
    out = tmp_path_factory.mktemp("model")
    cases = tmp_path_factory.mktemp("lists") / "cases.txt"
    cases.write_text("hippocampus_001\nhippocampus_003\nhippocampus_004\nhippocampus_006\n")
    code = main(["train", "--dataset", str(sample_dir), "--cases", str(cases), "--annotation", "central-slice",
                 "--method", "sparse-only", "--iterations", "5", "--device", "cpu", "--out", str(out)])
    assert code == 0
    return out


def _rotated_copy(source: Path, target: Path) -> sitk.Image:
    """The real image with a non-identity direction, anisotropic spacing and an offset origin."""
    image = sitk.ReadImage(str(source))
    angle = np.deg2rad(20)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    image.SetSpacing((0.8, 1.1, 2.0))
    image.SetOrigin((10.5, -3.25, 40.0))
    sitk.WriteImage(image, str(target))
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_predict_writes_the_input_geometry_and_format(capsys, model_dir, sample_dir, tmp_path, suffix):
    source = sample_dir / "imagesTr" / "hippocampus_011.nii.gz"
    image = _rotated_copy(source, tmp_path / f"scan{suffix}")
    code, out, _ = run_cli(capsys, "predict", "--model", model_dir, "--input", tmp_path / f"scan{suffix}", "--out", tmp_path / "pred")
    assert code == 0 and "scan" in out
    result = sitk.ReadImage(str(tmp_path / "pred" / f"scan{suffix}"))
    assert result.GetSize() == image.GetSize()
    assert geometry_of(result).matches(geometry_of(image), tolerance=1e-6)
    assert np.allclose(result.GetDirection(), image.GetDirection(), atol=1e-6)
    assert set(np.unique(sitk.GetArrayFromImage(result))) <= {0, 1, 2}


def test_predict_on_a_folder_writes_one_label_per_image(capsys, model_dir, sample_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("hippocampus_011.nii.gz", "hippocampus_014.nii.gz"):
        shutil.copy(sample_dir / "imagesTr" / name, folder / name)
    code, out, _ = run_cli(capsys, "predict", "--model", model_dir, "--input", folder, "--out", tmp_path / "out")
    assert code == 0 and "[2/2]" in out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["hippocampus_011.nii.gz", "hippocampus_014.nii.gz"]


def test_evaluate_prints_a_table_with_mean_and_sd_and_writes_json(capsys, sample_dir, tmp_path):
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("hippocampus_001.nii.gz", "hippocampus_003.nii.gz"):
        shutil.copy(sample_dir / "labelsTr" / name, pred / name)
    code, out, _ = run_cli(capsys, "evaluate", "--pred", pred, "--ref", sample_dir / "labelsTr", "--json", tmp_path / "s.json")
    assert code == 0
    assert "mean ± sd" in out and "Anterior" in out and "HD95 (mm)" in out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["summary"]["merged"]["dice"]["mean"] == pytest.approx(1.0)


# --- bad input: one line, non-zero exit ---------------------------------------------------------

def test_missing_image_file(capsys, model_dir, tmp_path):
    assert_one_line_error(*run_cli(capsys, "predict", "--model", model_dir, "--input", tmp_path / "nope.nii.gz",
                                   "--out", tmp_path)[::2], "not found")


def test_unreadable_image_file(capsys, model_dir, tmp_path):
    bad = tmp_path / "scan.nii.gz"
    bad.write_text("this is not an image")
    assert_one_line_error(*run_cli(capsys, "predict", "--model", model_dir, "--input", bad, "--out", tmp_path / "o")[::2],
                          "cannot read")


def test_predict_with_a_job_folder_that_has_no_round_yet(capsys, sample_dir, tmp_path):
    """``--model JOBDIR`` applies the job's newest round; before the first round there is nothing to apply."""
    from SparseSegLib.io import read_image
    from SparseSegLib.jobs.client import Job

    scan = sample_dir / "imagesTr" / "hippocampus_011.nii.gz"
    image, geometry = read_image(scan)
    painted = np.zeros(image.shape, np.uint8)
    painted[image.shape[0] // 2, 10:20, 10:20] = 1
    job = Job.create(tmp_path / "job", image, geometry, painted, "propagate", region={"kind": "slices", "axis": "auto"})
    assert_one_line_error(*run_cli(capsys, "predict", "--model", job.directory, "--input", scan,
                                   "--out", tmp_path / "o")[::2], "no complete round", "wait for a round")


def test_2d_image(capsys, model_dir, tmp_path):
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkFloat32), str(tmp_path / "slice.nii.gz"))
    assert_one_line_error(*run_cli(capsys, "predict", "--model", model_dir, "--input", tmp_path / "slice.nii.gz",
                                   "--out", tmp_path / "o")[::2], "2D")


def test_4d_image(capsys, model_dir, tmp_path):
    volume = sitk.Image(8, 8, 8, sitk.sitkFloat32)
    sitk.WriteImage(sitk.JoinSeries([volume, volume]), str(tmp_path / "series.nii.gz"))
    assert_one_line_error(*run_cli(capsys, "predict", "--model", model_dir, "--input", tmp_path / "series.nii.gz",
                                   "--out", tmp_path / "o")[::2], "2 channels", "--channel")


def test_nan_intensities(capsys, model_dir, sample_dir, tmp_path):
    image = sitk.Cast(sitk.ReadImage(str(sample_dir / "imagesTr" / "hippocampus_001.nii.gz")), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[3, 4, 5] = np.nan
    broken = sitk.GetImageFromArray(array)
    broken.CopyInformation(image)
    sitk.WriteImage(broken, str(tmp_path / "nan.nrrd"))
    assert_one_line_error(*run_cli(capsys, "predict", "--model", model_dir, "--input", tmp_path / "nan.nrrd",
                                   "--out", tmp_path / "o")[::2], "NaN")


def _dataset_copy(sample_dir: Path, target: Path, names=("hippocampus_001", "hippocampus_003", "hippocampus_004")) -> Path:
    (target / "imagesTr").mkdir(parents=True)
    (target / "labelsTr").mkdir()
    for name in names:
        for part in ("imagesTr", "labelsTr"):
            shutil.copy(sample_dir / part / f"{name}.nii.gz", target / part / f"{name}.nii.gz")
    meta = json.loads((sample_dir / "dataset.json").read_text())
    meta["training"] = [{"image": f"./imagesTr/{n}.nii.gz", "label": f"./labelsTr/{n}.nii.gz"} for n in names]
    (target / "dataset.json").write_text(json.dumps(meta))
    return target


def test_label_image_geometry_mismatch(capsys, sample_dir, tmp_path):
    data = _dataset_copy(sample_dir, tmp_path / "data")
    label = sitk.ReadImage(str(data / "labelsTr" / "hippocampus_001.nii.gz"))
    label.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(label, str(data / "labelsTr" / "hippocampus_001.nii.gz"))
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", data, "--out", tmp_path / "m", "--iterations", "1")[::2],
                          "not on the image's voxel grid", "spacing")


def test_empty_annotation(capsys, sample_dir, tmp_path):
    """A box placed where... nothing can be annotated is impossible; an all-unknown annotation is 'empty'."""
    from SparseSegLib.annotation import check_annotation
    from SparseSegLib.errors import SparseSegError

    with pytest.raises(SparseSegError) as error:
        check_annotation(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), bool))
    assert "empty annotation" in error.value.one_line()


def test_empty_annotation_from_the_command_line(capsys, sample_dir, tmp_path):
    data = _dataset_copy(sample_dir, tmp_path / "data")
    for name in ("hippocampus_001", "hippocampus_003", "hippocampus_004"):
        label = sitk.ReadImage(str(data / "labelsTr" / f"{name}.nii.gz"))
        sitk.WriteImage(label * 0, str(data / "labelsTr" / f"{name}.nii.gz"))
    # slices:N needs an object to spread slices over: an empty label map has none.
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", data, "--annotation", "slices:3", "--out", tmp_path / "m",
                                   "--iterations", "1")[::2], "foreground")


def test_annotation_spec_outside_the_volume(capsys, sample_dir, tmp_path):
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", sample_dir, "--annotation", "boxes:1:500",
                                   "--out", tmp_path / "m", "--iterations", "1")[::2], "box")
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", sample_dir, "--annotation", "central-slice:5",
                                   "--out", tmp_path / "m", "--iterations", "1")[::2], "axis")


def test_dataset_json_pointing_to_missing_files(capsys, sample_dir, tmp_path):
    data = _dataset_copy(sample_dir, tmp_path / "data")
    (data / "imagesTr" / "hippocampus_003.nii.gz").unlink()
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", data, "--out", tmp_path / "m")[::2],
                          "missing file", "hippocampus_003")


def test_unknown_method_name(capsys, sample_dir, tmp_path):
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", sample_dir, "--method", "magic", "--out", tmp_path / "m")[::2],
                          "unknown method", "sparse-only")
    assert_one_line_error(*run_cli(capsys, "bench", "--dataset", sample_dir, "--methods", "sparse-only,magic",
                                   "--out", tmp_path / "b")[::2], "unknown method")


def test_method_options_reach_the_method_or_fail_clearly(capsys, sample_dir, tmp_path):
    from SparseSegLib.bench import run_name
    from SparseSegLib.cli import parse_options

    assert parse_options(["theta=0.8", "fuse_axes=true", "classes=merged"]) == {"theta": 0.8, "fuse_axes": True,
                                                                                "classes": "merged"}
    assert run_name("self-labelling", "2d", {"fuse_axes": True}) == "self-labelling [fuse_axes=true] (2D)"
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", sample_dir, "--option", "theta", "--out", tmp_path / "m")[::2],
                          "KEY=VALUE")
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", sample_dir, "--method", "self-labelling", "--option",
                                   "tehta=0.8", "--out", tmp_path / "m")[::2], "tehta", "theta")
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", sample_dir, "--method", "sparse-only", "--option",
                                   "theta=0.8", "--out", tmp_path / "m")[::2], "no method options")


def test_a_real_process_exits_non_zero_without_a_traceback(tmp_path):
    """The installed entry point, run as a user would: exit code 2 and a single line on stderr."""
    result = subprocess.run([sys.executable, "-m", "SparseSegLib.cli", "predict", "--model", str(tmp_path / "none"),
                             "--input", str(tmp_path), "--out", str(tmp_path / "o")], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2
    assert_one_line_error(result.returncode, result.stderr, "model folder not found")


def record_training(monkeypatch, what) -> list:
    """Wrap every method ``sparseseg bench`` trains so that ``what(options, validation)`` of each training call is
    recorded (the real method still trains); returns the list the records go to."""
    import SparseSegLib.bench as bench

    records, real = [], bench.get_method

    class Recording:
        def __init__(self, method):
            self.method = method

        def check_options(self, options):
            return self.method.check_options(options)

        def train(self, cases, options, reporter, validation=None):
            records.append(what(options, validation))
            return self.method.train(cases, options, reporter, validation=validation)

    monkeypatch.setattr(bench, "get_method", lambda name: Recording(real(name)))
    return records


def test_bench_train_seed_changes_training_only(capsys, sample_dir, tmp_path, monkeypatch):
    # --train-seed reruns a method on the same split and annotation with another training seed (its spread)
    seeds = record_training(monkeypatch, lambda options, validation: options.seed)
    folds = []
    for extra in ([], ["--train-seed", "7"]):
        out = tmp_path / f"bench{len(extra)}"
        code, _, err = run_cli(capsys, "bench", "--dataset", sample_dir, "--methods", "sparse-only", "--max-cases", "6",
                               "--iterations", "2", "--out", out, "--device", "cpu", *extra)
        assert code == 0, err
        results = json.loads((out / "results.json").read_text())
        folds.append(results["folds"])
    assert seeds == [0, 7] and folds[0] == folds[1] and results["config"]["train_seed"] == 7


def test_bench_evaluate_val_scores_the_val_part_without_validating_on_it(capsys, sample_dir, tmp_path, monkeypatch):
    # --evaluate val chooses settings without the test part: it scores the val volumes on their full labels and does
    # not hand them to training as validation cases; the default scores the test volumes
    validations = record_training(monkeypatch, lambda options, validation: [case.case_id for case in validation or []])
    scored = {}
    for part in ("test", "val"):
        out = tmp_path / part
        code, _, err = run_cli(capsys, "bench", "--dataset", sample_dir, "--methods", "sparse-only", "--max-cases", "6",
                               "--split", "0.4,0.3,0.3", "--iterations", "2", "--out", out, "--device", "cpu",
                               "--evaluate", part)
        assert code == 0, err
        results = json.loads((out / "results.json").read_text())
        scored[part] = sorted(results["runs"]["sparse-only (2D)"]["cases"])
        assert results["config"]["evaluate"] == part
        assert f"scored on the full labels of the {part} cases" in (out / "report.md").read_text()
    fold = results["folds"][0]
    assert scored == {"test": sorted(fold["test"]), "val": sorted(fold["val"])} and set(fold["val"]).isdisjoint(fold["test"])
    assert validations == [fold["val"], []]
    assert_one_line_error(*run_cli(capsys, "bench", "--dataset", sample_dir, "--methods", "sparse-only", "--folds", "2",
                                   "--evaluate", "val", "--out", tmp_path / "k")[::2], "validation part")


def test_train_without_method_runs_the_cohort_default(capsys, sample_dir, tmp_path):
    """``sparseseg train`` without ``--method`` / ``--budget`` runs SparseSegLib.defaults' cohort default (chosen on
    the validation parts), not the sparse-only baseline; ``bench`` keeps the quick budget."""
    from SparseSegLib.cli import build_parser
    from SparseSegLib.defaults import TRAIN_BUDGET, TRAIN_METHOD

    train = build_parser().parse_args(["train", "--dataset", "d", "--out", "m"])
    assert (train.method, train.budget) == (TRAIN_METHOD, TRAIN_BUDGET) == ("collaborative", "paper")
    assert build_parser().parse_args(["bench", "--dataset", "d", "--annotation", "full", "--out", "b"]).budget == "quick"
    cases = tmp_path / "cases.txt"
    cases.write_text("hippocampus_001\nhippocampus_003\n")
    code, _, err = run_cli(capsys, "train", "--dataset", sample_dir, "--cases", cases, "--iterations", "3",
                           "--option", "propagate_options=iterations=3", "--device", "cpu", "--out", tmp_path / "m")
    assert code == 0, err
    assert json.loads((tmp_path / "m" / "config.json").read_text())["method"] == "collaborative"


def test_train_default_on_boxes_says_which_methods_learn_from_boxes(capsys, sample_dir, tmp_path):
    """The cohort default propagates whole painted slices; boxes get one line naming what to do instead."""
    cases = tmp_path / "cases.txt"
    cases.write_text("hippocampus_001\nhippocampus_003\n")
    code, _, err = run_cli(capsys, "train", "--dataset", sample_dir, "--cases", cases, "--annotation", "boxes:2:8",
                           "--iterations", "2", "--device", "cpu", "--out", tmp_path / "m")
    errors = [line for line in err.splitlines() if line.startswith("sparseseg: error: ")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1
    assert "no whole labelled slice" in errors[0] and "--method gradual or sparse-only" in errors[0]
    assert not (tmp_path / "m").exists()


def test_train_on_painted_label_maps_learns_what_the_simulated_annotation_gives(capsys, sample_dir, tmp_path):
    """``--annotation painted``: labelsTr hold only a user's painted slices (here each scan's central slice of its
    object). Training on them gives the very model that ``slices:1`` simulates from the full labels; a benchmark,
    which scores against full labels, refuses them."""
    import torch

    from SparseSegLib.annotation import simulate_annotation
    from SparseSegLib.io import read_label

    ids = ["hippocampus_001", "hippocampus_003", "hippocampus_004"]
    manifest = json.loads((sample_dir / "dataset.json").read_text())
    painted_dir = tmp_path / "painted"
    (painted_dir / "labelsTr").mkdir(parents=True)
    shutil.copytree(sample_dir / "imagesTr", painted_dir / "imagesTr")
    for case_id in ids:
        source = sample_dir / "labelsTr" / f"{case_id}.nii.gz"
        label, image = read_label(source), sitk.ReadImage(str(source))
        painted = np.where(simulate_annotation(label, "slices:1"), label, 0).astype(np.uint8)
        copy = sitk.GetImageFromArray(painted)
        copy.CopyInformation(image)
        sitk.WriteImage(copy, str(painted_dir / "labelsTr" / f"{case_id}.nii.gz"))
    manifest["training"] = [entry for entry in manifest["training"] if any(i in entry["label"] for i in ids)]
    (painted_dir / "dataset.json").write_text(json.dumps(manifest))
    common = ["--method", "sparse-only", "--iterations", "3", "--device", "cpu"]
    code, _, err = run_cli(capsys, "train", "--dataset", painted_dir, "--annotation", "painted", *common,
                           "--out", tmp_path / "from-paint")
    assert code == 0, err
    cases = tmp_path / "cases.txt"
    cases.write_text("\n".join(ids) + "\n")
    code, _, err = run_cli(capsys, "train", "--dataset", sample_dir, "--cases", cases, "--annotation", "slices:1",
                           *common, "--out", tmp_path / "simulated")
    assert code == 0, err
    ours, theirs = (torch.load(tmp_path / name / "model.pt", weights_only=True) for name in ("from-paint", "simulated"))
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    assert json.loads((tmp_path / "from-paint" / "config.json").read_text())["training"]["annotation"] == "painted"
    assert_one_line_error(*run_cli(capsys, "bench", "--dataset", painted_dir, "--annotation", "painted",
                                   "--methods", "sparse-only", "--out", tmp_path / "b")[::2], "train --annotation painted")
