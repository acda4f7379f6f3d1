"""Self-labelling's ensembles: the three-axis fusion round, ensembles of runs, co-labelling, the 3D student.

Real bundled hippocampus cases, tiny schedules (a few training steps per round): these tests check the
mechanics, not the accuracy.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from SparseSegLib.engine.axis_ensemble import AxisEnsemble
from SparseSegLib.engine.inference import predict_probabilities
from SparseSegLib.engine.model import load_segmenter
from SparseSegLib.engine.networks import NetworkConfig
from SparseSegLib.engine.sampling import UNKNOWN
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.self_labelling import SelfLabellingLoop, pseudo_labels

from axis_ensemble_support import member_probabilities
from self_labelling_support import TINY, new_loop


def test_fusion_round_trains_a_network_across_each_other_axis_and_averages_them(cohort, tmp_path):
    # k = 1: round 2 labels every slice, round 3 fuses (no validation: every fusion network is kept, see below)
    options = MethodOptions(budget="quick", seed=0, device="cpu", extra={**TINY, "k": 1.0, "fuse_axes": True,
                                                                         "fusion_epochs": 1, "fusion_passes": 1})
    segmenter = get_method("self-labelling").train(cohort[:3], options, SilentReporter())
    assert [s["round"] for s in segmenter.round_snapshots] == [1, 2, 3]
    assert isinstance(segmenter.network, AxisEnsemble) and segmenter.network.axes == (0, 1, 2)
    assert segmenter.training["rounds"][-1]["fused_axes"] == [0, 1, 2]
    loaded = load_segmenter(segmenter.save(tmp_path / "model"))
    assert loaded.network_config.axes == (0, 1, 2) and isinstance(loaded.network, AxisEnsemble)
    image = cohort[0].image
    labels, probabilities = loaded.predict(image)
    assert labels.shape == image.shape and np.allclose(probabilities.sum(0), 1, atol=1e-4)
    # the fused probabilities are the mean of the members' own, each run across its axis of the normalised image
    members = member_probabilities(loaded, image)
    assert np.allclose(probabilities, np.mean(members, axis=0), atol=1e-5)
    # a job whose last round comes before every slice is labelled does not fuse (sparse targets across the axes)
    loop = new_loop(cohort[:1], total_rounds=2, fuse_axes=True)
    list(loop.run())
    assert not loop.members and not isinstance(loop.final_network(), AxisEnsemble)


def test_an_ensemble_averages_independent_runs_of_other_training_seeds(cohort, tmp_path):
    # k = 1 with one fusion pass: each run is round 1, round 2 (every slice labelled), round 3 (three-axis fusion)
    extra = {**TINY, "k": 1.0, "fuse_axes": True, "fusion_epochs": 1, "fusion_passes": 1, "co_labelling": False}
    method = get_method("self-labelling")
    one = method.train(cohort[:3], MethodOptions(budget="quick", seed=0, device="cpu", extra=extra), SilentReporter())
    other = method.train(cohort[:3], MethodOptions(budget="quick", seed=1, device="cpu", extra=extra), SilentReporter())
    both = method.train(cohort[:3], MethodOptions(budget="quick", seed=0, device="cpu", extra={**extra, "ensemble": 2}),
                        SilentReporter())
    assert both.network_config.axes == (0, 1, 2, 0, 1, 2) and len(both.network.members) == 6
    assert [r["ensemble_run"] for r in both.training["rounds"]] == [1, 1, 1, 2, 2, 2]
    # the curve: the first run's three rounds, then the averaged model
    assert [s["round"] for s in both.round_snapshots] == [1, 2, 3, 4]
    image = cohort[0].image
    expected = (one.predict(image)[1] + other.predict(image)[1]) / 2  # run 2 is exactly a run with seed 1
    loaded = load_segmenter(both.save(tmp_path / "model"))
    assert loaded.network_config.axes == (0, 1, 2, 0, 1, 2)
    assert np.allclose(loaded.predict(image)[1], expected, atol=1e-5)
    with pytest.raises(SparseSegError, match="ensemble"):
        method.settings(MethodOptions(extra={"ensemble": 0}))


def test_ensemble_passes_relabel_every_run_with_the_averaged_model(cohort):
    extra = {**TINY, "k": 1.0, "fuse_axes": True, "fusion_epochs": 1, "fusion_passes": 1, "ensemble": 2,
             "ensemble_passes": 1, "co_labelling": False}
    both = get_method("self-labelling").train(cohort[:3], MethodOptions(budget="quick", seed=0, device="cpu", extra=extra),
                                              SilentReporter())
    # each run: rounds 1-3, then one pass re-labelled by the two runs' average; the curve ends with the average
    # before and after that pass
    assert [(r["ensemble_run"], r.get("ensemble_pass")) for r in both.training["rounds"]] == \
        [(1, None), (1, None), (1, None), (1, 1), (2, None), (2, None), (2, None), (2, 1)]
    assert [s["round"] for s in both.round_snapshots] == [1, 2, 3, 4, 5] and len(both.network.members) == 6
    with pytest.raises(SparseSegError, match="ensemble_passes"):
        get_method("self-labelling").settings(MethodOptions(extra={"ensemble": 1, "ensemble_passes": 1}))


def test_a_fusion_pass_can_be_relabelled_by_another_model(cohort):
    # the ensemble pass: pseudo-labels come from the given teacher (the runs' average), ground truth stays
    loop = new_loop(cohort[:2], k=1.0, fuse_axes=True, fusion_epochs=1, fusion_passes=1, relabel_postprocess=False)
    list(loop.run())
    teacher = copy.deepcopy(loop.final_network()), loop.final_config()
    with torch.no_grad():  # another model than the loop's own: one that is sure of class 2 everywhere
        for member in teacher[0].members:
            member.head.bias[2] += 20.0
    gt_before = [t[g].copy() for t, g in zip(loop.targets, loop.gt)]
    expected = [pseudo_labels(predict_probabilities(teacher[0], image, teacher[1], loop.segmenter.patch_size, loop.device),
                              loop.settings.theta, loop.settings.threshold) for image in loop.images]
    own = pseudo_labels(predict_probabilities(loop.final_network(), loop.images[0], loop.final_config(),
                                              loop.segmenter.patch_size, loop.device), loop.settings.theta, loop.settings.threshold)
    assert not np.array_equal(own, expected[0])  # the two models' labels differ, so the check below can tell them apart
    loop.total += 1
    loop.fusion_round(loop.total, 0.0, teacher)
    for target, gt, before, proposal, labelled in zip(loop.targets, loop.gt, gt_before, expected, loop.labelled):
        assert np.array_equal(target[labelled == 2], proposal[labelled == 2])
        assert np.array_equal(target[gt], before)


@pytest.mark.parametrize("relabel_theta", [0.0, 0.5])
def test_a_second_fusion_pass_relabels_the_pseudo_labels_with_the_fused_model(cohort, relabel_theta):
    # k = 1: round 2 labels every slice, round 3 fuses, round 4 re-labels with round 3's ensemble and fuses again,
    # at its own confidence threshold when relabel_theta is given (0: the labelling threshold theta)
    loop = new_loop(cohort[:2], k=1.0, fuse_axes=True, fusion_epochs=1, fusion_passes=2, relabel_postprocess=False,
                    relabel_theta=relabel_theta, theta=0.99 if relabel_theta else 0.7)
    assert loop.total == 4
    rounds = loop.run()
    for _ in range(3):
        next(rounds)
    fused, config = copy.deepcopy(loop.final_network()), loop.final_config()
    gt_before = [t[g].copy() for t, g in zip(loop.targets, loop.gt)]
    expected = [pseudo_labels(predict_probabilities(fused, image, config, loop.segmenter.patch_size, loop.device),
                              relabel_theta or loop.settings.theta, loop.settings.threshold) for image in loop.images]
    if relabel_theta:  # the lower threshold labels voxels that theta leaves unknown
        at_theta = pseudo_labels(predict_probabilities(fused, loop.images[0], config, loop.segmenter.patch_size, loop.device),
                                 loop.settings.theta, loop.settings.threshold)
        assert np.count_nonzero(expected[0] == UNKNOWN) < np.count_nonzero(at_theta == UNKNOWN)
    fourth = next(rounds)
    assert fourth.index == 4 and fourth.metrics["fused_axes"] == [0, 1, 2] and "0" in fourth.metrics["best"]
    for target, gt, before, proposal, labelled in zip(loop.targets, loop.gt, gt_before, expected, loop.labelled):
        assert np.array_equal(target[labelled == 2], proposal[labelled == 2])  # pseudo-labels: the fused model's
        assert np.array_equal(target[gt], before)  # ground truth untouched


def test_a_fusion_network_that_missed_the_structure_is_left_out(cohort, monkeypatch):
    """Averaging in a network that predicts background everywhere would erase the others' foreground."""
    warnings = []

    class Recorder(SilentReporter):
        def warning(self, message, hint):
            warnings.append(message)

    monkeypatch.setattr(SelfLabellingLoop, "_validate", lambda self, network, axis=0: 0.8 if axis == 0 else 0.1)
    options = MethodOptions(budget="quick", seed=0, device="cpu", extra={**TINY, "k": 1.0, "fuse_axes": True,
                                                                         "fusion_epochs": 1, "fusion_passes": 1})
    segmenter = get_method("self-labelling").train(cohort[:3], options, Recorder(), validation=cohort[3:])
    assert not isinstance(segmenter.network, AxisEnsemble) and segmenter.network_config.axes == (0,)
    assert len(warnings) == 2 and all("left out of the fusion" in w for w in warnings)


