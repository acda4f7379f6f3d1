"""``registration=propagate``: the registration branch as the single-scan default, run on each training volume.

The paper's registration branch is one network trained on neighbouring-slice pairs of the whole cohort; its chain
runs past the object's ends and carries whatever the first field got wrong (docs/results/collaborative.md). The
single-scan default (:mod:`SparseSegLib.methods.propagate`) is already a collaboration on one scan: demons
registration of the labelled slice, then a small network trained on *that* scan, fused with it where both agree,
open ends and anchoring at the paint. This runs it on every training volume from its labelled slices alone (the
issue's "registration trained on the scan being segmented") and hands its class probabilities to the fusion.

Volumes are independent, so they run in worker processes (one CPU thread each), which is what makes 64 volumes
take minutes rather than an hour on a small machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context

import numpy as np

from ...case import Case
from ...engine.trainer import TrainingCancelled
from ...errors import SparseSegError
from ..base import MethodOptions, Reporter, SilentReporter, get_method


def propagation_workers(requested: int, device: str) -> int:
    """Processes to run volumes in: ``requested``, else one per CPU core this process may use (one on a GPU,
    which the processes would otherwise share); ``device`` is a torch device type."""
    if requested > 0:
        return requested
    if device != "cpu":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def propagate_one(case: Case, options: dict, seed: int, device: str,
                  should_stop: Callable[[], bool] | None = None) -> tuple[str, np.ndarray, float]:
    """The single-scan default on one volume: its final round's class probabilities ``(C, k, j, i)`` and seconds.

    Top level (not a closure) so that a worker process can run it."""
    started = time.perf_counter()
    final = None
    method_options = MethodOptions(rounds=None, device=device, seed=seed, extra=dict(options))
    for result in get_method("propagate").run_rounds([case], method_options, SilentReporter(), should_stop=should_stop):
        final = result
    if final is None:
        raise SparseSegError(f"propagation of {case.case_id} returned no round", "Check the volume's labelled slices.")
    return case.case_id, final.probabilities[case.case_id].astype(np.float32), time.perf_counter() - started


def _one_thread() -> None:
    """Worker-process start: one torch thread each, so ``workers`` processes share the cores instead of fighting."""
    import torch

    torch.set_num_threads(1)


def propagate_cases(cases: list[Case], options: dict, seed: int, device: str, workers: int, reporter: Reporter,
                    stage: str, should_stop: Callable[[], bool] | None = None) -> tuple[list[np.ndarray], dict]:
    """Class probabilities per case (in ``cases``' order) from the single-scan default, ``workers`` at a time."""
    get_method("propagate").check_options(MethodOptions(extra=dict(options)))  # bad options fail before any work
    workers = max(1, min(workers, len(cases)))
    reporter.log(f"{stage}: the single-scan default (propagate{' ' + str(options) if options else ''}) on each of "
                 f"{len(cases)} volume(s), {workers} at a time")
    results: dict[str, np.ndarray] = {}
    seconds: list[float] = []
    started = time.perf_counter()

    def collect(case_id: str, probabilities: np.ndarray, took: float) -> None:
        results[case_id] = probabilities
        seconds.append(took)
        rate = (time.perf_counter() - started) / len(results)
        reporter.log(f"{stage}: {len(results)}/{len(cases)} volumes propagated ({case_id} in {took:.0f} s; "
                     f"about {rate * (len(cases) - len(results)) / 60:.1f} min left)")

    if workers == 1:
        for case in cases:
            if should_stop is not None and should_stop():
                raise TrainingCancelled()
            collect(*propagate_one(case, options, seed, device, should_stop))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
            pending = {pool.submit(propagate_one, case, options, seed, device) for case in cases}
            while pending:
                done, pending = wait(pending, timeout=5.0, return_when=FIRST_COMPLETED)
                for future in done:
                    collect(*future.result())
                if should_stop is not None and should_stop():
                    pool.shutdown(wait=False, cancel_futures=True)  # volumes under way finish in the background
                    raise TrainingCancelled()
    record = {"volumes": len(cases), "workers": workers, "seconds_per_volume": round(float(np.mean(seconds)), 1)}
    return [results[case.case_id] for case in cases], record
