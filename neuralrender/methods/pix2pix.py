"""`pix2pix` (Isola et al. 2017): a conditional GAN with a U-Net generator and a PatchGAN discriminator on
(condition, image) pairs, L1 + adversarial loss. Frames are synthesised independently.

Tasks (neuralrender.data.conditions): labels -> scene, edges -> face, pose -> body; held-out = last 20% of
every sequence. Baseline of the learning test: the train frames' mean image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from neuralrender.losses.gan import discriminator_loss, generator_loss
from neuralrender.methods._cond2d import (
    CondTaskConfig,
    build_cond_data,
    clip_metrics,
    cond_to_rgb,
    side_by_side,
)
from neuralrender.methods.base import Method
from neuralrender.nn.discriminators import PatchDiscriminator
from neuralrender.nn.unet import UNet
from neuralrender.registry import register


@dataclass
class Pix2PixConfig(CondTaskConfig):
    width: int = field(default=32, metadata={"help": "U-Net channels of the first level"})
    depth: int = field(default=5, metadata={"help": "U-Net stride-2 levels"})
    dropout: float = field(default=0.0, metadata={"help": "dropout in the innermost decoder blocks (paper: 0.5)"})
    d_width: int = field(default=32, metadata={"help": "PatchGAN channels of the first layer"})
    d_layers: int = field(default=3, metadata={"help": "PatchGAN stride-2 layers (3 = the 70x70 PatchGAN)"})
    lambda_l1: float = field(default=100.0, metadata={"help": "weight of the L1 term"})


@register("pix2pix")
class Pix2Pix(Method):
    description = "pix2pix: U-Net generator + PatchGAN, L1 + GAN, per frame (labels/edges/pose -> image)"
    Config = Pix2PixConfig
    phases = ("d", "g")
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 8, "steps": 2000, "eval_every": 500,
                      "ckpt_every": 500, "eval_batches": 0}

    @classmethod
    def build_data(cls, cfg, data, seed):
        return build_cond_data(cfg, train_clip=1, seed=seed)

    def __init__(self, cfg: Pix2PixConfig, info):
        super().__init__(cfg, info)
        c = info["cond_channels"]
        self.generator = UNet(c, 3, width=cfg.width, depth=cfg.depth, norm="instance", act="lrelu",
                              up="transpose", out_act="sigmoid", dropout=cfg.dropout)
        self.discriminator = PatchDiscriminator(c + 3, cfg.d_width, cfg.d_layers)
        self.register_buffer("mean_image", info["mean_image"].float().clone())

    def parameters_for(self, phase):
        return list((self.discriminator if phase == "d" else self.generator).parameters())

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """cond [B,C,H,W] -> image [B,3,H,W] in [0,1]."""
        return self.generator(cond)

    def loss(self, phase, batch, step):
        cond, real = batch["cond"][:, 0], batch["image"][:, 0]
        fake = self.step_output(step, phase, lambda: self(cond))
        if phase == "d":
            d = discriminator_loss(self.discriminator(torch.cat([cond, real], 1)),
                                   self.discriminator(torch.cat([cond, fake.detach()], 1)), self.cfg.gan_mode)
            return d, {"d": d.item()}
        adv = generator_loss(self.discriminator(torch.cat([cond, fake], 1)), self.cfg.gan_mode)
        l1 = F.l1_loss(fake, real)
        return self.cfg.lambda_gan * adv + self.cfg.lambda_l1 * l1, {"g_adv": adv.item(), "l1": l1.item()}

    @torch.no_grad()
    def generate_clip(self, cond: torch.Tensor, inst: torch.Tensor | None = None) -> torch.Tensor:
        """cond [B,T,C,H,W] -> video [B,T,3,H,W] (frame by frame; inst is unused, as in pix2pixhd's signature)."""
        B, T = cond.shape[:2]
        return self(cond.flatten(0, 1)).reshape(B, T, 3, *cond.shape[-2:])

    @torch.no_grad()
    def evaluate(self, batch):
        return clip_metrics(self.generate_clip(batch["cond"]), batch, self.mean_image)

    @torch.no_grad()
    def render(self, batch):
        cond = batch["cond"]
        video = self.generate_clip(cond)
        crgb = cond_to_rgb(cond.flatten(0, 1), self.cfg.task).reshape(video.shape)
        return {"video": side_by_side(crgb, video, batch["image"]),
                "frames": torch.cat([crgb[:, 0], video[:, 0], batch["image"][:, 0]], 0)}
