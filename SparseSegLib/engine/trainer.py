"""The training loop: seeded, iteration-based, mixed precision on CUDA, cancellable, reporting progress."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import SparseSegError
from .losses import MaskedDiceCELoss
from .sampling import PatchSampler

#: ``progress(step, total, loss, seconds_per_step)`` is called every ``log_every`` steps.
ProgressCallback = Callable[[int, int, float, float], None]


class TrainingCancelled(Exception):
    """Raised inside the loop when ``should_stop`` says so; finished work is already saved by the caller."""


@dataclass
class TrainConfig:
    """Optimisation settings, counted in iterations (one batch each) so schedules are comparable."""

    iterations: int = 1000
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    amp: bool = True
    log_every: int = 25

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run can be repeated (CPU results are then identical)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_network(
    network: torch.nn.Module,
    sampler: PatchSampler,
    config: TrainConfig,
    device: torch.device,
    progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    validate: Callable[[], float] | None = None,
    validate_every: int = 0,
) -> list[float]:
    """Train ``network`` in place with Adam and a polynomial learning-rate decay; returns the losses.

    With ``validate`` (a score, higher is better) called every ``validate_every`` steps, the weights
    with the best score are restored at the end: early stopping's model selection without stopping.

    Under torchrun (:func:`~SparseSegLib.distributed.context.current`) the network trains inside
    DistributedDataParallel on this rank's share of the global batch ``config.batch_size``, with the loss of the
    whole global batch (:mod:`SparseSegLib.distributed.training`); ``validate`` must then return the same score on
    every rank (it is split and gathered by the caller), so the best-weights decision is the same everywhere.
    """
    from ..distributed.context import current
    from ..distributed.training import GlobalMaskedDiceCELoss, check_batch, draw_share, wrap_network

    context = current()
    if context is not None:
        check_batch(context, config.batch_size)
    network.to(device).train()
    model = wrap_network(network, context) if context is not None else network
    loss_function = MaskedDiceCELoss(config.dice_weight, config.ce_weight)
    global_loss = GlobalMaskedDiceCELoss(config.dice_weight, config.ce_weight, context.world_size) if context else None
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(1, config.iterations), power=0.9)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    losses: list[float] = []
    best_score, best_state = -float("inf"), None
    started = time.perf_counter()
    for step in range(1, config.iterations + 1):
        if should_stop is not None and should_stop():
            raise TrainingCancelled()
        batch = sampler.sample(config.batch_size) if context is None else draw_share(sampler.sample, config.batch_size, context)
        images, targets, weights = (t.to(device, non_blocking=True) for t in batch)
        optimizer.zero_grad(set_to_none=True)
        try:
            with torch.autocast("cuda", enabled=True) if use_amp else contextlib.nullcontext():
                logits = model(images)
            if global_loss is None:
                loss = backward_loss = loss_function(logits.float(), targets, weights)
            else:
                loss, backward_loss = global_loss(logits.float(), targets, weights)
            scaler.scale(backward_loss).backward()
            scaler.step(optimizer)
            scaler.update()
        except torch.OutOfMemoryError:
            error = SparseSegError(
                f"out of GPU memory at batch size {config.batch_size}, patch {tuple(images.shape[2:])}",
                "Lower the batch or patch size, close other GPU programs, or use --device cpu.",
            )
            error.rank_specific = True  # under torchrun this GPU's rank says so itself
            raise error from None
        scheduler.step()
        losses.append(float(loss.detach()))
        if progress is not None and (step % config.log_every == 0 or step == config.iterations):
            recent = losses[-config.log_every:]
            progress(step, config.iterations, float(np.mean(recent)), (time.perf_counter() - started) / step)
        if validate is not None and validate_every and (step % validate_every == 0 or step == config.iterations):
            score = validate()
            network.train()
            if score > best_score:
                best_score = score
                best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    if best_state is not None:
        network.load_state_dict(best_state)
    return losses
