import pytest
import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at, orbit
from neuralrender.graphics.meshes import icosphere
from neuralrender.graphics.raster import rasterize
from neuralrender.graphics.voxels import (
    frustum_points,
    lift_features,
    sample_along_rays,
    voxel_centers,
    world_to_grid,
    world_to_voxel_index,
)

LO, HI = torch.tensor([-1.0, -0.5, -1.0]), torch.tensor([1.0, 1.5, 0.5])


def test_voxel_centers_layout():
    c = voxel_centers(LO, HI, (4, 5, 6))  # nx, ny, nz -> [D=6, H=5, W=4, 3]
    assert c.shape == (6, 5, 4, 3)
    assert torch.allclose(c[0, 0, 0], LO + (HI - LO) / torch.tensor([8.0, 10.0, 12.0]))
    assert torch.allclose(c[2, 1, 3], LO + (HI - LO) * torch.tensor([3.5 / 4, 1.5 / 5, 2.5 / 6]))
    g = world_to_grid(c, LO, HI)
    assert torch.allclose(g[..., 0][0, 0], (torch.arange(4) * 2 + 1) / 4 - 1)
    idx, inside = world_to_voxel_index(c, LO, HI, (4, 5, 6))
    assert inside.all() and torch.equal(idx[2, 1, 3], torch.tensor([3, 1, 2]))
    with pytest.raises(NeuralRenderError, match="bounds_max"):
        voxel_centers(HI, LO, 4)


def test_trilinear_grid_sampling_matches_positions():
    """A grid holding each voxel's own centre is linear, so sampling it anywhere inside returns the position."""
    res = (8, 8, 8)
    grid = voxel_centers(LO, HI, res).permute(3, 0, 1, 2)[None]  # [1,3,D,H,W]
    cams = orbit(1, radius=4.0, elevation_deg=15.0, width=20, height=16, target=(0.0, 0.5, -0.25))
    vol, depths = sample_along_rays(grid, LO, HI, cams, n_depth=9, near=3.0, far=5.0)
    assert vol.shape == (1, 3, 9, 16, 20) and depths.shape == (9,)
    pts, _ = frustum_points(cams, 9, 3.0, 5.0)
    gpos = world_to_grid(pts, LO, HI)
    half_voxel = 1.0 / 8
    interior = (gpos.abs() < 1 - half_voxel - 1e-4).all(-1)[0]  # [n,H,W]
    assert interior.sum() > 100
    got = vol[0].permute(1, 2, 3, 0)[interior]
    assert torch.allclose(got, pts[0][interior], atol=1e-5)
    outside = (gpos.abs() > 1 + half_voxel + 1e-4).any(-1)[0]  # zero padding fades over half a voxel
    assert (vol[0].permute(1, 2, 3, 0)[outside] == 0).all()
    # frustum points sit at the requested camera depth
    _, z = cams.project(pts.reshape(1, -1, 3))
    assert torch.allclose(z.reshape(9, -1), depths[:, None].expand(9, 320), atol=1e-4)


def test_lift_of_pixel_ramps_returns_projected_coordinates():
    cams = orbit(2, radius=4.0, elevation_deg=25.0, width=32, height=24)
    H, W = 24, 32
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    feats = torch.stack([xs, ys]).expand(2, 2, H, W)
    centers = voxel_centers(LO, HI, 6)
    vol, valid = lift_features(feats, cams, centers)
    assert vol.shape == (2, 2, 6, 6, 6) and valid.shape == (2, 1, 6, 6, 6)
    xy, z = cams.project(centers.reshape(1, -1, 3).expand(2, -1, -1))
    xy = xy.reshape(2, 6, 6, 6, 2).permute(0, 4, 1, 2, 3)
    inner = ((xy[:, 0] > 0.5) & (xy[:, 0] < W - 0.5) & (xy[:, 1] > 0.5) & (xy[:, 1] < H - 0.5)).unsqueeze(1)
    assert inner.sum() > 100
    assert torch.allclose(vol.expand_as(xy)[inner.expand_as(xy)], xy[inner.expand_as(xy)], atol=1e-4)
    assert (valid[inner] == 1).all()


def test_lift_half_resolution_features_and_behind_camera():
    cams = orbit(1, radius=4.0, width=32, height=32)
    ys, xs = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(16) + 0.5, indexing="ij")
    feats = torch.stack([xs * 2, ys * 2])[None]  # half-res features holding full-res pixel coordinates
    pts = torch.tensor([[[0.1, 0.2, -0.3], [0.0, 0.0, 10.0]]])  # second point is behind the camera
    vol, valid = lift_features(feats, cams, pts.view(1, 1, 1, 2, 3))
    xy, _ = cams.project(pts)
    assert torch.allclose(vol[0, :, 0, 0, 0], xy[0, 0], atol=1e-4)
    assert valid[0, 0, 0, 0].tolist() == [1.0, 0.0] and (vol[0, :, 0, 0, 1] == 0).all()


def test_lifted_rendered_depth_lands_in_the_surface_voxels():
    """Render a sphere's depth and lift it into a grid: every voxel whose pixel ray hits the sphere
    (away from the silhouette) receives the analytic ray-sphere depth, whether it lies on the visible
    surface or behind it; and the unprojected centre pixel lands in a voxel on the surface."""
    sphere = icosphere(3)
    eye = torch.tensor([0.0, 0.0, 3.0])
    R, t = look_at(eye[None], torch.zeros(1, 3))
    cam = Cameras(K=intrinsics_from_fov(45.0, 96, 96), R=R, t=t, width=96, height=96)
    depth = rasterize(cam, sphere.verts, sphere.faces).depth  # [1,H,W]
    lo, hi, n = [-1.2] * 3, [1.2] * 3, 24
    centers = voxel_centers(lo, hi, n)
    vol, valid = lift_features(depth[:, None], cam, centers)
    d = torch.nn.functional.normalize(centers - eye, dim=-1)
    b = (eye * d).sum(-1)
    miss2 = (eye * eye).sum() - b * b  # squared distance of the ray from the sphere centre
    hit = miss2 < 0.85**2
    t_hit = -b - torch.sqrt((1 - miss2).clamp_min(0))
    z_hit = t_hit * (-d[..., 2])  # camera z of the hit point (camera looks along -z)
    assert hit.sum() > 1000 and (valid[0, 0][hit] == 1).all()
    assert ((vol[0, 0][hit] - z_hit[hit]).abs() < 0.01).all()
    assert (vol[0, 0][~hit & (miss2 > 1.1**2)] == 0).all()  # rays that miss read the background
    p = cam.unproject(torch.tensor([[[48.0, 48.0]]]), depth[:, 48, 48][:, None])
    assert p.norm() == pytest.approx(1.0, abs=0.005)
    idx, inside = world_to_voxel_index(p, lo, hi, n)
    ix, iy, iz = idx[0, 0].tolist()
    assert inside.all() and (centers[iz, iy, ix] - p[0, 0]).norm() <= 0.5 * 3**0.5 * 2.4 / n
