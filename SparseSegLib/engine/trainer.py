"""The one training loop every method uses (:func:`train_loop`), and the supervised step most of them train with.

Methods differ in what one step's loss is (a masked Dice + CE on a batch, a consistency term against a teacher,
an image similarity of a warped slice) and in how a run is scheduled (fixed iterations with polynomial decay,
epochs with early stopping and LR x0.1 on plateau, a per-step learning rate). :func:`train_loop` owns what they share:
seeding-independent iteration, cancellation, mixed precision on CUDA, the out-of-memory message, progress,
epoch-end scoring with best-weight selection and early stopping; each method passes its step loss and hooks.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..errors import SparseSegError
from .losses import MaskedDiceCELoss
from .sampling import PatchSampler

#: ``progress(step, total, loss, seconds_per_step)`` is called every ``log_every`` steps.
ProgressCallback = Callable[[int, int, float, float], None]
#: ``step_loss(step)`` (1-based) returns the loss of one step, or ``(loss to report, loss to backpropagate)``.
StepLoss = Callable[[int], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


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


@dataclass
class Selection:
    """Epoch-end scoring: best weights kept (and restored), early stopping, LR on plateau.

    An epoch ends every ``epoch_iterations`` steps and at the last step. ``monitor`` scores it from its own
    losses (higher is better: a validation Dice, or minus the mean training loss). A score counts as better when
    it beats the best by more than ``min_delta``; ``patience`` epochs without one stop the run (None: never), but
    not before ``min_epochs``. ``keep_with_best`` are modules (an EMA teacher) saved and restored with the best.
    """

    epoch_iterations: int
    monitor: Callable[[list[float]], float]
    min_delta: float = 0.0
    patience: int | None = None
    min_epochs: int = 0
    restore_best: bool = True
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
    keep_with_best: Sequence[torch.nn.Module] = ()


@dataclass
class FitResult:
    """What a run did: every step's loss, the epoch scores, the best one (``-inf`` without selection)."""

    losses: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    best: float = -float("inf")

    @property
    def steps(self) -> int:
        """Steps run (fewer than asked when early stopping ended the run)."""
        return len(self.losses)


