import pytest
import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at, orbit
from neuralrender.graphics.gbuffer import render_gbuffer, shade
from neuralrender.graphics.meshes import box, concat_meshes, icosphere, normalize_mesh, plane
from neuralrender.graphics.shading import SH_CONSTANTS, DirectionalLights, sh_shade


def _front_camera(size=48, eye=(0.0, 0.0, 3.0), fov=40.0):
    R, t = look_at(torch.tensor([eye]), torch.zeros(1, 3))
    return Cameras(K=intrinsics_from_fov(fov, size, size), R=R, t=t, width=size, height=size)


def test_sphere_buffers_are_geometrically_consistent():
    cam = _front_camera()
    gb = render_gbuffer(cam, icosphere(3))
    m = gb["mask"][0, 0] > 0
    assert m.sum() > 200 and not m[0, 0]
    pos = gb["positions"][0].permute(1, 2, 0)[m]
    nrm = gb["normals"][0].permute(1, 2, 0)[m]
    assert ((pos.norm(dim=-1) - 1).abs() < 0.01).all()  # on the unit sphere (faceting error)
    assert ((torch.nn.functional.normalize(pos, dim=-1) * nrm).sum(-1) > 0.99).all()
    # positions project back to their pixel centres with the stored depth
    xy, z = cam.project(pos[None])
    ii, jj = torch.nonzero(m, as_tuple=True)
    assert torch.allclose(xy[0], torch.stack([jj + 0.5, ii + 0.5], -1).float(), atol=2e-3)
    assert torch.allclose(z[0], gb["depth"][0, 0][m], atol=1e-4)
    # centre pixel: normal faces the camera; in camera space (OpenCV, z forward) it points along -z
    c = gb["normals_cam"][0, :, 24, 24]
    assert torch.allclose(c, torch.tensor([0.0, 0, -1]), atol=0.03)
    assert gb["depth"][0, 0, 24, 24] == pytest.approx(2.0, abs=0.01)
    assert (gb["face_id"][0, 0][~m] == -1).all() and (gb["depth"][0, 0][~m] == 0).all()


def test_texture_appears_upright_with_v_up():
    quad = plane(2.0, axis="+z")  # u along +x, v along +y, facing the camera at +z
    tex = torch.zeros(3, 2, 2)
    tex[:, 0, 0] = torch.tensor([1.0, 0, 0])  # top-left texel (v = 1, u = 0): red
    tex[:, 0, 1] = torch.tensor([0.0, 1, 0])  # top-right: green
    tex[:, 1, 0] = torch.tensor([0.0, 0, 1])  # bottom-left: blue
    tex[:, 1, 1] = torch.tensor([1.0, 1, 1])
    quad.textures = [tex]
    gb = render_gbuffer(_front_camera(40, fov=20.0), quad, texture_filter="nearest")
    alb = gb["albedo"][0]
    assert torch.allclose(alb[:, 12, 12], tex[:, 0, 0])  # image top-left = texture top-left
    assert torch.allclose(alb[:, 12, 27], tex[:, 0, 1])
    assert torch.allclose(alb[:, 27, 12], tex[:, 1, 0])
    uv = gb["uv"][0]
    assert uv[1, 12, 20] > 0.5 > uv[1, 27, 20] and uv[0, 20, 27] > 0.5 > uv[0, 20, 12]


def test_labels_materials_and_vertex_colours():
    a = icosphere(2)
    a.verts = a.verts * 0.5 + torch.tensor([-0.6, 0, 0])
    a.colors = torch.tensor([0.0, 1.0, 0.0]).expand(a.num_verts, 3).clone()
    b = box(0.8)
    b.verts = b.verts + torch.tensor([0.6, 0, 0])
    b.textures = [torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)]
    b.face_material = torch.zeros(12, dtype=torch.long)
    scene = concat_meshes([a, b], labels=[3, 7])
    gb = render_gbuffer(_front_camera(64), scene)
    lab, alb = gb["labels"][0, 0], gb["albedo"][0]
    assert set(lab.unique().tolist()) == {-1, 3, 7}
    assert torch.equal(lab[gb["face_id"][0, 0] >= 0], scene.labels[gb["face_id"][0, 0][gb["face_id"][0, 0] >= 0]])
    assert torch.allclose(alb[:, lab == 7], torch.tensor([1.0, 0, 0])[:, None])  # texture of box
    assert torch.allclose(alb[:, lab == 3], torch.tensor([0.0, 1, 0])[:, None], atol=1e-6)  # sphere colours
    assert (alb[:, lab == -1] == 0).all()
    with pytest.raises(NeuralRenderError, match="labels"):
        render_gbuffer(_front_camera(8), icosphere(0), channels=["labels"])


