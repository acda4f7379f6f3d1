"""Test support: what each member of a saved axis-ensemble model predicts on its own, run as the ensemble runs it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from SparseSegLib.engine.axis_ensemble import from_axis, to_axis
from SparseSegLib.engine.model import Segmenter
from SparseSegLib.engine.networks import default_patch_size
from SparseSegLib.engine.preprocessing import normalize


def member_probabilities(model: Segmenter, image: np.ndarray) -> list[np.ndarray]:
    """Each member's own softmax ``(C, k, j, i)``, across its axis of the model's normalised ``image``."""
    single = replace(model.network_config, axes=(0,))
    normalised = normalize(image, model.normalization)
    members = []
    for member, axis in zip(model.network.members, model.network.axes):
        alone = Segmenter(member, single, model.patch_size if axis == 0 else default_patch_size(
            to_axis(image, axis).shape, single), model.class_names, normalization="none")
        members.append(from_axis(alone.predict(to_axis(normalised, axis))[1], axis, 1))
    return members
