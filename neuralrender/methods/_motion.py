"""What the pose-transfer methods (skeleton-cgan, deformable-gan) share: the config fields, the data (Weizmann
pose clips split by clip: train on some people, animate an unseen one from its first frame), the method skeleton
(`PoseTransferMethod`: GAN phases, the conditional D step, evaluation, renders), the two-stream
encoder / decoder of their generators, the frame metrics with the copy-the-reference baseline, and the
per-pose-distance report.

Not a method (the registry skips modules starting with '_').
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.data.poses import WEIZMANN_CLIPS, PoseFrameDataset, weizmann_clips
from neuralrender.graphics.draw import gaussian_heatmaps
from neuralrender.graphics.skeleton import BODY_PARTS
from neuralrender.losses.gan import discriminator_loss, generator_loss
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr, ssim
from neuralrender.nn.blocks import conv_block

PART_JOINTS = list(BODY_PARTS.values())

@dataclass
class PoseTransferConfig:
    size: int = field(default=64, metadata={"help": "image size (square)"})
    test_clip: str = field(default="wave1_00000002", metadata={
        "help": "Weizmann clip held out (an unseen person): reference = its first frame, targets = its poses"})
    pairs: int = field(default=4, metadata={"help": "training (reference, target) pairs per frame per epoch"})
    smooth_sigma: float = field(default=0.0, metadata={"help": "temporal smoothing of the poses (frames, 0 = off)"})
    gan_mode: Literal["lsgan", "vanilla", "hinge"] = field(default="lsgan", metadata={"help": "adversarial loss"})
    lambda_gan: float = field(default=1.0, metadata={"help": "weight of the adversarial term"})
    blend: bool = field(default=True, metadata={
        "help": "the generator also predicts a mask that blends its RGB with the (deformed) reference image"})
    region: bool = field(default=True, metadata={
        "help": "with blend: change only where the skeleton moved (the moved parts' regions in the reference and "
                "target poses, `motion_region`); elsewhere the (deformed) reference is kept"})
    region_tau: float = field(default=2.0, metadata={
        "help": "mean part displacement beyond 1 px of jitter (pixels at 64 px) at which a part counts as moved "
                "(weight 1 - 1/e; see motion_region)"})
    region_sigma: float = field(default=3.0, metadata={"help": "width of the part regions (pixels at 64 px)"})
    width: int = field(default=16, metadata={"help": "channels of the first encoder level"})
    depth: int = field(default=4, metadata={"help": "stride-2 levels of each encoder"})
    d_width: int = field(default=32, metadata={"help": "PatchGAN channels of the first layer"})
    d_layers: int = field(default=3, metadata={"help": "PatchGAN stride-2 layers"})


class PoseTransferMethod(Method):
    """The shared skeleton of skeleton-cgan and deformable-gan. A subclass builds `self.discriminator` (a
    PatchGAN over (reference, pose image, frame)) and implements `generate(batch) -> [B,3,H,W]` and
    `generator_terms(fake, batch) -> (loss, logs)` (its reconstruction terms; the adversarial term is added here).
    The generated frame is computed once per step and shared by the D and G phases (`Method.step_output`)."""

    phases = ("d", "g")
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 8, "steps": 2000, "eval_every": 500,
                      "ckpt_every": 500, "eval_batches": 0}

    @classmethod
    def build_data(cls, cfg, data, seed):
        return build_pose_transfer_data(cfg, seed)

    def region(self, ref_joints: torch.Tensor, joints: torch.Tensor, height: int, width: int):
        """`motion_region` of the reference and target joints [B,33,2] (pixels) at this size, or None without
        --blend / --region."""
        if not (self.cfg.blend and self.cfg.region):
            return None
        k = height / 64
        return motion_region(ref_joints, joints, height, width, self.cfg.region_sigma * k, self.cfg.region_tau * k)

    def generate(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def generator_terms(self, fake: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def loss(self, phase, batch, step):
        ref, cond, real = batch["ref_image"], batch["cond"], batch["image"]
        fake = self.step_output(step, phase, lambda: self.generate(batch))
        if phase == "d":
            d = discriminator_loss(self.discriminator(torch.cat([ref, cond, real], 1)),
                                   self.discriminator(torch.cat([ref, cond, fake.detach()], 1)), self.cfg.gan_mode)
            return d, {"d": d.item()}
        adv = generator_loss(self.discriminator(torch.cat([ref, cond, fake], 1)), self.cfg.gan_mode)
        terms, logs = self.generator_terms(fake, batch)
        logs = {"g_adv": adv.item(), "l1": F.l1_loss(fake, real).item(), **logs}
        return self.cfg.lambda_gan * adv + terms, logs

    @torch.no_grad()
    def evaluate(self, batch):
        return transfer_metrics(self.generate(batch), batch)

    @torch.no_grad()
    def render(self, batch):
        fake = self.generate(batch)
        return {"ref_pose_output_real": torch.cat([batch["ref_image"], batch["cond"], fake, batch["image"]], 0)}


def build_pose_transfer_data(cfg, seed: int) -> DataBundle:
    """Train: random (reference, target) pairs within each training clip; val: the held-out clip, reference =
    its frame 0."""
    clips = weizmann_clips(cfg.size, WEIZMANN_CLIPS, cfg.smooth_sigma)
    train = PoseFrameDataset(clips, "train", "clip", (cfg.test_clip,), reference="random", pairs=cfg.pairs,
                             seed=seed)
    val = PoseFrameDataset(clips, "val", "clip", (cfg.test_clip,), reference="first")
    images = torch.stack([train[i]["image"] for i in range(len(train.index))])
    return DataBundle(train, val, {"cond_channels": 3, "mean_image": images.mean(0)})


def blend_output(y: torch.Tensor, base: torch.Tensor, blend: bool, region: torch.Tensor | None = None) -> torch.Tensor:
    """Decoder output y [B,3(+1),H,W] in [0,1] -> image: with blend, mask * rgb + (1 - mask) * base (the mask is y's
    4th channel, times `region` [B,1,H,W] when given), so unchanged regions (the static background, a still torso)
    are copied from the reference."""
    if not blend:
        return y
    m = y[:, 3:4] if region is None else y[:, 3:4] * region
    return m * y[:, :3] + (1 - m) * base


def part_masks(joints_px: torch.Tensor, valid: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Soft region of each body part (graphics.skeleton.BODY_PARTS) in a pose [B,33,2] (pixels): [B,P,H,W] in
    [0,1], the max of Gaussian blobs at the part's joints and at 1/4, 1/2, 3/4 along each consecutive joint pair
    (`sigma` pixels wide); joints with valid [B,33] False are left out."""
    masks = []
    for joints in PART_JOINTS:
        pts, vis = [joints_px[:, joints]], [valid[:, joints]]
        for a, b in zip(joints[:-1], joints[1:]):
            for f in (0.25, 0.5, 0.75):
                pts.append((joints_px[:, a] * (1 - f) + joints_px[:, b] * f)[:, None])
                vis.append((valid[:, a] & valid[:, b])[:, None])
        hm = gaussian_heatmaps(torch.cat(pts, 1), height, width, sigma, torch.cat(vis, 1).to(joints_px.dtype))
        masks.append(hm.amax(1))
    return torch.stack(masks, 1)


