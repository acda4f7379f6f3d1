"""The training engine: masked losses, patch sampling on annotated voxels, model folders, devices.

A network trained on the annotated slices of real scans must learn something; a voxel outside the
annotation must never influence training.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from SparseSegLib.annotation import annotate_case
from SparseSegLib.engine.device import select_device
from SparseSegLib.engine.losses import MaskedDiceCELoss
from SparseSegLib.engine.model import load_segmenter
from SparseSegLib.engine.networks import NetworkConfig, default_patch_size
from SparseSegLib.engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.metrics import case_metrics


def test_masked_loss_ignores_unknown_voxels():
    """Changing logits where the target is unknown (weight 0) leaves loss and gradient-free voxels alone."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 8, 8))
    target[:, :, 4:] = UNKNOWN
    weight = (target >= 0).float()
    loss = MaskedDiceCELoss()(logits, target, weight)
    loss.backward()
    assert torch.all(logits.grad[:, :, 4:] == 0), "unknown voxels must get no gradient"
    changed = logits.detach().clone()
    changed[:, :, 4:] += 100.0
    assert torch.isclose(MaskedDiceCELoss()(changed, target, weight), loss.detach())


def test_masked_loss_is_low_for_a_correct_prediction():
    target = torch.zeros(1, 1, 6, 6, dtype=torch.long)
    target[0, 0, 2:4, 2:4] = 1
    perfect = torch.nn.functional.one_hot(target[:, 0], 2).movedim(-1, 1).float() * 20 - 10
    wrong = -perfect
    weight = torch.ones_like(target, dtype=torch.float)
    loss = MaskedDiceCELoss()
    assert loss(perfect, target, weight) < 0.01 < 1.0 < loss(wrong, target, weight)


