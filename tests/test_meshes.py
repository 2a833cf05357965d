import math

import pytest
import torch

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.meshes import (
    Mesh,
    box,
    concat_meshes,
    cylinder,
    face_areas,
    face_normals,
    icosphere,
    normalize_mesh,
    plane,
    torus,
    uv_sphere,
    validate_mesh,
    vertex_normals,
)
from neuralrender.io.meshes import load_mesh, save_mesh
from neuralrender.paths import shared_path


def signed_volume(m: Mesh) -> float:
    v = m.verts.double()
    f = m.faces
    return float((torch.cross(v[f[:, 0]], v[f[:, 1]], dim=-1) * v[f[:, 2]]).sum() / 6)


def uv_signed_areas(m: Mesh) -> torch.Tensor:
    uv = m.uvs[m.uv_faces()]
    a, b = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    return a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]


CLOSED = {
    "icosphere": (lambda: icosphere(3), 4 / 3 * math.pi, 0.02),
    "uv_sphere": (lambda: uv_sphere(24, 48), 4 / 3 * math.pi, 0.02),
    "box": (lambda: box((2.0, 1.0, 3.0)), 6.0, 1e-6),
    "cylinder": (lambda: cylinder(0.5, 2.0, 64), math.pi * 0.25 * 2.0, 0.01),
    "torus": (lambda: torus(1.0, 0.3, 64, 32), 2 * math.pi**2 * 0.3**2, 0.02),
}


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_primitives_closed_outward_with_uvs(name):
    make, volume, tol = CLOSED[name]
    m = make()
    rep = validate_mesh(m, name)
    assert rep.ok, rep.warnings
    assert signed_volume(m) == pytest.approx(volume, rel=tol)  # positive: faces wind outwards
    # stored normals agree with the winding
    fn = m.face_normals()
    assert ((fn * m.normals[m.faces].mean(1)).sum(-1) > 0.9).all()
    # the UV layout is never mirrored, so textures are not flipped on any face
    assert (uv_signed_areas(m) > 0).all()
    assert m.uvs.min() >= 0 and m.uvs.max() <= 1.0 + 0.1


@pytest.mark.parametrize("axis", ["+x", "-x", "+y", "-y", "+z", "-z"])
def test_plane_faces_its_axis(axis):
    m = plane(2.0, segments=3, axis=axis)
    n = torch.zeros(3)
    n["xyz".index(axis[1])] = 1.0 if axis[0] == "+" else -1.0
    assert torch.allclose(m.face_normals(), n.expand(m.num_faces, 3), atol=1e-6)
    assert float(face_areas(m.verts, m.faces).sum()) == pytest.approx(4.0)
    assert (uv_signed_areas(m) > 0).all()


def test_normals_single_triangle_and_batched():
    v = torch.tensor([[0.0, 0, 0], [2, 0, 0], [0, 3, 0], [5, 5, 5]])
    f = torch.tensor([[0, 1, 2]])
    assert torch.allclose(face_normals(v, f), torch.tensor([[0.0, 0, 1]]))
    assert face_areas(v, f).item() == pytest.approx(3.0)
    vn = vertex_normals(v, f)
    assert torch.allclose(vn[:3], torch.tensor([0.0, 0, 1]).expand(3, 3))
    assert vn[3].abs().sum() == 0  # unused vertex
    vb = torch.stack([v, v * torch.tensor([1.0, 1, -1]) + 1])
    nb = vertex_normals(vb, f)
    assert nb.shape == (2, 4, 3) and torch.allclose(nb[1, 0], torch.tensor([0.0, 0, 1]))


def test_vertex_normals_of_sphere_are_radial():
    m = icosphere(2)
    n = vertex_normals(m.verts, m.faces)
    assert ((n * m.verts).sum(-1) > 0.995).all()


def test_validate_errors_name_mesh_and_field():
    m = box()
    bad = m.clone()
    bad.verts[3, 1] = float("nan")
    with pytest.raises(NeuralRenderError, match=r"'cube'.*'verts'.*NaN"):
        validate_mesh(bad, "cube")
    bad = m.clone()
    bad.faces[5, 2] = 24
    with pytest.raises(NeuralRenderError, match=r"'cube'.*'faces'.*outside \[0, 23\]"):
        validate_mesh(bad, "cube")
    bad = m.clone()
    bad.face_uvs = torch.zeros(12, 3, dtype=torch.long)
    bad.face_uvs[0, 0] = 99
    with pytest.raises(NeuralRenderError, match="'face_uvs'"):
        validate_mesh(bad, "cube")
    with pytest.raises(NeuralRenderError, match="empty"):
        validate_mesh(Mesh(torch.zeros(3, 3), torch.zeros(0, 3, dtype=torch.long)), "e")
    bad = m.clone()
    bad.face_material = torch.full((12,), 2)
    with pytest.raises(NeuralRenderError, match="'face_material'"):
        validate_mesh(bad, "cube")


