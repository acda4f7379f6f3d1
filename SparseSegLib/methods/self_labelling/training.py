"""How a round trains: epochs with early stopping, LR x0.1 on plateau, best weights kept, the EMA teacher.

A mixin of :class:`~.loop.SelfLabellingLoop`. The paper trains each round as a Keras ``fit`` with callbacks; the
engine's loop (:func:`~SparseSegLib.engine.trainer.train_loop`) runs it with the paper's schedule (epochs, patience,
plateau) given as a :class:`~SparseSegLib.engine.trainer.Selection`, so that the faithful variant is the paper's. The validation score
is the mean class Dice on annotated voxels (:func:`~SparseSegLib.metrics.foreground_dices`).
"""

from __future__ import annotations

import numpy as np
import torch

from ...engine.axis_ensemble import from_axis, to_axis
from ...engine.losses import MaskedDiceCELoss
from ...engine.device import move_optimizer_state
from ...engine.model import Segmenter
from ...engine.sampling import PatchSampler
from ...distributed.collectives import map_shared
from ...distributed.context import current, sampler_seed
from ...distributed.training import wrap_network
from ...engine.trainer import Selection, supervised_step, train_loop
from ...metrics import foreground_dices
from ..base import MethodOptions, Reporter
from .settings import Settings
from .slices import predict_slices, rotate_batch


