"""A model applied to a scan of another voxel spacing: predicted at the model's spacing and put back on the scan's
grid (``engine/spacing.py``), through the model folder and ``sparseseg predict`` (what Slicer's Apply model runs).

The finer scan is the real sample scan resampled to half its spacing (image linear, label nearest neighbour), as
the same anatomy acquired at a higher resolution."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from SparseSegLib.annotation import annotate_case
from SparseSegLib.case import Case, Geometry
from SparseSegLib.engine.model import CONFIG_FILE, load_segmenter
from SparseSegLib.engine.spacing import (axes_outside, prediction_spacing, resample, resample_probabilities,
                                         resampled_shape, training_spacing)
from SparseSegLib.io import write_image
from SparseSegLib.methods import get_method
from SparseSegLib.methods.base import MethodOptions, SilentReporter
from SparseSegLib.metrics import mask_dice as dice

QUICK = {"iterations": 40, "batch_size": 4}


def test_training_range_and_when_a_scan_lies_outside_it():
    trained = training_spacing([(2.0, 1.0, 1.0), (3.0, 1.0, 1.0), (2.5, 0.8, 0.8)])
    assert trained == {"median": [2.5, 1.0, 1.0], "min": [2.0, 0.8, 0.8], "max": [3.0, 1.0, 1.0]}
    assert not axes_outside((2.0, 1.0, 1.0), trained).any()
    assert not axes_outside((3.2, 0.75, 1.05), trained).any()  # within the range widened by 10%
    assert axes_outside((2.0, 0.5, 0.5), trained).tolist() == [False, True, True]
    assert axes_outside((5.0, 1.0, 1.0), trained).tolist() == [True, False, False]
    assert not axes_outside((9.0, 9.0, 9.0), {}).any()  # a model that recorded no spacing: as it is
    assert prediction_spacing((2.0, 0.5, 0.5), trained) == (2.0, 1.0, 1.0)  # only the axes outside the range move
    assert prediction_spacing((5.0, 0.9, 0.9), trained) == (2.5, 0.9, 0.9)
    assert prediction_spacing((2.2, 0.9, 0.9), trained) is None and prediction_spacing((1, 1, 1), {}) is None
    assert training_spacing([]) == {}


def test_resampling_keeps_the_extent_and_returns_onto_the_same_grid():
    k, j, i = np.meshgrid(np.arange(10), np.arange(12), np.arange(14), indexing="ij")
    ramp = (k + 2 * j + 3 * i).astype(np.float32)
    assert resampled_shape(ramp.shape, (1, 1, 1), (0.5, 0.5, 2.0)) == (20, 24, 7)
    fine = resample(ramp, (1, 1, 1), (0.5, 0.5, 0.5))
    assert fine.shape == (20, 24, 28)
    assert np.allclose(fine[::2, ::2, ::2], ramp, atol=1e-3)  # the coarse centres are fine voxels
    assert np.isclose(fine[-1, -1, -1], ramp[-1, -1, -1])  # past the last centre: the nearest value, not 0
    back = resample(fine, (0.5, 0.5, 0.5), (1, 1, 1), ramp.shape)
    assert np.allclose(back, ramp, atol=1e-3)
    probabilities = np.stack([1 - ramp / ramp.max(), ramp / ramp.max()])
    moved = resample_probabilities(probabilities, (1, 1, 1), (0.5, 0.5, 0.5), fine.shape)
    assert moved.shape == (2, 20, 24, 28) and np.allclose(moved.sum(0), 1.0, atol=1e-5)


def finer(case: Case) -> Case:
    """``case`` at half its spacing: image linear, label nearest neighbour, same extent."""
    spacing = tuple(s / 2 for s in case.geometry.spacing_kji)
    shape = resampled_shape(case.image.shape, case.geometry.spacing_kji, spacing)
    image = resample(case.image, case.geometry.spacing_kji, spacing, shape)
    label = resample(case.label, case.geometry.spacing_kji, spacing, shape, nearest=True).astype(np.uint8)
    geometry = Geometry(size=tuple(shape[::-1]), spacing=tuple(spacing[::-1]), origin=case.geometry.origin,
                        direction=case.geometry.direction)
    return Case(case.case_id, image, geometry, label, None, dict(case.class_names), dict(case.class_colors))


def painted_centre(case: Case) -> Case:
    """The object's central slice along k painted whole (the ``slices:1`` annotation, as the interactive user)."""
    return annotate_case(case, "slices:1", 0)


