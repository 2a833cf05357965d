"""Dense motion from sparse keypoint motions (Monkey-Net / FOMM): per-keypoint local motions ->
softmax masks -> one dense backward flow (a sampling grid) + an occlusion map; feature warping.

All grids are [B,H,W,2] in the normalized coordinates of `graphics.warp` (align_corners=False) and every
sampling goes through `graphics.warp.sample_grid`, the library's one pinned grid_sample convention.
A grid maps each DRIVING-frame location to the SOURCE-frame location it fetches from (backward warp).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.warp import identity_grid, make_coordinate_grid, sample_grid
from neuralrender.nn.hourglass import Hourglass
from neuralrender.nn.keypoints import anti_alias_resize, keypoint_heatmaps

__all__ = ["sparse_motions", "combine_motions", "resize_grid", "deform", "DenseMotionNetwork"]


def sparse_motions(height: int, width: int, kp_driving: torch.Tensor, kp_source: torch.Tensor,
                   jac_driving: torch.Tensor | None = None, jac_source: torch.Tensor | None = None,
                   affine_range: float = 0.0) -> torch.Tensor:
    """Local motions T_k(z) = kp_s + J_s J_d^-1 (z - kp_d) (zeroth order without Jacobians: z - kp_d + kp_s),
    plus the identity for the background as motion 0.

    affine_range s > 0 (not in the papers) localises the first-order term around each keypoint:
    T_k(z) = kp_s + (z - kp_d) + exp(-|z - kp_d|^2 / 2 s^2) (J_s J_d^-1 - I)(z - kp_d), so far from kp_d the
    motion is the keypoint's translation; 0 = the paper's unlimited affine motion.
    kp_* [B,K,2] normalized; jac_* [B,K,2,2] or None -> grids [B,K+1,H,W,2].
    """
    B, K, _ = kp_driving.shape
    ident = make_coordinate_grid(height, width, kp_driving.dtype, kp_driving.device).view(1, 1, height, width, 2)
    z = ident - kp_driving.view(B, K, 1, 1, 2)
    if jac_driving is not None and jac_source is not None:
        j = jac_source @ torch.inverse(jac_driving)  # [B,K,2,2]
        if affine_range > 0:
            first = ((j - torch.eye(2, dtype=j.dtype, device=j.device)).view(B, K, 1, 1, 2, 2) @ z.unsqueeze(-1)).squeeze(-1)
            z = z + torch.exp(-z.pow(2).sum(-1, keepdim=True) / (2 * affine_range**2)) * first
        else:
            z = (j.view(B, K, 1, 1, 2, 2) @ z.unsqueeze(-1)).squeeze(-1)
    motions = z + kp_source.view(B, K, 1, 1, 2)
    return torch.cat([ident.expand(B, 1, height, width, 2), motions], 1)


def combine_motions(masks: torch.Tensor, motions: torch.Tensor) -> torch.Tensor:
    """masks [B,K+1,H,W] (softmax over K+1), motions [B,K+1,H,W,2] -> dense grid [B,H,W,2]."""
    return (masks.unsqueeze(-1) * motions).sum(1)


def resize_grid(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resample a normalized grid [B,h,w,2] to [B,H,W,2]: its displacement from the identity is resized
    (bilinear) and added to the identity at H, W, so the identity stays exactly the identity."""
    if grid.shape[1:3] == (height, width):
        return grid
    B, h, w, _ = grid.shape
    disp = (grid - identity_grid(B, h, w, grid.dtype, grid.device)).permute(0, 3, 1, 2)
    disp = F.interpolate(disp, size=(height, width), mode="bilinear", align_corners=False)
    return identity_grid(B, height, width, grid.dtype, grid.device) + disp.permute(0, 2, 3, 1)


