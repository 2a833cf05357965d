"""Interpolate per-vertex attributes over rasterized fragments (differentiable)."""

from __future__ import annotations

import torch
from torch import Tensor

from neuralrender.errors import NeuralRenderError


def interpolate(attr: Tensor, fragments, faces: Tensor | None = None, return_derivatives: bool = False):
    """Interpolate vertex attributes with the perspective-correct barycentrics of ``fragments``.

    attr [V,C] or [B,V,C]; faces [F,3] indexes attr (defaults to fragments.faces; for UV seams pass
    faces=face_uvs with attr=uvs, where face_uvs has the same number of faces as the rasterized mesh).
    Returns out [B,H,W,C] (0 on background); with return_derivatives=True also d out / d(x, y) in pixels
    [B,H,W,C,2] (0 on background; used for mip-level selection).
    """
    if faces is None:
        faces = fragments.faces
    if faces is None:
        raise NeuralRenderError("interpolate: no faces given and the fragments carry none")
    if attr.dim() not in (2, 3):
        raise NeuralRenderError(f"interpolate: attr must be [V,C] or [B,V,C], got shape {tuple(attr.shape)}")
    faces = faces.to(attr.device).long()
    B, H, W = fragments.face_id.shape
    if attr.dim() == 3 and attr.shape[0] not in (1, B):
        raise NeuralRenderError(f"interpolate: attr batch {attr.shape[0]} does not match fragments batch {B}")
    if attr.dim() == 3 and attr.shape[0] == 1:
        attr = attr[0]
    if fragments.verts_clip is not None and fragments.faces is not None and faces.shape[0] != fragments.faces.shape[0]:
        raise NeuralRenderError(f"interpolate: faces has {faces.shape[0]} rows but the rasterized mesh has "
                                f"{fragments.faces.shape[0]} faces")
    if faces.numel() and int(faces.max()) >= attr.shape[-2]:
        raise NeuralRenderError(f"interpolate: faces index up to {int(faces.max())} but attr has {attr.shape[-2]} rows")
    C = attr.shape[-1]
    # every pixel, background included: its barycentrics are 0, so it interpolates to 0 (no masking pass)
    P = B * H * W
    fid = fragments.face_id.reshape(P).clamp(min=0)
    idx = faces[fid]  # [P,3]
    if attr.dim() == 3:
        idx = idx + (torch.arange(B, device=attr.device) * attr.shape[1]).repeat_interleave(H * W).unsqueeze(-1)
        attr = attr.reshape(-1, C)
    fa = attr[idx.reshape(-1)].view(P, 3, C)
    lam = fragments.bary.reshape(P, 1, 3).to(attr.dtype)
    out = torch.bmm(lam, fa).view(B, H, W, C)
    if not return_derivatives:
        return out
    db = fragments.bary_derivatives().reshape(P, 3, 2).to(attr.dtype)  # 0 on background
    dout = torch.bmm(fa.transpose(1, 2), db).view(B, H, W, C, 2)
    return out, dout
