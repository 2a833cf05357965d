"""Cameras: conventions, round trips (project/unproject, OpenGL <-> OpenCV, transforms.json), distortion."""

import json
import math

import pytest
import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.cameras import (
    Cameras,
    distort,
    interpolate_cameras,
    intrinsics_from_fov,
    look_at,
    matrix_to_quaternion,
    opencv_to_opengl_c2w,
    opengl_c2w_to_opencv,
    orbit,
    quaternion_to_matrix,
    spiral,
    undistort,
)


def _random_cams(B=4, W=64, H=48, dist=False, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    eye = torch.randn(B, 3, generator=g, dtype=dtype) * 3
    R, t = look_at(eye, torch.zeros(B, 3, dtype=dtype))
    K = intrinsics_from_fov(50.0, W, H).to(dtype).expand(B, 3, 3).clone()
    K[:, 0, 1] = 0.7  # skew
    K[:, 0, 2] += 1.3
    d = torch.tensor([0.05, -0.02, 0.001, -0.002], dtype=dtype) if dist else None
    return Cameras(K=K, R=R, t=t, width=W, height=H, dist=d)


def test_look_at_axes_opencv():
    R, t = look_at(torch.tensor([[0.0, 0.0, 5.0]]), torch.zeros(1, 3))
    # looking down -z world with y up: camera x = world +x, camera y (down) = world -y, camera z = world -z
    assert torch.allclose(R[0], torch.tensor([[1.0, 0, 0], [0, -1, 0], [0, 0, -1]]), atol=1e-6)
    cam = Cameras(K=intrinsics_from_fov(60.0, 32, 32), R=R, t=t, width=32, height=32)
    assert torch.allclose(cam.centers, torch.tensor([[0.0, 0.0, 5.0]]), atol=1e-6)
    # a world point above the target (+y) appears in the upper half (smaller pixel y)
    xy, z = cam.project(torch.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]]))
    assert xy[0, 0, 1] < 16 and abs(float(xy[0, 0, 0]) - 16) < 1e-4
    assert xy[0, 1, 0] > 16  # +x world is to the right
    assert torch.allclose(z, torch.tensor([[5.0, 5.0]]))


def test_intrinsics_and_pixel_centres():
    K = intrinsics_from_fov(90.0, 40, 20)
    assert torch.allclose(K, torch.tensor([[10.0, 0, 20], [0, 10, 10], [0, 0, 1]]))
    cam = Cameras(K=K, R=torch.eye(3), t=torch.zeros(3), width=40, height=20)
    o, d = cam.rays()
    assert o.shape == (1, 20, 40, 3) and d.shape == (1, 20, 40, 3)
    # ray through pixel (0, 0) passes through its centre (0.5, 0.5)
    xy, _ = cam.project(d[:, 0, 0][:, None] * 3)
    assert torch.allclose(xy[0, 0], torch.tensor([0.5, 0.5]), atol=1e-5)
    assert torch.allclose(d.norm(dim=-1), torch.ones(1, 20, 40))
    g = cam.pixel_grid()
    assert g[0, 0].tolist() == [0.5, 0.5] and g[19, 39].tolist() == [39.5, 19.5]


@pytest.mark.parametrize("dist", [False, True])
def test_project_unproject_round_trip(dist):
    cams = _random_cams(dist=dist)
    g = torch.Generator().manual_seed(2)
    xy = torch.rand(4, 100, 2, generator=g, dtype=torch.float64) * torch.tensor([64.0, 48.0], dtype=torch.float64)
    depth = 1 + 4 * torch.rand(4, 100, generator=g, dtype=torch.float64)
    p = cams.unproject(xy, depth)
    xy2, d2 = cams.project(p)
    assert torch.allclose(xy2, xy, atol=1e-5) and torch.allclose(d2, depth, atol=1e-5)
    # and world -> pixels -> world
    pw = torch.randn(4, 50, 3, generator=g, dtype=torch.float64) * 0.5
    xy3, d3 = cams.project(pw)
    assert torch.allclose(cams.unproject(xy3, d3), pw, atol=1e-5)


