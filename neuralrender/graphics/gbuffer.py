"""G-buffers and deferred shading: the one call the scene builder and conditional renderers use.

`render_gbuffer(cameras, mesh)` rasterizes a `Mesh` once and returns per-pixel buffers as [B,C,H,W]
tensors (images convention; background pixels hold 0, or -1 for the integer buffers):

    mask [B,1,H,W] float    face_id [B,1,H,W] int64    depth [B,1,H,W] camera z
    positions [B,3,H,W] world xyz          normals [B,3,H,W] world unit normals
    normals_cam [B,3,H,W] camera-space (OpenCV axes) unit normals
    uv [B,2,H,W] (v up)                    labels [B,1,H,W] int64 (-1 background)
    albedo [B,C,H,W] textures (by face_material) / vertex colours / `default_albedo`
    fragments: the `Fragments` (for interpolate / antialias of further attributes)

`shade(gbuffer, cameras, lights, model=...)` turns it into a lit RGB image with the shading module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.meshes import Mesh, face_normals
from neuralrender.graphics.raster import rasterize
from neuralrender.graphics.shading import DirectionalLights, blinn_phong, lambert, sh_shade
from neuralrender.graphics.texture import texture

__all__ = ["GBUFFER_CHANNELS", "render_gbuffer", "shade", "headlight"]

GBUFFER_CHANNELS = ("mask", "face_id", "depth", "positions", "normals", "normals_cam", "uv", "labels", "albedo")


def _chw(x: torch.Tensor) -> torch.Tensor:
    """[B,H,W,C] -> [B,C,H,W]."""
    return x.permute(0, 3, 1, 2).contiguous()


def render_gbuffer(cameras, mesh: Mesh, channels=None, near: float = 0.01, far: float = 1e4,
                   cull_backfaces: bool = False, backend: str = "auto", flat_normals: bool = False,
                   two_sided: bool = False, texture_filter: str = "bilinear", texture_wrap: str = "clamp",
                   default_albedo=(0.8, 0.8, 0.8)) -> dict:
    """Rasterize `mesh` (verts [V,3] or [B,V,3]) for a batch of B cameras -> dict of buffers (module doc).

    channels: names from GBUFFER_CHANNELS to compute (default: all that the mesh supports; 'uv' needs
    uvs, 'labels' needs labels; asking for them on a mesh without raises). flat_normals: use face
    normals instead of interpolated vertex normals. two_sided: flip normals that face away from the
    camera (for open surfaces seen from behind). texture_filter: 'bilinear' | 'nearest' | 'mipmap'.
    Gradients flow to vertex positions, camera parameters, textures and vertex colours.
    """
    want = set(GBUFFER_CHANNELS if channels is None else channels)
    unknown = want - set(GBUFFER_CHANNELS)
    if unknown:
        raise NeuralRenderError(f"render_gbuffer: unknown channel(s) {sorted(unknown)}; choose from {GBUFFER_CHANNELS}")
    if channels is None:
        if mesh.uvs is None:
            want.discard("uv")
        if mesh.labels is None:
            want.discard("labels")
    if "uv" in want and mesh.uvs is None:
        raise NeuralRenderError("render_gbuffer: channel 'uv' requested but the mesh has no uvs")
    if "labels" in want and mesh.labels is None:
        raise NeuralRenderError("render_gbuffer: channel 'labels' requested but the mesh has no labels")
    verts = mesh.verts
    frags = rasterize(cameras, verts, mesh.faces, near=near, far=far, cull_backfaces=cull_backfaces, backend=backend)
    fid = frags.face_id  # [B,H,W]
    B = fid.shape[0]
    cover = fid >= 0
    out: dict = {"fragments": frags}
    dt = verts.dtype
    if "mask" in want:
        out["mask"] = cover.unsqueeze(1).to(dt)
    if "face_id" in want:
        out["face_id"] = fid.unsqueeze(1)
    if "depth" in want:
        out["depth"] = frags.depth.unsqueeze(1).to(dt)
    pos = None
    if want & {"positions", "normals", "normals_cam"}:
        pos = interpolate(verts, frags)  # [B,H,W,3]
        if "positions" in want:
            out["positions"] = _chw(pos)
    if want & {"normals", "normals_cam"}:
        if flat_normals:
            fn = face_normals(verts, mesh.faces)  # [F,3] or [B,F,3]
            fnb = fn.unsqueeze(0).expand(B, -1, -1) if fn.dim() == 2 else fn.expand(B, -1, -1)
            n = torch.gather(fnb, 1, fid.clamp_min(0).reshape(B, -1, 1).expand(-1, -1, 3)).reshape(*fid.shape, 3)
        else:
            n = interpolate(mesh.vertex_normals().to(dt), frags)
        n = F.normalize(n, dim=-1, eps=1e-12) * cover.unsqueeze(-1)
        if two_sided:
            view = cameras.centers.to(pos).view(-1, 1, 1, 3) - pos
            n = torch.where(((n * view).sum(-1, keepdim=True) < 0), -n, n)
        if "normals" in want:
            out["normals"] = _chw(n)
        if "normals_cam" in want:
            R = cameras.R.to(n)
            out["normals_cam"] = _chw(torch.einsum("bij,bhwj->bhwi", R, n))
    uv = None
    if "uv" in want or ("albedo" in want and mesh.textures):
        if mesh.uvs is None:
            raise NeuralRenderError("render_gbuffer: the mesh has textures but no uvs")
        uv = interpolate(mesh.uvs.to(dt), frags, mesh.uv_faces())  # [B,H,W,2]
        if "uv" in want:
            out["uv"] = _chw(uv)
    if "labels" in want:
        lab = mesh.labels.to(fid.device)[fid.clamp_min(0)]
        out["labels"] = torch.where(cover, lab, torch.full_like(lab, -1)).unsqueeze(1)
    if "albedo" in want:
        out["albedo"] = _albedo(mesh, frags, uv, cover, texture_filter, texture_wrap, default_albedo, dt)
    return out


def _albedo(mesh: Mesh, frags, uv, cover, filt: str, wrap: str, default_albedo, dt) -> torch.Tensor:
    """[B,C,H,W] base colour: texture of the face's material, else vertex colour, else default_albedo."""
    fid = frags.face_id
    B, H, W = fid.shape
    if mesh.colors is not None:
        base = _chw(interpolate(mesh.colors.to(dt), frags))
    else:
        d = torch.as_tensor(default_albedo, dtype=dt, device=fid.device).view(1, -1, 1, 1)
        base = d.expand(B, -1, H, W)
    if not mesh.textures:
        return base * cover.unsqueeze(1)
    mats = mesh.face_material if mesh.face_material is not None else torch.zeros(
        mesh.num_faces, dtype=torch.long, device=fid.device)
    m = torch.where(cover, mats.to(fid.device)[fid.clamp_min(0)], torch.full_like(fid, -1))  # [B,H,W]
    C = max(t.shape[0] for t in mesh.textures)
    if base.shape[1] != C:
        base = base[:, :1].expand(-1, C, -1, -1) if base.shape[1] == 1 else base[:, :C]
    out = torch.where((m < 0).unsqueeze(1), base, torch.zeros_like(base))
    for k in torch.unique(m[m >= 0]).tolist():
        sel = m == k
        tex = mesh.textures[k].to(device=fid.device, dtype=dt)
        sampled = texture(tex, uv, filter=filt, wrap=wrap, mask=sel)
        if sampled.shape[1] != C:
            raise NeuralRenderError(f"render_gbuffer: textures have different channel counts ({sampled.shape[1]} vs {C})")
        out = out + sampled
    return out * cover.unsqueeze(1)


