"""Render the figures of docs/graphics.md into docs/figures/ (small PNGs, each at most 256*256 pixels).

    python docs/figures_graphics.py            # needs ../shared/data (meshes, Weizmann pose)

Every figure is made with the library's public functions only; rerun after changing the graphics layer.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neuralrender.graphics.antialias import antialias
from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at, orbit
from neuralrender.graphics.draw import (
    colorize_labels,
    draw_landmarks,
    draw_skeleton,
    edge_map_from_labels,
    gaussian_heatmaps,
)
from neuralrender.graphics.flow import flow_to_rgb
from neuralrender.graphics.gbuffer import render_gbuffer, shade
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.meshes import box, concat_meshes, cylinder, icosphere, normalize_mesh, plane, torus
from neuralrender.graphics.raster import rasterize
from neuralrender.graphics.shading import (
    SH_CONSTANTS,
    DirectionalLights,
    PointLights,
    shadow_lookup,
    shadow_map,
)
from neuralrender.graphics.texture import texture
from neuralrender.graphics.voxels import lift_features, sample_along_rays, voxel_centers
from neuralrender.graphics.warp import warp
from neuralrender.io.images import save_grid
from neuralrender.io.meshes import load_mesh
from neuralrender.paths import shared_path

OUT = Path(__file__).resolve().parent / "figures"
MAX_PIXELS = 256 * 256


def save(images: torch.Tensor, name: str, nrow: int | None = None) -> None:
    """Save [B,C,H,W] as one grid PNG, checking the size budget."""
    images = images.detach().float().clamp(0, 1)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    path = save_grid(images, OUT / name, nrow=nrow or images.shape[0], padding=2)
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    assert w * h <= MAX_PIXELS, f"{name}: {w}x{h} exceeds the figure budget"
    print(f"{path.relative_to(OUT.parent.parent)}  {w}x{h}  {path.stat().st_size // 1024} KiB")


def spot_mesh():
    return normalize_mesh(load_mesh(shared_path("meshes", "spot", "spot_triangulated.obj"),
                                    texture=shared_path("meshes", "spot", "spot_texture.png")))


def spot_camera(size: int, azimuth: float = 35.0) -> Cameras:
    return orbit(1, radius=2.8, elevation_deg=15.0, width=size, height=size, start_azimuth_deg=azimuth, fov_deg=40.0)


def fig_raster(spot):
    """rasterize -> face ids (random colours), barycentrics; interpolate -> uv; texture -> albedo."""
    cam = spot_camera(120)
    frags = rasterize(cam, spot.verts, spot.faces)
    g = torch.Generator().manual_seed(0)
    pal = torch.rand(spot.num_faces + 1, 3, generator=g)
    pal[-1] = 1.0
    fid = pal[frags.face_id].permute(0, 3, 1, 2)
    bary = frags.bary.permute(0, 3, 1, 2) + (~frags.mask).unsqueeze(1).float()
    uv = interpolate(spot.uvs, frags, spot.face_uvs)
    uv_img = torch.cat([uv, torch.zeros_like(uv[..., :1])], -1).permute(0, 3, 1, 2)
    uv_img = uv_img + (~frags.mask).unsqueeze(1).float()
    alb = texture(spot.textures[0], uv, mask=frags.mask) + (~frags.mask).unsqueeze(1).float()
    save(torch.cat([fid, bary, uv_img, alb]), "raster_interpolate_texture.png")


def fig_texture_filter():
    """Bilinear vs mipmap sampling of a checkerboard floor at a grazing angle."""
    floor = plane(40.0, axis="+y")
    floor.uvs = floor.uvs * 20.0
    n = 64
    check = ((torch.arange(n)[:, None] // 4 + torch.arange(n)[None] // 4) % 2).float()
    tex = check.expand(3, n, n)
    R, t = look_at(torch.tensor([[0.0, 1.0, 6.0]]), torch.tensor([[0.0, 0.3, -10.0]]))
    cam = Cameras(K=intrinsics_from_fov(50.0, 112, 112), R=R, t=t, width=112, height=112)
    frags = rasterize(cam, floor.verts, floor.faces)
    uv, uv_da = interpolate(floor.uvs, frags, floor.faces, return_derivatives=True)
    bg = (~frags.mask).unsqueeze(1).float() * torch.tensor([0.6, 0.75, 0.95]).view(1, 3, 1, 1)
    lin = texture(tex, uv, "bilinear", wrap="repeat", mask=frags.mask) + bg
    mip = texture(tex, uv, "mipmap", wrap="repeat", mask=frags.mask, uv_da=uv_da) + bg
    save(torch.cat([lin, mip]), "texture_bilinear_vs_mipmap.png")


def fig_antialias():
    """A coarse sphere at 32x32 (shown 3x): hard rasterization vs antialias, which blends silhouette pixels
    by the analytic edge coverage (and so passes gradients to the vertices)."""
    ball = icosphere(0)
    R, t = look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(1, 3))
    cam = Cameras(K=intrinsics_from_fov(50.0, 32, 32), R=R, t=t, width=32, height=32)
    frags = rasterize(cam, ball.verts, ball.faces)
    fg = torch.tensor([0.9, 0.4, 0.1]).view(1, 3, 1, 1)
    m = frags.mask.unsqueeze(1).float()
    img = m * fg + (1 - m)
    aa = antialias(img, frags)
    up = lambda x: F.interpolate(x, scale_factor=3, mode="nearest")
    save(torch.cat([up(img), up(aa)]), "antialias.png")


def fig_shading(spot):
    """spot: Lambert, Blinn-Phong (point + directional light), spherical harmonics."""
    cam = spot_camera(144)
    gb = render_gbuffer(cam, spot)
    sun = DirectionalLights(torch.tensor([0.6, 0.8, 0.5]), 0.9)
    lam = shade(gb, cam, sun, "lambert", ambient=0.15, background=1.0)
    lamp = PointLights(torch.tensor([[[2.0, 1.5, 2.0]]]), torch.tensor([1.0, 0.9, 0.8]) * 9.0, attenuation=(0, 0, 1))
    bp = shade(gb, cam, [lamp, DirectionalLights(torch.tensor([-1.0, 0.3, 0.2]), 0.25)], "blinn_phong",
               ambient=0.1, specular=0.6, shininess=40.0, background=1.0)
    coeffs = torch.zeros(1, 9, 3)
    coeffs[:, 0] = torch.tensor([0.7, 0.7, 0.75]) / SH_CONSTANTS[0]  # ambient
    coeffs[:, 1] = torch.tensor([0.45, 0.4, 0.3])  # from +y (above)
    coeffs[:, 3] = torch.tensor([0.2, 0.05, -0.1])  # warm from +x, cool from -x
    coeffs[:, 6] = torch.tensor([0.05, 0.05, 0.1])
    sh = shade(gb, cam, model="sh", sh_coeffs=coeffs, background=1.0)
    save(torch.cat([lam, bp, sh]), "shading_lambert_phong_sh.png")


def fig_gbuffer(spot):
    """G-buffer of a small scene (spot, a box, a torus on a floor): depth, normals, uv, labels (+edges)."""
    floor = plane(4.0, axis="+y")
    floor.verts = floor.verts + torch.tensor([0.0, -0.75, 0.0])
    b = box(0.5)
    b.verts = b.verts + torch.tensor([-1.0, -0.5, -0.6])
    tor = torus(0.35, 0.12)
    tor.verts = tor.verts + torch.tensor([1.1, -0.6, -0.4])
    scene = concat_meshes([spot, floor, b, tor])
    cam = orbit(1, radius=3.6, elevation_deg=25.0, width=124, height=124, start_azimuth_deg=20.0)
    gb = render_gbuffer(cam, scene)
    m = gb["mask"]
    d = gb["depth"]
    dn = torch.where(m > 0, 1 - (d - d[m > 0].min()) / (d[m > 0].max() - d[m > 0].min()) * 0.85, torch.zeros_like(d))
    normals = gb["normals"] * 0.5 + 0.5 * m
    uv = torch.cat([gb["uv"], torch.zeros_like(gb["uv"][:, :1])], 1) * m
    labels = colorize_labels(gb["labels"], num_classes=4)
    labels = labels * (1 - edge_map_from_labels(gb["labels"])) + edge_map_from_labels(gb["labels"])
    save(torch.cat([dn.expand(-1, 3, -1, -1), normals, uv, labels]), "gbuffer_depth_normals_uv_labels.png", nrow=2)


def fig_shadow():
    """A point-light shadow map: a cylinder and a box over a floor, lit from above-left."""
    floor = plane(5.0, segments=1, axis="+y")
    c = cylinder(0.35, 1.0, 32)
    c.verts = c.verts + torch.tensor([-0.5, 0.5, 0.0])
    b = box(0.6)
    b.verts = b.verts + torch.tensor([0.7, 0.3, 0.4])
    scene = concat_meshes([floor, c, b])
    light_pos = torch.tensor([[-2.0, 4.0, 1.5]])
    R, t = look_at(light_pos, torch.zeros(1, 3))
    light_cam = Cameras(K=intrinsics_from_fov(70.0, 256, 256), R=R, t=t, width=256, height=256)
    depth = shadow_map(light_cam, scene.verts, scene.faces)
    cam = orbit(1, radius=4.5, elevation_deg=35.0, width=160, height=160, start_azimuth_deg=15.0)
    gb = render_gbuffer(cam, scene)
    pos = gb["positions"].permute(0, 2, 3, 1)
    vis = shadow_lookup(depth, light_cam, pos, bias=2e-2, pcf=1).unsqueeze(1)  # [B,1,H,W]
    light = PointLights(light_pos[:, None], 1.0)
    lit = shade(gb, cam, light, ambient=0.2, shadow=vis, background=1.0)
    unshadowed = shade(gb, cam, light, ambient=0.2, background=1.0)
    save(torch.cat([unshadowed, lit]), "shadow_map.png")


def fig_voxels(spot):
    """Lift 8 rendered views of spot into a 48^3 grid (colour = mean over the views that see a voxel,
    occupancy = visual hull: inside every silhouette), then sample the grid along the rays of a new
    camera: three depth slices of the frustum volume and a front-to-back composite (the role DeepVoxels'
    occlusion network learns)."""
    src = orbit(8, radius=2.8, elevation_deg=15.0, width=96, height=96, start_azimuth_deg=10.0)
    gb = render_gbuffer(src, spot, channels=["mask", "albedo"])
    lo, hi = [-1.0] * 3, [1.0] * 3
    centers = voxel_centers(lo, hi, 48)
    rgb, valid = lift_features(gb["albedo"], src, centers)
    occ, _ = lift_features(gb["mask"], src, centers)
    hull = torch.where(valid > 0, occ, torch.ones_like(occ)).amin(0, keepdim=True)  # [1,1,D,H,W]
    colour = (rgb * occ).sum(0, keepdim=True) / (occ.sum(0, keepdim=True) + 1e-6)
    grid = torch.cat([colour * hull, hull], 1)
    tgt = spot_camera(96, azimuth=55.0)
    vol, depths = sample_along_rays(grid, lo, hi, tgt, n_depth=64, near=1.8, far=3.8)  # [1,4,64,H,W]
    col, alpha = vol[:, :3], vol[:, 3:4].clamp(0, 1)
    slices = [col[:, :, k] + (1 - alpha[:, :, k]) for k in (24, 32, 40)]
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha[:, :, :-1]], 2), 2)
    comp = (trans * col).sum(2) + (1 - (alpha * trans).sum(2))  # colours are premultiplied by occupancy
    save(torch.cat([*slices, comp]), "voxels_lift_and_frustum.png", nrow=4)


POSE33_EDGES = [(11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24), (23, 25),
                (25, 27), (24, 26), (26, 28), (27, 31), (28, 32), (0, 11), (0, 12)]


def fig_draw():
    """Drawing from real pose data (Weizmann 'jack', mediapipe pose33): skeleton, landmarks, heatmaps."""
    data = np.load(shared_path("videos", "fullbody_weizmann", "jack_00000004_mediapipe_pose33.npz"))
    pose = torch.from_numpy(data["pose33_xyzv_normalized"][20]).float()  # [33,4]
    S = 128
    joints = (pose[None, :, :2] * S)
    vis = (pose[None, :, 3] > 0.5).float()
    n_e = len(POSE33_EDGES)
    hue = torch.linspace(0, 1, n_e + 1)[:-1]
    colors = torch.stack([0.5 + 0.5 * torch.cos(2 * math.pi * (hue + k / 3)) for k in range(3)], -1)
    sk = draw_skeleton(joints, POSE33_EDGES, S, S, thickness=3.0, colors=colors, visibility=vis, joint_radius=2.0)
    lm = draw_landmarks(joints, S, S, radius=1.5, colors=[1.0, 1.0, 0.2], visibility=vis)
    heat = gaussian_heatmaps(joints, S, S, sigma=3.0, visibility=vis).amax(1, keepdim=True)
    heat = torch.cat([heat, heat ** 2, 0.3 * heat], 1)
    save(torch.cat([sk, lm, heat]), "draw_skeleton_landmarks_heatmaps.png")


def fig_warp(spot):
    """warp: a render of spot, a swirl flow field, and the backward-warped image."""
    cam = spot_camera(112)
    img = shade(render_gbuffer(cam, spot), cam, DirectionalLights(torch.tensor([0.5, 0.8, 0.6]), 0.9),
                ambient=0.2, background=1.0)
    H = W = 112
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    dx, dy = xs - W / 2, ys - H / 2
    r = torch.sqrt(dx**2 + dy**2)
    ang = 1.2 * torch.exp(-(r / 35.0) ** 2)
    sx = torch.cos(ang) * dx - torch.sin(ang) * dy - dx
    sy = torch.sin(ang) * dx + torch.cos(ang) * dy - dy
    flow = torch.stack([sx, sy])[None]
    out = warp(img, flow, padding="border")
    save(torch.cat([img, flow_to_rgb(flow), out]), "warp_swirl.png")


def main():
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    spot = spot_mesh()
    fig_raster(spot)
    fig_texture_filter()
    fig_antialias()
    fig_shading(spot)
    fig_gbuffer(spot)
    fig_shadow()
    fig_voxels(spot)
    fig_draw()
    fig_warp(spot)
    total = sum(p.stat().st_size for p in OUT.glob("*.png"))
    print(f"total {total / 1024:.0f} KiB in {OUT}")


if __name__ == "__main__":
    main()
