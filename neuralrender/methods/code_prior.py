"""`code-prior`: a Gated PixelCNN over the code maps of a trained `vqvae` or `vqvae2` run (van den Oord et al.
2017, sec. 4; Razavi et al. 2019, sec. 3.2).

`--vqvae-run DIR` names the VQ-VAE run (loaded with `train.trainer.load_run`, its own data and config): every
image of its train / test splits is encoded once to a code map [h,w] (7x7 for Fashion-MNIST). For a `vqvae2`
run, `--level top` models the 4x4 top codes and `--level bottom` the 8x8 bottom codes conditioned on the top
codes (one-hot, upsampled to the bottom size, a spatial condition); a bottom prior given `--top-prior-run` (a
code-prior run over the top level of the same VQ-VAE-2) samples whole images: top codes, then bottom codes.
The prior models
p(codes) autoregressively with learned code embeddings, optionally conditioned on the class (`--condition
class`) or on a condition image (`--condition image`: the input image average-pooled to the code-map size, a
coarse sketch the prior fills in with detail). Ancestral sampling draws code maps, the VQ-VAE decoder turns
them into images. Scored by the test NLL over codes (nats per map, bits per code) beside the unigram code
histogram of the train split and the uniform prior log K.

The VQ-VAE's weights are not part of this run's checkpoint: loading this run loads the VQ-VAE run again.
Renders: input | decoded true codes; samples (per class, or condition | sample | original); a top-level prior
of a VQ-VAE-2 decodes its samples with every bottom code set to the most used one (the top level alone).
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
    vqvae_run: str = field(default="", metadata={"help": "run directory of a trained `vqvae` or `vqvae2` (required)"})
    level: Literal["top", "bottom"] = field(default="top", metadata={
        "help": "vqvae2 runs: which code level to model (bottom: conditioned on the top codes)"})
    top_prior_run: str = field(default="", metadata={
        "help": "level bottom: a code-prior run over the top codes, to sample whole images in renders"})
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
    """(codes int64 [1,h,w], label, condition image [C,h,w], image [C,H,W], top codes int64 [1,ht,wt]) of one split.

    top codes: the VQ-VAE-2 top level a bottom-level prior is conditioned on ([1,1,1] zeros otherwise).
    """

    def __init__(self, codes, labels, cond, images, top):
        self.codes, self.labels, self.cond, self.images, self.top = codes, labels, cond, images, top

    def __len__(self):
        return self.codes.shape[0]

    def __getitem__(self, i):
        return self.codes[i], self.labels[i], self.cond[i], self.images[i], self.top[i]


@torch.no_grad()
def encode_split(vq, images: torch.Tensor, level: str, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """images [N,C,H,W] -> (codes int64 [N,1,h,w] of `level`, top codes [N,1,ht,wt] or zeros [N,1,1,1])."""
    dev = next(vq.parameters()).device
    codes, tops = [], []
    for i in range(0, len(images), batch):
        c = vq.encode(images[i:i + batch].to(dev))
        if isinstance(c, tuple):  # vqvae2: (top, bottom)
            tops.append(c[0].cpu())
            c = c[0] if level == "top" else c[1]
        codes.append(c.cpu())
    codes = torch.cat(codes)[:, None].long()
    top = torch.cat(tops)[:, None].long() if (tops and level == "bottom") else torch.zeros(len(codes), 1, 1, 1, dtype=torch.long)
    return codes, top


def load_vqvae(run_dir: str):
    """(model, data bundle, method name) of a `vqvae` / `vqvae2` run on the CPU, or a ConfigError."""
    from neuralrender.train.trainer import load_run

    if not run_dir:
        raise ConfigError("code-prior: --vqvae-run is required (the run directory of a trained `vqvae` or `vqvae2`)")
    p = Path(run_dir).expanduser()
    if not (p / "config.yaml").is_file():
        raise ConfigError(f"code-prior: --vqvae-run {p} is not a run directory (no config.yaml)")
    model, bundle, _, meta = load_run(p, device="cpu")
    if meta.get("method") not in ("vqvae", "vqvae2"):
        raise ConfigError(f"code-prior: --vqvae-run {p} is a '{meta.get('method')}' run; a 'vqvae' or 'vqvae2' run is needed")
    return model, bundle, meta["method"]


@register("code-prior")
class CodePrior(Method):
    description = "Gated PixelCNN prior over the codes of a trained VQ-VAE run (class / image conditional)"
    Config = CodePriorConfig
    train_defaults = {"lr": 1e-3, "batch_size": 32, "steps": 2000, "eval_every": 500, "ckpt_every": 500,
                      "eval_batches": 0, "grad_clip": 1.0}

    @classmethod
    def build_data(cls, cfg: CodePriorConfig, data, seed):
        vq, bundle, kind = load_vqvae(cfg.vqvae_run)
        if kind == "vqvae" and cfg.level != "top":
            raise ConfigError("code-prior: --level bottom needs a `vqvae2` run (a `vqvae` has one level)")
        if cfg.top_prior_run and cfg.level != "bottom":
            raise ConfigError("code-prior: --top-prior-run is for --level bottom")
        if kind == "vqvae":
            hw, k = vq.code_size, vq.vq.num_codes
        else:
            hw = vq.code_sizes[0 if cfg.level == "top" else 1]
            k = (vq.vq_t if cfg.level == "top" else vq.vq_b).num_codes
        splits = []
        for ds in (bundle.train, bundle.val):
            codes, top = encode_split(vq, ds.images, cfg.level)
            cond = F.adaptive_avg_pool2d(ds.images.float(), hw)
            splits.append(CodeDataset(codes, ds.labels, cond, ds.images.float(), top))
        dims = hw[0] * hw[1]
        info = {"num_codes": k, "code_size": hw, "dims": dims, "num_classes": bundle.info["num_classes"],
                "image_channels": bundle.info["channels"], "vqvae": vq, "vqvae_kind": kind,
                "num_top_codes": vq.vq_t.num_codes if kind == "vqvae2" and cfg.level == "bottom" else 0,
                "unigram_nll_nats": unigram_nll(splits[0].codes, splits[1].codes, k).mean().item(),
                "uniform_nll_nats": uniform_nll(dims, k)}
        return DataBundle(splits[0], splits[1], info)

    def __init__(self, cfg: CodePriorConfig, info):
        super().__init__(cfg, info)
        self.dims = info["dims"]
        cond_ch = (info["image_channels"] if cfg.condition == "image" else 0) + info["num_top_codes"]
        self.net = GatedPixelCNN(1, info["num_codes"], channels=cfg.channels, layers=cfg.layers, kernel=cfg.kernel,
                                 first_kernel=cfg.first_kernel, embed=cfg.embed,
                                 num_classes=info["num_classes"] if cfg.condition == "class" else 0,
                                 cond_channels=cond_ch)
        self._vqvae = [info["vqvae"]]  # a list: not a submodule, so not trained and not in this checkpoint
        self._top_prior = []  # loaded on first use (renders of a bottom prior given --top-prior-run)

    def vqvae(self):
        """The loaded VQ-VAE, on this model's device."""
        dev = next(self.net.parameters()).device
        vq = self._vqvae[0]
        if next(vq.parameters()).device != dev:
            self._vqvae[0] = vq = vq.to(dev)
        return vq

    def spatial_cond(self, cond_image: torch.Tensor | None, top: torch.Tensor | None) -> torch.Tensor | None:
        """The spatial condition [B,S,h,w]: the pooled image (condition image) and/or the one-hot top codes."""
        parts = []
        if self.cfg.condition == "image":
            parts.append(cond_image.float())
        if self.info["num_top_codes"]:
            h, w = self.info["code_size"]
            onehot = F.one_hot(top[:, 0].long(), self.info["num_top_codes"]).permute(0, 3, 1, 2).float()
            parts.append(F.interpolate(onehot, size=(h, w), mode="nearest"))
        return torch.cat(parts, 1) if parts else None

    def _cond(self, batch):
        label = batch[1] if self.cfg.condition == "class" else None
        return label, self.spatial_cond(batch[2], batch[4])

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
        """n code maps int64 [n,h,w] by ancestral sampling; label [n] and the spatial condition cond [n,S,h,w]
        (see `spatial_cond`) as the config asks."""
        h, w = self.info["code_size"]
        x = torch.zeros(n, 1, h, w, dtype=torch.long, device=next(self.parameters()).device)
        return autoregressive_sample(self.net, x, label=label, cond=cond, temperature=self.cfg.temperature,
                                     generator=generator)[:, 0]

    def top_prior(self):
        """The code-prior model of --top-prior-run (on this model's device), or None."""
        if not self.cfg.top_prior_run:
            return None
        if not self._top_prior:
            from neuralrender.train.trainer import load_run

            model, _, _, meta = load_run(Path(self.cfg.top_prior_run).expanduser(), device="cpu")
            if meta.get("method") != "code-prior" or model.cfg.level != "top":
                raise ConfigError(f"code-prior: --top-prior-run {self.cfg.top_prior_run} is not a top-level code-prior run")
            self._top_prior.append(model)
        self._top_prior[0] = self._top_prior[0].to(next(self.parameters()).device)
        return self._top_prior[0]

    def decode(self, codes: torch.Tensor, top: torch.Tensor | None = None) -> torch.Tensor:
        """Code maps [B,h,w] of this prior's level -> images [B,C,H,W] (the top codes [B,ht,wt] for a bottom prior;
        a top prior's codes are decoded with every bottom code set to the most used one)."""
        vq = self.vqvae()
        if self.info["vqvae_kind"] == "vqvae":
            return vq.decode_codes(codes)
        if self.cfg.level == "bottom":
            return vq.decode_codes(top, codes)
        hb, wb = vq.code_sizes[1]
        common = torch.full((codes.shape[0], hb, wb), int(vq.vq_b.usage.argmax()), dtype=torch.long, device=codes.device)
        return vq.decode_codes(codes, common)

    @torch.no_grad()
    def render(self, batch):
        codes, labels, cond, images, top = batch[0], batch[1], batch[2], batch[3], batch[4]
        out = {"reconstructions": torch.cat([images, self.decode(codes[:, 0], top[:, 0])], -1)}
        klass = self.cfg.condition == "class"
        if self.info["num_top_codes"]:  # the bottom level of a VQ-VAE-2: given the true top codes, then sampled ones
            n, lab = images.shape[0], (labels if klass else None)
            s = self.sample_codes(n, label=lab, cond=self.spatial_cond(cond, top))
            out["samples_given_top"] = torch.cat([images, self.decode(s, top[:, 0])], -1)  # original | sample
            tp = self.top_prior()
            if tp is not None:
                t_cond = F.adaptive_avg_pool2d(images.float(), tp.info["code_size"])
                t = tp.sample_codes(n, label=labels if tp.cfg.condition == "class" else None,
                                    cond=tp.spatial_cond(t_cond, None))
                b = self.sample_codes(n, label=lab, cond=self.spatial_cond(cond, t[:, None]))
                out["samples"] = self.decode(b, t)
        elif self.cfg.condition == "image":
            s = self.decode(self.sample_codes(images.shape[0], cond=self.spatial_cond(cond, None)))
            shown = F.interpolate(cond.float(), size=images.shape[-2:], mode="nearest")
            out["samples"] = torch.cat([shown, s, images], -1)  # condition | sample | original
        else:
            n = self.cfg.samples
            lab = (torch.arange(n, device=codes.device) % self.info["num_classes"]) if klass else None
            out["samples"] = self.decode(self.sample_codes(n, label=lab))
        return out
