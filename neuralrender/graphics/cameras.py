"""Pinhole cameras in the OpenCV convention, batched and differentiable.

Conventions (docs/conventions.md):
- camera axes: x right, y down, z forward (OpenCV). Extrinsics are world-to-camera: x_cam = R x_world + t.
- intrinsics K [B,3,3] in pixels; pixel (i, j) (row i, column j) has its centre at x = j + 0.5, y = i + 0.5,
  so the image covers x in [0, W], y in [0, H].
- optional lens distortion dist [B,4] = (k1, k2, p1, p2), OpenCV model, applied to normalised coordinates.
- clip space (``to_clip``): x_ndc = 2 x_pix / W - 1, y_ndc = 2 y_pix / H - 1 (y_ndc = -1 is the TOP image row,
  row 0 of the tensor), w = camera z, z_ndc in [-1, 1] between near and far (OpenGL depth mapping).

Every function accepts batched tensors and keeps gradients w.r.t. R, t and K.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from neuralrender.errors import NeuralRenderError

_FLIP_YZ = (1.0, -1.0, -1.0)


def _batched(x: Tensor, ndim: int, name: str) -> Tensor:
    if not torch.is_tensor(x):
        x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() == ndim - 1:
        x = x.unsqueeze(0)
    if x.dim() != ndim:
        raise NeuralRenderError(f"Cameras.{name}: expected {ndim - 1} or {ndim} dims, got shape {tuple(x.shape)}")
    return x


@dataclass
class Cameras:
    """A batch of B pinhole cameras.

    K [B,3,3] intrinsics (pixels), R [B,3,3] and t [B,3] world-to-camera, width/height in pixels,
    dist [B,4] optional (k1, k2, p1, p2). Unbatched K/R/t/dist are promoted to a batch of one, and a single
    K or dist is broadcast to the batch size of R.
    """

    K: Tensor
    R: Tensor
    t: Tensor
    width: int
    height: int
    dist: Tensor | None = None

    def __post_init__(self):
        self.K = _batched(self.K, 3, "K")
        self.R = _batched(self.R, 3, "R")
        self.t = _batched(self.t, 2, "t")
        b = max(self.K.shape[0], self.R.shape[0], self.t.shape[0])
        self.K, self.R, self.t = (x.expand(b, *x.shape[1:]) if x.shape[0] == 1 else x for x in (self.K, self.R, self.t))
        if self.dist is not None:
            self.dist = _batched(self.dist, 2, "dist")
            if self.dist.shape[-1] != 4:
                raise NeuralRenderError(f"Cameras.dist: expected (k1, k2, p1, p2) [B,4], got {tuple(self.dist.shape)}")
            if self.dist.shape[0] == 1:
                self.dist = self.dist.expand(b, 4)
        shapes = {"K": (b, 3, 3), "R": (b, 3, 3), "t": (b, 3)}
        for name, shape in shapes.items():
            if tuple(getattr(self, name).shape) != shape:
                raise NeuralRenderError(f"Cameras.{name}: expected shape {shape}, got {tuple(getattr(self, name).shape)}")
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise NeuralRenderError(f"Cameras: image size must be positive, got {self.width}x{self.height}")

    # ------------------------------------------------------------------ basics
    @property
    def batch_size(self) -> int:
        return self.R.shape[0]

    @property
    def device(self) -> torch.device:
        return self.R.device

    def __len__(self) -> int:
        return self.batch_size

    def to(self, device) -> "Cameras":
        d = None if self.dist is None else self.dist.to(device)
        return replace(self, K=self.K.to(device), R=self.R.to(device), t=self.t.to(device), dist=d)

    def __getitem__(self, idx) -> "Cameras":
        """Select cameras; an int keeps the batch dimension (a batch of one)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        d = None if self.dist is None else self.dist[idx]
        return replace(self, K=self.K[idx], R=self.R[idx], t=self.t[idx], dist=d)

    @property
    def centers(self) -> Tensor:
        """Camera centres in world space [B,3] (= -R^T t)."""
        return -(self.R.transpose(1, 2) @ self.t.unsqueeze(-1)).squeeze(-1)

    def scaled(self, s: float) -> "Cameras":
        """Cameras for an image resized by factor s (pixel-edge convention: K rows 0,1 scale by s)."""
        S = torch.tensor([s, s, 1.0], dtype=self.K.dtype, device=self.K.device).view(1, 3, 1)
        return replace(self, K=self.K * S, width=int(round(self.width * s)), height=int(round(self.height * s)))

    # ------------------------------------------------------------ transforms
    def _points(self, p: Tensor) -> Tensor:
        if p.dim() == 2:
            p = p.unsqueeze(0)
        if p.dim() != 3 or p.shape[-1] != 3:
            raise NeuralRenderError(f"Cameras: points must be [N,3] or [B,N,3], got {tuple(p.shape)}")
        if p.shape[0] == 1 and self.batch_size > 1:
            p = p.expand(self.batch_size, -1, -1)
        return p

    def world_to_camera(self, p: Tensor) -> Tensor:
        """World points [B,N,3] (or [N,3]) -> camera coordinates [B,N,3] (in the promoted dtype of both)."""
        p = self._points(p)
        dt = torch.promote_types(p.dtype, self.R.dtype)
        return p.to(dt) @ self.R.to(dt).transpose(1, 2) + self.t.to(dt).unsqueeze(1)

    def camera_to_world(self, pc: Tensor) -> Tensor:
        """Camera coordinates [B,N,3] -> world points [B,N,3]."""
        dt = torch.promote_types(pc.dtype, self.R.dtype)
        return (pc.to(dt) - self.t.to(dt).unsqueeze(1)) @ self.R.to(dt)

    def project(self, p: Tensor, eps: float = 1e-8) -> tuple[Tensor, Tensor]:
        """World points [B,N,3] -> (pixel xy [B,N,2], depth [B,N] = camera z). Applies distortion if set."""
        pc = self.world_to_camera(p)
        z = pc[..., 2]
        zs = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
        xy = pc[..., :2] / zs.unsqueeze(-1)
        if self.dist is not None:
            xy = distort(xy, self.dist)
        return self._apply_K(xy), z

    def _apply_K(self, xy: Tensor) -> Tensor:
        K = self.K.to(xy.dtype)
        x = K[:, 0, 0, None] * xy[..., 0] + K[:, 0, 1, None] * xy[..., 1] + K[:, 0, 2, None]
        y = K[:, 1, 1, None] * xy[..., 1] + K[:, 1, 2, None]
        return torch.stack([x, y], -1)

    def _unapply_K(self, uv: Tensor) -> Tensor:
        K = self.K
        y = (uv[..., 1] - K[:, 1, 2, None]) / K[:, 1, 1, None]
        x = (uv[..., 0] - K[:, 0, 2, None] - K[:, 0, 1, None] * y) / K[:, 0, 0, None]
        return torch.stack([x, y], -1)

    def unproject(self, xy: Tensor, depth: Tensor) -> Tensor:
        """Pixel coordinates [B,N,2] and camera z [B,N] -> world points [B,N,3] (undistorts if dist set)."""
        if xy.dim() == 2:
            xy = xy.unsqueeze(0)
        if depth.dim() == 1:
            depth = depth.unsqueeze(0)
        n = self._unapply_K(xy)
        if self.dist is not None:
            n = undistort(n, self.dist)
        pc = torch.cat([n * depth.unsqueeze(-1), depth.unsqueeze(-1)], -1)
        return self.camera_to_world(pc)

    def pixel_grid(self) -> Tensor:
        """Pixel-centre coordinates [H,W,2] (x = j + 0.5, y = i + 0.5) on the cameras' device."""
        dev, dt = self.K.device, self.K.dtype
        ys = torch.arange(self.height, device=dev, dtype=dt) + 0.5
        xs = torch.arange(self.width, device=dev, dtype=dt) + 0.5
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        return torch.stack([gx, gy], -1)

    def rays(self) -> tuple[Tensor, Tensor]:
        """Per-pixel rays through pixel centres: origins [B,H,W,3], unit directions [B,H,W,3] (world)."""
        B, H, W = self.batch_size, self.height, self.width
        uv = self.pixel_grid().reshape(1, H * W, 2).expand(B, -1, -1)
        n = self._unapply_K(uv)
        if self.dist is not None:
            n = undistort(n, self.dist)
        d_cam = torch.cat([n, torch.ones_like(n[..., :1])], -1)
        d = d_cam @ self.R  # R^T d for row vectors
        d = d / d.norm(dim=-1, keepdim=True)
        o = self.centers[:, None, :].expand(B, H * W, 3)
        return o.reshape(B, H, W, 3), d.reshape(B, H, W, 3)

    def to_clip(self, p: Tensor, near: float = 0.01, far: float = 1e4) -> Tensor:
        """World points [B,N,3] -> homogeneous clip coordinates [B,N,4] (x, y, z, w).

        x/w = 2 x_pix / W - 1 and y/w = 2 y_pix / H - 1 for the pinhole (undistorted) projection, w = camera z,
        z/w = -1 at ``near`` and +1 at ``far``. Lens distortion is not representable here and is ignored.
        """
        if not (0 < near < far):
            raise NeuralRenderError(f"to_clip: need 0 < near < far, got near={near}, far={far}")
        pc = self.world_to_camera(p)
        x, y, z = pc.unbind(-1)
        K = self.K.to(pc.dtype)
        W, H = float(self.width), float(self.height)
        xc = (2.0 / W) * (K[:, 0, 0, None] * x + K[:, 0, 1, None] * y + K[:, 0, 2, None] * z) - z
        yc = (2.0 / H) * (K[:, 1, 1, None] * y + K[:, 1, 2, None] * z) - z
        zc = ((far + near) * z - 2.0 * far * near) / (far - near)
        return torch.stack([xc, yc, zc, z], -1)

    def projection_matrix(self, near: float = 0.01, far: float = 1e4) -> Tensor:
        """The 4x4 matrices [B,4,4] with clip = P @ [x_cam, 1] (same mapping as ``to_clip``)."""
        K, W, H = self.K, float(self.width), float(self.height)
        P = torch.zeros(self.batch_size, 4, 4, dtype=K.dtype, device=K.device)
        P[:, 0, 0] = 2 * K[:, 0, 0] / W
        P[:, 0, 1] = 2 * K[:, 0, 1] / W
        P[:, 0, 2] = 2 * K[:, 0, 2] / W - 1
        P[:, 1, 1] = 2 * K[:, 1, 1] / H
        P[:, 1, 2] = 2 * K[:, 1, 2] / H - 1
        P[:, 2, 2] = (far + near) / (far - near)
        P[:, 2, 3] = -2 * far * near / (far - near)
        P[:, 3, 2] = 1.0
        return P

    # --------------------------------------------------------- constructors
    @classmethod
    def from_opengl_c2w(cls, c2w: Tensor, K: Tensor, width: int, height: int, dist: Tensor | None = None) -> "Cameras":
        """From camera-to-world matrices in OpenGL axes (transforms.json / NeRF) [B,4,4] (or [B,3,4])."""
        R, t = opengl_c2w_to_opencv(c2w)
        return cls(K=K, R=R, t=t, width=width, height=height, dist=dist)

    def opengl_c2w(self) -> Tensor:
        """Camera-to-world matrices in OpenGL axes [B,4,4] (the transforms.json convention)."""
        return opencv_to_opengl_c2w(self.R, self.t)


