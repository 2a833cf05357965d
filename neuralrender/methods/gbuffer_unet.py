"""`pix2pix-gbuffer`: the deferred-rendering ablation without a neural texture.

The same U-Net, losses, data and augmentation as `neural-textures`, but its input is only the rasterized
G-buffer: UV coordinates (2), world-space normals (3), depth divided by the mean camera distance (1) and the
coverage mask. Whatever the scene's appearance is, the network must store it in its weights.
"""

from __future__ import annotations

import torch

from neuralrender.graphics.interpolate import interpolate
from neuralrender.methods._deferred import DeferredConfig, DeferredMethod
from neuralrender.registry import register


@register("pix2pix-gbuffer")
class GBufferUNet(DeferredMethod):
    description = "baseline for neural-textures: the same U-Net given only the rasterized G-buffer (uv, normals, depth)"
    Config = DeferredConfig
    in_channels = 6

    def inputs(self, cams, frags):
        uv = interpolate(self.uvs, frags, self.face_uvs)
        n = interpolate(self.normals, frags, self.faces)
        n = torch.nn.functional.normalize(n, dim=-1) * frags.mask.unsqueeze(-1)
        depth = (frags.depth / self.depth_scale).unsqueeze(-1)
        x = torch.cat([uv, n, depth], -1).permute(0, 3, 1, 2)
        return x, {}
