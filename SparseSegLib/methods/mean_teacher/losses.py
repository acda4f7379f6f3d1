"""The losses of UA-MT: ``0.5 * (CE + Dice)`` on labelled voxels, (masked) softmax MSE for consistency.

Sparse labels: a voxel's target is ``-1`` where nobody labelled it. The reference computes both supervised terms
over whole labelled volumes; here they run over the labelled voxels only (in a fully labelled volume, all of
them, which is the reference's loss). The Dice has squared denominators as in the reference code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 * (CE + Dice)`` over voxels with ``target >= 0``; ``logits`` (B, C, *S), ``target`` (B, *S).

    Dice is the reference's ``1 - (2 sum(p y) + 1) / (sum(p^2) + sum(y^2) + 1)`` per foreground class, averaged
    over classes; a batch without any labelled voxel gives 0 (and a zero gradient).
    """
    known = target >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    safe = target.clamp_min(0)
    ce = F.cross_entropy(logits.float(), safe, reduction="none")[known].mean()
    probabilities = torch.softmax(logits.float(), dim=1)
    weight = known.unsqueeze(1).float()
    one_hot = F.one_hot(safe, logits.shape[1]).movedim(-1, 1).float() * weight
    scores = probabilities * weight
    dims = (0,) + tuple(range(2, logits.dim()))
    intersect = (scores * one_hot).sum(dims)
    denominator = (scores * scores).sum(dims) + (one_hot * one_hot).sum(dims)
    dice = 1.0 - (2.0 * intersect + 1.0) / (denominator + 1.0)
    return 0.5 * (ce + dice[1:].mean())


def consistency_loss(student_logits: torch.Tensor, teacher_probabilities: torch.Tensor,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """Voxel MSE between the student's softmax and the teacher's, averaged over classes and the ``mask``.

    ``mask`` (B, 1, *S): the voxels that count (unlabelled, and for UA-MT certain); None = all. As the reference,
    ``sum(mask * mse) / (C * sum(mask) + 1e-16)``: with an empty mask the loss is 0, not NaN.
    """
    squared = (torch.softmax(student_logits.float(), dim=1) - teacher_probabilities.float()) ** 2
    if mask is None:
        return squared.mean()
    mask = mask.float()
    return (squared * mask).sum() / (squared.shape[1] * mask.sum() + 1e-16)
