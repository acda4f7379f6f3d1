"""Masked segmentation loss: only labelled voxels (ground truth or pseudo-label) count.

Unknown voxels carry target -1 and weight 0. Dice is MONAI's ``MaskedDiceLoss`` (softmax first, then
masked), cross-entropy is weighted per voxel, so pseudo-labels can count less than ground truth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import MaskedDiceLoss


class MaskedDiceCELoss(torch.nn.Module):
    """``dice_weight * Dice + ce_weight * CE`` over voxels with weight > 0.

    Dice is computed over the whole batch (``batch=True``) so a patch without some class does not
    produce a degenerate per-sample Dice.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice = MaskedDiceLoss(softmax=True, include_background=True, batch=True)
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, C, *S); ``target`` (B, 1, *S) int with -1 unknown; ``weight`` (B, 1, *S)."""
        known = target.clamp_min(0)
        total = weight.sum()
        if total <= 0:
            return logits.sum() * 0.0
        loss = logits.new_zeros(())
        if self.ce_weight:
            ce = F.cross_entropy(logits.float(), known[:, 0], reduction="none")
            loss = loss + self.ce_weight * (ce * weight[:, 0]).sum() / total
        if self.dice_weight:
            one_hot = F.one_hot(known[:, 0], logits.shape[1]).movedim(-1, 1).to(logits.dtype)
            loss = loss + self.dice_weight * self.dice(logits.float(), one_hot.float(), mask=(weight > 0).float())
        return loss


class MaskedObjectDiceCELoss(torch.nn.Module):
    """``Dice + ce_weight * CE`` of object against background over voxels with weight > 0, where object is the
    sum of the object classes' probabilities: a target says *that* a voxel is object, not which object class.

    For pseudo-labels that are trusted for an object's extent but not for the split between its classes (a
    registration chain carries a painted split only as far as the painted slice shows it): the split is then
    learnt from the voxels that enter :class:`MaskedDiceCELoss` alone.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice = MaskedDiceLoss(softmax=False, include_background=True, batch=True)
        self.dice_weight = dice_weight
        self.ce_weight = ce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``logits`` (B, C, *S); ``target`` (B, 1, *S) int with -1 unknown (any class > 0 is object)."""
        total = weight.sum()
        if total <= 0:
            return logits.sum() * 0.0
        log_probabilities = torch.log_softmax(logits.float(), dim=1)
        # log P(background), log P(object) = log of the summed object-class probabilities
        two = torch.stack([log_probabilities[:, 0], torch.logsumexp(log_probabilities[:, 1:], dim=1)], dim=1)
        is_object = (target[:, 0] > 0).long()
        loss = logits.new_zeros(())
        if self.ce_weight:
            ce = F.nll_loss(two, is_object, reduction="none")
            loss = loss + self.ce_weight * (ce * weight[:, 0]).sum() / total
        if self.dice_weight:
            one_hot = F.one_hot(is_object, 2).movedim(-1, 1).float()
            loss = loss + self.dice_weight * self.dice(two.exp(), one_hot, mask=(weight > 0).float())
        return loss
