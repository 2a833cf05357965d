"""`deformable-gan` (Siarohin et al., "Deformable GANs for Pose-based Human Image Generation", CVPR 2018).

Generator: a U-Net whose source encoder reads the source image + its pose heatmaps and whose target encoder
reads the target pose heatmaps. Deformable skip connections: for every body part (graphics.skeleton.BODY_PARTS)
an affine transform maps the part's TARGET joints onto its SOURCE joints (weighted least squares in
normalized coordinates, ridge-regularised toward the best similarity fit so 2-joint parts stay well
posed); each source feature map is backward-warped by every part's transform (graphics.warp.sample_grid),
masked by the part's region in the target pose (Gaussian blobs along the part's bones), and the parts are
combined by a max (as in the paper); the background (1 - body mask) keeps the unwarped source features.
The decoder gets the deformed source features and the target encoder's features at every level. With
--blend (default, our addition) it also outputs a mask blending its RGB with the deformed source image (the
pixels take the part with the largest mask rather than the max); with --region (default) the mask is restricted
to the parts that moved (_motion.motion_region) and the output elsewhere is the source image itself; with
--warp-body (default, ours) it is also zero on the target body (1 - max of the part masks), so the moved body is
the deformed source image and the generator paints what the body left behind (trained on two people, its own RGB
repainted an unseen person's arm in the training people's colours).
Loss: nearest-neighbour loss (each generated pixel compared with the best match in an n x n neighbourhood
of the real image, Siarohin et al. eq. 4, here on pixels) + adversarial loss from a PatchGAN on
(source image, target pose, image).

Data and baselines as skeleton-cgan (methods/_motion.py): trained on pairs within training clips, evaluated on
the held-out clip animated from its first frame; baseline: copying the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from neuralrender.graphics.draw import gaussian_heatmaps
from neuralrender.graphics.warp import make_coordinate_grid, pixel_to_normalized, sample_grid
from neuralrender.methods._motion import (
    PART_JOINTS,
    Decoder,
    Encoder,
    PoseTransferConfig,
    PoseTransferMethod,
    blend_output,
    inside_image,
    part_masks,
)
from neuralrender.nn.discriminators import PatchDiscriminator
from neuralrender.registry import register


def part_affines(src: torch.Tensor, tgt: torch.Tensor, valid: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Per-part 2x3 affines A with A [p_tgt; 1] ~= p_src (normalized coordinates).

    src, tgt [B,33,2]; valid [B,33] (joint usable in both) -> [B,P,2,3]. Least squares over the part's valid
    joints with a ridge `ridge` pulling the linear part toward the best similarity (rotation + scale), so parts
    with 2 joints get their similarity and parts with 3+ a full affine; parts with fewer than 2 valid joints get
    the pure translation of their one joint (or the identity with none).
    """
    B = src.shape[0]
    out = []
    eye = torch.eye(2, 3, dtype=src.dtype, device=src.device).expand(B, 2, 3)
    for joints in PART_JOINTS:
        s, t = src[:, joints], tgt[:, joints]
        w = valid[:, joints].to(src.dtype)
        n = w.sum(1, keepdim=True)  # [B,1]
        ws = w / n.clamp_min(1)
        ms, mt = (s * ws[..., None]).sum(1), (t * ws[..., None]).sum(1)  # weighted centroids [B,2]
        sc, tc = (s - ms[:, None]) * w[..., None], (t - mt[:, None]) * w[..., None]
        # similarity (Umeyama in 2D): s_c ~= [[a, -b], [b, a]] t_c
        den = (tc**2).sum((1, 2)).clamp_min(1e-8)
        a = (tc * sc).sum((1, 2)) / den
        b = (tc[..., 0] * sc[..., 1] - tc[..., 1] * sc[..., 0]).sum(1) / den
        sim = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], 1)  # [B,2,2]
        # affine with ridge toward sim: M = (S^T T + r sim) (T^T T + r I)^-1 = sim + E^T T (T^T T + r I)^-1 with
        # E the similarity's residuals (written so, 2-joint parts get sim exactly however ill-conditioned T^T T is)
        tt = tc.transpose(1, 2) @ tc + ridge * torch.eye(2, dtype=src.dtype, device=src.device)
        res = sc - tc @ sim.transpose(1, 2)
        lin = sim + (res.transpose(1, 2) @ tc) @ torch.linalg.inv(tt)
        two = (n[:, 0] >= 2)[:, None, None]
        one = (n[:, 0] >= 1)[:, None, None]
        lin = torch.where(two, lin, torch.eye(2, dtype=src.dtype, device=src.device).expand(B, 2, 2))
        trans = ms - (lin @ mt[..., None])[..., 0]
        A = torch.cat([lin, trans[..., None]], -1)
        out.append(torch.where(one, A, eye))
    return torch.stack(out, 1)


