"""DeepVoxels building blocks: lifting / projection geometry, occlusion net, ConvGRU, 3D U-Net, view pairs."""

import math

import pytest
import torch

from neuralrender.data.view_pairs import (
    camera_path,
    check_cameras_outside,
    downscale_for,
    near_far,
    nearest_views,
    scene_bounds,
)
from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.cameras import Cameras, look_at, orbit
from neuralrender.graphics.voxels import lift_features, ray_box_depths, sample_along_rays, voxel_centers
from neuralrender.nn.convgru import ConvGRU, ConvGRUCell
from neuralrender.nn.occlusion import OcclusionNet
from neuralrender.nn.unet3d import Conv3d, UNet3d


def tilted_cameras(n=3, W=40, H=30):
    """Cameras with off-centre principal points, different focal lengths and rotations (no symmetry)."""
    eye = torch.tensor([[2.5, 0.8, 2.0], [-2.2, 1.5, 2.4], [0.3, -1.7, -2.9]])[:n]
    R, t = look_at(eye, torch.tensor([[0.1, 0.0, -0.1]]).expand(n, 3))
    K = torch.tensor([[[32.0, 0, 19.0], [0, 35.0, 16.5], [0, 0, 1]],
                      [[45.0, 0, 21.0], [0, 44.0, 14.0], [0, 0, 1]],
                      [[38.0, 0, 20.5], [0, 38.0, 15.0], [0, 0, 1]]])[:n]
    return Cameras(K=K, R=R, t=t, width=W, height=H)


def pinhole(points, K, R, t):
    """Independent projection: world [N,3] -> pixel (x, y) [N,2] and camera z [N], x_pix = K (R X + t)."""
    pc = points @ R.T + t
    uvw = pc @ K.T
    return uvw[:, :2] / uvw[:, 2:], pc[:, 2]


def test_lift_features_lands_on_the_projected_pixel():
    cams = tilted_cameras()
    B, H, W = cams.batch_size, cams.height, cams.width
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    coords = torch.stack([xs, ys]).expand(B, 2, H, W).contiguous()  # each pixel holds its own centre (x, y)
    centers = voxel_centers([-0.6, -0.5, -0.7], [0.7, 0.6, 0.5], (9, 8, 7))
    vol, valid = lift_features(coords, cams, centers)
    assert vol.shape == (B, 2, 7, 8, 9) and valid.shape == (B, 1, 7, 8, 9)
    pts = centers.reshape(-1, 3)
    checked = 0
    for b in range(B):
        xy, z = pinhole(pts, cams.K[b], cams.R[b], cams.t[b])
        interior = (z > 0) & (xy[:, 0] > 0.5) & (xy[:, 0] < W - 0.5) & (xy[:, 1] > 0.5) & (xy[:, 1] < H - 0.5)
        got = vol[b].reshape(2, -1).T
        assert torch.allclose(got[interior], xy[interior], atol=2e-3)
        inside = (z > 0) & (xy >= 0).all(-1) & (xy[:, 0] <= W) & (xy[:, 1] <= H)
        assert torch.equal(valid[b].reshape(-1) > 0, inside)
        checked += int(interior.sum())
    assert checked > 300
    # a voxel behind the camera is invalid and reads 0
    cam = tilted_cameras(1)
    behind = cam.centers - 1.0 * cam.R[:, 2]  # one unit behind camera 0, on its axis
    v, ok = lift_features(coords[:1], cam, behind.view(1, 1, 1, 3))
    assert ok.sum() == 0 and v.abs().sum() == 0


def test_sample_along_rays_returns_a_known_function():
    cams = tilted_cameras()
    lo, hi = torch.tensor([-1.0, -0.9, -1.1]), torch.tensor([1.1, 1.0, 0.9])
    res = (12, 10, 11)
    c = voxel_centers(lo, hi, res)  # [D,H,W,3]
    a, b0 = torch.tensor([0.7, -1.3, 2.1]), 0.4

    def f(p):
        return p @ a + b0

    grid = f(c)[None, None].expand(cams.batch_size, 1, -1, -1, -1).contiguous()  # linear: trilinear is exact
    n, near, far = 9, 1.6, 4.4
    vol, depths = sample_along_rays(grid, lo, hi, cams, n, near, far)
    assert vol.shape == (cams.batch_size, 1, n, cams.height, cams.width)
    assert torch.allclose(depths, torch.linspace(near, far, n))
    H, W = cams.height, cams.width
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(H * W)], -1)
    vox = (hi - lo) / torch.tensor(res, dtype=torch.float32)
    checked = 0
    for bi in range(cams.batch_size):
        Kinv, R, t = torch.linalg.inv(cams.K[bi]), cams.R[bi], cams.t[bi]
        for k, z in enumerate(depths):
            pc = (pix @ Kinv.T) * z  # camera point at depth z on each pixel's ray
            pw = (pc - t) @ R  # R^T (pc - t)
            interior = ((pw > lo + vox / 2 + 1e-4) & (pw < hi - vox / 2 - 1e-4)).all(-1)
            outside = ((pw < lo - vox / 2) | (pw > hi + vox / 2)).any(-1)  # zero padding: 0 half a voxel out
            got = vol[bi, 0, k].reshape(-1)
            assert torch.allclose(got[interior], f(pw[interior]), atol=1e-3)
            assert bool((got[outside].abs() < 1e-6).all())
            checked += int(interior.sum())
    assert checked > 1000


