"""``sparseseg train/bench --nproc N``: start torchrun on this machine with the same command.

The command line is run again as ``torchrun --standalone --nproc-per-node N -m SparseSegLib.cli ...`` (without
``--nproc``), through ``torch.distributed.run`` in this process, so the elastic agent watches the ranks: when one
fails or is killed it stops the others (they print why, see :mod:`.run`) and this launcher ends with one line
naming the rank that failed instead of torchrun's traceback. Each rank gets ``OMP_NUM_THREADS`` = cores / N unless
the caller set it, so N CPU processes do not oversubscribe the cores.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable

from ..errors import SparseSegError


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (what each rank runs)."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        if item == "--nproc":
            skip = True
            continue
        if item.startswith("--nproc="):
            continue
        kept.append(item)
    return kept


def torchrun_arguments(argv: list[str], nproc: int) -> list[str]:
    """The ``torch.distributed.run`` command line for ``argv`` (a ``sparseseg`` command) on ``nproc`` processes."""
    return ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "--monitor-interval=0.5",
            "--module", "SparseSegLib.cli", *strip_nproc(argv)]


def _describe_failures(error) -> tuple[str, int]:
    """One line for torchrun's ChildFailedError, and the exit code to end with (a rank's own code when it chose one)."""
    parts, code = [], 1
    failures = dict(getattr(error, "failures", {}))
    try:
        first, _ = error.get_first_failure()  # the cause; the others were stopped because of it
    except Exception:  # an older torch, or no failure recorded
        first = None
    order = sorted(failures, key=lambda rank: (rank != first, rank))
    for rank in order:
        failure = failures[rank]
        exitcode = int(getattr(failure, "exitcode", 1))
        if exitcode < 0:
            try:
                what = f"was killed by {signal.Signals(-exitcode).name}"
            except ValueError:
                what = f"was killed by signal {-exitcode}"
        else:
            what = f"exited with code {exitcode}"
            code = exitcode if exitcode in (2, 130) else code
        parts.append(f"rank {rank} {what}" + (" first" if rank == first and len(failures) > 1 else ""))
    return "; ".join(parts) or "a rank failed", code


def preflight(args) -> None:
    """Checks the launcher can make before starting any process: ``train`` with more processes than volumes."""
    if getattr(args, "command", None) != "train" or not args.nproc or args.nproc <= 1:
        return
    from ..cli_options import read_case_list
    from ..dataset import load_dataset
    from .context import LaunchError

    dataset = load_dataset(args.dataset, getattr(args, "channel", None))
    count = len(read_case_list(args.cases)) if args.cases else len(dataset.cases)
    if args.nproc > count:
        raise LaunchError(f"{args.nproc} processes for {count} training volumes: each rank needs at least one volume",
                          f"Start at most {count} processes (--nproc / --nproc-per-node).")


def launch(argv: list[str], nproc: int, entry: Callable[[list[str]], int]) -> int:
    """Run ``argv`` (the ``sparseseg`` arguments, ``--nproc`` included or not) on ``nproc`` local processes.

    ``entry`` is the command line's ``main``, run in this process for one process (passed in by the caller so
    that this module does not import the command line that imports it)."""
    if nproc < 1:
        raise SparseSegError(f"--nproc {nproc} starts no process", "Give --nproc 1 or more.")
    if os.environ.get("WORLD_SIZE") not in (None, "", "1") and "TORCHELASTIC_RUN_ID" in os.environ:
        raise SparseSegError("--nproc was given to a process that torchrun already started",
                             "Leave out --nproc when launching with torchrun yourself.")
    if nproc == 1:
        return entry(strip_nproc(argv))
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the summary below says it
    arguments = get_args_parser().parse_args(torchrun_arguments(argv, nproc))
    try:
        run(arguments)
    except ChildFailedError as error:
        summary, code = _describe_failures(error)
        print(f"sparseseg: error: the distributed run failed: {summary}. The other ranks were stopped; no model "
              "folder or results were written (a rank that failed with an error printed it above).", file=sys.stderr, flush=True)
        return code
    return 0
