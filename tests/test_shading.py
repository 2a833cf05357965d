import math

import pytest
import torch

from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at
from neuralrender.graphics.meshes import box, concat_meshes, plane
from neuralrender.graphics.shading import (
    SH_CONSTANTS,
    DirectionalLights,
    PointLights,
    blinn_phong,
    lambert,
    sh_basis,
    sh_directional,
    sh_irradiance,
    sh_shade,
    shadow_lookup,
    shadow_map,
)


def test_lambert_hand_computed():
    n = torch.tensor([[[0.0, 0, 2], [0, 0, -1]]])  # [B=1,N=2,3]; second faces away
    light = DirectionalLights(direction=torch.tensor([0.0, 0.6, 0.8]), color=torch.tensor([1.0, 0.5, 0.25]))
    alb = torch.tensor([0.5, 0.5, 1.0])
    out = lambert(n, light, albedo=alb, ambient=0.1)
    assert torch.allclose(out[0, 0], torch.tensor([0.5 * 0.9, 0.5 * 0.5, 1.0 * 0.3]))
    assert torch.allclose(out[0, 1], alb * 0.1)
    # shadowed light keeps only ambient
    sh = lambert(n, light, albedo=alb, ambient=0.1, shadow=torch.zeros(1, 2, 1))
    assert torch.allclose(sh, alb * 0.1)


def test_point_light_inverse_square_and_batching():
    pts = torch.zeros(2, 1, 3)
    n = torch.tensor([0.0, 0, 1]).expand(2, 1, 3)
    lights = PointLights(position=torch.tensor([[[0.0, 0, 2]], [[0.0, 2, 2]]]), color=8.0, attenuation=(0, 0, 1))
    out = lambert(n, lights, points=pts)
    assert out[0, 0, 0] == pytest.approx(8.0 / 4)
    assert out[1, 0, 0] == pytest.approx(8.0 / 8 * (1 / math.sqrt(2)))
    both = lambert(n, [lights, DirectionalLights(torch.tensor([0.0, 0, 1]), 0.5)], points=pts)
    assert torch.allclose(both, out + 0.5)


def test_blinn_phong_mirror_peak():
    pts = torch.zeros(1, 1, 3)
    n = torch.tensor([[[0.0, 0, 1]]])
    a = math.radians(30)
    light = DirectionalLights(torch.tensor([math.sin(a), 0, math.cos(a)]), 1.0)
    eye = torch.tensor([[-math.sin(a) * 5, 0, math.cos(a) * 5]])  # mirror direction: h == n
    out = blinn_phong(n, pts, eye, light, albedo=torch.tensor([0.2, 0.2, 0.2]), specular=0.5, shininess=50)
    assert torch.allclose(out[0, 0], torch.full((3,), 0.2 * math.cos(a) + 0.5), atol=1e-5)
    eye2 = torch.tensor([[math.sin(a) * 5, 0, math.cos(a) * 5]])  # viewer at the light: h at 30 deg
    out2 = blinn_phong(n, pts, eye2, light, specular=0.5, shininess=50)
    assert out2[0, 0, 0] == pytest.approx(math.cos(a) + 0.5 * math.cos(a) ** 50, rel=1e-4)


def _sphere_quadrature(n_theta=200, n_phi=400, dtype=torch.float64):
    th = (torch.arange(n_theta, dtype=dtype) + 0.5) * math.pi / n_theta
    ph = (torch.arange(n_phi, dtype=dtype) + 0.5) * 2 * math.pi / n_phi
    T, P = torch.meshgrid(th, ph, indexing="ij")
    d = torch.stack([torch.sin(T) * torch.cos(P), torch.sin(T) * torch.sin(P), torch.cos(T)], -1).reshape(-1, 3)
    w = (torch.sin(T) * (math.pi / n_theta) * (2 * math.pi / n_phi)).reshape(-1)
    return d, w


