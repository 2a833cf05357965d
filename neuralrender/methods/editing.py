"""Scene editing for trained deferred-rendering models (`neural-textures`, `pix2pix-gbuffer`).

Geometry edits replace the mesh the model rasterizes (the learned texture / network are unchanged, so the
edited object keeps its learned appearance): move / rotate / scale an object (faces with one semantic label),
duplicate it, deform vertices. Texture edits change the neural texture in a UV box (u0, v0, u1, v1) with the
library's v-up convention: copy a region onto another, paint a patch of features (e.g. taken from another
trained model's texture), or mask a region to a constant feature vector. See recipes/edit_scene.py.
"""

from __future__ import annotations

import math

import torch

from neuralrender.errors import NeuralRenderError


def transform_matrix(translate=(0.0, 0.0, 0.0), rotate_deg=(0.0, 0.0, 0.0), scale=1.0,
                     pivot=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """4x4 float32: scale, then rotate (x, y, z Euler degrees, applied x first) about `pivot`, then translate."""
    ax, ay, az = (math.radians(a) for a in rotate_deg)
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float32)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float32)
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float32)
    s = torch.as_tensor(scale, dtype=torch.float32).expand(3)
    A = Rz @ Ry @ Rx @ torch.diag(s)
    p = torch.tensor(pivot, dtype=torch.float32)
    M = torch.eye(4)
    M[:3, :3] = A
    M[:3, 3] = p - A @ p + torch.tensor(translate, dtype=torch.float32)
    return M


def _apply(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    M = M.to(v)
    return v @ M[:3, :3].T + M[:3, 3]


def object_vertices(model, label: int) -> torch.Tensor:
    """Indices of the vertices used by faces with semantic `label` [K]."""
    sel = model.labels == label
    if not bool(sel.any()):
        raise NeuralRenderError(f"no faces with label {label}; labels present: {torch.unique(model.labels).tolist()}")
    return torch.unique(model.faces[sel])


def object_center(model, label: int) -> torch.Tensor:
    """Mean position [3] of the object's vertices (a natural rotation / scale pivot)."""
    return model.verts[object_vertices(model, label)].mean(0)


def transform_object(model, label: int, matrix: torch.Tensor) -> None:
    """Move the object with `label` by a 4x4 matrix (see `transform_matrix`), in place. Vertices shared with
    other objects move too (scene meshes keep objects separate, so this does not happen there)."""
    idx = object_vertices(model, label)
    v = model.verts.clone()
    v[idx] = _apply(matrix, v[idx])
    model.set_mesh(v, model.faces)


def duplicate_object(model, label: int, matrix: torch.Tensor, new_label: int | None = None) -> int:
    """Add a copy of the object, moved by `matrix`; the copy samples the same texels (same appearance).
    Returns the copy's label (default: max label + 1)."""
    sel = model.labels == label
    idx = object_vertices(model, label)
    remap = torch.full((model.verts.shape[0],), -1, dtype=torch.long, device=model.verts.device)
    remap[idx] = torch.arange(len(idx), device=idx.device) + model.verts.shape[0]
    new_verts = torch.cat([model.verts, _apply(matrix, model.verts[idx])], 0)
    new_faces = torch.cat([model.faces, remap[model.faces[sel]]], 0)
    new_fuv = torch.cat([model.face_uvs, model.face_uvs[sel]], 0)
    lab = int(model.labels.max()) + 1 if new_label is None else int(new_label)
    new_labels = torch.cat([model.labels, torch.full((int(sel.sum()),), lab, dtype=torch.long, device=sel.device)])
    model.set_mesh(new_verts, new_faces, face_uvs=new_fuv, labels=new_labels)
    return lab


def deform_vertices(model, fn) -> None:
    """Replace the vertices by fn(verts [V,3]) -> [V,3] (any deformation that keeps the topology)."""
    v = fn(model.verts.clone())
    if v.shape != model.verts.shape:
        raise NeuralRenderError(f"deform_vertices: fn returned shape {tuple(v.shape)}, expected {tuple(model.verts.shape)}")
    model.set_mesh(v, model.faces)


# ------------------------------------------------------------------------------------------ textures
def _texture(model):
    tex = getattr(model, "texture", None)
    if tex is None:
        raise NeuralRenderError(f"method '{getattr(model, 'name', type(model).__name__)}' has no neural texture to edit")
    return tex


def uv_box_to_texels(box, size: int) -> tuple[int, int, int, int]:
    """UV box (u0, v0, u1, v1), v up, -> texel slice (r0, r1, c0, c1) of a size x size texture (row 0 = v 1)."""
    u0, v0, u1, v1 = box
    if not (0 <= u0 < u1 <= 1 and 0 <= v0 < v1 <= 1):
        raise NeuralRenderError(f"UV box {tuple(box)} must satisfy 0 <= u0 < u1 <= 1 and 0 <= v0 < v1 <= 1")
    c0, c1 = int(round(u0 * size)), max(int(round(u1 * size)), int(round(u0 * size)) + 1)
    r0, r1 = int(round((1 - v1) * size)), max(int(round((1 - v0) * size)), int(round((1 - v1) * size)) + 1)
    return r0, r1, c0, c1


def texture_region(model, box) -> torch.Tensor:
    """The neural features [C,h,w] inside a UV box (a copy)."""
    tex = _texture(model)
    r0, r1, c0, c1 = uv_box_to_texels(box, tex.size)
    return tex.full()[0, :, r0:r1, c0:c1].detach().clone()


def paint_texture(model, box, patch: torch.Tensor) -> None:
    """Write features patch [C,h,w] (resized bilinearly to the box) into the UV box."""
    tex = _texture(model)
    r0, r1, c0, c1 = uv_box_to_texels(box, tex.size)
    if patch.shape[0] != tex.channels:
        raise NeuralRenderError(f"paint_texture: patch has {patch.shape[0]} channels, the texture {tex.channels}")
    p = torch.nn.functional.interpolate(patch[None].float(), size=(r1 - r0, c1 - c0), mode="bilinear",
                                        align_corners=False)[0]

    def fn(t):
        t[:, r0:r1, c0:c1] = p.to(t)
        return t

    tex.edit_(fn)


def copy_texture_region(model, src_box, dst_box) -> None:
    """Copy the features of one UV box onto another (resized to fit)."""
    paint_texture(model, dst_box, texture_region(model, src_box))


def mask_texture(model, box, value: torch.Tensor | float | None = None) -> None:
    """Set the UV box to a constant feature vector (default: the texture's mean feature)."""
    tex = _texture(model)
    r0, r1, c0, c1 = uv_box_to_texels(box, tex.size)
    full = tex.full()[0].detach()
    val = full.mean((1, 2)) if value is None else torch.as_tensor(value, dtype=full.dtype).expand(tex.channels)

    def fn(t):
        t[:, r0:r1, c0:c1] = val.to(t).view(-1, 1, 1)
        return t

    tex.edit_(fn)