def test_in_box_samples_lie_inside_the_box_and_return_the_function():
    """ray_box_depths: each ray's samples span exactly its segment inside the box (first / last sample half a
    bin from the entry / exit face), rays that miss get near..far; sample_along_rays(in_box=True) then reads
    the known linear function at those ray points; the occlusion net takes the per-ray depths."""
    cams = tilted_cameras()
    lo, hi = torch.tensor([-0.6, -0.5, -0.7]), torch.tensor([0.7, 0.5, 0.4])
    res, n, near, far = (12, 10, 11), 8, 0.5, 9.0
    z = ray_box_depths(cams, lo, hi, n, near, far, height=15, width=20)
    assert z.shape == (cams.batch_size, n, 15, 20) and bool((z[:, 1:] > z[:, :-1]).all())
    pix = torch.stack(torch.meshgrid(torch.arange(15) + 0.5, torch.arange(20) + 0.5, indexing="ij")[::-1], -1) * 2
    hits = 0
    for bi in range(cams.batch_size):
        Kinv, R, t = torch.linalg.inv(cams.K[bi]), cams.R[bi], cams.t[bi]
        d = (torch.cat([pix, torch.ones(15, 20, 1)], -1) @ Kinv.T) @ R  # world step per unit camera z
        c = -(R.T @ t)
        step = (z[bi, 1] - z[bi, 0])  # bin width
        z_in, z_out = z[bi, 0] - step / 2, z[bi, -1] + step / 2
        p_in, p_out = c + z_in[..., None] * d, c + z_out[..., None] * d
        miss = torch.isclose(z_in, torch.tensor(near)) & torch.isclose(z_out, torch.tensor(far))
        on_face = lambda p: (((p - lo).abs() < 1e-4) | ((p - hi).abs() < 1e-4)).any(-1)  # noqa: E731
        inside = lambda p: ((p > lo - 1e-4) & (p < hi + 1e-4)).all(-1)  # noqa: E731
        assert bool((on_face(p_in) & inside(p_in))[~miss].all()) and bool((on_face(p_out) & inside(p_out))[~miss].all())
        mid = c + ((z_in + z_out) / 2)[..., None] * d
        assert not bool(inside(mid)[miss].any())
        hits += int((~miss).sum())
    assert hits > 100
    c = voxel_centers(lo, hi, res)
    a, b0 = torch.tensor([0.7, -1.3, 2.1]), 0.4
    grid = (c @ a + b0)[None, None].expand(cams.batch_size, 1, -1, -1, -1).contiguous()
    vol, depths = sample_along_rays(grid, lo, hi, cams, n, near, far, height=15, width=20, in_box=True)
    assert torch.equal(depths, z) and vol.shape == (cams.batch_size, 1, n, 15, 20)
    pts = []
    for bi in range(cams.batch_size):
        xy = pix.reshape(1, 1, -1, 2).expand(1, n, -1, -1).reshape(1, -1, 2)
        pts.append(cams[bi:bi + 1].unproject(xy, z[bi:bi + 1].reshape(1, -1)).reshape(n, 15, 20, 3))
    pts = torch.stack(pts)
    vox = (hi - lo) / torch.tensor(res, dtype=torch.float32)
    interior = ((pts > lo + vox / 2 + 1e-4) & (pts < hi - vox / 2 - 1e-4)).all(-1)
    assert int(interior.sum()) > 500
    assert torch.allclose(vol[:, 0][interior], (pts @ a + b0)[interior], atol=1e-3)
    feats, depth, w = OcclusionNet(1)(vol, depths)
    assert depth.shape == (cams.batch_size, 1, 15, 20)
    assert bool((depth >= z[:, :1] - 1e-4).all() and (depth <= z[:, -1:] + 1e-4).all())


