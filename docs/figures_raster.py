"""Render the figures of docs/conventions.md into docs/figures/ (small PNGs).

    python docs/figures_raster.py

- conventions_pixels.png: a triangle given in clip space rasterized at 12x8, drawn 32x enlarged with the
  pixel grid, pixel centres (dots; filled = covered) and the exact triangle edges: a pixel is covered iff
  its centre (j + 0.5, i + 0.5) lies inside; row 0 is at the top (y_ndc = -1).
- conventions_uv_camera.png: left, a texture image with its (u, v) axes (v = 0 is the BOTTOM row);
  right, a quad rendered with that texture by an OpenCV camera (x right, y down, z forward) with the
  projected world axes drawn on top (world x red, y green, z blue; world y is up, so it points up).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.raster import rasterize, rasterize_clip
from neuralrender.graphics.texture import texture

OUT = Path(__file__).resolve().parent / "figures"


def pixels_figure(path: Path, H: int = 8, W: int = 12, s: int = 32):
    tri = torch.tensor([[-0.85, -0.8, 0.0, 1.0], [0.9, -0.35, 0.0, 1.0], [-0.3, 0.85, 0.0, 1.0]])
    fr = rasterize_clip(tri, torch.tensor([[0, 1, 2]]), (H, W))
    img = Image.new("RGB", (W * s, H * s), (255, 255, 255))
    d = ImageDraw.Draw(img)
    cov = fr.mask[0]
    for i in range(H):
        for j in range(W):
            if cov[i, j]:
                d.rectangle([j * s, i * s, (j + 1) * s, (i + 1) * s], fill=(170, 200, 255))
    for i in range(H + 1):
        d.line([(0, i * s), (W * s, i * s)], fill=(150, 150, 150))
    for j in range(W + 1):
        d.line([(j * s, 0), (j * s, H * s)], fill=(150, 150, 150))
    pts = [((float(x) + 1) / 2 * W * s, (float(y) + 1) / 2 * H * s) for x, y in tri[:, :2].tolist()]
    d.polygon(pts, outline=(200, 0, 0))
    for i in range(H):
        for j in range(W):
            cx, cy = (j + 0.5) * s, (i + 0.5) * s
            r = 3
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(0, 0, 0) if cov[i, j] else None, outline=(0, 0, 0))
    d.text((4, 2), "row 0, y_ndc=-1", fill=(0, 0, 0))
    img.save(path)


def uv_camera_figure(path: Path, S: int = 192):
    # texture: red grows with u (left -> right), green grows with v (bottom -> top), a white corner at (0, 0)
    T = 64
    u = (torch.arange(T) + 0.5) / T
    v = 1 - (torch.arange(T) + 0.5) / T  # row 0 is the top: v = 1
    tex = torch.stack([u[None].expand(T, T), v[:, None].expand(T, T), torch.full((T, T), 0.25)])
    tex[:, -12:, :12] = 1.0  # bottom-left block = around (u, v) = (0, 0)
    # a unit quad in the world x-y plane facing +z, uv = (x, y)
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = verts[:, :2].clone()
    R, t = look_at(torch.tensor([[0.9, 0.8, 2.4]]), torch.tensor([[0.45, 0.45, 0.0]]))
    cam = Cameras(K=intrinsics_from_fov(40.0, S, S), R=R, t=t, width=S, height=S)
    fr = rasterize(cam, verts, faces)
    img = texture(tex, interpolate(uvs, fr), mask=fr.mask)[0]
    img = img + (~fr.mask[0]).float()[None]  # white background
    left = Image.fromarray((tex.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((S, S), Image.NEAREST)
    dl = ImageDraw.Draw(left)
    dl.text((4, 4), "v=1 (row 0)", fill=(255, 255, 255))
    dl.text((4, S - 14), "(u,v)=(0,0)", fill=(0, 0, 0))
    dl.text((S - 40, S - 14), "u=1", fill=(0, 0, 0))
    right = Image.fromarray((img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8))
    dr = ImageDraw.Draw(right)
    axes = torch.tensor([[[0.0, 0, 0], [0.6, 0, 0], [0, 0.6, 0], [0, 0, 0.6]]])
    xy, _ = cam.project(axes)
    o = tuple(xy[0, 0].tolist())
    for k, col in zip(range(1, 4), [(255, 0, 0), (0, 160, 0), (0, 0, 255)]):
        dr.line([o, tuple(xy[0, k].tolist())], fill=col, width=3)
    dr.text((4, 4), "camera: x right, y down", fill=(0, 0, 0))
    out = Image.new("RGB", (2 * S + 8, S), (255, 255, 255))
    out.paste(left, (0, 0))
    out.paste(right, (S + 8, 0))
    out.save(path)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    pixels_figure(OUT / "conventions_pixels.png")
    uv_camera_figure(OUT / "conventions_uv_camera.png")
    print(f"wrote {OUT / 'conventions_pixels.png'} and {OUT / 'conventions_uv_camera.png'}")


if __name__ == "__main__":
    main()
