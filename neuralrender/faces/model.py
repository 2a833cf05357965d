"""The Surrey Face Model (low-res, 3448 vertices) as a differentiable module.

Files (../shared/data/face_model/sfm_eos, read through `shared_path`): sfm_shape_3448_export.npz (numpy export of
the eos .bin model: mean [V,3] in millimetres, orthonormal shape basis [3V,63] with its eigenvalues, triangles,
per-vertex texcoords, the 6 expression blendshapes [6,3V] (anger, disgust, fear, happiness, sadness, surprise)),
ibug_to_sfm.txt (iBUG-68 -> vertex mapping, TOML-like) and sfm_model_contours.json (candidate vertices of the
right / left jaw line, for the dynamic contour correspondence of landmarks 1-8 / 10-17).

Geometry: verts(id, expr) = mean + (U * sqrt(eig)) id + blendshapes^T expr, so identity coefficients are in
standard deviations (prior ||id||^2) and expression coefficients are blendshape weights (prior ||expr||^2).
The model's own axes are y up, z towards the viewer; `posed` turns them into OpenCV camera space
(x right, y down, z forward) with x_cam = R(rot) diag(1,-1,-1) x_model + trans, rot an axis-angle vector.
The camera is a pinhole with focal `focal` (pixels) and the principal point at the image centre.

Appearance: the public SFM ships NO albedo PCA. We use a constant mean skin albedo plus a per-vertex offset
[V,3] (learned during tracking, regularised towards 0 and towards smoothness over mesh edges), lit per vertex
by 9 spherical-harmonics coefficients per colour channel (graphics.shading.sh_shade), then interpolated over
the rasterized face (Gouraud shading, as Face2Face's per-vertex colours).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.cameras import Cameras
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.meshes import Mesh, vertex_normals
from neuralrender.graphics.raster import rasterize
from neuralrender.graphics.shading import SH_CONSTANTS, sh_shade
from neuralrender.paths import shared_path

__all__ = ["FaceModel", "FaceParams", "load_sfm", "axis_angle_to_matrix", "SFM_DIR", "MEAN_SKIN_ALBEDO",
           "IBUG_RIGHT_CONTOUR", "IBUG_LEFT_CONTOUR"]

SFM_DIR = ("face_model", "sfm_eos")
MEAN_SKIN_ALBEDO = (0.72, 0.53, 0.44)  # a mean linear skin reflectance (no albedo model is shipped)
IBUG_RIGHT_CONTOUR = tuple(range(0, 8))  # 0-based iBUG indices of landmarks 1..8
IBUG_LEFT_CONTOUR = tuple(range(9, 17))  # 10..17
_NPZ_KEYS = {"mean": 2, "basis_orthonormal": 2, "eigenvalues": 1, "triangles": 2, "texcoords": 2, "blendshapes": 2}


def axis_angle_to_matrix(r: Tensor) -> Tensor:
    """Rodrigues: axis-angle vectors [...,3] (angle = norm, radians) -> rotation matrices [...,3,3].
    Smooth at 0 (Taylor expansion of sin(a)/a and (1-cos a)/a^2)."""
    a2 = (r * r).sum(-1, keepdim=True)
    small = a2 < 1e-8
    a2s = torch.where(small, torch.ones_like(a2), a2)
    a = a2s.sqrt()
    s = torch.where(small, 1 - a2 / 6, torch.sin(a) / a)
    c = torch.where(small, 0.5 - a2 / 24, (1 - torch.cos(a)) / a2s)
    x, y, z = r.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*r.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(Kx)
    return eye + s.unsqueeze(-1) * Kx + c.unsqueeze(-1) * (Kx @ Kx)


# ------------------------------------------------------------------------------------------------ loading
def _parse_ibug_mapping(path: Path) -> dict[int, int]:
    """ibug_to_sfm.txt -> {ibug index (1-based): sfm vertex}."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DataError(path, f"cannot read: {e}", field="file") from e
    m = re.search(r"\[landmark_mappings\](.*?)(\n\[|\Z)", text, re.S)
    if m is None:
        raise DataError(path, "no [landmark_mappings] section", field="landmark_mappings")
    out = {}
    for line in m.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        mm = re.fullmatch(r"(\d+)\s*=\s*(\d+)", line)
        if mm is None:
            raise DataError(path, f"bad mapping line {line!r} (want 'ibug = vertex')", field="landmark_mappings")
        out[int(mm.group(1))] = int(mm.group(2))
    if not out:
        raise DataError(path, "empty landmark mapping", field="landmark_mappings")
    return out


