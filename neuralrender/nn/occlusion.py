"""The occlusion network of DeepVoxels: which sample along each target ray is visible.

Input: the canonical view frustum volume [B,C,D,H,W] (grid features resampled along each pixel's ray at D
camera depths, see graphics.voxels.sample_along_rays) and the D depths. A few 3D convolutions (over the
features plus a normalized-depth channel) give one logit per sample; a softmax over the depth axis turns
them into visibility weights that sum to one along every ray. Outputs: the visibility-weighted feature
image (the input of the 2D rendering network) and the expected depth sum_k w_k z_k. Nothing supervises the
depth: it is whatever visibility best explains the images.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralrender.nn.unet3d import Conv3d, conv3d_block


class OcclusionNet(nn.Module):
    """frustum [B,C,D,H,W], depths [D] (camera z of each bin) ->
    (features [B,C,H,W], expected depth [B,1,H,W], weights [B,1,D,H,W] summing to 1 over D).

    hidden: channels of the hidden 3D convs; layers: number of 3x3x3 conv blocks before the 1-channel head.
    temperature: divides the logits before the softmax.
    """

    def __init__(self, in_channels: int, hidden: int = 16, layers: int = 2, norm: str = "none",
                 temperature: float = 1.0):
        super().__init__()
        blocks, c = [], in_channels + 1
        for _ in range(layers):
            blocks.append(conv3d_block(c, hidden, norm=norm, act="lrelu"))
            c = hidden
        self.body = nn.Sequential(*blocks)
        self.head = Conv3d(c, 1, 3, padding=1)
        self.temperature = temperature

    def forward(self, frustum: torch.Tensor, depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """depths: [D] (one set of bin depths for all rays) or [B,D,H,W] (per ray, e.g. samples inside the
        grid box); the depth channel is the bin's position along its ray, -1 (first) .. +1 (last)."""
        if frustum.dim() != 5:
            raise ValueError(f"OcclusionNet expects a frustum volume [B,C,D,H,W], got {tuple(frustum.shape)}")
        B, C, D, H, W = frustum.shape
        if depths.shape not in ((D,), (B, D, H, W)):
            raise ValueError(f"OcclusionNet: depths must be [{D}] or [{B},{D},{H},{W}], got {tuple(depths.shape)}")
        z = depths.to(frustum)
        z = z.view(1, 1, D, 1, 1) if z.dim() == 1 else z.unsqueeze(1)
        zn = torch.linspace(-1.0, 1.0, D, device=z.device, dtype=z.dtype) if D > 1 else z.new_zeros(1)
        zc = zn.view(1, 1, D, 1, 1).expand(B, 1, D, H, W)
        logits = self.head(self.body(torch.cat([frustum, zc], 1))) / self.temperature
        w = torch.softmax(logits, dim=2)
        feats = (w * frustum).sum(2)
        depth = (w * z).sum(2)
        return feats, depth, w
