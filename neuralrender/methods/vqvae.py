"""`vqvae`: VQ-VAE (van den Oord et al. 2017, "Neural Discrete Representation Learning").

Encoder: two stride-2 4x4 convs, a 3x3 conv, residual blocks, a 1x1 conv to the code dimension D (28x28
images -> a 7x7 map). The map is vector-quantized (`nn.quantize.VectorQuantizer`: EMA codebook, straight-
through gradients, commitment loss, dead-code restarts). Decoder: the mirror image with transposed convs and a
sigmoid. Loss: MSE reconstruction + commitment. Eval: MSE, PSNR beside the train split's mean image, code
perplexity and distinct codes per eval batch. Renders: input | reconstruction pairs and the codebook-usage bar chart.

`encode(x) -> codes [B,h,w]` and `decode_codes(codes) -> images` are what `code-prior` uses on a loaded run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from neuralrender.methods._priors import image_info, image_splits
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr
from neuralrender.nn.generators import pad_to
from neuralrender.nn.quantize import VectorQuantizer, usage_plot
from neuralrender.nn.residual import down_encoder, up_decoder
from neuralrender.registry import register


@dataclass
class VQVAEConfig:
    dataset: Literal["fashion-mnist", "lfw"] = field(default="fashion-mnist", metadata={"help": "which image set"})
    hidden: int = field(default=64, metadata={"help": "channels of the encoder / decoder"})
    res_blocks: int = field(default=2, metadata={"help": "residual blocks in the encoder and in the decoder"})
    num_codes: int = field(default=128, metadata={"help": "codebook size K"})
    code_dim: int = field(default=16, metadata={"help": "code vector dimension D"})
    commitment: float = field(default=0.25, metadata={"help": "commitment loss weight beta"})
    ema_decay: float = field(default=0.99, metadata={"help": "EMA decay of the codebook (0 = codebook loss)"})
    restart_threshold: float = field(default=1.0, metadata={
        "help": "restart codes used less than this many times per batch (EMA; 0 = never)"})


@register("vqvae")
class VQVAE(Method):
    description = "VQ-VAE: discrete 7x7 codes of Fashion-MNIST / LFW with an EMA codebook"
    Config = VQVAEConfig
    train_defaults = {"lr": 1e-3, "batch_size": 32, "steps": 2000, "eval_every": 500, "ckpt_every": 500,
                      "eval_batches": 0}

    @classmethod
    def build_data(cls, cfg, data, seed):
        train, test = image_splits(cfg.dataset, data)
        return DataBundle(train, test, image_info(train))

    def __init__(self, cfg: VQVAEConfig, info):
        super().__init__(cfg, info)
        c = info["channels"]
        self.size = tuple(info["size"])
        self.encoder = down_encoder(c, cfg.hidden, cfg.res_blocks, cfg.code_dim)
        self.vq = VectorQuantizer(cfg.num_codes, cfg.code_dim, cfg.commitment, cfg.ema_decay, cfg.restart_threshold)
        self.decoder = up_decoder(cfg.code_dim, cfg.hidden, cfg.res_blocks, c)
        self.register_buffer("mean_image", info["mean_image"].float().clone())

    @property
    def code_size(self) -> tuple[int, int]:
        """(h, w) of the code map."""
        return tuple(-(-s // 4) for s in self.size)

    def forward(self, x: torch.Tensor):
        """x [B,C,H,W] in [0,1] -> (reconstruction [B,C,H,W] in [0,1], `Quantized`)."""
        q = self.vq(self.encoder(pad_to(x, 4)))
        return self._decode(q.quantized), q

    def _decode(self, zq: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.decoder(zq))
        return y[..., : self.size[0], : self.size[1]]

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,C,H,W] in [0,1] -> codes int64 [B,h,w]."""
        return self.vq.encode(self.encoder(pad_to(x, 4)))

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int [B,h,w] -> images [B,C,H,W] in [0,1]."""
        return self._decode(self.vq.lookup(codes))

    def loss(self, phase, batch, step):
        x = batch[0]
        y, q = self(x)
        mse = F.mse_loss(y, x)
        return mse + q.loss, {"mse": mse.item(), "vq_loss": q.loss.item(), "perplexity": q.perplexity.item()}

    @torch.no_grad()
    def evaluate(self, batch):
        x = batch[0]
        y, q = self(x)
        return {"mse": F.mse_loss(y, x).item(), "psnr": psnr(y, x).mean().item(),
                "psnr_mean_image": psnr(self.mean_image.expand_as(x), x).mean().item(),
                "perplexity": q.perplexity.item(), "codes_used": float((q.counts > 0).sum())}

    @torch.no_grad()
    def render(self, batch):
        x = batch[0]
        y, _ = self(x)
        return {"reconstructions": torch.cat([x, y], -1), "codebook_usage": usage_plot(self.vq.usage)}