def _parse_contours(path: Path) -> tuple[list[int], list[int]]:
    try:
        d = json.loads(path.read_text())
        c = d["model_contour"]
        right, left = [int(v) for v in c["right_contour"]], [int(v) for v in c["left_contour"]]
    except OSError as e:
        raise DataError(path, f"cannot read: {e}", field="file") from e
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(path, f"bad contour file ({e!r}); want model_contour.right_contour / left_contour",
                        field="model_contour") from e
    return right, left


def load_sfm(folder: str | Path | None = None) -> dict[str, np.ndarray]:
    """Read and validate the SFM files in `folder` (default: the shared sfm_eos folder) -> dict of numpy arrays:
    mean [V,3], basis [3V,K] (scaled: orthonormal * sqrt(eig)), eigenvalues [K], triangles [F,3] int64,
    texcoords [V,2], blendshapes [E,3V], blendshape_names [E], ibug_vertex [68] int64 (-1 = unmapped),
    contour_right / contour_left [N] int64. Raises DataError naming the file and field."""
    folder = Path(folder) if folder is not None else shared_path(*SFM_DIR)
    npz = folder / "sfm_shape_3448_export.npz"
    if not npz.is_file():
        raise DataError(npz, "Surrey Face Model export not found", field="file")
    try:
        with np.load(npz, allow_pickle=False) as d:
            arr = {k: d[k] for k in d.files}
    except Exception as e:  # zip / format errors
        raise DataError(npz, f"cannot read npz: {e}", field="file") from e
    for k, nd in _NPZ_KEYS.items():
        if k not in arr:
            raise DataError(npz, "missing array", field=k)
        if arr[k].ndim != nd:
            raise DataError(npz, f"expected {nd} dims, got shape {arr[k].shape}", field=k)
        if arr[k].dtype.kind == "f" and not np.isfinite(arr[k]).all():
            raise DataError(npz, "non-finite values", field=k)
    V = arr["mean"].shape[0]
    K = arr["eigenvalues"].shape[0]
    checks = {"mean": (V, 3), "basis_orthonormal": (3 * V, K), "texcoords": (V, 2)}
    for k, shape in checks.items():
        if arr[k].shape != shape:
            raise DataError(npz, f"expected shape {shape}, got {arr[k].shape}", field=k)
    if arr["blendshapes"].shape[1] != 3 * V:
        raise DataError(npz, f"expected [E,{3 * V}], got {arr['blendshapes'].shape}", field="blendshapes")
    tri = arr["triangles"].astype(np.int64)
    if tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= V:
        raise DataError(npz, f"triangles must be [F,3] indices in [0,{V}), got shape {tri.shape}", field="triangles")
    if (arr["eigenvalues"] < 0).any():
        raise DataError(npz, "negative eigenvalues", field="eigenvalues")
    mapping = _parse_ibug_mapping(folder / "ibug_to_sfm.txt")
    ibug = np.full(68, -1, dtype=np.int64)
    for k, v in mapping.items():
        if not (1 <= k <= 68) or not (0 <= v < V):
            raise DataError(folder / "ibug_to_sfm.txt", f"mapping {k} = {v} out of range (ibug 1..68, vertex < {V})",
                            field="landmark_mappings")
        ibug[k - 1] = v
    right, left = _parse_contours(folder / "sfm_model_contours.json")
    for v in right + left:
        if not 0 <= v < V:
            raise DataError(folder / "sfm_model_contours.json", f"vertex {v} out of range [0,{V})", field="model_contour")
    names = arr.get("blendshape_names", np.array([f"e{i}" for i in range(arr["blendshapes"].shape[0])]))
    return {
        "mean": arr["mean"].astype(np.float32),
        "basis": (arr["basis_orthonormal"] * np.sqrt(arr["eigenvalues"])[None]).astype(np.float32),
        "eigenvalues": arr["eigenvalues"].astype(np.float32),
        "triangles": tri,
        "texcoords": arr["texcoords"].astype(np.float32),
        "blendshapes": arr["blendshapes"].astype(np.float32),
        "blendshape_names": names,
        "ibug_vertex": ibug,
        "contour_right": np.asarray(right, dtype=np.int64),
        "contour_left": np.asarray(left, dtype=np.int64),
    }