def test_lambert_image_matches_analytic_sphere():
    cam = _front_camera(64)
    gb = render_gbuffer(cam, icosphere(4), channels=["mask", "positions", "normals"])
    l = torch.nn.functional.normalize(torch.tensor([0.3, -0.5, 0.8]), dim=0)
    img = shade(gb, cam, DirectionalLights(l, 1.0), ambient=0.0, background=0.5)
    m = gb["mask"][0, 0] > 0
    exact = (torch.nn.functional.normalize(gb["positions"][0].permute(1, 2, 0)[m], dim=-1) @ l).clamp_min(0)
    assert (img[0, 0][m] - exact).abs().max() < 0.02
    assert (img[0, :, ~m] == 0.5).all()
    coeffs = torch.zeros(1, 9, 3)
    coeffs[:, 0] = 1 / SH_CONSTANTS[0]
    coeffs[:, 2] = 0.5  # varies with the normal's z
    sh = shade(gb, cam, model="sh", sh_coeffs=coeffs)
    ref = sh_shade(gb["normals"].permute(0, 2, 3, 1), coeffs).permute(0, 3, 1, 2) * gb["mask"]
    assert torch.allclose(sh, ref)


def test_gradients_reach_vertices_and_texture():
    quad = plane(1.5, axis="+z")
    quad.verts.requires_grad_(True)
    tex = torch.rand(3, 4, 4, requires_grad=True)
    quad.textures = [tex]
    cams = _front_camera(24)
    gb = render_gbuffer(cams, quad)
    img = shade(gb, cams, model="blinn_phong", lights=DirectionalLights(torch.tensor([0.2, 0.1, 1.0]), 1.0))
    img.sum().backward()
    assert tex.grad.abs().sum() > 0 and quad.verts.grad.abs().sum() > 0


def test_batched_cameras_and_batched_verts(shared_data):
    from neuralrender.io.meshes import load_mesh
    from neuralrender.paths import shared_path

    spot = normalize_mesh(load_mesh(shared_path("meshes", "spot", "spot_triangulated.obj"),
                                    texture=shared_path("meshes", "spot", "spot_texture.png")))
    cams = orbit(2, radius=3.0, width=40, height=40)
    gb = render_gbuffer(cams, spot)
    assert gb["albedo"].shape == (2, 3, 40, 40) and gb["uv"].shape == (2, 2, 40, 40)
    assert 0.1 < gb["mask"].mean() < 0.9
    # batched verts: the second copy shifted out of view
    moved = spot.clone()
    moved.verts = torch.stack([spot.verts, spot.verts + 100.0])
    gb2 = render_gbuffer(cams, moved, channels=["mask", "normals"])
    assert gb2["mask"][1].sum() == 0 and torch.equal(gb2["mask"][0], gb["mask"][0])


def test_flat_and_two_sided_normals():
    cube = box(1.0)
    cube.normals = None  # smooth vertex normals would be radial-ish; flat ones are the side normals
    cam = _front_camera(32, eye=(0.0, 0.0, 3.0), fov=30.0)
    gb = render_gbuffer(cam, cube, channels=["mask", "normals"], flat_normals=True)
    m = gb["mask"][0, 0] > 0
    assert torch.allclose(gb["normals"][0][:, m], torch.tensor([0.0, 0, 1])[:, None].expand(3, int(m.sum())))
    # an open quad seen from behind: one-sided normals point away, two-sided ones towards the camera
    quad = plane(2.0, axis="-z")
    back = render_gbuffer(cam, quad, channels=["mask", "normals"])
    both = render_gbuffer(cam, quad, channels=["mask", "normals"], two_sided=True)
    qm = back["mask"][0, 0] > 0
    assert (back["normals"][0, 2][qm] < -0.99).all() and (both["normals"][0, 2][qm] > 0.99).all()
