"""Who this process is in a ``torchrun`` launch, and the process group it joins.

``torchrun`` (``torch.distributed.run``) starts one process per device and tells each its place through
environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). When
``WORLD_SIZE`` is unset or 1 nothing here is active and every caller keeps its one-process path unchanged
(:func:`current` returns None), so a plain ``sparseseg train`` computes exactly what it always did.

The backend follows the device: NCCL when the ranks train on CUDA, gloo on the CPU. The process group gets a
timeout (``SPARSESEG_DIST_TIMEOUT`` seconds, default 1800) so that a rank that stops answering ends the others'
collectives with an error instead of a hang.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SparseSegError

#: Methods whose training is data-parallel (the others refuse under torchrun, see :func:`check_method`).
SUPPORTED_METHODS = ("full", "sparse-only", "self-labelling", "self-labelling-faithful", "self-labelling-random")

#: How ranks draw their share of a batch: ``rank`` (each rank its own stream, seeded from the run's seed and its
#: rank, drawing batch / N patches) or ``global`` (every rank draws the whole batch from the run's seed and keeps
#: its slice: the same samples as one process, so N processes reproduce the one-process run).
SAMPLING_MODES = ("rank", "global")

DEFAULT_TIMEOUT_S = 1800.0


class LaunchError(SparseSegError):
    """A bad launch that every rank detects alike (world size, method): rank 0 alone prints it."""


class RankStopped(SparseSegError):
    """This rank was told to stop (SIGTERM from torchrun after another rank failed, or a lost peer)."""

    rank_specific = True  # every rank prints it: which ranks stopped, and why


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    sampling: str = "rank"

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the model folder, reports and progress; the others compute and stay quiet."""
        return self.rank == 0

    def share(self, count: int) -> range:
        """Indices ``0..count-1`` this rank handles when work is split round-robin (volumes, batch items)."""
        return range(self.rank, count, self.world_size)

    def batch_share(self, batch: int) -> int:
        """How many of a global batch of ``batch`` items this rank trains on (round-robin remainder)."""
        return len(self.share(batch))

    def describe(self) -> str:
        return (f"{self.world_size} processes ({self.backend}, {self.device.type}), this is rank {self.rank} "
                f"(local {self.local_rank})")


_CURRENT: DistContext | None = None


def current() -> DistContext | None:
    """The active context, or None in a one-process run."""
    return _CURRENT


def env_world_size() -> int:
    """``WORLD_SIZE`` as torchrun set it (1 when unset or unreadable)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def seed_for_rank(seed: int, rank: int) -> int:
    """A sampling seed for ``rank`` derived from the run's ``seed``: different streams per rank, repeatable."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(rank)]).generate_state(1, dtype=np.uint32)[0])


def sampler_seed(seed: int) -> int:
    """The seed a patch sampler uses on this process: ``seed`` itself in one process or in ``global`` sampling
    (every rank draws the same global batch), else :func:`seed_for_rank`."""
    context = current()
    if context is None or context.sampling == "global":
        return seed
    return seed_for_rank(seed, context.rank)


def _timeout() -> datetime.timedelta:
    text = os.environ.get("SPARSESEG_DIST_TIMEOUT", "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise SparseSegError(f"SPARSESEG_DIST_TIMEOUT={text!r} is not a number of seconds",
                             "Set it to e.g. 600, or unset it (default 1800).") from None
    return datetime.timedelta(seconds=seconds)


def _device_for(requested: str, local_rank: int) -> torch.device:
    """The device this rank trains on: CUDA ``local_rank`` when CUDA is asked for (or auto finds it), else the CPU."""
    requested = (requested or "auto").lower()
    cuda = torch.cuda.is_available()
    if requested.startswith("cuda") and not cuda:
        host = os.environ.get("HOSTNAME") or os.uname().nodename
        raise SparseSegError(f"--device {requested} was asked for, but node {host} (local rank {local_rank}) has no "
                             "CUDA GPU that this PyTorch can use",
                             "Launch on GPU nodes, or use --device cpu (the gloo backend) on CPU nodes.")
    if (requested == "auto" and cuda) or requested.startswith("cuda"):
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise SparseSegError(f"local rank {local_rank} needs a GPU of its own, but this node has {count}",
                                 f"Start at most {count} processes per node (--nproc-per-node {count}).")
        if requested not in ("auto", "cuda"):
            raise SparseSegError(f"--device {requested} names one GPU, but each rank takes the GPU of its local rank",
                                 "Use --device cuda (or auto) under torchrun; choose GPUs with CUDA_VISIBLE_DEVICES.")
        return torch.device("cuda", local_rank)
    if requested == "mps":
        raise SparseSegError("distributed training does not run on Apple MPS", "Use --device cpu.")
    if requested not in ("auto", "cpu"):
        raise SparseSegError(f"unknown device {requested!r}", "Use auto, cpu or cuda.")
    return torch.device("cpu")


