"""pytorch3d visibility backend (CUDA, extra ``pytorch3d``).

pytorch3d rasterizes in its own NDC: +X left, +Y up, the shorter image side spans [-1, 1]. Pixel column j
of a W-wide image has X = -s_x * ((2j+1)/W - 1) with s_x = max(W/H, 1) (likewise Y with s_y = max(H/W, 1)),
so our x_ndc, y_ndc map to X = -s_x x_ndc, Y = -s_y y_ndc (a 180 degree rotation: winding is preserved,
and pytorch3d's back faces are ours). Z is the camera depth w with perspective_correct=True, so its z-buffer
holds the true depth.

Differences from the built-in backend: faces with a vertex at w <= 1e-6 (crossing the camera plane) are
culled instead of clipped, and there is no far-plane test.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neuralrender.errors import MissingDependencyError


def rasterize_visibility_pytorch3d(verts_clip: Tensor, faces: Tensor, height: int, width: int,
                                   cull_backfaces: bool = False) -> Tensor:
    """verts_clip [B,V,4] (CUDA), faces [F,3] -> face_id [B,H,W] int64 (-1 background)."""
    try:
        from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
        from pytorch3d.structures import Meshes
    except ImportError as e:  # pragma: no cover - depends on the install
        raise MissingDependencyError("pytorch3d", "pytorch3d", "the pytorch3d rasterizer backend") from e
    H, W = int(height), int(width)
    v = verts_clip.detach().float()
    B = v.shape[0]
    faces = faces.to(v.device).long()
    F = faces.shape[0]
    tri = v[:, faces]  # [B,F,3,4]; unshared corners so culled faces keep their index
    w = tri[..., 3]
    bad = (w <= 1e-6).any(-1)  # [B,F]
    ws = torch.where(w > 1e-6, w, torch.ones_like(w))
    sx, sy = max(W / H, 1.0), max(H / W, 1.0)
    pts = torch.stack([-sx * tri[..., 0] / ws, -sy * tri[..., 1] / ws, w], -1)  # [B,F,3,3]
    pts = torch.where(bad[..., None, None], torch.tensor([0.0, 0.0, -1.0], device=v.device), pts)
    verts_list = list(pts.reshape(B, F * 3, 3))
    face_idx = torch.arange(F * 3, device=v.device).view(F, 3)
    meshes = Meshes(verts=verts_list, faces=[face_idx] * B)
    pix_to_face, _, _, _ = rasterize_meshes(
        meshes, image_size=(H, W), blur_radius=0.0, faces_per_pixel=1, bin_size=None, max_faces_per_bin=None,
        perspective_correct=True, clip_barycentric_coords=False, cull_backfaces=bool(cull_backfaces))
    p = pix_to_face[..., 0]
    offs = (torch.arange(B, device=v.device) * F).view(B, 1, 1)
    return torch.where(p >= 0, p - offs, torch.full_like(p, -1))
