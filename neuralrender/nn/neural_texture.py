"""A learned multi-channel texture on a mesh's UV atlas, stored as a Laplacian hierarchy (Thies et al. 2019).

Level k is a [1,C,S/2**k,S/2**k] parameter; a pixel's features are the sum of the levels' samples, each level
sampled at its own resolution (`full()` shows the texture as one S x S image: the levels bilinearly upsampled
and summed). A pixel's gradient therefore reaches the finest texel under it AND the coarse texels around it, so
texels that no training view sees well still get values from their neighbourhood (the "mipmap" prior of the
paper). Sampling goes through the graphics core's `texture()` (bilinear, or trilinear mip-mapped).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.texture import texture
from neuralrender.graphics.warp import make_coordinate_grid


class NeuralTexture(nn.Module):
    """channels C, size S (finest level S x S), levels L (S must be divisible by 2**(L-1)).

    lr_scale multiplies the stored values (texture = lr_scale * stored): with Adam this makes the texture
    learn lr_scale times faster than networks trained with the same learning rate, without a second
    optimizer. init_std: standard deviation of the initial values of the coarsest level (the others start at 0).
    """

    def __init__(self, channels: int = 16, size: int = 512, levels: int = 4, lr_scale: float = 1.0,
                 init_std: float = 0.1):
        super().__init__()
        if levels < 1 or size % 2 ** (levels - 1):
            raise NeuralRenderError(f"neural texture: size {size} must be divisible by 2**(levels-1) = {2 ** (levels - 1)}")
        self.channels, self.size, self.lr_scale = channels, size, float(lr_scale)
        self.levels = nn.ParameterList()
        for k in range(levels):
            s = size // 2**k
            init = torch.randn(1, channels, s, s) * (init_std / self.lr_scale) if k == levels - 1 else torch.zeros(1, channels, s, s)
            self.levels.append(nn.Parameter(init))

    def full(self) -> torch.Tensor:
        """The texture [1,C,S,S]: sum of the levels upsampled bilinearly to S x S (times lr_scale)."""
        out = self.levels[0]
        for lev in list(self.levels)[1:]:
            out = out + F.interpolate(lev, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return out * self.lr_scale

    def forward(self, uv: torch.Tensor, mask: torch.Tensor | None = None, filter: str = "bilinear",
                uv_da: torch.Tensor | None = None) -> torch.Tensor:
        """Sample at uv [B,H,W,2] (v up) -> features [B,C,H,W]; mask [B,H,W] bool zeroes the background.
        filter: 'bilinear' | 'mipmap' (uv_da [B,H,W,2,2] from interpolate(..., return_derivatives=True)).

        Each level is sampled at its own resolution and the samples are summed (cost ~ pixels x levels, not
        texels): the same as sampling `full()` up to the difference between bilinear sampling of a coarse level
        and of its bilinear upsampling (a slight extra smoothing of the coarse levels in `full()`)."""
        out = None
        for lev in self.levels:
            f = texture(lev, uv, filter=filter, uv_da=uv_da)  # linear in the texture: scale once at the end
            out = f if out is None else out + f
        out = out * self.lr_scale
        if mask is not None:
            out = out * mask.unsqueeze(1).to(out.dtype)
        return out

    # ---- editing ----------------------------------------------------------------------------------
    @torch.no_grad()
    def edit_(self, fn) -> "NeuralTexture":
        """Edit the texture in place: fn(texture [C,S,S]) -> [C,S,S], given `full()`; the difference is added
        to the finest level, so texels fn leaves unchanged render exactly as before."""
        old = self.full()[0]
        new = fn(old.clone())
        if new.shape != old.shape:
            raise NeuralRenderError(f"neural texture edit returned shape {tuple(new.shape)}, expected {tuple(old.shape)}")
        self.levels[0][0].add_((new - old) / self.lr_scale)
        return self


def screen_uv(batch: int, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The uv [B,H,W,2] of an image's pixel centres on the whole screen, in the texture module's v-up convention:
    pixel (r, c) -> u = (c + 0.5) / W, v = 1 - (r + 0.5) / H (row 0 at the top is v near 1). A texture of H x W
    texels sampled there returns its texels exactly; at half the resolution each pixel gets the mean of 2x2 texels."""
    g = make_coordinate_grid(height, width, dtype, device)  # (x, y) of the pixel centres in [-1, 1], y down
    uv = torch.stack([(g[..., 0] + 1) / 2, (1 - g[..., 1]) / 2], -1)  # [H,W,2], v up
    return uv.expand(batch, height, width, 2)


class ScreenTexture(nn.Module):
    """A learned C-channel image pinned to the screen ("canvas"): a `NeuralTexture` sampled at each output pixel's
    screen position (`screen_uv`), forward(x [B,*,H,W]) -> [B,C,H,W] for any H, W (bilinear, so it is
    resolution-independent). For a static camera it gives a generator a per-pixel learned input for the fixed
    background (the deferred-neural-rendering neural texture, in screen space instead of UV space); it carries no
    meaning for a moving camera. lr_scale as NeuralTexture (10: the neural-textures method's default)."""

    def __init__(self, channels: int, size: int = 64, levels: int = 4, lr_scale: float = 10.0, init_std: float = 0.1):
        super().__init__()
        if channels < 1:
            raise NeuralRenderError(f"canvas: channels must be >= 1 (0 = no canvas), got {channels}")
        self.texture = NeuralTexture(channels, size, levels, lr_scale=lr_scale, init_std=init_std)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, H, W = x.shape
        feats = self.texture(screen_uv(1, H, W, x.device, x.dtype))
        return feats.expand(B, -1, -1, -1)
