"""A learned 2D slice-to-slice registration (self-supervised), composed of MONAI blocks.

The collaborative-learning seed (methods.md section 4) propagates a labelled slice through its volume with a
deformable registration *network* trained on neighbouring-slice pairs of the training volumes by image similarity
alone (no labels). Here that network is MONAI's ``UNet`` with a zero-initialised 2-channel displacement head (so
training starts from the identity field), made diffeomorphic by ``DVF2DDF`` (scaling and squaring; optional),
applied by ``Warp`` and trained with ``LocalNormalizedCrossCorrelationLoss`` (or MSE, PLN's choice) plus a
smoothness penalty (``BendingEnergyLoss`` or ``DiffusionLoss``). Nothing here is hand-written that MONAI has.

:class:`NetworkSliceRegistration` has the same ``warp(maps, source, target)`` interface as the demons
:class:`~SparseSegLib.engine.propagation.SliceRegistration`, so :func:`~SparseSegLib.engine.propagation.propagate_slices`
carries labels with either: the chaining, blending and painted-slice rules live once, in ``propagation.py``.

The paper uses its segmentation U-Net for the fields too; a CPU-sized U-Net (8-16-32-64) replaces MONAI's ``LocalNet``,
which is about 5x slower per step on a CPU at the same width (measured here: 0.84-1.33 s vs 0.19 s, batch 16 of 112x80).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from monai.losses import BendingEnergyLoss, DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from monai.networks.blocks import DVF2DDF, Warp
from monai.networks.nets import UNet

from ..errors import SparseSegError
from .trainer import train_loop

SIMILARITIES = ("lncc", "mse")
REGULARIZERS = ("bending", "diffusion")


@dataclass(frozen=True)
class RegistrationConfig:
    """How the registration network is built and trained (defaults sized for a 2-core CPU; the paper: Adam 0.01, batch 32)."""

    channels: tuple[int, ...] = (8, 16, 32, 64)
    iterations: int = 200
    batch_size: int = 16
    learning_rate: float = 1e-3
    similarity: str = "lncc"
    kernel_size: int = 7  # LNCC window (pixels)
    regularizer: str = "bending"
    smoothness: float = 1.0  # weight of the smoothness penalty
    integration_steps: int = 7  # DVF2DDF scaling-and-squaring steps; 0: the network's output is the field itself

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise SparseSegError(f"unknown registration similarity {self.similarity!r}", f"Use one of: {', '.join(SIMILARITIES)}.")
        if self.regularizer not in REGULARIZERS:
            raise SparseSegError(f"unknown registration regularizer {self.regularizer!r}", f"Use one of: {', '.join(REGULARIZERS)}.")

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict:
        return asdict(self)


class RegistrationNetwork(torch.nn.Module):
    """``(moving, fixed)`` slices -> dense displacement field (pixels) mapping fixed-grid points into the moving slice.

    The head is zero-initialised: an untrained network returns the identity field, so a label warped before any
    training comes back unchanged (and training starts from "copy the label", the baseline it must beat).
    """

    def __init__(self, config: RegistrationConfig) -> None:
        super().__init__()
        self.config = config
        features = config.channels[0]
        self.body = UNet(spatial_dims=2, in_channels=2, out_channels=features, channels=config.channels,
                         strides=(2,) * (len(config.channels) - 1), num_res_units=1, norm="instance")
        self.head = torch.nn.Conv2d(features, 2, kernel_size=3, padding=1)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)
        self.integrate = DVF2DDF(num_steps=config.integration_steps) if config.integration_steps > 0 else None
        self.warp = Warp(mode="bilinear", padding_mode="border")

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        field = self.head(torch.relu(self.body(torch.cat([moving, fixed], dim=1))))
        return self.integrate(field) if self.integrate is not None else field


def pad_to_multiple(slices: np.ndarray, multiple: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """``(..., j, i)`` zero-padded at the end to ``shape`` (default: each in-plane size rounded up to ``multiple``)."""
    target = shape or tuple(int(math.ceil(n / multiple) * multiple) for n in slices.shape[-2:])
    pad = [(0, 0)] * (slices.ndim - 2) + [(0, t - n) for t, n in zip(target, slices.shape[-2:])]
    return np.pad(slices, pad)


class SimilarityLoss(torch.nn.Module):
    """Image dissimilarity of a warped slice and its target: ``1 + LNCC`` (0 = identical up to local contrast) or MSE."""

    def __init__(self, config: RegistrationConfig) -> None:
        super().__init__()
        self.lncc = (LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=config.kernel_size)
                     if config.similarity == "lncc" else None)

    def forward(self, warped: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        if self.lncc is not None:
            return 1.0 + self.lncc(warped, fixed)
        return torch.mean((warped - fixed) ** 2)


class PairSampler:
    """Random neighbouring-slice pairs ``(s, s +- 1)`` of normalised volumes, padded to one common in-plane size."""

    def __init__(self, volumes: list[np.ndarray], multiple: int, seed: int) -> None:
        shape = tuple(int(math.ceil(max(v.shape[a] for v in volumes) / multiple) * multiple) for a in (1, 2))
        self.volumes = [pad_to_multiple(v.astype(np.float32), multiple, shape) for v in volumes if v.shape[0] >= 2]
        if not self.volumes:
            raise SparseSegError("no volume has two slices to register", "Give volumes with at least two slices.")
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        moving, fixed = [], []
        for _ in range(batch_size):
            volume = self.volumes[int(self.rng.integers(len(self.volumes)))]
            source = int(self.rng.integers(volume.shape[0] - 1))
            pair = (source, source + 1) if self.rng.random() < 0.5 else (source + 1, source)
            moving.append(volume[pair[0]])
            fixed.append(volume[pair[1]])
        return torch.from_numpy(np.stack(moving)[:, None]), torch.from_numpy(np.stack(fixed)[:, None])


def registration_device(device: torch.device | str) -> torch.device:
    """Where a registration network can run: ``device``, except Apple MPS, whose ``grid_sample`` lacked the border
    padding MONAI's ``Warp``/``DVF2DDF`` use here in torch releases before the fix (pytorch#125098): the CPU there."""
    device = torch.device(device)
    return torch.device("cpu") if device.type == "mps" else device