# ------------------------------------------------------------------------------------------------ params
@dataclass
class FaceParams:
    """Parameters of B faces. identity [B,K] (standard deviations), expression [B,E] (blendshape weights),
    rotation [B,3] (axis-angle, radians), translation [B,3] (camera space, mm), focal [B] (pixels),
    sh [B,9,3] (SH lighting per colour), albedo [B,V,3] or [1,V,3] (offset added to the mean skin albedo)."""

    identity: Tensor
    expression: Tensor
    rotation: Tensor
    translation: Tensor
    focal: Tensor
    sh: Tensor
    albedo: Tensor

    @property
    def batch_size(self) -> int:
        return self.rotation.shape[0]

    def to(self, device) -> "FaceParams":
        return FaceParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> "FaceParams":
        return FaceParams(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def index(self, idx) -> "FaceParams":
        """Select rows (per-frame fields indexed; batch-1 fields kept)."""
        return FaceParams(**{f.name: (v if v.shape[0] == 1 else v[idx]) for f in fields(self)
                             for v in [getattr(self, f.name)]})

    def replace(self, **kw) -> "FaceParams":
        return replace(self, **kw)

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# ------------------------------------------------------------------------------------------------ model
class FaceModel(nn.Module):
    """The SFM as buffers; all methods take batched tensors and follow their device.

    Attributes: mean [V,3], basis [3V,K], blendshapes [E,3V], faces [F,3], uvs [V,2], ibug_vertex [68],
    contour_right / contour_left [17], num_identity K, num_expression E, num_verts V.
    """

    def __init__(self, folder: str | Path | None = None, num_identity: int | None = None):
        super().__init__()
        d = load_sfm(folder)
        K = d["basis"].shape[1] if num_identity is None else int(num_identity)
        if not 0 < K <= d["basis"].shape[1]:
            raise NeuralRenderError(f"FaceModel: num_identity must be in 1..{d['basis'].shape[1]}, got {K}")
        self.register_buffer("mean", torch.from_numpy(d["mean"]))
        self.register_buffer("basis", torch.from_numpy(np.ascontiguousarray(d["basis"][:, :K])))
        self.register_buffer("blendshapes", torch.from_numpy(d["blendshapes"]))
        self.register_buffer("faces", torch.from_numpy(d["triangles"]))
        self.register_buffer("uvs", torch.from_numpy(d["texcoords"]))
        self.register_buffer("ibug_vertex", torch.from_numpy(d["ibug_vertex"]))
        self.register_buffer("contour_right", torch.from_numpy(d["contour_right"]))
        self.register_buffer("contour_left", torch.from_numpy(d["contour_left"]))
        self.register_buffer("skin", torch.tensor(MEAN_SKIN_ALBEDO))
        self.blendshape_names = [str(n) for n in d["blendshape_names"]]
        self.num_identity, self.num_expression, self.num_verts = K, d["blendshapes"].shape[0], d["mean"].shape[0]
        e = torch.cat([self.faces[:, [0, 1]], self.faces[:, [1, 2]], self.faces[:, [2, 0]]]).sort(1).values
        self.register_buffer("edges", torch.unique(e, dim=0))  # [Ne,2] for the albedo smoothness prior

    # -- parameters ---------------------------------------------------------------------------------
    def default_params(self, batch: int, width: int, height: int, focal: float | None = None,
                       distance: float = 1000.0) -> FaceParams:
        """Mean face, neutral expression, frontal, `distance` mm in front of the camera, ambient white light."""
        dev = self.mean.device
        f = float(focal) if focal is not None else 2.0 * max(width, height)
        sh = torch.zeros(batch, 9, 3, device=dev)
        sh[:, 0] = 1.0 / SH_CONSTANTS[0] * 0.7
        sh[:, 2] = 0.3 / SH_CONSTANTS[2]  # light from the camera side (+z of the model)
        return FaceParams(
            identity=torch.zeros(1, self.num_identity, device=dev),
            expression=torch.zeros(batch, self.num_expression, device=dev),
            rotation=torch.zeros(batch, 3, device=dev),
            translation=torch.tensor([0.0, 0.0, distance], device=dev).repeat(batch, 1),
            focal=torch.full((batch,), f, device=dev),
            sh=sh,
            albedo=torch.zeros(1, self.num_verts, 3, device=dev),
        )

    # -- geometry -----------------------------------------------------------------------------------
    def shape(self, identity: Tensor, expression: Tensor, vertex_ids: Tensor | None = None) -> Tensor:
        """Model-space vertices [B,V,3] (mm) for identity [B|1,K] and expression [B,E]; with vertex_ids [N] only
        those vertices [B,N,3] (cheap: only their basis rows are used)."""
        B = max(identity.shape[0], expression.shape[0])
        if vertex_ids is None:
            mean, basis, bs = self.mean, self.basis, self.blendshapes
        else:
            rows = (vertex_ids.unsqueeze(-1) * 3 + torch.arange(3, device=vertex_ids.device)).reshape(-1)
            mean, basis, bs = self.mean[vertex_ids], self.basis[rows], self.blendshapes[:, rows]
        off = identity.to(basis.dtype) @ basis.T + expression.to(bs.dtype) @ bs  # [B,3N]
        return mean.unsqueeze(0) + off.reshape(B, -1, 3)

    def posed(self, verts: Tensor, rotation: Tensor, translation: Tensor) -> Tensor:
        """Model-space verts [B,N,3] -> OpenCV camera space [B,N,3]."""
        flip = torch.tensor([1.0, -1.0, -1.0], dtype=verts.dtype, device=verts.device)
        R = axis_angle_to_matrix(rotation)
        return (verts * flip) @ R.transpose(1, 2) + translation.unsqueeze(1)

    def cameras(self, focal: Tensor, width: int, height: int) -> Cameras:
        """Identity-extrinsic pinhole cameras (the face is posed in camera space) for focal [B]."""
        B = focal.shape[0]
        K = torch.zeros(B, 3, 3, dtype=focal.dtype, device=focal.device)
        K[:, 0, 0] = focal
        K[:, 1, 1] = focal
        K[:, 0, 2] = width / 2.0
        K[:, 1, 2] = height / 2.0
        K[:, 2, 2] = 1.0
        eye = torch.eye(3, dtype=focal.dtype, device=focal.device).expand(B, 3, 3)
        return Cameras(K=K, R=eye, t=torch.zeros(B, 3, dtype=focal.dtype, device=focal.device), width=width,
                       height=height)

    def project(self, points_cam: Tensor, focal: Tensor, width: int, height: int) -> Tensor:
        """Camera-space points [B,N,3] -> pixels [B,N,2] (pixel-centre convention: centre of (0,0) is 0.5)."""
        z = points_cam[..., 2:].clamp_min(1e-3)
        xy = points_cam[..., :2] / z * focal.view(-1, 1, 1)
        return xy + torch.tensor([width / 2.0, height / 2.0], dtype=xy.dtype, device=xy.device)

    # -- landmarks ----------------------------------------------------------------------------------
    def landmarks_2d(self, p: FaceParams, width: int, height: int, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Model iBUG-68 landmarks in pixels [B,68,2] and a mask [68] of the defined ones.

        Fixed landmarks use the ibug_to_sfm vertices. Contour landmarks (1-8, 10-17) are dynamic: with `target`
        [B,68,2] given, each takes the projected contour vertex of its side closest to its target (chosen without
        gradient, as eos does); without target they are left undefined. Landmarks 61 and 65 are never defined.
        """
        fixed = self.ibug_vertex >= 0
        cand = torch.cat([self.contour_right, self.contour_left])
        ids = torch.cat([self.ibug_vertex.clamp_min(0), cand])
        v = self.shape(p.identity, p.expression, ids)
        pix = self.project(self.posed(v, p.rotation, p.translation), p.focal, width, height)
        B = pix.shape[0]
        out = pix[:, :68].clone()
        mask = fixed.clone()
        if target is not None:
            cpix = pix[:, 68:]  # [B,34,2]
            nr = self.contour_right.numel()
            for lm_ids, sl in ((IBUG_RIGHT_CONTOUR, slice(0, nr)), (IBUG_LEFT_CONTOUR, slice(nr, None))):
                lm = torch.as_tensor(lm_ids, device=pix.device)
                c = cpix[:, sl]  # [B,Nc,2]
                d = torch.cdist(target[:, lm].detach().to(c.dtype), c.detach())  # [B,8,Nc]
                pick = d.argmin(-1)  # [B,8]
                out[:, lm] = torch.gather(c, 1, pick.unsqueeze(-1).expand(B, -1, 2))
                mask[lm] = True
        return out, mask

    # -- appearance and rendering -------------------------------------------------------------------
    def vertex_colors(self, verts_cam: Tensor, sh: Tensor, albedo: Tensor) -> Tensor:
        """Per-vertex SH-lit colour [B,V,3] of camera-space verts [B,V,3]. Normals are turned back into the
        model frame's convention (camera space with y, z flipped) so that a light coefficient means the same
        direction for every head pose in the image: +z = towards the camera, +y = up."""
        n = vertex_normals(verts_cam, self.faces)
        n = n * torch.tensor([1.0, -1.0, -1.0], dtype=n.dtype, device=n.device)
        alb = self.skin.to(verts_cam.dtype) + albedo
        return sh_shade(n, sh, alb.expand(verts_cam.shape[0], -1, -1))

    def mesh(self, p: FaceParams) -> Mesh:
        """A Mesh [B,V,3] in camera space with uvs and per-vertex colours of the first face (for render_gbuffer)."""
        verts = self.posed(self.shape(p.identity, p.expression), p.rotation, p.translation)
        col = self.vertex_colors(verts, p.sh, p.albedo)
        return Mesh(verts=verts, faces=self.faces, uvs=self.uvs, colors=col[0].clamp(0, 1))

    def render(self, p: FaceParams, width: int, height: int, backend: str = "auto",
               extra: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Rasterize the faces -> image [B,3,H,W] (SH-lit, 0 outside), mask [B,1,H,W], fragments, verts [B,V,3]
        (camera space) and one [B,C,H,W] image per entry of `extra` (per-vertex attributes [B|1,V,C])."""
        verts = self.posed(self.shape(p.identity, p.expression), p.rotation, p.translation)
        cams = self.cameras(p.focal.to(verts.dtype), width, height)
        frags = rasterize(cams, verts, self.faces, near=1.0, far=1e5, backend=backend)
        col = self.vertex_colors(verts, p.sh, p.albedo)
        attrs = [col] + [a.expand(verts.shape[0], -1, -1) for a in (extra or {}).values()]
        img = interpolate(torch.cat(attrs, -1), frags).permute(0, 3, 1, 2)
        out = {"image": img[:, :3], "mask": frags.mask.unsqueeze(1).to(img.dtype), "fragments": frags, "verts": verts}
        c = 3
        for k, a in (extra or {}).items():
            out[k] = img[:, c:c + a.shape[-1]]
            c += a.shape[-1]
        return out
