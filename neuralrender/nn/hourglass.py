"""Hourglass encoder-decoder of the image-animation models (Monkey-Net, FOMM, co-part segmentation).

Encoder: `num_blocks` down blocks (3x3 conv -> norm -> ReLU -> 2x2 average pool), channels
block_expansion*2, *4, ... capped at max_features. Decoder: the mirror (nearest 2x upsample -> 3x3 conv ->
norm -> ReLU), each level concatenated with the encoder features of the same resolution. The output is the
last decoder level concatenated with the input, so it has `out_channels = block_expansion + in_channels`
channels at the input resolution. This differs from `nn.unet.UNet` (strided convs, a 1x1 head, an output
activation): the animation models read the raw multi-channel features and put their own heads on top.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.nn.blocks import norm_layer


class DownBlock(nn.Module):
    """[B,cin,H,W] -> [B,cout,H/2,W/2]: conv3x3 -> norm -> ReLU -> avg-pool 2."""

    def __init__(self, cin: int, cout: int, norm: str = "batch"):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), norm_layer(norm, cout), nn.ReLU(),
                                  nn.AvgPool2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UpBlock(nn.Module):
    """[B,cin,H,W] -> [B,cout,2H,2W]: nearest upsample -> conv3x3 -> norm -> ReLU."""

    def __init__(self, cin: int, cout: int, norm: str = "batch"):
        super().__init__()
        self.body = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, padding=1),
                                  norm_layer(norm, cout), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Hourglass(nn.Module):
    """x [B,in_channels,H,W] -> features [B,out_channels,H,W], out_channels = block_expansion + in_channels.

    H and W must be multiples of 2**num_blocks (a clear error otherwise).
    """

    def __init__(self, in_channels: int, block_expansion: int = 32, num_blocks: int = 3, max_features: int = 256,
                 norm: str = "batch"):
        super().__init__()
        if num_blocks < 1:
            raise NeuralRenderError(f"Hourglass num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        chans = [in_channels] + [min(max_features, block_expansion * 2 ** (i + 1)) for i in range(num_blocks)]
        self.down = nn.ModuleList(DownBlock(chans[i], chans[i + 1], norm) for i in range(num_blocks))
        self.up = nn.ModuleList()
        cin = chans[-1]
        for i in reversed(range(num_blocks)):  # produce level i (resolution H / 2**i)
            cout = block_expansion if i == 0 else min(max_features, block_expansion * 2 ** i)
            self.up.append(UpBlock(cin, cout, norm))
            cin = cout + chans[i]
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 2**self.num_blocks
        if x.shape[-1] % m or x.shape[-2] % m:
            raise NeuralRenderError(f"Hourglass with {self.num_blocks} blocks needs H and W divisible by {m}, "
                                    f"got {tuple(x.shape[-2:])}")
        feats = [x]
        for d in self.down:
            feats.append(d(feats[-1]))
        h = feats.pop()
        for u in self.up:
            h = torch.cat([u(h), feats.pop()], 1)
        return h
