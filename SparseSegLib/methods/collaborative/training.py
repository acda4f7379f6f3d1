"""The two segmentation-network stages: the semi-supervised branch (ramped pseudo-labels) and the final network
(certain + beta-weighted uncertain labels). Both need two loss terms per step, so each passes its own step loss to
the engine's loop (:func:`~SparseSegLib.engine.trainer.train_loop`); the network, patch sampler and masked
Dice + CE loss are the engine's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from ...engine.losses import MaskedDiceCELoss, MaskedObjectDiceCELoss
from ...engine.model import Segmenter
from ...engine.sampling import UNKNOWN, PatchSampler, TrainingVolume
from ...engine.trainer import StepLoss, train_loop
from ..base import MethodOptions, Reporter
from .fusion import CERTAIN, OBJECT_ONLY, UNCERTAIN
from .settings import CollaborativeSettings

def run_steps(network: torch.nn.Module, iterations: int, learning_rate: float, loss_of_step: StepLoss, device: torch.device,
              reporter: Reporter, stage: str, should_stop: Callable[[], bool] | None = None) -> list[float]:
    """The engine's loop with Adam and its polynomial decay, progress about 20 times; the network ends on the CPU."""
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate, weight_decay=1e-5)
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=max(1, iterations), power=0.9)
    result = train_loop(network, optimizer, loss_of_step, iterations, device, scheduler=scheduler,
                        progress=lambda step, total, loss, sps: reporter.progress(stage, step, total, loss, sps),
                        should_stop=should_stop)
    network.cpu().eval()
    return result.losses


def _sampler(segmenter: Segmenter, volumes: list[TrainingVolume], augment: bool, seed: int) -> PatchSampler:
    config = segmenter.network_config
    return PatchSampler(volumes, config.dims, segmenter.patch_size, context_slices=config.context_slices,
                        augment=augment, seed=seed)


def unlabelled_volumes(volumes: list[TrainingVolume]) -> list[TrainingVolume]:
    """The same images with every unlabelled voxel as a placeholder target 0 (labelled ones unknown), so a patch
    sampler draws slices the ground truth does not cover; the targets are replaced by pseudo-labels per batch."""
    return [TrainingVolume(v.image, np.where(v.target >= 0, UNKNOWN, 0).astype(np.int16)) for v in volumes]


def train_semi(segmenter: Segmenter, volumes: list[TrainingVolume], settings: CollaborativeSettings, options: MethodOptions,
               reporter: Reporter, device: torch.device, stage: str, should_stop: Callable[[], bool] | None = None) -> dict:
    """The paper's semi-supervised branch (Eqs. 1-3) on ``volumes`` (sparse ground truth), in place.

    Each step: Dice + gamma CE on a batch of labelled slices, plus alpha(epoch) x the same on a batch of other
    slices whose targets are the argmax of the network as it stood at the end of the previous epoch (a frozen
    copy per epoch: the paper recomputes every pseudo-label after each epoch; computing those of the drawn slices
    only is the same thing, for a fraction of the cost).
    """
    batch = options.schedule(2)["batch_size"]
    labelled = _sampler(segmenter, volumes, settings.augment, options.seed)
    others = _sampler(segmenter, unlabelled_volumes(volumes), settings.augment, options.seed + 1)
    loss_function = MaskedDiceCELoss(1.0, settings.gamma)
    network = segmenter.network
    state = {"teacher": None, "epoch": -1}

    def loss_of_step(step: int) -> torch.Tensor:
        epoch = (step - 1) // settings.epoch_iterations
        images, targets, weights = (t.to(device) for t in labelled.sample(batch))
        loss = loss_function(network(images), targets, weights)
        alpha = settings.alpha(epoch)
        if alpha > 0:
            if state["epoch"] != epoch:  # the network as it was at the end of the previous epoch
                state["teacher"], state["epoch"] = copy.deepcopy(network).eval(), epoch
            images, _, weights = (t.to(device) for t in others.sample(batch))
            with torch.no_grad():
                pseudo = state["teacher"](images).argmax(1, keepdim=True)
            inside = (weights > 0).float()
            pseudo = torch.where(inside > 0, pseudo, torch.full_like(pseudo, UNKNOWN))
            loss = loss + alpha * loss_function(network(images), pseudo, inside)
        return loss

    iterations = settings.semi_epochs * settings.epoch_iterations
    losses = run_steps(network, iterations, options.learning_rate, loss_of_step, device, reporter, stage, should_stop)
    return {"iterations": iterations, "final_loss": float(np.mean(losses[-25:])), "epochs": settings.semi_epochs,
            "k1": settings.k1, "k2": settings.k2, "alpha_f": settings.alpha_f}


def train_final(segmenter: Segmenter, volumes: list[TrainingVolume], settings: CollaborativeSettings, options: MethodOptions,
                reporter: Reporter, device: torch.device, stage: str, should_stop: Callable[[], bool] | None = None) -> dict:
    """The paper's target network (Eq. 7) on ``volumes`` whose ``weight`` holds each voxel's kind (certain /
    uncertain, :mod:`.fusion`): (Dice + 1.0 CE) on certain voxels + beta (Dice + gamma_uncertain CE) on uncertain."""
    schedule = options.schedule(2)
    # a job's iterations per round are its final networks' steps (`sparseseg run --iterations-per-round`)
    iterations = settings.final_iterations or options.iterations_per_round or schedule["iterations"]
    sampler = _sampler(segmenter, volumes, settings.augment, options.seed + 2)
    certain_loss, uncertain_loss = MaskedDiceCELoss(1.0, 1.0), MaskedDiceCELoss(1.0, settings.gamma_uncertain)
    object_loss = MaskedObjectDiceCELoss(1.0, 1.0)
    network = segmenter.network

    def loss_of_step(step: int) -> torch.Tensor:
        images, targets, kinds = (t.to(device) for t in sampler.sample(schedule["batch_size"]))
        logits = network(images)
        loss = certain_loss(logits, targets, (kinds == CERTAIN).float())
        if bool((kinds == OBJECT_ONLY).any()):  # pseudo_classes=ground-truth: object or not, the class from GT
            loss = loss + object_loss(logits, targets, (kinds == OBJECT_ONLY).float())
        if settings.beta > 0 and bool((kinds == UNCERTAIN).any()):
            loss = loss + settings.beta * uncertain_loss(logits, targets, (kinds == UNCERTAIN).float())
        return loss

    losses = run_steps(network, iterations, options.learning_rate, loss_of_step, device, reporter, stage, should_stop)
    return {"iterations": iterations, "batch_size": schedule["batch_size"], "final_loss": float(np.mean(losses[-25:]))}