def test_occlusion_net_picks_the_visible_sample():
    B, C, D, H, W = 2, 3, 6, 5, 4
    net = OcclusionNet(C, layers=0)
    with torch.no_grad():  # head = 50 * channel 0 at the centre tap: logits follow channel 0
        net.head.weight.zero_()
        net.head.bias.zero_()
        net.head.weight[0, 0, 1, 1, 1] = 50.0
    depths = torch.linspace(1.0, 2.0, D)
    frustum = torch.rand(B, C, D, H, W) * 0.1
    k = torch.randint(D, (B, H, W))
    frustum[:, 0].scatter_(1, k[:, None], 1.0)  # channel 0 peaks at bin k of every ray
    feats, depth, w = net(frustum, depths)
    assert feats.shape == (B, C, H, W) and depth.shape == (B, 1, H, W) and w.shape == (B, 1, D, H, W)
    assert torch.allclose(w.sum(2), torch.ones(B, 1, H, W), atol=1e-5)
    assert torch.allclose(depth[:, 0], depths[k], atol=1e-3)
    want = torch.gather(frustum, 2, k[:, None, None].expand(B, C, 1, H, W))[:, :, 0]
    assert torch.allclose(feats, want, atol=1e-3)
    # an untrained net is a proper distribution too and gets gradients
    net2 = OcclusionNet(C)
    f = torch.rand(B, C, D, H, W, requires_grad=True)
    feats, depth, w = net2(f, depths)
    assert torch.allclose(w.sum(2), torch.ones_like(w.sum(2)), atol=1e-5)
    assert bool(((depth >= 1.0) & (depth <= 2.0)).all())
    (feats.sum() + depth.sum()).backward()
    assert f.grad.abs().sum() > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_convgru_shapes_and_closed_update_gate(dims):
    S = (5, 6) if dims == 2 else (4, 5, 6)
    cell = ConvGRUCell(3, 4, dims=dims)
    x = torch.rand(2, 3, *S)
    h = cell(x)
    assert h.shape == (2, 4, *S) and bool((h.abs() < 1).all())
    with torch.no_grad():  # update gate z = sigmoid(-100) ~ 0 -> h' = h
        cell.gates.weight.zero_()
        cell.gates.bias[:4] = -100.0
    h0 = torch.rand(2, 4, *S)
    assert torch.allclose(cell(x, h0), h0, atol=1e-6)
    seq = ConvGRU(3, 4, dims=dims)
    outs, last = seq(torch.rand(2, 5, 3, *S))
    assert outs.shape == (2, 5, 4, *S) and torch.equal(outs[:, -1], last)
    with pytest.raises(ValueError):
        ConvGRUCell(3, 4, dims=4)


def test_unet3d_odd_sizes_and_residual_identity():
    net = UNet3d(4, 4, width=8, depth=2, residual=True)
    x = torch.rand(1, 4, 7, 9, 10)
    assert net(x).shape == x.shape
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    assert torch.equal(net(x), x)
    y = UNet3d(2, 5, width=4, depth=1)(torch.rand(2, 2, 6, 6, 6))
    assert y.shape == (2, 5, 6, 6, 6)


@pytest.mark.parametrize("cin,cout,size,kernel,stride", [(16, 16, (20, 12, 10), 3, 1), (8, 4, (9, 7, 6), 3, 2),
                                                         (4, 4, (8, 8, 8), 5, 1), (3, 2, (2, 3, 3), 3, 2)])
