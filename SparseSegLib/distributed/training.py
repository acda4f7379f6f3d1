"""The data-parallel training step: DDP around the network, each rank's share of the batch, the global loss.

``batch_size`` stays the *global* batch: with N ranks each trains on about batch / N items and DDP averages the
gradients, so the learning rate of the one-process schedule still applies (it is stated in the log, not scaled).

The loss is the one :class:`~SparseSegLib.engine.losses.MaskedDiceCELoss` computes over the whole global batch,
not the mean of per-rank losses. That loss does not split: cross-entropy is divided by the batch's total voxel
weight and the Dice is taken over the whole batch (``batch=True``). :class:`GlobalMaskedDiceCELoss` therefore
sums each rank's Dice terms (per-class intersection, prediction and target sums) and CE terms (weighted sum, total
weight), all-reduces the sums and evaluates the loss on the totals, the other ranks' sums entering as constants.
The gradient that reaches each rank's own terms is then that of the global loss; scaled by N before DDP averages
the N ranks' gradients, the step equals the one-process step on the same samples (to floating-point rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .context import DistContext

#: MONAI DiceLoss's defaults (smooth_nr = smooth_dr = 1e-5), which MaskedDiceCELoss uses.
SMOOTH = 1e-5


class GlobalMaskedDiceCELoss(torch.nn.Module):
    """``MaskedDiceCELoss`` over the batch of all ranks together (see the module doc).

    ``forward`` returns ``(loss, backward_loss)``: ``loss`` is the global value (identical on every rank, what the
    log reports), ``backward_loss`` the value to call ``backward()`` on (``world_size * loss`` through this rank's
    own terms only).
    """

    def __init__(self, dice_weight: float, ce_weight: float, world_size: int, reduce: Callable | None = None) -> None:
        super().__init__()
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight
        self.world_size = world_size
        self.reduce = reduce or _all_reduce_sum

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits.float()
        classes = logits.shape[1]
        known = target.clamp_min(0)[:, 0]
        mask = (weight > 0).float()
        probabilities = torch.softmax(logits, 1) * mask
        one_hot = F.one_hot(known, classes).movedim(-1, 1).float() * mask
        axes = [0] + list(range(2, logits.dim()))
        ce = F.cross_entropy(logits, known, reduction="none")
        local = torch.cat([
            (probabilities * one_hot).sum(axes), probabilities.sum(axes), one_hot.sum(axes),
            (ce * weight[:, 0]).sum().reshape(1), weight.sum().reshape(1).float(),
        ])
        totals = self.reduce(local.detach().clone()).detach()
        summed = local + (totals - local.detach())  # the totals' values, this rank's gradient path
        intersection, predicted, truth = summed[:classes], summed[classes:2 * classes], summed[2 * classes:3 * classes]
        ce_sum, weight_total = summed[-2], totals[-1]
        if float(weight_total) <= 0:
            zero = logits.sum() * 0.0
            return zero, zero
        loss = logits.new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * ce_sum / weight_total
        if self.dice_weight:
            dice = 1 - (2 * intersection + SMOOTH) / (predicted + truth + SMOOTH)
            loss = loss + self.dice_weight * dice.mean()
        return loss, loss * self.world_size


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def wrap_network(network: torch.nn.Module, context: DistContext) -> torch.nn.Module:
    """``network`` inside DistributedDataParallel on this rank's device (the parameters stay ``network``'s own:
    validation and saving keep using the plain module). DDP broadcasts rank 0's weights at construction."""
    from torch.nn.parallel import DistributedDataParallel

    if context.device.type == "cuda":
        return DistributedDataParallel(network, device_ids=[context.device.index], output_device=context.device.index)
    return DistributedDataParallel(network)


def check_batch(context: DistContext, batch: int) -> None:
    """Every rank needs at least one item of the global batch (DDP cannot step on an empty one)."""
    if batch < context.world_size:
        from .context import LaunchError

        raise LaunchError(f"the global batch of {batch} cannot be split over {context.world_size} processes",
                          f"Start at most {batch} processes for this network's batch (e.g. --nproc {batch}).")


def draw_share(draw: Callable[[int], tuple], batch: int, context: DistContext) -> tuple:
    """This rank's part of a global batch of ``batch`` items.

    ``global`` sampling: draw all ``batch`` items (every rank the same, from the run's seed) and keep this rank's
    round-robin slice, so the ranks together train on exactly the one-process batch. ``rank`` sampling: draw only
    this rank's share from its own stream (seeded per rank: :func:`~.context.sampler_seed`).
    """
    if context.sampling == "global":
        tensors = draw(batch)
        index = torch.as_tensor(np.arange(context.rank, batch, context.world_size))
        return tuple(t.index_select(0, index) for t in tensors)
    return draw(context.batch_share(batch))


def describe_step(context: DistContext, batch: int, learning_rate: float) -> str:
    """The log line stating the global batch and learning rate of a data-parallel run."""
    shares = sorted({len(range(r, batch, context.world_size)) for r in range(context.world_size)}, reverse=True)
    per_rank = "/".join(str(s) for s in shares)
    return (f"data-parallel over {context.world_size} processes ({context.backend}, {context.device.type}): global "
            f"batch {batch} ({per_rank} per rank, {context.sampling} sampling), learning rate {learning_rate:g} "
            "(the one-process value: the batch is split, not multiplied)")
