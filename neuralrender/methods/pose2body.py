"""`pose2body` (Chan et al., "Everybody Dance Now", ICCV 2019): person-specific pose -> body video.

What the paper does and what we keep:
- pix2pixHD generator (global generator + local enhancer, nn.generators.LocalEnhancer) on the drawn pose,
  multi-scale PatchGAN discriminators with feature matching, L1 standing in for VGG when its weights are absent;
- temporal smoothing: the generator also takes the previous GENERATED frame (zeros for the first frame). In
  training it runs twice, G(x_{t-1}, 0) -> y_{t-1} and G(x_t, y_{t-1}) -> y_t, and a temporal discriminator
  judges consecutive pairs (x_{t-1}, x_t, y_{t-1}, y_t) against the real pairs;
- ours on top (`--prev-blend`, default): G also predicts a mask blending its RGB with the previous generated frame
  (vid2vid's hallucination / warp mask, without a flow: the camera is static), so pixels that do not change carry
  over instead of being re-synthesised with fresh flicker; and vid2vid's flow-warping loss (`--lambda-warp`):
  |y_t - warp(y_{t-1}, flow)| with the real frames' DIS flow on the training pair;
- face GAN: a small U-Net adds a residual to the head box (from the pose's face points, graphics.skeleton.head_box),
  cropped and upsampled x`face_zoom`, with its own conditional discriminator; trained on the detached main
  output from step `face_start` on (the paper trains it after the main generator; one run here).
Changed: no coarse-to-fine stage (the 64x64 images need none); the face box is a fixed square per frame.
`--temporal false` gives the frame-by-frame pix2pixHD ablation on the same pose images.

Data: one Weizmann subject (`clip`), its last 20% frames held out (data.poses.PoseClipDataset); eval runs the
generator autoregressively over held-out runs of `eval_clip` frames and reports L1 / PSNR / SSIM, the temporal
warping error (x1000, DIS flow of the real frames) and the PSNR on the head box with and without the face GAN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from neuralrender.data.poses import PoseClipDataset, weizmann_clips
from neuralrender.graphics.skeleton import head_box
from neuralrender.graphics.warp import warp
from neuralrender.losses.gan import discriminator_loss, feature_matching_loss, generator_loss
from neuralrender.methods._cond2d import clip_metrics
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr
from neuralrender.nn.discriminators import MultiScaleDiscriminator, PatchDiscriminator
from neuralrender.nn.generators import LocalEnhancer
from neuralrender.nn.unet import UNet
from neuralrender.registry import register


@dataclass
class Pose2BodyConfig:
    clip: str = field(default="jack_00000004", metadata={"help": "the Weizmann subject (clip name) to learn"})
    size: int = field(default=64, metadata={"help": "image size (square)"})
    eval_clip: int = field(default=8, metadata={"help": "frames per held-out evaluation run (autoregressive)"})
    smooth_sigma: float = field(default=0.0, metadata={"help": "temporal smoothing of the poses (frames)"})
    temporal: bool = field(default=True, metadata={"help": "condition on the previous generated frame + temporal D"})
    prev_blend: bool = field(default=True, metadata={
        "help": "with temporal: G also predicts a mask blending its RGB with the previous generated frame, so "
                "unchanged pixels (static camera: the background, a still torso) carry over (ours)"})
    lambda_warp: float = field(default=50.0, metadata={
        "help": "with temporal: weight of the flow-warping loss |y_t - warp(y_{t-1}, real flow)| on the training "
                "pair (vid2vid's, with the real frames' DIS flow; 0 = off)"})
    face: bool = field(default=True, metadata={"help": "face-GAN residual refinement of the head box"})
    width: int = field(default=8, metadata={"help": "local enhancer channels (the global generator has 2x)"})
    n_blocks_global: int = field(default=3, metadata={"help": "residual blocks of the global generator"})
    n_blocks_local: int = field(default=1, metadata={"help": "residual blocks of the local enhancer"})
    num_d: int = field(default=2, metadata={"help": "discriminator scales"})
    d_width: int = field(default=16, metadata={"help": "discriminator channels of the first layer"})
    face_zoom: int = field(default=2, metadata={"help": "upsampling of the head crop for the face GAN"})
    face_start: int = field(default=0, metadata={"help": "step from which the face GAN trains"})
    gan_mode: Literal["lsgan", "vanilla", "hinge"] = field(default="lsgan", metadata={"help": "adversarial loss"})
    lambda_gan: float = field(default=1.0, metadata={"help": "weight of the adversarial terms"})
    lambda_feat: float = field(default=10.0, metadata={"help": "feature matching weight"})
    lambda_l1: float = field(default=100.0, metadata={"help": "L1 weight"})
    lambda_temporal: float = field(default=1.0, metadata={"help": "weight of the temporal adversarial term"})


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, out: int) -> torch.Tensor:
    """images [B,C,H,W], boxes int [B,4] (x0, y0, x1, y1) -> bilinear crops [B,C,out,out]."""
    return torch.cat([F.interpolate(images[b:b + 1, :, y0:y1, x0:x1], size=(out, out), mode="bilinear",
                                    align_corners=False) for b, (x0, y0, x1, y1) in enumerate(boxes.tolist())])


def paste_residual(images: torch.Tensor, residual: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Add residual crops [B,C,h,w] back into their boxes (area-resized to the box) -> [B,C,H,W] clamped to [0,1]."""
    outs = []
    for b, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        r = F.interpolate(residual[b:b + 1], size=(y1 - y0, x1 - x0), mode="area")
        outs.append(F.pad(r, (x0, images.shape[-1] - x1, y0, images.shape[-2] - y1)))
    return (images + torch.cat(outs)).clamp(0, 1)


