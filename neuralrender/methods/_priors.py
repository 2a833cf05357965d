"""What the prior methods share (not a method itself: the registry skips modules starting with "_").

`image_splits` / `image_info`: the float-image data of `vqvae` / `vqvae2`. `PixelDensityMethod`: the base of the
pixel-level autoregressive methods (`pixelcnn`, `gated-pixelcnn`, `pixelrnn`): the data (binarized or 256-level
Fashion-MNIST / LFW), the NLL loss, the metrics (nats per image and bits/dim on the test split beside the
independent-pixel baseline fitted on the train split) and the renders (samples, completions of top halves).
Each method only says which network to build (`build_net`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from neuralrender.data.images import FashionMNIST, LFWSubset
from neuralrender.losses.likelihood import categorical_nll
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics.density import bits_per_dim, independent_pixel_nll
from neuralrender.nn.masked import autoregressive_sample


@dataclass
class PixelPriorConfig:
    dataset: Literal["fashion-mnist", "lfw"] = field(default="fashion-mnist", metadata={"help": "which image set"})
    variant: Literal["binary", "256"] = field(default="binary", metadata={
        "help": "pixel values: binary (threshold 0.5) or 256 levels (a 256-way softmax per pixel)"})
    channels: int = field(default=32, metadata={"help": "hidden channels"})
    layers: int = field(default=6, metadata={"help": "hidden layers (residual blocks / gated layers / Row LSTMs)"})
    kernel: int = field(default=3, metadata={"help": "kernel size of the hidden masked convolutions"})
    first_kernel: int = field(default=7, metadata={"help": "kernel size of the first (mask A) convolution"})
    samples: int = field(default=16, metadata={"help": "images sampled per render"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature when sampling"})


def image_splits(dataset: str, data: str | None) -> tuple:
    """(train, test) datasets of (float image [C,H,W] in [0,1], label) of "fashion-mnist" or "lfw"."""
    ds = FashionMNIST if dataset == "fashion-mnist" else LFWSubset
    return ds(data, split="train"), ds(data, split="test")


def image_info(train) -> dict:
    """channels, size (H, W), the train split's mean image [C,H,W] and the number of classes."""
    return {"channels": train.images.shape[1], "size": tuple(train.images.shape[-2:]),
            "mean_image": train.images.float().mean(0), "num_classes": len(train.classes)}


def image_data(cfg, data: str | None) -> DataBundle:
    """Train/test splits of cfg.dataset in cfg.variant, with the facts the networks need.

    info: channels, size (H, W), levels (2 or 256), dims (C*H*W), num_classes, baseline_nll_nats (the
    independent-pixel histogram of the train split scored on the test split, nats per image).
    """
    ds = FashionMNIST if cfg.dataset == "fashion-mnist" else LFWSubset
    train, test = ds(data, split="train", variant=cfg.variant), ds(data, split="test", variant=cfg.variant)
    levels = 2 if cfg.variant == "binary" else 256
    c, h, w = train.images.shape[1:]
    base = independent_pixel_nll(train.images.long(), test.images.long(), levels).mean().item()
    return DataBundle(train, test, {"channels": c, "size": (h, w), "levels": levels, "dims": c * h * w,
                                    "num_classes": len(ds.classes), "baseline_nll_nats": base})


class PixelDensityMethod(Method):
    """Base of the pixel-level density methods: batches are (image, label) from `image_data`."""

    Config = PixelPriorConfig
    train_defaults = {"lr": 1e-3, "batch_size": 32, "steps": 2000, "eval_every": 500, "ckpt_every": 500,
                      "eval_batches": 0, "grad_clip": 1.0}
    conditional = False  # class-conditional (gated-pixelcnn sets it from its config)

    @classmethod
    def build_data(cls, cfg, data: str | None, seed: int) -> DataBundle:
        return image_data(cfg, data)

    def __init__(self, cfg, info):
        super().__init__(cfg, info)
        self.levels, self.dims = info["levels"], info["dims"]
        self.net = self.build_net(cfg, info)

    def build_net(self, cfg, info) -> torch.nn.Module:
        raise NotImplementedError

    def logits(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """x int [B,C,H,W] -> logits [B,C,K,H,W]."""
        return self.net(x, label=label if self.conditional else None)

    def nll(self, batch) -> torch.Tensor:
        """NLL in nats per image [B] of a batch (image, label)."""
        x, y = batch[0].long(), batch[1]
        return categorical_nll(self.logits(x, y), x)

    def loss(self, phase, batch, step):
        nll = self.nll(batch)
        loss = nll.mean() / self.dims  # nats per dimension: the same scale for any image size
        return loss, {"nll_nats": nll.mean().item(), "bits_per_dim": bits_per_dim(nll.mean().item(), self.dims)}

    @torch.no_grad()
    def evaluate(self, batch):
        nll = self.nll(batch).mean().item()
        base = self.info["baseline_nll_nats"]
        return {"nll_nats": nll, "bits_per_dim": bits_per_dim(nll, self.dims),
                "baseline_nll_nats": base, "baseline_bits_per_dim": bits_per_dim(base, self.dims)}

    @torch.no_grad()
    def sample(self, n: int, label: torch.Tensor | None = None, x: torch.Tensor | None = None, start_row: int = 0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """n images int [n,C,H,W] (label [n] for conditional models); x + start_row: complete x below that row."""
        dev = next(self.parameters()).device
        if x is None:
            h, w = self.info["size"]
            x = torch.zeros(n, self.info["channels"], h, w, dtype=torch.long, device=dev)
        return autoregressive_sample(self.net, x, label=label if self.conditional else None, start_row=start_row,
                                     temperature=self.cfg.temperature, generator=generator)

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """int values [B,C,H,W] -> float images in [0,1]."""
        return x.float() / (self.levels - 1)

    @torch.no_grad()
    def render(self, batch):
        x, y = batch[0].long(), batch[1]
        dev = x.device
        n = self.cfg.samples
        labels = torch.arange(n, device=dev) % self.info["num_classes"]
        out = {"samples": self.to_image(self.sample(n, labels))}
        k = min(8, x.shape[0])
        half = x.shape[-2] // 2
        done = self.sample(k, y[:k], x=x[:k], start_row=half)
        shown = x[:k].clone()
        shown[..., half:, :] = 0
        out["completions"] = self.to_image(torch.cat([shown, done, x[:k]], -1))  # given | completed | truth
        return out
