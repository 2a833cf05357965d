"""`vqvae2`: two-level VQ-VAE (Razavi et al. 2019, "Generating Diverse High-Fidelity Images with VQ-VAE-2").

Images are padded to a multiple of 8 (28 -> 32). The bottom encoder maps them to features at 1/4 size (8x8);
the top encoder takes those to 1/8 (4x4) and quantizes them (top codes, global structure). A top decoder
brings the top codes back to 1/4, where they are concatenated with the bottom features and quantized again
(bottom codes, local detail, conditioned on the top). The decoder reads both levels (the top one upsampled by a
transposed conv). Loss: MSE + both commitment losses. Renders: input | reconstruction | top-only reconstruction
(bottom codes replaced by the bottom code that is most common) and one codebook-usage chart per level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.methods._priors import image_info, image_splits
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr
from neuralrender.nn.generators import pad_to
from neuralrender.nn.quantize import VectorQuantizer, usage_plot
from neuralrender.nn.residual import down_encoder, up_decoder
from neuralrender.registry import register


@dataclass
class VQVAE2Config:
    dataset: Literal["fashion-mnist", "lfw"] = field(default="fashion-mnist", metadata={"help": "which image set"})
    hidden: int = field(default=64, metadata={"help": "channels of the encoders / decoders"})
    res_blocks: int = field(default=2, metadata={"help": "residual blocks per encoder / decoder"})
    num_codes_top: int = field(default=64, metadata={"help": "top codebook size"})
    num_codes_bottom: int = field(default=128, metadata={"help": "bottom codebook size"})
    code_dim: int = field(default=16, metadata={"help": "code vector dimension (both levels)"})
    commitment: float = field(default=0.25, metadata={"help": "commitment loss weight beta"})
    ema_decay: float = field(default=0.99, metadata={"help": "EMA decay of the codebooks (0 = codebook loss)"})
    restart_threshold: float = field(default=1.0, metadata={
        "help": "restart codes used less than this many times per batch (EMA; 0 = never)"})


@register("vqvae2")
class VQVAE2(Method):
    description = "VQ-VAE-2: two-level (4x4 top, 8x8 bottom) discrete codes of Fashion-MNIST / LFW"
    Config = VQVAE2Config
    train_defaults = {"lr": 1e-3, "batch_size": 32, "steps": 2000, "eval_every": 500, "ckpt_every": 500,
                      "eval_batches": 0}

    @classmethod
    def build_data(cls, cfg, data, seed):
        train, test = image_splits(cfg.dataset, data)
        return DataBundle(train, test, image_info(train))

    def __init__(self, cfg: VQVAE2Config, info):
        super().__init__(cfg, info)
        c, h, d = info["channels"], cfg.hidden, cfg.code_dim
        self.size = tuple(info["size"])
        self.enc_b = down_encoder(c, h, cfg.res_blocks, h, downsamplings=2)  # features at 1/4
        self.enc_t = down_encoder(h, h, cfg.res_blocks, d, downsamplings=1)  # 1/4 -> 1/8
        self.vq_t = VectorQuantizer(cfg.num_codes_top, d, cfg.commitment, cfg.ema_decay, cfg.restart_threshold)
        self.dec_t = up_decoder(d, h, cfg.res_blocks, d, upsamplings=1)  # top codes -> 1/4, to condition the bottom
        self.pre_b = nn.Conv2d(h + d, d, 1)
        self.vq_b = VectorQuantizer(cfg.num_codes_bottom, d, cfg.commitment, cfg.ema_decay, cfg.restart_threshold)
        self.up_t = nn.ConvTranspose2d(d, d, 4, 2, 1)
        self.decoder = up_decoder(2 * d, h, cfg.res_blocks, c, upsamplings=2)
        self.register_buffer("mean_image", info["mean_image"].float().clone())

    @property
    def code_sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((h, w) of the top codes, (h, w) of the bottom codes)."""
        pad = [-(-s // 8) * 8 for s in self.size]
        return (pad[0] // 8, pad[1] // 8), (pad[0] // 4, pad[1] // 4)

    def quantize(self, x: torch.Tensor):
        """x [B,C,H,W] -> (top `Quantized` [B,D,H/8,W/8], bottom `Quantized` [B,D,H/4,W/4])."""
        fb = self.enc_b(pad_to(x, 8))
        qt = self.vq_t(self.enc_t(fb))
        qb = self.vq_b(self.pre_b(torch.cat([fb, self.dec_t(qt.quantized)], 1)))
        return qt, qb

    def decode_latents(self, zt: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B,D,h,w] (top) and [B,D,2h,2w] (bottom) -> images [B,C,H,W] in [0,1]."""
        y = torch.sigmoid(self.decoder(torch.cat([zb, self.up_t(zt)], 1)))
        return y[..., : self.size[0], : self.size[1]]

    def forward(self, x: torch.Tensor):
        """x [B,C,H,W] -> (reconstruction [B,C,H,W], top `Quantized`, bottom `Quantized`)."""
        qt, qb = self.quantize(x)
        return self.decode_latents(qt.quantized, qb.quantized), qt, qb

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B,C,H,W] -> (top codes int64 [B,h,w], bottom codes int64 [B,2h,2w])."""
        fb = self.enc_b(pad_to(x, 8))
        zt = self.enc_t(fb)
        ct = self.vq_t.encode(zt)
        cb = self.vq_b.encode(self.pre_b(torch.cat([fb, self.dec_t(self.vq_t.lookup(ct))], 1)))
        return ct, cb

    @torch.no_grad()
    def decode_codes(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """top int [B,h,w], bottom int [B,2h,2w] -> images [B,C,H,W] in [0,1]."""
        return self.decode_latents(self.vq_t.lookup(top), self.vq_b.lookup(bottom))

    def loss(self, phase, batch, step):
        x = batch[0]
        y, qt, qb = self(x)
        mse = F.mse_loss(y, x)
        return mse + qt.loss + qb.loss, {"mse": mse.item(), "vq_loss": (qt.loss + qb.loss).item(),
                                         "perplexity_top": qt.perplexity.item(),
                                         "perplexity_bottom": qb.perplexity.item()}

    @torch.no_grad()
    def evaluate(self, batch):
        x = batch[0]
        y, qt, qb = self(x)
        return {"mse": F.mse_loss(y, x).item(), "psnr": psnr(y, x).mean().item(),
                "psnr_mean_image": psnr(self.mean_image.expand_as(x), x).mean().item(),
                "perplexity_top": qt.perplexity.item(), "perplexity_bottom": qb.perplexity.item(),
                "codes_used_top": float((qt.counts > 0).sum()), "codes_used_bottom": float((qb.counts > 0).sum())}

    @torch.no_grad()
    def render(self, batch):
        x = batch[0]
        y, qt, qb = self(x)
        common = torch.full_like(qb.codes, int(self.vq_b.usage.argmax()))
        top_only = self.decode_latents(qt.quantized, self.vq_b.lookup(common))
        return {"reconstructions": torch.cat([x, y, top_only], -1),
                "codebook_usage_top": usage_plot(self.vq_t.usage),
                "codebook_usage_bottom": usage_plot(self.vq_b.usage)}
