"""Triangle meshes: the `Mesh` container, normals, validation, normalisation, concatenation, primitives.

Conventions (docs/conventions.md): verts [V,3] float32 (or [B,V,3] for a batch of meshes that share one
topology, e.g. per-frame 3DMM vertices), faces [F,3] int64, uvs [T,2] with v pointing UP (OBJ/glTF),
face_uvs [F,3] int64 indices into uvs when UV seams split vertices (when face_uvs is None the uvs are
per-vertex and T == V). Faces are counter-clockwise seen from outside (right-handed normals
cross(v1-v0, v2-v0) point outwards). No I/O here: see neuralrender.io.meshes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from neuralrender.errors import NeuralRenderError

__all__ = [
    "Mesh",
    "MeshReport",
    "face_normals",
    "vertex_normals",
    "face_areas",
    "validate_mesh",
    "normalize_mesh",
    "concat_meshes",
    "icosphere",
    "uv_sphere",
    "plane",
    "box",
    "cylinder",
    "torus",
]


@dataclass
class Mesh:
    """A triangle mesh with optional UVs, normals, colours, textures, materials and semantic labels.

    verts [V,3] float (or [B,V,3]); faces [F,3] int64; uvs [T,2] (v up); face_uvs [F,3] int64 or None;
    normals [V,3] (or [B,V,3]) per-vertex unit normals or None (computed on demand by `vertex_normals()`);
    colors [V,3] in [0,1] or None; textures: list of [C,H,W] float images (row 0 = top of the image,
    i.e. v = 1); face_material [F] int64 index into `textures` (-1: no texture, use colors);
    labels [F] int64 per-face semantic label.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    uvs: torch.Tensor | None = None
    face_uvs: torch.Tensor | None = None
    normals: torch.Tensor | None = None
    colors: torch.Tensor | None = None
    textures: list[torch.Tensor] = field(default_factory=list)
    face_material: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def num_verts(self) -> int:
        return int(self.verts.shape[-2])

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def device(self) -> torch.device:
        return self.verts.device

    def uv_faces(self) -> torch.Tensor:
        """[F,3] indices into `uvs` for each face corner (face_uvs, or faces when UVs are per-vertex)."""
        if self.uvs is None:
            raise NeuralRenderError("mesh has no uvs")
        return self.face_uvs if self.face_uvs is not None else self.faces

    def vertex_normals(self) -> torch.Tensor:
        """[V,3] (or [B,V,3]) unit normals: the stored ones, else area-weighted face normals."""
        if self.normals is not None:
            return self.normals
        return vertex_normals(self.verts, self.faces)

    def face_normals(self) -> torch.Tensor:
        """[F,3] (or [B,F,3]) unit face normals."""
        return face_normals(self.verts, self.faces)

    def to(self, device: torch.device | str) -> "Mesh":
        """A copy with every tensor moved to `device`."""
        def mv(x):
            return None if x is None else x.to(device)
        return dataclasses.replace(
            self,
            verts=self.verts.to(device),
            faces=self.faces.to(device),
            uvs=mv(self.uvs),
            face_uvs=mv(self.face_uvs),
            normals=mv(self.normals),
            colors=mv(self.colors),
            textures=[t.to(device) for t in self.textures],
            face_material=mv(self.face_material),
            labels=mv(self.labels),
        )

    def clone(self) -> "Mesh":
        def cp(x):
            return None if x is None else x.clone()
        return dataclasses.replace(
            self, verts=self.verts.clone(), faces=self.faces.clone(), uvs=cp(self.uvs),
            face_uvs=cp(self.face_uvs), normals=cp(self.normals), colors=cp(self.colors),
            textures=[t.clone() for t in self.textures], face_material=cp(self.face_material),
            labels=cp(self.labels),
        )

    def transform(self, matrix: torch.Tensor) -> "Mesh":
        """Apply an affine transform: matrix [4,4] or [3,4] (or [B,4,4] for batched verts).

        Positions become M[:3,:3] @ v + M[:3,3]; stored normals are transformed by the inverse-transpose
        of M[:3,:3] and renormalised. A transform with negative determinant (a mirror) also flips the
        face winding so that normals keep pointing outwards.
        """
        m = matrix.to(self.verts)
        if m.shape[-2:] not in ((4, 4), (3, 4)):
            raise NeuralRenderError(f"Mesh.transform: matrix must be [4,4] or [3,4], got {tuple(m.shape)}")
        A, b = m[..., :3, :3], m[..., :3, 3]
        verts = self.verts @ A.transpose(-1, -2) + b.unsqueeze(-2)
        normals = None
        if self.normals is not None:
            normals = F.normalize(self.normals @ torch.linalg.inv(A), dim=-1)
        faces, face_uvs = self.faces, self.face_uvs
        det = torch.linalg.det(A)
        if bool((det < 0).all()):
            faces = faces[:, [0, 2, 1]]
            if face_uvs is not None:
                face_uvs = face_uvs[:, [0, 2, 1]]
            elif self.uvs is not None:
                face_uvs = None  # per-vertex uvs follow the vertex order, nothing to do
        return dataclasses.replace(self, verts=verts, normals=normals, faces=faces, face_uvs=face_uvs)


