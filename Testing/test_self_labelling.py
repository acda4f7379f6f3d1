"""Incremental 2D self-labelling, the paper's pieces: round rule, thresholds, continuity, post-processing, options.

The rounds on real cases are in test_self_labelling_rounds.py, the worker job and the benchmark in
test_self_labelling_jobs.py.

Real bundled hippocampus cases, tiny schedules (a few training steps per round): these tests check the
mechanics, not the accuracy (the benchmark in README.md does that).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from SparseSegLib.engine.plain_unet import PlainUNet2D
from SparseSegLib.engine.postprocess import postprocess_labels
from SparseSegLib.engine.preprocessing import normalize
from SparseSegLib.engine.sampling import UNKNOWN
from SparseSegLib.engine.slice_registration import slice_transform, warp_label
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.self_labelling import (
    RETIRED_NAMES,
    erosion_at,
    follow_footprint,
    inner_neighbour,
    next_slices,
    per_side,
    postprocessed_proposal,
    pseudo_labels,
    rounds_needed,
    slice_weights,
)

from self_labelling_support import new_loop


def test_plain_unet_has_the_papers_parameter_count():
    # Table 4 of the paper: 485,673 parameters for BRAIN_2 (one input, one sigmoid output)
    assert sum(p.numel() for p in PlainUNet2D(1, 1).parameters()) == 485_673
    assert PlainUNet2D(3, 3)(torch.zeros(2, 3, 64, 48)).shape == (2, 3, 64, 48)


def test_threshold_readings_differ():
    # background, unsure foreground, confident anterior, confident posterior, unsure between classes
    p = np.array([[0.9, 0.35, 0.1, 0.05, 0.2],
                  [0.05, 0.6, 0.8, 0.15, 0.45],
                  [0.05, 0.05, 0.1, 0.8, 0.35]])[:, None]
    binarised = pseudo_labels(p, 0.7, "binarise")[0]
    ignored = pseudo_labels(p, 0.7, "ignore")[0]
    assert binarised.tolist() == [0, 0, 1, 2, 1]  # P(fg) < theta -> background; every pixel labelled
    assert ignored.tolist() == [0, UNKNOWN, 1, 2, UNKNOWN]  # unsure pixels left out of the loss
    strict_background = pseudo_labels(p, 0.7, "ignore", background_theta=0.95)[0]
    assert strict_background.tolist() == [UNKNOWN, UNKNOWN, 1, 2, UNKNOWN]  # background needs 0.95 now
    assert (binarised != ignored).any()


def test_registered_neighbour_label_follows_a_drifting_structure(sample_case):
    # real MRI slices: carry the central slice's label outwards by registration, compare with the truth
    image, label = normalize(sample_case.image, "zscore-slice"), sample_case.label
    centre = image.shape[0] // 2
    registered, copied = label[centre], label[centre]
    for s in range(centre + 1, centre + 5):
        registered = warp_label(registered, slice_transform(image[s], image[s - 1]))
        truth = label[s] > 0
        dice = lambda guess: 2 * (guess & truth).sum() / (guess.sum() + truth.sum())
        assert dice(registered > 0) > dice(copied > 0)  # identity copying loses the structure as it moves
    assert dice(registered > 0) > 0.7  # four slices out (measured 0.82 on hippocampus_001)


def test_continuity_lowers_the_foreground_threshold_inside_the_footprint_only():
    # P(fg) per pixel: inside the footprint 0.4 (kept), 0.2 (network sure it ended); outside 0.4 (not kept)
    p = np.array([[0.6, 0.8, 0.6], [0.4, 0.2, 0.4]])[:, None]
    proposal = pseudo_labels(p, 0.7, "ignore")[0]
    assert proposal.tolist() == [UNKNOWN, 0, UNKNOWN]
    footprint = np.array([[1, 1, 0]])
    assert follow_footprint(proposal[None], p, footprint, 0.3)[0].tolist() == [1, 0, UNKNOWN]
    # seeded (hysteresis): a carried region is kept only where it touches the network's own confident foreground
    p = np.array([[0.6, 0.6, 0.2, 0.9, 0.6, 0.6], [0.4, 0.4, 0.8, 0.1, 0.4, 0.4]])[:, None]
    proposal = pseudo_labels(p, 0.7, "ignore")
    footprint = np.array([[1, 1, 0, 0, 1, 1]])
    assert follow_footprint(proposal, p, footprint, 0.3)[0].tolist() == [1, 1, 1, 0, 1, 1]
    assert follow_footprint(proposal, p, footprint, 0.3, seeded=True)[0].tolist() == [1, 1, 1, 0, UNKNOWN, UNKNOWN]
    assert inner_neighbour(np.array([0, 0, 1, 0, 0], bool), 4) == 3 and inner_neighbour(np.array([0, 0, 1, 0, 0], bool), 0) == 1


def test_eroded_continuity_footprint_shrinks_the_carried_label(cohort):
    # a carried label keeps its area slice after slice; eroding it lets a chain die out where a structure ends
    loops = {erode: new_loop(cohort[:1], continuity=0.3, continuity_erode=erode) for erode in (0, 2)}
    for loop in loops.values():
        centre = int(np.flatnonzero(loop.gt[0])[0])
        loop.targets[0][centre] = np.where(cohort[0].label[centre] > 0, 1, 0)
    carried, eroded = (loops[e].neighbour_footprint(0, centre + 1) for e in (0, 2))
    assert np.count_nonzero(carried) > np.count_nonzero(eroded) > 0
    assert not np.any((eroded > 0) & (carried == 0))


def test_continuity_registers_thick_slices_coarse_to_fine(cohort):
    """The carried footprint's demons take their levels from the spacing, as the Start default's do: the same
    arrays declared as 4 mm slices run three levels; isotropic scans keep one."""
    from dataclasses import replace

    from SparseSegLib.case import Geometry

    thick_case = replace(cohort[0], geometry=Geometry(size=cohort[0].geometry.size, spacing=(1.0, 1.0, 4.0)))
    loops = [new_loop([case], continuity=0.3, continuity_erode=0) for case in (cohort[0], thick_case)]
    assert [loop.demons_levels for loop in loops] == [[1], [3]]
    centre = int(np.flatnonzero(loops[0].gt[0])[0])
    carried = []
    for loop, levels in zip(loops, (1, 3)):
        loop.targets[0][centre] = np.where(cohort[0].label[centre] > 0, 1, 0)
        carried.append(loop.neighbour_footprint(0, centre + 1))
        field = slice_transform(loop.images[0][centre + 1], loop.images[0][centre], levels=levels)
        np.testing.assert_array_equal(carried[-1], warp_label(loop.targets[0][centre], field))
    assert (carried[0] != carried[1]).any()


def test_a_fractional_erosion_rate_shrinks_the_chain_every_few_slices():
    # rate 0.5: one pixel on every second slice out from the ground truth; the chain's total is floor(distance * rate)
    assert [erosion_at(d, 0.5) for d in range(7)] == [0, 0, 1, 0, 1, 0, 1]
    assert [erosion_at(d, 1) for d in range(4)] == [0, 1, 1, 1] and erosion_at(3, 0) == 0
    assert sum(erosion_at(d, 0.3) for d in range(1, 11)) == 3


def test_relabelling_with_post_processing_drops_stray_components_and_fills_holes():
    # P(fg) on a 3 x 7 x 7 volume: a sure cube with an enclosed hole, a stray sure voxel, an unsure band elsewhere
    p_fg = np.zeros((3, 7, 7))
    p_fg[:, 1:4, 1:4] = 0.9
    p_fg[1, 2, 2] = 0.1   # hole inside the cube
    p_fg[1, 6, 6] = 0.9   # a stray component
    p_fg[1, 5, 0:3] = 0.5  # unsure: left out of the loss
    probabilities = np.stack([1 - p_fg, p_fg])
    proposal = pseudo_labels(probabilities, 0.7, "ignore")
    cleaned = postprocessed_proposal(proposal, probabilities, "lcc-fill")
    assert proposal[1, 6, 6] == 1 and cleaned[1, 6, 6] == 0
    assert proposal[1, 2, 2] == 0 and cleaned[1, 2, 2] == 1
    assert (cleaned[1, 5, 0:3] == UNKNOWN).all() and (cleaned[:, 1:4, 1:4] == 1).all()
    assert postprocessed_proposal(proposal, probabilities, "none") is proposal


def test_round_rule_outward_and_random():
    labelled = np.zeros(36, bool)
    labelled[18] = True
    assert per_side(36, 0.05) == 1 and per_side(36, 0.10) == 2 and per_side(10, 0.05) == 1
    assert next_slices(labelled, 1, "outward", np.random.default_rng(0)).tolist() == [17, 19]
    assert next_slices(labelled, 2, "outward", np.random.default_rng(0)).tolist() == [16, 17, 19, 20]
    random = next_slices(labelled, 1, "random", np.random.default_rng(0))
    assert random.size == 2 and 18 not in random
    assert rounds_needed(labelled, 1, "outward") == 18 and rounds_needed(labelled, 1, "random") == 18
    weights = slice_weights(36, labelled, "gaussian")
    assert weights[18] == 1 and weights[0] < weights[10] < weights[17] < 1
    assert slice_weights(36, labelled, "stepwise")[0] == 0.25 and slice_weights(36, labelled, "uniform").min() == 1
    narrow = slice_weights(36, labelled, "gaussian", sigma=0.1)
    assert narrow[18] == 1 and (narrow[:18] < weights[:18]).all()


def test_unknown_or_bad_options_are_clear_errors(cohort):
    with pytest.raises(SparseSegError, match="does not know"):
        get_method("self-labelling").settings(MethodOptions(extra={"thetta": 0.7}))
    with pytest.raises(SparseSegError, match="threshold"):
        get_method("self-labelling").settings(MethodOptions(extra={"threshold": "maybe"}))
    faithful = get_method("self-labelling-faithful").settings(MethodOptions())
    assert (faithful.classes, faithful.threshold, faithful.refresh, faithful.optimizer) == ("merged", "binarise", False, "rmsprop")


@pytest.mark.parametrize("old_name", sorted(RETIRED_NAMES))
def test_a_retired_method_name_is_reproduced_by_options_of_a_registered_one(old_name):
    # v1-v6 and the ablations were method names; each is now a registered method plus options that must resolve to
    # exactly the settings its preset gave, whatever the budget and whatever else the user sets
    from SparseSegLib.cli import parse_options
    from SparseSegLib.methods import METHODS
    from SparseSegLib.methods.self_labelling import option_lines, resolve_settings
    from SparseSegLib.methods.self_labelling.presets import RETIRED_PRESETS

    method, options = RETIRED_NAMES[old_name]
    assert old_name not in METHODS and method in METHODS
    for budget in ("quick", "paper"):
        for user in ({}, {"theta": 0.65, "epoch_iterations": 5}, {"solo_theta": 0.8}):
            old = resolve_settings(RETIRED_PRESETS[old_name], MethodOptions(budget=budget, extra=user))
            assert get_method(method).settings(MethodOptions(budget=budget, extra={**options, **user})) == old
    # the command line reads the options back as written, and the results document lists exactly them
    assert parse_options(option_lines(old_name).replace("--option ", "").split()) == options
    document = (Path(__file__).resolve().parents[1] / "docs" / "results" / "self-labelling.md").read_text()
    assert f"| `{old_name}` | `{method}` | `{option_lines(old_name)}` |" in document


def test_postprocess_keeps_the_largest_component_and_fills_holes():
    labels = np.zeros((9, 9, 9), np.uint8)
    labels[1:6, 1:6, 1:6] = 1
    labels[3, 3, 3] = 0  # a hole
    labels[8, 8, 8] = 2  # a stray voxel
    probabilities = np.zeros((3,) + labels.shape, np.float32)
    probabilities[1] = 1.0
    result = postprocess_labels(labels, probabilities, "lcc-fill")
    assert result[8, 8, 8] == 0 and result[3, 3, 3] == 1 and result.sum() == 125
    assert postprocess_labels(labels, probabilities, "none") is labels


def test_longer_epochs_scale_the_budgets_schedule_but_not_the_fusion_networks_training():
    method = get_method("self-labelling")
    paper = method.settings(MethodOptions(budget="paper"))
    # the labelling network trains three times as long per epoch; the fusion networks get a third of the epochs
    assert (paper.epoch_scale, paper.epoch_iterations, paper.fusion_epochs) == (3, 60, 7)
    assert (paper.first_epochs, paper.round_epochs, paper.patience) == (8, 2, 2)  # epochs count as before
    budget = method.settings(MethodOptions(budget="paper", extra={"epoch_scale": 1}))
    assert (budget.epoch_iterations, budget.fusion_epochs) == (20, 20)
    quick = method.settings(MethodOptions(budget="quick"))
    assert (quick.epoch_iterations, quick.fusion_epochs) == (30, 3)
    given = method.settings(MethodOptions(budget="paper", extra={"epoch_iterations": 25}))
    assert (given.epoch_iterations, given.fusion_epochs) == (25, 20)  # what the user sets is not scaled
    assert get_method("self-labelling-faithful").settings(MethodOptions(budget="paper")).epoch_iterations == 20
    with pytest.raises(SparseSegError, match="epoch_scale"):
        method.settings(MethodOptions(extra={"epoch_scale": 0}))
