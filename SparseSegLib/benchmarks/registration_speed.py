"""How much the Start job's registration round gains from registering slice pairs in several processes.

The registration round registers every neighbouring slice pair the chain from the painted slice walks along (SimpleITK
demons with the Start defaults). The pairs are independent, so :func:`~SparseSegLib.engine.slice_registration.demons_fields`
can spread them over processes; ITK's own threads gain little on slices this small. This prints seconds for the same
pairs with ITK's default threads in one process, one ITK thread in one process, and 2, 4, ... processes, each checked
bit for bit against one process, on a left-atrium dev scan resampled to 240 x 240 x 155 (as ``start_speed``)::

    python -m SparseSegLib.benchmarks.registration_speed [--workers 1,2,4,8] [--pairs 48] [--dataset left_atrium]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import SimpleITK as sitk

from .interactive.scans import DATA_ROOT, central_slice, choose_scans
from .start_speed import SIZE_IJK, resampled


def main(argv: list[str] | None = None) -> int:
    from ..engine.preprocessing import normalize
    from ..engine.propagation import chain_pairs
    from ..engine.slice_registration import demons_fields
    from ..methods.propagate.settings import PropagateSettings

    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.registration_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="left_atrium", help="a data set under ../shared/data (default left_atrium)")
    parser.add_argument("--case", type=int, default=0, help="which of the data set's dev scans (default 0)")
    parser.add_argument("--workers", default="1,2,4,8", help="process counts to time (default 1,2,4,8; capped at the CPUs)")
    parser.add_argument("--pairs", type=int, default=0, help="time only the first N pairs (default 0: all of them)")
    args = parser.parse_args(argv)
    scan = choose_scans(DATA_ROOT / args.dataset, "dev", args.case + 1)[args.case]
    image = resampled(sitk.ReadImage(str(scan.image), sitk.sitkFloat32), SIZE_IJK, nearest=False)
    label = resampled(sitk.ReadImage(str(scan.label), sitk.sitkUInt8), SIZE_IJK, nearest=True)
    volume = normalize(sitk.GetArrayFromImage(image))
    middle = central_slice(sitk.GetArrayFromImage(label))
    pairs = chain_pairs([middle], volume.shape[0])
    pairs = pairs[:args.pairs] if args.pairs > 0 else pairs
    slices = [(volume[target], volume[source]) for source, target in pairs]
    settings = PropagateSettings()
    iterations, smoothing = settings.demons_iterations, settings.demons_smoothing
    cpus = os.cpu_count() or 1
    counts = sorted({min(int(w), cpus) for w in args.workers.split(",")} | {1})
    print(f"{len(pairs)} pairs of {volume.shape[1]} x {volume.shape[2]} slices ({scan.key} resampled to "
          f"{SIZE_IJK[0]}x{SIZE_IJK[1]}x{SIZE_IJK[2]}), demons {iterations} iterations, smoothing {smoothing}; "
          f"{cpus} CPUs")
    print("| run | seconds | speed-up over one process, one ITK thread | fields as one process |")
    print("|---|---|---|---|")
    default_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    started = time.perf_counter()
    reference = demons_fields(slices, iterations, smoothing, workers=1)
    print(f"| 1 process, ITK's default {default_threads} threads | {time.perf_counter() - started:.1f} | | |")
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    base = None
    for workers in counts:
        started = time.perf_counter()
        fields = demons_fields(slices, iterations, smoothing, workers=workers)
        seconds = time.perf_counter() - started
        base = base or seconds
        same = all(np.array_equal(a, b) for a, b in zip(fields, reference))
        label_text = "1 process, 1 ITK thread" if workers == 1 else f"{workers} processes, 1 ITK thread each"
        print(f"| {label_text} | {seconds:.1f} | {base / seconds:.2f}x | {'yes' if same else 'NO'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
