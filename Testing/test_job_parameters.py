"""A job's own training parameters reach the methods that have settings of their own (``propagate``, Mean Teacher).

``sparseseg run --iterations-per-round/--batch-size`` and the module's fields set the job's parameters, and the worker
halves the batch (then the patch) after running out of GPU memory. ``propagate`` used to ignore all three, so a
user's iterations changed nothing and the out-of-memory retry ran the same batch again."""

from __future__ import annotations

from dataclasses import replace

from SparseSegLib.jobs import layout
from SparseSegLib.jobs.events import read_events
from SparseSegLib.methods import MethodOptions, get_method
from SparseSegLib.methods.propagate.settings import PropagateSettings, job_settings
from SparseSegLib.worker.memory import reduce_memory

from worker_support import new_job


def test_the_jobs_iterations_batch_and_patch_fill_what_the_method_options_leave_unset():
    defaults = PropagateSettings()
    assert job_settings(MethodOptions(rounds=None)) == defaults  # the Start button sets none of them
    asked = job_settings(MethodOptions(rounds=None, iterations_per_round=20, batch_size=4, patch_size=(70, 96)))
    assert (asked.iterations, asked.batch_size, asked.patch) == (20, 4, 64)  # the patch: a multiple of 8
    assert job_settings(MethodOptions(rounds=None, iterations=50)).iterations == 50  # a total, for a one-stage job
    named = job_settings(MethodOptions(rounds=None, iterations_per_round=20, batch_size=4,
                                       extra={"iterations": 99, "batch_size": 2}))
    assert (named.iterations, named.batch_size) == (99, 2)  # a method option names the value: it wins


def test_out_of_memory_halves_the_batch_propagate_trains_with_then_its_patch():
    method = get_method("propagate")
    options = MethodOptions(rounds=None)
    halved, change = reduce_memory(options, (35, 51, 35), method)
    assert change == "batch size 8 -> 4" and job_settings(halved).batch_size == 4
    smaller, change = reduce_memory(MethodOptions(rounds=None, batch_size=1), (35, 51, 35), method)
    assert change == "patch size (128, 128) -> (64, 64)" and job_settings(smaller).patch == 64


def test_a_start_job_honours_its_iterations_and_retries_out_of_memory_with_half_propagates_batch(tmp_path,
                                                                                                  sample_case):
    # No GPU here: the worker's test hook raises torch.OutOfMemoryError at the first poll (SPARSESEG_TEST_FAULT)
    job = new_job(tmp_path / "job", sample_case, method="propagate", rounds=None, iterations_per_round=3,
                  batch_size=None, budget="paper")
    job.start(env={"SPARSESEG_TEST_FAULT": "oom-once"})
    outcome = job.wait(timeout=300)
    assert outcome.status == "finished", outcome.message
    events = read_events(tmp_path / "job" / layout.EVENTS_FILE)
    warnings = [e for e in events if e["event"] == "warning" and "out of GPU memory" in e["message"]]
    assert len(warnings) == 1 and "batch size 8 -> 4" in warnings[0]["hint"]
    trained = [e["message"] for e in events if e["event"] == "log" and "iterations, batch" in e.get("message", "")]
    assert trained and all("3 iterations, batch 4," in message for message in trained), trained
    # propagate has no budget: a job that asks for one is told so (the module shows warnings), once per stage
    budget = [e for e in events if e["event"] == "warning" and "no training budget" in e["message"]]
    assert len(budget) == 2 and "3 iterations per stage" in budget[0]["hint"]  # the first try, then the retry


def test_propagate_refuses_a_3d_network_instead_of_ignoring_it():
    import pytest

    from SparseSegLib.errors import SparseSegError

    method = get_method("propagate")
    method.check_options(MethodOptions(network="2d"))
    with pytest.raises(SparseSegError, match="trains 2D networks") as raised:
        method.check_options(MethodOptions(network="3d"))
    assert "Set Network to 2d" in raised.value.hint


def test_mean_teacher_splits_the_runs_batch_and_its_out_of_memory_retry_halves_it():
    from SparseSegLib.methods.mean_teacher.settings import MeanTeacherSettings, run_settings

    reference = MeanTeacherSettings()
    assert run_settings(MethodOptions(rounds=None)) == reference  # 2 labelled + 2 unlabelled, the reference's
    three = run_settings(MethodOptions(rounds=None, batch_size=3))
    assert (three.labelled_batch, three.unlabelled_batch) == (2, 1)
    named = run_settings(MethodOptions(rounds=None, batch_size=3, extra={"labelled_batch": 4}))
    assert (named.labelled_batch, named.unlabelled_batch) == (4, reference.unlabelled_batch)
    halved, change = reduce_memory(MethodOptions(rounds=None, network="3d"), (35, 51, 35), get_method("ua-mt"))
    after = run_settings(halved)
    assert change == "batch size 4 -> 2" and (after.labelled_batch, after.unlabelled_batch) == (1, 1)


def test_mean_teachers_retry_from_one_patch_halves_its_own_networks_window_not_the_presets(sample_case):
    """The bench's ``--network 2d`` preset is not Mean Teacher's network: the halved window must have the method's
    own dimensions and multiple, and must not grow past a small volume (hippocampus_001: 35x51x35 voxels)."""
    from SparseSegLib.methods.mean_teacher import default_patch
    from SparseSegLib.methods.mean_teacher.data import prepare
    from SparseSegLib.methods.mean_teacher.network import network_config
    from SparseSegLib.methods.mean_teacher.settings import run_settings

    one = MethodOptions(rounds=None, network="2d", budget="paper", batch_size=1)
    smaller, change = reduce_memory(one, sample_case.image.shape, get_method("ua-mt"))
    assert change == "patch size (80, 112, 112) -> (32, 48, 48)", change  # halved, kept to multiples of 16
    settings = run_settings(smaller)
    multiple = network_config(settings.channels, settings.num_res_units, settings.dims).size_multiple
    volume = prepare(sample_case, settings, smaller.normalization)
    patch = default_patch([volume], smaller, multiple, settings.dims)
    rounded = tuple(-(-n // multiple) * multiple for n in volume.image.shape)
    assert patch == tuple(min(p, r) for p, r in zip((32, 48, 48), rounded))  # never larger than the volume needs
    assert default_patch([volume], MethodOptions(patch_size=(160, 160, 160)), multiple, 3) == rounded
    flat, change = reduce_memory(replace(one, extra={"dims": 2}), sample_case.image.shape, get_method("mean-teacher"))
    assert change == "patch size (112, 112) -> (48, 48)", change  # the 2D form: two in-plane sizes
