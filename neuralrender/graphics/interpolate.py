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
    P = B * H * W
    fid_flat = fragments.face_id.reshape(P)
    covered = fid_flat >= 0
    # mostly covered: work on every pixel (background bary is 0, so it interpolates to 0); otherwise only on the
    # covered pixels. Same result, whichever is cheaper.
    pix = None if 2 * int(covered.sum()) > P else torch.nonzero(covered).squeeze(1)
    fids = fid_flat.clamp(min=0) if pix is None else fid_flat.index_select(0, pix)
    idx = faces[fids]  # [N,3]
    if attr.dim() == 3:
        img = torch.arange(P, device=attr.device) if pix is None else pix
        idx = idx + (torch.div(img, H * W, rounding_mode="floor") * attr.shape[1]).unsqueeze(-1)
        attr = attr.reshape(-1, C)
    lam = fragments.bary.reshape(P, 3)
    lam = (lam if pix is None else lam.index_select(0, pix)).to(attr.dtype)  # [N,3]
    a0, a1, a2 = attr[idx[:, 0]], attr[idx[:, 1]], attr[idx[:, 2]]
    vals = a0 * lam[:, 0:1] + a1 * lam[:, 1:2] + a2 * lam[:, 2:3]

    def scatter(x):
        return x if pix is None else torch.zeros(P, *x.shape[1:], dtype=x.dtype, device=x.device).index_copy(0, pix, x)

    out = scatter(vals).view(B, H, W, C)
    if not return_derivatives:
        return out
    db = fragments.bary_derivatives().reshape(P, 3, 2)
    db = (db if pix is None else db.index_select(0, pix)).to(attr.dtype)  # [N,3,2], 0 on background
    dvals = a0.unsqueeze(-1) * db[:, 0:1] + a1.unsqueeze(-1) * db[:, 1:2] + a2.unsqueeze(-1) * db[:, 2:3]
    return out, scatter(dvals).view(B, H, W, C, 2)
