"""Save model for a collaborative job (the module's Save / Apply): the final network, across the painted axis."""

from __future__ import annotations

import numpy as np
import torch

from SparseSegLib.annotation import annotate_case
from SparseSegLib.errors import SparseSegError
from SparseSegLib.methods import get_method
from SparseSegLib.methods.base import MethodOptions, SilentReporter

TINY = dict(reg_iterations=15, reg_channels="4,8,16", semi_epochs=2, epoch_iterations=3, k1=1, k2=2, final_iterations=4,
            registration="demons", demons_iterations=5)


def test_a_saved_collaborative_model_segments_the_scan_as_the_final_round(sample_case):
    case = annotate_case(sample_case, "central-slice:2", 0)  # slices across i: the model must run across axis 2
    method = get_method("collaborative")
    options = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2, extra=dict(TINY))
    results = list(method.run_rounds([case], options, SilentReporter()))
    try:
        method.segmenter_from_state([case], options, results[0].state)
        raise AssertionError("a registration-only round has no network to save")
    except SparseSegError as error:
        assert "no trained network" in str(error)
    model = method.segmenter_from_state([case], options, results[-1].state)
    assert model.network_config.axes == (2, 0, 1)  # the default final_axes=0,1,2, mapped back from the painted frame
    applied, probabilities = model.predict(case.image)
    final = results[-1].probabilities[case.case_id]
    assert np.abs(probabilities - final).mean() < 0.02, np.abs(probabilities - final).mean()


def test_a_saved_model_of_a_job_with_final_axes_averages_its_networks_over_the_scans_own_axes(sample_case):
    """``final_axes=0,1,2`` in a job painted across axis 1: the saved ensemble maps each network of the painted
    frame back to the scan's axis it ran across (in-plane order included), so it gives the final round's result."""
    case = annotate_case(sample_case, "central-slice:1", 0)
    method = get_method("collaborative")
    options = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2,
                            extra=dict(TINY, branches="registration", final_axes="0,1,2"))
    results = list(method.run_rounds([case], options, SilentReporter()))
    assert [r.metrics["step"] for r in results] == ["registration", "final"]
    model = method.segmenter_from_state([case], options, results[-1].state)
    assert model.network_config.axes == (1, 0, 2) and model.network_config.swap_in_plane == (False, False, True)
    _, probabilities = model.predict(case.image)
    final = results[-1].probabilities[case.case_id]
    assert np.abs(probabilities - final).mean() < 0.02, np.abs(probabilities - final).mean()


def test_context_gives_every_network_neighbouring_slices_and_the_saved_model_keeps_them(sample_case):
    """``context=1``: the semi branch's and the final networks see 3 slices; Save model rebuilds that network."""
    case = annotate_case(sample_case, "central-slice", 0)
    method = get_method("collaborative")
    options = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2,
                            extra=dict(TINY, branches="both", final_axes="0,1", context=1))
    results = list(method.run_rounds([case], options, SilentReporter()))
    assert [r.metrics["step"] for r in results] == ["registration", "semi", "final"]
    model = method.segmenter_from_state([case], options, results[-1].state)
    assert model.network_config.context_slices == 1 and model.network_config.in_channels == 3
    _, probabilities = model.predict(case.image)
    assert np.abs(probabilities - results[-1].probabilities[case.case_id]).mean() < 0.02
    try:
        method.settings(MethodOptions(extra={"context": -1}))
        raise AssertionError("a negative context must be refused")
    except SparseSegError as error:
        assert "context" in str(error)


def test_final_seeds_train_several_networks_per_axis_and_the_saved_model_averages_them_all(sample_case):
    """``final_seeds=2, final_axes=0,1`` in a job painted across axis 1: four final networks, the second of each
    axis from another seed (different weights); Save model rebuilds all four on the scan's own axes and gives the
    final round's result. ``final_seeds=0`` is refused."""
    case = annotate_case(sample_case, "central-slice:1", 0)
    method = get_method("collaborative")
    options = MethodOptions(device="cpu", rounds=None, iterations=4, batch_size=2,
                            extra=dict(TINY, branches="registration", final_axes="0,1", final_seeds=2))
    results = list(method.run_rounds([case], options, SilentReporter()))
    model = method.segmenter_from_state([case], options, results[-1].state)
    assert model.network_config.axes == (1, 0, 1, 0)
    first, _, again, _ = model.network.members
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    _, probabilities = model.predict(case.image)
    assert np.abs(probabilities - results[-1].probabilities[case.case_id]).mean() < 0.02
    try:
        method.settings(MethodOptions(extra={"final_seeds": 0}))
        raise AssertionError("final_seeds=0 must be refused")
    except SparseSegError as error:
        assert "final_seeds" in str(error)
