"""`pix2pixhd` (Wang et al., CVPR 2018): coarse-to-fine generator (global generator G1 + local enhancer G2),
multi-scale PatchGAN discriminators, feature matching, instance boundary maps in the condition, and an
instance-wise feature encoder for multimodal outputs (a style code per instance, sampled at test time).

Coarse-to-fine training as in the paper is a flag: for the first `global_steps` steps only G1 is trained, at
half resolution; then G1 and G2 together at full resolution. The default is 0 (joint from the start): at our
CPU budgets the G1-only steps cost the full-resolution model steps (docs/methods/pix2pixhd.md). G1's depth is
scaled to our resolution (`n_down_global` 2: an 8x8 bottleneck at 64², where the paper's 4 at 1024x512 leaves
64x32; 3 at 64² left 4x4 and blocky outputs). Its upsamplings are resize convolutions (`up` 'bilinear': x2
bilinear + 3x3 conv) instead of the paper's 3x3 stride-2 transposed convs, whose uneven overlap left an 8-pixel
grid in the outputs ('transpose' keeps the paper's). The VGG perceptual term is used only when VGG16 weights are on
disk (neuralrender.losses.reconstruction); otherwise the run says it is off and an L1 term (`lambda_l1`) stands
in for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from neuralrender.errors import ConfigError
from neuralrender.losses.gan import discriminator_loss, feature_matching_loss, generator_loss
from neuralrender.losses.reconstruction import PerceptualLoss, perceptual_status
from neuralrender.methods._cond2d import (
    CondTaskConfig,
    build_cond_data,
    clip_metrics,
    cond_to_rgb,
    side_by_side,
)
from neuralrender.methods.base import Method
from neuralrender.nn.discriminators import MultiScaleDiscriminator
from neuralrender.nn.encoders import FeatureBank, InstanceFeatureEncoder
from neuralrender.nn.generators import LocalEnhancer, pixel_coords
from neuralrender.nn.neural_texture import ScreenTexture
from neuralrender.registry import register


@dataclass
class Pix2PixHDConfig(CondTaskConfig):
    width: int = field(default=16, metadata={"help": "local enhancer channels (the global generator has 2x)"})
    n_down_global: int = field(default=2, metadata={
        "help": "stride-2 convs of the global generator (2: an 8x8 bottleneck at 64^2; the paper's 4 at 1024x512 leaves 64x32)"})
    n_blocks_global: int = field(default=4, metadata={"help": "residual blocks of the global generator"})
    n_blocks_local: int = field(default=3, metadata={"help": "residual blocks of the local enhancer (paper: 3)"})
    up: Literal["transpose", "bilinear", "nearest", "shuffle"] = field(default="bilinear", metadata={
        "help": "generator upsampling: a resize conv (bilinear/nearest x2 + 3x3 conv; default), 'transpose' (the "
                "paper's 3x3 stride-2 transposed convs, which leave a checkerboard/grid pattern) or 'shuffle' "
                "(sub-pixel conv: 3x3 conv to 4x channels + PixelShuffle, ICNR init; not in the paper)"})
    coords: bool = field(default=True, metadata={
        "help": "append x, y pixel coordinates in [-1,1] to the generator input (CoordConv; not in the paper)"})
    coord_octaves: int = field(default=0, metadata={
        "help": "with coords: also sin/cos Fourier features of x and y at this many octaves (periods W, W/2, ... "
                "pixels; 0 = plain x, y; not in the paper)"})
    skip: bool = field(default=False, metadata={
        "help": "local enhancer: concatenate the stem's full-resolution features before the head (not in the paper)"})
    canvas: int = field(default=0, metadata={
        "help": "channels of a learned screen-space texture (nn.neural_texture.ScreenTexture, 'canvas') appended to "
                "the generator input next to x, y: a per-pixel learned input for a static camera's background (body "
                "configuration, session 8; 0 = off; not in the paper; meaningless for a moving camera)"})
    canvas_lr_scale: float = field(default=10.0, metadata={
        "help": "the canvas learns this many times faster than the networks (NeuralTexture's lr_scale; 10 = the "
                "neural-textures method's default)"})
    global_steps: int = field(default=0, metadata={
        "help": "steps training only G1 at half resolution first (the paper's coarse-to-fine schedule; 0 = joint from the start)"})
    num_d: int = field(default=2, metadata={"help": "discriminator scales"})
    d_width: int = field(default=32, metadata={"help": "discriminator channels of the first layer"})
    d_layers: int = field(default=3, metadata={"help": "stride-2 layers per discriminator"})
    feat_channels: int = field(default=3, metadata={"help": "instance feature channels (0 = no encoder)"})
    lambda_feat: float = field(default=10.0, metadata={
        "help": "discriminator feature matching weight (paper: 10, with its per-layer weights: 4 x the layer mean)"})
    lambda_vgg: float = field(default=10.0, metadata={"help": "VGG perceptual weight (only with weights on disk)"})
    lambda_l1: float = field(default=100.0, metadata={"help": "L1 weight (stands in for VGG when it is off)"})
    vgg_weights: str = field(default="", metadata={"help": "VGG16 weights file ('' = the default location)"})



@register("pix2pixhd")
class Pix2PixHD(Method):
    description = "pix2pixHD: global generator + local enhancer, multi-scale D, feature matching, instance features"
    Config = Pix2PixHDConfig
    phases = ("d", "g")
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 8, "steps": 2000, "eval_every": 500,
                      "ckpt_every": 500, "eval_batches": 0}
    legacy_config = {"up": "transpose", "coords": False}  # runs saved before these fields existed

    @classmethod
    def build_data(cls, cfg, data, seed):
        return build_cond_data(cfg, train_clip=1, seed=seed)

    def __init__(self, cfg: Pix2PixHDConfig, info):
        super().__init__(cfg, info)
        c, fc = info["cond_channels"], cfg.feat_channels
        if cfg.canvas < 0:
            raise ConfigError(f"config key 'canvas': channels must be >= 0 (0 = off), got {cfg.canvas}")
        extra = (2 + 4 * cfg.coord_octaves if cfg.coords else 0) + cfg.canvas
        self.generator = LocalEnhancer(c + fc + extra, 3, cfg.width, cfg.n_down_global, cfg.n_blocks_global,
                                       cfg.n_blocks_local, up=cfg.up, skip=cfg.skip)
        self.canvas = ScreenTexture(cfg.canvas, cfg.size, lr_scale=cfg.canvas_lr_scale) if cfg.canvas > 0 else None
        self.discriminator = MultiScaleDiscriminator(c + 3, cfg.num_d, cfg.d_width, cfg.d_layers)
        self.encoder = InstanceFeatureEncoder(3, fc) if fc > 0 else None
        self.bank = FeatureBank(max(1, info.get("num_classes", 1)), fc) if fc > 0 else None
        self.register_buffer("mean_image", info["mean_image"].float().clone())
        vgg = PerceptualLoss.from_path(cfg.vgg_weights or None) if cfg.lambda_vgg > 0 else None
        object.__setattr__(self, "vgg", vgg)  # not a submodule: fixed weights stay out of checkpoints
        self.perceptual_note = perceptual_status(cfg.vgg_weights or None)

    def parameters_for(self, phase):
        if phase == "d":
            return list(self.discriminator.parameters())
        enc = list(self.encoder.parameters()) if self.encoder is not None else []
        canvas = list(self.canvas.parameters()) if self.canvas is not None else []
        return list(self.generator.parameters()) + enc + canvas

    # ---- generation ---------------------------------------------------------------------------------
    def features(self, real: torch.Tensor | None, inst: torch.Tensor, generator=None) -> torch.Tensor | None:
        """Instance features from the real image (training) or sampled from the bank (real=None)."""
        if self.encoder is None:
            return None
        if real is not None:
            return self.encoder(real, inst)
        return self.bank.sample(inst, generator)

    def mean_features(self, inst: torch.Tensor) -> torch.Tensor | None:
        """The bank's mean feature per class painted over the instances (deterministic, for evaluation)."""
        if self.encoder is None:
            return None
        filled = self.bank.count.clamp(max=self.bank.size)
        codes = self.bank.bank.sum(1) / filled.clamp_min(1)[:, None]
        from neuralrender.nn.encoders import paint_instances

        return paint_instances(codes[None].expand(inst.shape[0], -1, -1), inst.clamp(max=codes.shape[0] - 1))

    def forward(self, cond: torch.Tensor, feat: torch.Tensor | None = None, coarse: bool = False) -> torch.Tensor:
        """cond [B,C,H,W] (+ instance features [B,F,H,W]) -> image [B,3,H,W] (coarse: G1 only, [B,3,H/2,W/2])."""
        x = cond if feat is None else torch.cat([cond, feat], 1)
        if self.cfg.coords:
            x = torch.cat([x, pixel_coords(x, self.cfg.coord_octaves)], 1)
        if self.canvas is not None:
            x = torch.cat([x, self.canvas(x)], 1)
        return self.generator.global_only(x) if coarse else self.generator(x)

    def _coarse(self, step: int) -> bool:
        return self.training and step < self.cfg.global_steps

    def loss(self, phase, batch, step):
        cond, real, inst = batch["cond"][:, 0], batch["image"][:, 0], batch["inst"][:, 0]
        coarse = self._coarse(step)
        def generate():
            feat = self.features(real, inst)
            if feat is not None:
                self.bank.add(feat.detach(), inst)
            return self(cond, feat, coarse)

        fake = self.step_output(step, phase, generate)
        if coarse:
            cond, real = LocalEnhancer.downsample(cond), LocalEnhancer.downsample(real)
        if phase == "d":
            d = discriminator_loss(self.discriminator(torch.cat([cond, real], 1)),
                                   self.discriminator(torch.cat([cond, fake.detach()], 1)), self.cfg.gan_mode)
            return d, {"d": d.item()}
        d_fake = self.discriminator(torch.cat([cond, fake], 1))
        with torch.no_grad():
            d_real = self.discriminator(torch.cat([cond, real], 1))
        adv = generator_loss(d_fake, self.cfg.gan_mode)
        fm = feature_matching_loss(d_real, d_fake, self.cfg.lambda_feat, layers="pix2pixhd")  # the paper's weights
        l1 = F.l1_loss(fake, real)
        total = self.cfg.lambda_gan * adv + fm + self.cfg.lambda_l1 * l1
        logs = {"g_adv": adv.item(), "feat_match": fm.item(), "l1": l1.item()}
        if self.vgg is not None:
            vgg = self.vgg.to(fake.device)(fake, real)
            total = total + self.cfg.lambda_vgg * vgg
            logs["vgg"] = vgg.item()
        return total, logs

    # ---- evaluation and renders ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_clip(self, cond: torch.Tensor, inst: torch.Tensor | None = None, generator=None) -> torch.Tensor:
        """cond [B,T,C,H,W], inst [B,T,1,H,W] -> [B,T,3,H,W]; features: the class means (generator=None) or
        one sampled style per instance (a torch.Generator)."""
        B, T = cond.shape[:2]
        if inst is None:
            inst = torch.zeros(B, T, 1, *cond.shape[-2:], dtype=torch.long, device=cond.device)
        c, i = cond.flatten(0, 1), inst.flatten(0, 1)
        feat = self.mean_features(i) if generator is None else self.features(None, i, generator)
        return self(c, feat).reshape(B, T, 3, *cond.shape[-2:])

    @torch.no_grad()
    def evaluate(self, batch):
        return clip_metrics(self.generate_clip(batch["cond"], batch["inst"]), batch, self.mean_image)

    @torch.no_grad()
    def sample_styles(self, cond: torch.Tensor, inst: torch.Tensor, n: int = 4, seed: int = 0) -> torch.Tensor:
        """n outputs of one condition [1,C,H,W] with different sampled instance styles -> [n,3,H,W]."""
        g = torch.Generator().manual_seed(seed)
        outs = [self(cond, self.features(None, inst, g)) for _ in range(n)]
        return torch.cat(outs, 0)

    @torch.no_grad()
    def render(self, batch):
        cond, inst = batch["cond"], batch["inst"]
        video = self.generate_clip(cond, inst)
        crgb = cond_to_rgb(cond.flatten(0, 1), self.cfg.task).reshape(video.shape)
        out = {"video": side_by_side(crgb, video, batch["image"]),
               "frames": torch.cat([crgb[:, 0], video[:, 0], batch["image"][:, 0]], 0)}
        if self.encoder is not None:
            out["styles"] = torch.cat([crgb[:1, 0], self.sample_styles(cond[:1, 0], inst[:1, 0], 5)], 0)
        return out
