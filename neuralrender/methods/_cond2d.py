"""What pix2pix, pix2pixhd and vid2vid share: the condition-task config fields, data building, clip evaluation
(per-frame PSNR/SSIM and the temporal warping error) and the condition | output | ground truth renders.

Not a method (the registry skips modules starting with '_'); the three method modules import it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.utils.data import ConcatDataset

from neuralrender.data.conditions import (
    GBUFFER_EXTRA,
    LAYOUT_SEED,
    SCENE_TASKS,
    CondVideoDataset,
    build_task,
    layout_sequences,
)
from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.draw import colorize_labels
from neuralrender.graphics.flow import warping_error
from neuralrender.methods.base import DataBundle
from neuralrender.metrics import psnr, ssim


@dataclass
class CondTaskConfig:
    task: Literal["scene", "face", "body", "scene-gbuffer"] = field(default="scene", metadata={
        "help": "labels->scene (default scene's label map + boundaries), edges->face (talking head), pose->body "
                "(Weizmann), scene-gbuffer (the scene's labels + world normals + inverse depth)"})
    size: int = field(default=64, metadata={"help": "image size (square)"})
    frames: int = field(default=0, metadata={"help": "frames per sequence (0 = task default: all; scene path: 100)"})
    eval_clip: int = field(default=8, metadata={"help": "frames per held-out evaluation clip (non-overlapping)"})
    gan_mode: Literal["lsgan", "vanilla", "hinge"] = field(default="lsgan", metadata={"help": "adversarial loss"})
    lambda_gan: float = field(default=1.0, metadata={"help": "weight of the adversarial term"})
    layouts: int = field(default=0, metadata={
        "help": "scene tasks: also train on this many random rearrangements of the scene (objects moved, every "
                "other layout one duplicated), each rendered from every other training camera (0 = only the scene "
                "as built); seeded LAYOUT_SEED + seed, apart from the edit check's segmenter"})


@functools.lru_cache(maxsize=4)
def _sequences(task: str, size: int, frames: int):
    return build_task(task, size=size, frames=frames or None)


@functools.lru_cache(maxsize=2)
def _layouts(task: str, size: int, frames: int, layouts: int, seed: int):
    """The scene rearranged `layouts` times, from the training cameras only (data.conditions.layout_sequences)."""
    seqs, info = _sequences(task, size, frames)
    n = len(seqs[0])
    cams = info["cameras"][: n - math.ceil(0.2 * n)]
    return layout_sequences(info["spec"], cams, info["num_classes"], info["gbuffer"], LAYOUT_SEED + seed, layouts)


def build_cond_data(cfg, train_clip: int, seed: int = 0) -> DataBundle:
    """Train clips of train_clip frames (hop 1) and held-out clips of cfg.eval_clip frames (hop eval_clip).
    cfg.layouts > 0 (scene tasks): every frame of that many random layouts is appended to the train clips; the
    held-out clips and the mean image stay those of the scene as built."""
    seqs, info = _sequences(cfg.task, cfg.size, cfg.frames)
    train = CondVideoDataset(seqs, "train", clip_len=train_clip)
    val = CondVideoDataset(seqs, "val", clip_len=cfg.eval_clip, hop=cfg.eval_clip)
    images = torch.cat([s.target[: len(s) - math.ceil(0.2 * len(s))] for s in seqs])  # the train frames
    out = {"cond_channels": train.cond_channels, "mean_image": images.mean(0),
           "num_classes": info.get("num_classes", 1)}
    layouts = getattr(cfg, "layouts", 0)
    if layouts:
        if cfg.task not in SCENE_TASKS:
            raise NeuralRenderError(f"layouts={layouts} needs a scene task ({', '.join(SCENE_TASKS)}), "
                                    f"not '{cfg.task}'")
        extra = CondVideoDataset(_layouts(cfg.task, cfg.size, cfg.frames, layouts, seed), "all", clip_len=train_clip)
        train = ConcatDataset([train, extra])
    return DataBundle(train, val, out)


def cond_to_rgb(cond: torch.Tensor, task: str) -> torch.Tensor:
    """A viewable picture of conditions [B,C,H,W] -> [B,3,H,W]."""
    if task in SCENE_TASKS:  # one-hot labels + boundary map (+ normals, inverse depth: not drawn)
        cond = cond[:, :-GBUFFER_EXTRA] if task == "scene-gbuffer" else cond
        lab = cond[:, :-1].argmax(1, keepdim=True)
        rgb = colorize_labels(lab, cond.shape[1] - 1)
        return rgb * (1 - cond[:, -1:])  # boundaries in black
    if cond.shape[1] == 3:
        return cond.clamp(0, 1)
    return cond.amax(1, keepdim=True).expand(-1, 3, -1, -1).clamp(0, 1)


def clip_metrics(video: torch.Tensor, batch: dict, mean_image: torch.Tensor | None = None) -> dict[str, float]:
    """video [B,T,3,H,W] generated for the batch's clips -> per-frame psnr, ssim (means) and the warping error
    (x1000, lower = smoother) of the output and of the ground truth, plus the mean-image baseline's PSNR."""
    real = batch["image"]
    B, T = real.shape[:2]
    f, r = video.flatten(0, 1), real.flatten(0, 1)
    out = {"psnr": psnr(f, r).mean().item(), "ssim": ssim(f, r).mean().item()}
    if T > 1:
        out["warp_err"] = 1000 * warping_error(video, batch["flow"], batch["flow_mask"]).mean().item()
        out["warp_err_gt"] = 1000 * warping_error(real, batch["flow"], batch["flow_mask"]).mean().item()
    if mean_image is not None:
        out["psnr_mean_image"] = psnr(mean_image.expand_as(r), r).mean().item()
    return out


def fit_segmenter(images: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 400,
                  batch: int = 8, width: int = 16, seed: int = 0):
    """Train a small U-Net (the project's one) to segment real frames [N,3,H,W] into labels [N,1,H,W]
    (cross-entropy, Adam 1e-3, random horizontal flips) -> fn(images [M,3,H,W]) -> labels [M,1,H,W].

    The pix2pixHD paper scores its outputs with a segmentation network trained on real photos; this is that
    protocol at our scale (it is used to check where an edited object lands in a generated frame)."""
    from neuralrender.nn.unet import UNet

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = UNet(3, num_classes, width=width, depth=3, norm="instance", act="lrelu", up="bilinear", out_act="none")
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    y_all = labels[:, 0].long()
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(images.shape[0], (batch,), generator=g)
            x, y = images[idx], y_all[idx]
            if bool(torch.rand((), generator=g) < 0.5):
                x, y = x.flip(-1), y.flip(-1)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()

    @torch.no_grad()
    def segment(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(x[i:i + 16]).argmax(1, keepdim=True) for i in range(0, x.shape[0], 16)])

    return segment


def mask_iou(pred: torch.Tensor, want: torch.Tensor, label: int) -> float:
    """IoU of the pixels labelled `label` in two label maps (over all frames together)."""
    p, w = pred == label, want == label
    return (p & w).sum().item() / max(1, (p | w).sum().item())


def side_by_side(cond_rgb: torch.Tensor, output: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """[B,T,3,H,W] x3 -> [B,T,3,H,3W]: condition | output | ground truth."""
    return torch.cat([cond_rgb, output, real], -1)