def deform(x: torch.Tensor, grid: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Backward-warp images or features x [B,C,H,W] with a grid [B,h,w,2] (resized to H,W) -> [B,C,H,W]."""
    return sample_grid(x, resize_grid(grid, x.shape[-2], x.shape[-1]), padding=padding)


class DenseMotionNetwork(nn.Module):
    """(source [B,C,H,W], kp_driving, kp_source dicts) -> {"mask" [B,K+1,h,w], "sparse_deformed"
    [B,K+1,C,h,w], "deformation" [B,h,w,2], "occlusion_map" [B,1,h,w] when estimate_occlusion}.

    h, w = H, W times scale_factor. Input of the hourglass per motion k: the heatmap difference
    G(kp_d) - G(kp_s) (zero for the background) and the source warped by motion k. Masks: softmax of a
    7x7 conv; occlusion: sigmoid of another. use_jacobian=False gives Monkey-Net's zeroth-order motions;
    affine_range: see `sparse_motions`.

    mask_init: "random" (PyTorch's default conv init, the official FOMM code's) or "identity" (the official
    Monkey-Net code's: zero weights, background logit 2, so at init every pixel puts e^2 / (e^2 + K) of its
    mask on the background's identity motion, 0.42 at K = 10, and 1 / (e^2 + K) on each keypoint, the same
    everywhere). The flow at init is then the identity plus (1 - that share) x the mean keypoint motion's
    displacement: exactly the identity wherever no keypoint moved, not for arbitrary keypoints. The default
    init runs (and draws its random numbers) in both cases, so the other layers' init does not depend on it.
    """

    def __init__(self, num_kp: int, channels: int = 3, block_expansion: int = 64, num_blocks: int = 5,
                 max_features: int = 1024, estimate_occlusion: bool = True, kp_variance: float = 0.01,
                 scale_factor: float = 1.0, use_jacobian: bool = True, norm: str = "batch", affine_range: float = 0.0,
                 mask_init: str = "random"):
        super().__init__()
        self.num_kp, self.kp_variance, self.scale_factor, self.use_jacobian = num_kp, kp_variance, scale_factor, use_jacobian
        self.affine_range = affine_range
        self.hourglass = Hourglass((num_kp + 1) * (channels + 1), block_expansion, num_blocks, max_features, norm)
        self.mask = nn.Conv2d(self.hourglass.out_channels, num_kp + 1, 7, padding=3)
        if mask_init == "identity":
            self.identity_start()
        elif mask_init != "random":
            raise NeuralRenderError(f"mask_init must be 'random' or 'identity', got {mask_init!r}")
        self.occlusion = nn.Conv2d(self.hourglass.out_channels, 1, 7, padding=3) if estimate_occlusion else None

    @torch.no_grad()
    def identity_start(self, background_logit: float = 2.0) -> None:
        """The official Monkey-Net mask init: zero weights, bias [background_logit, 0, ..., 0] (draws no random
        numbers)."""
        nn.init.zeros_(self.mask.weight)
        self.mask.bias.zero_()
        self.mask.bias[0] = background_logit

    def forward(self, source: torch.Tensor, kp_driving: dict, kp_source: dict) -> dict[str, torch.Tensor]:
        src = anti_alias_resize(source, self.scale_factor)
        B, C, H, W = src.shape
        K = self.num_kp
        heat = keypoint_heatmaps(kp_driving["value"], H, W, self.kp_variance) - \
            keypoint_heatmaps(kp_source["value"], H, W, self.kp_variance)
        heat = torch.cat([heat.new_zeros(B, 1, H, W), heat], 1).unsqueeze(2)  # [B,K+1,1,H,W]
        jd = kp_driving.get("jacobian") if self.use_jacobian else None
        js = kp_source.get("jacobian") if self.use_jacobian else None
        motions = sparse_motions(H, W, kp_driving["value"], kp_source["value"], jd, js, self.affine_range)
        rep = src.unsqueeze(1).expand(B, K + 1, C, H, W).reshape(B * (K + 1), C, H, W)
        deformed = sample_grid(rep, motions.reshape(B * (K + 1), H, W, 2)).view(B, K + 1, C, H, W)
        feat = self.hourglass(torch.cat([heat, deformed], 2).view(B, -1, H, W))
        mask = F.softmax(self.mask(feat), dim=1)
        out = {"mask": mask, "sparse_deformed": deformed, "deformation": combine_motions(mask, motions)}
        if self.occlusion is not None:
            out["occlusion_map"] = torch.sigmoid(self.occlusion(feat))
        return out
