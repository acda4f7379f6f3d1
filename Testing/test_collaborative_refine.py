"""``collaborative`` with ``refine``: self-training rounds after the final stage, on the real sample scans."""

from __future__ import annotations

import numpy as np
import pytest

from SparseSegLib.annotation import annotate_case
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.base import SilentReporter
from SparseSegLib.methods.collaborative.branches import scan_of
from SparseSegLib.methods.collaborative.propagated import Propagated
from SparseSegLib.methods.collaborative.refine import refined_volume
from SparseSegLib.methods.collaborative.settings import CollaborativeSettings

#: Tiny stages so the file runs in seconds on two CPU cores.
TINY = dict(reg_iterations=15, reg_channels="4,8,16", semi_epochs=2, epoch_iterations=3, k1=1, k2=2, final_iterations=4)


def test_refined_targets_are_the_networks_labels_or_their_fusion_with_the_registration_and_keep_the_paint(sample_case):
    case = annotate_case(sample_case, "central-slice", 0)
    scan = scan_of(case, "zscore")
    rng = np.random.default_rng(1)
    network = rng.integers(0, 3, scan.image.shape).astype(np.uint8)
    carried = rng.integers(0, 3, scan.image.shape).astype(np.uint8)
    registration = Propagated(np.zeros((3,) + scan.image.shape, np.float32), carried)
    free = ~scan.labelled
    alone = refined_volume(network, scan, registration, CollaborativeSettings.parse({"fusion": "intersection"}))
    np.testing.assert_array_equal(alone.target[free], network[free])
    np.testing.assert_array_equal(alone.target[scan.labelled], scan.target[scan.labelled])
    fused = refined_volume(network, scan, registration,
                           CollaborativeSettings.parse({"fusion": "intersection", "refine_targets": "fused"}))
    agree = network == carried
    np.testing.assert_array_equal(fused.target[free & agree], network[free & agree])
    assert (fused.target[free & ~agree] == 0).all()  # intersection: object only where both see the same class
    np.testing.assert_array_equal(fused.target[scan.labelled], scan.target[scan.labelled])
    for bad, match in (({"refine": -1}, "refine"), ({"refine_targets": "semi"}, "refine_targets")):
        with pytest.raises(SparseSegError, match=match):
            CollaborativeSettings.parse(bad)


def test_a_cohort_model_with_a_refine_round_trains_new_networks_on_the_networks_labels(sample_dataset):
    cases = [annotate_case(sample_dataset.load(ref), "central-slice", 0) for ref in sample_dataset.cases[:2]]
    options = MethodOptions(device="cpu", iterations=4, batch_size=2,
                            extra=dict(TINY, registration="demons", demons_iterations=5, fusion="intersection",
                                       refine=1, postprocess="lcc"))
    segmenter = get_method("collaborative").train(cases, options, SilentReporter())
    (record,) = segmenter.training["refine"]
    assert record["changed_voxels"] > 0 and 0 < record["changed_fraction"] < 1
    assert segmenter.postprocess == "lcc"
    labels, probabilities = segmenter.predict(cases[0].image)
    assert labels.shape == cases[0].image.shape and probabilities.shape[0] == 3


def test_a_job_streams_a_refine_round_after_the_final_one_and_resumes_into_it(sample_case):
    case = annotate_case(sample_case, "central-slice", 0)
    method = get_method("collaborative")
    options = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2,
                            extra=dict(TINY, registration="demons", demons_iterations=5, refine=1, final_axes="0"))
    assert method.planned_rounds(case, options) == 3
    results = list(method.run_rounds([case], options, SilentReporter()))
    assert [r.metrics["step"] for r in results] == ["registration", "final", "refine"]
    final_labels = results[1].state["final_labels"].numpy()
    np.testing.assert_array_equal(final_labels, results[1].labels[case.case_id])  # painted along axis 0: same frame
    for result in results:
        np.testing.assert_array_equal(result.labels[case.case_id][case.annotated], case.label[case.annotated])
    resumed = list(method.run_rounds([case], options, SilentReporter(), state=results[1].state))
    assert [r.metrics["step"] for r in resumed] == ["refine"] and resumed[0].index == 3
    np.testing.assert_array_equal(resumed[0].labels[case.case_id], results[2].labels[case.case_id])  # seeded
    assert method.segmenter_from_state([case], options, results[2].state).network is not None
