"""How long Start takes on a brain-MRI-sized scan (240 x 240 x 155): time to the first and the final streamed round.

The target of issue 19 is a first result within 60 s and the final one within 5 minutes on 2 CPU cores. No such
scan ships here, so a real scan from ``../shared/data`` is resampled (SimpleITK, linear for the image, nearest for
the label) onto a 240 x 240 x 155 grid covering the same physical extent, its central slice along k is painted
(all classes and background) and the exact Start job (``SparseSegLib.defaults``) runs as a real worker process,
with torch's default threads unless ``--threads`` is given. Prints one table: seconds to each round as the user
sees it (from pressing Start, worker start-up included), the worker's own seconds per round and the Dice per round,
then the worker's peak resident memory (what a user's RAM must hold beside Slicer)::

    python -m SparseSegLib.benchmarks.start_speed [--dataset left_atrium --case 0] [--threads 2] [--size 240,240,155] \\
        [--option KEY=VALUE] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .interactive.scans import DATA_ROOT, central_slice, choose_scans

SIZE_IJK = (240, 240, 155)


def resampled(image: sitk.Image, size_ijk: tuple[int, int, int], nearest: bool) -> sitk.Image:
    """``image`` on a grid of ``size_ijk`` voxels over the same physical extent (same origin and direction)."""
    spacing = [old * n / new for old, n, new in zip(image.GetSpacing(), image.GetSize(), size_ijk)]
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, list(size_ijk), sitk.Transform(), interpolator, image.GetOrigin(), spacing,
                         image.GetDirection(), 0, image.GetPixelID())


def peak_child_memory_mib() -> float | None:
    """The largest resident set (MiB) of any finished child process of this one: the worker, whose registration
    processes are far smaller. None where the platform does not say (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def main(argv: list[str] | None = None) -> int:
    from ..cli_options import parse_options
    from ..defaults import START_METHOD, start_parameters
    from ..jobs.client import Job
    from ..metrics import binary_metrics

    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.start_speed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="left_atrium", help="a data set under ../shared/data (default left_atrium)")
    parser.add_argument("--case", type=int, default=0, help="which of the data set's dev scans (default 0)")
    parser.add_argument("--threads", type=int, help="CPU threads for the worker (default: torch's choice)")
    parser.add_argument("--device", default=None, help="the job's device (default auto, as the module: cuda > mps > cpu)")
    parser.add_argument("--out", type=Path, help="keep the job folder here (default: a temporary folder)")
    parser.add_argument("--size", default=",".join(map(str, SIZE_IJK)), metavar="I,J,K",
                        help="the grid the scan is resampled onto (default 240,240,155; e.g. 512,512,300 for a CT)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a method option over the Start defaults (e.g. network_max_pixels=65536)")
    args = parser.parse_args(argv)
    size = tuple(int(n) for n in args.size.split(","))
    if len(size) != 3 or min(size) < 8:
        parser.error("--size takes three sizes of at least 8, e.g. 512,512,300")
    scan = choose_scans(DATA_ROOT / args.dataset, "dev", args.case + 1)[args.case]
    image = resampled(sitk.ReadImage(str(scan.image), sitk.sitkFloat32), size, nearest=False)
    label_image = resampled(sitk.ReadImage(str(scan.label), sitk.sitkUInt8), size, nearest=True)
    reference = sitk.GetArrayFromImage(label_image)
    middle = central_slice(reference)
    painted = np.zeros_like(reference)
    painted[middle] = reference[middle]
    folder = Path(args.out or tempfile.mkdtemp(prefix="sparseseg-speed-")) / "job"
    inputs = folder.parent / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    painted_image = sitk.GetImageFromArray(painted)
    painted_image.CopyInformation(label_image)
    sitk.WriteImage(image, str(inputs / "image.nrrd"))
    sitk.WriteImage(painted_image, str(inputs / "painted.nrrd"))
    parameters = start_parameters()
    if args.threads:
        parameters["threads"] = int(args.threads)
    if args.option:
        parameters["method_options"] = {**parameters.get("method_options", {}), **parse_options(args.option)}
    job = Job.create_from_files(folder, inputs / "image.nrrd", inputs / "painted.nrrd", START_METHOD,
                                region={"kind": "slices", "axis": "auto"}, parameters=parameters,
                                device=args.device or "auto")
    pressed = time.perf_counter()
    job.start()
    seen: dict[int, float] = {}
    while job.is_running():
        for event in job.poll():
            if event.get("event") == "round":
                seen[int(event["round"])] = time.perf_counter() - pressed
        time.sleep(0.1)
    for event in job.poll():
        if event.get("event") == "round":
            seen[int(event["round"])] = time.perf_counter() - pressed
    outcome = job.wait(timeout=30)
    if outcome.status != "finished":
        print(f"the job did not finish: {outcome.message}", file=sys.stderr)
        return 1
    spacing = tuple(reversed(image.GetSpacing()))
    print(f"Start on {scan.key} resampled to {size[0]}x{size[1]}x{size[2]} (i x j x k), central slice "
          f"{middle} painted; method {START_METHOD}, device {args.device or 'auto'} (as asked), "
          f"threads {args.threads or 'default'}" + (f", options {' '.join(args.option)}" if args.option else ""))
    print("| round | step | seen after Start (s) | worker seconds | Dice | RAVD |")
    print("|---|---|---|---|---|---|")
    for index in job.complete_rounds():
        data = job.load_round(index, probabilities=False)
        figures = binary_metrics(data.label > 0, reference > 0, spacing)
        metrics = data.record.get("training") or {}
        print(f"| {index} | {metrics.get('step', '')} | {seen.get(index, float('nan')):.1f} | "
              f"{metrics.get('seconds', float('nan'))} | {figures['dice']:.3f} | {figures['ravd']:+.2f} |")
    peak = peak_child_memory_mib()
    scan_mib = np.prod(size) * 4 / 2**20
    print(f"worker peak memory (resident): {'not measured here' if peak is None else f'{peak:.0f} MiB'} "
          f"(the scan as float32: {scan_mib:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
