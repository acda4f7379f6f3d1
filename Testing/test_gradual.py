"""Gradual Learning (methods/gradual/) on bundled real hippocampus cases with tiny budgets.

What is checked: regions grow by exactly ``step`` voxels per round and clip at the border; ground truth
is never overwritten (even by a network that predicts something else everywhere); the 2D form covers
the volume and stops, and grows and trains across the axis the slice was painted along (1 and 2 too);
pseudo-labels leave unconfident voxels unknown and never take a far blob that the paint does not reach,
while the painted slice's background stays a negative; resuming from a round's state gives the
uninterrupted run's next round; the options behave as documented; the background worker streams a
gradual job round by round; the cohort path (`sparseseg train --method gradual`) writes a model. One CPU
thread, a few iterations per round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from SparseSegLib.annotation import annotate_case
from SparseSegLib.errors import SparseSegError
from SparseSegLib.io import write_image
from SparseSegLib.jobs import layout
from SparseSegLib.jobs.events import read_events
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.engine.sampling import UNKNOWN
from SparseSegLib.methods.gradual import (GradualLearning, cover_distance, grow_box, grow_mask, parse_settings,
                                         pseudo_label_target, region_boxes)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Two torch threads on a busy two-core machine run many times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cases(sample_dataset):
    return [sample_dataset.load(ref) for ref in sample_dataset.cases[:2]]


#: The papers' pseudo-labels (hard argmax, no component filter): every voxel of a grown region gets a label.
UNFILTERED = {"confidence": None, "anchor": False}


def options_3d(**extra) -> MethodOptions:
    rounds = extra.pop("rounds", 3)
    return MethodOptions(network="3d", device="cpu", rounds=rounds, iterations_per_round=2, batch_size=1,
                         patch_size=(16, 16, 16), extra=extra)


def options_2d(**extra) -> MethodOptions:
    rounds = extra.pop("rounds", 3)
    return MethodOptions(network="2d", device="cpu", rounds=rounds, iterations_per_round=3, batch_size=2, extra=extra)


def run(cases, options):
    method = GradualLearning()
    results, targets = [], []
    for result in method.run_rounds(cases, options, SilentReporter()):
        results.append(result)
        targets.append([t.copy() for t in method.loop.targets])
    return method, results, targets


# --------------------------------------------------------------------------------------------------
# Regions


def test_grow_box_and_mask_clip_at_the_border():
    shape = (20, 30, 40)
    box = ((2, 10, 33), (8, 16, 39))  # near the low k border and the high i border
    assert grow_box(box, 3, shape, (0, 1, 2)) == ((0, 7, 30), (11, 19, 40))
    assert grow_box(box, 3, shape, (0,)) == ((0, 10, 33), (11, 16, 39))
    mask = np.zeros(shape, bool)
    mask[2:8, 10:16, 33:39] = True
    grown = grow_mask(mask, 3, (0, 1, 2))
    expected = np.zeros(shape, bool)
    expected[0:11, 7:19, 30:40] = True
    assert np.array_equal(grown, expected)
    assert region_boxes(grown) == [((0, 7, 30), (11, 19, 40))]
    assert cover_distance(mask, (0,)) == 20 - 8  # slices 8..19 lie up to 12 away from slice 7
    assert cover_distance(mask, (1,)) == 14 and cover_distance(mask, (2,)) == 33  # across axes 1 and 2
    assert cover_distance(np.ones(shape, bool), (0, 1, 2)) == 0


def test_3d_regions_grow_by_step_per_round_and_ground_truth_is_kept(cases):
    annotated = [annotate_case(case, "boxes:2:10", seed=3) for case in cases]
    step = 4
    method, results, targets = run(annotated, options_3d(step=step, rounds=4, **UNFILTERED))
    assert [r.index for r in results] == [1, 2, 3, 4]
    assert [r.metrics["growth_voxels"] for r in results] == [0, 4, 8, 12]
    for case_index, case in enumerate(annotated):
        boxes = region_boxes(case.annotated)
        assert len(boxes) == 2
        for round_index, round_targets in enumerate(targets):
            growth = step * round_index
            expected = np.zeros(case.annotated.shape, bool)
            for low, high in boxes:
                grown_low = [max(0, lo - growth) for lo in low]
                grown_high = [min(n, hi + growth) for hi, n in zip(high, case.annotated.shape)]
                expected[tuple(slice(a, b) for a, b in zip(grown_low, grown_high))] = True
            target = round_targets[case_index]
            assert np.array_equal(target >= 0, expected), f"round {round_index + 1}, case {case_index}"
            assert np.array_equal(target[case.annotated], case.label[case.annotated])
    # the last round's regions reach the border of these 35x51x35 volumes somewhere: clipping happened
    assert any((t >= 0)[0].any() or (t >= 0)[-1].any() for t in targets[-1])
    assert results[-1].metrics["pseudo_labelled_voxels"] > results[1].metrics["pseudo_labelled_voxels"] > 0
    assert results[-1].labels[annotated[0].case_id].shape == annotated[0].image.shape


def test_ground_truth_is_never_overwritten_by_a_contrary_network(cases, monkeypatch):
    """A network that says 'class 2' everywhere: every pseudo-label is 2, every GT voxel keeps its value."""
    from SparseSegLib.methods import gradual

    def always_two(self, index, growth):
        probabilities = np.zeros((self.segmenter.num_classes,) + self.cases[index].image.shape, np.float32)
        probabilities[2] = 1.0
        return probabilities

    monkeypatch.setattr(gradual.GradualLoop, "region_probabilities", always_two)
    annotated = [annotate_case(cases[0], "boxes:3:8", seed=1)]
    case = annotated[0]
    assert (case.label[case.annotated] != 2).any()  # so keeping the ground truth is visible
    _, _, targets = run(annotated, options_3d(step=2, rounds=3))
    last = targets[-1][0]
    assert np.array_equal(last[case.annotated], case.label[case.annotated])
    pseudo = (last >= 0) & ~case.annotated
    assert pseudo.any() and (last[pseudo] == 2).all()


def test_2d_form_grows_slice_by_slice_covers_and_stops(cases):
    annotated = [annotate_case(case, "central-slice", 0) for case in cases]
    method, results, targets = run(annotated, options_2d(rounds=4, **UNFILTERED))  # auto step: cover in 3 growths
    depth = annotated[0].image.shape[0]
    centre = depth // 2
    step = results[0].metrics["step"]
    assert step == int(np.ceil(max(centre, depth - 1 - centre) / 3))
    for round_index, round_targets in enumerate(targets):
        labelled_slices = np.flatnonzero((round_targets[0] >= 0).reshape(depth, -1).all(1))
        assert labelled_slices.tolist() == list(range(max(0, centre - step * round_index), min(depth, centre + step * round_index + 1)))
    assert results[-1].metrics["covered"] and results[-1].metrics["labelled_fraction"] == 1.0
    # a large step covers after one growth; the run then stops and says so in ``total``
    _, early, _ = run(annotated, options_2d(rounds=6, step=depth))
    assert [(r.index, r.total) for r in early] == [(1, 6), (2, 2)]


@pytest.mark.parametrize("axis", [1, 2])
def test_2d_form_grows_and_trains_across_the_painted_axis(cases, axis):
    """A slice painted across array axis 1 or 2: the labelled block grows across that axis, the 2D network
    learns and predicts slices across it, and Save model rebuilds it across it."""
    case = annotate_case(cases[0], f"central-slice:{axis}")
    size, centre = case.image.shape[axis], case.image.shape[axis] // 2
    method, results, targets = run([case], options_2d(rounds=3, step=2, **UNFILTERED))
    loop = method.loop
    assert loop.slice_axis == axis and loop.axes == (axis,) and results[-1].metrics["slice_axis"] == axis
    assert loop.segmenter.network_config.axes == (axis,)
    moved = (size,) + tuple(n for a, n in enumerate(case.image.shape) if a != axis)
    assert loop.sampler.volumes[0].image.shape == moved  # training slices lie across the painted axis
    assert loop.segmenter.patch_size == tuple(int(np.ceil(n / 16) * 16) for n in moved[1:])
    other = tuple(a for a in range(3) if a != axis)
    for round_index, round_targets in enumerate(targets):
        whole = np.flatnonzero((round_targets[0] >= 0).all(axis=other))
        growth = 2 * round_index
        assert whole.tolist() == list(range(max(0, centre - growth), min(size, centre + growth + 1)))
        assert np.array_equal(round_targets[0] >= 0, np.isin(np.arange(size), whole).reshape(
            [size if a == axis else 1 for a in range(3)]) & np.ones(case.image.shape, bool))
    neighbours = [centre - 1, centre + 1]  # after round 2 the slices next to the painted one carry pseudo-labels
    assert (np.take(targets[1][0], neighbours, axis=axis) >= 0).all()
    assert results[1].metrics["pseudo_labelled_voxels"] > 0
    for result in results:
        assert result.labels[case.case_id].shape == case.image.shape
    saved = method.segmenter_from_state([case], options_2d(rounds=3, step=2, **UNFILTERED), results[-1].state)
    assert saved.network_config.axes == (axis,)
    assert np.array_equal(saved.predict(case.image)[0], results[-1].labels[case.case_id])


def lattice(case) -> np.ndarray:
    """Every third voxel along each axis outside the annotation: voxels the network is unsure of, isolated from
    each other so that gating them cannot cut the object into parts the paint no longer reaches."""
    grid = np.indices(case.label.shape)
    return (grid % 3 == 0).all(0) & ~case.annotated


def far_blob_probabilities(case, blob: tuple[slice, ...], unsure: np.ndarray) -> np.ndarray:
    """A network's softmax that is right and sure (0.9) about the reference, except a confident far blob of
    class 1 and the ``unsure`` voxels (top probability 0.5)."""
    classes = int(case.label.max()) + 1
    probabilities = np.full((classes,) + case.label.shape, 0.1 / (classes - 1), np.float32)
    np.put_along_axis(probabilities, case.label[None].astype(np.int64), 0.9, axis=0)
    probabilities[(slice(None),) + blob] = 0.05 / (classes - 1)
    probabilities[(1,) + blob] = 0.95
    probabilities[:, unsure] = 0.5 / (classes - 1)
    probabilities[0, unsure] = 0.5
    return probabilities


@pytest.mark.parametrize("axis", [0, 1])
def test_pseudo_labels_gate_unconfident_voxels_and_drop_a_far_blob(cases, axis):
    case = annotate_case(cases[0], f"central-slice:{axis}")
    ground_truth = case.sparse_label(UNKNOWN)
    blob = (slice(0, 4), slice(0, 6), slice(0, 6))  # a corner the hippocampus (k 5.., j 8.., i 8..) does not reach
    assert not (case.label[blob] > 0).any() and not case.annotated[blob].any()
    unsure = lattice(case)
    assert (case.label[unsure] > 0).any()
    probabilities = far_blob_probabilities(case, blob, unsure)
    everywhere = np.ones(case.label.shape, bool)
    target, stats = pseudo_label_target(probabilities, ground_truth, ground_truth, case.annotated, everywhere,
                                        confidence=0.7, anchor=True)
    assert (target[blob] == UNKNOWN).all() and stats["unanchored"] == int(np.count_nonzero(~lattice(case)[blob]))
    assert (target[unsure] == UNKNOWN).all() and stats["unconfident"] == int(unsure.sum())
    assert np.array_equal(target[case.annotated], case.label[case.annotated])  # painted foreground and background
    assert (target[case.annotated & (case.label == 0)] == 0).all() and (case.annotated & (case.label == 0)).any()
    confident_object = (case.label > 0) & ~unsure & ~case.annotated
    assert np.array_equal(target[confident_object], case.label[confident_object])  # connected to the paint: kept
    # without the filters the blob and the unsure voxels (as background) would have been taught
    loose, loose_stats = pseudo_label_target(probabilities, ground_truth, ground_truth, case.annotated, everywhere,
                                             confidence=None, anchor=False)
    assert (loose[blob][~unsure[blob]] == 1).all() and (loose[unsure] == 0).all() and loose_stats["unanchored"] == 0
    assert (target[~case.annotated & (target >= 0)] == loose[~case.annotated & (target >= 0)]).all()


def test_loop_pseudo_labels_never_take_a_far_blob(cases, monkeypatch):
    """Through the round loop, painted across axis 1: a network seeing a far blob never makes it a target."""
    from SparseSegLib.methods import gradual

    case = annotate_case(cases[0], "central-slice:1")
    blob = (slice(0, 4), slice(0, 6), slice(0, 6))
    unsure = lattice(case)
    probabilities = far_blob_probabilities(case, blob, unsure)
    monkeypatch.setattr(gradual.GradualLoop, "region_probabilities", lambda self, index, growth: probabilities)
    method, results, targets = run([case], options_2d(rounds=3, step=30))  # the second round's slab is the volume
    last = targets[-1][0]
    assert (last[blob] == UNKNOWN).all() and (last[unsure] == UNKNOWN).all()
    assert np.array_equal(last[case.annotated], case.label[case.annotated])
    assert results[1].metrics["unanchored_voxels"] > 0 and results[1].metrics["unconfident_voxels"] > 0
    assert (last[(case.label > 0) & ~unsure] > 0).all()
    assert results[1].metrics["gradual"]["confidence"] == 0.7 and results[1].metrics["gradual"]["anchor"] is True


def test_resume_from_a_round_state_matches_the_uninterrupted_run(cases):
    annotated = [annotate_case(cases[0], "boxes:2:10", seed=5)]
    options = options_3d(step=3, rounds=3)
    _, uninterrupted, full_targets = run(annotated, options)
    state = uninterrupted[1].state
    assert state["round"] == 2 and state["method"] == "gradual" and len(state["method_state"]["targets"]) == 1
    method = GradualLearning()
    resumed = list(method.run_rounds(annotated, options, SilentReporter(), state=state))
    assert [r.index for r in resumed] == [3]
    assert np.array_equal(method.loop.targets[0], full_targets[-1][0])
    case_id = annotated[0].case_id
    assert np.array_equal(resumed[0].labels[case_id], uninterrupted[-1].labels[case_id])
    assert np.allclose(resumed[0].probabilities[case_id], uninterrupted[-1].probabilities[case_id], atol=1e-5)


def test_options_freeze_confidence_restart_and_validation(cases):
    annotated = [annotate_case(cases[0], "boxes:2:10", seed=2)]
    _, _, frozen = run(annotated, options_3d(step=2, rounds=3, relabel="freeze"))
    first_pseudo = (frozen[1][0] >= 0) & ~annotated[0].annotated
    assert np.array_equal(frozen[2][0][first_pseudo], frozen[1][0][first_pseudo])  # frozen pseudo-labels stay
    _, confident, _ = run(annotated, options_3d(step=2, rounds=2, confidence=0.999999, restart=True))
    grown = grow_mask(annotated[0].annotated, 2, (0, 1, 2))
    assert confident[1].metrics["unconfident_voxels"] > 0  # an untrained network is never that sure
    assert confident[1].metrics["pseudo_labelled_voxels"] < int((grown & ~annotated[0].annotated).sum())
    assert confident[1].metrics["gradual"]["restart"] is True
    for bad in ({"relabel": "sometimes"}, {"confidence": 1.5}, {"confidence": "high"}, {"confidence": True}, {"step": 0},
                {"colour": "red"}, {"restart": "maybe"}, {"anchor": "maybe"}):
        with pytest.raises(SparseSegError):
            parse_settings(options_3d(**bad))
        with pytest.raises(SparseSegError):
            GradualLearning().check_options(options_3d(**bad))  # the worker's check before any data loads
    defaults = parse_settings(options_2d())
    assert defaults.confidence == 0.7 and defaults.anchor is True
    assert parse_settings(options_3d(confidence="none", anchor="false")).to_dict()["confidence"] is None
    assert parse_settings(options_3d(confidence=None)).confidence is None and not parse_settings(options_3d(anchor=False)).anchor
    assert parse_settings(options_2d()).grow_axes == "slice" and parse_settings(options_3d()).grow_axes == "all"
    assert isinstance(get_method("gradual"), GradualLearning) and get_method("gradual").name == "gradual"


# --------------------------------------------------------------------------------------------------
# Worker and cohort training


def _painted_files(folder: Path, case) -> tuple[Path, Path]:
    """The case's image and its slice 17 painted, as files for `sparseseg run`."""
    painted = np.zeros_like(case.label)
    painted[17] = case.label[17]
    image, annotation = folder / "image.nii.gz", folder / "painted.nii.gz"
    write_image(case.image, case.geometry, image)
    write_image(painted, case.geometry, annotation)
    return image, annotation