def test_validate_degenerate_and_unused_are_warnings():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0, 0], [9, 9, 9]])
    f = torch.tensor([[0, 1, 2], [0, 1, 3]])  # second face is collinear
    rep = validate_mesh(Mesh(v, f), "flat")
    assert rep.degenerate_faces.tolist() == [1] and rep.unused_verts == 1 and len(rep.warnings) == 2
    with pytest.raises(NeuralRenderError, match="degenerate"):
        validate_mesh(Mesh(v, f), "flat", degenerate="error")


def test_transform_and_mirror_keep_outward_winding():
    m = icosphere(1)
    a = math.radians(30)
    M = torch.tensor([[math.cos(a), 0, math.sin(a), 1.0], [0, 1, 0, 2], [-math.sin(a), 0, math.cos(a), 3], [0, 0, 0, 1]])
    t = m.transform(M)
    assert torch.allclose(t.verts.mean(0), torch.tensor([1.0, 2, 3]), atol=1e-5)
    assert torch.allclose(t.normals, m.normals @ M[:3, :3].T, atol=1e-5)
    mirror = m.transform(torch.diag(torch.tensor([-1.0, 1, 1, 1])))
    assert signed_volume(mirror) > 0
    assert ((mirror.face_normals() * mirror.normals[mirror.faces].mean(1)).sum(-1) > 0.9).all()


def test_normalize_mesh():
    m = box((2.0, 4.0, 1.0))
    m.verts = m.verts * 3 + torch.tensor([5.0, -1, 2])
    n, M = normalize_mesh(m, return_transform=True)
    assert torch.linalg.norm(n.verts, dim=-1).max() == pytest.approx(1.0)
    assert torch.allclose(n.verts.min(0).values + n.verts.max(0).values, torch.zeros(3), atol=1e-6)
    assert torch.allclose(m.verts @ M[:3, :3].T + M[:3, 3], n.verts, atol=1e-6)


def test_concat_meshes_offsets_labels_materials():
    a = icosphere(0)
    a.textures = [torch.rand(3, 4, 4), torch.rand(3, 2, 2)]
    a.face_material = torch.arange(a.num_faces) % 2
    b = box()
    c = plane()
    c.textures = [torch.zeros(3, 1, 1)]
    c.face_material = torch.zeros(c.num_faces, dtype=torch.long)
    m = concat_meshes([a, b, c])
    validate_mesh(m, "scene")
    assert m.num_verts == 12 + 24 + 4 and m.num_faces == 20 + 12 + 2
    assert torch.equal(m.labels, torch.cat([torch.zeros(20), torch.ones(12), torch.full((2,), 2)]).long())
    assert len(m.textures) == 3
    assert torch.equal(m.face_material[:20], a.face_material)
    assert (m.face_material[20:32] == -1).all() and (m.face_material[32:] == 2).all()
    assert torch.allclose(m.verts[m.faces[20:32]], b.verts[b.faces])
    assert torch.allclose(m.uvs[m.face_uvs[20:32]], b.uvs[b.faces])
    assert torch.equal(concat_meshes([a, b], labels=[7, 3]).labels.unique(), torch.tensor([3, 7]))


# ------------------------------------------------------------------------------------------------ io


def _spot():
    return load_mesh(shared_path("meshes", "spot", "spot_triangulated.obj"),
                     texture=shared_path("meshes", "spot", "spot_texture.png"))


def test_load_real_meshes(shared_data):
    spot = _spot()
    assert (spot.num_verts, spot.num_faces, spot.uvs.shape[0]) == (2930, 5856, 3225)
    assert spot.face_uvs.shape == (5856, 3) and spot.textures[0].shape == (3, 1024, 1024)
    assert validate_mesh(spot, "spot").ok
    assert signed_volume(spot) > 0  # closed, outward
    fuze = load_mesh(shared_path("meshes", "fuze", "fuze.obj"))
    assert (fuze.num_verts, fuze.num_faces, fuze.uvs.shape[0]) == (502, 1000, 664)
    assert len(fuze.textures) == 1 and fuze.textures[0].shape == (3, 1024, 1024)
    assert fuze.normals is not None and (fuze.face_material == 0).all()
    duck = load_mesh(shared_path("meshes", "duck", "Duck.glb"))
    assert duck.num_faces == 4212 and duck.uvs is not None and duck.textures[0].shape[0] == 3
    # the glTF node scales the duck by 0.01: transform applied
    assert 1.0 < float(duck.verts.max() - duck.verts.min()) < 5.0
    for m in (spot, fuze, duck):
        assert m.verts.dtype == torch.float32 and m.faces.dtype == torch.int64


