"""Texture sampling with the v-up UV convention (OBJ/glTF): u=0 is the left column, v=0 the BOTTOM row.

Texel (r, c) of a [C,Ht,Wt] texture has its centre at u = (c + 0.5)/Wt, v = 1 - (r + 0.5)/Ht.
Works for RGB and many-channel (neural) textures; gradients reach both the texture and the uvs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from neuralrender.errors import NeuralRenderError

FILTERS = ("bilinear", "nearest", "mipmap")
WRAPS = ("clamp", "repeat")


def build_mipmaps(tex: Tensor, max_levels: int | None = None) -> list[Tensor]:
    """Mip pyramid of tex [B,C,H,W] (or [C,H,W]): level 0 is tex, each next level halves H and W by 2x2
    averaging (area resize for odd sizes) down to 1x1 (or max_levels levels)."""
    if tex.dim() == 3:
        tex = tex.unsqueeze(0)
    levels = [tex]
    while max(levels[-1].shape[-2:]) > 1 and (max_levels is None or len(levels) < max_levels):
        t = levels[-1]
        h, w = max(1, t.shape[-2] // 2), max(1, t.shape[-1] // 2)
        if t.shape[-2] % 2 == 0 and t.shape[-1] % 2 == 0:
            levels.append(F.avg_pool2d(t, 2))
        else:
            levels.append(F.interpolate(t, size=(h, w), mode="area"))
    return levels


def mip_level(uv_da: Tensor, tex_hw: tuple[int, int]) -> Tensor:
    """Continuous mip level [B,H,W] from uv derivatives uv_da [B,H,W,2,2] (d(u,v)/d(x,y) per pixel):
    log2 of the larger footprint length in texels, clamped at 0."""
    Ht, Wt = tex_hw
    scale = torch.tensor([Wt, Ht], dtype=uv_da.dtype, device=uv_da.device).view(1, 1, 1, 2, 1)
    d = uv_da * scale  # texels per pixel
    lx = d[..., 0].norm(dim=-1)
    ly = d[..., 1].norm(dim=-1)
    return torch.log2(torch.maximum(lx, ly).clamp_min(1e-12)).clamp_min(0.0)


def uv_derivatives_finite(uv: Tensor, mask: Tensor | None = None) -> Tensor:
    """Fallback uv derivatives [B,H,W,2,2] from finite differences of the uv image [B,H,W,2] (central where
    both neighbours are covered, one-sided otherwise)."""
    B, H, W, _ = uv.shape
    m = torch.ones(B, H, W, dtype=torch.bool, device=uv.device) if mask is None else mask

    def diff(axis):
        fwd = torch.zeros_like(uv)
        bwd = torch.zeros_like(uv)
        mf = torch.zeros_like(m)
        mb = torch.zeros_like(m)
        if axis == 2:
            fwd[:, :, :-1] = uv[:, :, 1:] - uv[:, :, :-1]
            mf[:, :, :-1] = m[:, :, 1:] & m[:, :, :-1]
            bwd[:, :, 1:] = uv[:, :, 1:] - uv[:, :, :-1]
            mb[:, :, 1:] = m[:, :, 1:] & m[:, :, :-1]
        else:
            fwd[:, :-1] = uv[:, 1:] - uv[:, :-1]
            mf[:, :-1] = m[:, 1:] & m[:, :-1]
            bwd[:, 1:] = uv[:, 1:] - uv[:, :-1]
            mb[:, 1:] = m[:, 1:] & m[:, :-1]
        n = (mf.float() + mb.float()).clamp_min(1).unsqueeze(-1)
        return (fwd * mf.unsqueeze(-1) + bwd * mb.unsqueeze(-1)) / n

    return torch.stack([diff(2), diff(1)], -1)


def _to_grid(uv: Tensor, wrap: str, tex_hw: tuple[int, int], padded: bool) -> Tensor:
    """uv [B,H,W,2] (v up) -> grid_sample grid [B,H,W,2] (align_corners=False)."""
    u, v = uv[..., 0], 1.0 - uv[..., 1]  # v now points down the rows
    if wrap == "repeat":
        Ht, Wt = tex_hw
        u, v = u - torch.floor(u), v - torch.floor(v)
        if padded:  # texture padded by one texel on each side; map [0,1] into the inner region
            u = (u * Wt + 1.0) / (Wt + 2)
            v = (v * Ht + 1.0) / (Ht + 2)
    return torch.stack([2.0 * u - 1.0, 2.0 * v - 1.0], -1)


def _sample(tex: Tensor, uv: Tensor, mode: str, wrap: str) -> Tensor:
    Ht, Wt = tex.shape[-2:]
    padded = wrap == "repeat" and mode == "bilinear"
    t = F.pad(tex, (1, 1, 1, 1), mode="circular") if padded else tex
    grid = _to_grid(uv, wrap, (Ht, Wt), padded)
    if t.shape[0] == 1 and grid.shape[0] > 1:
        t = t.expand(grid.shape[0], -1, -1, -1)
    return F.grid_sample(t, grid.to(t.dtype), mode=mode, padding_mode="border", align_corners=False)


def texture(tex: Tensor, uv: Tensor, filter: str = "bilinear", wrap: str = "clamp", mask: Tensor | None = None,
            uv_da: Tensor | None = None, mipmaps: list[Tensor] | None = None, max_mip_level: int | None = None) -> Tensor:
    """Sample tex [C,Ht,Wt] or [B,C,Ht,Wt] at uv [B,H,W,2] -> [B,C,H,W].

    filter: "bilinear", "nearest" or "mipmap" (trilinear: bilinear in the two nearest pyramid levels chosen
    from uv_da [B,H,W,2,2] = d(u,v)/d(x,y), e.g. from ``interpolate(..., return_derivatives=True)``; finite
    differences of uv when not given). wrap: "clamp" or "repeat". mask [B,H,W] bool zeroes uncovered pixels.
    ``mipmaps`` may pass a prebuilt ``build_mipmaps(tex)`` pyramid.
    """
    if filter not in FILTERS:
        raise NeuralRenderError(f"texture: filter must be one of {FILTERS}, got {filter!r}")
    if wrap not in WRAPS:
        raise NeuralRenderError(f"texture: wrap must be one of {WRAPS}, got {wrap!r}")
    if tex.dim() == 3:
        tex = tex.unsqueeze(0)
    if tex.dim() != 4:
        raise NeuralRenderError(f"texture: tex must be [C,Ht,Wt] or [B,C,Ht,Wt], got shape {tuple(tex.shape)}")
    if uv.dim() != 4 or uv.shape[-1] != 2:
        raise NeuralRenderError(f"texture: uv must be [B,H,W,2], got shape {tuple(uv.shape)}")
    if tex.shape[0] not in (1, uv.shape[0]):
        raise NeuralRenderError(f"texture: tex batch {tex.shape[0]} does not match uv batch {uv.shape[0]}")
    uv = uv.to(tex.dtype)
    if filter in ("bilinear", "nearest"):
        out = _sample(tex, uv, filter, wrap)
    else:
        levels = mipmaps if mipmaps is not None else build_mipmaps(tex)
        if max_mip_level is not None:
            levels = levels[: max_mip_level + 1]
        if uv_da is None:
            uv_da = uv_derivatives_finite(uv.detach(), mask)
        lod = mip_level(uv_da.detach().to(tex.dtype), tuple(tex.shape[-2:])).clamp(max=len(levels) - 1)
        l0 = lod.floor().long()
        frac = (lod - l0.to(lod.dtype)).unsqueeze(1)
        out = torch.zeros(uv.shape[0], tex.shape[1], uv.shape[1], uv.shape[2], dtype=tex.dtype, device=tex.device)
        used = torch.unique(torch.cat([l0.flatten(), (l0 + 1).clamp(max=len(levels) - 1).flatten()]))
        for k in used.tolist():
            w = torch.where(l0 == k, 1.0 - frac[:, 0], torch.zeros_like(frac[:, 0]))
            w = w + torch.where((l0 + 1) == k, frac[:, 0], torch.zeros_like(frac[:, 0]))
            if k == len(levels) - 1:  # top level: the fractional weight past the end stays here
                w = torch.where(l0 == k, torch.ones_like(w), w)
            out = out + w.unsqueeze(1) * _sample(levels[k], uv, "bilinear", wrap)
    if mask is not None:
        out = out * mask.unsqueeze(1).to(out.dtype)
    return out


def num_mip_levels(h: int, w: int) -> int:
    return int(math.floor(math.log2(max(h, w)))) + 1