def train_registration(
    volumes: list[np.ndarray],
    config: RegistrationConfig,
    device: torch.device,
    seed: int = 0,
    progress: Callable[[int, int, float, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    network: RegistrationNetwork | None = None,
) -> tuple[RegistrationNetwork, list[float]]:
    """Train a registration network on neighbouring-slice pairs of normalised ``volumes`` (slices along axis 0).

    Loss = dissimilarity(warp(moving, field), fixed) + ``smoothness`` * penalty(field); Adam, constant rate.
    Returns the network (on the CPU, eval mode) and the per-step losses.
    """
    torch.manual_seed(seed)
    device = registration_device(device)
    network = network or RegistrationNetwork(config)
    network.to(device).train()
    sampler = PairSampler(volumes, config.size_multiple, seed)
    similarity = SimilarityLoss(config)
    penalty = BendingEnergyLoss() if config.regularizer == "bending" else DiffusionLoss()
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)

    def step_loss(step: int) -> torch.Tensor:
        moving, fixed = (t.to(device) for t in sampler.sample(config.batch_size))
        field = network(moving, fixed)
        return similarity(network.warp(moving, field), fixed) + config.smoothness * penalty(field)

    losses = train_loop(network, optimizer, step_loss, config.iterations, device, progress=progress,
                        should_stop=should_stop).losses
    return network.cpu().eval(), losses


class NetworkSliceRegistration:
    """Fields between slices of one normalised volume from a trained :class:`RegistrationNetwork`.

    Same interface as :class:`~SparseSegLib.engine.propagation.SliceRegistration`: ``warp(maps, source, target)``
    moves soft label maps of slice ``source`` onto slice ``target`` (bilinear, 0 outside), so
    :func:`~SparseSegLib.engine.propagation.propagate_slices` chains and blends with it unchanged.
    """

    def __init__(self, network: RegistrationNetwork, volume: np.ndarray, device: torch.device | str = "cpu") -> None:
        self.device = registration_device(device)
        self.network = network.to(self.device).eval()
        self.shape = volume.shape[1:]
        self.volume = torch.from_numpy(pad_to_multiple(volume.astype(np.float32), network.config.size_multiple))
        self.label_warp = Warp(mode="bilinear", padding_mode="zeros")  # nothing is carried in from outside the slice
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    @torch.no_grad()
    def field(self, source: int, target: int) -> torch.Tensor:
        """The ``(1, 2, J, I)`` field that brings slice ``source`` onto slice ``target`` (padded grid)."""
        key = (source, target)
        if key not in self._cache:
            moving = self.volume[source][None, None].to(self.device)
            fixed = self.volume[target][None, None].to(self.device)
            self._cache[key] = self.network(moving, fixed)
        return self._cache[key]

    @torch.no_grad()
    def warp(self, maps: np.ndarray, source: int, target: int) -> np.ndarray:
        """Soft maps ``(C, j, i)`` of slice ``source`` warped onto slice ``target``, clipped to [0, 1]."""
        padded = torch.from_numpy(pad_to_multiple(maps.astype(np.float32), self.network.config.size_multiple))
        warped = self.label_warp(padded[None].to(self.device), self.field(source, target))[0].cpu().numpy()
        return np.clip(warped[:, : self.shape[0], : self.shape[1]], 0.0, 1.0)

    @torch.no_grad()
    def dissimilarity(self, source: int, target: int, identity: bool = False) -> float:
        """Image dissimilarity of slice ``source`` warped onto ``target`` (``identity``: not warped), on the
        network's own similarity measure: what training lowers."""
        similarity = SimilarityLoss(self.network.config)
        moving = self.volume[source][None, None].to(self.device)
        fixed = self.volume[target][None, None].to(self.device)
        warped = moving if identity else self.network.warp(moving, self.field(source, target))
        return float(similarity(warped, fixed))
