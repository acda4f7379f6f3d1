"""How many objects a model keeps: ``lcc`` keeps as many of the largest components as its training labels hold
objects (``engine.postprocess.object_count``), so a label of two separate structures does not lose one.

The two-object scan is built from a real sample scan: the hippocampus crop next to its own mirror image along i,
as a left and a right hippocampus would lie (no such scan ships here)."""

from __future__ import annotations

import json

import numpy as np

from SparseSegLib.annotation import annotate_case
from SparseSegLib.case import Case, Geometry
from SparseSegLib.engine.model import CONFIG_FILE, load_segmenter
from SparseSegLib.engine.postprocess import largest_component, object_count, postprocess_labels
from SparseSegLib.methods import get_method
from SparseSegLib.methods.base import MethodOptions, SilentReporter

QUICK = {"iterations": 40, "batch_size": 4}


def blobs() -> np.ndarray:
    """Three separate cubes of 27, 8 and 1 voxels."""
    labels = np.zeros((8, 8, 12), np.uint8)
    labels[0:3, 0:3, 0:3] = 1
    labels[5:7, 5:7, 5:7] = 1
    labels[0, 7, 11] = 1
    return labels


def test_largest_components_keeps_as_many_as_asked():
    foreground = blobs() > 0
    assert largest_component(foreground).sum() == 27
    assert largest_component(foreground, 2).sum() == 35
    assert largest_component(foreground, 5).sum() == 36
    assert largest_component(foreground, 0).sum() == 27  # a count under 1 (a hand-edited config) keeps one object
    anchor = np.zeros(foreground.shape, bool)
    assert largest_component(foreground, 1, anchor).sum() == 27  # nothing known: the count decides
    anchor[5, 5, 5] = anchor[0, 7, 11] = True  # known object in the small cube and the single voxel
    assert largest_component(foreground, 1, anchor).sum() == 9  # the parts holding it, not the largest
    probabilities = np.stack([1.0 - foreground, foreground]).astype(np.float32)
    assert postprocess_labels(blobs(), probabilities, "lcc-fill", objects=2).sum() == 35
    assert postprocess_labels(blobs(), probabilities, "lcc-fill").sum() == 27  # one object unless told otherwise


def test_object_count_counts_parts_holding_a_share_and_takes_the_median():
    two = blobs()  # 27 and 8 voxels (8 / 36 = 22%) and a stray voxel (3%)
    one = np.zeros_like(two)
    one[0:4, 0:4, 0:4] = 1
    one[7, 7, 11] = 2  # a 1-voxel stray part of another class: 1.5% of the foreground
    assert object_count([two]) == 2 and object_count([one]) == 1
    assert object_count([two, two, one]) == 2 and object_count([two, one, one]) == 1
    assert object_count([np.zeros_like(two)]) == 1 and object_count([]) == 1
    gap = np.zeros((1, 1, 10), np.int16)
    gap[0, 0, :4] = gap[0, 0, 5:] = 1
    assert object_count([gap]) == 2  # a background voxel splits the object in two
    gap[0, 0, 4] = -1
    assert object_count([gap]) == 1  # an undecided voxel (-1, a pseudo-label left out) does not


def both_sides(case: Case) -> Case:
    """``case`` next to its mirror image along i: two separate structures in one scan (label and annotation too)."""
    def double(array):
        return None if array is None else np.concatenate([array, array[:, :, ::-1]], axis=2)

    size = (case.image.shape[2] * 2, case.image.shape[1], case.image.shape[0])
    geometry = Geometry(size=size, spacing=case.geometry.spacing)
    return Case(case.case_id, double(case.image), geometry, double(case.label), double(case.annotated),
                dict(case.class_names), dict(case.class_colors))


def painted_centre(case: Case) -> Case:
    """The object's central slice along k painted whole (the ``slices:1`` annotation, as the interactive user)."""
    return annotate_case(case, "slices:1", 0)


def halves_hold_object(labels: np.ndarray) -> tuple[bool, bool]:
    middle = labels.shape[2] // 2
    return bool((labels[:, :, :middle] > 0).any()), bool((labels[:, :, middle:] > 0).any())


def test_a_start_job_on_two_structures_saves_a_model_that_keeps_both(sample_case, tmp_path):
    """The Start default (``propagate``) on a scan with two structures painted on one slice: its result holds both,
    and the model Save writes keeps two components (it kept one, the larger, before); a model saved before the
    count was stored reads as one."""
    from SparseSegLib.methods.propagate.model import segmenter_from_state

    case = painted_centre(both_sides(sample_case))
    options = MethodOptions(device="cpu", extra=dict(QUICK), rounds=None)
    final = list(get_method("propagate").run_rounds([case], options, SilentReporter()))[-1]
    assert halves_hold_object(final.labels[case.case_id]) == (True, True)
    assert final.state["objects"] == 2
    model = segmenter_from_state(case, options, final.state)
    assert model.objects == 2
    model.save(tmp_path / "model")
    loaded = load_segmenter(tmp_path / "model")
    assert loaded.objects == 2
    labels, _ = loaded.predict(case.image)
    assert halves_hold_object(labels) == (True, True)
    config = json.loads((tmp_path / "model" / CONFIG_FILE).read_text())
    del config["objects"]  # a model saved before the count was stored
    (tmp_path / "model" / CONFIG_FILE).write_text(json.dumps(config))
    assert load_segmenter(tmp_path / "model").objects == 1
    one = list(get_method("propagate").run_rounds([painted_centre(sample_case)], options, SilentReporter()))[-1]
    assert one.state["objects"] == 1  # one hippocampus: one object, as before


def test_a_collaborative_job_counts_both_structures_and_its_saved_model_keeps_the_count(sample_case):
    """The collaborative job's final round post-processes as the cohort model does: with both structures painted,
    its targets count two objects, the round keeps that many components and the model it saves stores the count.
    (A network trained this briefly predicts too little to check the round's labels themselves; the painted slice
    alone already holds both.)"""
    tiny = dict(reg_iterations=15, reg_channels="4,8,16", semi_epochs=2, epoch_iterations=3, k1=1, k2=2,
                final_iterations=4, registration="demons", demons_iterations=5, branches="registration",
                final_axes="0", prediction_threshold="0")
    case = painted_centre(both_sides(sample_case))
    method = get_method("collaborative")
    options = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2, extra=tiny)
    results = list(method.run_rounds([case], options, SilentReporter()))
    assert results[-1].state["objects"] == 2
    assert method.segmenter_from_state([case], options, results[-1].state).objects == 2

