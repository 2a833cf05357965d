"""Residual stacks and the convolutional encoder / decoder of the VQ-VAE family (van den Oord et al. 2017).

The residual block is the project's one (`nn.generators.ResnetBlock`: x + conv3(ReLU(conv3(x))), here without
normalization, as in the VQ-VAE paper's ReLU-conv stacks).
"""

from __future__ import annotations

from torch import nn

from neuralrender.nn.generators import ResnetBlock


def residual_stack(channels: int, blocks: int) -> nn.Sequential:
    """[B,C,H,W] -> [B,C,H,W]: `blocks` residual blocks without normalization, then a ReLU."""
    return nn.Sequential(*[ResnetBlock(channels, norm="none") for _ in range(blocks)], nn.ReLU())


def down_encoder(cin: int, hidden: int, blocks: int, cout: int, downsamplings: int = 2) -> nn.Sequential:
    """[B,cin,H,W] -> [B,cout,H/2^d,W/2^d]: d stride-2 4x4 convs (ReLU between), a 3x3 conv, residual blocks,
    a 1x1 conv. H and W must be multiples of 2^d."""
    layers, c = [], cin
    for i in range(downsamplings):
        nxt = hidden // 2 if (i == 0 and downsamplings > 1) else hidden
        layers += [nn.Conv2d(c, nxt, 4, 2, 1), nn.ReLU()]
        c = nxt
    layers += [nn.Conv2d(c, hidden, 3, 1, 1), residual_stack(hidden, blocks), nn.Conv2d(hidden, cout, 1)]
    return nn.Sequential(*layers)


def up_decoder(cin: int, hidden: int, blocks: int, cout: int, upsamplings: int = 2) -> nn.Sequential:
    """[B,cin,h,w] -> [B,cout,h*2^u,w*2^u] (no output activation): a 3x3 conv, residual blocks, u stride-2 4x4
    transposed convs (ReLU between)."""
    layers, c = [nn.Conv2d(cin, hidden, 3, 1, 1), residual_stack(hidden, blocks)], hidden
    for i in range(upsamplings):
        last = i == upsamplings - 1
        nxt = cout if last else (hidden // 2 if i == upsamplings - 2 else hidden)
        layers.append(nn.ConvTranspose2d(c, nxt, 4, 2, 1))
        if not last:
            layers.append(nn.ReLU())
        c = nxt
    return nn.Sequential(*layers)
