"""One configurable 2D U-Net: the deferred neural renderer of neural textures, the pix2pix generator, the
rendering network of DeepVoxels.

Encoder: `depth` stride-2 conv blocks (channels width, 2*width, ... capped at max_width); decoder: the mirror
image with upsampling (transposed conv or bilinear + conv) and optional skip connections (concatenation) from
the encoder level of the same resolution. Inputs whose size is not a multiple of 2**depth are padded
(replicate) and the output is cropped back, so any H, W works.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.nn.blocks import activation, conv_block, norm_layer

OUT_ACTIVATIONS = ("sigmoid", "tanh", "none")


class UNet(nn.Module):
    """x [B,in_channels,H,W] -> [B,out_channels,H,W].

    width: channels of the first level; depth: number of stride-2 downsamplings (the bottleneck is H/2**depth);
    max_width: channel cap per level; norm: 'instance' | 'batch' | 'group' | 'none' (see nn.blocks.norm_layer);
    act: hidden activation ('lrelu', 'relu', ...); skips: concatenate encoder features into the decoder (False
    gives a plain encoder-decoder); up: 'transpose' (stride-2 transposed conv, as in pix2pix and the deferred
    neural renderer) or 'bilinear' (upsample then 3x3 conv: no checkerboard artifacts); out_act: 'sigmoid'
    (images in [0,1]), 'tanh' ([-1,1]) or 'none'; dropout: dropout rate in the innermost decoder blocks.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 32, depth: int = 4, max_width: int = 256,
                 norm: str = "instance", act: str = "lrelu", skips: bool = True,
                 up: Literal["transpose", "bilinear"] = "transpose", out_act: str = "sigmoid", dropout: float = 0.0):
        super().__init__()
        if depth < 1:
            raise ValueError(f"UNet depth must be >= 1, got {depth}")
        if out_act not in OUT_ACTIVATIONS:
            raise ValueError(f"unknown UNet out_act '{out_act}'; valid: {', '.join(OUT_ACTIVATIONS)}")
        if up not in ("transpose", "bilinear"):
            raise ValueError(f"unknown UNet up '{up}'; valid: transpose, bilinear")
        self.depth, self.skips, self.out_act = depth, skips, out_act
        chans = [min(width * 2**i, max_width) for i in range(depth + 1)]  # level i has resolution H / 2**i
        self.stem = conv_block(in_channels, chans[0], norm="none", act=act)
        self.down = nn.ModuleList(conv_block(chans[i], chans[i + 1], stride=2, norm=norm, act=act) for i in range(depth))
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in reversed(range(depth)):  # from the bottleneck (level depth) to level i
            if up == "transpose":
                self.up.append(conv_block(chans[i + 1], chans[i], stride=2, norm=norm, act=act, transpose=True))
            else:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                             conv_block(chans[i + 1], chans[i], norm=norm, act=act)))
            cin = chans[i] * 2 if skips else chans[i]
            block = [nn.Conv2d(cin, chans[i], 3, padding=1), norm_layer(norm, chans[i]), activation(act)]
            if dropout > 0 and i >= depth - 2:
                block.append(nn.Dropout2d(dropout))
            self.fuse.append(nn.Sequential(*block))
        self.head = nn.Conv2d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-H) % m, (-W) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        h = self.stem(x)
        feats = [h]
        for down in self.down:
            h = down(h)
            feats.append(h)
        for k, (up, fuse) in enumerate(zip(self.up, self.fuse)):
            h = up(h)
            skip = feats[self.depth - 1 - k]
            h = fuse(torch.cat([h, skip], 1) if self.skips else h)
        y = self.head(h)
        if self.out_act == "sigmoid":
            y = torch.sigmoid(y)
        elif self.out_act == "tanh":
            y = torch.tanh(y)
        return y[..., :H, :W]
