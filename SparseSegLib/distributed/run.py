"""What ``sparseseg train`` / ``bench`` do differently under torchrun: join, stay quiet off rank 0, write once.

:func:`session` wraps a command: it joins the process group when torchrun launched more than one process, turns a
lost peer (a collective failing because another rank died or timed out) into a one-line :class:`RankStopped`
error, and always leaves the group. :func:`save_model` writes the model folder on rank 0 only, under a temporary
name renamed at the end, so a run that fails never leaves a half-written model folder behind.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import SparseSegError
from .context import SAMPLING_MODES, DistContext, RankStopped, current, env_world_size, start, stop

#: Words in a collective's error that mean "a peer is gone or too slow", not a bug in our code.
_LOST_PEER = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "gloo", "nccl",
              "peer", "socket")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--nproc`` and ``--ddp-sampling`` for ``train`` and ``bench``."""
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="data-parallel training in N processes on this machine (starts torchrun; one per GPU, "
                             "or CPU processes with gloo); on a cluster start torchrun yourself: docs/distributed.md")
    parser.add_argument("--ddp-sampling", default="rank", choices=SAMPLING_MODES,
                        help="under torchrun / --nproc: rank (default: each process samples its share of the batch "
                             "from its own seeded stream) or global (every process draws the one-process batch and "
                             "trains on its slice: N processes reproduce the one-process run)")


def is_lost_peer(error: BaseException) -> bool:
    """True for an error from torch.distributed that says another rank is gone (or silent past the timeout)."""
    try:
        import torch.distributed as dist

        if isinstance(error, dist.DistError):
            return True
    except (ImportError, AttributeError):
        pass
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(word in text for word in _LOST_PEER)


@contextmanager
def session(args: argparse.Namespace) -> Iterator[DistContext | None]:
    """Join the process group for the command (None in a one-process run) and leave it however the command ends."""
    context = start(getattr(args, "device", "auto"), getattr(args, "ddp_sampling", "rank"))
    try:
        yield context
    except SparseSegError:
        raise
    except Exception as error:
        if context is not None and is_lost_peer(error):
            stopped = RankStopped(f"rank {context.rank} lost contact with another process of the run "
                                  f"({str(error).splitlines()[0][:200]})",
                                  "Another rank failed or was killed (see its message); no model folder was written.")
            raise stopped from None
        raise
    finally:
        stop()


def error_is_printed(error: SparseSegError) -> bool:
    """Rank 0 prints every error; the others only what is their own (``rank_specific``: a stop, a lost peer, a
    device missing on their node, out of memory on their GPU), not the copies of what every rank finds alike on
    the same inputs (launch checks, options, annotation). The launcher's summary names every rank that failed."""
    if env_world_size() <= 1:
        return True
    rank = int(os.environ.get("RANK", "0") or 0)
    return rank == 0 or bool(getattr(error, "rank_specific", False))


def error_prefix() -> str:
    """``[rank N] `` for messages of a process in a distributed run, else nothing."""
    return f"[rank {os.environ.get('RANK', '0')}] " if env_world_size() > 1 else ""


def save_model(segmenter, out: Path) -> Path | None:
    """Rank 0 writes the model folder (others return None); in a one-process run: :meth:`Segmenter.save`.

    Under torchrun the folder is written under a temporary sibling name and renamed into place at the end; an
    existing folder at ``out`` is replaced only once the new one is complete.
    """
    context = current()
    if context is None:
        return segmenter.save(out)
    from .collectives import barrier

    written = None
    if context.is_main:
        out = Path(out)
        temporary = out.with_name(f".tmp-{os.getpid()}-{out.name}")
        shutil.rmtree(temporary, ignore_errors=True)
        segmenter.save(temporary)
        old = out.with_name(f".old-{os.getpid()}-{out.name}")
        if out.exists():
            if not out.is_dir():
                shutil.rmtree(temporary, ignore_errors=True)
                raise SparseSegError(f"{out} exists and is not a folder", "Give --out a folder name.")
            os.replace(out, old)
        os.replace(temporary, out)
        shutil.rmtree(old, ignore_errors=True)
        written = out
    barrier()  # the others end only once the model exists
    return written