def test_conv3d_split_path_equals_nn_conv3d(cin, cout, size, kernel, stride):
    """unet3d.Conv3d's batch-of-one CPU path (two D halves with a halo, as a batch of 2) gives nn.Conv3d's
    output and gradients (odd / even sizes, stride 2, larger kernels)."""
    torch.manual_seed(0)
    conv = Conv3d(cin, cout, kernel, stride, padding=kernel // 2)
    x = torch.randn(1, cin, *size, requires_grad=True)
    y, y_ref = conv(x), torch.nn.Conv3d.forward(conv, x)
    assert y.shape == y_ref.shape
    assert torch.allclose(y, y_ref, atol=1e-5)
    g = torch.randn_like(y)
    grads = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    grads_ref = torch.autograd.grad(y_ref, (x, conv.weight, conv.bias), g)
    for a, b in zip(grads, grads_ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_nearest_views_on_an_orbit():
    cams = orbit(12, radius=3.0, width=16, height=16)
    idx = nearest_views(cams, cams, 2, exclude_same=True)
    for i in range(12):
        assert set(idx[i].tolist()) == {(i - 1) % 12, (i + 1) % 12}
    with pytest.raises(NeuralRenderError, match="only 11"):
        nearest_views(cams, cams, 12, exclude_same=True)


def test_scene_bounds_near_far_and_cameras_inside():
    cams = orbit(8, radius=3.0, elevation_deg=25.0, target=(0.2, -0.1, 0.3), fov_deg=40.0, width=32, height=32)
    lo, hi = scene_bounds(cams)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    assert torch.allclose(centre, torch.tensor([0.2, -0.1, 0.3]), atol=1e-4)
    assert torch.allclose(half, torch.full((3,), 3.0 * math.tan(math.radians(20.0))), atol=1e-4)
    near, far = near_far(cams, lo, hi)
    assert 0 < near < 3.0 - float(half[0]) and far > 3.0 + float(half[0])
    check_cameras_outside(cams, lo, hi)
    with pytest.raises(NeuralRenderError, match="camera 0 at .* inside the grid bounds"):
        check_cameras_outside(cams, torch.tensor([-4.0] * 3), torch.tensor([4.0] * 3))


def test_camera_path_orbit_looks_at_the_centre():
    cams = orbit(8, radius=3.0, elevation_deg=20.0, width=24, height=24)
    path = camera_path(cams, "orbit", 10, torch.zeros(3))
    assert path.batch_size == 10 and (path.width, path.height) == (24, 24)
    assert torch.allclose(path.centers.norm(dim=-1), torch.full((10,), 3.0), atol=1e-4)
    xy, z = path.project(torch.zeros(1, 3))
    assert torch.allclose(xy[:, 0], torch.tensor([12.0, 12.0]).expand(10, 2), atol=1e-3)
    elev = torch.rad2deg(torch.asin(path.centers[:, 1] / 3.0))
    assert torch.allclose(elev, torch.full((10,), 20.0), atol=1e-2)


def test_downscale_for():
    assert downscale_for(128, 128, 128) == 1
    assert downscale_for(512, 512, 128) == 4
    assert downscale_for(480, 270, 128) == 3  # 160x90: the largest common divisor keeping >= 128
    assert downscale_for(100, 60, 400) == 1


def _sync_worker(rank: int, world: int, port: int, out) -> None:
    import torch.distributed as dist

    from neuralrender.methods.deepvoxels import sync_grid

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    grid = torch.full((1, 2, 3, 3, 3), float(rank + 1))
    sync_grid(grid)
    out[rank] = grid.mean().item()
    dist.destroy_process_group()


def test_sync_grid_averages_the_persistent_grid_over_processes():
    """torchrun: each process integrated different source views; after sync_grid all hold the mean grid."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_sync_worker, args=(2, port, out), nprocs=2, join=True)
    assert dict(out) == {0: 1.5, 1: 1.5}


def test_built_scene_carries_its_box_and_scene_bounds_use_it(tmp_path):
    """The scene builder writes the box of the scene's geometry into transforms.json ("bounds"); --bounds scene
    (deepvoxels' default) puts the grid in it, padded; a scene built before the builder wrote it gets the same
    box from its scene.yaml; a capture with neither falls back to the cameras' box; a malformed box is named."""
    import dataclasses
    import json

    from neuralrender.data import scenes
    from neuralrender.data.view_pairs import SCENE_BOX_PAD, dataset_box, load_view_pairs
    from neuralrender.errors import DataError

    spec = scenes.load_scene("default")
    spec = dataclasses.replace(spec, rigs=[dataclasses.replace(r, n=n) for r, n in zip(spec.rigs, (4, 2, 2, 1, 2))],
                               width=16, height=16)
    js = scenes.build_scene(spec, tmp_path / "s", progress=False)
    verts = scenes.scene_mesh(spec).mesh.verts
    box = torch.tensor(json.loads(js.read_text())["bounds"])
    assert torch.allclose(box, torch.cat([verts.min(0).values, verts.max(0).values]), atol=1e-5)
    _, _, info = load_view_pairs(str(tmp_path / "s"), 16, 1, "scene")
    pad = SCENE_BOX_PAD * float((box[3:] - box[:3]).max())
    assert info["bounds_source"] == "scene" and pad > 0
    assert torch.allclose(info["bounds_min"], box[:3] - pad) and torch.allclose(info["bounds_max"], box[3:] + pad)

    doc = json.loads(js.read_text())
    del doc["bounds"]  # built before the builder wrote its box: recomputed from scene.yaml
    js.write_text(json.dumps(doc))
    lo, hi = dataset_box(tmp_path / "s")
    assert torch.allclose(torch.cat([lo, hi]), box, atol=1e-5)
    (tmp_path / "s" / "scene.yaml").unlink()  # a capture: no box, the cameras' box
    assert dataset_box(tmp_path / "s") is None
    train, _, info = load_view_pairs(str(tmp_path / "s"), 16, 1, "scene")
    lo, hi = scene_bounds(train.cameras)
    assert info["bounds_source"] == "auto" and torch.equal(info["bounds_min"], lo) and torch.equal(info["bounds_max"], hi)
    js.write_text(json.dumps({**doc, "bounds": [0, 0, 0, 1, -1, 1]}))
    with pytest.raises(DataError, match=r"bounds must be six finite numbers .* got \[0, 0, 0, 1, -1, 1\]"):
        dataset_box(tmp_path / "s")