def face_areas(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Triangle areas: verts [...,V,3], faces [F,3] -> [...,F]."""
    v0, v1, v2 = (verts[..., faces[:, k], :] for k in range(3))
    return 0.5 * torch.linalg.norm(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, unit: bool = True) -> torch.Tensor:
    """Face normals cross(v1-v0, v2-v0): verts [...,V,3], faces [F,3] -> [...,F,3].

    unit=False returns the raw cross product (length = twice the area), used for area weighting.
    Degenerate faces get a zero normal.
    """
    v0, v1, v2 = (verts[..., faces[:, k], :] for k in range(3))
    n = torch.cross(v1 - v0, v2 - v0, dim=-1)
    return F.normalize(n, dim=-1, eps=1e-20) if unit else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals: verts [...,V,3], faces [F,3] -> [...,V,3] unit (zero if isolated)."""
    fn = face_normals(verts, faces, unit=False)  # [...,F,3], area weighted
    out = torch.zeros_like(verts)
    idx = faces.reshape(-1)  # [3F]
    contrib = fn.unsqueeze(-2).expand(*fn.shape[:-1], 3, 3).reshape(*fn.shape[:-2], -1, 3)
    out = out.index_add(-2, idx, contrib)
    return F.normalize(out, dim=-1, eps=1e-20)


@dataclass
class MeshReport:
    """Warnings found by `validate_mesh` (errors raise instead)."""

    name: str
    degenerate_faces: torch.Tensor  # [K] int64 indices of zero-area faces
    unused_verts: int
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings


def _check_index(name: str, fld: str, idx: torch.Tensor | None, n: int, allow_neg: bool = False):
    if idx is None or idx.numel() == 0:
        return
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise NeuralRenderError(f"mesh '{name}': field '{fld}' must hold integer indices, got {idx.dtype}")
    lo = -1 if allow_neg else 0
    bad = (idx < lo) | (idx >= n)
    if bool(bad.any()):
        first = int(bad.reshape(-1).nonzero()[0])
        raise NeuralRenderError(
            f"mesh '{name}': field '{fld}' has {int(bad.sum())} index(es) outside [{lo}, {n - 1}] "
            f"(first bad value {int(idx.reshape(-1)[first])} at flat position {first})"
        )


def _check_finite(name: str, fld: str, x: torch.Tensor | None):
    if x is None:
        return
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        rows = bad.reshape(-1, x.shape[-1]).any(-1).nonzero().reshape(-1)
        raise NeuralRenderError(
            f"mesh '{name}': field '{fld}' has {rows.numel()} row(s) with NaN/inf (first row {int(rows[0])})"
        )


def validate_mesh(mesh: Mesh, name: str = "mesh", degenerate: str = "warn", area_eps: float = 0.0) -> MeshReport:
    """Check a mesh; raise NeuralRenderError naming the mesh and field, or return a report of warnings.

    Errors: wrong shapes/dtypes, empty verts or faces, NaN/inf in verts/uvs/normals/colors, face, face_uvs,
    face_material or labels indices out of range or of the wrong length.
    Warnings (in the report): zero-area faces (area <= area_eps; degenerate="error" raises instead,
    "ignore" skips the check), vertices that no face uses.
    """
    v, f = mesh.verts, mesh.faces
    if v.dim() not in (2, 3) or v.shape[-1] != 3:
        raise NeuralRenderError(f"mesh '{name}': field 'verts' must be [V,3] or [B,V,3], got {tuple(v.shape)}")
    if f.dim() != 2 or f.shape[-1] != 3:
        raise NeuralRenderError(f"mesh '{name}': field 'faces' must be [F,3], got {tuple(f.shape)}")
    if v.shape[-2] == 0:
        raise NeuralRenderError(f"mesh '{name}': field 'verts' is empty (no vertices)")
    if f.shape[0] == 0:
        raise NeuralRenderError(f"mesh '{name}': field 'faces' is empty (no faces)")
    _check_finite(name, "verts", v)
    _check_index(name, "faces", f, v.shape[-2])
    nf = f.shape[0]
    if mesh.uvs is not None:
        if mesh.uvs.dim() != 2 or mesh.uvs.shape[-1] != 2:
            raise NeuralRenderError(f"mesh '{name}': field 'uvs' must be [T,2], got {tuple(mesh.uvs.shape)}")
        _check_finite(name, "uvs", mesh.uvs)
        if mesh.face_uvs is None and mesh.uvs.shape[0] != v.shape[-2]:
            raise NeuralRenderError(
                f"mesh '{name}': field 'uvs' has {mesh.uvs.shape[0]} rows but no face_uvs; per-vertex uvs "
                f"need one row per vertex ({v.shape[-2]})"
            )
    if mesh.face_uvs is not None:
        if mesh.uvs is None:
            raise NeuralRenderError(f"mesh '{name}': field 'face_uvs' is set but 'uvs' is None")
        if tuple(mesh.face_uvs.shape) != (nf, 3):
            raise NeuralRenderError(
                f"mesh '{name}': field 'face_uvs' must be [{nf},3], got {tuple(mesh.face_uvs.shape)}")
        _check_index(name, "face_uvs", mesh.face_uvs, mesh.uvs.shape[0])
    for fld in ("normals", "colors"):
        x = getattr(mesh, fld)
        if x is not None:
            if x.shape[-1] != 3 or x.shape[-2] != v.shape[-2]:
                raise NeuralRenderError(
                    f"mesh '{name}': field '{fld}' must be [{v.shape[-2]},3], got {tuple(x.shape)}")
            _check_finite(name, fld, x)
    for i, t in enumerate(mesh.textures):
        if t.dim() != 3 or min(t.shape) == 0:
            raise NeuralRenderError(f"mesh '{name}': field 'textures[{i}]' must be [C,H,W], got {tuple(t.shape)}")
    if mesh.face_material is not None:
        if tuple(mesh.face_material.shape) != (nf,):
            raise NeuralRenderError(
                f"mesh '{name}': field 'face_material' must be [{nf}], got {tuple(mesh.face_material.shape)}")
        _check_index(name, "face_material", mesh.face_material, len(mesh.textures), allow_neg=True)
    if mesh.labels is not None and tuple(mesh.labels.shape) != (nf,):
        raise NeuralRenderError(f"mesh '{name}': field 'labels' must be [{nf}], got {tuple(mesh.labels.shape)}")

    warnings: list[str] = []
    degen = torch.zeros(0, dtype=torch.long, device=v.device)
    if degenerate != "ignore":
        area = face_areas(v if v.dim() == 2 else v[0], f)
        degen = (area <= area_eps).nonzero().reshape(-1)
        if degen.numel():
            msg = (f"mesh '{name}': field 'faces' has {degen.numel()} degenerate (zero-area) face(s), "
                   f"first index {int(degen[0])}")
            if degenerate == "error":
                raise NeuralRenderError(msg)
            warnings.append(msg)
    used = torch.zeros(v.shape[-2], dtype=torch.bool, device=v.device)
    used[f.reshape(-1)] = True
    unused = int((~used).sum())
    if unused:
        warnings.append(f"mesh '{name}': field 'verts' has {unused} vertex(es) used by no face")
    return MeshReport(name=name, degenerate_faces=degen, unused_verts=unused, warnings=warnings)


def normalize_mesh(mesh: Mesh, radius: float = 1.0, return_transform: bool = False):
    """Centre the bounding box at the origin and scale so the farthest vertex is at distance `radius`.

    Returns the new Mesh, or (mesh, matrix [4,4]) with return_transform=True (new = M @ old).
    """
    v = mesh.verts if mesh.verts.dim() == 2 else mesh.verts[0]
    centre = 0.5 * (v.min(0).values + v.max(0).values)
    r = torch.linalg.norm(v - centre, dim=-1).max().clamp_min(1e-12)
    s = radius / r
    M = torch.eye(4, dtype=v.dtype, device=v.device)
    M[:3, :3] *= s
    M[:3, 3] = -centre * s
    out = mesh.transform(M)
    return (out, M) if return_transform else out


def concat_meshes(meshes: list[Mesh], labels: list[int] | None = None) -> Mesh:
    """Concatenate meshes into one (indices offset, textures appended, face_material offset).

    labels: one int per mesh to assign to all its faces; when None each mesh keeps its own `labels`,
    and a mesh without labels gets its position in the list. UVs, colors and normals are kept when at
    least one mesh has them; meshes that lack them get uv (0,0), colour 1 (white) and computed normals.
    Faces of meshes without textures get face_material -1. Verts may be [V,3] or all [B,V,3].
    """
    if not meshes:
        raise NeuralRenderError("concat_meshes: empty list")
    if labels is not None and len(labels) != len(meshes):
        raise NeuralRenderError(f"concat_meshes: {len(labels)} labels for {len(meshes)} meshes")
    dev = meshes[0].device
    any_uv = any(m.uvs is not None for m in meshes)
    any_col = any(m.colors is not None for m in meshes)
    any_nrm = any(m.normals is not None for m in meshes)
    any_tex = any(m.textures for m in meshes)
    verts, faces, uvs, fuvs, cols, nrms, mats, labs, texs = [], [], [], [], [], [], [], [], []
    voff = toff = moff = 0
    for i, m in enumerate(meshes):
        nv, nf = m.num_verts, m.num_faces
        verts.append(m.verts)
        faces.append(m.faces + voff)
        if any_uv:
            if m.uvs is None:
                uvs.append(torch.zeros(1, 2, dtype=m.verts.dtype, device=dev))
                fuvs.append(torch.full((nf, 3), toff, dtype=torch.long, device=dev))
                toff += 1
            else:
                uvs.append(m.uvs)
                fuvs.append(m.uv_faces() + toff)
                toff += m.uvs.shape[0]
        if any_col:
            cols.append(m.colors if m.colors is not None else torch.ones(nv, 3, dtype=m.verts.dtype, device=dev))
        if any_nrm:
            nrms.append(m.vertex_normals())
        if any_tex:
            if m.textures:
                fm = m.face_material if m.face_material is not None else torch.zeros(nf, dtype=torch.long, device=dev)
                mats.append(torch.where(fm >= 0, fm + moff, fm))
                texs.extend(m.textures)
                moff += len(m.textures)
            else:
                mats.append(torch.full((nf,), -1, dtype=torch.long, device=dev))
        if labels is not None:
            labs.append(torch.full((nf,), int(labels[i]), dtype=torch.long, device=dev))
        elif m.labels is not None:
            labs.append(m.labels)
        else:
            labs.append(torch.full((nf,), i, dtype=torch.long, device=dev))
        voff += nv
    return Mesh(
        verts=torch.cat(verts, dim=-2),
        faces=torch.cat(faces),
        uvs=torch.cat(uvs) if any_uv else None,
        face_uvs=torch.cat(fuvs) if any_uv else None,
        normals=torch.cat(nrms, dim=-2) if any_nrm else None,
        colors=torch.cat(cols) if any_col else None,
        textures=texs,
        face_material=torch.cat(mats) if any_tex else None,
        labels=torch.cat(labs),
    )


# ----------------------------------------------------------------------------------------------------
# Procedural primitives. All return float32 meshes with UVs (v up) and outward counter-clockwise faces.
# ----------------------------------------------------------------------------------------------------


def _dedupe_corner_uvs(corner_uvs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """corner_uvs [F,3,2] -> (uvs [T,2], face_uvs [F,3]) merging identical values."""
    flat = corner_uvs.reshape(-1, 2)
    key = torch.round(flat.double() * 1e6).long()
    uniq, inv = torch.unique(key, dim=0, return_inverse=True)
    uvs = torch.zeros(uniq.shape[0], 2, dtype=flat.dtype)
    uvs[inv] = flat
    return uvs, inv.reshape(-1, 3)


def _spherical_uvs(verts: torch.Tensor, faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Equirectangular UVs for a sphere-like mesh around the origin, y axis through the poles.

    u = 0.5 + atan2(x, z) / 2pi, v = 0.5 + asin(y/r) / pi (the +y pole is at v = 1). Faces across the seam
    get their small u shifted by +1 (so u may reach slightly above 1 there: sample with wrap="repeat"
    or accept a clamp); pole corners take the mean u of the other two corners.
    Returns (uvs [T,2], face_uvs [F,3]).
    """
    n = F.normalize(verts.double(), dim=-1)
    u = 0.5 + torch.atan2(n[:, 0], n[:, 2]) / (2 * math.pi)
    v = 0.5 + torch.asin(n[:, 1].clamp(-1, 1)) / math.pi
    cu = u[faces].clone()  # [F,3]
    cv = v[faces]
    wrap = (cu.max(1).values - cu.min(1).values) > 0.5
    cu[wrap] = torch.where(cu[wrap] < 0.5, cu[wrap] + 1.0, cu[wrap])
    pole = (n[faces][..., 1].abs() > 1 - 1e-9)
    for k in range(3):
        others = [j for j in range(3) if j != k]
        sel = pole[:, k]
        cu[sel, k] = cu[sel][:, others].mean(1)
    uv, fuv = _dedupe_corner_uvs(torch.stack([cu, cv], -1).float())
    return uv, fuv


def icosphere(subdivisions: int = 2, radius: float = 1.0) -> Mesh:
    """Geodesic sphere: 20 * 4**subdivisions faces, welded verts, spherical UVs with a seam (face_uvs)."""
    t = (1.0 + math.sqrt(5.0)) / 2.0
    v = torch.tensor([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                      [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
                     dtype=torch.float64)
    f = torch.tensor([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                      [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                      [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], dtype=torch.long)
    v = F.normalize(v, dim=-1)
    for _ in range(int(subdivisions)):
        edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])  # [3F,2]
        key = torch.sort(edges, dim=1).values
        uniq, inv = torch.unique(key, dim=0, return_inverse=True)
        mids = F.normalize(v[uniq[:, 0]] + v[uniq[:, 1]], dim=-1)
        m = inv.reshape(3, -1) + v.shape[0]  # m[0]=mid(0,1), m[1]=mid(1,2), m[2]=mid(2,0)
        v = torch.cat([v, mids])
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        f = torch.cat([torch.stack([a, m[0], m[2]], 1), torch.stack([b, m[1], m[0]], 1),
                       torch.stack([c, m[2], m[1]], 1), torch.stack([m[0], m[1], m[2]], 1)])
    uvs, fuv = _spherical_uvs(v, f)
    v = (v * radius).float()
    return Mesh(verts=v, faces=f, uvs=uvs, face_uvs=fuv, normals=F.normalize(v, dim=-1))


def uv_sphere(n_lat: int = 16, n_lon: int = 32, radius: float = 1.0) -> Mesh:
    """Latitude/longitude sphere around the origin, poles on +-y; welded verts, seam via face_uvs.

    UV: u = longitude / 2pi (u increases with atan2(x, z)), v = 0 at the -y pole, 1 at the +y pole.
    """
    if n_lat < 2 or n_lon < 3:
        raise NeuralRenderError(f"uv_sphere: need n_lat >= 2 and n_lon >= 3, got {n_lat}, {n_lon}")
    lat = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)[1:-1]  # from +y pole downwards
    lon = torch.arange(n_lon, dtype=torch.float64) * (2 * math.pi / n_lon)
    ring = torch.stack([torch.sin(lat)[:, None] * torch.sin(lon)[None], torch.cos(lat)[:, None].expand(-1, n_lon),
                        torch.sin(lat)[:, None] * torch.cos(lon)[None]], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), ring,
                       torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)])
    top, bottom = 0, verts.shape[0] - 1

    def vid(i, j):  # ring i in [0, n_lat-2], lon j (wrapped)
        return 1 + i * n_lon + (j % n_lon)

    def tid(i, j):  # uv grid row i in [0, n_lat] (0 = +y pole), column j in [0, n_lon]
        return i * (n_lon + 1) + j

    us = torch.arange(n_lon + 1, dtype=torch.float64) / n_lon
    vs = 1.0 - torch.arange(n_lat + 1, dtype=torch.float64) / n_lat
    uvs = torch.stack([us[None].expand(n_lat + 1, -1), vs[:, None].expand(-1, n_lon + 1)], -1).reshape(-1, 2)
    faces, fuvs = [], []
    for j in range(n_lon):
        faces.append([top, vid(0, j), vid(0, j + 1)])
        fuvs.append([tid(0, j), tid(1, j), tid(1, j + 1)])
        faces.append([bottom, vid(n_lat - 2, j + 1), vid(n_lat - 2, j)])
        fuvs.append([tid(n_lat, j), tid(n_lat - 1, j + 1), tid(n_lat - 1, j)])
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = vid(i, j), vid(i, j + 1), vid(i + 1, j), vid(i + 1, j + 1)
            ta, tb, tc, td = tid(i + 1, j), tid(i + 1, j + 1), tid(i + 2, j), tid(i + 2, j + 1)
            faces += [[a, c, d], [a, d, b]]
            fuvs += [[ta, tc, td], [ta, td, tb]]
    v = (verts * radius).float()
    return Mesh(verts=v, faces=torch.tensor(faces, dtype=torch.long), uvs=uvs.float(),
                face_uvs=torch.tensor(fuvs, dtype=torch.long), normals=F.normalize(v, dim=-1))


def _grid(nu: int, nv: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (nu+1)x(nv+1) vertex grid: params [N,2] in [0,1]^2 and CCW faces (in the (u,v) plane)."""
    u = torch.linspace(0, 1, nu + 1)
    v = torch.linspace(0, 1, nv + 1)
    params = torch.stack(torch.meshgrid(u, v, indexing="xy"), -1).reshape(-1, 2)  # row-major in v
    faces = []
    for j in range(nv):
        for i in range(nu):
            a = j * (nu + 1) + i
            b, c, d = a + 1, a + nu + 1, a + nu + 2
            faces += [[a, b, d], [a, d, c]]
    return params, torch.tensor(faces, dtype=torch.long)


def plane(size: float | tuple[float, float] = 2.0, segments: int = 1, axis: str = "+y") -> Mesh:
    """A square (segments x segments quads) centred at the origin, facing `axis` ('+y','-y','+z','-z','+x','-x').

    For '+y' (a floor with y up... note: OpenCV cameras look along +z with y DOWN in camera space; the
    world up axis is the caller's choice) the plane spans x and z; u follows +x and v follows -z.
    """
    sx, sy = (size, size) if isinstance(size, (int, float)) else size
    p, f = _grid(segments, segments)
    a = (p[:, 0] - 0.5) * sx
    b = (p[:, 1] - 0.5) * sy
    zero = torch.zeros_like(a)
    # base plane: normal +z, u along +x, v along +y (CCW seen from +z)
    base = torch.stack([a, b, zero], -1)
    rot = {
        "+z": torch.eye(3),
        "-z": torch.tensor([[-1.0, 0, 0], [0, 1, 0], [0, 0, -1]]),
        "+y": torch.tensor([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]),  # (x,y,z)->(x,-z... ) maps +z normal to +y
        "-y": torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
        "+x": torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]]),
        "-x": torch.tensor([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]]),
    }
    if axis not in rot:
        raise NeuralRenderError(f"plane: axis must be one of {sorted(rot)}, got {axis!r}")
    R = rot[axis]
    verts = base @ R.T
    normal = R[:, 2]
    return Mesh(verts=verts.float(), faces=f, uvs=p.clone(), normals=normal.expand(verts.shape[0], 3).clone())


