"""A trained segmenter and its self-contained model directory (weights + JSON config).

``model.pt`` holds only the state dict and is loaded with ``weights_only=True`` (no pickled code runs);
``config.json`` says how to rebuild the network and preprocess an image, and which classes it outputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import SparseSegError
from ..jobs.atomic import atomic_path, atomic_write_text
from .inference import predict_probabilities
from .networks import NetworkConfig, build_network
from .preprocessing import normalize

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


@dataclass
class Segmenter:
    """A network with everything needed to apply it to a new image."""

    network: torch.nn.Module
    network_config: NetworkConfig
    patch_size: tuple[int, ...]
    class_names: dict[int, str]
    normalization: str = "zscore"
    method: str = ""
    class_colors: dict[int, tuple] = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    postprocess: str = "none"  # see engine/postprocess.py (lcc, fill, lcc-fill)
    object_threshold: float = 0.0  # > 0.5: object only where the object classes together exceed it (else argmax)
    objects: int = 1  # how many components ``lcc`` keeps: the objects the training labels hold (postprocess.object_count)
    class_parts: tuple[int, ...] = ()  # ``lcc``: parts each object class keeps (postprocess.kept_class_parts); (): all
    spacing: dict = field(default_factory=dict)  # training spacings (engine/spacing.py); empty: never resample

    @property
    def num_classes(self) -> int:
        return max(self.class_names, default=0) + 1

    def predict(self, image: np.ndarray, device: torch.device | str = "cpu",
                spacing: tuple[float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Label map (uint8) and class probabilities ``(C, k, j, i)`` for a raw image ``(k, j, i)`` whose voxel
        spacing (``(k, j, i)`` mm, where known) decides whether it is predicted at the model's spacing."""
        probabilities = self.probabilities(image, device, spacing)
        return self.labels(probabilities), probabilities

    def probabilities(self, image: np.ndarray, device: torch.device | str = "cpu",
                      spacing: tuple[float, float, float] | None = None) -> np.ndarray:
        """Class probabilities ``(C, k, j, i)`` on the image's own grid. An image whose ``spacing`` lies outside
        the model's training range is predicted at the model's median spacing on those axes and its probabilities
        are resampled back (:mod:`.spacing`); without a spacing, or for a model that recorded none, as it is."""
        from .spacing import prediction_spacing, resample, resample_probabilities

        target = None if spacing is None else prediction_spacing(spacing, self.spacing)
        if target is None:
            return self.grid_probabilities(image, device)
        moved = self.grid_probabilities(resample(image, spacing, target), device)
        return resample_probabilities(moved, target, spacing, image.shape)

    def grid_probabilities(self, image: np.ndarray, device: torch.device | str = "cpu") -> np.ndarray:
        """Class probabilities ``(C, k, j, i)`` of the network on the image's grid, whatever its spacing."""
        return predict_probabilities(self.network, normalize(image, self.normalization), self.network_config,
                                     self.patch_size, torch.device(device))

    def labels(self, probabilities: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """The label map (uint8) the model gives for ``probabilities``: its object threshold, then its
        post-processing, whose largest-component step keeps its count of objects, or, given ``anchor`` (object
        already known on this scan), the components that hold it."""
        from .postprocess import object_labels, postprocess_labels  # scipy + MONAI: loaded on first prediction

        return postprocess_labels(object_labels(probabilities, self.object_threshold), probabilities,
                                  self.postprocess or "none", self.objects, anchor, tuple(self.class_parts))

    def config(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "sparseseg_version": __version__,
            "method": self.method,
            "network": self.network_config.to_dict(),
            "patch_size": list(self.patch_size),
            "preprocessing": {"normalization": self.normalization},
            "postprocessing": self.postprocess,
            "object_threshold": self.object_threshold,
            "objects": self.objects,
            "class_parts": list(self.class_parts),
            "spacing": self.spacing,
            "classes": {str(k): v for k, v in sorted(self.class_names.items())},
            "class_colors": {str(k): list(v) for k, v in sorted(self.class_colors.items())},
            "training": self.training,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``model.pt`` and ``config.json`` into ``directory`` (created if needed).

        Each file is written atomically (:func:`~SparseSegLib.jobs.atomic.atomic_path`), so overwriting a model
        that Slicer's Apply model is reading never hands it half a file; not fsynced (a model is re-savable).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE, sync=False) as temporary:
            torch.save(state, temporary)
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.config(), indent=2), sync=False)
        return directory


def load_segmenter(directory: str | os.PathLike) -> Segmenter:
    """Rebuild a :class:`Segmenter` from a model directory written by :meth:`Segmenter.save`."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    if not directory.is_dir():
        raise SparseSegError(f"model folder not found: {directory}", "Give the --out folder of `sparseseg train`.")
    for path in (config_path, weights_path):
        if not path.is_file():
            raise SparseSegError(f"{directory} is not a SparseSeg model: {path.name} is missing", "Train one with `sparseseg train`.")
    try:
        config = json.loads(config_path.read_text())
        network_config = NetworkConfig.from_dict(config["network"])
        class_names = {int(k): v for k, v in config["classes"].items()}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise SparseSegError(f"{config_path} is damaged ({error})", "Train the model again or restore the file.") from None
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise SparseSegError(f"model {directory} was written by a newer SparseSeg", "Upgrade SparseSeg to load it.")
    network = build_network(network_config, max(class_names, default=0) + 1)
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        network.load_state_dict(state)
    except Exception as error:  # a truncated or foreign file raises many types
        raise SparseSegError(f"cannot load weights {weights_path}: {str(error).splitlines()[0][:160]}",
                             "The file is damaged or from another network; train the model again.") from None
    return Segmenter(
        network=network,
        network_config=network_config,
        patch_size=tuple(config["patch_size"]),
        class_names=class_names,
        normalization=config.get("preprocessing", {}).get("normalization", "zscore"),
        method=config.get("method", ""),
        class_colors={int(k): tuple(v) for k, v in config.get("class_colors", {}).items()},
        training=config.get("training", {}),
        postprocess=config.get("postprocessing", "none"),
        object_threshold=float(config.get("object_threshold", 0.0)),
        objects=int(config.get("objects", 1)),
        class_parts=tuple(int(n) for n in config.get("class_parts", ())),
        spacing=dict(config.get("spacing") or {}),
    )