def deform_features(feat: torch.Tensor, affines: torch.Tensor, masks: torch.Tensor, combine: str = "max") -> torch.Tensor:
    """Deformable skip connection: feat [B,C,h,w], affines [B,P,2,3] (normalized), masks [B,P,H,W] -> [B,C,h,w]:
    combine 'max' (the paper's, for features): max over parts of mask_p * warp_p(feat); 'select' (for pixels,
    where a max would let the brightest overlapping part win): mask_q * warp_q(feat) of the part q with the
    largest mask; plus (1 - max_p mask_p) * feat for the background."""
    B, C, h, w = feat.shape
    P = affines.shape[1]
    m = F.interpolate(masks, size=(h, w), mode="area") if masks.shape[-2:] != (h, w) else masks
    grid = make_coordinate_grid(h, w, feat.dtype, feat.device)  # [h,w,2]
    g = torch.cat([grid, torch.ones_like(grid[..., :1])], -1)  # [h,w,3]
    src_grid = torch.einsum("bpij,hwj->bphwi", affines, g).reshape(B * P, h, w, 2)
    warped = sample_grid(feat.repeat_interleave(P, 0), src_grid, padding="border").reshape(B, P, C, h, w)
    if combine == "max":
        parts = (warped * m[:, :, None]).amax(1)
    elif combine == "select":
        q = m.argmax(1, keepdim=True)  # [B,1,h,w]
        parts = warped.gather(1, q[:, :, None].expand(B, 1, C, h, w))[:, 0] * m.gather(1, q)
    else:
        raise ValueError(f"combine must be 'max' or 'select', got {combine!r}")
    body = m.amax(1, keepdim=True)
    return parts + (1 - body) * feat


def nearest_neighbour_loss(fake: torch.Tensor, real: torch.Tensor, n: int = 3) -> torch.Tensor:
    """Siarohin et al.'s NN loss on pixels: mean over pixels of min over the n x n neighbourhood of the real image
    of the L1 distance between the generated pixel and the real one (tolerates small misalignments)."""
    B, C, H, W = real.shape
    patches = F.unfold(F.pad(real, [n // 2] * 4, mode="replicate"), n).reshape(B, C, n * n, H, W)
    return (fake[:, :, None] - patches).abs().sum(1).amin(1).mean() / C


@dataclass
class DeformableGANConfig(PoseTransferConfig):
    sigma: float = field(default=2.0, metadata={"help": "pose heatmap / part mask width in pixels at 64 px"})
    nn_size: int = field(default=3, metadata={"help": "neighbourhood of the nearest-neighbour loss (odd)"})
    deformable: bool = field(default=True, metadata={"help": "deformable skips (false: plain skips, ablation)"})
    lambda_nn: float = field(default=100.0, metadata={"help": "weight of the nearest-neighbour loss"})
    warp_body: bool = field(default=True, metadata={
        "help": "with blend + deformable: the target body (its part masks) is the deformed source image, the "
                "generator's blend mask is zero there and it paints only what the body left (false: the mask may "
                "cover the body too)"})


@register("deformable-gan")
class DeformableGAN(PoseTransferMethod):
    description = "Deformable GAN: per-part affine deformable skip connections, nearest-neighbour loss"
    Config = DeformableGANConfig

    def __init__(self, cfg: DeformableGANConfig, info):
        super().__init__(cfg, info)
        self.source_enc = Encoder(3 + 33, cfg.width, cfg.depth)
        self.target_enc = Encoder(33, cfg.width, cfg.depth)
        self.decoder = Decoder(self.source_enc.chans, 2, 4 if cfg.blend else 3, 0.0 if cfg.region else -3.0)
        self.discriminator = PatchDiscriminator(3 + 3 + 3, cfg.d_width, cfg.d_layers)

    def parameters_for(self, phase):
        if phase == "d":
            return list(self.discriminator.parameters())
        return [p for m in (self.source_enc, self.target_enc, self.decoder) for p in m.parameters()]

    def _heatmaps(self, joints, observed, H, W):
        return gaussian_heatmaps(joints, H, W, self.cfg.sigma * H / 64, observed)

    def forward(self, src: torch.Tensor, src_joints: torch.Tensor, src_obs: torch.Tensor, tgt_joints: torch.Tensor,
                tgt_obs: torch.Tensor) -> torch.Tensor:
        """Source image [B,3,H,W] with its pose [B,33,2] (pixels) + observed [B,33], target pose -> [B,3,H,W]."""
        H, W = src.shape[-2:]
        fs = self.source_enc(torch.cat([src, self._heatmaps(src_joints, src_obs, H, W)], 1))
        ft = self.target_enc(self._heatmaps(tgt_joints, tgt_obs, H, W))
        base, body = src, None
        if self.cfg.deformable:
            # joints outside the image are the detector's guesses (Weizmann's cut-off feet): not used for the warps
            valid = (src_obs > 0) & (tgt_obs > 0) & inside_image(src_joints, H, W) & inside_image(tgt_joints, H, W)
            sj = pixel_to_normalized(torch.nan_to_num(src_joints), H, W)
            tj = pixel_to_normalized(torch.nan_to_num(tgt_joints), H, W)
            A = part_affines(sj, tj, valid)
            masks = part_masks(torch.nan_to_num(tgt_joints), valid, H, W, self.cfg.sigma * H / 64 * 1.5)
            fs = [deform_features(f, A, masks) for f in fs]
            base = deform_features(src, A, masks, "select")  # the same deformation on the pixels
            body = masks.amax(1, keepdim=True)
        region = self.region(src_joints, tgt_joints, H, W)
        if region is not None:
            base = region * base + (1 - region) * src  # parts that did not move: the source itself, unwarped
        if self.cfg.blend and self.cfg.warp_body and body is not None:
            region = (torch.ones_like(body) if region is None else region) * (1 - body)
        return blend_output(self.decoder([fs, ft]), base, self.cfg.blend, region)

    def generate(self, batch: dict) -> torch.Tensor:
        return self(batch["ref_image"], batch["ref_joints"], batch["ref_observed"], batch["joints"], batch["observed"])

    def generator_terms(self, fake, batch):
        nn_l = nearest_neighbour_loss(fake, batch["image"], self.cfg.nn_size)
        return self.cfg.lambda_nn * nn_l, {"nn": nn_l.item()}
