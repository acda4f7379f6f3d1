"""Did a refactor change any arithmetic? Train every method briefly on the bundled sample and print a digest of
the weights it saved.

On the CPU a seeded run is deterministic, so two checkouts that print the same digests train bit-identical
networks and reproduce every benchmark figure exactly; a different digest names the method to look at. Each run is
``sparseseg train`` in a child process whose ``PYTHONPATH`` is the checkout given (``--root``)::

    git worktree add /tmp/before HEAD~1
    OMP_NUM_THREADS=1 python -m SparseSegLib.benchmarks.training_digests --root /tmp/before --out /tmp/digests-before
    OMP_NUM_THREADS=1 python -m SparseSegLib.benchmarks.training_digests --root . --out /tmp/digests-after
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

#: Short runs that still pass through every method's training stages (iterations are the CLI's totals).
RUNS: dict[str, list[str]] = {
    "full-2d": ["--method", "full", "--network", "2d", "--iterations", "12"],
    "full-3d": ["--method", "full", "--network", "3d", "--iterations", "6"],
    "sparse-only": ["--method", "sparse-only", "--network", "2d", "--iterations", "12"],
    "gradual": ["--method", "gradual", "--network", "2d", "--iterations", "24"],
    "self-labelling": ["--method", "self-labelling", "--iterations", "60"],
    "self-labelling-faithful": ["--method", "self-labelling-faithful", "--iterations", "60"],
    "mean-teacher": ["--method", "mean-teacher", "--iterations", "6"],
    "ua-mt": ["--method", "ua-mt", "--iterations", "6"],
    "collaborative": ["--method", "collaborative", "--iterations", "12"],
    "collaborative-faithful": ["--method", "collaborative-faithful", "--iterations", "12"],
}


def digest_of(folder: Path) -> tuple[int, str]:
    """How many ``.pt`` files the model folder holds and a sha256 over all their tensors (keys sorted)."""
    import torch

    hasher = hashlib.sha256()

    def add(value) -> None:
        if isinstance(value, torch.Tensor):
            hasher.update(value.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                add(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                add(item)

    files = sorted(folder.rglob("*.pt"))
    for path in files:
        add(torch.load(path, map_location="cpu", weights_only=False))
    return len(files), hasher.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SparseSegLib.benchmarks.training_digests",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="the checkout whose SparseSegLib trains (default: this one)")
    parser.add_argument("--out", required=True, help="a new folder for the model folders")
    parser.add_argument("methods", nargs="*", help=f"runs to do (default all: {', '.join(RUNS)})")
    args = parser.parse_args(argv)
    root, out = Path(args.root).resolve(), Path(args.out).resolve()
    unknown = [m for m in args.methods if m not in RUNS]
    if unknown:
        parser.error(f"unknown run(s) {', '.join(unknown)}; choose from {', '.join(RUNS)}")
    if out.exists():
        parser.error(f"{out} exists; give a new folder")
    data = root / "Resources" / "SampleData" / "hippocampus"
    failed = 0
    for name in args.methods or list(RUNS):
        command = [sys.executable, "-c", "import sys; from SparseSegLib.cli import main; sys.exit(main())", "train",
                   "--dataset", str(data), "--out", str(out / name), "--device", "cpu", "--seed", "0", *RUNS[name]]
        done = subprocess.run(command, capture_output=True, text=True, cwd=root,
                              env={**os.environ, "PYTHONPATH": str(root)})
        if done.returncode:
            failed += 1
            print(f"{name:24s} FAILED: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
            continue
        count, digest = digest_of(out / name)
        print(f"{name:24s} {count} file(s) {digest}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
