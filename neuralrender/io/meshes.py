"""Load and save triangle meshes (OBJ, PLY, GLB/glTF, and anything else trimesh reads) as `Mesh`.

`load_mesh` keeps the library conventions: verts [V,3] float32 welded by position (trimesh splits
vertices at UV seams; they are merged back and the seams kept as uvs [T,2] + face_uvs [F,3]), faces
[F,3] int64, UVs with v pointing up (trimesh already converts glTF's v-down texcoords), textures as
float [3,H,W] tensors in [0,1] (row 0 = top of the image = v 1), and for scenes with several geometries
(multi-material OBJ, glTF nodes) one concatenated mesh with `face_material` indexing `textures` and
`labels` holding the index of the geometry each face came from. Node transforms are applied.
Errors name the file: missing, unreadable, no faces, bad indices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.meshes import Mesh, concat_meshes, validate_mesh

__all__ = ["load_mesh", "save_mesh", "load_texture"]


def load_texture(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a float32 [3,H,W] texture in [0,1] (alpha dropped; row 0 = top)."""
    from PIL import Image

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "texture file not found")
    try:
        with Image.open(p) as im:
            return _pil_to_tensor(im)
    except (OSError, ValueError) as e:
        raise DataError(p, f"cannot read texture image: {e}") from e


