"""`code-prior`: a Gated PixelCNN over the code maps of a trained `vqvae` run (van den Oord et al. 2017, sec. 4).

`--vqvae-run DIR` names the VQ-VAE run (loaded with `train.trainer.load_run`, its own data and config): every
image of its train / test splits is encoded once to a code map [h,w] (7x7 for Fashion-MNIST). The prior models
p(codes) autoregressively with learned code embeddings, optionally conditioned on the class (`--condition
class`) or on a condition image (`--condition image`: the input image average-pooled to the code-map size, a
coarse sketch the prior fills in with detail). Ancestral sampling draws code maps, the VQ-VAE decoder turns
them into images. Scored by the test NLL over codes (nats per map, bits per code) beside the unigram code
histogram of the train split and the uniform prior log K.

The VQ-VAE's weights are not part of this run's checkpoint: loading this run loads the VQ-VAE run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuralrender.errors import ConfigError
from neuralrender.losses.likelihood import categorical_nll
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics.density import bits_per_dim, uniform_nll, unigram_nll
from neuralrender.nn.masked import GatedPixelCNN, autoregressive_sample
from neuralrender.registry import register


@dataclass
class CodePriorConfig:
    vqvae_run: str = field(default="", metadata={"help": "run directory of a trained `vqvae` (required)"})
    condition: Literal["none", "class", "image"] = field(default="class", metadata={
        "help": "condition on nothing, the class label, or the image pooled to the code-map size"})
    channels: int = field(default=64, metadata={"help": "hidden channels of the gated PixelCNN"})
    layers: int = field(default=6, metadata={"help": "gated layers"})
    kernel: int = field(default=3, metadata={"help": "kernel size of the gated layers"})
    first_kernel: int = field(default=5, metadata={"help": "kernel size of the first layer"})
    embed: int = field(default=32, metadata={"help": "dimension of the learned code embedding"})
    samples: int = field(default=16, metadata={"help": "images sampled per render"})
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature when sampling"})


class CodeDataset(Dataset):
    """(codes int64 [1,h,w], label, condition image [C,h,w], image [C,H,W]) of one split."""

    def __init__(self, codes, labels, cond, images):
        self.codes, self.labels, self.cond, self.images = codes, labels, cond, images

    def __len__(self):
        return self.codes.shape[0]

    def __getitem__(self, i):
        return self.codes[i], self.labels[i], self.cond[i], self.images[i]


@torch.no_grad()
def encode_split(vq, images: torch.Tensor, code_hw: tuple[int, int], batch: int = 256):
    """images [N,C,H,W] in [0,1] -> (codes int64 [N,1,h,w], condition images [N,C,h,w])."""
    dev = next(vq.parameters()).device
    codes = torch.cat([vq.encode(images[i:i + batch].to(dev)).cpu() for i in range(0, len(images), batch)])
    cond = F.adaptive_avg_pool2d(images.float(), code_hw)
    return codes[:, None].long(), cond


def load_vqvae(run_dir: str):
    """(model, data bundle) of a `vqvae` run on the CPU, or a ConfigError naming the field."""
    from neuralrender.train.trainer import load_run

    if not run_dir:
        raise ConfigError("code-prior: --vqvae-run is required (the run directory of a trained `vqvae`)")
    p = Path(run_dir).expanduser()
    if not (p / "config.yaml").is_file():
        raise ConfigError(f"code-prior: --vqvae-run {p} is not a run directory (no config.yaml)")
    model, bundle, _, meta = load_run(p, device="cpu")
    if meta.get("method") != "vqvae":
        raise ConfigError(f"code-prior: --vqvae-run {p} is a '{meta.get('method')}' run; a 'vqvae' run is needed")
    return model, bundle


@register("code-prior")
class CodePrior(Method):
    description = "Gated PixelCNN prior over the codes of a trained VQ-VAE run (class / image conditional)"
    Config = CodePriorConfig
    train_defaults = {"lr": 1e-3, "batch_size": 32, "steps": 2000, "eval_every": 500, "ckpt_every": 500,
                      "eval_batches": 0, "grad_clip": 1.0}

    @classmethod
    def build_data(cls, cfg: CodePriorConfig, data, seed):
        vq, bundle = load_vqvae(cfg.vqvae_run)
        hw = vq.code_size
        splits = []
        for ds in (bundle.train, bundle.val):
            codes, cond = encode_split(vq, ds.images, hw)
            splits.append(CodeDataset(codes, ds.labels, cond, ds.images.float()))
        k = vq.vq.num_codes
        dims = hw[0] * hw[1]
        info = {"num_codes": k, "code_size": hw, "dims": dims, "num_classes": bundle.info["num_classes"],
                "image_channels": bundle.info["channels"], "vqvae": vq,
                "unigram_nll_nats": unigram_nll(splits[0].codes, splits[1].codes, k).mean().item(),
                "uniform_nll_nats": uniform_nll(dims, k)}
        return DataBundle(splits[0], splits[1], info)

    def __init__(self, cfg: CodePriorConfig, info):
        super().__init__(cfg, info)
        self.dims = info["dims"]
        self.net = GatedPixelCNN(1, info["num_codes"], channels=cfg.channels, layers=cfg.layers, kernel=cfg.kernel,
                                 first_kernel=cfg.first_kernel, embed=cfg.embed,
                                 num_classes=info["num_classes"] if cfg.condition == "class" else 0,
                                 cond_channels=info["image_channels"] if cfg.condition == "image" else 0)
        self._vqvae = [info["vqvae"]]  # a list: not a submodule, so not trained and not in this checkpoint

    def vqvae(self):
        """The loaded VQ-VAE, on this model's device."""
        dev = next(self.net.parameters()).device
        vq = self._vqvae[0]
        if next(vq.parameters()).device != dev:
            self._vqvae[0] = vq = vq.to(dev)
        return vq

    def _cond(self, batch):
        label = batch[1] if self.cfg.condition == "class" else None
        cond = batch[2].float() if self.cfg.condition == "image" else None
        return label, cond

    def nll(self, batch) -> torch.Tensor:
        """NLL in nats per code map [B]."""
        codes = batch[0].long()
        label, cond = self._cond(batch)
        return categorical_nll(self.net(codes, label=label, cond=cond), codes)

    def loss(self, phase, batch, step):
        nll = self.nll(batch)
        return nll.mean() / self.dims, {"nll_nats": nll.mean().item(), "bits_per_code": bits_per_dim(nll.mean().item(), self.dims)}

    @torch.no_grad()
    def evaluate(self, batch):
        nll = self.nll(batch).mean().item()
        uni, flat = self.info["unigram_nll_nats"], self.info["uniform_nll_nats"]
        return {"nll_nats": nll, "bits_per_code": bits_per_dim(nll, self.dims),
                "unigram_nll_nats": uni, "unigram_bits_per_code": bits_per_dim(uni, self.dims),
                "uniform_nll_nats": flat}

    @torch.no_grad()
    def sample_codes(self, n: int, label=None, cond=None, generator=None) -> torch.Tensor:
        """n code maps int64 [n,h,w] by ancestral sampling (label [n] / cond [n,C,h,w] per `condition`)."""
        h, w = self.info["code_size"]
        x = torch.zeros(n, 1, h, w, dtype=torch.long, device=next(self.parameters()).device)
        return autoregressive_sample(self.net, x, label=label, cond=cond, temperature=self.cfg.temperature,
                                     generator=generator)[:, 0]

    @torch.no_grad()
    def render(self, batch):
        codes, cond, images = batch[0], batch[2], batch[3]
        vq = self.vqvae()
        out = {"reconstructions": torch.cat([images, vq.decode_codes(codes[:, 0])], -1)}
        if self.cfg.condition == "image":
            s = vq.decode_codes(self.sample_codes(images.shape[0], cond=cond.float()))
            shown = F.interpolate(cond.float(), size=images.shape[-2:], mode="nearest")
            out["samples"] = torch.cat([shown, s, images], -1)  # condition | sample | original
        else:
            n = self.cfg.samples
            lab = torch.arange(n, device=codes.device) % self.info["num_classes"]
            out["samples"] = vq.decode_codes(self.sample_codes(n, label=lab if self.cfg.condition == "class" else None))
        return out