def test_a_saved_model_segments_a_finer_scan_at_its_own_spacing(sample_case, tmp_path, capsys):
    """A Start job's saved model records the scan's spacing; on the same anatomy at half the spacing it predicts at
    its own spacing, so the result on the fine grid is its result on its own scan. The CLI says so and writes the
    label on the fine scan's grid. A model saved before spacings were recorded predicts as it is."""
    from SparseSegLib.cli import main
    from SparseSegLib.methods.propagate.model import segmenter_from_state

    case = painted_centre(sample_case)
    options = MethodOptions(device="cpu", extra=dict(QUICK), rounds=None)
    final = list(get_method("propagate").run_rounds([case], options, SilentReporter()))[-1]
    model = segmenter_from_state(case, options, final.state)
    assert model.spacing["median"] == list(case.geometry.spacing_kji)
    model.save(tmp_path / "model")
    loaded = load_segmenter(tmp_path / "model")
    assert loaded.spacing == model.spacing
    own = loaded.predict(case.image, "cpu", case.geometry.spacing_kji)[0]  # on the scan it learnt from

    fine = finer(sample_case)
    own_on_fine = resample(own.astype(np.float32), case.geometry.spacing_kji, fine.geometry.spacing_kji,
                           fine.image.shape) > 0.5
    labels, probabilities = loaded.predict(fine.image, "cpu", fine.geometry.spacing_kji)
    assert labels.shape == fine.image.shape and probabilities.shape[1:] == fine.image.shape
    # the fine scan gets the model's own result (this briefly trained model's: it is the mechanism under test);
    # fed the fine voxels as they are, the network sees the anatomy twice as large and agrees far less (0.61)
    agreement = dice(labels > 0, own_on_fine)
    assert agreement > 0.85
    assert agreement > dice(loaded.grid_probabilities(fine.image, "cpu").argmax(0) > 0, own_on_fine) + 0.1

    write_image(fine.image, fine.geometry, tmp_path / "fine" / "scan.nrrd")
    assert main(["predict", "--model", str(tmp_path / "model"), "--input", str(tmp_path / "fine"),
                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert str(tmp_path / "out" / "scan.nrrd") in line and "predicted at the model's 1 x 1 x 1 mm" in line
    written = sitk.ReadImage(str(tmp_path / "out" / "scan.nrrd"))
    assert written.GetSize() == fine.geometry.size
    assert np.allclose(written.GetSpacing(), fine.geometry.spacing)
    assert np.array_equal(sitk.GetArrayFromImage(written), labels)

    config = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    del config["spacing"]  # a model saved before spacings were recorded
    (tmp_path / "model" / CONFIG_FILE).write_text(json.dumps(config))
    old = load_segmenter(tmp_path / "model")
    assert old.spacing == {}
    assert np.array_equal(old.probabilities(fine.image, "cpu", fine.geometry.spacing_kji),
                          old.grid_probabilities(fine.image, "cpu"))


def test_a_cohort_of_mixed_in_plane_spacings_is_brought_to_its_median_keeping_each_annotated_slice(sample_case):
    """One scan at half the in-plane spacing among scans at 1 mm (made by the in-plane move itself): it is moved back
    to 1 mm in plane; k is untouched, so its painted slice stays that one whole slice and keeps its label; uniform
    cohorts are left as they are."""
    from SparseSegLib.cohort_spacing import at_common_spacing, common_in_plane_spacing, resampled_in_plane

    painted = painted_centre(sample_case)
    spacing = sample_case.geometry.spacing_kji
    fine = resampled_in_plane(painted, (spacing[1] / 2, spacing[2] / 2))
    assert fine.image.shape[0] == painted.image.shape[0] and fine.image.shape[1] == 2 * painted.image.shape[1]
    painted_rows = np.flatnonzero(painted.annotated.any(axis=(1, 2))).tolist()
    assert np.flatnonzero(fine.annotated.any(axis=(1, 2))).tolist() == painted_rows and fine.annotated[painted_rows].all()
    assert common_in_plane_spacing([painted, painted]) is None
    assert at_common_spacing([painted, painted]) == [painted, painted]
    assert common_in_plane_spacing([painted, painted, fine]) == (1.0, 1.0)
    messages = []
    same, moved = at_common_spacing([painted, fine], messages.append, (1.0, 1.0))
    assert same is painted and "1 of 2 scans resampled" in messages[0]
    assert moved.image.shape == painted.image.shape and moved.geometry.spacing_kji == spacing
    rows = np.flatnonzero(moved.annotated.any(axis=(1, 2)))
    assert rows.tolist() == painted_rows
    assert moved.annotated[rows].all()  # the painted slice stays whole, no neighbour gains paint
    k = rows[0]
    assert dice(moved.label[k] > 0, painted.label[k] > 0) > 0.95


def finer_in_plane_copy(sample_dir, target, names: list[str]) -> None:
    """The sample folder copied to ``target`` with ``names`` rewritten at half the in-plane spacing (real files)."""
    import shutil

    shutil.copytree(sample_dir, target)
    for name in names:
        for folder, interpolator in (("imagesTr", sitk.sitkLinear), ("labelsTr", sitk.sitkNearestNeighbor)):
            path = target / folder / f"{name}.nii.gz"
            image = sitk.ReadImage(str(path))
            spacing = (image.GetSpacing()[0] / 2, image.GetSpacing()[1] / 2, image.GetSpacing()[2])
            size = [image.GetSize()[0] * 2, image.GetSize()[1] * 2, image.GetSize()[2]]
            sitk.WriteImage(sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing,
                                          image.GetDirection(), 0, image.GetPixelID()), str(path))


def test_sparseseg_train_moves_a_finer_scan_to_the_cohorts_spacing_unless_told_native(sample_dir, tmp_path, capsys):
    """``sparseseg train`` on sample scans, one of them rewritten at half the in-plane spacing: the model learns at
    1 mm and records it; ``--spacing native`` trains on the scans as they are."""
    from SparseSegLib.cli import main

    data = tmp_path / "data"
    finer_in_plane_copy(sample_dir, data, ["hippocampus_003"])
    cases = tmp_path / "cases.txt"
    cases.write_text("hippocampus_001\nhippocampus_003\nhippocampus_004\n")
    for mode in ("common", "native"):
        assert main(["train", "--dataset", str(data), "--cases", str(cases), "--method", "sparse-only",
                     "--iterations", "2", "--device", "cpu", "--spacing", mode, "--out", str(tmp_path / mode)]) == 0
        said = capsys.readouterr()
        recorded = load_segmenter(tmp_path / mode).spacing
        if mode == "common":
            assert "1 of 3 scans resampled in plane" in said.out + said.err
            assert recorded["min"][1:] == recorded["max"][1:] == [1.0, 1.0]
        else:
            assert "resampled" not in said.out + said.err
            assert recorded["min"][1:] == [0.5, 0.5] and recorded["max"][1:] == [1.0, 1.0]


def test_sparseseg_bench_trains_at_the_common_spacing_and_scores_every_scan_on_its_own_grid(sample_dir, tmp_path,
                                                                                           capsys):
    """``sparseseg bench`` on the sample folder with half its scans at half the in-plane spacing: the training part
    is moved to its median, every test scan is scored against its own label on its own grid."""
    import json

    from SparseSegLib.cli import main

    data = tmp_path / "data"
    names = sorted(path.name[:-len(".nii.gz")] for path in (sample_dir / "imagesTr").glob("*.nii.gz"))
    finer_in_plane_copy(sample_dir, data, names[::2])
    for mode in ("common", "native"):
        out = tmp_path / mode
        assert main(["bench", "--dataset", str(data), "--methods", "sparse-only", "--split", "0.5,0,0.5",
                     "--iterations", "2", "--device", "cpu", "--spacing", mode, "--out", str(out)]) == 0
        said = capsys.readouterr()
        results = json.loads((out / "results.json").read_text())
        assert results["config"]["spacing"] == mode
        scored = results["runs"]["sparse-only (2D)"]["cases"]
        assert sorted(scored) == sorted(results["folds"][0]["test"]) and len(scored) >= 5
        assert ("scans resampled in plane" in said.out + said.err) == (mode == "common")
