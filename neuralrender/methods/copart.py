"""`copart`: motion-supervised co-part segmentation (Siarohin et al., ICPR 2020).

Segmentation module: an hourglass on the frame -> K part maps + background (softmax over K+1); each part's
shift is the centre of mass of its map and its affine (local first-order motion) the map-weighted mean of
4 predicted maps. Reconstruction module: an encoder on the source whose features are warped by the dense
motion sum_k seg_driving_k * T_k(z), with T_k(z) = shift_s + A_s A_d^-1 (z - shift_d) and the identity for
the background, masked by a visibility map 1 - fg_source * (1 - fg_driving), then decoded. Trained on frame
pairs of one video with a multi-scale L1 reconstruction loss and equivariance of shifts and affines.
Inference outputs part segmentations and swaps parts between two images (`part_swap`). Motion transfer is
absolute only: the masks come from the driving frame's own segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.graphics.draw import colorize_labels
from neuralrender.graphics.warp import make_coordinate_grid
from neuralrender.methods._animation import AnimationDataConfig, AnimationMethod
from neuralrender.nn.blocks import norm_layer
from neuralrender.nn.dense_motion import combine_motions, deform, resize_grid, sparse_motions
from neuralrender.nn.generators import ResnetBlock
from neuralrender.nn.hourglass import DownBlock, Hourglass, UpBlock
from neuralrender.nn.keypoints import anti_alias_resize, weighted_jacobians
from neuralrender.registry import register


@dataclass
class CopartConfig(AnimationDataConfig):
    num_parts: int = field(default=6, metadata={"help": "number of parts K (plus one background segment)"})
    seg_width: int = field(default=16, metadata={"help": "block expansion of the segmentation hourglass"})
    seg_blocks: int = field(default=3, metadata={"help": "down blocks of the segmentation hourglass"})
    max_features: int = field(default=128, metadata={"help": "channel cap"})
    gen_width: int = field(default=16, metadata={"help": "channels of the reconstruction module's first layer"})
    gen_down: int = field(default=2, metadata={"help": "down blocks of the reconstruction module"})
    gen_res: int = field(default=2, metadata={"help": "residual blocks of the reconstruction module"})
    seg_scale: float = field(default=0.5, metadata={"help": "the segmentation module sees the image scaled by this"})
    temperature: float = field(default=0.1, metadata={"help": "softmax temperature of the part maps"})
    estimate_affine: bool = field(default=True, metadata={"help": "per-part affine motion (off: translation only)"})
    norm: str = field(default="group", metadata={"help": "batch | group | instance: group by default (batch, the papers', "
                                                          "leaves a train/eval gap after short training)"})
    w_rec: float = field(default=10.0, metadata={"help": "weight of the multi-scale L1 reconstruction loss"})
    w_equi_value: float = field(default=10.0, metadata={"help": "weight of the shift equivariance loss"})
    w_equi_affine: float = field(default=10.0, metadata={"help": "weight of the affine equivariance loss"})
    sigma_affine: float = field(default=0.05, metadata={"help": "std of the random affine part of the TPS"})
    sigma_tps: float = field(default=0.005, metadata={"help": "std of the random TPS weights"})
    points_tps: int = field(default=5, metadata={"help": "TPS control grid is points x points"})


class SegmentationModule(nn.Module):
    """image [B,C,H,W] -> {"segmentation" [B,K+1,h,w] (0 = background), "value" (shifts) [B,K,2],
    "jacobian" (affines) [B,K,2,2] when estimated}; h, w = H, W times scale."""

    def __init__(self, cfg: CopartConfig, channels: int = 3):
        super().__init__()
        self.scale, self.temperature, self.K = cfg.seg_scale, cfg.temperature, cfg.num_parts
        self.predictor = Hourglass(channels, cfg.seg_width, cfg.seg_blocks, cfg.max_features, cfg.norm)
        self.seg = nn.Conv2d(self.predictor.out_channels, cfg.num_parts + 1, 7, padding=3)
        self.affine = None
        if cfg.estimate_affine:
            self.affine = nn.Conv2d(self.predictor.out_channels, 4 * cfg.num_parts, 7, padding=3)
            nn.init.zeros_(self.affine.weight)
            with torch.no_grad():
                self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(cfg.num_parts))

    def forward(self, image):
        feat = self.predictor(anti_alias_resize(image, self.scale))
        seg = F.softmax(self.seg(feat) / self.temperature, dim=1)
        B, _, h, w = seg.shape
        parts = seg[:, 1:]
        weights = parts / parts.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        grid = make_coordinate_grid(h, w, image.dtype, image.device)
        out = {"segmentation": seg, "value": (weights.unsqueeze(-1) * grid).sum(dim=(2, 3))}
        if self.affine is not None:
            out["jacobian"] = weighted_jacobians(weights, self.affine(feat))
        return out


class ReconstructionModule(nn.Module):
    """(source, seg_driving, seg_source) -> {"prediction", "deformation" [B,h,w,2], "visibility" [B,1,h,w],
    "deformed"}."""

    def __init__(self, cfg: CopartConfig, channels: int = 3):
        super().__init__()
        w, mf, n = cfg.gen_width, cfg.max_features, cfg.norm
        self.first = nn.Sequential(nn.Conv2d(channels, w, 7, padding=3), norm_layer(n, w), nn.ReLU())
        ch = [min(mf, w * 2**i) for i in range(cfg.gen_down + 1)]
        self.down = nn.Sequential(*[DownBlock(ch[i], ch[i + 1], n) for i in range(cfg.gen_down)])
        self.bottleneck = nn.Sequential(*[ResnetBlock(ch[-1], n) for _ in range(cfg.gen_res)])
        self.up = nn.Sequential(*[UpBlock(ch[i + 1], ch[i], n) for i in reversed(range(cfg.gen_down))])
        self.final = nn.Conv2d(w, channels, 7, padding=3)

    def forward(self, source, seg_driving, seg_source):
        seg_d = seg_driving["segmentation"]
        h, w = seg_d.shape[-2:]
        motions = sparse_motions(h, w, seg_driving["value"], seg_source["value"], seg_driving.get("jacobian"),
                                 seg_source.get("jacobian"))
        grid = combine_motions(seg_d, motions)
        fg_s = seg_source["segmentation"][:, 1:].sum(1, keepdim=True)
        fg_d = seg_d[:, 1:].sum(1, keepdim=True)
        visibility = 1 - fg_s * (1 - fg_d.detach())
        feat = self.down(self.first(source))
        feat = deform(feat, grid)
        feat = feat * F.interpolate(visibility, size=feat.shape[-2:], mode="bilinear", align_corners=False)
        pred = torch.sigmoid(self.final(self.up(self.bottleneck(feat))))
        return {"prediction": pred, "deformation": grid, "visibility": visibility,
                "deformed": deform(source, resize_grid(grid, *source.shape[-2:]))}


@register("copart")
class Copart(AnimationMethod):
    description = "motion-supervised co-part segmentation: K part maps + per-part affine motion, part swap"
    Config = CopartConfig

    def __init__(self, cfg: CopartConfig, info):
        super().__init__(cfg, info)
        c = info.get("channels", 3)
        self.segmenter = SegmentationModule(cfg, c)
        self.reconstruction = ReconstructionModule(cfg, c)

    def segment(self, image: torch.Tensor) -> dict:
        return self.segmenter(image)

    def reconstruct(self, source, driving):
        seg_s, seg_d = self.segment(source), self.segment(driving)
        out = self.reconstruction(source, seg_d, seg_s)
        out["seg_source"], out["seg_driving"] = seg_s, seg_d
        return out

    @torch.no_grad()
    def animate(self, source, driving, relative=True, adapt_scale=True, chunk: int = 16):
        preds, segs = [], []
        seg_s = self.segment(source)
        for d in driving.split(chunk):
            seg_d = self.segment(d)
            ss = {k: v.expand(d.shape[0], *v.shape[1:]) for k, v in seg_s.items()}
            preds.append(self.reconstruction(source.expand(d.shape[0], -1, -1, -1), seg_d, ss)["prediction"])
            segs.append(seg_d["segmentation"])
        return {"prediction": torch.cat(preds), "segmentation": torch.cat(segs)}

    @torch.no_grad()
    def part_swap(self, source: torch.Tensor, target: torch.Tensor, parts) -> torch.Tensor:
        """Put the `parts` (indices 1..K) of `target` [B,3,H,W] onto `source` [B,3,H,W]: the target is warped
        into the source's pose, then blended in under the source's masks of those parts -> [B,3,H,W]."""
        seg_s, seg_t = self.segment(source), self.segment(target)
        moved = self.reconstruction(target, seg_s, seg_t)["prediction"]
        idx = torch.as_tensor(list(parts), dtype=torch.long, device=source.device)
        mask = seg_s["segmentation"].index_select(1, idx).sum(1, keepdim=True)
        mask = F.interpolate(mask, size=source.shape[-2:], mode="bilinear", align_corners=False)
        return mask * moved + (1 - mask) * source

    def loss(self, phase, batch, step):
        return self.equivariant_reconstruction_loss(batch, self.segmenter, "seg_driving",
                                                    jacobian=self.cfg.estimate_affine,
                                                    w_jacobian=self.cfg.w_equi_affine, jacobian_log="equi_affine")

    @staticmethod
    def colorize(seg: torch.Tensor, size=None) -> torch.Tensor:
        """Part maps [B,K+1,h,w] -> RGB [B,3,H,W] of the argmax (background black)."""
        lab = seg.argmax(1) - 1
        rgb = colorize_labels(lab, seg.shape[1] - 1)
        return F.interpolate(rgb, size=size, mode="nearest") if size else rgb

    def render_extras(self, out, batch):
        src, drv = batch["source"], batch["driving"]
        size = src.shape[-2:]
        segs = torch.cat([self.colorize(out["seg_source"]["segmentation"], size),
                          self.colorize(out["seg_driving"]["segmentation"], size)], 0)
        return {"segmentation": 0.5 * segs + 0.5 * torch.cat([src, drv], 0),
                "part_swap": self.part_swap(src, drv.flip(0), range(1, self.cfg.num_parts + 1))}
