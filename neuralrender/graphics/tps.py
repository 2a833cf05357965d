"""Random affine + thin-plate-spline (TPS) transforms, for the equivariance losses of unsupervised keypoints.

A transform T maps normalized coordinates [-1, 1]^2 (the convention of `graphics.warp`) to normalized
coordinates:  T(z) = A z + b + sum_p w_p U(|z - c_p|_1),  U(r) = r^2 log r,
with control points c_p on a regular grid (FOMM's parametrisation, including its L1 radial distance).
`transform_image(img)` resamples img so that out(z) = img(T(z)): a point p of the transformed image
corresponds to T(p) in the original, so an equivariant detector satisfies kp(img) = T(kp(transform_image(img))).
"""

from __future__ import annotations

import torch

from neuralrender.graphics.warp import make_coordinate_grid, sample_grid

__all__ = ["ThinPlateSpline", "random_tps"]


class ThinPlateSpline:
    """A batch of transforms: theta [B,2,3] (affine A|b), control_points [P,2], weights [B,P] (or None)."""

    def __init__(self, theta: torch.Tensor, control_points: torch.Tensor | None = None,
                 weights: torch.Tensor | None = None):
        self.theta = theta
        self.control_points = control_points
        self.weights = weights

    @property
    def batch(self) -> int:
        return self.theta.shape[0]

    def transform_points(self, points: torch.Tensor) -> torch.Tensor:
        """points [B,N,2] normalized -> T(points) [B,N,2]."""
        th = self.theta.to(points.dtype)
        out = points @ th[:, :, :2].transpose(1, 2) + th[:, None, :, 2]
        if self.weights is not None:
            c = self.control_points.to(points)
            r = (points[:, :, None, :] - c[None, None]).abs().sum(-1)  # [B,N,P]
            u = r**2 * torch.log(r + 1e-6)
            out = out + (u * self.weights.to(points)[:, None, :]).sum(-1, keepdim=True)
        return out

    def jacobian(self, points: torch.Tensor) -> torch.Tensor:
        """dT/dz at points [B,N,2] -> [B,N,2,2] (row i = d T_i / d (x, y)), via autograd."""
        with torch.enable_grad():
            p = points.detach().requires_grad_(True)
            t = self.transform_points(p)
            gx = torch.autograd.grad(t[..., 0].sum(), p, create_graph=True)[0]
            gy = torch.autograd.grad(t[..., 1].sum(), p, create_graph=True)[0]
        return torch.stack([gx, gy], -2)

    def grid(self, height: int, width: int, device=None) -> torch.Tensor:
        """Sampling grid [B,H,W,2]: T at every pixel centre."""
        z = make_coordinate_grid(height, width, self.theta.dtype, device or self.theta.device).view(1, -1, 2)
        return self.transform_points(z.expand(self.batch, -1, -1)).view(self.batch, height, width, 2)

    def transform_image(self, image: torch.Tensor, padding: str = "reflection") -> torch.Tensor:
        """image [B,C,H,W] -> out(z) = image(T(z)), [B,C,H,W]."""
        return sample_grid(image, self.grid(image.shape[-2], image.shape[-1], image.device), padding=padding)


def random_tps(batch: int, sigma_affine: float = 0.05, sigma_tps: float = 0.005, points_tps: int = 5,
               device=None, dtype=torch.float32, generator: torch.Generator | None = None) -> ThinPlateSpline:
    """Random transforms near the identity: theta = [I|0] + N(0, sigma_affine), TPS weights N(0, sigma_tps)
    on a points_tps x points_tps control grid (sigma_tps = 0 or points_tps = 0: affine only).

    Drawn on the CPU from `generator` (or the global RNG) so results do not depend on the device.
    """
    theta = torch.randn(batch, 2, 3, generator=generator, dtype=dtype) * sigma_affine
    theta = theta + torch.eye(2, 3, dtype=dtype)
    cp = w = None
    if sigma_tps > 0 and points_tps > 0:
        cp = make_coordinate_grid(points_tps, points_tps, dtype).view(-1, 2)
        w = torch.randn(batch, points_tps**2, generator=generator, dtype=dtype) * sigma_tps
        cp, w = cp.to(device), w.to(device)
    return ThinPlateSpline(theta.to(device), cp, w)
