"""`skeleton-cgan` (Yan et al., "Skeleton-aided Articulated Motion Generation", ACM MM 2017).

Generator: a Siamese U-Net. One encoder reads the appearance reference (reference image + its drawn skeleton),
a second encoder of the same shape reads the target skeleton; the decoder upsamples the concatenated
bottlenecks with skip connections from BOTH encoders. The appearance encoder doubles as the frame embedding
for the triplet loss (the Siamese part): the embeddings of two generated neighbouring frames (t-1, t) of one
clip must be closer than frame t is to another reference frame (another item of the batch: a random frame of
a random training clip) by the margin `margin`, which keeps the generated sequence temporally continuous.
With --blend (default, our addition) the decoder also outputs a mask that blends its RGB with the reference
image, so the static background and unmoved body parts are copied; with --region (default) that mask is
restricted to where the skeleton moved (_motion.motion_region), so outside it the output is the reference.
Discriminator: a PatchGAN on the triplet
(reference image, target skeleton, frame). Loss: lambda_l1 L1 + adversarial + lambda_triplet triplet.

Not person specific: trained on (reference, target) pairs within the training clips, it animates an unseen
reference image (the held-out clip's first frame) with that clip's skeletons. Baseline: copying the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.methods._motion import (
    Decoder,
    Encoder,
    PoseTransferConfig,
    PoseTransferMethod,
    blend_output,
)
from neuralrender.nn.discriminators import PatchDiscriminator
from neuralrender.registry import register


class SiameseUNet(nn.Module):
    """(reference image [B,3,H,W], reference skeleton [B,C,H,W], target skeleton [B,C,H,W]) -> frame [B,3,H,W].
    H, W must be multiples of 2**depth."""

    def __init__(self, cond_channels: int = 3, width: int = 32, depth: int = 4, blend: bool = True,
                 mask_bias: float = -3.0):
        super().__init__()
        self.blend = blend
        self.appearance = Encoder(3 + cond_channels, width, depth)
        self.pose = Encoder(cond_channels, width, depth)
        self.decoder = Decoder(self.appearance.chans, 2, 4 if blend else 3, mask_bias)

    def forward(self, ref: torch.Tensor, ref_cond: torch.Tensor, cond: torch.Tensor,
                region: torch.Tensor | None = None) -> torch.Tensor:
        """region [B,1,H,W] (with blend): where the output may differ from the reference (`motion_region`)."""
        y = self.decoder([self.appearance(torch.cat([ref, ref_cond], 1)), self.pose(cond)])
        return blend_output(y, ref, self.blend, region)

    def embed(self, image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.appearance.embed(torch.cat([image, cond], 1))


@dataclass
class SkeletonCGANConfig(PoseTransferConfig):
    lambda_l1: float = field(default=100.0, metadata={"help": "weight of the L1 term"})
    lambda_triplet: float = field(default=1.0, metadata={"help": "weight of the triplet loss on frame embeddings"})
    margin: float = field(default=1.0, metadata={"help": "triplet margin"})


@register("skeleton-cgan")
class SkeletonCGAN(PoseTransferMethod):
    description = "skeleton cGAN: Siamese U-Net (reference + skeleton), triplet D, L1 + GAN + triplet loss"
    Config = SkeletonCGANConfig

    def __init__(self, cfg: SkeletonCGANConfig, info):
        super().__init__(cfg, info)
        c = info["cond_channels"]
        self.generator = SiameseUNet(c, cfg.width, cfg.depth, cfg.blend, 0.0 if cfg.region else -3.0)
        self.discriminator = PatchDiscriminator(3 + c + 3, cfg.d_width, cfg.d_layers)

    def parameters_for(self, phase):
        return list((self.discriminator if phase == "d" else self.generator).parameters())

    def forward(self, ref, ref_cond, cond, ref_joints=None, joints=None):
        """Reference [B,3,H,W] + its skeleton, target skeleton [B,C,H,W] -> [B,3,H,W]. With --region the reference
        and target joints [B,33,2] (pixels) give the region that may change (`motion_region`)."""
        if self.cfg.blend and self.cfg.region and (ref_joints is None or joints is None):
            raise NeuralRenderError("skeleton-cgan with --region needs the reference and target joints")
        region = self.region(ref_joints, joints, *ref.shape[-2:]) if ref_joints is not None else None
        return self.generator(ref, ref_cond, cond, region)

    def generate(self, batch: dict) -> torch.Tensor:
        return self(batch["ref_image"], batch["ref_cond"], batch["cond"], batch["ref_joints"], batch["joints"])

    def generator_terms(self, fake, batch):
        ref, cond, real = batch["ref_image"], batch["cond"], batch["image"]
        total = self.cfg.lambda_l1 * F.l1_loss(fake, real)
        logs = {}
        if self.cfg.lambda_triplet > 0 and ref.shape[0] > 1:
            prev = self(ref, batch["ref_cond"], batch["prev_cond"], batch["ref_joints"], batch["prev_joints"])
            anchor = self.generator.embed(fake, cond)
            pos = self.generator.embed(prev, batch["prev_cond"])
            neg = self.generator.embed(ref.roll(1, 0), batch["ref_cond"].roll(1, 0))  # another clip / time
            trip = F.triplet_margin_loss(anchor, pos, neg, margin=self.cfg.margin)
            total = total + self.cfg.lambda_triplet * trip
            logs["triplet"] = trip.item()
        return total, logs
