"""Multi-scale reconstruction loss: L1 between image pyramids (FOMM's pyramid loss, on pixels; the paper
puts VGG features on each level, which `losses.reconstruction.PerceptualLoss` can add when weights exist)."""

from __future__ import annotations

import torch

from neuralrender.nn.keypoints import anti_alias_resize

__all__ = ["image_pyramid", "pyramid_l1"]


def image_pyramid(image: torch.Tensor, scales=(1.0, 0.5, 0.25, 0.125)) -> list[torch.Tensor]:
    """[B,C,H,W] -> one anti-aliased downscale per scale (a level smaller than 1 pixel is skipped)."""
    H, W = image.shape[-2:]
    return [anti_alias_resize(image, s) for s in scales if min(H, W) * s >= 1]


def pyramid_l1(pred: torch.Tensor, target: torch.Tensor, scales=(1.0, 0.5, 0.25, 0.125),
               weights=None) -> torch.Tensor:
    """Weighted sum over scales of mean |pyramid(pred) - pyramid(target)|; pred, target [B,C,H,W]."""
    pp, pt = image_pyramid(pred, scales), image_pyramid(target, scales)
    weights = weights or [1.0] * len(pp)
    return sum(w * (a - b).abs().mean() for w, a, b in zip(weights, pp, pt))
