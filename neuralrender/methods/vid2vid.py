"""`vid2vid` (Wang et al., NeurIPS 2018): sequential conditional video synthesis.

Frame t comes from the conditions t-L..t and the generated frames t-L..t-1 (L = `n_prev`, 2 by default) as
(1 - m) * warp(previous output, w) + m * h: a predicted flow w, an occlusion mask m and a hallucinated image h
(neuralrender.nn.generators.SequentialGenerator). The first frame of a sequence has no history and is pure
hallucination. Losses: L1, an image discriminator (multi-scale PatchGAN on condition + frame) with feature
matching, a flow-conditioned multi-scale video discriminator over K consecutive frames
(neuralrender.nn.discriminators.VideoDiscriminator), the flow loss |w - w_gt| and the warp loss
|warp(x_{t-1}, w) - x_t| (both masked by the ground-truth flow's validity). Two additions to the paper, both
flags: the occlusion mask starts at sigmoid(`mask_bias`) = 0.12, i.e. mostly the warped previous frame, and
an output consistency term |x_t - warp(x_{t-1}, w_gt)| on the generated frames (`lambda_temporal`; at our CPU
budgets the paper's losses alone left the mask near 1 and the output flickered more than pix2pixHD's). The ground-truth flow is the
graphics core's exact flow for rendered scenes and OpenCV DIS for real videos (neuralrender.data.conditions).

`generator` 'pix2pixhd' (the default since session 6; 'sequential' is the earlier one): the hallucinated image h comes from
pix2pixHD's generator (nn.generators.LocalEnhancer with pix2pixhd's defaults of session 4: width 16, an 8x8
bottleneck, 4 + 3 residual blocks, bilinear resize convs, x, y coordinates appended) on the current condition,
while the condition + previous-frame encoders and the flow + mask decoder stay (`HDSequentialGenerator`). The
paper builds vid2vid's generator on pix2pixHD's; ours had its own smaller hallucination decoder.

Progressive training: spatially, the first `spatial_steps` steps run at half resolution (inputs and flows
downsampled); temporally, the training clip starts at `clip_start` frames and doubles every `temporal_every`
steps up to `clip_len` (see `progressive_schedule`). Histories are detached (no backpropagation through time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from neuralrender.errors import ConfigError, NeuralRenderError
from neuralrender.graphics.warp import warp
from neuralrender.losses.gan import discriminator_loss, feature_matching_loss, generator_loss
from neuralrender.methods._cond2d import (
    CondTaskConfig,
    build_cond_data,
    clip_metrics,
    cond_to_rgb,
    side_by_side,
)
from neuralrender.methods.base import Method
from neuralrender.nn.discriminators import MultiScaleDiscriminator, VideoDiscriminator
from neuralrender.nn.generators import LocalEnhancer, SequentialGenerator, pixel_coords
from neuralrender.nn.neural_texture import ScreenTexture
from neuralrender.registry import register


@dataclass
class Vid2VidConfig(CondTaskConfig):
    n_prev: int = field(default=2, metadata={"help": "L: past frames (and L+1 conditions) fed to the generator"})
    width: int = field(default=32, metadata={"help": "generator channels of the first layer"})
    n_down: int = field(default=3, metadata={"help": "generator stride-2 convs"})
    n_blocks: int = field(default=4, metadata={"help": "generator residual blocks"})
    up: Literal["transpose", "bilinear", "nearest"] = field(default="transpose", metadata={
        "help": "generator upsampling: 'transpose' (transposed convs, the paper's; default) or a resize conv "
                "(bilinear/nearest x2 + 3x3 conv, pix2pixhd's default; measured on the face: docs/methods/vid2vid.md)"})
    coords: bool = field(default=False, metadata={
        "help": "append x, y pixel coordinates in [-1,1] to every condition frame (CoordConv, as pix2pixhd; not in "
                "the paper)"})
    generator: Literal["sequential", "pix2pixhd"] = field(default="pix2pixhd", metadata={
        "help": "where the hallucinated image comes from: 'pix2pixhd' (pix2pixHD's generator with its defaults on "
                "the current condition, the flow + mask branch stays; default, session 6: docs/methods/vid2vid.md) "
                "or 'sequential' (the sequential generator's own image decoder; sessions 1-5)"})
    hd_up: Literal["bilinear", "shuffle", "transpose", "nearest"] = field(default="bilinear", metadata={
        "help": "with --generator pix2pixhd: the hallucinator's upsampling (bilinear = pix2pixHD's session-4 "
                "defaults; shuffle = pix2pixHD's body configuration of session 7)"})
    hd_skip: bool = field(default=False, metadata={
        "help": "with --generator pix2pixhd: the hallucinator's full-resolution skip (pix2pixhd's `skip`; off = "
                "session 6's generator)"})
    canvas: int = field(default=0, metadata={
        "help": "with --generator pix2pixhd: channels of a learned screen-space texture (as pix2pixhd's canvas) "
                "appended to the hallucinator's input (0 = off; not in the paper; session 8, body)"})
    canvas_lr_scale: float = field(default=10.0, metadata={
        "help": "the canvas learns this many times faster than the networks (as pix2pixhd's canvas_lr_scale)"})
    num_d: int = field(default=2, metadata={"help": "scales of both discriminators"})
    d_width: int = field(default=32, metadata={"help": "discriminator channels of the first layer"})
    d_layers: int = field(default=3, metadata={"help": "stride-2 layers per discriminator"})
    k_frames: int = field(default=3, metadata={"help": "K: frames seen by the video discriminator"})
    clip_len: int = field(default=6, metadata={"help": "training clip length at the end of the temporal schedule"})
    clip_start: int = field(default=3, metadata={"help": "training clip length at the start"})
    temporal_every: int = field(default=300, metadata={"help": "steps between doublings of the clip length"})
    spatial_steps: int = field(default=300, metadata={"help": "steps at half resolution first (0 = off)"})
    lambda_l1: float = field(default=100.0, metadata={"help": "L1 weight"})
    lambda_feat: float = field(default=10.0, metadata={"help": "feature matching weight"})
    lambda_video: float = field(default=1.0, metadata={"help": "video discriminator weight"})
    lambda_flow: float = field(default=10.0, metadata={"help": "flow loss weight (|w - w_gt|, pixels)"})
    lambda_warp: float = field(default=10.0, metadata={"help": "warp loss weight"})
    lambda_temporal: float = field(default=10.0, metadata={
        "help": "output consistency weight: |x_t - warp(x_{t-1}, w_gt)| on the generated frames, masked (0 = off; "
                "not in the paper)"})
    lambda_h: float = field(default=0.0, metadata={
        "help": "L1 weight on the hallucinated image h alone, every frame (0 = off: the paper's losses; not in the "
                "paper; session 7, body: docs/methods/vid2vid.md)"})
    mask_bias: float = field(default=-2.0, metadata={
        "help": "initial logit of the occlusion mask (-2: start mostly from the warped previous frame; 0: 50/50)"})


# pix2pixhd's generator defaults (session 4) used for generator='pix2pixhd'; fixed here so checkpoints stay loadable
HD_GENERATOR = {"width": 16, "n_down_global": 2, "n_blocks_global": 4, "n_blocks_local": 3, "up": "bilinear"}


class HDSequentialGenerator(SequentialGenerator):
    """SequentialGenerator whose hallucinated image comes from pix2pixHD's LocalEnhancer (HD_GENERATOR) on the
    current condition (its first `raw_channels` channels) + x, y pixel coordinates (+ a `canvas`-channel
    ScreenTexture of `size` texels, sampled at the input's resolution; 0 = none). The two encoders, residual
    blocks and the flow + mask decoder are SequentialGenerator's (its own image decoder is dropped); the
    outputs are the same dict. The first frame (prev None) is the hallucination alone (flow 0, mask 1)."""

    def __init__(self, cond_channels: int, raw_channels: int, n_prev: int = 2, width: int = 32, n_down: int = 3,
                 n_blocks: int = 6, up: str = "transpose", hd_up: str = HD_GENERATOR["up"], canvas: int = 0,
                 hd_skip: bool = False,
                 size: int = 64, canvas_lr_scale: float = 10.0):
        super().__init__(cond_channels, n_prev, width, n_down, n_blocks, up=up)
        del self.dec_img, self.head_img
        self.raw_channels = raw_channels
        self.hallucinator = LocalEnhancer(raw_channels + 2 + canvas, 3, **{**HD_GENERATOR, "up": hd_up},
                                          skip=hd_skip)
        self.canvas = ScreenTexture(canvas, size, lr_scale=canvas_lr_scale) if canvas > 0 else None

    def forward(self, conds: torch.Tensor, prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self.check_conds(conds)
        cur = conds[:, -self.cond_channels:][:, :self.raw_channels]
        inputs = [cur, pixel_coords(cur)] + ([self.canvas(cur)] if self.canvas is not None else [])
        hallucinated = self.hallucinator(torch.cat(inputs, 1))
        if prev is None:  # no history: the trunk is skipped, flow 0, mask 1
            zero = hallucinated.new_zeros(hallucinated.shape[0], 1, *hallucinated.shape[-2:])
            return {"image": hallucinated, "hallucinated": hallucinated, "flow": zero.expand(-1, 2, -1, -1),
                    "mask": torch.ones_like(zero), "warped": torch.zeros_like(hallucinated)}
        return self.blend(self.trunk(conds, prev), prev, hallucinated)


def progressive_schedule(step: int, spatial_steps: int, clip_start: int, clip_len: int,
                         temporal_every: int) -> tuple[float, int]:
    """(resolution scale, clip length) at `step`: scale 0.5 before spatial_steps, else 1; the clip length starts at
    clip_start and doubles every temporal_every steps (counted from the start), capped at clip_len."""
    scale = 0.5 if step < spatial_steps else 1.0
    t = clip_start * 2 ** (step // temporal_every) if temporal_every > 0 else clip_len
    return scale, int(min(clip_len, max(2, t)))


def _down(x: torch.Tensor, kind: str = "mean") -> torch.Tensor:
    """Halve [N,C,H,W]: mean (images, conditions), flow (mean, values halved), mask (min)."""
    if kind == "mask":
        return -F.max_pool2d(-x, 2)
    y = F.avg_pool2d(x, 2)
    return y * 0.5 if kind == "flow" else y


@register("vid2vid")
class Vid2Vid(Method):
    description = "vid2vid: sequential generator (flow-warped previous frame + hallucination), image + video D"
    Config = Vid2VidConfig
    phases = ("d", "g")
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 4, "steps": 2000, "eval_every": 500,
                      "ckpt_every": 500, "eval_batches": 0}
    legacy_config = {"generator": "sequential"}  # runs saved before the field existed

    @classmethod
    def build_data(cls, cfg, data, seed):
        return build_cond_data(cfg, train_clip=cfg.clip_len, seed=seed)

    def __init__(self, cfg: Vid2VidConfig, info):
        super().__init__(cfg, info)
        c = info["cond_channels"]
        if cfg.canvas < 0:
            raise ConfigError(f"config key 'canvas': channels must be >= 0 (0 = off), got {cfg.canvas}")
        cc = c + (2 if cfg.coords else 0)
        if cfg.generator == "pix2pixhd":
            self.generator = HDSequentialGenerator(cc, c, cfg.n_prev, cfg.width, cfg.n_down, cfg.n_blocks, up=cfg.up,
                                                   hd_up=cfg.hd_up, hd_skip=cfg.hd_skip, canvas=cfg.canvas, size=cfg.size,
                                                   canvas_lr_scale=cfg.canvas_lr_scale)
        else:
            if cfg.canvas:
                raise NeuralRenderError("vid2vid: canvas needs --generator pix2pixhd (it is an input of its hallucinator)")
            self.generator = SequentialGenerator(cc, cfg.n_prev, cfg.width, cfg.n_down, cfg.n_blocks, up=cfg.up)
        with torch.no_grad():  # the head's last conv is zero-initialised: flow 0, mask = sigmoid(mask_bias)
            self.generator.head_flow[1].bias[2] = cfg.mask_bias
        self.d_image = MultiScaleDiscriminator(c + 3, cfg.num_d, cfg.d_width, cfg.d_layers)
        self.d_video = VideoDiscriminator(3, cfg.k_frames, cfg.num_d, cfg.d_width, cfg.d_layers)
        self.register_buffer("mean_image", info["mean_image"].float().clone())

    def parameters_for(self, phase):
        if phase == "d":
            return list(self.d_image.parameters()) + list(self.d_video.parameters())
        return list(self.generator.parameters())

    # ---- generation ---------------------------------------------------------------------------------
    def _window(self, seq: torch.Tensor, t: int) -> torch.Tensor:
        """Frames t-L..t of seq [B,T,C,H,W] stacked on channels (frame 0 repeated before the start)."""
        L = self.cfg.n_prev
        idx = [max(0, k) for k in range(t - L, t + 1)]
        return seq[:, idx].flatten(1, 2)

    def generate(self, cond: torch.Tensor, detach_history: bool = True) -> dict[str, torch.Tensor]:
        """cond [B,T,C,H,W] -> {image, hallucinated, warped [B,T,3,H,W], flow [B,T,2,H,W], mask [B,T,1,H,W]},
        frame by frame from no history."""
        T, L = cond.shape[1], self.cfg.n_prev
        if self.cfg.coords:
            xy = pixel_coords(cond[:, 0])
            cond = torch.cat([cond, xy[:, None].expand(-1, T, -1, -1, -1)], 2)
        outs: list[dict] = []
        for t in range(T):
            if t == 0:
                prev = None
            else:
                hist = [outs[max(0, k)]["image"] for k in range(t - L, t)]
                prev = torch.cat([h.detach() if detach_history else h for h in hist], 1)
            outs.append(self.generator(self._window(cond, t), prev))
        return {k: torch.stack([o[k] for o in outs], 1) for k in outs[0]}

    # ---- training -----------------------------------------------------------------------------------
    def schedule(self, step: int) -> tuple[float, int]:
        c = self.cfg
        return progressive_schedule(step, c.spatial_steps, c.clip_start, c.clip_len, c.temporal_every)

    def _batch_at(self, batch: dict, step: int) -> dict:
        scale, T = self.schedule(step) if self.training else (1.0, batch["cond"].shape[1])
        b = {k: batch[k][:, :T] for k in ("cond", "image", "flow", "flow_mask")}
        if scale != 1.0:
            B = b["cond"].shape[0]
            for k, kind in (("cond", "mean"), ("image", "mean"), ("flow", "flow"), ("flow_mask", "mask")):
                d = _down(b[k].flatten(0, 1), kind)
                b[k] = d.reshape(B, T, *d.shape[1:])
        return b

    def _video_windows(self, frames: torch.Tensor, flows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All K-frame windows of frames [B,T,3,H,W] with their flows -> ([N,K,3,H,W], [N,K-1,2,H,W])."""
        K, T = self.cfg.k_frames, frames.shape[1]
        starts = range(0, T - K + 1)
        fr = torch.cat([frames[:, s:s + K] for s in starts])
        fl = torch.cat([flows[:, s + 1:s + K] for s in starts])
        return fr, fl

    def loss(self, phase, batch, step):
        b = self._batch_at(batch, step)
        cond, real, gt_flow, gt_mask = b["cond"], b["image"], b["flow"], b["flow_mask"]
        out = self.step_output(step, phase, lambda: self.generate(cond))
        fake = out["image"]
        ci, ri, fi = cond.flatten(0, 1), real.flatten(0, 1), fake.flatten(0, 1)
        use_video = real.shape[1] >= self.cfg.k_frames and self.cfg.lambda_video > 0
        if phase == "d":
            d_img = discriminator_loss(self.d_image(torch.cat([ci, ri], 1)),
                                       self.d_image(torch.cat([ci, fi.detach()], 1)), self.cfg.gan_mode)
            total, logs = d_img, {"d_image": d_img.item()}
            if use_video:
                rw, fl = self._video_windows(real, gt_flow)
                fw, _ = self._video_windows(fake.detach(), gt_flow)
                d_vid = discriminator_loss(self.d_video(rw, fl), self.d_video(fw, fl), self.cfg.gan_mode)
                total = total + d_vid
                logs["d_video"] = d_vid.item()
            return total, logs
        c = self.cfg
        d_fake = self.d_image(torch.cat([ci, fi], 1))
        with torch.no_grad():
            d_real = self.d_image(torch.cat([ci, ri], 1))
        adv = generator_loss(d_fake, c.gan_mode)
        fm = feature_matching_loss(d_real, d_fake, c.lambda_feat)
        l1 = F.l1_loss(fake, real)
        # flow and warp losses on frames 1.. (frame 0 has no previous frame)
        m = gt_mask[:, 1:].flatten(0, 1)
        w = out["flow"][:, 1:].flatten(0, 1)
        denom = m.sum().clamp_min(1.0)
        flow_l = ((w - gt_flow[:, 1:].flatten(0, 1)).abs().sum(1, keepdim=True) * m).sum() / denom
        warped_real = warp(real[:, :-1].flatten(0, 1), w, padding="border")
        warp_l = ((warped_real - real[:, 1:].flatten(0, 1)).abs().mean(1, keepdim=True) * m).sum() / denom
        total = c.lambda_gan * adv + fm + c.lambda_l1 * l1 + c.lambda_flow * flow_l + c.lambda_warp * warp_l
        if c.lambda_temporal > 0:  # the previous generated frame is detached: this pulls x_t towards it
            warped_fake = warp(fake[:, :-1].detach().flatten(0, 1), gt_flow[:, 1:].flatten(0, 1), padding="border")
            temp_l = ((warped_fake - fake[:, 1:].flatten(0, 1)).abs().mean(1, keepdim=True) * m).sum() / denom
            total = total + c.lambda_temporal * temp_l
        if c.lambda_h > 0:  # h trained as an image of its own, not only through the blend (weight m)
            l1_h = F.l1_loss(out["hallucinated"], real)
            total = total + c.lambda_h * l1_h
        logs = {"g_adv": adv.item(), "feat_match": fm.item(), "l1": l1.item(), "flow": flow_l.item(),
                "warp": warp_l.item(),
                **({"temporal": temp_l.item()} if c.lambda_temporal > 0 else {}),
                **({"l1_h": l1_h.item()} if c.lambda_h > 0 else {}), "clip_len": float(real.shape[1]), "scale": float(real.shape[-1] / batch["image"].shape[-1])}
        if use_video:
            fw, fl = self._video_windows(fake, gt_flow)
            rw, _ = self._video_windows(real, gt_flow)
            v_fake = self.d_video(fw, fl)
            with torch.no_grad():
                v_real = self.d_video(rw, fl)
            adv_v = generator_loss(v_fake, c.gan_mode) + feature_matching_loss(v_real, v_fake, c.lambda_feat)
            total = total + c.lambda_video * adv_v
            logs["g_video"] = adv_v.item()
        return total, logs

    # ---- evaluation and renders ---------------------------------------------------------------------
    @torch.no_grad()
    def generate_clip(self, cond: torch.Tensor, inst: torch.Tensor | None = None) -> torch.Tensor:
        """cond [B,T,C,H,W] -> video [B,T,3,H,W] (sequential, from no history; inst unused, as in pix2pixhd)."""
        return self.generate(cond)["image"]

    @torch.no_grad()
    def evaluate(self, batch):
        return clip_metrics(self.generate_clip(batch["cond"]), batch, self.mean_image)

    @torch.no_grad()
    def render(self, batch):
        cond = batch["cond"]
        out = self.generate(cond)
        video = out["image"]
        crgb = cond_to_rgb(cond.flatten(0, 1), self.cfg.task).reshape(video.shape)
        return {"video": side_by_side(crgb, video, batch["image"]),
                "parts": torch.cat([out["warped"][:, -1], out["hallucinated"][:, -1],
                                    out["mask"][:, -1].expand(-1, 3, -1, -1)], 0),
                "frames": torch.cat([crgb[:, -1], video[:, -1], batch["image"][:, -1]], 0)}