def progress_interval(iterations: int) -> int:
    """Report about 20 times per run, at least every 10 steps, so short runs still show progress."""
    return max(1, min(10, iterations // 20))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run can be repeated (CPU results are then identical)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def torch_random_state() -> dict:
    """torch's generators for a round's checkpoint: the CPU one and, where CUDA is up, each GPU's.

    Why both: on a GPU, dropout masks and any noise drawn on the device come from the GPU generators, which
    :func:`seed_everything` resets at every start, so a resumed job that restored only the CPU generator drew
    other numbers than an uninterrupted one. Tensors only (``torch.load(weights_only=True)`` reads them)."""
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_torch_random_state(state: dict) -> None:
    """Put back what :func:`torch_random_state` saved. The GPU generators only where this process sees as many GPUs
    as the checkpoint's did (a job resumed on other hardware draws anew there: it cannot match anyway, and the CPU
    generator still does); a checkpoint written before the GPU generators were saved restores the CPU one."""
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"])
    cuda = list(state.get("cuda_rng") or [])
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)


def _snapshot(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train_loop(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    step_loss: StepLoss,
    iterations: int,
    device: torch.device,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    before_step: Callable[[int], None] | None = None,
    after_step: Callable[[int], None] | None = None,
    selection: Selection | None = None,
    amp: bool = False,
    progress: ProgressCallback | None = None,
    log_every: int | None = None,
    should_stop: Callable[[], bool] | None = None,
    oom_detail: str = "",
) -> FitResult:
    """Run up to ``iterations`` optimisation steps of ``network`` (in place, left on ``device``).

    Per step: ``before_step(step)`` (e.g. a per-step learning rate), zero the gradients, ``step_loss(step)``
    (under autocast when ``amp`` and on CUDA), backward through a gradient scaler, the optimiser and ``scheduler``
    steps, then ``after_step(step)`` (e.g. an EMA teacher). ``should_stop`` is polled before every step and raises
    :class:`TrainingCancelled`. With ``selection`` the best-scoring weights are restored at the end.
    """
    network.to(device).train()
    log_every = log_every or progress_interval(iterations)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    result = FitResult()
    best_states: list[dict] | None = None
    stale, epoch_start = 0, 0
    started = time.perf_counter()
    for step in range(1, iterations + 1):
        if should_stop is not None and should_stop():
            raise TrainingCancelled()
        if before_step is not None:
            before_step(step)
        optimizer.zero_grad(set_to_none=True)
        try:
            with torch.autocast("cuda", enabled=True) if use_amp else contextlib.nullcontext():
                value = step_loss(step)
            loss, backward_loss = value if isinstance(value, tuple) else (value, value)
            scaler.scale(backward_loss).backward()
            scaler.step(optimizer)
            scaler.update()
        except torch.OutOfMemoryError:
            error = SparseSegError(f"out of GPU memory{' at ' + oom_detail if oom_detail else ''}",
                                   "Lower the batch or patch size, close other GPU programs, or use --device cpu.")
            error.rank_specific = True  # under torchrun this GPU's rank says so itself
            raise error from None
        if scheduler is not None:
            scheduler.step()
        if after_step is not None:
            after_step(step)
        result.losses.append(float(loss.detach()))
        if progress is not None and (step % log_every == 0 or step == iterations):
            progress(step, iterations, float(np.mean(result.losses[-log_every:])), (time.perf_counter() - started) / step)
        if selection is None or not (step % selection.epoch_iterations == 0 or step == iterations):
            continue
        score = float(selection.monitor(result.losses[epoch_start:]))
        epoch_start = step
        network.train()  # scoring may have predicted in eval mode
        result.scores.append(score)
        if selection.plateau is not None:
            selection.plateau.step(score)
        if score > result.best + selection.min_delta:
            result.best, stale = score, 0
            best_states = [_snapshot(m) for m in (network, *selection.keep_with_best)]
        else:
            stale += 1
            if selection.patience is not None and stale >= selection.patience and len(result.scores) >= selection.min_epochs:
                break
    if selection is not None and selection.restore_best and best_states is not None:
        for module, state in zip((network, *selection.keep_with_best), best_states):
            module.load_state_dict(state)
    return result


def supervised_step(model: torch.nn.Module, draw: Callable[[int], tuple[torch.Tensor, ...]], batch_size: int,
                    loss_function: MaskedDiceCELoss, device: torch.device) -> StepLoss:
    """The step of a network trained on ``(images, targets, weights)`` batches with a masked Dice + CE loss.

    Under torchrun (:func:`~SparseSegLib.distributed.context.current`) ``model`` must be the DDP-wrapped network:
    each rank draws its share of the global ``batch_size`` and the loss is the whole global batch's
    (:mod:`SparseSegLib.distributed.training`), so the run equals one process drawing the whole batch.
    """
    from ..distributed.context import current
    from ..distributed.training import GlobalMaskedDiceCELoss, check_batch, draw_share

    context = current()
    if context is not None:
        check_batch(context, batch_size)
    global_loss = (GlobalMaskedDiceCELoss(loss_function.dice_weight, loss_function.ce_weight, context.world_size)
                   if context is not None else None)

    def step_loss(step: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        batch = draw(batch_size) if context is None else draw_share(draw, batch_size, context)
        images, targets, weights = (t.to(device, non_blocking=True) for t in batch)
        logits = model(images).float()
        if global_loss is None:
            return loss_function(logits, targets, weights)
        return global_loss(logits, targets, weights)

    return step_loss


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
    from ..distributed.training import wrap_network

    context = current()
    network.to(device)
    model = wrap_network(network, context) if context is not None else network
    step_loss = supervised_step(model, sampler.sample, config.batch_size,
                                MaskedDiceCELoss(config.dice_weight, config.ce_weight), device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(1, config.iterations), power=0.9)
    selection = (Selection(validate_every, lambda _losses: validate()) if validate is not None and validate_every
                 else None)
    result = train_loop(network, optimizer, step_loss, config.iterations, device, scheduler=scheduler, selection=selection,
                 amp=config.amp, progress=progress, log_every=config.log_every, should_stop=should_stop,
                 oom_detail=f"batch size {config.batch_size}, patch {tuple(sampler.patch_size)}")
    return result.losses
