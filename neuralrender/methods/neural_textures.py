"""`neural-textures`: Deferred Neural Rendering (Thies, Zollhöfer, Nießner, SIGGRAPH 2019).

rasterize the proxy mesh -> per-pixel UVs -> sample a learned Laplacian-pyramid neural texture -> multiply
channels 3..11 by the 9 SH basis functions of the per-pixel view direction -> U-Net -> RGB. The first three
texture channels are also regressed to the image directly (the paper's auxiliary loss), which makes them a
plain colour texture and gives the U-Net a good starting point. See docs/methods/neural_textures.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.shading import sh_basis
from neuralrender.losses.reconstruction import l1_loss
from neuralrender.methods._deferred import DeferredConfig, DeferredMethod
from neuralrender.nn.neural_texture import NeuralTexture
from neuralrender.registry import register


@dataclass
class NeuralTexturesConfig(DeferredConfig):
    channels: int = field(default=16, metadata={"help": "neural texture channels (>= 12 with view conditioning)"})
    texture_size: int = field(default=512, metadata={"help": "finest neural texture level, texels per side"})
    texture_levels: int = field(default=4, metadata={"help": "levels of the Laplacian texture pyramid"})
    texture_lr_scale: float = field(default=10.0, metadata={
        "help": "the texture learns this many times faster than the U-Net (value scaling under Adam)"})
    filter: Literal["bilinear", "mipmap"] = field(default="bilinear", metadata={"help": "texture sampling: bilinear | mipmap"})
    view_conditioning: bool = field(default=True, metadata={
        "help": "multiply channels 3..11 by the SH basis of the view direction"})
    direct_weight: float = field(default=1.0, metadata={
        "help": "weight of the L1 loss on the first 3 texture channels (regressed to RGB directly)"})


@register("neural-textures")
class NeuralTextures(DeferredMethod):
    description = "deferred neural rendering: learned neural texture on a mesh + U-Net renderer (Thies et al. 2019)"
    Config = NeuralTexturesConfig

    def __init__(self, cfg: NeuralTexturesConfig, info):
        if cfg.view_conditioning and cfg.channels < 12:
            from neuralrender.errors import ConfigError

            raise ConfigError(f"channels = {cfg.channels}: view conditioning needs at least 12 (3 RGB + 9 SH)")
        self.in_channels = cfg.channels
        super().__init__(cfg, info)
        self.texture = NeuralTexture(cfg.channels, cfg.texture_size, cfg.texture_levels, lr_scale=cfg.texture_lr_scale)

    def features(self, cams, frags) -> torch.Tensor:
        """Sampled neural features [B,C,H,W] (0 on background), before view conditioning."""
        mask = frags.mask
        if self.cfg.filter == "mipmap":
            uv, uv_da = interpolate(self.uvs, frags, self.face_uvs, return_derivatives=True)
            return self.texture(uv, mask, filter="mipmap", uv_da=uv_da)
        uv = interpolate(self.uvs, frags, self.face_uvs)
        return self.texture(uv, mask)

    def inputs(self, cams, frags):
        feat = self.features(cams, frags)
        x = feat
        if self.cfg.view_conditioning:
            _, dirs = cams.rays()
            sh = sh_basis(dirs).permute(0, 3, 1, 2).to(feat.dtype)  # [B,9,H,W]
            x = torch.cat([feat[:, :3], feat[:, 3:12] * sh, feat[:, 12:]], 1)
        return x, {"direct": feat[:, :3]}

    def extra_loss(self, out, target):
        if self.cfg.direct_weight <= 0:
            return target.new_zeros(()), {}
        ld = l1_loss(out["direct"], target, out["mask"])
        return self.cfg.direct_weight * ld, {"l1_direct": ld.item()}

    @torch.no_grad()
    def render(self, batch):
        target = batch["image"]
        out = self(self.cameras_of(batch))
        return {"target_vs_prediction": torch.cat([target, out["rgb"]], 0),
                "texture_rgb_channels": out["direct"].clamp(0, 1)}
