"""Voxel helpers for DeepVoxels-style methods: grid centres, lifting 2D features into a grid (inverse
projection) and sampling a grid along camera rays (the canonical view frustum volume).

Grid layout: a feature grid is [B,C,D,H,W] with D along world z, H along world y, W along world x,
which is what `torch.nn.functional.grid_sample` expects for 3D inputs (last grid axis = (x, y, z)).
An axis-aligned box [bounds_min, bounds_max] is split into res = (nx, ny, nz) cells; cell (d, h, w) has
its centre at bounds_min + ((w, h, d) + 0.5) * voxel_size, and normalized coordinates use the
align_corners=False convention (-1 / +1 are the box faces, not the outer centres), the 3D analogue of
graphics.warp.
"""

from __future__ import annotations

import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.warp import pixel_to_normalized, sample_grid

__all__ = [
    "voxel_centers",
    "world_to_grid",
    "world_to_voxel_index",
    "lift_features",
    "frustum_points",
    "ray_box_depths",
    "sample_along_rays",
]


def _res3(res) -> tuple[int, int, int]:
    r = (int(res),) * 3 if isinstance(res, int) else tuple(int(x) for x in res)
    if len(r) != 3 or min(r) <= 0:
        raise NeuralRenderError(f"voxel resolution must be an int or (nx, ny, nz) > 0, got {res!r}")
    return r


