"""The plain 2D U-Net of the incremental self-labelling paper (Anderson et al. 2025).

Two 3x3 convolutions + ReLU per block, 2x2 max-pooling down, 2x2 transposed convolutions up, dropout
at the bottleneck, a 1x1 output convolution. With filters 8-16-32-64, bottleneck 128, one input
channel and one output channel it has exactly the paper's 485,673 parameters (Table 4, BRAIN_2); we
output one logit per class (2 for the binary task, trained with cross-entropy = the paper's BCE).
"""

from __future__ import annotations

import torch
from torch import nn


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(outputs, outputs, 3, padding=1), nn.ReLU(inplace=True),
    )


class PlainUNet2D(nn.Module):
    """``channels`` = filters per level, the last being the bottleneck (paper: 8, 16, 32, 64, 128)."""

    def __init__(self, in_channels: int, out_channels: int, channels: tuple[int, ...] = (8, 16, 32, 64, 128),
                 dropout: float = 0.5) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.down = nn.ModuleList()
        previous = in_channels
        for width in channels[:-1]:
            self.down.append(_block(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(previous, channels[-1])
        self.dropout = nn.Dropout2d(dropout) if dropout else nn.Identity()
        self.up = nn.ModuleList()
        self.decode = nn.ModuleList()
        previous = channels[-1]
        for width in reversed(channels[:-1]):
            self.up.append(nn.ConvTranspose2d(previous, width, 2, stride=2))
            self.decode.append(_block(2 * width, width))
            previous = width
        self.head = nn.Conv2d(previous, out_channels, 1)
        for module in self.modules():  # Keras' he_normal, as the paper's U-Net (trains without normalisation layers)
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for up, decode, skip in zip(self.up, self.decode, reversed(skips)):
            x = decode(torch.cat([up(x), skip], dim=1))
        return self.head(x)
