"""Analytic silhouette antialiasing (nvdiffrast-style) that passes gradients to vertex positions.

For every pair of horizontally or vertically adjacent pixels whose face ids differ, the nearer of the two
surfaces (background counts as infinitely far) is the foreground face. Its triangle edge that separates the
two pixel centres is found in screen space; at the crossing point t in [0,1] along the segment from the
foreground centre to the other centre:
- t > 0.5: the foreground triangle reaches into the other pixel, which is blended towards the foreground
  colour by (t - 0.5);
- t < 0.5: the other surface covers part of the foreground pixel, which is blended towards the other colour
  by (0.5 - t).
t is a differentiable function of the clip-space vertices, so colour differences across silhouettes produce
gradients w.r.t. geometry and camera. Edges shared with the neighbouring face (same two vertex indices) are
interior edges, not silhouettes, and are left alone. Faces with a vertex behind the camera are skipped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neuralrender.errors import NeuralRenderError


def _cross2(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _pairs(fid, depth, axis):
    """Adjacent pixel pairs along axis (2 = horizontal, 1 = vertical) with different face ids.
    Returns batch, (i, j) of the foreground pixel and of the other pixel."""
    if axis == 2:
        a, b = fid[:, :, :-1], fid[:, :, 1:]
    else:
        a, b = fid[:, :-1, :], fid[:, 1:, :]
    bi, ii, jj = torch.nonzero(a != b, as_tuple=True)
    i2, j2 = (ii, jj + 1) if axis == 2 else (ii + 1, jj)
    inf = torch.tensor(float("inf"), device=depth.device, dtype=depth.dtype)
    da = torch.where(fid[bi, ii, jj] >= 0, depth[bi, ii, jj], inf)
    db = torch.where(fid[bi, i2, j2] >= 0, depth[bi, i2, j2], inf)
    a_front = da <= db
    fi, fj = torch.where(a_front, ii, i2), torch.where(a_front, jj, j2)
    oi, oj = torch.where(a_front, i2, ii), torch.where(a_front, j2, jj)
    return bi, fi, fj, oi, oj


def antialias(image: Tensor, fragments, verts_clip: Tensor | None = None, faces: Tensor | None = None) -> Tensor:
    """Blend colours across silhouette edges. image [B,C,H,W]; fragments from ``rasterize``/``rasterize_clip``;
    verts_clip [B,V,4] and faces [F,3] default to the ones stored in fragments. Returns [B,C,H,W]."""
    verts_clip = fragments.verts_clip if verts_clip is None else verts_clip
    faces = fragments.faces if faces is None else faces
    if verts_clip is None or faces is None:
        raise NeuralRenderError("antialias: needs verts_clip and faces (pass them or use fragments that carry them)")
    if verts_clip.dim() == 2:
        verts_clip = verts_clip.unsqueeze(0)
    B, C, H, W = image.shape
    fid = fragments.face_id
    if tuple(fid.shape) != (B, H, W):
        raise NeuralRenderError(f"antialias: image {tuple(image.shape)} does not match fragments {tuple(fid.shape)}")
    faces = faces.to(fid.device).long()
    if verts_clip.shape[0] == 1 and B > 1:
        verts_clip = verts_clip.expand(B, -1, -1)
    w = verts_clip[..., 3]
    wpos = w > 1e-8
    ws = torch.where(wpos, w, torch.ones_like(w))
    scr = torch.stack([(verts_clip[..., 0] / ws + 1.0) * (W / 2.0), (verts_clip[..., 1] / ws + 1.0) * (H / 2.0)], -1)
    flat = image.permute(0, 2, 3, 1).reshape(B * H * W, C)
    out = flat
    depth = fragments.depth.detach()
    for axis in (2, 1):
        bi, fi, fj, oi, oj = _pairs(fid, depth, axis)
        if bi.numel() == 0:
            continue
        f = fid[bi, fi, fj]
        g = fid[bi, oi, oj]
        tri = faces[f]  # [N,3]
        ok = wpos[bi.unsqueeze(-1), tri].all(-1)
        if not bool(ok.any()):
            continue
        bi, fi, fj, oi, oj, f, g, tri = (x[ok] for x in (bi, fi, fj, oi, oj, f, g, tri))
        P = scr[bi.unsqueeze(-1), tri]  # [N,3,2]
        pf = torch.stack([fj, fi], -1).to(P.dtype) + 0.5
        po = torch.stack([oj, oi], -1).to(P.dtype) + 0.5
        a, b, c = P, P.roll(-1, 1), P.roll(-2, 1)  # edge k: vertex k -> k+1, opposite vertex k+2
        e = b - a
        side = _cross2(e, c - a)
        ef = _cross2(e, pf.unsqueeze(1) - a) * side.sign()
        eo = _cross2(e, po.unsqueeze(1) - a) * side.sign()
        cand = (ef >= 0) & (eo < 0) & (side != 0)
        t = ef / (ef - eo).where(cand, torch.ones_like(ef))
        t = torch.where(cand, t, torch.full_like(t, 2.0))
        tmin, k = t.min(1)
        has = tmin <= 1.0
        # interior edge: the other face has both edge vertices
        va = tri.gather(1, k.unsqueeze(1)).squeeze(1)
        vb = tri.gather(1, ((k + 1) % 3).unsqueeze(1)).squeeze(1)
        gt = faces[g.clamp(min=0)]
        shared = (g >= 0) & (gt == va.unsqueeze(1)).any(1) & (gt == vb.unsqueeze(1)).any(1)
        keep = has & ~shared
        if not bool(keep.any()):
            continue
        bi, fi, fj, oi, oj, tmin = (x[keep] for x in (bi, fi, fj, oi, oj, tmin))
        idx_f = (bi * H + fi) * W + fj
        idx_o = (bi * H + oi) * W + oj
        cf, co = flat[idx_f], flat[idx_o]
        into_o = tmin > 0.5
        alpha = torch.where(into_o, tmin - 0.5, 0.5 - tmin).unsqueeze(-1)
        target = torch.where(into_o.unsqueeze(-1), idx_o.unsqueeze(-1), idx_f.unsqueeze(-1)).squeeze(-1)
        delta = torch.where(into_o.unsqueeze(-1), cf - co, co - cf) * alpha
        out = out.index_add(0, target, delta.to(out.dtype))
    return out.reshape(B, H, W, C).permute(0, 3, 1, 2)