def box(size: float | tuple[float, float, float] = 2.0) -> Mesh:
    """Axis-aligned box centred at the origin: 24 verts (split per side for flat normals), 12 faces.

    Each side carries the full [0,1]^2 UV square.
    """
    s = torch.tensor([size] * 3 if isinstance(size, (int, float)) else list(size), dtype=torch.float32) / 2
    verts, uvs, normals, faces = [], [], [], []
    # (normal, u-axis, v-axis): u x v = normal, so (u,v) CCW order is CCW seen from outside
    sides = [((1, 0, 0), (0, 0, -1), (0, 1, 0)), ((-1, 0, 0), (0, 0, 1), (0, 1, 0)),
             ((0, 1, 0), (1, 0, 0), (0, 0, -1)), ((0, -1, 0), (1, 0, 0), (0, 0, 1)),
             ((0, 0, 1), (1, 0, 0), (0, 1, 0)), ((0, 0, -1), (-1, 0, 0), (0, 1, 0))]
    for k, (n, ua, va) in enumerate(sides):
        n, ua, va = (torch.tensor(x, dtype=torch.float32) for x in (n, ua, va))
        for uu, vv in ((0, 0), (1, 0), (1, 1), (0, 1)):
            verts.append((n + (2 * uu - 1) * ua + (2 * vv - 1) * va) * s)
            uvs.append(torch.tensor([uu, vv], dtype=torch.float32))
            normals.append(n)
        o = 4 * k
        faces += [[o, o + 1, o + 2], [o, o + 2, o + 3]]
    return Mesh(verts=torch.stack(verts), faces=torch.tensor(faces, dtype=torch.long), uvs=torch.stack(uvs),
                normals=torch.stack(normals))