def test_network_axes_are_checked():
    with pytest.raises(SparseSegError, match="axes"):
        NetworkConfig(dims=2, axes=(0, 3))
    assert NetworkConfig(dims=2, axes=(0, 1, 0, 1)).axes == (0, 1, 0, 1)  # two runs' members of an ensemble
    with pytest.raises(SparseSegError, match="2D networks only"):
        NetworkConfig(dims=3, axes=(0, 1, 2))
    assert NetworkConfig.from_dict(NetworkConfig(dims=2, axes=(0, 2)).to_dict()).axes == (0, 2)


def test_co_labelling_runs_share_pseudo_labels_made_by_their_averaged_networks(cohort):
    # two runs in lockstep: round 2's new slices are labelled once, from the mean of both runs' round-1 networks
    method = get_method("self-labelling")
    options = MethodOptions(budget="quick", seed=0, device="cpu", extra={**TINY, "continuity": 0.0})
    settings = method.settings(options)
    loops = [SelfLabellingLoop("self-labelling", method.build(cohort[:2], replace(options, seed=s), settings), cohort[:2],
                               replace(options, seed=s), SilentReporter(), settings, stream=False) for s in (0, 1)]
    loops[0].label_together_with(loops[1:])
    runs = [loop.run() for loop in loops]
    for run in runs:
        next(run)  # round 1: ground truth only
    networks = [copy.deepcopy(loop.labeller()) for loop in loops]
    assert not all(torch.equal(a, b) for a, b in zip(*(n.state_dict().values() for n in networks)))  # two seeds, two networks
    before = [lab.copy() for lab in loops[0].labelled]
    round2 = [next(run) for run in runs]
    assert round2[0].metrics["new_slices"] > 0 and round2[1].metrics["new_slices"] == 0  # the follower did not label
    assert loops[1].targets is loops[0].targets and loops[1].labelled is loops[0].labelled
    from SparseSegLib.methods.self_labelling import predict_slices
    v = 0
    new = np.flatnonzero((loops[0].labelled[v] == 2) & (before[v] == 0))
    multiple = loops[0].segmenter.network_config.size_multiple
    mean = np.mean([predict_slices(n, loops[0].images[v], new, settings.context, multiple) for n in networks], axis=0)
    expected = pseudo_labels(mean, settings.theta, settings.threshold, settings.background_theta)
    alone = pseudo_labels(predict_slices(networks[0], loops[0].images[v], new, settings.context, multiple),
                          settings.theta, settings.threshold, settings.background_theta)
    assert np.array_equal(loops[0].targets[v][new], expected)
    assert not np.array_equal(expected, alone)  # the peer's network changed the labels


