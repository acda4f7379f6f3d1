"""The trainer shared by ``mean-teacher`` and ``ua-mt``: one iteration is the reference's iteration.

Per iteration: a batch of labelled + unlabelled patches; the student's supervised loss ``0.5 (CE + Dice)`` on
known voxels; the teacher's target on the unknown voxels (one noisy pass for MT; the mean of ``passes``
stochastic passes and an entropy mask for UA-MT); ``loss = supervised + w(t) * consistency``; an SGD step with
the learning rate of the schedule; the teacher's EMA update. The loop can stop and continue anywhere
(:meth:`MeanTeacherTrainer.state` / :meth:`load_state`), which the worker's rounds use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ...engine.device import cpu_copy
from ...engine.trainer import restore_torch_random_state, torch_random_state, train_loop
from ..base import Reporter
from .data import BatchSource
from .losses import consistency_loss, supervised_loss
from .schedules import consistency_weight, learning_rate, uncertainty_threshold
from .settings import MeanTeacherSettings
from .teacher import certain_mask, make_teacher, monte_carlo, teacher_probabilities


class MeanTeacherTrainer:
    """Student, teacher, SGD optimiser and the iteration counter of one run (``uncertainty_aware``: UA-MT)."""

    def __init__(self, student: torch.nn.Module, settings: MeanTeacherSettings, iterations: int, num_classes: int,
                 uncertainty_aware: bool, device: torch.device) -> None:
        self.student = student.to(device).train()
        self.settings = settings
        self.iterations = int(iterations)
        self.num_classes = int(num_classes)
        self.uncertainty_aware = bool(uncertainty_aware)
        self.device = device
        self.teacher = make_teacher(self.student, settings.ema_decay).to(device).train() if settings.uses_teacher else None
        self.optimizer = torch.optim.SGD(self.student.parameters(), lr=settings.lr, momentum=settings.momentum,
                                         weight_decay=settings.weight_decay)
        self.step = 0
        self.history: list[dict] = []

    def weights(self, step: int) -> tuple[float, float]:
        """Consistency weight and UA-MT entropy threshold (nats) at ``step``."""
        return (consistency_weight(step, self.iterations, self.settings.consistency, self.settings.consistency_rampup),
                uncertainty_threshold(step, self.iterations, self.num_classes, self.settings.threshold_start,
                                      self.settings.threshold_end))

    def _set_learning_rate(self, _step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.iterations, self.settings.lr, self.settings.lr_schedule)

    def _step_loss(self, images: torch.Tensor, targets: torch.Tensor, figures: dict) -> torch.Tensor:
        """The iteration's loss on a batch; its figures (losses, weight, threshold, certain share) go to ``figures``."""
        images, targets = images.to(self.device), targets.to(self.device)
        logits = self.student(images)
        supervised = supervised_loss(logits, targets)
        loss = supervised
        figures.clear()
        figures["supervised"] = float(supervised.detach())
        if self.teacher is not None:
            weight, threshold = self.weights(self.step)
            # the teacher only looks at patches with unknown voxels (in the semi-supervised setting: the unlabelled
            # half of the batch, as the reference; in the sparse setting every patch has some)
            rows = (targets < 0).flatten(1).any(1).nonzero()[:, 0]
            unknown = (targets[rows] < 0).unsqueeze(1).float()
            if self.uncertainty_aware:
                target, entropy = monte_carlo(self.teacher, images[rows], self.settings.passes, self.settings.noise)
                mask = unknown * certain_mask(entropy, threshold)
                figures["threshold"] = threshold
                figures["certain"] = float(mask.sum() / unknown.sum().clamp_min(1.0))
            else:
                target, mask = teacher_probabilities(self.teacher, images[rows], self.settings.noise), unknown
            consistency = consistency_loss(logits[rows], target, mask) if len(rows) else logits.sum() * 0.0
            loss = loss + weight * consistency
            figures |= {"consistency": float(consistency.detach()), "weight": weight}
        figures["loss"] = float(loss.detach())
        return loss

    def _after_step(self, _step: int) -> None:
        if self.teacher is not None:
            self.teacher.update_parameters(self.student)
        self.step += 1

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """One iteration on a batch; returns the iteration's figures (losses, weight, threshold, certain share)."""
        figures: dict = {}
        train_loop(self.student, self.optimizer, lambda _step: self._step_loss(images, targets, figures), 1,
                   self.device, before_step=self._set_learning_rate, after_step=self._after_step)
        return figures

    def run(self, source: BatchSource, until: int, reporter: Reporter, stage: str,
            should_stop: Callable[[], bool] | None = None) -> list[float]:
        """Iterate up to step ``until`` (of ``self.iterations``) with the engine's loop; returns these steps' losses."""
        first, figures = self.step, {}
        every = max(1, min(25, (until - first) // 20 or 1))
        started = time.perf_counter()
        losses: list[float] = []

        def after_step(step: int) -> None:
            self._after_step(step)
            losses.append(figures["loss"])
            if self.step % every == 0 or self.step == until:
                self.history.append({"step": self.step, **{k: round(v, 5) for k, v in figures.items()}})
                reporter.progress(stage, self.step, self.iterations, float(np.mean(losses[-every:])),
                                  (time.perf_counter() - started) / max(1, self.step - first))

        train_loop(self.student, self.optimizer, lambda _step: self._step_loss(*source.sample(), figures),
                   max(0, until - first), self.device, before_step=self._set_learning_rate, after_step=after_step,
                   should_stop=should_stop)
        return losses

    # -- resumable state --------------------------------------------------------------------------

    def state(self) -> dict:
        """Tensors and plain data only (the worker reads it back with ``weights_only=True``)."""
        return {
            "step": self.step,
            "student": {k: v.detach().cpu().clone() for k, v in self.student.state_dict().items()},
            "teacher": ({k: v.detach().cpu().clone() for k, v in self.teacher.state_dict().items()}
                        if self.teacher is not None else None),
            "optimizer": cpu_copy(self.optimizer.state_dict()),  # not the live buffers: a retry resumes from it
            **torch_random_state(),
        }

    def load_state(self, state: dict) -> None:
        self.step = int(state["step"])
        self.student.load_state_dict(state["student"])
        if self.teacher is not None and state.get("teacher") is not None:
            self.teacher.load_state_dict(state["teacher"])
        self.optimizer.load_state_dict(state["optimizer"])
        restore_torch_random_state(state)