def headlight(cameras, color=1.0) -> DirectionalLights:
    """A directional light shining along each camera's viewing direction (from the camera's side)."""
    back = -cameras.R[:, 2, :]  # world direction of camera -z, i.e. towards the camera
    return DirectionalLights(direction=back.unsqueeze(1), color=color)


def shade(gbuffer: dict, cameras, lights=None, model: str = "lambert", ambient=0.1, sh_coeffs=None,
          specular=0.5, shininess: float = 32.0, albedo: torch.Tensor | None = None,
          shadow: torch.Tensor | None = None, background=0.0) -> torch.Tensor:
    """Lit RGB [B,C,H,W] from a G-buffer.

    model: 'lambert' | 'blinn_phong' (needs positions) | 'sh' (sh_coeffs [B,9,C], see shading.sh_shade;
    ambient and lights are ignored) | 'albedo' (unlit) | 'normals' (world normals mapped to [0,1]).
    lights: DirectionalLights / PointLights / list (default: `headlight(cameras)`); ambient float | [3] |
    [B,3]; albedo [B,C,H,W] overrides gbuffer['albedo'] (default white when absent); shadow [B,L,H,W]
    visibility per light in [0,1] (see shading.shadow_map / shadow_lookup); background float | [C] |
    [B,C,H,W] fills uncovered pixels.
    """
    mask = gbuffer["mask"] if "mask" in gbuffer else (gbuffer["fragments"].face_id >= 0).unsqueeze(1).float()
    if albedo is None:
        albedo = gbuffer.get("albedo")
    if model == "normals":
        rgb = gbuffer["normals"] * 0.5 + 0.5
    elif model == "albedo":
        if albedo is None:
            raise NeuralRenderError("shade(model='albedo'): the G-buffer has no 'albedo'")
        rgb = albedo
    else:
        if "normals" not in gbuffer:
            raise NeuralRenderError(f"shade(model={model!r}): the G-buffer has no 'normals'")
        n = gbuffer["normals"].permute(0, 2, 3, 1)
        alb = None if albedo is None else albedo.permute(0, 2, 3, 1)
        sh = None if shadow is None else shadow.permute(0, 2, 3, 1)
        if model == "sh":
            if sh_coeffs is None:
                raise NeuralRenderError("shade(model='sh') needs sh_coeffs [B,9,C]")
            rgb = sh_shade(n, sh_coeffs, alb)
        elif model in ("lambert", "blinn_phong"):
            lights = headlight(cameras) if lights is None else lights
            pos = gbuffer["positions"].permute(0, 2, 3, 1) if "positions" in gbuffer else None
            if model == "lambert":
                rgb = lambert(n, lights, alb, points=pos, ambient=ambient, shadow=sh)
            else:
                if pos is None:
                    raise NeuralRenderError("shade(model='blinn_phong'): the G-buffer has no 'positions'")
                rgb = blinn_phong(n, pos, cameras.centers.to(n), lights, alb, specular=specular,
                                  shininess=shininess, ambient=ambient, shadow=sh)
        else:
            raise NeuralRenderError(f"shade: unknown model {model!r}; use lambert, blinn_phong, sh, albedo or normals")
        rgb = rgb.permute(0, 3, 1, 2)
    bg = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
    if bg.dim() == 1:
        bg = bg.view(1, -1, 1, 1)
    return rgb * mask + bg * (1 - mask)