def test_obj_uvs_are_the_file_vt_values(shared_data):
    path = shared_path("meshes", "spot", "spot_triangulated.obj")
    vt = [list(map(float, line.split()[1:3])) for line in path.read_text().splitlines() if line.startswith("vt ")]
    ft = [[int(c.split("/")[1]) - 1 for c in line.split()[1:4]] for line in path.read_text().splitlines()
          if line.startswith("f ")]
    spot = load_mesh(path)
    expect = torch.tensor(vt)[torch.tensor(ft)]
    assert torch.allclose(spot.uvs[spot.face_uvs], expect, atol=1e-6)


def _read_glb_texcoords(path):
    """Independent minimal GLB reader: (TEXCOORD_0 [N,2] as stored, v down; indices [F,3])."""
    import json
    import struct

    import numpy as np

    data = path.read_bytes()
    n_json = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20:20 + n_json])
    binary = data[20 + n_json + 8:]

    def accessor(i):
        acc = gltf["accessors"][i]
        view = gltf["bufferViews"][acc["bufferView"]]
        dtype = {5123: np.uint16, 5125: np.uint32, 5126: np.float32}[acc["componentType"]]
        width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[acc["type"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        arr = np.frombuffer(binary, dtype=dtype, count=acc["count"] * width, offset=start)
        return arr.reshape(acc["count"], width)

    prim = gltf["meshes"][0]["primitives"][0]
    return accessor(prim["attributes"]["TEXCOORD_0"]), accessor(prim["indices"]).reshape(-1, 3)


def test_gltf_uvs_are_flipped_to_v_up(shared_data):
    path = shared_path("meshes", "duck", "Duck.glb")
    uv, idx = _read_glb_texcoords(path)
    duck = load_mesh(path)
    corners = torch.from_numpy(uv.astype("float32"))[torch.from_numpy(idx.astype("int64"))]
    corners[..., 1] = 1 - corners[..., 1]
    assert torch.allclose(duck.uvs[duck.face_uvs], corners, atol=1e-6)


def test_obj_without_material_gets_no_texture(shared_data):
    spot = load_mesh(shared_path("meshes", "spot", "spot_triangulated.obj"))
    assert spot.textures == [] and spot.face_material is None


def test_obj_round_trip_keeps_seams_and_texture(shared_data, tmp_path):
    spot = _spot()
    spot.textures = [torch.nn.functional.interpolate(spot.textures[0][None], size=(64, 64), mode="area")[0]]
    save_mesh(spot, tmp_path / "spot.obj")
    back = load_mesh(tmp_path / "spot.obj")
    assert back.num_verts == spot.num_verts and back.uvs.shape == spot.uvs.shape
    assert torch.allclose(back.verts[back.faces], spot.verts[spot.faces], atol=1e-6)
    assert torch.allclose(back.uvs[back.face_uvs], spot.uvs[spot.face_uvs], atol=1e-6)
    assert (back.textures[0] - spot.textures[0]).abs().max() <= 0.5 / 255 + 1e-6


def test_multi_material_round_trip(tmp_path):
    red, blue = torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 0, 1])
    a = icosphere(1)
    a.textures = [blue.view(3, 1, 1).expand(3, 2, 2).clone()]
    a.face_material = torch.zeros(a.num_faces, dtype=torch.long)
    b = box()
    b.verts = b.verts + 5
    b.textures = [red.view(3, 1, 1).expand(3, 2, 2).clone()]
    b.face_material = torch.zeros(12, dtype=torch.long)
    save_mesh(concat_meshes([a, b]), tmp_path / "two.obj")
    m = load_mesh(tmp_path / "two.obj")
    assert m.num_faces == a.num_faces + 12 and len(m.textures) == 2
    centre_x = m.verts[m.faces].mean(1)[:, 0]
    for fi in (0, m.num_faces - 1):
        colour = m.textures[int(m.face_material[fi])][:, 0, 0]
        assert torch.allclose(colour, red if centre_x[fi] > 2.5 else blue)
    assert len(m.labels.unique()) == 2


def test_ply_round_trip_with_colors(tmp_path):
    m = icosphere(1)
    m.colors = torch.rand(m.num_verts, 3)
    save_mesh(m, tmp_path / "s.ply")
    back = load_mesh(tmp_path / "s.ply")
    assert torch.allclose(back.verts[back.faces], m.verts[m.faces], atol=1e-6)
    assert (back.colors - m.colors).abs().max() <= 0.5 / 255 + 1e-6


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nope.obj.*not found"):
        load_mesh(tmp_path / "nope.obj")
    p = tmp_path / "points.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(DataError, match=r"points.obj.*\[faces\].*no faces"):
        load_mesh(p)
    p = tmp_path / "broken.glb"
    p.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    with pytest.raises(DataError, match="broken.glb"):
        load_mesh(p)
    p = tmp_path / "badidx.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n")
    with pytest.raises(DataError, match="badidx.obj"):
        load_mesh(p)
    with pytest.raises(NeuralRenderError, match="unsupported"):
        save_mesh(box(), tmp_path / "x.stl")
