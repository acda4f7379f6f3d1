"""The propagate method's intensity gate (:mod:`SparseSegLib.engine.intensity_gate`): Bayes' rule with the
painted slices' histograms, on small arrays (exact behaviour) and on a real sample scan (what it does to a
registration round)."""

from __future__ import annotations

import numpy as np

from SparseSegLib.engine.preprocessing import normalize
from SparseSegLib.engine.propagation import PropagationSettings, propagate_slices
from SparseSegLib.engine.intensity_gate import IntensityEvidence, intensity_likelihoods, painted_background


def _toy() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two slices: slice 0 painted (a bright square of class 1 or 2 on a dark background), slice 1 propagated."""
    image = np.zeros((2, 12, 12), np.float32)
    image[:, 3:9, 3:9] = 10.0
    label = np.zeros((2, 12, 12), np.uint8)
    label[0, 3:9, 3:6], label[0, 3:9, 6:9] = 1, 2
    annotated = np.zeros(label.shape, bool)
    annotated[0] = True
    probabilities = np.zeros((3,) + label.shape, np.float32)
    probabilities[0] = 1.0
    probabilities[:, 0] = np.eye(3, dtype=np.float32)[label[0]].transpose(2, 0, 1)
    # slice 1: the registration says "object, 0.8" over a wider square (2:10), split 3:1 between the classes
    probabilities[:, 1, 2:10, 2:10] = np.array([0.2, 0.6, 0.2], np.float32)[:, None, None]
    return image, label, annotated, probabilities


def test_dark_voxels_lose_the_object_bright_ones_keep_it_and_classes_keep_their_shares():
    image, label, annotated, probabilities = _toy()
    gated = IntensityEvidence.from_paint(image, label, annotated).update(probabilities)
    np.testing.assert_allclose(gated.sum(0), 1.0, atol=1e-6)
    np.testing.assert_array_equal(gated[:, 0], probabilities[:, 0])  # the painted slice is exact
    bright, dark_rim = (1, 5, 5), (1, 2, 2)
    assert gated[0][bright] < 0.05 and gated[0][dark_rim] > 0.9
    assert abs(gated[1][bright] / gated[2][bright] - 3.0) < 1e-4
    assert (gated[0][1][probabilities[0][1] == 1.0] == 1.0).all()  # where the registration never reached


def test_no_background_sample_means_no_evidence():
    image, label, annotated, probabilities = _toy()
    label[0] = 1  # the whole painted slice is object: nothing tells the background's intensities
    likelihoods = intensity_likelihoods(image, annotated & (label > 0), painted_background(label, annotated, 0))
    np.testing.assert_array_equal(likelihoods[0], likelihoods[1])
    np.testing.assert_allclose(IntensityEvidence.from_paint(image, label, annotated).update(probabilities), probabilities,
                               atol=1e-6)


def test_the_ring_keeps_the_background_sample_near_the_object():
    _, label, annotated, _ = _toy()
    near = painted_background(label, annotated, ring=1)
    assert near.sum() == 8 * 8 - 6 * 6 and not near[1].any()
    assert painted_background(label, annotated, ring=0).sum() == 12 * 12 - 6 * 6


def test_on_a_real_scan_the_update_keeps_the_paint_and_never_reaches_past_the_registration(sample_case):
    label = sample_case.label
    present = np.flatnonzero((label > 0).any(axis=(1, 2)))
    middle = int((present[0] + present[-1]) // 2)
    image = normalize(sample_case.image)
    registration = propagate_slices(image, label, [middle], 3, PropagationSettings())
    annotated = np.zeros(label.shape, bool)
    annotated[middle] = True
    gated = IntensityEvidence.from_paint(image, np.where(annotated, label, 0), annotated).update(registration)
    np.testing.assert_array_equal(gated.argmax(0)[middle], label[middle])
    reached = registration[0] < 1.0
    assert (gated[0][~reached] == 1.0).all()  # no voxel the registration did not reach becomes object
    changed = gated.argmax(0) != registration.argmax(0)
    assert changed.any() and (gated[0] != registration[0]).sum() > changed.sum()


def test_inside_the_chain_the_update_only_trims():
    """Inside the chain a grown rim would travel on and grow again (bright neighbours flood), so the chain's
    update never raises a voxel's object probability; the final gate may."""
    image, label, annotated, probabilities = _toy()
    refine = IntensityEvidence.from_paint(image, label, annotated).trim
    maps = probabilities[1:, 1].copy()
    maps[:, 4, 4] = [0.15, 0.05]  # bright but unsure: the final gate would raise it, the chain must not
    refined = refine(maps, 1)
    assert (refined.sum(0) <= maps.sum(0) + 1e-6).all()
    assert refined[:, 2, 2].sum() < 0.2 and abs(refined[:, 5, 5].sum() - 0.8) < 1e-5
    assert abs(refined[0, 5, 5] / refined[1, 5, 5] - 3.0) < 1e-4


def test_the_chain_refines_every_slice_it_reaches(sample_case):
    label = sample_case.label
    present = np.flatnonzero((label > 0).any(axis=(1, 2)))
    middle = int((present[0] + present[-1]) // 2)
    image = normalize(sample_case.image)
    seen = []

    def refine(maps, index):
        seen.append(index)
        return maps * 0.5

    halved = propagate_slices(image, label, [middle], 3, PropagationSettings(), refine=refine)
    assert sorted(seen) == [s for s in range(label.shape[0]) if s != middle]
    np.testing.assert_array_equal(halved.argmax(0)[middle], label[middle])
    assert halved[1:, middle + 1].sum() < propagate_slices(image, label, [middle], 3, PropagationSettings())[1:, middle + 1].sum()