def test_rays_agree_with_unproject():
    cams = _random_cams(dist=True, W=16, H=12)
    o, d = cams.rays()
    uv = cams.pixel_grid().reshape(1, -1, 2).expand(4, -1, -1)
    p = cams.unproject(uv, torch.full((4, uv.shape[1]), 2.0, dtype=torch.float64))
    dd = torch.nn.functional.normalize(p - cams.centers[:, None], dim=-1)
    assert torch.allclose(dd.reshape(4, 12, 16, 3), d, atol=1e-6)
    assert torch.allclose(o[:, 0, 0], cams.centers)


def test_opengl_round_trip_and_axes():
    cams = _random_cams()
    c2w = opencv_to_opengl_c2w(cams.R, cams.t)
    assert c2w.shape == (4, 4, 4)
    # the OpenGL camera looks down its -z axis: -c2w[:3, 2] is the OpenCV viewing direction (R row 2)
    assert torch.allclose(-c2w[:, :3, 2], cams.R[:, 2], atol=1e-6)
    assert torch.allclose(c2w[:, :3, 1], -cams.R[:, 1], atol=1e-6)  # GL up = -(CV y)
    assert torch.allclose(c2w[:, :3, 3], cams.centers, atol=1e-6)
    R, t = opengl_c2w_to_opencv(c2w)
    assert torch.allclose(R, cams.R, atol=1e-6) and torch.allclose(t, cams.t, atol=1e-6)
    back = Cameras.from_opengl_c2w(c2w[:, :3], cams.K, 64, 48).opengl_c2w()
    assert torch.allclose(back, c2w, atol=1e-6)


def test_transforms_json_round_trip(shared_data):
    path = shared_data / "posed_images" / "instant_ngp_fox" / "transforms_270x480.json"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    meta = json.loads(path.read_text())
    c2w = torch.tensor([fr["transform_matrix"] for fr in meta["frames"]], dtype=torch.float64)
    K = torch.tensor([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1]], dtype=torch.float64)
    dist = torch.tensor([meta["k1"], meta["k2"], meta["p1"], meta["p2"]], dtype=torch.float64)
    cams = Cameras.from_opengl_c2w(c2w, K, int(meta["w"]), int(meta["h"]), dist=dist)
    assert cams.batch_size == len(meta["frames"])
    assert torch.allclose(cams.opengl_c2w(), c2w, atol=1e-5)
    # R is a rotation
    eye = torch.eye(3, dtype=torch.float64).expand_as(cams.R)
    assert torch.allclose(cams.R @ cams.R.transpose(1, 2), eye, atol=1e-5)
    # all cameras look roughly at a common point (the fox): the origin projects inside most images
    xy, z = cams.project(torch.zeros(1, 1, 3, dtype=torch.float64))
    inside = (z[:, 0] > 0) & (xy[:, 0, 0] > 0) & (xy[:, 0, 0] < 270) & (xy[:, 0, 1] > 0) & (xy[:, 0, 1] < 480)
    assert inside.float().mean() > 0.8


