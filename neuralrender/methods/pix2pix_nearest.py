"""`pix2pix-nearest`: the image-to-image baseline of the DeepVoxels paper.

A pix2pix generator (the project's 2D U-Net) maps the nearest training image, concatenated with the camera
delta from that view to the target view (relative rotation, 9 numbers, and translation in units of the
scene box's half-size, 3 numbers, as constant channels), to the target image; a conditional PatchGAN judges
(input image, output) pairs. Loss: l1_weight * L1 + adversarial (LSGAN by default). Same data and views as
`deepvoxels` (data.view_pairs); at test time the input is the test camera's nearest training image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from neuralrender.data.view_pairs import camera_path, load_view_pairs, nearest_views
from neuralrender.errors import NeuralRenderError
from neuralrender.losses.gan import discriminator_loss, generator_loss
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr, ssim
from neuralrender.nn.discriminators import PatchDiscriminator
from neuralrender.nn.unet import UNet
from neuralrender.registry import register


@dataclass
class Pix2PixNearestConfig:
    image_size: int = field(default=128, metadata={"help": "longer image side to train at (integer downscale of the data)"})
    width: int = field(default=32, metadata={"help": "first-level channels of the U-Net generator"})
    depth: int = field(default=5, metadata={"help": "downsamplings of the U-Net generator"})
    d_width: int = field(default=32, metadata={"help": "first-level channels of the PatchGAN"})
    d_layers: int = field(default=3, metadata={"help": "stride-2 layers of the PatchGAN (3 = 70x70 patches)"})
    l1_weight: float = field(default=100.0, metadata={"help": "weight of the L1 term (pix2pix: 100)"})
    adv_weight: float = field(default=1.0, metadata={"help": "weight of the adversarial term (0 = L1 only)"})
    gan_mode: str = field(default="lsgan", metadata={"help": "vanilla | lsgan | hinge"})
    bounds: str = field(default="auto", metadata={"help": "scene box (only its size is used: camera-delta units)"})
    bounds_margin: float = field(default=1.0, metadata={"help": "scale of the auto box"})


def camera_delta(R_src: torch.Tensor, t_src: torch.Tensor, R_tgt: torch.Tensor, t_tgt: torch.Tensor,
                 scale: float) -> torch.Tensor:
    """Relative pose source -> target camera: [B,12] = (R_t R_s^T flattened, (t_t - R_rel t_s) / scale)."""
    R_rel = R_tgt @ R_src.transpose(1, 2)
    t_rel = t_tgt - (R_rel @ t_src.unsqueeze(-1)).squeeze(-1)
    return torch.cat([R_rel.flatten(1), t_rel / scale], 1)


@register("pix2pix-nearest")
class Pix2PixNearest(Method):
    description = "baseline: pix2pix U-Net + PatchGAN from the nearest training view (+ camera delta) to the target"
    Config = Pix2PixNearestConfig
    phases = ("d", "g")
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 4, "steps": 3000, "eval_every": 500,
                      "ckpt_every": 250, "eval_batches": 0}

    @classmethod
    def build_data(cls, cfg: Pix2PixNearestConfig, data: str | None, seed: int) -> DataBundle:
        train, test, info = load_view_pairs(data, cfg.image_size, 1, cfg.bounds, cfg.bounds_margin)
        return DataBundle(train, test, info)

    def __init__(self, cfg: Pix2PixNearestConfig, info):
        super().__init__(cfg, info)
        self.width, self.height = int(info["width"]), int(info["height"])
        self.scale = float((torch.as_tensor(info["bounds_max"]) - torch.as_tensor(info["bounds_min"])).max() / 2)
        self.register_buffer("mean_image", torch.as_tensor(info["mean_image"]).float().clone())
        import math

        depth = max(1, min(cfg.depth, int(math.log2(min(self.width, self.height))) - 1))  # bottleneck >= 2x2
        self.generator = UNet(3 + 12, 3, width=cfg.width, depth=depth, max_width=256, dropout=0.0)
        self.disc = PatchDiscriminator(3 + 3, width=cfg.d_width, n_layers=cfg.d_layers)

    def forward(self, source: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """source [B,3,H,W], camera delta [B,12] -> target view [B,3,H,W] in [0,1]."""
        B, _, H, W = source.shape
        return self.generator(torch.cat([source, delta.view(B, 12, 1, 1).expand(B, 12, H, W)], 1))

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        src = batch["src_image"][:, 0]
        delta = camera_delta(batch["src_R"][:, 0], batch["src_t"][:, 0], batch["R"], batch["t"], self.scale)
        return src, delta

    def parameters_for(self, phase: str):
        prefix = "disc." if phase == "d" else "generator."
        return [p for n, p in self.named_parameters() if n.startswith(prefix)]

    def loss(self, phase, batch, step):
        src, delta = self._inputs(batch)
        target = batch["image"]
        if phase == "d":
            with torch.no_grad():
                fake = self(src, delta)
            d = discriminator_loss(self.disc(torch.cat([src, target], 1)), self.disc(torch.cat([src, fake], 1)),
                                   self.cfg.gan_mode)
            return d, {"d_loss": d.item()}
        fake = self(src, delta)
        l1 = (fake - target).abs().mean()
        loss = self.cfg.l1_weight * l1
        logs = {"l1": l1.item()}
        if self.cfg.adv_weight > 0:
            adv = generator_loss(self.disc(torch.cat([src, fake], 1)), self.cfg.gan_mode)
            loss = loss + self.cfg.adv_weight * adv
            logs["g_adv"] = adv.item()
        return loss, logs

    @torch.no_grad()
    def evaluate(self, batch):
        src, delta = self._inputs(batch)
        target = batch["image"]
        out = self(src, delta)
        return {"psnr": psnr(out, target).mean().item(), "ssim": ssim(out, target).mean().item(),
                "psnr_nearest_view": psnr(src, target).mean().item(),
                "psnr_mean_image": psnr(self.mean_image.expand_as(target), target).mean().item(),
                "psnr_mean_color": psnr(self.mean_image.mean((1, 2), keepdim=True).expand_as(target), target).mean().item()}

    @torch.no_grad()
    def render(self, batch):
        src, delta = self._inputs(batch)
        return {"source": src, "prediction": self(src, delta), "target": batch["image"]}

    @torch.no_grad()
    def render_cameras(self, cams, train_pairs, chunk: int = 8) -> torch.Tensor:
        """Any cameras [T] -> [T,3,H,W]: each from its nearest training image and the camera delta."""
        sources = train_pairs.sources
        idx = nearest_views(cams.to("cpu"), sources.cameras, 1)[:, 0]
        dev = self.mean_image.device
        outs = []
        for i in range(0, cams.batch_size, chunk):
            j = idx[i:i + chunk]
            src = torch.stack([sources[int(k)]["image"] for k in j]).to(dev)
            sc = sources.cameras
            delta = camera_delta(sc.R[j].to(dev), sc.t[j].to(dev), cams.R[i:i + chunk].to(dev),
                                 cams.t[i:i + chunk].to(dev), self.scale)
            outs.append(self(src, delta))
        return torch.cat(outs)

    @torch.no_grad()
    def render_run(self, bundle: DataBundle, out, path: str | None = None, frames: int = 60) -> list:
        from neuralrender.train.outputs import save_renders

        centre = (torch.as_tensor(bundle.info["bounds_min"]) + torch.as_tensor(bundle.info["bounds_max"])) / 2
        cams = camera_path(bundle.info["train_cameras"], path, frames, centre)
        if (cams.width, cams.height) != (self.width, self.height):
            raise NeuralRenderError(f"render path cameras are {cams.width}x{cams.height}, the model renders "
                                    f"{self.width}x{self.height}")
        rgb = self.render_cameras(cams, bundle.train)
        name = Path(str(path or "orbit")).stem
        return save_renders({f"{name}_rgb": rgb[None]}, Path(out), "render")
