"""Multi-channel images (MSD's 4D BrainTumour / Prostate layout): one channel is read, with its 3D geometry.

Built from a real sample scan: channel 0 is the scan, channel 1 a different real contrast made from it, stacked
as a 4D NIfTI (as MSD stores modalities) or as a vector NRRD; the dataset.json lists them as ``modality``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SparseSegLib.benchmarks.interactive.scans import choose_scans
from SparseSegLib.cli import main
from SparseSegLib.dataset import load_dataset
from SparseSegLib.errors import SparseSegError
from SparseSegLib.io import geometry_of, read_image
from SparseSegLib.jobs.client import Job
from SparseSegLib.worker.inputs import read_job_case


def _second_contrast(image: sitk.Image) -> sitk.Image:
    """An inverted, rescaled copy: a channel that differs from the first everywhere the scan varies."""
    return sitk.Cast(sitk.RescaleIntensity(sitk.InvertIntensity(sitk.Cast(image, sitk.sitkFloat32)), 0, 1000),
                     sitk.sitkFloat32)


@pytest.fixture(scope="module")
def four_d_dataset(tmp_path_factory, sample_dir) -> Path:
    """Three sample cases with 4D (two-channel) images, MSD layout, modalities named in dataset.json."""
    root = tmp_path_factory.mktemp("msd4d")
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    meta = json.loads((sample_dir / "dataset.json").read_text())
    entries = []
    for entry in meta["training"][:3]:
        first = sitk.Cast(sitk.ReadImage(str(sample_dir / entry["image"])), sitk.sitkFloat32)
        name = Path(entry["image"]).name
        sitk.WriteImage(sitk.JoinSeries([first, _second_contrast(first)]), str(root / "imagesTr" / name))
        shutil.copy(sample_dir / entry["label"], root / "labelsTr" / name)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta.update({"training": entries, "modality": {"0": "T1", "1": "Inverted"}})
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_a_4d_image_needs_a_channel_and_gives_it_with_the_3d_geometry(four_d_dataset, sample_dir):
    path = next((four_d_dataset / "imagesTr").iterdir())
    with pytest.raises(SparseSegError, match="2 channels") as error:
        read_image(path)
    assert "--channel" in error.value.hint
    original = sitk.ReadImage(str(sample_dir / "imagesTr" / path.name))
    for channel, expected in ((0, sitk.Cast(original, sitk.sitkFloat32)), (1, _second_contrast(original))):
        array, geometry = read_image(path, channel)
        np.testing.assert_array_equal(array, sitk.GetArrayFromImage(expected))
        assert geometry == geometry_of(original)
    with pytest.raises(SparseSegError, match="channel 2"):
        read_image(path, 2)


def test_a_vector_image_gives_one_component(tmp_path, sample_dir):
    original = sitk.Cast(sitk.ReadImage(str(sample_dir / "imagesTr" / "hippocampus_001.nii.gz")), sitk.sitkFloat32)
    vector = sitk.Compose(original, _second_contrast(original))
    sitk.WriteImage(vector, str(tmp_path / "vector.nrrd"))
    array, geometry = read_image(tmp_path / "vector.nrrd", 1)
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(_second_contrast(original)))
    assert geometry == geometry_of(original)


def test_a_3d_image_has_only_channel_0(sample_dir):
    path = sample_dir / "imagesTr" / "hippocampus_001.nii.gz"
    np.testing.assert_array_equal(read_image(path, 0)[0], read_image(path)[0])
    with pytest.raises(SparseSegError, match="1 channel"):
        read_image(path, 1)


def test_a_multi_modal_dataset_reads_its_first_channel_unless_told(four_d_dataset):
    dataset = load_dataset(four_d_dataset)
    assert dataset.channel == 0 and "using channel 0 (T1)" in dataset.channel_note()
    case = dataset.load(dataset.cases[0])
    assert case.image.shape == case.label.shape
    by_name = load_dataset(four_d_dataset, "inverted")
    assert by_name.channel == 1 and by_name.subset([case.case_id]).channel == 1
    assert not np.array_equal(by_name.load(by_name.cases[0]).image, case.image)
    with pytest.raises(SparseSegError, match="no modality named 'FLAIR'") as error:
        load_dataset(four_d_dataset, "FLAIR")
    assert "0 (T1), 1 (Inverted)" in error.value.hint
    with pytest.raises(SparseSegError, match="channel 5"):
        load_dataset(four_d_dataset, 5)


def test_the_interactive_benchmark_plays_a_4d_dataset(four_d_dataset):
    scans = choose_scans(four_d_dataset, "dev", 2, channel="Inverted")
    assert [scan.channel for scan in scans] == [1, 1]
    case = scans[0].load()
    assert case.image.shape == case.label.shape and scans[0].describe()["channel"] == 1


def test_run_with_a_channel_writes_that_channel_into_the_job(capsys, four_d_dataset, sample_dir, tmp_path):
    image = four_d_dataset / "imagesTr" / "hippocampus_001.nii.gz"
    reference = sitk.ReadImage(str(sample_dir / "labelsTr" / "hippocampus_001.nii.gz"))
    painted = sitk.GetArrayFromImage(reference)
    middle = painted.shape[0] // 2
    annotation = np.zeros_like(painted)
    annotation[middle] = painted[middle]
    paint = sitk.GetImageFromArray(annotation)
    paint.CopyInformation(reference)
    sitk.WriteImage(paint, str(tmp_path / "paint.nii.gz"))
    out = tmp_path / "job"  # a short real job (one round of two steps): the worker reads the written channel
    code = main(["run", "--image", str(image), "--channel", "1", "--annotation", str(tmp_path / "paint.nii.gz"),
                 "--out", str(out), "--method", "self-labelling", "--rounds", "1", "--iterations-per-round", "2",
                 "--device", "cpu"])
    assert code == 0 and "created job" in capsys.readouterr().err
    spec = Job(out).spec
    assert Path(spec.image) == (out / "inputs" / "image.nrrd").resolve() and spec.case_id == "hippocampus_001"
    case, _ = read_job_case(spec)
    np.testing.assert_array_equal(case.image, read_image(image, 1)[0])


def test_train_records_the_channel_and_predict_reads_it(capsys, four_d_dataset, tmp_path):
    model = tmp_path / "model"
    assert main(["train", "--dataset", str(four_d_dataset), "--channel", "Inverted", "--method", "sparse-only",
                 "--iterations", "2", "--device", "cpu", "--out", str(model)]) == 0
    assert json.loads((model / "config.json").read_text())["training"]["channel"] == 1
    image = four_d_dataset / "imagesTr" / "hippocampus_001.nii.gz"
    assert main(["predict", "--model", str(model), "--input", str(image), "--out", str(tmp_path / "out")]) == 0
    written = sitk.ReadImage(str(tmp_path / "out" / image.name))
    assert written.GetDimension() == 3 and geometry_of(written) == read_image(image, 1)[1]
