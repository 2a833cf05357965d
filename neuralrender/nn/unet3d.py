"""A 3D U-Net over feature volumes [B,C,D,H,W] (DeepVoxels' "inpainting" network over the voxel grid).

Same shape as the 2D `nn.unet.UNet`: a stem, `depth` stride-2 conv blocks (channels width, 2*width, ...
capped at max_width), a mirrored decoder (trilinear upsampling + conv) with skip concatenations, and a 1x1x1
head. Inputs whose sizes are not multiples of 2**depth are padded (replicate) and cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.nn.blocks import activation, norm_layer


def norm3d(kind: str, channels: int) -> nn.Module:
    """'batch' | 'instance' | 'group' | 'none' for 3D volumes (nn.blocks.norm_layer with dims=3)."""
    return norm_layer(kind, channels, dims=3)


class Conv3d(nn.Conv3d):
    """nn.Conv3d with a faster CPU path for one volume: for a batch of 1 with C*D*H <= 20480, PyTorch's CPU
    convolution picks its native ("slow_conv3d") kernel over oneDNN, which on one thread is 4-7x slower
    forward + backward for DeepVoxels' 32^3 grids (16 channels, 3^3 kernel: 0.19 s vs 0.02 s; 1^3 kernels are
    left to the native path, which is faster there). Here such a volume is
    split into two halves along D, each with the rows its outputs need (a halo), and convolved as a batch of
    2 (oneDNN); the result is identical up to float rounding (tests/test_deepvoxels_blocks.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s, p = self.kernel_size[0], self.stride[0], self.padding[0]
        if (x.dim() != 5 or x.shape[0] != 1 or self.kernel_size == (1, 1, 1) or x.device.type != "cpu" or x.dtype != torch.float32
                or not torch.backends.mkldnn.is_available() or x.shape[1] * x.shape[2] * x.shape[3] > 20480
                or self.groups != 1 or self.dilation != (1, 1, 1) or self.padding_mode != "zeros"
                or isinstance(self.padding, str)):
            return super().forward(x)
        Do = (x.shape[2] + 2 * p - k) // s + 1
        if Do < 2:
            return super().forward(x)
        h = (Do + 1) // 2  # output rows of the first half; the second has Do - h (<= h)
        n = (h - 1) * s + k  # input rows (D-padded) that h output rows read
        xp = F.pad(x, (0, 0, 0, 0, p, p + max(0, h * s + n - (x.shape[2] + 2 * p))))
        halves = torch.cat([xp[:, :, :n], xp[:, :, h * s:h * s + n]])
        y = F.conv3d(halves, self.weight, self.bias, self.stride, (0, self.padding[1], self.padding[2]))
        return torch.cat([y[:1], y[1:, :, :Do - h]], 2)


def conv3d_block(cin: int, cout: int, kernel: int = 3, stride: int = 1, norm: str = "group",
                 act: str = "lrelu") -> nn.Sequential:
    """Conv3d -> norm -> activation; stride 2 halves D, H and W."""
    return nn.Sequential(Conv3d(cin, cout, kernel, stride, padding=kernel // 2), norm3d(norm, cout), activation(act))


class UNet3d(nn.Module):
    """x [B,in_channels,D,H,W] -> [B,out_channels,D,H,W].

    width: channels of the first level; depth: stride-2 downsamplings; max_width: channel cap; norm: see
    `norm3d`; act: hidden activation; residual: add the input to the output (needs in == out channels), so
    an untrained net starts close to the identity on the grid.
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 16, depth: int = 2, max_width: int = 64,
                 norm: str = "group", act: str = "lrelu", residual: bool = False):
        super().__init__()
        if depth < 1:
            raise ValueError(f"UNet3d depth must be >= 1, got {depth}")
        if residual and in_channels != out_channels:
            raise ValueError(f"UNet3d residual needs in_channels == out_channels, got {in_channels}, {out_channels}")
        self.depth, self.residual = depth, residual
        chans = [min(width * 2**i, max_width) for i in range(depth + 1)]
        self.stem = conv3d_block(in_channels, chans[0], norm="none", act=act)
        self.down = nn.ModuleList(conv3d_block(chans[i], chans[i + 1], stride=2, norm=norm, act=act) for i in range(depth))
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in reversed(range(depth)):
            self.up.append(conv3d_block(chans[i + 1], chans[i], norm=norm, act=act))
            self.fuse.append(conv3d_block(2 * chans[i], chans[i], norm=norm, act=act))
        self.head = Conv3d(chans[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"UNet3d expects [B,C,D,H,W], got {tuple(x.shape)}")
        D, H, W = x.shape[-3:]
        m = 2**self.depth
        pads = ((-W) % m, (-H) % m, (-D) % m)
        xp = F.pad(x, (0, pads[0], 0, pads[1], 0, pads[2]), mode="replicate") if any(pads) else x
        h = self.stem(xp)
        feats = [h]
        for down in self.down:
            h = down(h)
            feats.append(h)
        for k, (up, fuse) in enumerate(zip(self.up, self.fuse)):
            skip = feats[self.depth - 1 - k]
            h = up(F.interpolate(h, size=skip.shape[-3:], mode="trilinear", align_corners=False))
            h = fuse(torch.cat([h, skip], 1))
        y = self.head(h)[..., :D, :H, :W]
        return x + y if self.residual else y
