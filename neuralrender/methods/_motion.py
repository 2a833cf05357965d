"""What the pose-transfer methods (skeleton-cgan, deformable-gan) share: the config fields, the data (Weizmann
pose clips split by clip: train on some people, animate an unseen one from its first frame), the two-stream
encoder / decoder of their generators, the frame metrics with the copy-the-reference baseline, and the
per-pose-distance report.

Not a method (the registry skips modules starting with '_').
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from neuralrender.data.poses import WEIZMANN_CLIPS, PoseFrameDataset, weizmann_clips
from neuralrender.methods.base import DataBundle
from neuralrender.metrics import psnr, ssim
from neuralrender.nn.blocks import conv_block


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


def build_pose_transfer_data(cfg, seed: int) -> DataBundle:
    """Train: random (reference, target) pairs within each training clip; val: the held-out clip, reference =
    its frame 0."""
    clips = weizmann_clips(cfg.size, WEIZMANN_CLIPS, cfg.smooth_sigma)
    train = PoseFrameDataset(clips, "train", "clip", (cfg.test_clip,), reference="random", pairs=cfg.pairs,
                             seed=seed)
    val = PoseFrameDataset(clips, "val", "clip", (cfg.test_clip,), reference="first")
    images = torch.stack([train[i]["image"] for i in range(len(train.index))])
    return DataBundle(train, val, {"cond_channels": 3, "mean_image": images.mean(0)})


def blend_output(y: torch.Tensor, base: torch.Tensor, blend: bool) -> torch.Tensor:
    """Decoder output y [B,3(+1),H,W] in [0,1] -> image: with blend, mask * rgb + (1 - mask) * base (the mask is y's
    4th channel), so unchanged regions (the static background, a still torso) can be copied from the reference."""
    if not blend:
        return y
    m = y[:, 3:4]
    return m * y[:, :3] + (1 - m) * base


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
    With cout = 4 the 4th channel is a blend mask whose bias starts at -3 (see `blend_output`)."""

    def __init__(self, chans: list[int], streams: int = 2, cout: int = 3):
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
        if cout == 4:  # a blend mask (see blend_output): start close to copying the reference (mask ~0.05)
            with torch.no_grad():
                self.head.bias[3] = -3.0

    def forward(self, streams: list[list[torch.Tensor]]) -> torch.Tensor:
        depth = len(streams[0]) - 1
        h = torch.cat([s[depth] for s in streams], 1)
        for k, blk in enumerate(self.up):
            i = depth - 1 - k
            h = blk["fuse"](torch.cat([blk["up"](h)] + [s[i] for s in streams], 1))
        return torch.sigmoid(self.head(h))
