"""Every method's job and cohort path, briefly, on one device: does each finish there, and in how many seconds.

The paths that only a GPU (or a Mac) exercises are where device bugs hide: a tensor left on the CPU beside a
network on the GPU, weights made inference tensors by a prediction and then trained again, optimizer state
resumed beside the wrong device (docs/results/interactive.md, "Twenty-sixth session"). The CPU machines this
project is built on never run them, so this runs each path for a few iterations as a user would reach it, through
the ``sparseseg`` command line as real processes, on the bundled sample scans (no ``../shared`` needed):

- one-scan jobs (the Slicer module's worker): the Start default, each method with two rounds (the second round
  trains again after the first predicted), and a Continue with a newly painted slice (resumed optimizer state);
- cohorts (``sparseseg train``): self-labelling with its held-out validation scans, collaborative, Mean Teacher;
- ``sparseseg predict`` with a cohort model.

Prints one row per path (finished or the error's last line, seconds) and exits non-zero if any failed::

    python -m SparseSegLib.benchmarks.device_paths --device cuda [--iterations 20] [--out DIR] [--only NAME ...]

It is a check, not a figure: the iterations are far too few for a useful segmentation. On the CPU it runs in a few
minutes (``--device cpu``), which is how it is kept working between GPU sessions.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "SampleData" / "hippocampus"
CASE = "hippocampus_001"


def painted_files(folder: Path) -> tuple[Path, Path, Path]:
    """The sample scan, its central slice painted (a user's first Start), and that slice plus one more (a Continue)."""
    label = sitk.ReadImage(str(SAMPLE / "labelsTr" / f"{CASE}.nii.gz"))
    reference = sitk.GetArrayFromImage(label)
    present = np.flatnonzero((reference > 0).any(axis=(1, 2)))
    first, second = int(present[len(present) // 2]), int(present[len(present) // 4])
    paths = []
    for name, slices in (("painted", [first]), ("corrected", [first, second])):
        painted = np.zeros_like(reference)
        painted[slices] = reference[slices]
        image = sitk.GetImageFromArray(painted)
        image.CopyInformation(label)
        paths.append(folder / f"{name}.nrrd")
        sitk.WriteImage(image, str(paths[-1]))
    return SAMPLE / "imagesTr" / f"{CASE}.nii.gz", paths[0], paths[1]


def checks(out: Path, device: str, iterations: int) -> list[tuple[str, list[str]]]:
    """``(name, sparseseg arguments)`` for every path, in the order they must run (a Continue after its job)."""
    image, painted, corrected = painted_files(out)
    common = ["--device", device, "--iterations-per-round", str(iterations)]

    def job(name: str, *arguments: str) -> tuple[str, list[str]]:
        return name, ["run", "--image", str(image), "--annotation", str(painted), "--out", str(out / name),
                      *arguments, *common]

    def cohort(name: str, method: str, *arguments: str) -> tuple[str, list[str]]:
        return name, ["train", "--dataset", str(SAMPLE), "--method", method, "--out", str(out / name),
                      "--device", device, "--iterations", str(iterations), *arguments]

    cases = out / "cases.txt"  # collaborative propagates every training scan with the Start default: three of them
    cases.write_text("".join(f"{path.name.split('.')[0]}\n" for path in sorted((SAMPLE / "imagesTr").iterdir())[:3]))
    # cheapest first, so that a device call that runs out of time has checked the most paths
    return [
        job("self-labelling", "--method", "self-labelling", "--rounds", "2"),
        job("self-labelling-faithful", "--method", "self-labelling-faithful", "--rounds", "2"),
        ("self-labelling-faithful-continue",  # a Continue keeps the job's device and settings
         ["run", str(out / "self-labelling-faithful"), "--continue", "--annotation", str(corrected),
          "--out", str(out / "self-labelling-faithful-stage-2"), "--rounds", "1"]),
        job("sparse-only", "--method", "sparse-only", "--rounds", "2"),
        job("gradual-volume", "--method", "gradual", "--rounds", "2", "--option", "predict=volume"),
        job("mean-teacher", "--method", "mean-teacher", "--rounds", "2"),
        job("ua-mt", "--method", "ua-mt", "--rounds", "2"),
        cohort("train-self-labelling", "self-labelling", "--option", "max_rounds=2"),  # 12 scans: validation held out
        ("predict-self-labelling",
         ["predict", "--model", str(out / "train-self-labelling"), "--input", str(image),
          "--out", str(out / "predicted"), "--device", device]),
        cohort("train-mean-teacher", "mean-teacher", "--network", "3d", "--labelled", "3", "--annotation", "full"),
        job("start-default"),
        job("collaborative", "--method", "collaborative"),
        cohort("train-collaborative", "collaborative", "--cases", str(cases)),
    ]


def _stop_group(process: subprocess.Popen) -> None:
    """Stop ``process`` and everything in its session (SIGTERM, then SIGKILL after 10 s; Windows: the process)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except (AttributeError, ProcessLookupError):
        process.terminate()
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (AttributeError, ProcessLookupError):
            process.kill()
        process.communicate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.device_paths",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, mps or cpu")
    parser.add_argument("--iterations", type=int, default=20, help="training iterations per round (default 20)")
    parser.add_argument("--out", type=Path, help="keep the jobs here (default: a temporary folder)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these paths (and nothing they need)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per path (default 300)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = args.out or Path(tempfile.mkdtemp(prefix="sparseseg-device-"))
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    print(f"| path ({args.device}, {args.iterations} iterations) | outcome | seconds |")
    print("|---|---|---|")
    for name, arguments in checks(out, args.device, args.iterations):
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        # a session of its own: a path over its time is stopped with every process it started (registration pools)
        process = subprocess.Popen([sys.executable, "-m", "SparseSegLib.cli", *arguments], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=args.timeout)
            lines = [line for line in output.splitlines() if line.strip()]
            code = process.returncode
            outcome = "finished" if code == 0 else f"exit {code}: {lines[-1] if lines else ''}"
        except subprocess.TimeoutExpired:
            _stop_group(process)
            outcome = f"over {args.timeout:g} s"
        except BaseException:  # Ctrl-C, or the SIGTERM of an outer `timeout` (gpu_check.sh): not one orphan left
            _stop_group(process)
            raise
        failed += outcome != "finished"
        print(f"| {name} | {outcome.replace('|', '/')[:200]} | {time.perf_counter() - started:.1f} |", flush=True)
        (out / f"{name}.log").write_text(" ".join(arguments) + "\n" + (outcome if outcome != "finished" else ""))
    print(f"{failed} failed; jobs and logs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
