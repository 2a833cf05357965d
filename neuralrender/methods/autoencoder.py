"""`autoencoder`: a convolutional image autoencoder on Fashion-MNIST (or the LFW subset).

The framework's smallest real method: it exercises data, trainer, checkpoints, resume, eval and renders.
Baseline for its learning test: the train split's mean image (PSNR of predicting it for every test image).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.data.images import FashionMNIST, LFWSubset
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr, ssim
from neuralrender.nn.blocks import conv_block
from neuralrender.registry import register


@dataclass
class AutoencoderConfig:
    dataset: Literal["fashion-mnist", "lfw"] = field(default="fashion-mnist", metadata={"help": "which image set"})
    width: int = field(default=32, metadata={"help": "channels of the first conv layer"})
    latent: int = field(default=16, metadata={"help": "channels of the 7x7 (or 6x6) bottleneck"})
    norm: Literal["group", "batch", "none"] = field(default="group", metadata={"help": "normalization layer"})


@register("autoencoder")
class Autoencoder(Method):
    description = "convolutional image autoencoder on Fashion-MNIST / LFW (the framework's toy method)"
    Config = AutoencoderConfig
    train_defaults = {"lr": 1e-3, "batch_size": 32, "steps": 600, "eval_every": 200, "ckpt_every": 200}

    @classmethod
    def build_data(cls, cfg: AutoencoderConfig, data: str | None, seed: int) -> DataBundle:
        ds = FashionMNIST if cfg.dataset == "fashion-mnist" else LFWSubset
        train, test = ds(data, split="train"), ds(data, split="test")
        mean = train.images.float().mean(0)
        return DataBundle(train, test, {"channels": train.images.shape[1], "size": train.images.shape[-1], "mean_image": mean})

    def __init__(self, cfg: AutoencoderConfig, info):
        super().__init__(cfg, info)
        c, w = info["channels"], cfg.width
        self.size = info["size"]
        self.encoder = nn.Sequential(
            conv_block(c, w, norm=cfg.norm), conv_block(w, w * 2, stride=2, norm=cfg.norm),
            conv_block(w * 2, w * 2, stride=2, norm=cfg.norm), nn.Conv2d(w * 2, cfg.latent, 1))
        self.decoder = nn.Sequential(
            conv_block(cfg.latent, w * 2, norm=cfg.norm), conv_block(w * 2, w * 2, stride=2, norm=cfg.norm, transpose=True),
            conv_block(w * 2, w, stride=2, norm=cfg.norm, transpose=True), nn.Conv2d(w, c, 3, padding=1))
        self.register_buffer("mean_image", info["mean_image"].float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] in [0,1] -> reconstruction logits-free output in [0,1] of the same size."""
        pad = (-x.shape[-1]) % 4
        xp = F.pad(x, (0, pad, 0, pad), mode="replicate") if pad else x
        y = torch.sigmoid(self.decoder(self.encoder(xp)))
        return y[..., : x.shape[-2], : x.shape[-1]]

    def loss(self, phase, batch, step):
        x = batch[0]
        y = self(x)
        loss = F.mse_loss(y, x)
        return loss, {"mse": loss.item()}

    @torch.no_grad()
    def evaluate(self, batch):
        x = batch[0]
        y = self(x)
        base = self.mean_image.expand_as(x)
        return {"psnr": psnr(y, x).mean().item(), "ssim": ssim(y, x).mean().item(),
                "psnr_mean_image": psnr(base, x).mean().item()}

    @torch.no_grad()
    def render(self, batch):
        x = batch[0]
        return {"reconstructions": torch.cat([x, self(x)], 0)}
