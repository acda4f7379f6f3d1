"""Data-parallel cohort training with ``torch.distributed`` (DistributedDataParallel, launched by torchrun).

One process per device; rank 0 writes the model folder, reports and progress; pseudo-labelling, validation and test
prediction are split across the ranks and gathered so every rank continues with the same data. Without torchrun
(``WORLD_SIZE`` unset or 1) nothing here is active and the one-process path is unchanged.

Modules: :mod:`.context` (rank, world, device, backend, per-rank seeds, launch checks), :mod:`.collectives` (split
work and gather it back), :mod:`.training` (DDP, the batch share, the global loss), :mod:`.run` (what the commands
do under torchrun: join, quiet ranks, write once), :mod:`.launch` (``--nproc``: torchrun started for you).
The user's guide is docs/distributed.md.
"""

from __future__ import annotations

from .context import SUPPORTED_METHODS, DistContext, RankStopped, current, seed_for_rank

__all__ = ["SUPPORTED_METHODS", "DistContext", "RankStopped", "current", "seed_for_rank"]
