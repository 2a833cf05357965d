"""Rasterization: visibility (face id per pixel) by a backend; barycentrics and depth with an analytic backward.

Clip space (see docs/conventions.md): x_ndc = x/w, y_ndc = y/w in [-1, 1]; pixel (i, j) has its centre at
x_ndc = (2j + 1)/W - 1, y_ndc = (2i + 1)/H - 1, so y_ndc = -1 is the TOP row (row 0 of the tensor);
w is the camera depth for perspective cameras; z_ndc = z/w in [-1, 1] between near and far.

Near plane: faces crossing the near plane (or the camera plane) are clipped per pixel, not culled: only the
part of a triangle with near <= depth <= far is drawn (homogeneous rasterization, no vertex ever divided by
w <= 0). Geometry entirely behind the camera gives empty fragments.

Backface convention: a face is front-facing when its vertices appear counter-clockwise in a y-up view, i.e.
its right-handed normal (v1-v0)x(v2-v0) points towards the camera (the OBJ/glTF outward convention).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch
from torch import Tensor

from neuralrender.errors import MissingDependencyError, NeuralRenderError

MAX_RESOLUTION = 16384
BACKENDS = ("nvdiffrast", "pytorch3d", "cpu", "torch")


@dataclass
class Fragments:
    """Per-pixel rasterization result for B images of H x W.

    face_id [B,H,W] int64, -1 on background; bary [B,H,W,3] perspective-correct barycentrics of the visible
    face (0 on background), differentiable w.r.t. the clip-space vertices; depth [B,H,W] camera z (= clip w),
    0 on background. verts_clip [B,V,4] and faces [F,3] are kept for derivatives and antialiasing.
    """

    face_id: Tensor
    bary: Tensor
    depth: Tensor
    verts_clip: Tensor | None = None
    faces: Tensor | None = None

    @property
    def mask(self) -> Tensor:
        """Coverage [B,H,W] bool."""
        return self.face_id >= 0

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.face_id.shape[1]), int(self.face_id.shape[2])

    def bary_derivatives(self) -> Tensor:
        """Screen-space derivatives of the barycentrics [B,H,W,3,2]: d bary / d x_pix and d bary / d y_pix
        (per pixel, not per NDC unit); 0 on background. Needs verts_clip and faces."""
        if self.verts_clip is None or self.faces is None:
            raise NeuralRenderError("Fragments.bary_derivatives: these fragments carry no verts_clip/faces")
        H, W = self.resolution
        B = self.face_id.shape[0]
        out = torch.zeros(B, H, W, 3, 2, dtype=self.bary.dtype, device=self.bary.device)
        bi, ii, jj, f = _visible(self.face_id)
        if f.numel() == 0:
            return out
        n, c, s, _ = _homogeneous_terms(self.verts_clip, self.faces, bi, ii, jj, f, H, W)
        # lambda_i = c_i / s with c_i = n_i . (x, y, 1); d/dx_ndc = (n_ix s - c_i sum_k n_kx) / s^2
        sx, sy = n[..., 0].sum(-1, keepdim=True), n[..., 1].sum(-1, keepdim=True)
        s2 = (s * s).unsqueeze(-1)
        dx = (n[..., 0] * s.unsqueeze(-1) - c * sx) / s2 * (2.0 / W)
        dy = (n[..., 1] * s.unsqueeze(-1) - c * sy) / s2 * (2.0 / H)
        out = out.index_put((bi, ii, jj), torch.stack([dx, dy], -1).to(out.dtype))
        return out

    def detach(self) -> "Fragments":
        return Fragments(self.face_id, self.bary.detach(), self.depth.detach(),
                         None if self.verts_clip is None else self.verts_clip.detach(), self.faces)


# ----------------------------------------------------------------------------------------- backends
def _cuda_ok() -> bool:
    return torch.cuda.is_available()


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available_backends() -> list[str]:
    """Backends usable on this machine: nvdiffrast / pytorch3d only when importable and CUDA is available;
    "cpu" (the built-in backend: C++ kernel on CPU tensors, vectorized torch elsewhere) always."""
    out = []
    if _cuda_ok() and _importable("nvdiffrast"):
        out.append("nvdiffrast")
    if _cuda_ok() and _importable("pytorch3d"):
        out.append("pytorch3d")
    out.append("cpu")
    return out


def resolve_backend(name: str, device: torch.device | str = "cpu") -> str:
    """Pick a backend: "auto" -> nvdiffrast on CUDA if importable, then pytorch3d on CUDA, else "cpu".

    "cpu" is the built-in backend (C++ kernel for CPU tensors, pure torch otherwise); "torch" forces the
    pure-torch path. Asking for an unavailable backend raises MissingDependencyError / NeuralRenderError.
    """
    device = torch.device(device)
    if name == "auto":
        if device.type == "cuda":
            for cand in ("nvdiffrast", "pytorch3d"):
                if _importable(cand):
                    return cand
        return "cpu"
    if name not in BACKENDS:
        raise NeuralRenderError(f"unknown rasterizer backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if name in ("nvdiffrast", "pytorch3d"):
        if not _importable(name):
            extra = "gpu" if name == "nvdiffrast" else "pytorch3d"
            raise MissingDependencyError(name, extra, f"the {name} rasterizer backend")
        if device.type != "cuda" or not _cuda_ok():
            raise NeuralRenderError(f"rasterizer backend {name!r} needs CUDA tensors (got device {device}); "
                                    "use backend='cpu' or 'auto'")
    return name


def _visibility(backend: str, verts_clip: Tensor, faces: Tensor, H: int, W: int, cull: bool):
    """-> (face_id [B,H,W], bary [B,H,W,3] or None, depth [B,H,W] or None), no gradients."""
    if backend == "nvdiffrast":
        from neuralrender.graphics.raster_nvdiffrast import rasterize_visibility_nvdiffrast
        return rasterize_visibility_nvdiffrast(verts_clip, faces, H, W, cull), None, None
    if backend == "pytorch3d":
        from neuralrender.graphics.raster_pytorch3d import rasterize_visibility_pytorch3d
        return rasterize_visibility_pytorch3d(verts_clip, faces, H, W, cull), None, None
    from neuralrender.graphics.raster_cpu import rasterize_visibility
    fid, depth, bary = rasterize_visibility(verts_clip, faces, H, W, cull, use_cpp=(backend == "cpu"))
    return fid, bary, (depth if bary is not None else None)


# -------------------------------------------------------------------------------- barycentrics (torch)
def _visible(face_id: Tensor):
    bi, ii, jj = torch.nonzero(face_id >= 0, as_tuple=True)
    return bi, ii, jj, face_id[bi, ii, jj]


def _face_planes(verts_clip: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Per-face homogeneous edge planes n [B,F,3,3] (n_i = v_j x v_k of the (x, y, w) corners, cyclic) and
    det [B,F] = v_0 . (v_1 x v_2). For pixel p = (x_ndc, y_ndc, 1), c_i = n_i . p is proportional to the
    perspective-correct barycentric i and det / sum(c) is the depth w."""
    v = verts_clip[:, faces]  # [B,F,3,4]
    v = torch.stack([v[..., 0], v[..., 1], v[..., 3]], -1)  # (x, y, w)
    v0, v1, v2 = v.unbind(2)
    n = torch.stack([torch.cross(v1, v2, dim=-1), torch.cross(v2, v0, dim=-1), torch.cross(v0, v1, dim=-1)], 2)
    det = (v0 * n[:, :, 0]).sum(-1)
    return n, det