# ---------------------------------------------------------------- conversions
def opencv_to_opengl_c2w(R: Tensor, t: Tensor) -> Tensor:
    """World-to-camera OpenCV (R [B,3,3], t [B,3]) -> camera-to-world OpenGL (x right, y up, z back) [B,4,4]."""
    R = _batched(R, 3, "R")
    t = _batched(t, 2, "t")
    Rt = R.transpose(1, 2)
    c = -(Rt @ t.unsqueeze(-1)).squeeze(-1)
    flip = torch.tensor(_FLIP_YZ, dtype=R.dtype, device=R.device)
    top = torch.cat([Rt * flip, c.unsqueeze(-1)], -1)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=R.dtype, device=R.device).expand(R.shape[0], 1, 4)
    return torch.cat([top, bottom], 1)


def opengl_c2w_to_opencv(c2w: Tensor) -> tuple[Tensor, Tensor]:
    """Camera-to-world OpenGL [B,4,4] or [B,3,4] -> world-to-camera OpenCV (R [B,3,3], t [B,3])."""
    c2w = _batched(c2w, 3, "c2w")
    if c2w.shape[-2:] not in ((4, 4), (3, 4)):
        raise NeuralRenderError(f"opengl_c2w_to_opencv: expected [B,4,4] or [B,3,4], got {tuple(c2w.shape)}")
    flip = torch.tensor(_FLIP_YZ, dtype=c2w.dtype, device=c2w.device)
    Rc2w = c2w[:, :3, :3] * flip
    R = Rc2w.transpose(1, 2)
    t = -(R @ c2w[:, :3, 3:4]).squeeze(-1)
    return R, t


