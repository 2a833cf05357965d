"""Shared base of the image-animation methods (fomm, monkey-net, x2face, copart): frame-pair data, the
reconstruction protocol for eval (L1 vs copy-source), renders, and video animation for `neuralrender render`
and recipes/animate_image.py. Not a method itself (the registry skips modules starting with '_').

A subclass implements `reconstruct(source, driving) -> {"prediction": [B,3,H,W], ...}` (absolute motion,
the training/eval path) and `animate(source [1,3,H,W], driving [T,3,H,W], relative, adapt_scale) ->
{"prediction": [T,3,H,W], ...}`; keypoint methods get `animate` from `KeypointAnimationMethod`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from neuralrender.data.frame_pairs import build_frame_pair_data
from neuralrender.graphics.draw import draw_landmarks, label_palette
from neuralrender.graphics.tps import random_tps
from neuralrender.graphics.warp import normalized_to_pixel
from neuralrender.losses.equivariance import equivariance_losses
from neuralrender.losses.pyramid import pyramid_l1
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr
from neuralrender.nn.keypoints import transfer_keypoints


@dataclass
class AnimationDataConfig:
    dataset: str = field(default="weizmann", metadata={"help": "'weizmann' (bodies, 64x64 strips), 'face' (talking "
                                                              "heads) or a video / folder of videos (--data wins)"})
    size: int = field(default=64, metadata={"help": "frames are resized to size x size"})
    split: str = field(default="auto", metadata={"help": "auto | video (hold out whole videos) | time (hold out "
                                                         "the tail of each video)"})
    test_fraction: float = field(default=0.25, metadata={"help": "fraction of videos (or of each video) held out"})
    eval_stride: int = field(default=1, metadata={"help": "use every Nth frame of the test videos for eval"})
    max_frames: int = field(default=0, metadata={"help": "decode at most this many frames per video (0 = all)"})
    augment: bool = field(default=False, metadata={"help": "the official FOMM / Monkey-Net augmentation of the "
                                                           "training pairs: time and horizontal flips, colour jitter "
                                                           "(off: at 500 steps it raised fomm's and monkey-net's "
                                                           "held-out L1; docs/methods/animation.md)"})


def draw_keypoints(images: torch.Tensor, kp: torch.Tensor, radius: float | None = None) -> torch.Tensor:
    """images [B,3,H,W], normalized keypoints [B,K,2] -> images with one coloured disc per keypoint."""
    H, W = images.shape[-2:]
    K = kp.shape[1]
    colors = label_palette(K + 1, images.device)[1:]
    r = radius if radius is not None else max(1.0, H / 64)
    return draw_landmarks(normalized_to_pixel(kp, H, W), H, W, radius=r, colors=colors, background=images)


class AnimationMethod(Method):
    legacy_config = {"augment": False}  # runs saved before the field existed trained without augmentation
    train_defaults = {"lr": 2e-4, "batch_size": 8, "steps": 2000, "eval_every": 500, "ckpt_every": 500,
                      "betas": (0.5, 0.999)}

    @classmethod
    def build_data(cls, cfg, data: str | None, seed: int) -> DataBundle:
        train, test, info = build_frame_pair_data(data or cfg.dataset, cfg.size, cfg.split, cfg.test_fraction, seed,
                                                  eval_stride=cfg.eval_stride, max_frames=cfg.max_frames or None,
                                                  augment=cfg.augment)
        return DataBundle(train, test, info)

    # --- to implement --------------------------------------------------------------------------------
    def reconstruct(self, source: torch.Tensor, driving: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def animate(self, source: torch.Tensor, driving: torch.Tensor, relative: bool = True,
                adapt_scale: bool = True) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Resize [B,3,h,w] to the model's size (the recipe says so to the user first)."""
        s = self.cfg.size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return x

    @torch.no_grad()
    def evaluate(self, batch):
        """Reconstruction protocol (driving = a later frame of the source's video, absolute motion): L1 and
        PSNR, with two baselines: copy-source (L1 of the source itself) and no-motion (the model driven by
        the source frame, so any gain over it comes from the motion the model transfers)."""
        src, drv = batch["source"], batch["driving"]
        pred = self.reconstruct(src, drv)["prediction"]
        still = self.reconstruct(src, src)["prediction"]  # the same model driven by the source itself
        return {"l1": (pred - drv).abs().mean().item(), "l1_copy_source": (src - drv).abs().mean().item(),
                "l1_no_motion": (still - drv).abs().mean().item(), "psnr": psnr(pred, drv).mean().item()}

    def render_extras(self, out: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {}

    def equivariant_reconstruction_loss(self, batch: dict, detector, detected: str, jacobian: bool = False,
                                        w_jacobian: float = 0.0, jacobian_log: str = "equi_jacobian",
                                        return_out: bool = False):
        """The self-supervised objective of Monkey-Net / FOMM / co-part: multi-scale L1 reconstruction of the
        driving frame from the source, plus equivariance of `detector` (whose output on the driving frame is
        `out[detected]`) under a random thin-plate-spline warp; Jacobian term when `jacobian`. return_out: also
        return the model's output dict."""
        cfg = self.cfg
        src, drv = batch["source"], batch["driving"]
        out = self.reconstruct(src, drv)
        rec = pyramid_l1(out["prediction"], drv)
        tps = random_tps(drv.shape[0], cfg.sigma_affine, cfg.sigma_tps, cfg.points_tps, device=drv.device)
        eq = equivariance_losses(detector, drv, out[detected], tps, jacobian=jacobian)
        loss = cfg.w_rec * rec + cfg.w_equi_value * eq["equivariance_value"]
        logs = {"rec": rec.item(), "equi_value": eq["equivariance_value"].item()}
        if "equivariance_jacobian" in eq:
            loss = loss + w_jacobian * eq["equivariance_jacobian"]
            logs[jacobian_log] = eq["equivariance_jacobian"].item()
        return (loss, logs, out) if return_out else (loss, logs)

    @torch.no_grad()
    def render(self, batch):
        src, drv = batch["source"], batch["driving"]
        out = self.reconstruct(src, drv)
        return {"source_driving_prediction": torch.cat([src, drv, out["prediction"]], 0),
                **self.render_extras(out, batch)}

    @torch.no_grad()
    def render_run(self, bundle: DataBundle, out, path: str | None = None, frames: int = 60) -> list:
        """Animate each test segment's first frame by the segment itself (relative and absolute) to mp4s."""
        from neuralrender.io.video import write_video

        out = Path(out)
        written = []
        dev = next(self.parameters()).device
        ds = bundle.val if bundle.val is not None else bundle.train
        for v, s, e in ds.segments:
            vid = ds.videos[v][s:min(e, s + frames)].float().div(255).to(dev)
            for rel in ((True, False) if hasattr(self, "keypoints") else (False,)):  # no keypoints: absolute only
                res = self.animate(vid[:1], vid, relative=rel)
                strip = torch.cat([vid[:1].expand_as(vid), vid, res["prediction"]], -1)
                tag = "relative" if rel else "absolute"
                written.append(write_video(strip, out / f"animation_video{v}_{tag}.mp4", fps=12))
        return written


class KeypointAnimationMethod(AnimationMethod):
    """Animation through keypoints: subclasses define `self.kp_detector` and
    `generate(source, kp_driving, kp_source) -> {"prediction", ...}`."""

    def keypoints(self, image: torch.Tensor) -> dict:
        return self.kp_detector(image)

    def reconstruct(self, source, driving):
        kp_s, kp_d = self.keypoints(source), self.keypoints(driving)
        out = self.generate(source, kp_d, kp_s)
        out["kp_source"], out["kp_driving"] = kp_s, kp_d
        return out

    @torch.no_grad()
    def animate(self, source, driving, relative=True, adapt_scale=True, chunk: int = 16):
        """source [1,3,H,W], driving [T,3,H,W] -> {"prediction" [T,3,H,W], "kp_driving" [T,K,2],
        "kp_source" [1,K,2], "kp_used" [T,K,2]}. relative: FOMM's relative transfer from driving[0]."""
        kp_s = self.keypoints(source)
        kp_d0 = self.keypoints(driving[:1])
        preds, kds, kus = [], [], []
        for d in driving.split(chunk):
            kp_d = self.keypoints(d)
            ks = {k: v.expand(d.shape[0], *v.shape[1:]) for k, v in kp_s.items() if k != "heatmap"}
            k0 = {k: v for k, v in kp_d0.items() if k != "heatmap"}
            kd = {k: v for k, v in kp_d.items() if k != "heatmap"}
            kp_use = transfer_keypoints(ks, kd, k0, relative=relative, adapt_scale=adapt_scale)
            preds.append(self.generate(source.expand(d.shape[0], -1, -1, -1), kp_use, ks)["prediction"])
            kds.append(kp_d["value"])
            kus.append(kp_use["value"])
        return {"prediction": torch.cat(preds), "kp_driving": torch.cat(kds), "kp_source": kp_s["value"],
                "kp_used": torch.cat(kus)}

    def render_extras(self, out, batch):
        src, drv = batch["source"], batch["driving"]
        return {"keypoints": torch.cat([draw_keypoints(src, out["kp_source"]["value"]),
                                        draw_keypoints(drv, out["kp_driving"]["value"])], 0)}