def _pil_to_tensor(im) -> torch.Tensor:
    arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _weld(verts: np.ndarray, extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Merge identical rows (first-occurrence order kept). Returns (index of kept rows [V'], old->new [V])."""
    key = verts if extra is None else np.concatenate([verts, extra], 1)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return first[order], rank[inv.reshape(-1)]


def _material_texture(material) -> torch.Tensor | None:
    """A [3,H,W] texture for a trimesh material: its image (times the base colour factor), or a 1x1
    texture of its flat colour; None when there is no material."""
    if material is None:
        return None
    img = getattr(material, "image", None)  # SimpleMaterial (OBJ)
    factor = None
    if hasattr(material, "baseColorTexture"):  # PBRMaterial (glTF)
        img = material.baseColorTexture
        if material.baseColorFactor is not None:
            factor = np.asarray(material.baseColorFactor, dtype=np.float32)[:3] / (
                255.0 if np.asarray(material.baseColorFactor).dtype == np.uint8 else 1.0)
    if img is not None:
        tex = _pil_to_tensor(img)
        if factor is not None:
            tex = tex * torch.from_numpy(factor).view(3, 1, 1)
        return tex
    col = getattr(material, "diffuse", None)
    if col is None and factor is not None:
        return torch.from_numpy(factor).view(3, 1, 1).clone()
    if col is None:
        return None
    col = np.asarray(col, dtype=np.float32)[:3] / 255.0
    return torch.from_numpy(col).view(3, 1, 1).clone()


def _from_trimesh(path: Path, tm, transform: np.ndarray | None, use_material: bool) -> Mesh:
    import trimesh

    v = np.asarray(tm.vertices, dtype=np.float64)
    f = np.asarray(tm.faces, dtype=np.int64)
    if transform is not None:
        v = v @ transform[:3, :3].T + transform[:3, 3]
    visual = tm.visual
    uv = None
    if isinstance(visual, trimesh.visual.texture.TextureVisuals) and visual.uv is not None and len(visual.uv) == len(v):
        uv = np.asarray(visual.uv, dtype=np.float32)
    colors = None
    if isinstance(visual, trimesh.visual.color.ColorVisuals) and visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    normals = None
    if "vertex_normals" in tm._cache:  # normals stored in the file (trimesh computes them otherwise)
        normals = np.asarray(tm.vertex_normals, dtype=np.float64)
        if transform is not None:
            normals = normals @ np.linalg.inv(transform[:3, :3])
            normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    keep, remap = _weld(v, None if normals is None else np.round(normals, 5))
    mesh = Mesh(
        verts=torch.from_numpy(v[keep]).float(),
        faces=torch.from_numpy(remap[f]),
        uvs=None if uv is None else torch.from_numpy(uv),
        face_uvs=None if uv is None else torch.from_numpy(f.copy()),
        normals=None if normals is None else torch.from_numpy(normals[keep]).float(),
        colors=None if colors is None else torch.from_numpy(colors[keep]),
    )
    if mesh.uvs is not None and len(keep) == len(v):  # nothing was merged: uvs are per-vertex
        mesh.face_uvs = None
    tex = _material_texture(getattr(visual, "material", None)) if use_material else None
    if tex is not None:
        mesh.textures = [tex]
        mesh.face_material = torch.zeros(mesh.num_faces, dtype=torch.long)
    return mesh


def _obj_has_material(path: Path) -> bool:
    """trimesh invents a grey material for OBJ files without one; look for `usemtl` ourselves."""
    with open(path, "rb") as fh:
        for line in fh:
            if line.startswith(b"usemtl") or line.startswith(b"mtllib"):
                return True
    return False


def load_mesh(path: str | os.PathLike, texture: str | os.PathLike | None = None, validate: bool = True) -> Mesh:
    """Read a mesh file (OBJ/PLY/GLB/glTF/...) into one `Mesh` (see the module docstring).

    texture: an image file to use as the (only) texture, for OBJ files without an .mtl (e.g. Spot);
    it replaces any material texture. validate: run `validate_mesh` (errors raise as DataError).
    """
    import trimesh

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "mesh file not found" if not p.exists() else "not a file")
    suffix = p.suffix.lower()
    try:
        loaded = trimesh.load(p, process=False)
    except Exception as e:  # trimesh raises many types (ValueError, KeyError, struct.error, ...)
        raise DataError(p, f"cannot read mesh ({type(e).__name__}: {e})") from e
    use_material = suffix != ".obj" or _obj_has_material(p)
    parts: list[Mesh] = []
    if isinstance(loaded, trimesh.Scene):
        for node in loaded.graph.nodes_geometry:
            transform, gname = loaded.graph[node]
            geom = loaded.geometry[gname]
            if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
                parts.append(_from_trimesh(p, geom, np.asarray(transform, dtype=np.float64), use_material))
    elif isinstance(loaded, trimesh.Trimesh):
        if len(loaded.faces):
            parts.append(_from_trimesh(p, loaded, None, use_material))
    else:
        raise DataError(p, f"mesh has no faces (the file holds a {type(loaded).__name__})", field="faces")
    if not parts:
        raise DataError(p, "mesh has no faces", field="faces")
    mesh = parts[0] if len(parts) == 1 else concat_meshes(parts)
    if len(parts) == 1:
        mesh.labels = torch.zeros(mesh.num_faces, dtype=torch.long)
    if texture is not None:
        mesh.textures = [load_texture(texture)]
        mesh.face_material = torch.zeros(mesh.num_faces, dtype=torch.long)
    if validate:
        try:
            validate_mesh(mesh, name=str(p))
        except NeuralRenderError as e:
            raise DataError(p, str(e)) from e
    return mesh


def _save_png(tex: torch.Tensor, path: Path) -> None:
    from PIL import Image

    arr = (tex.detach().float().cpu().clamp(0, 1)[:3].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    Image.fromarray(arr).save(path)


def save_mesh(mesh: Mesh, path: str | os.PathLike) -> None:
    """Write `mesh` to .obj (with .mtl + one PNG per texture, face groups per material, face_uvs kept,
    vertex colours as 'v x y z r g b', normals as vn) or .ply (positions, faces, vertex colours).

    Batched verts must have batch size 1.
    """
    p = Path(path)
    verts = mesh.verts
    if verts.dim() == 3:
        if verts.shape[0] != 1:
            raise NeuralRenderError(f"save_mesh({p}): verts are batched [{verts.shape[0]},V,3]; save one at a time")
        verts = verts[0]
    validate_mesh(mesh, name=str(p), degenerate="ignore")
    v = verts.detach().double().cpu().numpy()
    f = mesh.faces.cpu().numpy()
    col = None if mesh.colors is None else mesh.colors.detach().double().cpu().numpy()
    p.parent.mkdir(parents=True, exist_ok=True)
    suffix = p.suffix.lower()
    if suffix == ".ply":
        import trimesh

        tm = trimesh.Trimesh(vertices=v, faces=f, process=False,
                             vertex_colors=None if col is None else (np.clip(col, 0, 1) * 255 + 0.5).astype(np.uint8))
        tm.export(p)
        return
    if suffix != ".obj":
        raise NeuralRenderError(f"save_mesh({p}): unsupported format '{suffix}' (use .obj or .ply)")
    lines = [f"# neuralrender: {len(v)} vertices, {len(f)} faces"]
    if mesh.textures:
        mtl = p.with_suffix(".mtl")
        mlines = []
        for i, tex in enumerate(mesh.textures):
            img = f"{p.stem}_tex{i}.png"
            _save_png(tex, p.parent / img)
            mlines += [f"newmtl material_{i}", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "illum 1", f"map_Kd {img}", ""]
        mlines += ["newmtl material_none", "Kd 1 1 1", ""]
        mtl.write_text("\n".join(mlines))
        lines.append(f"mtllib {mtl.name}")
    for i in range(len(v)):
        x, y, z = v[i]
        lines.append(f"v {x:.8g} {y:.8g} {z:.8g}" + ("" if col is None else " {:.6g} {:.6g} {:.6g}".format(*col[i])))
    uvs = mesh.uvs
    if uvs is not None:
        lines += [f"vt {a:.8g} {b:.8g}" for a, b in uvs.detach().double().cpu().numpy()]
    if mesh.normals is not None:
        nrm = mesh.normals[0] if mesh.normals.dim() == 3 else mesh.normals
        lines += [f"vn {a:.6g} {b:.6g} {c:.6g}" for a, b, c in nrm.detach().double().cpu().numpy()]
    ft = None if uvs is None else mesh.uv_faces().cpu().numpy()
    has_n = mesh.normals is not None

    def corner(fi, k):
        s = str(f[fi, k] + 1)
        if ft is not None:
            s += f"/{ft[fi, k] + 1}"
        if has_n:
            s += ("/" if ft is not None else "//") + str(f[fi, k] + 1)
        return s

    mats = np.zeros(len(f), dtype=np.int64) if mesh.face_material is None else mesh.face_material.cpu().numpy()
    groups = [(m, np.nonzero(mats == m)[0]) for m in np.unique(mats)] if mesh.textures else [(None, np.arange(len(f)))]
    for m, idx in groups:
        if m is not None:
            lines.append(f"usemtl material_{m}" if m >= 0 else "usemtl material_none")
        lines += ["f " + " ".join(corner(fi, k) for k in range(3)) for fi in idx]
    p.write_text("\n".join(lines) + "\n")