def cylinder(radius: float = 1.0, height: float = 2.0, segments: int = 32, caps: bool = True) -> Mesh:
    """Cylinder along y centred at the origin. Side: u around (atan2(x,z)/2pi), v up; caps: disc UVs.

    Side and cap vertices are separate (sharp rim normals); the side seam is split in UV via face_uvs.
    """
    n = int(segments)
    ang = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    x, z = torch.sin(ang), torch.cos(ang)
    h = height / 2
    side = torch.cat([torch.stack([x, torch.full_like(x, -h), z], -1) * torch.tensor([radius, 1, radius]),
                      torch.stack([x, torch.full_like(x, h), z], -1) * torch.tensor([radius, 1, radius])])
    side_n = torch.cat([torch.stack([x, 0 * x, z], -1)] * 2)
    us = torch.arange(n + 1, dtype=torch.float64) / n
    uvs = [torch.cat([torch.stack([us, torch.zeros_like(us)], -1), torch.stack([us, torch.ones_like(us)], -1)])]
    faces, fuvs = [], []
    for j in range(n):
        a, b, c, d = j, (j + 1) % n, n + j, n + (j + 1) % n
        ta, tb, tc, td = j, j + 1, n + 1 + j, n + 2 + j
        faces += [[a, b, d], [a, d, c]]
        fuvs += [[ta, tb, td], [ta, td, tc]]
    verts, normals = [side], [side_n]
    if caps:
        toff, voff = 2 * (n + 1), 2 * n
        for sgn in (1.0, -1.0):
            ring = torch.stack([x * radius, torch.full_like(x, sgn * h), z * radius], -1)
            centre = torch.tensor([[0.0, sgn * h, 0.0]], dtype=torch.float64)
            verts.append(torch.cat([centre, ring]))
            normals.append(torch.tensor([0.0, sgn, 0.0], dtype=torch.float64).expand(n + 1, 3))
            uvs.append(torch.cat([torch.tensor([[0.5, 0.5]], dtype=torch.float64),
                                  torch.stack([0.5 + 0.5 * x, 0.5 - 0.5 * z * sgn], -1)]))
            for j in range(n):
                a, b = voff + 1 + j, voff + 1 + (j + 1) % n
                ta, tb = toff + 1 + j, toff + 1 + (j + 1) % n
                if sgn > 0:  # cross(a, b) points to +y because the angle grows from +z towards +x
                    faces.append([voff, a, b])
                    fuvs.append([toff, ta, tb])
                else:
                    faces.append([voff, b, a])
                    fuvs.append([toff, tb, ta])
            voff += n + 1
            toff += n + 1
    return Mesh(verts=torch.cat(verts).float(), faces=torch.tensor(faces, dtype=torch.long),
                uvs=torch.cat(uvs).float(), face_uvs=torch.tensor(fuvs, dtype=torch.long),
                normals=torch.cat(normals).float())