def test_worker_job_streams_gradual_rounds(tmp_path, cases):
    image, annotation = _painted_files(tmp_path, cases[0])
    jobdir = tmp_path / "job"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-m", "SparseSegLib.cli", "run", "--image", str(image), "--annotation", str(annotation),
         "--region", "slices", "--axis", "0", "--method", "gradual", "--rounds", "3", "--iterations-per-round", "3",
         "--batch-size", "2", "--device", "cpu", "--out", str(jobdir)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    events = read_events(jobdir / layout.EVENTS_FILE)
    rounds = [e for e in events if e["event"] == "round"]
    assert len(rounds) >= 2
    assert [e["training"]["gl_repetition"] for e in rounds] == list(range(len(rounds)))
    fractions = [e["training"]["labelled_fraction"] for e in rounds]
    assert fractions == sorted(fractions) and fractions[-1] > fractions[0]
    assert layout.complete_rounds(jobdir) == [e["round"] for e in rounds]
    record = json.loads((layout.round_dir(jobdir, rounds[-1]["round"]) / layout.ROUND_FILE).read_text())
    assert record["training"]["gradual"]["relabel"] == "repredict"


def test_run_takes_method_options_and_names_the_known_ones_for_a_wrong_one(tmp_path, cases):
    """``sparseseg run --option``: the job carries the option to the method; a misspelt one stops with the list."""
    image, annotation = _painted_files(tmp_path, cases[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}

    def run(folder: str, option: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "SparseSegLib.cli", "run", "--image", str(image), "--annotation", str(annotation),
             "--method", "gradual", "--option", option, "--rounds", "1", "--iterations-per-round", "1",
             "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / folder)],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=240, env=env)

    done = run("job", "relabel=freeze")
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "job" / "job.json").read_text())["parameters"]["method_options"] == {"relabel": "freeze"}
    record = json.loads((layout.round_dir(tmp_path / "job", 1) / layout.ROUND_FILE).read_text())
    assert record["training"]["gradual"]["relabel"] == "freeze"
    wrong = run("wrong", "relable=freeze")
    assert wrong.returncode == 2 and "unknown gradual option(s): relable" in wrong.stderr and "relabel" in wrong.stderr
    assert not (tmp_path / "wrong").exists()  # stopped before a job folder was made
    from SparseSegLib.cli import main

    # the Start method trains 2D networks: --network 3d is refused up front, not silently ignored
    assert main(["run", "--image", str(image), "--annotation", str(annotation), "--network", "3d",
                 "--out", str(tmp_path / "three-d")]) == 2
    assert not (tmp_path / "three-d").exists()