# ------------------------------------------------------------------- builders
def _normalize(v: Tensor, eps: float = 1e-12) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def look_at(eye: Tensor, target: Tensor, up: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """OpenCV world-to-camera (R [B,3,3], t [B,3]) for cameras at ``eye`` [B,3] looking at ``target`` [B,3].

    ``up`` [B,3] (default +y) is the world direction that appears upward in the image (camera -y).
    """
    eye = torch.as_tensor(eye, dtype=torch.float32) if not torch.is_tensor(eye) else eye
    eye = _batched(eye, 2, "eye")
    target = torch.as_tensor(target, dtype=eye.dtype, device=eye.device)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=eye.dtype, device=eye.device) if up is None else torch.as_tensor(
        up, dtype=eye.dtype, device=eye.device)
    target, up = target.expand_as(eye), up.expand_as(eye)
    z = _normalize(target - eye)
    x = torch.cross(z, up, dim=-1)
    # up parallel to the viewing direction: pick another up
    bad = x.norm(dim=-1, keepdim=True) < 1e-6
    if bool(bad.any()):
        alt = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand_as(eye)
        x = torch.where(bad, torch.cross(z, alt, dim=-1), x)
    x = _normalize(x)
    y = torch.cross(z, x, dim=-1)
    R = torch.stack([x, y, z], 1)
    t = -(R @ eye.unsqueeze(-1)).squeeze(-1)
    return R, t