@register("pose2body")
class Pose2Body(Method):
    description = "Everybody Dance Now: pose -> body (pix2pixHD G on pose + previous frame, temporal D, face GAN)"
    Config = Pose2BodyConfig
    phases = ("d", "g")
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 4, "steps": 2000, "eval_every": 500,
                      "ckpt_every": 500, "eval_batches": 0}

    @classmethod
    def build_data(cls, cfg, data, seed):
        clips = [c for c in weizmann_clips(cfg.size, smooth_sigma=cfg.smooth_sigma) if c.name == cfg.clip]
        if not clips:
            from neuralrender.data.poses import WEIZMANN_CLIPS
            from neuralrender.errors import NeuralRenderError

            raise NeuralRenderError(f"unknown clip {cfg.clip!r}; valid: {', '.join(WEIZMANN_CLIPS)}")
        train = PoseClipDataset(clips, "train", clip_len=2)
        val = PoseClipDataset(clips, "val", clip_len=cfg.eval_clip, hop=cfg.eval_clip)
        n = len(clips[0]) - math.ceil(0.2 * len(clips[0]))  # the train frames
        return DataBundle(train, val, {"cond_channels": 3, "mean_image": clips[0].frames[:n].mean(0)})

    def __init__(self, cfg: Pose2BodyConfig, info):
        super().__init__(cfg, info)
        c = info["cond_channels"]
        self.blend_prev = cfg.temporal and cfg.prev_blend
        self.generator = LocalEnhancer(c + (3 if cfg.temporal else 0), 4 if self.blend_prev else 3, cfg.width, 3,
                                       cfg.n_blocks_global, cfg.n_blocks_local)
        self.discriminator = MultiScaleDiscriminator(c + 3, cfg.num_d, cfg.d_width, 3)
        self.temporal_d = PatchDiscriminator(2 * (c + 3), cfg.d_width, 3) if cfg.temporal else None
        if cfg.face:
            self.face_g = UNet(c + 3, 3, width=cfg.width, depth=3, out_act="tanh")
            torch.nn.init.zeros_(self.face_g.head.weight)  # the refinement starts as the identity
            torch.nn.init.zeros_(self.face_g.head.bias)
            self.face_d = PatchDiscriminator(c + 3, cfg.d_width, 2)
        self.register_buffer("mean_image", info["mean_image"].float().clone())
        self._cache = None

    def parameters_for(self, phase):
        if phase == "d":
            mods = [self.discriminator, self.temporal_d, getattr(self, "face_d", None)]
        else:
            mods = [self.generator, getattr(self, "face_g", None)]
        return [p for m in mods if m is not None for p in m.parameters()]

    # ---- generation ---------------------------------------------------------------------------------
    def forward(self, cond: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        """cond [B,C,H,W] (+ previous generated frame [B,3,H,W], zeros when None) -> frame [B,3,H,W].
        With prev_blend: mask * rgb + (1 - mask) * prev (just rgb for a first frame)."""
        if not self.cfg.temporal:
            return self.generator(cond)
        y = self.generator(torch.cat([cond, torch.zeros_like(cond[:, :3]) if prev is None else prev], 1))
        if not self.blend_prev:
            return y
        if prev is None:
            return y[:, :3]
        m = y[:, 3:4]
        return m * y[:, :3] + (1 - m) * prev

    def face_crop_size(self) -> int:
        return 8 * self.cfg.face_zoom * max(1, self.cfg.size // 32)

    def refine_face(self, frame: torch.Tensor, cond: torch.Tensor, joints: torch.Tensor) -> torch.Tensor:
        """Face-GAN residual on the head box: frame [B,3,H,W] -> refined [B,3,H,W] (identity without a face GAN)."""
        if not self.cfg.face:
            return frame
        boxes = head_box(joints, *frame.shape[-2:])
        s = self.face_crop_size()
        res = self.face_g(torch.cat([crop_boxes(cond, boxes, s), crop_boxes(frame, boxes, s)], 1))
        return paste_residual(frame, res, boxes)

    @torch.no_grad()
    def generate_clip(self, cond: torch.Tensor, joints: torch.Tensor | None = None, face: bool = True):
        """cond [B,T,C,H,W] -> video [B,T,3,H,W], autoregressive (each frame sees the previous OUTPUT, before
        the face refinement, as in training); with joints [B,T,33,2] and face=True the head boxes are refined."""
        prev, frames = None, []
        for t in range(cond.shape[1]):
            y = self(cond[:, t], prev)
            prev = y
            if face and joints is not None:
                y = self.refine_face(y, cond[:, t], joints[:, t])
            frames.append(y)
        return torch.stack(frames, 1)

    # ---- training -----------------------------------------------------------------------------------
    def _generate(self, batch, step):
        if self._cache is None or self._cache[0] != step:
            cond = batch["cond"]
            y0 = self(cond[:, 0])
            y1 = self(cond[:, 1], y0) if self.cfg.temporal else self(cond[:, 1])
            self._cache = (step, y0, y1)
        return self._cache[1:]

    def _face_active(self, step):
        return self.cfg.face and step >= self.cfg.face_start

    def loss(self, phase, batch, step):
        cond, real = batch["cond"], batch["image"]
        y0, y1 = self._generate(batch, step)
        fakes = torch.cat([y0, y1])
        conds, reals = torch.cat([cond[:, 0], cond[:, 1]]), torch.cat([real[:, 0], real[:, 1]])
        pair = lambda a, b: torch.cat([cond[:, 0], cond[:, 1], a, b], 1)  # noqa: E731
        face = self._face_active(step)
        if face:
            boxes = head_box(batch["joints"][:, 1], *real.shape[-2:])
            s = self.face_crop_size()
            c_crop, r_crop = crop_boxes(cond[:, 1], boxes, s), crop_boxes(real[:, 1], boxes, s)
            f_crop = crop_boxes(y1.detach(), boxes, s)
            refined = (f_crop + self.face_g(torch.cat([c_crop, f_crop], 1))).clamp(0, 1)
        if phase == "d":
            d = discriminator_loss(self.discriminator(torch.cat([conds, reals], 1)),
                                   self.discriminator(torch.cat([conds, fakes.detach()], 1)), self.cfg.gan_mode)
            logs = {"d": d.item()}
            if self.temporal_d is not None:
                dt = discriminator_loss(self.temporal_d(pair(real[:, 0], real[:, 1])),
                                        self.temporal_d(pair(y0.detach(), y1.detach())), self.cfg.gan_mode)
                d, logs["d_temporal"] = d + dt, dt.item()
            if face:
                df = discriminator_loss(self.face_d(torch.cat([c_crop, r_crop], 1)),
                                        self.face_d(torch.cat([c_crop, refined.detach()], 1)), self.cfg.gan_mode)
                d, logs["d_face"] = d + df, df.item()
            return d, logs
        self._cache = None
        d_fake = self.discriminator(torch.cat([conds, fakes], 1))
        with torch.no_grad():
            d_real = self.discriminator(torch.cat([conds, reals], 1))
        adv = generator_loss(d_fake, self.cfg.gan_mode)
        fm = feature_matching_loss(d_real, d_fake, self.cfg.lambda_feat)
        l1 = F.l1_loss(fakes, reals)
        total = self.cfg.lambda_gan * adv + fm + self.cfg.lambda_l1 * l1
        logs = {"g_adv": adv.item(), "feat_match": fm.item(), "l1": l1.item()}
        if self.temporal_d is not None:
            gt = generator_loss(self.temporal_d(pair(y0, y1)), self.cfg.gan_mode)
            total, logs["g_temporal"] = total + self.cfg.lambda_temporal * gt, gt.item()
        if self.cfg.temporal and self.cfg.lambda_warp > 0:
            m = batch["flow_mask"][:, 1]
            lw = ((y1 - warp(y0, batch["flow"][:, 1], padding="border")).abs() * m).sum() / (3 * m.sum()).clamp_min(1)
            total, logs["warp"] = total + self.cfg.lambda_warp * lw, lw.item()
        if face:
            gf = generator_loss(self.face_d(torch.cat([c_crop, refined], 1)), self.cfg.gan_mode)
            lf = F.l1_loss(refined, r_crop)
            total = total + self.cfg.lambda_gan * gf + self.cfg.lambda_l1 * lf
            logs.update(g_face=gf.item(), l1_face=lf.item())
        return total, logs

    # ---- evaluation and renders ---------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch):
        raw = self.generate_clip(batch["cond"])
        out = clip_metrics(raw, batch, self.mean_image)
        real = batch["image"]
        out["l1"] = (raw - real).abs().mean().item()
        j = batch["joints"].flatten(0, 1)
        boxes = head_box(j, *real.shape[-2:])
        s = self.face_crop_size()
        r_crop = crop_boxes(real.flatten(0, 1), boxes, s)
        out["psnr_head_noface"] = psnr(crop_boxes(raw.flatten(0, 1), boxes, s), r_crop).mean().item()
        if self.cfg.face:
            refined = self.refine_face(raw.flatten(0, 1), batch["cond"].flatten(0, 1), j)
            out["psnr_head"] = psnr(crop_boxes(refined, boxes, s), r_crop).mean().item()
            out["psnr_face"] = psnr(refined, real.flatten(0, 1)).mean().item()
        return out

    @torch.no_grad()
    def render(self, batch):
        video = self.generate_clip(batch["cond"], batch["joints"])
        return {"video": torch.cat([batch["cond"], video, batch["image"]], -1),
                "frames": torch.cat([batch["cond"][:, 0], video[:, 0], batch["image"][:, 0]], 0)}