def _stop_on_sigterm(signum, frame) -> None:  # noqa: ARG001 (signal handler signature)
    raise RankStopped("stopped by the launcher because another process of the distributed run failed",
                      "The launcher's summary says which rank failed first; no model folder was written.")


def _end_rank(stopped: RankStopped) -> None:
    """Print ``stopped`` as this rank's one-line error and end the process at once (exit status 2)."""
    rank = os.environ.get("RANK", "0")
    print(f"sparseseg: error: [rank {rank}] {stopped.one_line()}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(2)  # the launcher is ending the run; nothing of this rank is left to write


def _stop_when_unraisable(unraisable) -> None:
    """SIGTERM can arrive while Python runs a weakref callback or ``__del__``, where an exception cannot propagate
    and Python would print an 'Exception ignored' traceback and carry on. A :class:`RankStopped` there still ends
    this rank, with the same one-line error as anywhere else; other unraisable errors keep the default report."""
    if not isinstance(unraisable.exc_value, RankStopped):
        sys.__unraisablehook__(unraisable)
        return
    _end_rank(unraisable.exc_value)


def _stop_when_uncaught(kind, value, traceback) -> None:
    """The same for :data:`sys.excepthook`: SIGTERM during interpreter exit, after this rank has reported its own
    error, lands in an ``atexit`` finalizer (``weakref.finalize``) that hands what it catches to ``sys.excepthook``,
    or outside every ``try`` of the command. Either way: one line, no traceback (other errors: the default hook)."""
    if not isinstance(value, RankStopped):
        sys.__excepthook__(kind, value, traceback)
        return
    _end_rank(value)


def install_stop_handlers() -> None:
    """SIGTERM (what torchrun sends the surviving ranks when one fails) raises :class:`RankStopped`, and wherever
    Python reports it rather than letting it reach the command's error handling, it still ends the rank with one
    line (:func:`_stop_when_unraisable`, :func:`_stop_when_uncaught`)."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    sys.unraisablehook = _stop_when_unraisable
    sys.excepthook = _stop_when_uncaught


def start(device: str = "auto", sampling: str = "rank") -> DistContext | None:
    """Join the process group when launched by torchrun with more than one process; None otherwise.

    Checks the launch before any data loads: the device each rank can use, the sampling mode. SIGTERM (what
    torchrun sends the surviving ranks when one fails) becomes :class:`RankStopped`, a one-line error.
    """
    global _CURRENT
    if sampling not in SAMPLING_MODES:
        raise SparseSegError(f"unknown --ddp-sampling {sampling!r}", f"Use one of: {', '.join(SAMPLING_MODES)}.")
    world = env_world_size()
    if world <= 1:
        return None
    if _CURRENT is not None:
        return _CURRENT
    import torch.distributed as dist

    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    try:
        chosen = _device_for(device, local_rank)
    except SparseSegError as error:
        error.rank_specific = True  # nodes differ: every rank without its device says so
        raise
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    try:
        dist.init_process_group(backend=backend, timeout=_timeout())
    except Exception as error:  # rendezvous failures come as many types
        raise SparseSegError(f"rank {rank} could not join the process group ({str(error).splitlines()[0][:200]})",
                             "Check the rendezvous endpoint (MASTER_ADDR/--rdzv-endpoint) and that every node "
                             "was started with the same --nnodes and --nproc-per-node.") from None
    install_stop_handlers()
    _CURRENT = DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=chosen,
                           sampling=sampling)
    return _CURRENT


def stop() -> None:
    """Leave the process group (after the last collective); safe to call when none was joined."""
    global _CURRENT
    if _CURRENT is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = None


def check_method(name: str) -> None:
    """Methods without a data-parallel path refuse to run under torchrun (rather than train N copies)."""
    if current() is not None and name not in SUPPORTED_METHODS:
        raise LaunchError(f"method {name!r} does not run data-parallel (under torchrun / --nproc) yet",
                             f"Methods that do: {', '.join(SUPPORTED_METHODS)}. Run {name} in one process.")


def check_volumes(count: int) -> None:
    """Every rank labels and validates a share of the volumes: more ranks than volumes is a bad launch."""
    context = current()
    if context is not None and context.world_size > count:
        raise LaunchError(f"{context.world_size} processes for {count} training volumes: each rank needs at "
                             "least one volume", f"Start at most {count} processes (--nproc / --nproc-per-node).")
