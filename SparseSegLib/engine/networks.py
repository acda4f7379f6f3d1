"""Network configurations: MONAI U-Nets in 2D (slice by slice) and 3D.

A 2D network sees one slice of the stack (array axis 0) at a time, optionally with neighbouring
slices as extra input channels (2.5D); a 3D network sees sub-volumes. Both are MONAI's residual
``UNet``; the configuration is a plain dataclass so it can be stored in a model directory as JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from monai.networks.nets import UNet

from ..errors import SparseSegError


@dataclass
class NetworkConfig:
    """What network to build. ``channels`` are the filters per level; each level halves the size."""

    dims: int = 2
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    num_res_units: int = 2
    dropout: float = 0.0
    norm: str = "instance"
    context_slices: int = 0  # 2D only: neighbouring slices on each side given as extra channels
    arch: str = "monai"  # monai: residual MONAI UNet; plain: the self-labelling paper's plain 2D U-Net
    axes: tuple[int, ...] = (0,)  # 2D only: slice axes; more than one = an AxisEnsemble fusing one network per entry
    swap_in_plane: tuple[bool, ...] = ()  # per axes entry: slices fed with their two in-plane axes swapped (() = none)
    class_members: tuple[int, ...] = ()  # axis ensemble: members whose softmax alone splits the object classes (() = all)

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.axes = tuple(int(a) for a in self.axes)
        self.swap_in_plane = tuple(bool(v) for v in self.swap_in_plane)
        # one network splits its own classes: a member taken out of an ensemble (replace(config, axes=(0,))) drops them
        self.class_members = tuple(int(n) for n in self.class_members) if len(self.axes) > 1 else ()
        if self.swap_in_plane and len(self.swap_in_plane) != len(self.axes):
            raise SparseSegError(f"swap_in_plane {self.swap_in_plane} needs one entry per axis {self.axes}",
                                 "Give one true/false per axis, or none.")
        if self.dims not in (2, 3):
            raise SparseSegError(f"network dims must be 2 or 3, not {self.dims}", "Use --network 2d or 3d.")
        if len(self.channels) < 2:
            raise SparseSegError("a U-Net needs at least two levels of channels", "E.g. channels 16,32,64,128.")
        if self.dims == 3 and self.context_slices:
            raise SparseSegError("context slices apply to 2D networks only", "Set context_slices to 0 for 3D.")
        # an axis may repeat: an ensemble of independently trained runs holds one network per axis per run
        if not self.axes or any(a not in (0, 1, 2) for a in self.axes):
            raise SparseSegError(f"network axes {self.axes} must be array axes 0, 1, 2", "E.g. axes (0,) or (0, 1, 2).")
        if self.dims == 3 and self.axes != (0,):
            raise SparseSegError("slice axes apply to 2D networks only", "Leave axes at (0,) for 3D.")
        if any(not 0 <= n < len(self.axes) for n in self.class_members):
            raise SparseSegError(f"class_members {self.class_members} must number members of the axis ensemble {self.axes}",
                                 "Give member numbers from 0 to one less than the number of axes, or none.")

    @property
    def size_multiple(self) -> int:
        """Patch sizes must be multiples of this so every down-sampling divides evenly."""
        return 2 ** (len(self.channels) - 1)

    @property
    def in_channels(self) -> int:
        return 1 + 2 * self.context_slices

    def to_dict(self) -> dict:
        data = asdict(self)
        data["channels"] = list(self.channels)
        data["axes"] = list(self.axes)
        data["swap_in_plane"] = list(self.swap_in_plane)
        data["class_members"] = list(self.class_members)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def preset(cls, name: str) -> NetworkConfig:
        """Named presets: ``2d`` and ``3d`` (residual U-Nets sized for CPU-friendly training)."""
        presets = {
            "2d": cls(dims=2, channels=(16, 32, 64, 128, 256)),
            "3d": cls(dims=3, channels=(16, 32, 64, 128)),
        }
        if name.lower() not in presets:
            raise SparseSegError(f"unknown network {name!r}", f"Use one of: {', '.join(presets)}.")
        return presets[name.lower()]


def build_network(config: NetworkConfig, num_classes: int) -> torch.nn.Module:
    """A MONAI ``UNet`` for ``config`` with ``num_classes`` output channels (logits); an
    :class:`~.axis_ensemble.AxisEnsemble` of one such network per axis when ``config.axes`` has several."""
    if len(config.axes) > 1:
        from .axis_ensemble import AxisEnsemble

        single = replace(config, axes=(0,), swap_in_plane=(), class_members=())
        return AxisEnsemble([build_network(single, num_classes) for _ in config.axes], config.axes)
    if config.arch == "plain":
        if config.dims != 2:
            raise SparseSegError("the plain U-Net is 2D only", "Use arch monai for 3D networks.")
        from .plain_unet import PlainUNet2D

        return PlainUNet2D(config.in_channels, num_classes, config.channels, config.dropout)
    return UNet(
        spatial_dims=config.dims,
        in_channels=config.in_channels,
        out_channels=num_classes,
        channels=config.channels,
        strides=(2,) * (len(config.channels) - 1),
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
    )


def default_patch_size(shape: tuple[int, int, int], config: NetworkConfig, cap: int | None = None) -> tuple[int, ...]:
    """A patch size that covers the volume where it fits, capped per axis, in multiples the net needs.

    2D patches are in-plane (axes 1 and 2 of the ``(k, j, i)`` array); 3D patches cover all three axes.
    """
    cap = cap or (256 if config.dims == 2 else 64)
    axes = shape[1:] if config.dims == 2 else shape
    multiple = config.size_multiple
    return tuple(min(int(math.ceil(n / multiple) * multiple), max(multiple, cap // multiple * multiple)) for n in axes)