def torus(major: float = 1.0, minor: float = 0.35, n_major: int = 32, n_minor: int = 16) -> Mesh:
    """Torus around the y axis; welded verts, both UV seams split via face_uvs (u around y, v around tube)."""
    p, f_uv = _grid(n_major, n_minor)  # UV grid with seam columns duplicated
    a = torch.arange(n_major, dtype=torch.float64) * (2 * math.pi / n_major)
    b = torch.arange(n_minor, dtype=torch.float64) * (2 * math.pi / n_minor)
    A, B = torch.meshgrid(a, b, indexing="xy")  # [n_minor, n_major]
    r = major + minor * torch.cos(B)
    verts = torch.stack([r * torch.sin(A), minor * torch.sin(B), r * torch.cos(A)], -1).reshape(-1, 3)
    centre = torch.stack([major * torch.sin(A), 0 * A, major * torch.cos(A)], -1).reshape(-1, 3)
    # map UV grid vertex (i, j) -> welded vertex (i % n_major, j % n_minor)
    i = torch.arange(n_major + 1).repeat(n_minor + 1) % n_major
    j = torch.arange(n_minor + 1).repeat_interleave(n_major + 1) % n_minor
    welded = j * n_major + i
    faces = welded[f_uv]  # grid faces are CCW in (u,v) and d/du x d/dv points out of the tube
    return Mesh(verts=verts.float(), faces=faces, uvs=p.float(), face_uvs=f_uv,
                normals=F.normalize(verts - centre, dim=-1).float())
