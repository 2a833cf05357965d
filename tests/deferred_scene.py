"""A tiny posed dataset for the deferred-rendering tests: a textured, Lambert-lit UV sphere on a green
background, rendered by the graphics core (rasterize -> interpolate uv -> texture -> shade) and written with
io.posed.save_posed_dataset + io.meshes.save_mesh. No external files; ~1 s to build at 64 x 64."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.meshes import uv_sphere
from neuralrender.graphics.raster import rasterize
from neuralrender.graphics.texture import texture
from neuralrender.io.meshes import save_mesh
from neuralrender.io.posed import save_posed_dataset

BACKGROUND = (0.0, 0.8, 0.0)  # a colour no texel has, so a render's foreground is easy to find


def checker_texture(size: int = 64) -> torch.Tensor:
    """[3,size,size]: coloured checkerboard with a smooth gradient, high-frequency enough to need a texture."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    check = ((x * 8).floor() + (y * 4).floor()) % 2
    return torch.stack([0.2 + 0.7 * check, 0.3 + 0.5 * x, 0.8 - 0.6 * y * check], 0).clamp(0, 1)


def sphere_cameras(n: int, size: int, radius: float = 3.0, seed: int = 0) -> Cameras:
    g = torch.Generator().manual_seed(seed)
    az = torch.rand(n, generator=g) * 2 * math.pi
    el = (torch.rand(n, generator=g) - 0.3) * 1.2
    eye = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1) * radius
    R, t = look_at(eye, torch.zeros(n, 3))
    K = intrinsics_from_fov(40.0, size, size).expand(n, 3, 3)
    return Cameras(K=K, R=R, t=t, width=size, height=size)


def render_sphere(cams: Cameras, mesh, tex: torch.Tensor) -> torch.Tensor:
    frags = rasterize(cams, mesh.verts, mesh.faces)
    uv = interpolate(mesh.uvs, frags, mesh.uv_faces())
    n = torch.nn.functional.normalize(interpolate(mesh.vertex_normals(), frags, mesh.faces), dim=-1)
    light = torch.nn.functional.normalize(torch.tensor([0.5, 0.8, 0.6]), dim=0)
    shade = 0.35 + 0.65 * (n @ light).clamp_min(0)  # [B,H,W]
    rgb = texture(tex, uv) * shade.unsqueeze(1)
    m = frags.mask.unsqueeze(1).float()
    bg = torch.tensor(BACKGROUND).view(1, 3, 1, 1)
    return (rgb * m + bg * (1 - m)).clamp(0, 1)


def build_sphere_dataset(root: Path, n_train: int = 24, n_test: int = 6, size: int = 64) -> Path:
    """Write the dataset (train + test splits, mesh.obj) under root and return root."""
    root = Path(root)
    mesh = uv_sphere(12, 24)
    save_mesh(mesh, root / "mesh.obj")
    cams = sphere_cameras(n_train + n_test, size)
    images = render_sphere(cams, mesh, checker_texture())
    splits = ["train"] * n_train + ["test"] * n_test
    save_posed_dataset(root, cams, images, splits=splits, mesh_path="mesh.obj")
    return root