def test_a_co_labelled_ensemble_trains_and_saves_like_an_ensemble(cohort, tmp_path):
    extra = {**TINY, "k": 1.0, "fuse_axes": True, "fusion_epochs": 1, "fusion_passes": 2, "ensemble": 2, "co_labelling": True}
    both = get_method("self-labelling").train(cohort[:3], MethodOptions(budget="quick", seed=0, device="cpu", extra=extra),
                                              SilentReporter())
    # each run: round 1, round 2 (every slice labelled), two fusion passes (the second re-labelled by both runs' average)
    assert [r["ensemble_run"] for r in both.training["rounds"]] == [1] * 4 + [2] * 4
    assert both.network_config.axes == (0, 1, 2, 0, 1, 2)
    loaded = load_segmenter(both.save(tmp_path / "model"))
    assert np.allclose(loaded.predict(cohort[0].image)[1], both.predict(cohort[0].image)[1], atol=1e-5)


def test_a_3d_student_learns_the_final_models_pseudo_labels_and_becomes_the_model(cohort, tmp_path):
    extra = {**TINY, "k": 1.0, "fuse_axes": True, "fusion_epochs": 1, "fusion_passes": 1, "student_3d": True}
    options = MethodOptions(budget="quick", seed=0, device="cpu", iterations=4, extra=extra)
    student = get_method("self-labelling").train(cohort[:3], options, SilentReporter())
    assert student.network_config.dims == 3 and student.postprocess == "lcc-fill"
    assert len(student.class_names) == 2  # the cohort's two classes, as the 2D teacher had them
    assert student.training["rounds"][-1]["student"] == "3d"
    # the curve: three 2D rounds fed as the 2D model is (slice z-score, 2D patch), then the student
    snapshots = student.round_snapshots
    assert [s["round"] for s in snapshots] == [1, 2, 3, 4]
    assert snapshots[0]["normalization"] == "zscore-slice" and len(snapshots[0]["patch_size"]) == 2
    assert snapshots[-1]["config"].dims == 3 and snapshots[-1]["normalization"] == student.normalization
    loaded = load_segmenter(student.save(tmp_path / "model"))
    assert np.allclose(loaded.predict(cohort[0].image)[1], student.predict(cohort[0].image)[1], atol=1e-5)
    from SparseSegLib.round_curves import round_test_curve
    curve = round_test_curve(student, cohort[2:], "cpu", student.class_names, "merged")
    assert [p["round"] for p in curve["points"]] == [1, 2, 3, 4]
