"""The teacher: an exponential moving average of the student, its noisy inputs and its uncertainty.

The average is :class:`torch.optim.swa_utils.AveragedModel` with torch's EMA update
(:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`), fed the reference code's decay schedule
``min(1 - 1/(step + 1), alpha)`` (:func:`.schedules.ema_alpha`): torch keeps the count of updates, so the schedule
needs no state of its own and survives a checkpoint. Both networks stay in train mode as in the reference, so
the teacher's dropout is live: its ``passes`` stochastic predictions (dropout + input noise) are what UA-MT's
uncertainty measures.
"""

from __future__ import annotations

import math

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .schedules import ema_alpha


def scheduled_ema(decay: float):
    """A ``multi_avg_fn`` for :class:`AveragedModel`: torch's EMA update with the decay of update ``n``."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged) -> None:
        # num_averaged counts earlier updates; AveragedModel copies the student itself on update 0 (alpha 0)
        get_ema_multi_avg_fn(ema_alpha(int(num_averaged), decay))(averaged, current, num_averaged)

    return update


def make_teacher(student: torch.nn.Module, decay: float = 0.99) -> AveragedModel:
    """The teacher for ``student``: an EMA copy whose first :meth:`update_parameters` copies the student.

    Parameters only (``use_buffers=False``), as the reference's ``update_ema_variables``; gradients never reach
    it (its parameters are detached copies).
    """
    teacher = AveragedModel(student, multi_avg_fn=scheduled_ema(decay), use_buffers=False)
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


def noisy(images: torch.Tensor, sd: float = 0.1) -> torch.Tensor:
    """The teacher's input: ``images + clamp(N(0, sd^2), -2 sd, 2 sd)`` (reference: sd 0.1, clamp 0.2)."""
    if sd <= 0:
        return images
    return images + torch.clamp(torch.randn_like(images) * sd, -2 * sd, 2 * sd)


@torch.no_grad()
def teacher_probabilities(teacher: torch.nn.Module, images: torch.Tensor, noise: float = 0.1) -> torch.Tensor:
    """One noisy teacher pass: softmax ``(B, C, *S)`` (the Mean Teacher target)."""
    return torch.softmax(teacher(noisy(images, noise)).float(), dim=1)


@torch.no_grad()
def monte_carlo(teacher: torch.nn.Module, images: torch.Tensor, passes: int = 8, noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """UA-MT's ``passes`` stochastic teacher passes: mean softmax ``(B, C, *S)`` and entropy ``(B, 1, *S)`` in nats.

    The passes differ by input noise and by dropout (the teacher is in train mode). Entropy is
    ``-sum_c p_c log(p_c + 1e-6)`` of the mean, as the reference; its maximum is ``ln C``.
    """
    total = None
    for _ in range(int(passes)):
        probabilities = teacher_probabilities(teacher, images, noise)
        total = probabilities if total is None else total + probabilities
    mean = total / float(passes)
    entropy = -(mean * torch.log(mean + 1e-6)).sum(dim=1, keepdim=True)
    return mean, entropy


def certain_mask(entropy: torch.Tensor, threshold: float) -> torch.Tensor:
    """UA-MT's mask: voxels whose teacher entropy is below ``threshold`` (float 0/1, same shape)."""
    return (entropy < threshold).float()


def normalized_entropy(entropy: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Entropy scaled to [0, 1] by its maximum ``ln C`` (what a job's uncertainty map holds)."""
    return (entropy / math.log(max(2, num_classes))).clamp(0.0, 1.0)