def test_patches_are_centred_on_annotated_voxels_and_unknown_stays_unknown(sample_case):
    """With one annotated slice, every 2D patch comes from that slice; unknown voxels carry weight 0."""
    case = annotate_case(sample_case, "central-slice")
    target = case.sparse_label(UNKNOWN)
    sampler = PatchSampler([TrainingVolume(case.image, target)], dims=2, patch_size=(64, 48), seed=1)
    images, targets, weights = sampler.sample(8)
    assert images.shape == (8, 1, 64, 48) and targets.shape == weights.shape == (8, 1, 64, 48)
    central = case.label[case.image.shape[0] // 2]
    for patch_target in targets[:, 0].numpy():
        labelled = patch_target[patch_target >= 0]
        assert labelled.size == central.size, "the whole annotated slice fits in the patch"
        assert np.array_equal(np.sort(labelled), np.sort(central.ravel()))
    assert torch.equal(weights > 0, targets >= 0)


def test_a_small_integer_target_samples_the_same_patches_as_int64(sample_case):
    """propagate keeps its crop-sized targets as int16 and the sampler its voxel indices as int32 (a CT-sized crop
    holds tens of millions): the patches drawn are the same as with int64 throughout."""
    case = annotate_case(sample_case, "slices:2")
    target = case.sparse_label(UNKNOWN)
    draws = [PatchSampler([TrainingVolume(case.image, target.astype(dtype))], dims=2, patch_size=(32, 32), seed=3,
                          augment=True).sample(6) for dtype in (np.int64, np.int16)]
    for first, second in zip(*draws):
        assert torch.equal(first, second)
    sampler = PatchSampler([TrainingVolume(case.image, target.astype(np.int16))], dims=2, patch_size=(32, 32))
    assert sampler._labelled[0].dtype == np.int32 and draws[1][1].dtype == torch.int64


def test_chosen_slices_of_the_slice_stack_are_those_rows_of_the_whole_stack():
    from SparseSegLib.engine.inference import slice_stack

    image = np.random.default_rng(0).normal(size=(9, 5, 4)).astype(np.float32)
    whole = slice_stack(image, 2)
    assert np.array_equal(slice_stack(image, 2, np.arange(3, 7)), whole[3:7])
    assert np.array_equal(slice_stack(image, 2, np.array([8, 0])), whole[[8, 0]])


def test_annotated_voxel_indices_found_chunk_by_chunk_are_numpys(sample_case):
    from SparseSegLib.engine.sampling import _indices

    mask = (sample_case.label > 0).ravel()
    expected = np.flatnonzero(mask)
    found = _indices(mask, chunk=1000)  # chunks that split the foreground, and a last one shorter
    assert found.dtype == np.int32 and mask.size % 1000
    np.testing.assert_array_equal(found, expected)
    assert _indices(np.zeros(10, bool), chunk=3).size == 0


def test_3d_patches_pad_small_volumes_with_unknown(sample_case):
    case = annotate_case(sample_case, "central-slice")
    sampler = PatchSampler([TrainingVolume(case.image, case.sparse_label())], dims=3, patch_size=(48, 64, 48))
    _, targets, weights = sampler.sample(2)
    assert (targets >= 0).sum(dim=(1, 2, 3, 4)).tolist() == [case.annotated.sum()] * 2
    assert float(weights.sum()) == 2 * case.annotated.sum()


def test_a_volume_without_annotation_cannot_be_sampled(sample_case):
    unknown = np.full(sample_case.image.shape, UNKNOWN, np.int16)
    with pytest.raises(SparseSegError, match="no annotated voxel"):
        PatchSampler([TrainingVolume(sample_case.image, unknown)], dims=2, patch_size=(64, 48))


def test_default_patch_covers_small_volumes_in_network_multiples():
    assert default_patch_size((35, 51, 35), NetworkConfig.preset("2d")) == (64, 48)
    assert default_patch_size((35, 51, 35), NetworkConfig.preset("3d")) == (40, 56, 40)
    assert default_patch_size((88, 140, 200), NetworkConfig.preset("3d")) == (64, 64, 64)


def test_auto_device_is_cpu_here_and_a_missing_gpu_is_a_clear_error():
    """This machine has no GPU (CI neither); asking for CUDA says what to do instead."""
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    assert select_device("auto").type in ("cpu", "mps")
    with pytest.raises(SparseSegError, match="no CUDA GPU"):
        select_device("cuda")
    with pytest.raises(SparseSegError, match="unknown device"):
        select_device("tpu")


@pytest.fixture(scope="module")
def trained_2d(sample_dataset):
    """A 2D sparse-only model trained briefly on the central slices of 10 real sample cases."""
    cases = [annotate_case(sample_dataset.load(ref), "central-slice") for ref in sample_dataset.cases]
    options = MethodOptions(network="2d", iterations=100, device="cpu", seed=0)
    return get_method("sparse-only").train(cases[:10], options, SilentReporter()), cases


@pytest.mark.slow
def test_sparse_only_learns_from_central_slices_of_real_scans(trained_2d):
    """On two held-out real cases the model finds the hippocampus far better than chance."""
    segmenter, cases = trained_2d
    for case in cases[10:]:
        label, probabilities = segmenter.predict(case.image)
        assert label.shape == case.image.shape and probabilities.shape == (3,) + case.image.shape
        assert np.allclose(probabilities.sum(0), 1.0, atol=1e-4)
        merged = case_metrics(label, case.label, case.geometry.spacing_kji, case.class_names)["merged"]
        # Chance level (predicting foreground everywhere) is about 0.05 Dice here.
        assert merged["dice"] > 0.25, merged


@pytest.mark.slow
def test_model_folder_round_trip_predicts_identically(trained_2d, tmp_path):
    """A saved model is self-contained (weights + config.json) and loads with weights_only=True."""
    segmenter, cases = trained_2d
    segmenter.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["method"] == "sparse-only" and config["classes"] == {"1": "Anterior", "2": "Posterior"}
    assert config["network"]["dims"] == 2 and config["preprocessing"]["normalization"] == "zscore"
    loaded = load_segmenter(tmp_path / "model")
    before, _ = segmenter.predict(cases[11].image)
    after, _ = loaded.predict(cases[11].image)
    assert np.array_equal(before, after)


def test_a_damaged_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SparseSegError, match="not found"):
        load_segmenter(tmp_path / "nothing")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    with pytest.raises(SparseSegError, match="model.pt is missing"):
        load_segmenter(tmp_path / "m")


def test_saving_over_a_model_is_atomic(tmp_path, monkeypatch):
    """Segmenter.save writes through jobs.atomic: a save that dies half-way (disk full) leaves the previous
    model loadable and no temporary file in the folder."""
    from SparseSegLib.engine.model import Segmenter
    from SparseSegLib.engine.networks import build_network

    config = NetworkConfig(dims=2, channels=(4, 8), num_res_units=0)
    segmenter = Segmenter(build_network(config, 2), config, (16, 16), {1: "organ"})
    folder = segmenter.save(tmp_path / "model")
    saved = load_segmenter(folder).network.state_dict()

    def die_half_way(state, filename) -> None:
        open(filename, "wb").write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", die_half_way)
    with pytest.raises(OSError, match="No space"):
        segmenter.save(folder)
    reloaded = load_segmenter(folder).network.state_dict()
    assert all(torch.equal(saved[key], reloaded[key]) for key in saved)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.pt"]


def test_3d_training_runs_and_predicts_on_the_input_grid(sample_dataset):
    cases = [annotate_case(sample_dataset.load(ref), "central-slice") for ref in sample_dataset.cases[:2]]
    segmenter = get_method("full").train(cases, MethodOptions(network="3d", iterations=3, device="cpu"), SilentReporter())
    label, probabilities = segmenter.predict(cases[1].image)
    assert label.shape == cases[1].image.shape and probabilities.shape[0] == 3


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(SparseSegError) as error:
        get_method("magic")
    assert "unknown method 'magic'" in error.value.one_line() and "sparse-only" in error.value.one_line()
