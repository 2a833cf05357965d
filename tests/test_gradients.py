"""Gradients: gradcheck (double) for barycentrics, interpolate, texture, antialias; optimisation recovers a
camera pose from silhouettes + colours and a texture from rendered images."""

import numpy as np
import pytest
import torch

from neuralrender.graphics.antialias import antialias
from neuralrender.graphics.cameras import Cameras, look_at, orbit
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.raster import barycentrics_from_clip, rasterize, rasterize_clip
from neuralrender.graphics.texture import texture


def _tetra():
    v = torch.tensor([[0.0, 0.8, 0.0], [-0.7, -0.4, 0.5], [0.7, -0.4, 0.5], [0.0, -0.3, -0.8]], dtype=torch.float64)
    f = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])
    return v, f


def _cam(W=12, H=10, dtype=torch.float64):
    return orbit(1, radius=3.0, elevation_deg=15.0, fov_deg=40.0, width=W, height=H, start_azimuth_deg=20.0)


def test_gradcheck_barycentrics_wrt_vertices_and_camera():
    v, f = _tetra()
    cam = _cam()
    cam = Cameras(K=cam.K.double(), R=cam.R.double(), t=cam.t.double(), width=12, height=10)
    fid = rasterize(cam, v, f).face_id
    assert (fid >= 0).sum() > 20

    def from_verts(verts):
        return barycentrics_from_clip(cam.to_clip(verts, 0.1, 10.0), f, fid)

    assert torch.autograd.gradcheck(from_verts, (v.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)

    def from_t(t):
        c = Cameras(K=cam.K, R=cam.R, t=t, width=12, height=10)
        return barycentrics_from_clip(c.to_clip(v, 0.1, 10.0), f, fid)

    assert torch.autograd.gradcheck(from_t, (cam.t.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


def test_gradcheck_interpolate():
    v, f = _tetra()
    cam = _cam()
    clip = cam.to_clip(v.float()).double()
    fid = rasterize_clip(clip, f, (10, 12)).face_id
    attr = torch.rand(4, 3, dtype=torch.float64)

    def fn(attr, clip):
        bary, depth = barycentrics_from_clip(clip, f, fid)
        from neuralrender.graphics.raster import Fragments
        return interpolate(attr, Fragments(fid, bary, depth, clip, f))

    assert torch.autograd.gradcheck(fn, (attr.requires_grad_(True), clip.clone().requires_grad_(True)),
                                    eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("wrap", ["clamp", "repeat"])
def test_gradcheck_texture_bilinear(wrap):
    tex = torch.rand(1, 5, 6, 7, dtype=torch.float64)
    uv = (torch.rand(1, 4, 3, 2, dtype=torch.float64) * 1.2 - 0.1)

    def fn(tex, uv):
        return texture(tex, uv, filter="bilinear", wrap=wrap)

    assert torch.autograd.gradcheck(fn, (tex.requires_grad_(True), uv.requires_grad_(True)), eps=1e-6, atol=1e-5)


def test_gradcheck_antialias():
    v, f = _tetra()
    cam = _cam(16, 14)
    clip = cam.to_clip(v.float()).double()
    fr = rasterize_clip(clip, f, (14, 16))
    img = torch.rand(1, 2, 14, 16, dtype=torch.float64)

    def fn(img, clip):
        return antialias(img, fr, clip, f)

    clip_g = clip.clone().requires_grad_(True)
    out = fn(img, clip_g)
    assert not torch.allclose(out, img)  # silhouettes were blended
    assert torch.autograd.gradcheck(fn, (img.requires_grad_(True), clip_g), eps=1e-7, atol=1e-5)


def _axis_angle(w):
    th = w.norm().clamp_min(1e-12)
    k = w / th
    Kx = torch.zeros(3, 3, dtype=w.dtype)
    Kx[0, 1], Kx[0, 2], Kx[1, 0], Kx[1, 2], Kx[2, 0], Kx[2, 1] = -k[2], k[1], k[2], -k[0], -k[1], k[0]
    return torch.eye(3, dtype=w.dtype) + torch.sin(th) * Kx + (1 - torch.cos(th)) * (Kx @ Kx)


def _spot(shared_data):
    trimesh = pytest.importorskip("trimesh")
    m = trimesh.load(shared_data / "meshes" / "spot" / "spot_triangulated.obj", force="mesh")
    v = torch.tensor(np.asarray(m.vertices), dtype=torch.float32)
    v = v - 0.5 * (v.min(0).values + v.max(0).values)
    v = v / v.norm(dim=1).max()
    return m, v, torch.tensor(np.asarray(m.faces))


def test_recover_camera_pose(shared_data):
    _, v, f = _spot(shared_data)
    colors = (v - v.min(0).values) / (v.max(0).values - v.min(0).values)
    cam0 = orbit(1, radius=3.0, elevation_deg=20.0, fov_deg=40.0, width=64, height=64, start_azimuth_deg=40.0)

    def render(R, t):
        cam = Cameras(K=cam0.K, R=R, t=t, width=64, height=64)
        fr = rasterize(cam, v, f)
        rgb = interpolate(colors, fr).permute(0, 3, 1, 2)
        img = torch.cat([rgb, fr.mask[:, None].float()], 1)
        return antialias(img, fr)

    target = render(cam0.R, cam0.t).detach()
    w_true = torch.tensor([0.06, -0.08, 0.05])
    dt_true = torch.tensor([0.12, -0.1, 0.25])
    w = torch.zeros(3, requires_grad=True)
    dt = torch.zeros(3, requires_grad=True)
    R_start = _axis_angle(w_true) @ cam0.R[0]
    t_start = cam0.t[0] + dt_true

    def err():
        with torch.no_grad():
            R = _axis_angle(w + 1e-12) @ R_start
            t = t_start + dt
            return float((R - cam0.R[0]).norm() + (t - cam0.t[0]).norm())

    e0 = err()
    opt = torch.optim.Adam([w, dt], lr=0.01)
    for it in range(150):
        opt.zero_grad()
        R = _axis_angle(w + 1e-12) @ R_start
        loss = ((render(R[None], (t_start + dt)[None]) - target) ** 2).mean()
        loss.backward()
        opt.step()
        if it == 100:
            for g in opt.param_groups:
                g["lr"] = 0.003
    e1 = err()
    assert e1 < e0 / 10, f"pose error {e0:.4f} -> {e1:.4f}"


def test_recover_texture(shared_data):
    from PIL import Image

    m, v, f = _spot(shared_data)
    uv = torch.tensor(np.asarray(m.visual.uv), dtype=torch.float32)
    img = Image.open(shared_data / "meshes" / "spot" / "spot_texture.png").convert("RGB").resize((48, 48))
    tex_true = torch.from_numpy(np.array(img)).float().permute(2, 0, 1) / 255.0
    cams = orbit(6, radius=2.6, elevation_deg=15.0, fov_deg=45.0, width=80, height=80)
    cams_top = orbit(2, radius=2.6, elevation_deg=70.0, fov_deg=45.0, width=80, height=80)
    cams = Cameras(K=torch.cat([cams.K, cams_top.K]), R=torch.cat([cams.R, cams_top.R]),
                   t=torch.cat([cams.t, cams_top.t]), width=80, height=80)
    fr = rasterize(cams, v, f)
    uvi = interpolate(uv, fr)
    target = texture(tex_true, uvi, mask=fr.mask)
    tex = torch.full((3, 48, 48), 0.5, requires_grad=True)
    opt = torch.optim.Adam([tex], lr=0.05)
    with torch.no_grad():
        seen = torch.zeros(48, 48)
    for _ in range(200):
        opt.zero_grad()
        loss = ((texture(tex, uvi, mask=fr.mask) - target) ** 2).mean()
        loss.backward()
        seen += tex.grad.abs().sum(0)
        opt.step()
    observed = seen > 0
    with torch.no_grad():
        img_err0 = ((texture(torch.full_like(tex, 0.5), uvi, mask=fr.mask) - target) ** 2).mean()
        img_err1 = ((texture(tex, uvi, mask=fr.mask) - target) ** 2).mean()
    tex_err0 = ((0.5 - tex_true)[:, observed] ** 2).mean()
    tex_err1 = ((tex.detach() - tex_true)[:, observed] ** 2).mean()
    assert observed.float().mean() > 0.3
    assert img_err1 < img_err0 / 10, f"image error {img_err0:.5f} -> {img_err1:.5f}"
    assert tex_err1 < tex_err0 / 10, f"texel error {tex_err0:.5f} -> {tex_err1:.5f}"


def test_forward_backward_cost_is_bounded():
    """Backward through barycentrics/interpolate must not be pathologically slower than forward."""
    import time

    v, f = _tetra()
    cam = look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(1, 3))
    cams = Cameras(K=orbit(1, width=128, height=128).K, R=cam[0], t=cam[1], width=128, height=128)
    vv = v.float().requires_grad_(True)
    attr = torch.rand(4, 8)
    t0 = time.perf_counter()
    for _ in range(3):
        out = interpolate(attr, rasterize(cams, vv, f))
    t_fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(3):
        interpolate(attr, rasterize(cams, vv, f)).sum().backward()
    t_fb = time.perf_counter() - t0
    assert out.shape == (1, 128, 128, 8)
    assert vv.grad is not None and torch.isfinite(vv.grad).all()
    assert t_fb < 8 * t_fwd + 0.05


def test_silhouette_gradients_come_from_antialias(shared_data):
    _, v, f = _spot(shared_data)
    cam0 = orbit(1, radius=3.0, elevation_deg=20.0, fov_deg=40.0, width=64, height=64, start_azimuth_deg=-30.0)

    def silhouette(t, aa=True):
        cam = Cameras(K=cam0.K, R=cam0.R, t=t, width=64, height=64)
        fr = rasterize(cam, v, f)
        sil = fr.mask[:, None].float()
        return antialias(sil, fr) if aa else sil + 0 * t.sum()

    target = silhouette(cam0.t).detach()
    dt = torch.zeros(1, 3, requires_grad=True)
    start = cam0.t + torch.tensor([[0.15, -0.12, 0.3]])
    ((silhouette(start + dt, aa=False) - target) ** 2).sum().backward()
    assert dt.grad.abs().sum() == 0  # a hard mask has no gradient
    dt.grad = None
    ((silhouette(start + dt) - target) ** 2).sum().backward()
    assert dt.grad.abs().sum() > 0
    # the analytic gradient points downhill: compare with a finite difference of the antialiased loss
    g = dt.grad.clone()
    step = -1e-3 * g / g.norm()
    with torch.no_grad():
        l0 = ((silhouette(start) - target) ** 2).sum()
        l1 = ((silhouette(start + step) - target) ** 2).sum()
    assert l1 < l0
    opt = torch.optim.Adam([dt], lr=0.01)
    e0 = float((start - cam0.t).norm())
    for it in range(120):
        opt.zero_grad()
        ((silhouette(start + dt) - target) ** 2).mean().backward()
        opt.step()
        if it == 80:
            opt.param_groups[0]["lr"] = 0.003
    e1 = float((start + dt.detach() - cam0.t).norm())
    assert e1 < e0 / 10, f"translation error {e0:.4f} -> {e1:.4f}"


def test_cpp_backward_matches_torch_backward(shared_data):
    from neuralrender.graphics.raster import _bary_backward_torch
    from neuralrender.graphics.raster_cpu import get_extension

    ext = get_extension()
    if ext is None:
        pytest.skip("C++ kernel not built here")
    _, v, f = _spot(shared_data)
    cams = orbit(2, radius=2.5, elevation_deg=10.0, width=48, height=40)
    fr = rasterize(cams, v, f)
    gb, gd = torch.randn_like(fr.bary), torch.randn_like(fr.depth)
    clip = cams.to_clip(v)
    a = ext.bary_backward_cpu(clip, f, fr.face_id, fr.bary, fr.depth, gb, gd)
    b = _bary_backward_torch(clip.double(), f, fr.face_id, fr.bary.double(), fr.depth.double(), gb.double(), gd.double())
    assert a.abs().sum() > 0
    assert torch.allclose(a.double(), b, rtol=1e-3, atol=1e-3 * float(b.abs().max()))
