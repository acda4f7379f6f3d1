"""``collaborative`` on the real sample scans: the registration network learns, warping is exact at identity,
propagation keeps the labelled slice, fusion sets are right, and a worker job streams its rounds and stops."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from SparseSegLib.annotation import annotate_case
from SparseSegLib.engine.preprocessing import normalize
from SparseSegLib.engine.propagation import propagate_slices
from SparseSegLib.engine.registration_network import (NetworkSliceRegistration, RegistrationConfig, RegistrationNetwork,
                                                      train_registration)
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.collaborative.fusion import CERTAIN, UNCERTAIN, certain_uncertain, fuse_labels
from SparseSegLib.methods.collaborative.settings import CollaborativeSettings

#: Tiny stages so the whole file runs in well under a minute on two CPU cores.
TINY = dict(reg_iterations=15, reg_channels="4,8,16", semi_epochs=2, epoch_iterations=3, k1=1, k2=2, final_iterations=4)


def test_registration_network_lowers_the_dissimilarity_of_neighbouring_slices(sample_case):
    volume = normalize(sample_case.image)
    config = RegistrationConfig(channels=(8, 16, 32), iterations=40, batch_size=8, learning_rate=3e-3)
    network, losses = train_registration([volume], config, torch.device("cpu"), seed=0)
    registration = NetworkSliceRegistration(network, volume)
    middle = volume.shape[0] // 2
    pairs = [(middle + d, middle + d + 1) for d in range(-4, 4)]
    before = np.mean([registration.dissimilarity(s, t, identity=True) for s, t in pairs])
    after = np.mean([registration.dissimilarity(s, t) for s, t in pairs])
    assert after < before - 0.01, (before, after)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_an_untrained_network_is_the_identity_and_keeps_the_central_label(sample_case):
    volume = normalize(sample_case.image)
    label = sample_case.label
    middle = volume.shape[0] // 2
    registration = NetworkSliceRegistration(RegistrationNetwork(RegistrationConfig(channels=(4, 8))), volume)
    maps = np.stack([(label[middle] == v).astype(np.float32) for v in (1, 2)])
    assert np.abs(registration.field(middle, middle + 1)).max() == 0
    np.testing.assert_allclose(registration.warp(maps, middle, middle + 1), maps, atol=1e-5)
    # through the shared chaining of engine/propagation.py: the labelled slice is ground truth, exactly
    probabilities = propagate_slices(volume, label, [middle], 3, registration=registration)
    np.testing.assert_array_equal(probabilities.argmax(0)[middle], label[middle])
    np.testing.assert_array_equal(probabilities.argmax(0)[middle + 1], label[middle])  # identity copies it on


def test_fusion_certain_and_uncertain_sets_on_a_hand_made_example():
    semi = np.array([[0, 1, 1, 0, 2]])
    registration = np.array([[0, 1, 0, 1, 1]])
    certain, uncertain = certain_uncertain(semi, registration)
    np.testing.assert_array_equal(certain, [[True, True, False, False, False]])
    np.testing.assert_array_equal(uncertain, [[False, False, True, True, True]])
    labelled = np.array([[False, False, False, False, False]])
    truth = np.zeros_like(semi)
    target, kind = fuse_labels(semi, registration, labelled, truth, "weighted")
    np.testing.assert_array_equal(target, [[0, 1, 1, 1, 2]])
    np.testing.assert_array_equal(kind, [[CERTAIN, CERTAIN, UNCERTAIN, UNCERTAIN, UNCERTAIN]])
    np.testing.assert_array_equal(fuse_labels(semi, registration, labelled, truth, "intersection")[0], [[0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(fuse_labels(semi, registration, labelled, truth, "union")[0], [[0, 1, 1, 1, 2]])
    assert (fuse_labels(semi, registration, labelled, truth, "union")[1] == CERTAIN).all()
    labelled = np.array([[False, False, True, False, False]])  # ground truth wins, whatever the branches say
    target, kind = fuse_labels(semi, registration, labelled, truth, "weighted")
    assert target[0, 2] == 0 and kind[0, 2] == CERTAIN


def test_alpha_ramp_and_option_errors():
    settings = CollaborativeSettings(k1=10, k2=20, alpha_f=3.0)
    assert [settings.alpha(e) for e in (0, 9, 10, 15, 20, 99)] == [0.0, 0.0, 0.0, 1.5, 3.0, 3.0]
    with pytest.raises(SparseSegError, match="unknown option"):
        CollaborativeSettings.parse({"nope": 1})
    with pytest.raises(SparseSegError, match="fusion"):
        CollaborativeSettings.parse({"fusion": "maybe"})
    with pytest.raises(SparseSegError, match="k1"):
        CollaborativeSettings.parse({"k1": 5, "k2": 2})
    with pytest.raises(SparseSegError, match="key=value"):
        CollaborativeSettings.parse({"propagate_options": "iterations"})
    with pytest.raises(SparseSegError, match="iterations must be at least 1"):  # the single-scan default's own check
        CollaborativeSettings.parse({"propagate_options": "iterations=0"})
    assert CollaborativeSettings.parse({"propagate_options": "iterations=50; end_opening=0.2"}).propagate_extra() == {
        "iterations": "50", "end_opening": "0.2"}


def test_collaborative_starts_from_the_validation_chosen_options_and_faithful_from_the_paper():
    improved = get_method("collaborative").settings(MethodOptions())
    faithful = get_method("collaborative-faithful").settings(MethodOptions())
    assert (improved.registration, improved.branches, improved.open_end, improved.postprocess) == (
        "propagate", "registration", 0.0, "lcc-fill")
    assert (improved.object_threshold, improved.confidence) == (0.0, 0.0) and CollaborativeSettings().postprocess == "none"
    assert (improved.propagate_targets, improved.axes) == ("labels", (0, 1, 2))
    assert (improved.fixed_threshold, faithful.fixed_threshold, improved.refine) == (None, 0.0, 0)
    assert (faithful.propagate_targets, faithful.axes) == ("argmax", (0,))
    assert faithful == CollaborativeSettings() and (faithful.fusion, faithful.registration) == ("weighted", "network")
    assert get_method("collaborative").settings(MethodOptions(extra={"fusion": "weighted"})).fusion == "weighted"
    assert get_method("collaborative").settings(MethodOptions(extra={"registration": "network"})).fusion == "intersection"
    with pytest.raises(SparseSegError, match="collaborative-faithful"):
        get_method("collaborative-faithful").check_options(MethodOptions(extra={"nope": 1}))


def test_a_worker_job_streams_its_rounds_stops_resumes_and_continues_with_new_paint(sample_case):
    case = annotate_case(sample_case, "central-slice", 0)
    method = get_method("collaborative-faithful")  # the paper's registration network as the first round
    options = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2, extra=dict(TINY))
    assert method.planned_rounds(case, options) == 3
    results = list(method.run_rounds([case], options, SilentReporter()))
    assert [r.index for r in results] == [1, 2, 3] and all(r.total == 3 for r in results)
    assert [r.metrics["step"] for r in results] == ["registration", "semi", "final"]
    for result in results:
        labels = result.labels[case.case_id]
        assert labels.shape == case.image.shape and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels[case.annotated], case.label[case.annotated])  # paint is ground truth
        assert result.probabilities[case.case_id].shape == (3,) + case.image.shape
    assert list(method.run_rounds([case], options, SilentReporter(), state=results[-1].state)) == []
    resumed = list(method.run_rounds([case], options, SilentReporter(), state=results[0].state))
    assert [r.metrics["step"] for r in resumed] == ["semi", "final"]
    with pytest.raises(SparseSegError, match="not collaborative"):  # another variant's checkpoint is refused
        list(get_method("collaborative").run_rounds([case], options, SilentReporter(), state=results[0].state))
    # a Continue with one more painted slice is a new stage: three more rounds, numbered on
    corrected = case.annotated.copy()
    corrected[case.image.shape[0] // 2 + 3] = True
    continued = case.with_annotation(corrected)
    assert method.planned_rounds(continued, options, results[-1].state) == 6
    stage_two = list(method.run_rounds([continued], options, SilentReporter(), state=results[-1].state))
    assert [r.index for r in stage_two] == [4, 5, 6]
    np.testing.assert_array_equal(stage_two[-1].labels[case.case_id][corrected], case.label[corrected])


def test_a_cohort_model_with_demons_registration_predicts_every_case(sample_dataset):
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=4, batch_size=2,
                            extra=dict(TINY, registration="demons", demons_iterations=5, fusion="intersection"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    assert segmenter.training["registration"]["registration"] == "demons"
    assert segmenter.training["fusion"]["uncertain"] >= 0
    labels, probabilities = segmenter.predict(cases[0].image)
    assert labels.shape == cases[0].image.shape and probabilities.shape[0] == 3


def test_propagate_registration_runs_the_single_scan_default_on_each_volume_in_worker_processes(sample_dataset):
    """``registration=propagate``: each training volume's pseudo-labels are the single-scan default's result from
    its labelled slice alone; two worker processes give the same result as one (each volume is independent)."""
    from SparseSegLib.methods.collaborative.branches import registration_branch, scan_of

    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    scans = [scan_of(case, "zscore") for case in cases]
    settings = CollaborativeSettings.parse(dict(registration="propagate", propagate_options="iterations=3;batch_size=2",
                                                propagate_workers=2))
    together, record = registration_branch(scans, 3, settings, torch.device("cpu"), 0, SilentReporter(), "test")
    assert record["volumes"] == 2 and record["workers"] == 2
    for case, scan, result in zip(cases, scans, together):
        probabilities, labels = result.probabilities, result.probabilities.argmax(0)
        assert result.labels is None  # the preset-free settings hand on the argmax (propagate_targets=argmax)
        assert probabilities.shape == (3,) + case.image.shape
        np.testing.assert_array_equal(labels[scan.labelled], scan.target[scan.labelled])  # the labelled slice kept
        assert (labels[~scan.labelled] > 0).any()  # it propagated beyond the slice
    alone, _ = registration_branch(scans[:1], 3, CollaborativeSettings.parse(dict(
        registration="propagate", propagate_options="iterations=3;batch_size=2", propagate_workers=1)),
        torch.device("cpu"), 0, SilentReporter(), "test")
    np.testing.assert_allclose(alone[0].probabilities, together[0].probabilities, atol=1e-5)
    with pytest.raises(SparseSegError, match="propagate"):
        registration_branch(scans[:1], 3, CollaborativeSettings.parse(dict(
            registration="propagate", propagate_options="no_such_option=1")), torch.device("cpu"), 0, SilentReporter(), "t")


def test_propagate_targets_labels_hands_on_the_single_scan_defaults_own_labels(sample_dataset, tmp_path):
    """``propagate_targets=labels``: the branch's pseudo-labels are exactly the labels the single-scan default gives
    a user for that volume (its object threshold, anchoring and end shaping), not the argmax of its probabilities;
    its probabilities stay the soft ones (a job's registration round streams them, and shows the labels)."""
    from SparseSegLib.methods.collaborative.branches import final_targets, registration_branch, scan_of

    case = annotate_case(sample_dataset.load(sample_dataset.cases[0]), "central-slice", 0)
    scan = scan_of(case, "zscore")
    options = dict(registration="propagate", propagate_options="iterations=3;batch_size=2;object_threshold=0.9",
                   propagate_workers=1, propagate_cache=str(tmp_path / "cache"))
    handed, _ = registration_branch([scan], 3, CollaborativeSettings.parse({**options, "propagate_targets": "labels"}),
                                    torch.device("cpu"), 0, SilentReporter(), "t")
    argmax, record = registration_branch([scan], 3, CollaborativeSettings.parse(options), torch.device("cpu"), 0,
                                         SilentReporter(), "t")
    assert record["cached"] == 1  # one propagation serves both
    rounds = list(get_method("propagate").run_rounds(
        [scan.as_case(3)], MethodOptions(rounds=None, device="cpu", seed=0,
                                         extra={"iterations": "3", "batch_size": "2", "object_threshold": "0.9"}),
        SilentReporter()))
    own = rounds[-1].labels[case.case_id]
    np.testing.assert_array_equal(handed[0].labels, own)
    np.testing.assert_array_equal(handed[0].probabilities, argmax[0].probabilities)
    assert (argmax[0].probabilities.argmax(0) != own).any()  # at threshold 0.9 the argmax keeps voxels these drop
    volumes, _ = final_targets([scan], None, handed, CollaborativeSettings.parse({**options, "propagate_targets": "labels"}), 3)
    np.testing.assert_array_equal(volumes[0].target, own)  # the final network learns exactly those labels
    job = CollaborativeSettings.parse({**options, "propagate_targets": "labels"})
    first = next(get_method("collaborative").run_rounds([case], MethodOptions(
        device="cpu", rounds=None, iterations=2, batch_size=2, extra=dict(job.__dict__, final_iterations=2)),
        SilentReporter()))
    np.testing.assert_array_equal(first.labels[case.case_id], own)  # the registration round shows them
    streamed = first.probabilities[case.case_id]
    assert ((streamed > 0.01) & (streamed < 0.99)).any()  # with the soft probabilities, not a one-hot of them
    with pytest.raises(SparseSegError, match="propagate_targets"):
        CollaborativeSettings.parse({"propagate_targets": "maybe"})
    with pytest.raises(SparseSegError, match="object_threshold"):  # it would change nothing: say where it belongs
        CollaborativeSettings.parse({**options, "propagate_targets": "labels", "object_threshold": 0.8})


def test_the_intensity_option_trims_the_registration_branch_and_keeps_the_labelled_slice(sample_dataset):
    from SparseSegLib.methods.collaborative.branches import registration_branch, scan_of

    case = annotate_case(sample_dataset.load(sample_dataset.cases[0]), "central-slice", 0)
    scans = [scan_of(case, "zscore")]
    plain, gated = (registration_branch(scans, 3, CollaborativeSettings.parse(
        dict(registration="demons", demons_iterations=20, intensity=intensity)), torch.device("cpu"), 0,
        SilentReporter(), "test")[0][0].probabilities for intensity in ("none", "chain"))
    painted = scans[0].painted[0]
    np.testing.assert_array_equal(gated.argmax(0)[painted], scans[0].ground_truth[painted])
    assert (gated[0][plain[0] == 1.0] == 1.0).all()  # nothing the chain never reached
    assert (gated.argmax(0) > 0).sum() != (plain.argmax(0) > 0).sum()
    with pytest.raises(SparseSegError, match="intensity"):
        CollaborativeSettings.parse({"intensity": "sometimes"})


def test_the_propagation_cache_reuses_a_volume_only_while_its_inputs_are_the_same(sample_dataset, tmp_path):
    """``propagate_cache``: a second run reads each volume's result instead of propagating again; a changed paint or
    option is a different key, so it runs again instead of reusing a stale result."""
    from SparseSegLib.methods.collaborative.branches import scan_of
    from SparseSegLib.methods.collaborative.propagated import PropagationCache, cache_key, propagate_cases

    case = annotate_case(sample_dataset.load(sample_dataset.cases[0]), "central-slice", 0)
    volume = scan_of(case, "zscore").as_case(3)
    options, cache = {"iterations": "3", "batch_size": "2"}, PropagationCache(tmp_path / "cache")
    first, record = propagate_cases([volume], options, 0, "cpu", 1, SilentReporter(), "t", cache=cache)
    assert record["cached"] == 0 and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again, record = propagate_cases([volume], options, 0, "cpu", 1, SilentReporter(), "t", cache=cache)
    assert record["cached"] == 1
    np.testing.assert_array_equal(again[0].probabilities, first[0].probabilities)
    np.testing.assert_array_equal(again[0].labels, first[0].labels)
    _, record = propagate_cases([volume], {**options, "iterations": "4"}, 0, "cpu", 1, SilentReporter(), "t", cache=cache)
    assert record["cached"] == 0
    repainted = volume.annotated.copy()
    repainted[:, 0, 0] = True  # one more labelled voxel per slice: another paint, another key
    moved = type(volume)(volume.case_id, volume.image, volume.geometry, volume.label, repainted, volume.class_names)
    _, record = propagate_cases([moved], options, 0, "cpu", 1, SilentReporter(), "t", cache=cache)
    assert record["cached"] == 0 and len(list((tmp_path / "cache").glob("*.npz"))) == 3
    assert not list((tmp_path / "cache").glob(".tmp-*"))
    cache.path(volume.case_id, "damaged").write_bytes(b"not an array")
    assert cache.load(volume.case_id, "damaged") is None  # a damaged file is a miss, not a crash
    # the key holds every setting, given or default: a default given explicitly is the same key, another value is
    # not, so a release that changes a default cannot read what the old default propagated
    assert cache_key(volume, options, 0, "cpu") == cache_key(volume, {**options, "demons_levels": "0"}, 0, "cpu")
    assert cache_key(volume, options, 0, "cpu") != cache_key(volume, {**options, "demons_levels": "2"}, 0, "cpu")


def test_confidence_leaves_the_hesitant_propagated_voxels_out_and_postprocess_is_stored_with_the_model(sample_dataset,
                                                                                                        tmp_path):
    """``confidence``: voxels of unlabelled slices where the registration branch's best class is below the
    threshold get no target (no loss); labelled voxels always keep theirs. ``postprocess`` travels with the model."""
    from SparseSegLib.engine.sampling import UNKNOWN
    from SparseSegLib.methods.collaborative.branches import final_targets, scan_of
    from SparseSegLib.methods.collaborative.propagated import Propagated

    case = annotate_case(sample_dataset.load(sample_dataset.cases[0]), "central-slice", 0)
    scan = scan_of(case, "zscore")
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=scan.image.shape).astype(np.float32).transpose(3, 0, 1, 2)
    everything, counts = final_targets([scan], None, [Propagated(probabilities, None)], CollaborativeSettings.parse({}), 3)
    assert counts["left_out"] == 0 and (everything[0].target >= 0).all()
    gated, counts = final_targets([scan], None, [Propagated(probabilities, None)],
                                  CollaborativeSettings.parse({"confidence": 0.6}), 3)
    unsure = (probabilities.max(0) < 0.6) & ~scan.labelled
    assert counts["left_out"] == int(unsure.sum()) > 0
    assert (gated[0].target[unsure] == UNKNOWN).all() and (gated[0].target[~unsure] >= 0).all()
    np.testing.assert_array_equal(gated[0].target[scan.labelled], scan.target[scan.labelled])
    with pytest.raises(SparseSegError, match="confidence"):
        CollaborativeSettings.parse({"confidence": 1.0}).check()
    with pytest.raises(SparseSegError, match="postprocess"):
        CollaborativeSettings.parse({"postprocess": "smooth"}).check()
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=4, batch_size=2,
                            extra=dict(TINY, registration="demons", demons_iterations=5, confidence=0.6,
                                       postprocess="lcc"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    assert segmenter.postprocess == "lcc" and segmenter.training["fusion"]["left_out"] > 0
    from scipy import ndimage

    from SparseSegLib.engine.model import load_segmenter

    labels, _ = segmenter.predict(cases[0].image)
    assert ndimage.label(labels > 0)[1] <= 1  # at most one face-connected component after lcc
    assert load_segmenter(segmenter.save(tmp_path / "model")).postprocess == "lcc"  # travels with the saved model


def test_object_threshold_labels_object_only_where_the_object_classes_together_exceed_it():
    from SparseSegLib.engine.postprocess import object_labels  # the single-scan rule

    probabilities = np.array([[0.5, 0.3, 0.2, 0.9],   # background
                              [0.3, 0.3, 0.7, 0.05],  # class 1
                              [0.2, 0.4, 0.1, 0.05]], np.float32)  # class 2
    np.testing.assert_array_equal(object_labels(probabilities, 0.0), [0, 2, 1, 0])
    np.testing.assert_array_equal(object_labels(probabilities, 0.6), [0, 2, 1, 0])  # 0.5 object: not enough
    np.testing.assert_array_equal(object_labels(probabilities, 0.75), [0, 0, 1, 0])
    with pytest.raises(SparseSegError, match="object_threshold"):
        CollaborativeSettings.parse({"object_threshold": 1.5}).check()


def test_final_axes_trains_one_final_network_per_axis_and_the_saved_model_averages_them(sample_dataset, tmp_path):
    """``final_axes=0,1,2``: three final networks, one across each axis, saved as one model whose prediction is
    the mean of the members' (the member across axis 0 alone gives another result); bad axes are an error."""
    from SparseSegLib.engine.axis_ensemble import AxisEnsemble
    from SparseSegLib.engine.inference import predict_probabilities
    from SparseSegLib.engine.model import load_segmenter
    from SparseSegLib.engine.preprocessing import normalize

    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=4, batch_size=2,
                            extra=dict(TINY, registration="demons", demons_iterations=5, fusion="intersection",
                                       final_axes="0,1,2"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    assert isinstance(segmenter.network, AxisEnsemble) and segmenter.network.axes == (0, 1, 2)
    assert set(segmenter.training["final"]["axes"]) == {"0", "1", "2"}
    loaded = load_segmenter(segmenter.save(tmp_path / "model"))
    _, probabilities = loaded.predict(cases[0].image)
    _, original = segmenter.predict(cases[0].image)
    np.testing.assert_allclose(probabilities, original, atol=1e-5)
    image = normalize(cases[0].image, segmenter.normalization)
    first = predict_probabilities(segmenter.network.members[0], image, replace(segmenter.network_config, axes=(0,)),
                                  segmenter.patch_size, torch.device("cpu"))
    assert probabilities.shape == first.shape and not np.allclose(probabilities, first, atol=1e-3)
    for bad in ("0,0", "3", "x"):
        with pytest.raises(SparseSegError, match="final_axes"):
            CollaborativeSettings.parse({"final_axes": bad})
    from SparseSegLib.methods.propagate.settings import PropagateSettings  # the same rule reads its network_axes

    assert PropagateSettings.parse({"network_axes": "2, 0"}).axes == (2, 0)
    with pytest.raises(SparseSegError, match="network_axes"):
        PropagateSettings.parse({"network_axes": "0,0"})


def test_the_demons_branch_registers_thick_slices_coarse_to_fine(sample_dataset):
    """``registration=demons`` takes its levels from the spacing as the Start default does: the sample's arrays
    declared as 4 mm slices run three levels, which moves the chain; as they are (isotropic), one."""
    from dataclasses import replace

    from SparseSegLib.engine.propagation import PropagationSettings, propagate_slices
    from SparseSegLib.methods.collaborative.branches import registration_branch, scan_of

    case = annotate_case(sample_dataset.load(sample_dataset.cases[0]), "central-slice", 0)
    scan = scan_of(case, "zscore")
    settings = CollaborativeSettings.parse(dict(registration="demons", demons_iterations=20, intensity="none",
                                                open_end=0))
    own, thick = (registration_branch([s], 3, settings, torch.device("cpu"), 0, SilentReporter(), "test")[0][0]
                  .probabilities for s in (scan, replace(scan, spacing_kji=(4.0, 1.0, 1.0))))
    one_level, three_levels = (propagate_slices(scan.image, scan.ground_truth, scan.painted, 3,
                                                PropagationSettings(20, settings.demons_smoothing, levels=levels))
                               for levels in (1, 3))
    np.testing.assert_allclose(own, one_level)
    np.testing.assert_allclose(thick, three_levels)
    assert (own.argmax(0) != thick.argmax(0)).sum() > 20