def _homogeneous_terms(verts_clip: Tensor, faces: Tensor, bi, ii, jj, f, H: int, W: int):
    """For N visible pixels: n [N,3,3] (edge planes of their face), c [N,3] = n_i . p, s [N] = sum c,
    det [N] = v_0 . (v_1 x v_2)."""
    n_all, det_all = _face_planes(verts_clip, faces)
    n, det = n_all[bi, f], det_all[bi, f]
    px = ((2.0 * jj.to(n.dtype) + 1.0) / W - 1.0).unsqueeze(-1)
    py = ((2.0 * ii.to(n.dtype) + 1.0) / H - 1.0).unsqueeze(-1)
    c = torch.addcmul(torch.addcmul(n[..., 2], n[..., 0], px), n[..., 1], py)
    s = c.sum(-1)
    return n, c, s, det


def _bary_forward(verts_clip: Tensor, faces: Tensor, face_id: Tensor) -> tuple[Tensor, Tensor]:
    """Barycentrics [B,H,W,3] and depth [B,H,W] of the faces in face_id, computed in torch (no autograd)."""
    B, H, W = face_id.shape
    bary = torch.zeros(B, H, W, 3, dtype=verts_clip.dtype, device=verts_clip.device)
    depth = torch.zeros(B, H, W, dtype=verts_clip.dtype, device=verts_clip.device)
    bi, ii, jj, f = _visible(face_id)
    if f.numel():
        _, c, s, det = _homogeneous_terms(verts_clip, faces, bi, ii, jj, f, H, W)
        bary[bi, ii, jj] = c / s.unsqueeze(-1)
        depth[bi, ii, jj] = det / s
    return bary, depth