def intrinsics_from_fov(fov_deg, width: int, height: int) -> Tensor:
    """K [3,3] (or [B,3,3] for a tensor of B fovs) from the VERTICAL field of view in degrees; principal
    point at the image centre (W/2, H/2), square pixels."""
    fov = torch.as_tensor(fov_deg, dtype=torch.float32)
    f = (height / 2.0) / torch.tan(torch.deg2rad(fov) / 2.0)
    K = torch.zeros(*fov.shape, 3, 3, dtype=fov.dtype, device=fov.device)
    K[..., 0, 0] = f
    K[..., 1, 1] = f
    K[..., 0, 2] = width / 2.0
    K[..., 1, 2] = height / 2.0
    K[..., 2, 2] = 1.0
    return K


def _eyes(azim_deg: Tensor, elev_deg: Tensor, radius, target: Tensor) -> Tensor:
    az, el = torch.deg2rad(azim_deg), torch.deg2rad(elev_deg)
    radius = torch.as_tensor(radius, dtype=az.dtype)
    off = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)
    return target + radius.unsqueeze(-1) * off if radius.dim() else target + radius * off


def orbit(n: int, radius: float = 3.0, elevation_deg: float = 20.0, target=(0.0, 0.0, 0.0), fov_deg: float = 40.0,
          width: int = 256, height: int = 256, start_azimuth_deg: float = 0.0) -> Cameras:
    """n cameras on a circle around ``target`` (world y up), evenly spaced in azimuth, looking at it."""
    target = torch.as_tensor(target, dtype=torch.float32)
    az = start_azimuth_deg + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    eye = _eyes(az, torch.full_like(az, float(elevation_deg)), radius, target)
    R, t = look_at(eye, target.expand(n, 3))
    return Cameras(K=intrinsics_from_fov(fov_deg, width, height).expand(n, 3, 3), R=R, t=t, width=width, height=height)


def spiral(n: int, radius: float = 3.0, elevation_range_deg=(-10.0, 40.0), turns: float = 2.0,
           target=(0.0, 0.0, 0.0), fov_deg: float = 40.0, width: int = 256, height: int = 256,
           radius_wobble: float = 0.0) -> Cameras:
    """n cameras on a spiral: ``turns`` revolutions while the elevation sweeps the range up and back down;
    the distance oscillates by +-radius_wobble."""
    target = torch.as_tensor(target, dtype=torch.float32)
    s = torch.linspace(0.0, 1.0, n)
    az = 360.0 * turns * s
    lo, hi = elevation_range_deg
    el = lo + (hi - lo) * 0.5 * (1 - torch.cos(2 * math.pi * s))
    r = radius + radius_wobble * torch.sin(2 * math.pi * turns * s)
    eye = _eyes(az, el, r, target)
    R, t = look_at(eye, target.expand(n, 3))
    return Cameras(K=intrinsics_from_fov(fov_deg, width, height).expand(n, 3, 3), R=R, t=t, width=width, height=height)