def inside_image(joints_px: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[B,33,2] pixels -> [B,33] bool: finite and inside the image. Joints outside the frame (Weizmann's feet are
    cut off: mediapipe extrapolates the ankles 10-25 px below the image, and they drift) are guesses."""
    x, y = joints_px[..., 0], joints_px[..., 1]
    return torch.isfinite(joints_px).all(-1) & (x >= 0) & (x <= width) & (y >= 0) & (y <= height)


def motion_region(ref_px: torch.Tensor, tgt_px: torch.Tensor, height: int, width: int, sigma: float = 3.0,
                  tau: float = 2.0, dead: float = 1.0) -> torch.Tensor:
    """Where the body changes between a reference and a target pose [B,33,2] (pixels; NaN = unknown joint):
    [B,1,H,W] in [0,1], the max over parts of w_p * min(1, 2 max(mask_p(ref), mask_p(tgt))).

    The part's weight w_p = 1 - exp(-(max(d_p - dead, 0) / tau)^2) comes from its mean joint displacement d_p
    (pixels) over the joints inside the image in either pose (`inside_image`); `dead` absorbs the detector's
    jitter. A part that did not move keeps weight ~0, so the pixels it covers (and the background away from every
    moved part) are copied from the reference; a moved part opens both where it was (to be filled) and where it
    goes (to be drawn). A part with no such joint has weight 0 (nothing of it is in view)."""
    ok = torch.isfinite(ref_px).all(-1) & torch.isfinite(tgt_px).all(-1)
    ok = ok & (inside_image(ref_px, height, width) | inside_image(tgt_px, height, width))
    r, t = torch.nan_to_num(ref_px), torch.nan_to_num(tgt_px)
    disp = (r - t).norm(dim=-1) * ok  # [B,33]
    w = []
    for j in PART_JOINTS:
        d = disp[:, j].sum(1) / ok[:, j].sum(1).clamp_min(1)
        w.append(1 - torch.exp(-((d - dead).clamp_min(0) / tau) ** 2))
    w = torch.stack(w, 1)  # [B,P]
    m = torch.maximum(part_masks(r, torch.isfinite(ref_px).all(-1), height, width, sigma),
                      part_masks(t, torch.isfinite(tgt_px).all(-1), height, width, sigma))
    return ((2 * m).clamp(max=1) * w[..., None, None]).amax(1, keepdim=True)


def pose_distance(joints_a: torch.Tensor, joints_b: torch.Tensor, obs_a: torch.Tensor | None = None,
                  obs_b: torch.Tensor | None = None) -> torch.Tensor:
    """Mean distance in pixels between two poses [B,33,2] over the joints observed in both (and finite) -> [B]."""
    ok = torch.isfinite(joints_a).all(-1) & torch.isfinite(joints_b).all(-1)
    if obs_a is not None:
        ok = ok & (obs_a > 0)
    if obs_b is not None:
        ok = ok & (obs_b > 0)
    d = torch.nan_to_num((joints_a - joints_b).norm(dim=-1))
    return (d * ok).sum(1) / ok.sum(1).clamp_min(1)


def transfer_metrics(fake: torch.Tensor, batch: dict) -> dict[str, float]:
    """Generated frames [B,3,H,W] vs the batch's targets: L1, PSNR, SSIM, and the same for copying the reference
    frame (the baseline every pose-transfer method must beat)."""
    real, ref = batch["image"], batch["ref_image"]
    return {"l1": (fake - real).abs().mean().item(), "psnr": psnr(fake, real).mean().item(),
            "ssim": ssim(fake, real).mean().item(), "l1_copy_ref": (ref - real).abs().mean().item(),
            "psnr_copy_ref": psnr(ref, real).mean().item(), "ssim_copy_ref": ssim(ref, real).mean().item()}


@torch.no_grad()
def binned_report(models: dict, dataset, bins=(0.0, 2.0, 4.0, 1e9), batch_size: int = 16) -> dict:
    """Per-frame L1 of each model (name -> callable(batch) -> [B,3,H,W]) and of copying the reference, grouped by
    the pose distance (pixels, `pose_distance`) between reference and target: {bin label: {name: mean L1, "n": count}}."""
    from torch.utils.data import default_collate

    rows = {name: [] for name in [*models, "copy_ref"]}
    dists = []
    for s in range(0, len(dataset), batch_size):
        batch = default_collate([dataset[i] for i in range(s, min(len(dataset), s + batch_size))])
        dists.append(pose_distance(batch["joints"], batch["ref_joints"], batch["observed"], batch["ref_observed"]))
        rows["copy_ref"].append((batch["ref_image"] - batch["image"]).abs().mean((1, 2, 3)))
        for name, fn in models.items():
            rows[name].append((fn(batch) - batch["image"]).abs().mean((1, 2, 3)))
    d = torch.cat(dists)
    out = {}
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (d >= lo) & (d < hi)
        label = f"[{lo:g},{hi:g}) px" if hi < 1e8 else f">={lo:g} px"
        out[label] = {"n": int(m.sum())} | {k: float(torch.cat(v)[m].mean()) if m.any() else float("nan")
                                            for k, v in rows.items()}
    return out


class Encoder(nn.Module):
    """x [B,cin,H,W] -> features per level [B,c_i,H/2**i,W/2**i], i = 0..depth (channels width * 2**i, capped)."""

    def __init__(self, cin: int, width: int, depth: int, max_width: int = 256):
        super().__init__()
        self.chans = [min(width * 2**i, max_width) for i in range(depth + 1)]
        self.stem = conv_block(cin, self.chans[0], norm="none", act="lrelu")
        self.down = nn.ModuleList(conv_block(self.chans[i], self.chans[i + 1], 3, 2, norm="instance", act="lrelu")
                                  for i in range(depth))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for d in self.down:
            feats.append(d(feats[-1]))
        return feats

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Frame embedding [B,c_depth]: the global average of the bottleneck."""
        return self(x)[-1].mean((2, 3))


class Decoder(nn.Module):
    """Features of `streams` encoders (lists of equal shapes per level) -> [B,cout,H,W] in [0,1] (sigmoid).
    With cout = 4 the 4th channel is a blend mask whose bias starts at `mask_bias` (see `blend_output`: -3 starts
    close to copying the reference everywhere; 0, the default with a motion region, half way inside the region)."""

    def __init__(self, chans: list[int], streams: int = 2, cout: int = 3, mask_bias: float = -3.0):
        super().__init__()
        depth = len(chans) - 1
        self.up = nn.ModuleList()
        c = chans[depth] * streams
        for i in reversed(range(depth)):
            self.up.append(nn.ModuleDict({
                "up": conv_block(c, chans[i], 3, 2, norm="instance", act="relu", transpose=True),
                "fuse": conv_block(chans[i] * (1 + streams), chans[i], norm="instance", act="relu")}))
            c = chans[i]
        self.head = nn.Conv2d(c, cout, 3, padding=1)
        if cout == 4:  # a blend mask (see blend_output)
            with torch.no_grad():
                self.head.bias[3] = mask_bias

    def forward(self, streams: list[list[torch.Tensor]]) -> torch.Tensor:
        depth = len(streams[0]) - 1
        h = torch.cat([s[depth] for s in streams], 1)
        for k, blk in enumerate(self.up):
            i = depth - 1 - k
            h = blk["fuse"](torch.cat([blk["up"](h)] + [s[i] for s in streams], 1))
        return torch.sigmoid(self.head(h))