class _BaryGrad(torch.autograd.Function):
    """Identity on (bary, depth) computed by the visibility pass; backward gives their analytic gradient
    w.r.t. the clip-space vertices (x, y, w; z only clips). With c_i = n_i . p, s = sum c:
    bary = c / s, depth = det / s, n_0 = v_1 x v_2 (cyclic), det = v_0 . n_0."""

    @staticmethod
    def forward(ctx, verts_clip, faces, face_id, bary, depth):
        ctx.save_for_backward(verts_clip, faces, face_id, bary, depth)
        return bary.view_as(bary), depth.view_as(depth)

    @staticmethod
    def backward(ctx, g_bary, g_depth):
        verts_clip, faces, face_id, bary, depth = ctx.saved_tensors
        if verts_clip.device.type == "cpu" and verts_clip.dtype == torch.float32:
            from neuralrender.graphics.raster_cpu import get_extension
            ext = get_extension()
            if ext is not None:
                gb = g_bary if g_bary is not None else torch.zeros_like(bary)
                gd = g_depth if g_depth is not None else torch.zeros_like(depth)
                return ext.bary_backward_cpu(verts_clip, faces, face_id, bary, depth, gb, gd), None, None, None, None
        return _bary_backward_torch(verts_clip, faces, face_id, bary, depth, g_bary, g_depth), None, None, None, None


def _bary_backward_torch(verts_clip, faces, face_id, bary, depth, g_bary, g_depth):
    """Torch version of the analytic backward (any device/dtype); see _BaryGrad."""
    B, H, W = face_id.shape
    F = faces.shape[0]
    dt = verts_clip.dtype
    bi, ii, jj, f = _visible(face_id)
    if f.numel() == 0:
        return torch.zeros_like(verts_clip)
    n_all, det_all = _face_planes(verts_clip, faces)
    det = det_all[bi, f]
    lam = bary[bi, ii, jj].to(dt)
    d = depth[bi, ii, jj].to(dt)
    inv_s = torch.where(det != 0, d / torch.where(det != 0, det, torch.ones_like(det)), torch.zeros_like(det))
    gl = g_bary[bi, ii, jj].to(dt) if g_bary is not None else torch.zeros_like(lam)
    gd = g_depth[bi, ii, jj].to(dt) if g_depth is not None else torch.zeros_like(d)
    dc = (gl - (gl * lam).sum(-1, keepdim=True)) * inv_s.unsqueeze(-1) - (gd * d * inv_s).unsqueeze(-1)
    p = torch.stack([(2.0 * jj.to(dt) + 1.0) / W - 1.0, (2.0 * ii.to(dt) + 1.0) / H - 1.0,
                     torch.ones_like(d)], -1)
    idx = bi * F + f
    G = torch.zeros(B * F, 3, 3, dtype=dt, device=verts_clip.device)
    G.index_add_(0, idx, dc.unsqueeze(-1) * p.unsqueeze(1))
    gdet = torch.zeros(B * F, dtype=dt, device=verts_clip.device).index_add_(0, idx, gd * inv_s)
    G, gdet = G.view(B, F, 3, 3), gdet.view(B, F, 1)
    v = verts_clip[:, faces]
    v = torch.stack([v[..., 0], v[..., 1], v[..., 3]], -1)
    v0, v1, v2 = v.unbind(2)
    G0, G1, G2 = G.unbind(2)
    n0, n1, n2 = n_all.unbind(2)
    cr = lambda a, b: torch.cross(a, b, dim=-1)
    dv0 = gdet * n0 + cr(G1, v2) + cr(v1, G2)
    dv1 = gdet * n1 + cr(v2, G0) + cr(G2, v0)
    dv2 = gdet * n2 + cr(G0, v1) + cr(v0, G1)
    dv = torch.stack([dv0, dv1, dv2], 2).reshape(B, F * 3, 3)
    gxyw = torch.zeros(B, verts_clip.shape[1], 3, dtype=dt, device=verts_clip.device)
    gxyw.index_add_(1, faces.reshape(-1), dv)
    grad = torch.zeros_like(verts_clip)
    grad[..., 0], grad[..., 1], grad[..., 3] = gxyw[..., 0], gxyw[..., 1], gxyw[..., 2]
    return grad