class TrainingMixin:
    """Trains the labelling network (or a fusion network) for one round (see :meth:`train_this_round`)."""

    settings: Settings
    segmenter: Segmenter
    options: MethodOptions
    reporter: Reporter
    sampler: PatchSampler
    teacher: torch.nn.Module | None
    optimizer: torch.optim.Optimizer | None
    validation: list[tuple[np.ndarray, np.ndarray]]
    total: int
    global_step: int

    def _loss(self) -> MaskedDiceCELoss:
        """Cross-entropy (the paper's BCE for two classes), plus Dice with ``loss=dice-ce``; unknown voxels masked."""
        return MaskedDiceCELoss(dice_weight=1.0 if self.settings.loss == "dice-ce" else 0.0, ce_weight=1.0)

    def _validate(self, network: torch.nn.Module, axis: int = 0) -> float:
        """Mean foreground Dice on the annotated voxels of the validation volumes (higher is better).

        A network across another ``axis`` than the annotated slices' predicts the whole volume, scored on the same voxels.
        """
        multiple = self.segmenter.network_config.size_multiple

        def scores_of(volume: tuple[np.ndarray, np.ndarray]) -> list[float]:
            image, target = volume
            if axis:
                view = to_axis(image, axis)
                every = np.arange(view.shape[0])
                guess = from_axis(predict_slices(network, view, every, self.settings.context, multiple).argmax(0), axis)
                truth = target
            else:
                slices = np.flatnonzero((target >= 0).reshape(target.shape[0], -1).any(1))
                guess = predict_slices(network, image, slices, self.settings.context, multiple).argmax(0)
                truth = target[slices]
            return foreground_dices(guess, truth, self.segmenter.num_classes, known=truth >= 0)

        # under torchrun each rank scores its share of the volumes and all get every score: the same decisions follow
        scores = [score for part in map_shared(scores_of, self.validation) for score in part]
        network.train()
        return float(np.mean(scores)) if scores else 0.0

    def new_optimizer(self, network: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """RMSprop with Keras' defaults (the paper), or Adam with a little weight decay."""
        parameters = (network or self.segmenter.network).parameters()
        if self.settings.optimizer == "rmsprop":
            return torch.optim.RMSprop(parameters, lr=self.settings.learning_rate, alpha=0.9, eps=1e-7)
        return torch.optim.Adam(parameters, lr=self.settings.learning_rate, weight_decay=1e-5)

    def _ema_update(self, step: int) -> None:
        """The EMA teacher follows the network: decay ``min(ema, (1 + step) / (10 + step))``, parameters only.

        Not ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``: that one uses a fixed decay without
        this warm-up, its first update copies the network instead of averaging it into the teacher's initial copy,
        and its state dict (``module.`` keys, ``n_averaged``) differs from the teacher saved in round states; on the
        same steps the two teachers differ (0.12 after five steps of a toy network), so the v1 results and the
        jobs' checkpoints would not reproduce (issue 20).
        """
        decay = min(self.settings.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for teacher, student in zip(self.teacher.parameters(), self.segmenter.network.parameters()):
                teacher.mul_(decay).add_(student.detach(), alpha=1 - decay)

    def train_this_round(self, index: int, stage: str, network: torch.nn.Module | None = None,
                         sampler: PatchSampler | None = None, axis: int = 0) -> dict:
        """Epochs of ``epoch_iterations`` until early stopping (patience) or the round's cap; best weights kept.

        By default the self-labelling network on ``self.sampler``; the fusion round passes a network across
        another ``axis`` with its own sampler (fresh optimiser, no EMA teacher, ``fusion_epochs``).
        """
        settings = self.settings
        member = network is not None
        network, sampler = network or self.segmenter.network, sampler or self.sampler
        teacher = None if member else self.teacher
        network.to(self.device).train()
        if teacher is not None:
            teacher.to(self.device).eval()
        augment = (settings.augment_first and index == 1) or (settings.augment_rounds and index > 1)
        epochs = settings.fusion_epochs if member else settings.first_epochs if index == 1 else settings.round_epochs
        if self.options.iterations_per_round:  # the worker's setting: one long epoch per round
            epochs, epoch_iterations = 1, int(self.options.iterations_per_round)
        elif self.options.iterations:  # --iterations: a total, the first model getting 4 shares, later rounds 1
            share = max(1, int(self.options.iterations) // (self.total + 3))
            epochs, epoch_iterations = 1, share * (4 if index == 1 else 1)
        else:
            epoch_iterations = settings.epoch_iterations
        if member and (self.options.iterations_per_round or self.options.iterations):
            epochs, epoch_iterations = 1, epoch_iterations * (1 if self.options.iterations_per_round else 4)
        if member:
            optimizer = self.new_optimizer(network)
        else:
            optimizer = self.optimizer if settings.keep_optimizer and self.optimizer is not None else self.new_optimizer()
            if settings.keep_optimizer:
                self.optimizer = optimizer
                move_optimizer_state(optimizer, self.device)  # a resumed run loaded it beside the CPU network
        for group in optimizer.param_groups:  # LR x0.1 on plateau acts within a round; each round starts at the base LR
            group["lr"] = settings.learning_rate
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.1, patience=settings.lr_patience)
        context = current()  # under torchrun: DDP, this rank's share of the batch, the loss of the global batch
        model = wrap_network(network, context) if context is not None else network
        aug_rng = np.random.default_rng(sampler_seed(self.options.seed * 7919 + index))

        def draw(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            images, targets, weights = sampler.sample(count)
            return rotate_batch(images, targets, weights, aug_rng) if augment else (images, targets, weights)

        def monitor(epoch_losses: list[float]) -> float:
            """Validation Dice on annotated voxels, else (as the paper's code) minus the training loss."""
            if self.validation:
                return self._validate(network if member else self.labeller(), axis)
            return -float(np.mean(epoch_losses))

        def after_step(step: int) -> None:
            self.global_step += 1
            if teacher is not None:
                self._ema_update(self.global_step)

        total = epochs * epoch_iterations
        # fusion networks get at least half their epochs (added when they started from scratch and sat at
        # all-background for several epochs; kept with the warm start, which the final benchmark measured)
        selection = Selection(epoch_iterations, monitor, min_delta=1e-4, patience=settings.patience,
                              min_epochs=epochs // 2 if member else 0, restore_best=bool(self.validation),
                              plateau=plateau, keep_with_best=(teacher,) if teacher is not None else ())
        result = train_loop(network, optimizer, supervised_step(model, draw, settings.batch_size, self._loss(), self.device),
                     total, self.device, after_step=after_step, selection=selection,
                     progress=lambda step, count, loss, sps: self.reporter.progress(stage, step, count, loss, sps),
                     should_stop=self.should_stop)
        network.cpu()
        if teacher is not None:
            teacher.cpu()
        return {"epochs": len(result.scores), "iterations": result.steps,
                "loss": float(np.mean(result.losses[-25:])) if result.losses else None,
                "monitor": "validation dice" if self.validation else "-training loss", "best": round(result.best, 4),
                "augmented": augment}