# ------------------------------------------------------------- quaternions
def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation matrices [...,3,3] -> unit quaternions [...,4] (w, x, y, z), w >= 0."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # [...,4,4]; candidate k is proportional to q with its k-th entry largest when chosen
    diag = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    k = diag.argmax(-1, keepdim=True)
    q = torch.gather(cands, -2, k.unsqueeze(-1).expand(*k.shape[:-1], 1, 4)).squeeze(-2)
    q = _normalize(q)
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Quaternions [...,4] (w, x, y, z) -> rotation matrices [...,3,3] (normalises q)."""
    q = _normalize(q)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def slerp(q0: Tensor, q1: Tensor, s: Tensor) -> Tensor:
    """Spherical interpolation of unit quaternions [...,4] with weights s [...] in [0,1] (shortest path)."""
    dot = (q0 * q1).sum(-1, keepdim=True)
    q1 = torch.where(dot < 0, -q1, q1)
    dot = dot.abs().clamp(max=1.0)
    s = s.unsqueeze(-1)
    theta = torch.acos(dot)
    sin_t = torch.sin(theta)
    small = sin_t < 1e-6
    a = torch.where(small, 1 - s, torch.sin((1 - s) * theta) / torch.where(small, torch.ones_like(sin_t), sin_t))
    b = torch.where(small, s, torch.sin(s * theta) / torch.where(small, torch.ones_like(sin_t), sin_t))
    return _normalize(a * q0 + b * q1)


def interpolate_cameras(cams: Cameras, n: int) -> Cameras:
    """n cameras along the path through the B key cameras of ``cams`` (slerp rotations, lerp centres and K).

    The first output equals cams[0] and the last equals cams[B-1].
    """
    B = cams.batch_size
    if B < 2 or n < 2:
        raise NeuralRenderError(f"interpolate_cameras: need >= 2 key cameras and n >= 2, got {B} and {n}")
    pos = torch.linspace(0, B - 1, n, dtype=cams.R.dtype, device=cams.R.device)
    i0 = pos.floor().long().clamp(max=B - 2)
    s = pos - i0.to(pos.dtype)
    q = matrix_to_quaternion(cams.R)
    R = quaternion_to_matrix(slerp(q[i0], q[i0 + 1], s))
    c = cams.centers
    sc = s.unsqueeze(-1)
    centre = c[i0] * (1 - sc) + c[i0 + 1] * sc
    K = cams.K[i0] * (1 - sc[..., None]) + cams.K[i0 + 1] * sc[..., None]
    t = -(R @ centre.unsqueeze(-1)).squeeze(-1)
    dist = None if cams.dist is None else cams.dist[i0] * (1 - sc) + cams.dist[i0 + 1] * sc
    return Cameras(K=K, R=R, t=t, width=cams.width, height=cams.height, dist=dist)


# ------------------------------------------------------------------ distortion
def distort(xy: Tensor, dist: Tensor) -> Tensor:
    """Apply OpenCV (k1, k2, p1, p2) distortion to normalised coordinates xy [B,N,2]; dist [B,4] or [4]."""
    if dist.dim() == 1:
        dist = dist.unsqueeze(0)
    k1, k2, p1, p2 = (dist[:, i].view(-1, *([1] * (xy.dim() - 2))) for i in range(4))
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], -1)


def undistort(xy_d: Tensor, dist: Tensor, iters: int = 20) -> Tensor:
    """Invert ``distort`` by Newton iterations (analytic 2x2 Jacobian): distorted xy [B,N,2] -> undistorted.

    Differentiable through the unrolled iterations.
    """
    if dist.dim() == 1:
        dist = dist.unsqueeze(0)
    k1, k2, p1, p2 = (dist[:, i].view(-1, *([1] * (xy_d.dim() - 2))) for i in range(4))
    x, y = xy_d[..., 0], xy_d[..., 1]
    for _ in range(iters):
        r2 = x * x + y * y
        radial = 1 + k1 * r2 + k2 * r2 * r2
        fx = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - xy_d[..., 0]
        fy = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y - xy_d[..., 1]
        dr = k1 + 2 * k2 * r2  # d radial / d r2
        a = radial + x * dr * 2 * x + 2 * p1 * y + 6 * p2 * x
        b = x * dr * 2 * y + 2 * p1 * x + 2 * p2 * y
        c = y * dr * 2 * x + 2 * p1 * x + 2 * p2 * y
        d = radial + y * dr * 2 * y + 6 * p1 * y + 2 * p2 * x
        det = a * d - b * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        x = x - (d * fx - b * fy) / det
        y = y - (-c * fx + a * fy) / det
    return torch.stack([x, y], -1)