def _bounds(bmin, bmax, ref: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = torch.float32 if ref is None else ref.dtype
    device = None if ref is None else ref.device
    lo = torch.as_tensor(bmin, dtype=dtype, device=device)
    hi = torch.as_tensor(bmax, dtype=dtype, device=device)
    if lo.shape[-1] != 3 or hi.shape[-1] != 3:
        raise NeuralRenderError(f"bounds must be [3] (or [B,3]), got {tuple(lo.shape)} and {tuple(hi.shape)}")
    if bool((hi <= lo).any()):
        raise NeuralRenderError(f"bounds_max must exceed bounds_min on every axis, got {lo.tolist()} .. {hi.tolist()}")
    return lo, hi


def voxel_centers(bounds_min, bounds_max, res) -> torch.Tensor:
    """World positions of the cell centres: [D,H,W,3] (x, y, z) for res = (nx, ny, nz) = (W, H, D).

    bounds [3] (or [B,3] -> [B,D,H,W,3]).
    """
    lo, hi = _bounds(bounds_min, bounds_max)
    nx, ny, nz = _res3(res)
    dev = lo.device
    ix = (torch.arange(nx, device=dev, dtype=lo.dtype) + 0.5) / nx
    iy = (torch.arange(ny, device=dev, dtype=lo.dtype) + 0.5) / ny
    iz = (torch.arange(nz, device=dev, dtype=lo.dtype) + 0.5) / nz
    zz, yy, xx = torch.meshgrid(iz, iy, ix, indexing="ij")
    frac = torch.stack([xx, yy, zz], -1)  # [D,H,W,3]
    if lo.dim() == 2:
        return lo[:, None, None, None] + frac[None] * (hi - lo)[:, None, None, None]
    return lo + frac * (hi - lo)


def world_to_grid(points: torch.Tensor, bounds_min, bounds_max) -> torch.Tensor:
    """World points [...,3] -> grid_sample coordinates [...,3] in [-1,1] inside the box (align_corners=False).

    bounds [3] or [B,3] (then points must be [B,...,3])."""
    lo, hi = _bounds(bounds_min, bounds_max, points)
    if lo.dim() == 2:
        shape = (lo.shape[0],) + (1,) * (points.dim() - 2) + (3,)
        lo, hi = lo.view(shape), hi.view(shape)
    return 2.0 * (points - lo) / (hi - lo) - 1.0


def world_to_voxel_index(points: torch.Tensor, bounds_min, bounds_max, res) -> tuple[torch.Tensor, torch.Tensor]:
    """World points [...,3] -> (integer cell indices [...,3] as (w, h, d) = (ix, iy, iz), inside [...] bool)."""
    r = torch.tensor(_res3(res), device=points.device, dtype=points.dtype)
    g = (world_to_grid(points, bounds_min, bounds_max) + 1.0) * 0.5 * r
    idx = torch.floor(g).long()
    inside = ((idx >= 0) & (idx < r.long())).all(-1)
    return idx, inside


def lift_features(features: torch.Tensor, cameras, grid_centers: torch.Tensor, near: float = 1e-6,
                  padding: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse projection: give every voxel the feature of the pixel its centre projects to.

    features [B,C,h,w] (any resolution covering the cameras' image; the pixel-edge convention makes the
    normalized coordinates resolution-independent), cameras (B cameras of width x height),
    grid_centers [D,H,W,3] or [B,D,H,W,3] world positions (see `voxel_centers`)
    -> (volume [B,C,D,H,W] bilinearly sampled, valid [B,1,D,H,W] float: 1 where the centre is in front
    of the camera (z > near) and inside the image, 0 elsewhere, where the volume is 0 with
    padding='zeros'). Differentiable w.r.t. features (and camera parameters through the projection).
    """
    if features.dim() != 4:
        raise NeuralRenderError(f"lift_features: features must be [B,C,h,w], got {tuple(features.shape)}")
    B, C = features.shape[:2]
    if cameras.batch_size != B:
        raise NeuralRenderError(f"lift_features: {cameras.batch_size} cameras for {B} feature maps")
    if grid_centers.dim() == 4:
        grid_centers = grid_centers.unsqueeze(0).expand(B, -1, -1, -1, -1)
    if grid_centers.dim() != 5 or grid_centers.shape[-1] != 3:
        raise NeuralRenderError(f"lift_features: grid_centers must be [D,H,W,3] or [B,D,H,W,3], got "
                                f"{tuple(grid_centers.shape)}")
    D, Hg, Wg = grid_centers.shape[1:4]
    pts = grid_centers.reshape(B, -1, 3).to(device=features.device, dtype=features.dtype)
    xy, z = cameras.project(pts)  # [B,N,2] pixels of the cameras' image, [B,N]
    g = pixel_to_normalized(xy, cameras.height, cameras.width)
    front = z > near
    inside = front & (g.abs() <= 1).all(-1)
    g = torch.where(front.unsqueeze(-1), g, torch.full_like(g, -2.0))  # behind the camera: sample outside
    vol = sample_grid(features, g.unsqueeze(1), padding=padding)  # [B,C,1,N]
    vol = vol.reshape(B, C, D, Hg, Wg)
    if padding != "zeros":
        vol = vol * front.reshape(B, 1, D, Hg, Wg).to(vol.dtype)
    valid = inside.reshape(B, 1, D, Hg, Wg).to(features.dtype)
    return vol, valid


def _pixel_centres(cameras, height: int | None, width: int | None) -> tuple[torch.Tensor, int, int]:
    """Pixel centres [H*W,2] of an image of height x width (default the cameras' size) in the cameras' pixel
    units (a coarser image's pixel centres, scaled to the cameras' image), and (H, W)."""
    H = cameras.height if height is None else int(height)
    W = cameras.width if width is None else int(width)
    dev, dt = cameras.K.device, cameras.K.dtype
    ys = (torch.arange(H, device=dev, dtype=dt) + 0.5) * (cameras.height / H)
    xs = (torch.arange(W, device=dev, dtype=dt) + 0.5) * (cameras.width / W)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(H * W, 2), H, W


def frustum_points(cameras, n_depth: int, near: float, far: float, height: int | None = None,
                   width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World points of the canonical frustum volume: for every pixel centre (of an image of height x
    width, default the cameras' size) and every camera depth z_k = linspace(near, far, n_depth),
    the point on the pixel's ray at camera z = z_k.

    Returns (points [B,n_depth,H,W,3], depths [n_depth]).
    """
    if n_depth < 1 or not (0 < near < far):
        raise NeuralRenderError(f"frustum_points: need n_depth >= 1 and 0 < near < far, got {n_depth}, {near}, {far}")
    pix, H, W = _pixel_centres(cameras, height, width)
    dev, dt = cameras.K.device, cameras.K.dtype
    pix = pix.view(1, 1, H * W, 2)
    depths = torch.linspace(near, far, n_depth, device=dev, dtype=dt)
    B = cameras.batch_size
    xy = pix.expand(B, n_depth, -1, -1).reshape(B, -1, 2)
    z = depths.view(1, n_depth, 1).expand(B, -1, H * W).reshape(B, -1)
    pts = cameras.unproject(xy, z)
    return pts.reshape(B, n_depth, H, W, 3), depths


def ray_box_depths(cameras, bounds_min, bounds_max, n_depth: int, near: float, far: float,
                   height: int | None = None, width: int | None = None) -> torch.Tensor:
    """Per-ray sample depths inside the box: for every pixel centre (of an image of height x width, default
    the cameras' size) the camera-z interval [z_in, z_out] where its ray is inside [bounds_min, bounds_max]
    (clipped to [near, far]), sampled at n_depth bin centres z_in + (k + 0.5) / n_depth * (z_out - z_in).
    Rays that miss the box get [near, far]. -> depths [B,n_depth,H,W] (camera z, increasing along k).
    Unlike `frustum_points`' global near..far, every sample falls in the box, so a large box keeps its depth
    resolution on the rays that cross it."""
    return _ray_box(cameras, bounds_min, bounds_max, n_depth, near, far, height, width)[0]


def _ray_box(cameras, bounds_min, bounds_max, n_depth, near, far, height, width):
    """`ray_box_depths` -> (depths [B,n,H,W], camera centres [B,1,3], ray directions [B,H*W,3] scaled to
    camera z = 1): the world point of sample k is centre + direction * depth (camera_to_world is affine)."""
    if n_depth < 1 or not (0 < near < far):
        raise NeuralRenderError(f"ray_box_depths: need n_depth >= 1 and 0 < near < far, got {n_depth}, {near}, {far}")
    pix, H, W = _pixel_centres(cameras, height, width)
    dev, dt = cameras.K.device, cameras.K.dtype
    B = cameras.batch_size
    pix = pix.unsqueeze(0).expand(B, -1, -1)
    c = cameras.centers.to(dt).unsqueeze(1)  # [B,1,3]
    d = cameras.unproject(pix, torch.ones(B, H * W, device=dev, dtype=dt)) - c  # point at camera z = 1, minus c
    lo, hi = _bounds(bounds_min, bounds_max, d)
    dsafe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (lo - c) / dsafe, (hi - c) / dsafe
    z_in = torch.minimum(t0, t1).amax(-1).clamp_min(near)
    z_out = torch.maximum(t0, t1).amin(-1).clamp_max(far)
    miss = z_out <= z_in
    z_in = torch.where(miss, torch.full_like(z_in, near), z_in)
    z_out = torch.where(miss, torch.full_like(z_out, far), z_out)
    k = (torch.arange(n_depth, device=dev, dtype=dt) + 0.5) / n_depth
    z = z_in.unsqueeze(1) + k.view(1, -1, 1) * (z_out - z_in).unsqueeze(1)  # [B,n,HW]
    return z.reshape(B, n_depth, H, W), c, d


def sample_along_rays(grid: torch.Tensor, bounds_min, bounds_max, cameras, n_depth: int, near: float, far: float,
                      height: int | None = None, width: int | None = None,
                      mode: str = "bilinear", in_box: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample a world-aligned grid [B,C,D,H,W] (box [bounds_min, bounds_max]) into each camera's frustum:
    -> (frustum volume [B,C,n_depth,Hc,Wc], depths); sample k of pixel (i, j) is the (trilinear) grid value
    at the ray point with camera z = depths[k] (in_box=False: one linspace(near, far) for all rays, depths
    [n_depth]) or depths[b, k, i, j] (in_box=True: n_depth samples inside the box along every ray,
    `ray_box_depths`, depths [B,n_depth,Hc,Wc]). Points more than half a voxel outside the box read 0
    (zero padding, fading linearly over the outer half voxel).
    The output is what an occlusion network takes (softmax over the depth axis, DeepVoxels).
    """
    if grid.dim() != 5:
        raise NeuralRenderError(f"sample_along_rays: grid must be [B,C,D,H,W], got {tuple(grid.shape)}")
    B = grid.shape[0]
    if cameras.batch_size != B:
        raise NeuralRenderError(f"sample_along_rays: {cameras.batch_size} cameras for a grid batch of {B}")
    if in_box:
        depths, c, d = _ray_box(cameras, bounds_min, bounds_max, n_depth, near, far, height, width)
        Hc, Wc = depths.shape[-2:]
        pts = (c.unsqueeze(1) + d.unsqueeze(1) * depths.reshape(B, n_depth, -1, 1)).reshape(B, n_depth, Hc, Wc, 3)
    else:
        pts, depths = frustum_points(cameras, n_depth, near, far, height, width)
    g = world_to_grid(pts.to(grid.dtype), bounds_min, bounds_max)  # [B,n,H,W,3]
    out = torch.nn.functional.grid_sample(grid, g, mode=mode, padding_mode="zeros", align_corners=False)
    return out, depths
