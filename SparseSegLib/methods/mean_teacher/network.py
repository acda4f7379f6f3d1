"""The student network: the seed's 3D U-Net (or its 2D form, ``dims=2``) with dropout at the bottleneck, saved as an ordinary SparseSeg model.

The network is the engine's MONAI ``UNet`` (:func:`~SparseSegLib.engine.networks.build_network`) without its
all-layer dropout; the seed's single dropout (p 0.3, at the bottleneck) is added as a forward hook on the
innermost block. A hook holds no weights, so the model a run saves loads with the plain engine
(``sparseseg predict``, the Slicer module) and predicts identically: dropout is off in eval mode anyway.
The teacher (a deep copy) keeps the hook, which is what makes its Monte Carlo passes stochastic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...engine.networks import NetworkConfig, build_network


def bottleneck(network: torch.nn.Module) -> torch.nn.Module:
    """The innermost block of a MONAI ``UNet`` (the deepest ``SkipConnection``'s submodule)."""
    from monai.networks.layers.simplelayers import SkipConnection

    inner = None
    for module in network.modules():
        if isinstance(module, SkipConnection):
            inner = module.submodule
    return inner if inner is not None else network


def add_bottleneck_dropout(network: torch.nn.Module, p: float) -> torch.nn.Module:
    """Dropout ``p`` on the bottleneck's output whenever the network is in train mode (in place)."""
    if p <= 0:
        return network
    module = bottleneck(network)

    def hook(block: torch.nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        return F.dropout(output, p=p, training=block.training)

    module.register_forward_hook(hook)
    return network


def network_config(channels: tuple[int, ...], num_res_units: int, dims: int = 3) -> NetworkConfig:
    """The configuration stored with the model (dropout lives in the hook, so it says 0); a 2D network segments
    slices across array axis 0."""
    return NetworkConfig(dims=dims, channels=tuple(channels), num_res_units=int(num_res_units), dropout=0.0)


def build_student(config: NetworkConfig, num_classes: int, dropout: float) -> torch.nn.Module:
    return add_bottleneck_dropout(build_network(config, num_classes), dropout)