def test_sh_basis_is_orthonormal_and_matches_constants():
    d, w = _sphere_quadrature()
    Y = sh_basis(d)
    gram = (Y * w[:, None]).T @ Y
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=1e-4)
    assert SH_CONSTANTS[0] == pytest.approx(0.282095, abs=1e-6)
    assert SH_CONSTANTS[1] == pytest.approx(0.488603, abs=1e-6)
    assert SH_CONSTANTS[4] == pytest.approx(1.092548, abs=1e-6)
    assert SH_CONSTANTS[6] == pytest.approx(0.315392, abs=1e-6)
    assert SH_CONSTANTS[8] == pytest.approx(0.546274, abs=1e-6)


def test_sh_irradiance_equals_brute_force_integral():
    """For radiance band-limited to l <= 2, irradiance E(n) = int L(w) max(0, n.w) dw is exactly
    sum_k A_l(k) L_k Y_k(n) (Ramamoorthi & Hanrahan 2001); check against numerical integration."""
    g = torch.Generator().manual_seed(0)
    L = torch.randn(1, 9, 3, generator=g, dtype=torch.float64)
    d, w = _sphere_quadrature()
    radiance = sh_basis(d) @ L[0]  # [M,3]
    normals = torch.nn.functional.normalize(torch.randn(1, 6, 3, generator=g, dtype=torch.float64), dim=-1)
    cos = (normals[0] @ d.T).clamp_min(0)  # [6,M]
    brute = (cos * w) @ radiance  # [6,3]
    fast = sh_shade(normals, sh_irradiance(L))[0]
    assert torch.allclose(fast, brute, atol=2e-4)


def test_sh_directional_light_closed_form():
    """9-term Lambert approximation of a unit directional light: 1/4 + cos/2 + 5/16 * P2(cos)."""
    light = torch.tensor([[0.0, 0.0, 1.0]])
    coeffs = sh_irradiance(sh_directional(light, torch.ones(3)))
    cos = torch.linspace(-1, 1, 21)
    n = torch.stack([torch.sqrt(1 - cos**2), torch.zeros_like(cos), cos], -1)[None]
    out = sh_shade(n, coeffs)[0, :, 0]
    expect = 0.25 + cos / 2 + 5 / 16 * (3 * cos**2 - 1) / 2
    assert torch.allclose(out, expect, atol=1e-5)
    # and it approximates max(0, cos) to within 0.1
    assert (out - cos.clamp_min(0)).abs().max() < 0.1


def test_sh_constant_ambient_and_albedo():
    coeffs = torch.zeros(2, 9, 3)
    coeffs[:, 0] = torch.tensor([0.3, 0.6, 0.9]) / SH_CONSTANTS[0]
    n = torch.randn(2, 4, 5, 3)
    alb = torch.rand(2, 4, 5, 3)
    out = sh_shade(n, coeffs, albedo=alb)
    assert out.shape == (2, 4, 5, 3)
    assert torch.allclose(out, alb * torch.tensor([0.3, 0.6, 0.9]), atol=1e-6)


def test_shadow_map_box_over_floor():
    floor = plane(6.0, segments=1, axis="+y")
    blocker = box(1.0)
    blocker.verts = blocker.verts + torch.tensor([0.0, 1.5, 0.0])
    scene = concat_meshes([floor, blocker])
    R, t = look_at(torch.tensor([[0.0, 6.0, 0.001]]), torch.zeros(1, 3), up=torch.tensor([0.0, 0.0, -1.0]))
    light_cam = Cameras(K=intrinsics_from_fov(60.0, 64, 64), R=R, t=t, width=64, height=64)
    depth = shadow_map(light_cam, scene.verts, scene.faces)
    assert depth.shape == (1, 64, 64) and torch.isinf(depth).any()
    pts = torch.tensor([[[0.0, 0.0, 0.0], [2.5, 0.0, 2.5], [0.0, 2.0, 0.0], [0.2, 0.0, -0.2], [0.0, 1.0, 0.0]]])
    vis = shadow_lookup(depth, light_cam, pts, pcf=0)
    # under the box: shadow; far corner: lit; top of the box: lit (no acne); box bottom face: shadowed
    assert vis[0].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
    soft = shadow_lookup(depth, light_cam, pts, pcf=1)
    assert soft[0, 0] == 0 and soft[0, 1] == 1