def barycentrics_from_clip(verts_clip: Tensor, faces: Tensor, face_id: Tensor, bary: Tensor | None = None,
                           depth: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Perspective-correct barycentrics [B,H,W,3] and depth (clip w) [B,H,W] of the faces in ``face_id``
    [B,H,W] (-1 background -> zeros), differentiable w.r.t. verts_clip [B,V,4] (analytic backward).
    ``bary``/``depth`` may pass values already computed by a visibility kernel."""
    if bary is None or depth is None:
        with torch.no_grad():
            bary, depth = _bary_forward(verts_clip.detach(), faces, face_id)
    bary, depth = bary.to(verts_clip.dtype), depth.to(verts_clip.dtype)
    if verts_clip.requires_grad and torch.is_grad_enabled():
        bary, depth = _BaryGrad.apply(verts_clip, faces, face_id, bary, depth)
    return bary, depth


# ----------------------------------------------------------------------------------------- validation
def _check_resolution(resolution) -> tuple[int, int]:
    try:
        H, W = (int(resolution), int(resolution)) if isinstance(resolution, int) else (int(resolution[0]),
                                                                                          int(resolution[1]))
    except (TypeError, ValueError, IndexError):
        raise NeuralRenderError(f"rasterize: resolution must be an int or (H, W), got {resolution!r}") from None
    if not (0 < H <= MAX_RESOLUTION and 0 < W <= MAX_RESOLUTION):
        raise NeuralRenderError(f"rasterize: resolution (H, W) = ({H}, {W}) must be in 1..{MAX_RESOLUTION}")
    return H, W


def _check_faces(faces: Tensor, n_verts: int, device) -> Tensor:
    if not torch.is_tensor(faces):
        faces = torch.as_tensor(faces)
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise NeuralRenderError(f"rasterize: faces must be [F,3], got shape {tuple(faces.shape)}")
    if faces.is_floating_point():
        raise NeuralRenderError(f"rasterize: faces must be integer indices, got dtype {faces.dtype}")
    faces = faces.to(device=device, dtype=torch.long)
    if faces.numel():
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0 or hi >= n_verts:
            bad = int(torch.nonzero((faces < 0).any(1) | (faces >= n_verts).any(1))[0])
            raise NeuralRenderError(f"rasterize: face {bad} = {faces[bad].tolist()} indexes a vertex out of range "
                                    f"[0, {n_verts}) (faces span {lo}..{hi})")
    return faces


def _check_finite(x: Tensor, what: str):
    if not bool(torch.isfinite(x).all()):
        bad = torch.nonzero(~torch.isfinite(x).reshape(-1, x.shape[-1]).all(-1))[0].item()
        raise NeuralRenderError(f"rasterize: {what} contain NaN or inf (first at flat vertex index {bad})")


# ------------------------------------------------------------------------------------------- entries
def rasterize_clip(verts_clip: Tensor, faces: Tensor, resolution, backend: str = "auto",
                   cull_backfaces: bool = False) -> Fragments:
    """Low-level, nvdiffrast-like entry: verts_clip [B,V,4] (or [V,4]) homogeneous clip coordinates,
    faces [F,3] int64, resolution (H, W) or int -> Fragments.

    The visibility pass runs without gradients in the chosen backend; barycentrics and depth are recomputed
    in torch, so gradients reach verts_clip.
    """
    H, W = _check_resolution(resolution)
    if verts_clip.dim() == 2:
        verts_clip = verts_clip.unsqueeze(0)
    if verts_clip.dim() != 3 or verts_clip.shape[-1] != 4:
        raise NeuralRenderError(f"rasterize_clip: verts_clip must be [B,V,4], got shape {tuple(verts_clip.shape)}")
    if not verts_clip.is_floating_point():
        verts_clip = verts_clip.float()
    faces = _check_faces(faces, verts_clip.shape[1], verts_clip.device)
    _check_finite(verts_clip, "clip-space vertices")
    return _rasterize_clip(verts_clip, faces, H, W, backend, cull_backfaces)


def _rasterize_clip(verts_clip: Tensor, faces: Tensor, H: int, W: int, backend: str, cull_backfaces: bool) -> Fragments:
    """rasterize_clip on validated inputs."""
    name = resolve_backend(backend, verts_clip.device)
    B = verts_clip.shape[0]
    bary = depth = None
    if faces.shape[0] == 0 or verts_clip.shape[1] == 0:
        face_id = torch.full((B, H, W), -1, dtype=torch.long, device=verts_clip.device)
    else:
        with torch.no_grad():
            face_id, bary, depth = _visibility(name, verts_clip.detach(), faces, H, W, cull_backfaces)
        if verts_clip.dtype != torch.float32:  # the kernel works in float32: recompute at full precision
            bary = depth = None
    bary, depth = barycentrics_from_clip(verts_clip, faces, face_id.to(verts_clip.device), bary, depth)
    return Fragments(face_id=face_id, bary=bary, depth=depth, verts_clip=verts_clip, faces=faces)


def rasterize(cameras, verts: Tensor, faces: Tensor, near: float = 0.01, far: float = 1e4,
              cull_backfaces: bool = False, backend: str = "auto", resolution=None) -> Fragments:
    """Rasterize world-space verts [V,3] or [B,V,3] with faces [F,3] seen by ``cameras`` (a Cameras batch of B)
    into Fragments of size (cameras.height, cameras.width) (or ``resolution`` if given, for cameras whose K
    matches it). Several meshes: concatenate them with ``join_meshes``. Lens distortion is ignored (pinhole).
    """
    if not torch.is_tensor(verts) or verts.dim() not in (2, 3) or verts.shape[-1] != 3:
        raise NeuralRenderError(f"rasterize: verts must be [V,3] or [B,V,3], got "
                                f"{tuple(verts.shape) if torch.is_tensor(verts) else type(verts).__name__}")
    _check_finite(verts, "vertices")
    if verts.dim() == 3 and verts.shape[0] not in (1, cameras.batch_size):
        raise NeuralRenderError(f"rasterize: verts batch {verts.shape[0]} does not match {cameras.batch_size} cameras")
    faces = _check_faces(faces, verts.shape[-2], verts.device)
    H, W = _check_resolution((cameras.height, cameras.width) if resolution is None else resolution)
    if cameras.device != verts.device:
        cameras = cameras.to(verts.device)
    clip = cameras.to_clip(verts, near, far)
    _check_finite(clip, "clip-space vertices (check the cameras)")
    return _rasterize_clip(clip, faces, H, W, backend, cull_backfaces)


def join_meshes(meshes) -> tuple[Tensor, Tensor, Tensor]:
    """Concatenate a list of (verts [V_i,3] or [B,V_i,3], faces [F_i,3]) into one mesh.

    Returns (verts, faces, face_offsets [M+1]) where mesh m owns faces face_offsets[m]:face_offsets[m+1];
    the mesh of a face id is ``torch.bucketize(face_id, face_offsets[1:], right=True)``.
    """
    meshes = list(meshes)
    if not meshes:
        raise NeuralRenderError("join_meshes: empty list")
    vs, fs, offs = [], [], [0]
    nv = 0
    batched = any(v.dim() == 3 for v, _ in meshes)
    B = max(v.shape[0] if v.dim() == 3 else 1 for v, _ in meshes)
    for v, f in meshes:
        if batched:
            v = v.unsqueeze(0) if v.dim() == 2 else v
            v = v.expand(B, -1, -1)
        vs.append(v)
        fs.append(f.long() + nv)
        nv += v.shape[-2]
        offs.append(offs[-1] + f.shape[0])
    verts = torch.cat(vs, dim=-2)
    faces = torch.cat(fs, 0).to(verts.device)
    return verts, faces, torch.tensor(offs, dtype=torch.long, device=verts.device)