def test_a_2d_gradual_job_painted_across_axis_2_propagates_and_saves_across_it(tmp_path, cases):
    """The worker's path: a slice painted across array axis 2 is grown across axis 2, and Save model gives a
    network across axis 2 that predicts what the job streamed."""
    from SparseSegLib.engine.model import load_segmenter
    from SparseSegLib.io import read_image
    from SparseSegLib.jobs.client import Job
    from SparseSegLib.worker.model_export import export_model
    from SparseSegLib.worker import run_job

    case = cases[0]
    centre = case.image.shape[2] // 2
    painted = np.zeros_like(case.label)
    painted[:, :, centre] = case.label[:, :, centre]
    job = Job.create(tmp_path / "job", case.image, case.geometry, painted, "gradual", classes={1: "Anterior", 2: "Posterior"},
                     device="cpu", parameters={"rounds": 2, "iterations_per_round": 3, "batch_size": 2, "threads": 1,
                                               "save_probabilities": True, "method_options": {"step": 2, **UNFILTERED}})
    assert run_job(job.directory, install_signals=False) == layout.EXIT_FINISHED
    rounds = [e for e in read_events(job.directory / layout.EVENTS_FILE) if e["event"] == "round"]
    assert rounds[-1]["training"]["slice_axis"] == 2
    assert rounds[-1]["training"]["pseudo_labelled_voxels"] == 4 * case.image.shape[0] * case.image.shape[1]  # 2 slices each side
    model = load_segmenter(export_model(job.directory, tmp_path / "model"))
    assert model.network_config.axes == (2,)
    _, probabilities = model.predict(read_image(job.directory / "inputs" / "image.nrrd")[0])
    for value in (1, 2):
        streamed = read_image(layout.round_dir(job.directory, 2) / f"probability-{value}.nrrd")[0]
        assert np.allclose(probabilities[value], streamed, atol=1e-4)


def test_sparseseg_train_with_gradual_writes_a_model(tmp_path, sample_dir, capsys):
    from SparseSegLib.cli import main
    from SparseSegLib.engine.model import load_segmenter

    listing = tmp_path / "cases.txt"
    listing.write_text("hippocampus_001\nhippocampus_003\n")
    code = main(["train", "--dataset", str(sample_dir), "--cases", str(listing), "--method", "gradual",
                 "--annotation", "central-slice", "--iterations", "22", "--device", "cpu", "--out", str(tmp_path / "model")])
    assert code == 0, capsys.readouterr().err
    model = load_segmenter(tmp_path / "model")
    assert model.method == "gradual"
    history = model.training["rounds"]  # 11 rounds planned (the paper's R = 10); stops once the volumes are covered
    assert 2 <= len(history) <= 11 and history[-1]["covered"] and not history[-2]["covered"]
    assert history[-1]["gl_repetition"] == len(history) - 1
