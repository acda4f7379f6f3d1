"""``registration=propagate``: the registration branch as the single-scan default, run on each training volume.

The paper's registration branch is one network trained on neighbouring-slice pairs of the whole cohort; its chain
runs past the object's ends and carries whatever the first field got wrong (docs/results/collaborative.md). The
single-scan default (:mod:`SparseSegLib.methods.propagate`) is already a collaboration on one scan: demons
registration of the labelled slice, then a small network trained on *that* scan, fused with it where both agree,
open ends and anchoring at the paint. This runs it on every training volume from its labelled slices alone (the
issue's "registration trained on the scan being segmented") and hands on both its class probabilities and its own
labels (what it gives a user: thresholded, anchored at the paint, ends shaped), so the final network can learn from
either (the collaborative option ``propagate_targets``).

Volumes are independent, so they run in worker processes (one CPU thread each), which is what makes 64 volumes
take minutes rather than an hour on a small machine. Propagation is nearly all of the method's time, so a
``propagate_cache`` folder keeps each volume's result under a key of everything it depends on (image, labelled voxels,
options, seed, device type): a stopped job resumed, or a second run that changes only the final network, reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...case import Case
from ...engine.trainer import TrainingCancelled
from ...errors import SparseSegError
from ...jobs.atomic import atomic_path
from ..base import MethodOptions, Reporter, SilentReporter, get_method
from ..propagate.settings import PropagateSettings


class Propagated(NamedTuple):
    """One volume's registration-branch result: class probabilities ``(C, k, j, i)`` and, from the single-scan
    default, the labels it gives for them ``(k, j, i)`` (not their argmax: its object threshold, anchoring and end
    shaping are applied); None where the branch has no labels of its own."""

    probabilities: np.ndarray
    labels: np.ndarray | None


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
                  should_stop: Callable[[], bool] | None = None) -> tuple[str, Propagated, float]:
    """The single-scan default on one volume: its final round's class probabilities ``(C, k, j, i)`` and labels
    ``(k, j, i)``, and seconds.

    Top level (not a closure) so that a worker process can run it."""
    started = time.perf_counter()
    final = None
    method_options = MethodOptions(rounds=None, device=device, seed=seed, extra=dict(options))
    for result in get_method("propagate").run_rounds([case], method_options, SilentReporter(), should_stop=should_stop):
        final = result
    if final is None:
        raise SparseSegError(f"propagation of {case.case_id} returned no round", "Check the volume's labelled slices.")
    propagated = Propagated(final.probabilities[case.case_id].astype(np.float32),
                            final.labels[case.case_id].astype(np.uint8))
    return case.case_id, propagated, time.perf_counter() - started


def cache_key(case: Case, options: dict, seed: int, device: str) -> str:
    """What a volume's propagation depends on, hashed: the image, which voxels are labelled and their labels (nothing
    else of the label: that is hidden from the method), every ``propagate`` setting (those given and the defaults
    the rest take, so a release that changes a default does not read propagations made under the old one), seed
    and device type. A change to ``propagate``'s code with the same settings is not in the key: empty the folder
    after such an upgrade. (One code version on one machine gives the same propagation bit for bit, and so did the
    sixteenth and twenty-third sessions' code on ten hippocampus volumes; a cache filled in another environment,
    machine or libraries, gave cohort figures up to 1.4 points away: compare runs on one filling.)"""
    digest = hashlib.sha256()
    for array in (case.image, case.annotated, np.where(case.annotated, case.label, 0)):
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype}{contiguous.shape}".encode())
        digest.update(contiguous.tobytes())
    settings = asdict(PropagateSettings.parse(dict(options)))
    digest.update(json.dumps({"settings": settings, "seed": seed, "device": device}, sort_keys=True).encode())
    return digest.hexdigest()[:24]


class PropagationCache:
    """One ``.npz`` (probabilities and labels) per volume and key in ``folder``; written atomically
    (:func:`~SparseSegLib.jobs.atomic.atomic_path`), so a run killed while writing leaves no half file that a later
    run would trust."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SparseSegError(f"cannot create the propagation cache folder {self.folder}: {error}",
                                 "Give propagate_cache a folder you can write to.") from error

    def path(self, case_id: str, key: str) -> Path:
        return self.folder / f"{case_id}-{key}.npz"

    def load(self, case_id: str, key: str) -> Propagated | None:
        """The stored result, or None when there is none or it cannot be read (then it is propagated again)."""
        path = self.path(case_id, key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as stored:
                return Propagated(stored["probabilities"], stored["labels"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged outside this class (its own writes are atomic)
            return None

    def store(self, case_id: str, key: str, propagated: Propagated) -> None:
        with atomic_path(self.path(case_id, key), sync=False) as temporary:  # cheap to make again: no fsync
            with open(temporary, "wb") as handle:
                np.savez(handle, probabilities=propagated.probabilities.astype(np.float32),
                         labels=propagated.labels.astype(np.uint8))


def _one_thread() -> None:
    """Worker-process start: one torch thread each, so ``workers`` processes share the cores instead of fighting."""
    import torch

    torch.set_num_threads(1)


def propagate_cases(cases: list[Case], options: dict, seed: int, device: str, workers: int, reporter: Reporter,
                    stage: str, should_stop: Callable[[], bool] | None = None,
                    cache: PropagationCache | None = None) -> tuple[list[Propagated], dict]:
    """Probabilities and labels per case (in ``cases``' order) from the single-scan default, ``workers`` at a time;
    volumes found in ``cache`` are read, the others run and are added to it."""
    get_method("propagate").check_options(MethodOptions(extra=dict(options)))  # bad options fail before any work
    results: dict[str, Propagated] = {}
    keys: dict[str, str] = {}
    if cache is not None:
        keys = {case.case_id: cache_key(case, options, seed, device) for case in cases}
        found = {case_id: cache.load(case_id, key) for case_id, key in keys.items()}
        results = {case_id: array for case_id, array in found.items() if array is not None}
    todo = [case for case in cases if case.case_id not in results]
    workers = max(1, min(workers, len(todo) or 1))
    reporter.log(f"{stage}: the single-scan default (propagate{' ' + str(options) if options else ''}) on each of "
                 f"{len(todo)} volume(s), {workers} at a time"
                 + (f"; {len(results)} read from the cache {cache.folder}" if cache is not None else ""))
    seconds: list[float] = []
    started = time.perf_counter()

    def collect(case_id: str, propagated: Propagated, took: float) -> None:
        results[case_id] = propagated
        if cache is not None:
            cache.store(case_id, keys[case_id], propagated)
        seconds.append(took)
        rate = (time.perf_counter() - started) / len(seconds)
        reporter.log(f"{stage}: {len(seconds)}/{len(todo)} volumes propagated ({case_id} in {took:.0f} s; "
                     f"about {rate * (len(todo) - len(seconds)) / 60:.1f} min left)")

    if workers == 1:  # also when every volume came from the cache: nothing to run
        for case in todo:
            if should_stop is not None and should_stop():
                raise TrainingCancelled()
            collect(*propagate_one(case, options, seed, device, should_stop))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_one_thread) as pool:
            pending = {pool.submit(propagate_one, case, options, seed, device) for case in todo}
            while pending:
                done, pending = wait(pending, timeout=5.0, return_when=FIRST_COMPLETED)
                for future in done:
                    collect(*future.result())
                if should_stop is not None and should_stop():
                    pool.shutdown(wait=False, cancel_futures=True)  # volumes under way finish in the background
                    raise TrainingCancelled()
    record = {"volumes": len(cases), "workers": workers, "cached": len(cases) - len(todo),
              "seconds_per_volume": round(float(np.mean(seconds)), 1) if seconds else 0.0}
    return [results[case.case_id] for case in cases], record