def test_distortion_round_trip():
    dist = torch.tensor([[0.0578421, -0.0805099, -0.000980296, 0.00015575], [-0.2, 0.05, 0.003, -0.002]],
                        dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    xy = (torch.rand(2, 500, 2, generator=g, dtype=torch.float64) - 0.5) * 1.2
    assert torch.allclose(undistort(distort(xy, dist), dist), xy, atol=1e-7)
    assert torch.allclose(distort(undistort(xy, dist), dist), xy, atol=1e-7)
    # known value: pure k1
    d = torch.tensor([0.1, 0.0, 0.0, 0.0], dtype=torch.float64)
    out = distort(torch.tensor([[[0.5, 0.0]]], dtype=torch.float64), d)
    assert torch.allclose(out, torch.tensor([[[0.5 * (1 + 0.1 * 0.25), 0.0]]], dtype=torch.float64))


def test_to_clip_matches_project():
    cams = _random_cams()
    p = torch.randn(4, 30, 3, dtype=torch.float64) * 0.5
    clip = cams.to_clip(p, near=0.5, far=20.0)
    xy, z = cams.project(p)
    ndc = clip[..., :2] / clip[..., 3:]
    pix = (ndc + 1) / 2 * torch.tensor([64.0, 48.0], dtype=torch.float64)
    assert torch.allclose(pix, xy, atol=1e-6)
    assert torch.allclose(clip[..., 3], z)
    P = cams.projection_matrix(0.5, 20.0)
    pc = cams.world_to_camera(p)
    clip2 = torch.cat([pc, torch.ones_like(pc[..., :1])], -1) @ P.transpose(1, 2)
    assert torch.allclose(clip, clip2, atol=1e-9)
    # near maps to z_ndc = -1, far to +1
    cam = Cameras(K=intrinsics_from_fov(60.0, 8, 8), R=torch.eye(3), t=torch.zeros(3), width=8, height=8)
    c = cam.to_clip(torch.tensor([[0.0, 0, 0.5], [0, 0, 20.0]]), near=0.5, far=20.0)
    assert torch.allclose(c[0, :, 2] / c[0, :, 3], torch.tensor([-1.0, 1.0]), atol=1e-6)
    with pytest.raises(NeuralRenderError):
        cam.to_clip(torch.zeros(1, 3), near=2.0, far=1.0)


def test_orbit_spiral_interpolate():
    cams = orbit(8, radius=4.0, elevation_deg=30.0, target=(0.0, 1.0, 0.0), width=40, height=30)
    assert cams.batch_size == 8
    assert torch.allclose((cams.centers - torch.tensor([0.0, 1.0, 0.0])).norm(dim=-1), torch.full((8,), 4.0), atol=1e-5)
    xy, _ = cams.project(torch.tensor([[[0.0, 1.0, 0.0]]]))
    assert torch.allclose(xy, torch.tensor([20.0, 15.0]).expand(8, 1, 2), atol=1e-4)
    sp = spiral(10, radius=3.0, width=40, height=30)
    assert sp.batch_size == 10
    path = interpolate_cameras(cams[0:3], 9)
    assert path.batch_size == 9
    assert torch.allclose(path.R[0], cams.R[0], atol=1e-5) and torch.allclose(path.R[-1], cams.R[2], atol=1e-5)
    assert torch.allclose(path.centers[4], cams.centers[1], atol=1e-5)
    # rotations stay orthonormal; the midpoint rotation is halfway in angle
    eye = torch.eye(3).expand(9, 3, 3)
    assert torch.allclose(path.R @ path.R.transpose(1, 2), eye, atol=1e-5)
    q = matrix_to_quaternion(cams.R)
    assert torch.allclose(quaternion_to_matrix(q), cams.R, atol=1e-5)


def test_scaled_and_getitem_and_errors():
    cams = _random_cams()
    s = cams.scaled(0.5)
    assert (s.width, s.height) == (32, 24)
    p = torch.randn(4, 5, 3, dtype=torch.float64) * 0.3
    assert torch.allclose(s.project(p)[0], cams.project(p)[0] * 0.5, atol=1e-6)
    one = cams[1]
    assert one.batch_size == 1 and torch.allclose(one.R[0], cams.R[1])
    assert cams[1:3].batch_size == 2
    with pytest.raises(NeuralRenderError):
        Cameras(K=torch.eye(3), R=torch.eye(3), t=torch.zeros(3), width=0, height=4)
    with pytest.raises(NeuralRenderError):
        Cameras(K=torch.eye(3), R=torch.eye(3), t=torch.zeros(4), width=4, height=4)


def test_camera_gradients():
    cams = _random_cams(dist=True)
    for x in (cams.K, cams.R, cams.t):
        x.requires_grad_(True)
    xy, z = cams.project(torch.randn(4, 10, 3, dtype=torch.float64) * 0.3)
    (xy.sum() + z.sum()).backward()
    for x in (cams.K, cams.R, cams.t):
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert math.isfinite(float(cams.centers.detach().sum()))


def test_mixed_dtypes_promote():
    cams = orbit(2, width=16, height=16)  # float32
    p = torch.randn(2, 5, 3, dtype=torch.float64) * 0.2
    xy, z = cams.project(p)
    assert xy.dtype == torch.float64
    assert torch.allclose(cams.unproject(xy, z), p, atol=1e-5)
    assert cams.to_clip(p).dtype == torch.float64
