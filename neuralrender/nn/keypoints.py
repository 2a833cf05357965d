"""Unsupervised keypoints: heatmaps -> soft-argmax, local affine Jacobians, Gaussian heatmaps of keypoints,
and relative / absolute motion transfer (FOMM's `normalize_kp`).

Keypoints live in the normalized image coordinates of `graphics.warp` ((x, y) in [-1, 1], -1 the left/top
edge of the image, align_corners=False), shape [B,K,2]; Jacobians are [B,K,2,2] (d warped / d x in the same
coordinates). `graphics.warp.normalized_to_pixel` turns keypoints into pixels for drawing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.draw import gaussian_heatmaps
from neuralrender.graphics.warp import make_coordinate_grid, normalized_to_pixel
from neuralrender.nn.hourglass import Hourglass

__all__ = ["soft_argmax", "weighted_jacobians", "keypoint_heatmaps", "KeypointDetector", "transfer_keypoints",
           "anti_alias_resize"]


def soft_argmax(logits: torch.Tensor, temperature: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B,K,H,W] -> (keypoints [B,K,2] normalized (x, y), heatmaps [B,K,H,W] summing to 1 per map).

    heatmap = softmax(logits / temperature) over the pixels; keypoint = sum(heatmap * pixel-centre coords).
    """
    if logits.dim() != 4:
        raise NeuralRenderError(f"soft_argmax needs logits [B,K,H,W], got {tuple(logits.shape)}")
    B, K, H, W = logits.shape
    heat = F.softmax(logits.flatten(2) / temperature, dim=2).view(B, K, H, W)
    grid = make_coordinate_grid(H, W, logits.dtype, logits.device)  # [H,W,2]
    kp = (heat.unsqueeze(-1) * grid).sum(dim=(2, 3))
    return kp, heat


def weighted_jacobians(heatmaps: torch.Tensor, jacobian_maps: torch.Tensor) -> torch.Tensor:
    """heatmaps [B,K,H,W] (sum to 1), jacobian_maps [B,4K,H,W] -> Jacobians [B,K,2,2] (heatmap-weighted mean)."""
    B, K, H, W = heatmaps.shape
    jm = jacobian_maps.view(B, K, 4, H, W)
    return (jm * heatmaps.unsqueeze(2)).sum(dim=(3, 4)).view(B, K, 2, 2)


def keypoint_heatmaps(kp: torch.Tensor, height: int, width: int, variance: float = 0.01) -> torch.Tensor:
    """Gaussians around normalized keypoints kp [B,K,2] -> [B,K,H,W] (peak 1).

    `variance` is in normalized units of the shorter side (0.01 -> sigma = 0.1 half-widths); drawn with
    `graphics.draw.gaussian_heatmaps` in pixels.
    """
    sigma = (variance ** 0.5) * min(height, width) / 2.0
    return gaussian_heatmaps(normalized_to_pixel(kp, height, width), height, width, sigma=sigma)


def anti_alias_resize(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Downscale [B,C,H,W] by `scale` (<= 1) with antialiasing (bilinear, antialias=True); 1 is a no-op."""
    if scale == 1:
        return image
    return F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)


class KeypointDetector(nn.Module):
    """Image [B,C,H,W] -> {"value": [B,K,2], "jacobian": [B,K,2,2] or absent, "heatmap": [B,K,h,w]}.

    An hourglass on the (optionally downscaled by `scale_factor`) image, a 7x7 conv to K heatmap logits
    (same-size padding, so heatmap pixel centres coincide with image coordinates), soft-argmax with
    `temperature`. With estimate_jacobian a second 7x7 conv predicts 4 maps per keypoint, initialised to the
    identity, pooled with the keypoint's heatmap (FOMM's local affine approximation).
    """

    def __init__(self, num_kp: int = 10, channels: int = 3, block_expansion: int = 32, num_blocks: int = 3,
                 max_features: int = 256, temperature: float = 0.1, estimate_jacobian: bool = True,
                 scale_factor: float = 1.0, norm: str = "batch"):
        super().__init__()
        self.num_kp, self.temperature, self.scale_factor = num_kp, temperature, scale_factor
        self.predictor = Hourglass(channels, block_expansion, num_blocks, max_features, norm)
        self.kp = nn.Conv2d(self.predictor.out_channels, num_kp, 7, padding=3)
        self.jacobian = None
        if estimate_jacobian:
            self.jacobian = nn.Conv2d(self.predictor.out_channels, 4 * num_kp, 7, padding=3)
            nn.init.zeros_(self.jacobian.weight)
            with torch.no_grad():
                self.jacobian.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(num_kp))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.predictor(anti_alias_resize(image, self.scale_factor))
        value, heat = soft_argmax(self.kp(feat), self.temperature)
        out = {"value": value, "heatmap": heat}
        if self.jacobian is not None:
            out["jacobian"] = weighted_jacobians(heat, self.jacobian(feat))
        return out


def _hull_area(points) -> float:
    """Area of the convex hull of [N,2] points (numpy); 0 for degenerate sets."""
    import numpy as np
    from scipy.spatial import ConvexHull, QhullError

    try:
        return float(ConvexHull(np.asarray(points, dtype=np.float64)).volume)
    except (QhullError, ValueError):
        return 0.0


def transfer_keypoints(kp_source: dict, kp_driving: dict, kp_driving_initial: dict | None = None,
                       relative: bool = True, adapt_scale: bool = True, relative_jacobian: bool = True) -> dict:
    """Keypoints that drive the source: absolute (the driving ones) or relative (FOMM, the default).

    Relative: value = kp_source + s * (kp_driving - kp_driving_initial), jacobian = J_d J_d0^-1 J_s, where
    s = sqrt(hull area of source kp / hull area of initial driving kp) when adapt_scale (FOMM's adaptive
    movement scale), else 1. Dicts hold "value" [B,K,2] and optionally "jacobian" [B,K,2,2];
    kp_driving_initial broadcasts over the batch of kp_driving (e.g. one initial frame for a whole video).
    """
    if not relative:
        return dict(kp_driving)
    if kp_driving_initial is None:
        raise NeuralRenderError("relative motion transfer needs the keypoints of the initial driving frame")
    scale = torch.ones(kp_source["value"].shape[0], 1, 1, dtype=kp_source["value"].dtype,
                       device=kp_source["value"].device)
    if adapt_scale:
        src = kp_source["value"].detach().cpu()
        ini = kp_driving_initial["value"].detach().cpu().expand_as(src)
        for b in range(src.shape[0]):
            a_s, a_d = _hull_area(src[b]), _hull_area(ini[b])
            scale[b] = (a_s / a_d) ** 0.5 if a_s > 0 and a_d > 0 else 1.0
    out = dict(kp_driving)
    out["value"] = kp_source["value"] + scale * (kp_driving["value"] - kp_driving_initial["value"])
    if relative_jacobian and "jacobian" in kp_driving and "jacobian" in kp_source:
        diff = kp_driving["jacobian"] @ torch.inverse(kp_driving_initial["jacobian"])
        out["jacobian"] = diff @ kp_source["jacobian"]
    return out
