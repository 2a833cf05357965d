"""`fomm`: the first-order motion model for image animation (Siarohin et al., NeurIPS 2019).

Keypoints with local affine Jacobians (first-order motion) from an hourglass detector, a dense-motion
network that turns the K local motions into softmax masks, one dense backward flow and an occlusion map,
and an occlusion-aware generator that warps the source's encoder features with that flow, multiplies them
by the occlusion map and decodes; by default (--output-blend, from TPSMM, not the FOMM paper) the output is
occlusion * warped source + (1 - occlusion) * decoded. Trained on frame pairs of the same video with a multi-scale L1
reconstruction loss and equivariance losses on keypoints and Jacobians under random TPS transforms.
At test time motion is transferred relatively (with the paper's adaptive scale) or absolutely.
Ablations of the paper: --use-jacobian false (zeroth order), --use-occlusion false; --output-blend false is the
paper's output layer; --affine-range S > 0 (ours) limits each keypoint's affine term to its neighbourhood;
--mask-init identity starts the motion masks on the background as Monkey-Net does (default random = FOMM's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from neuralrender.methods._animation import AnimationDataConfig, KeypointAnimationMethod
from neuralrender.nn.blocks import norm_layer
from neuralrender.nn.dense_motion import DenseMotionNetwork, deform
from neuralrender.nn.generators import ResnetBlock
from neuralrender.nn.hourglass import DownBlock, UpBlock
from neuralrender.nn.keypoints import KeypointDetector
from neuralrender.registry import register


@dataclass
class FommConfig(AnimationDataConfig):
    num_kp: int = field(default=10, metadata={"help": "number of keypoints"})
    use_jacobian: bool = field(default=True, metadata={"help": "first-order (local affine) motion; off = zeroth order"})
    use_occlusion: bool = field(default=True, metadata={"help": "predict an occlusion map that masks warped features"})
    affine_range: float = field(default=0.0, metadata={"help": "localise each keypoint's first-order term to a Gaussian "
                                                              "of this std around it (normalized units; not in the "
                                                              "paper); 0 = the paper's unlimited affine motion"})
    mask_init: Literal["random", "identity"] = field(default="random", metadata={"help": "init of the dense-motion mask conv: random (PyTorch's "
                                                             "default, the official FOMM code's) or identity (the "
                                                             "official Monkey-Net code's: zero weights, background "
                                                             "logit 2, masks start on the identity motion)"})
    output_blend: bool = field(default=True, metadata={"help": "output = occlusion * deformed source + (1 - occlusion) "
                                                              "* generated (TPSMM's output; needs --use-occlusion)"})
    kp_width: int = field(default=16, metadata={"help": "block expansion of the keypoint detector hourglass"})
    kp_blocks: int = field(default=3, metadata={"help": "down blocks of the keypoint detector hourglass"})
    motion_width: int = field(default=16, metadata={"help": "block expansion of the dense-motion hourglass"})
    motion_blocks: int = field(default=3, metadata={"help": "down blocks of the dense-motion hourglass"})
    max_features: int = field(default=128, metadata={"help": "channel cap of the hourglasses and the generator"})
    gen_width: int = field(default=16, metadata={"help": "channels of the generator's first layer"})
    gen_down: int = field(default=2, metadata={"help": "down blocks of the generator"})
    gen_res: int = field(default=2, metadata={"help": "residual blocks in the generator's bottleneck"})
    kp_scale: float = field(default=0.5, metadata={"help": "the detector and dense motion see the image scaled by this"})
    temperature: float = field(default=0.1, metadata={"help": "soft-argmax temperature"})
    kp_variance: float = field(default=0.01, metadata={"help": "variance of keypoint Gaussians (normalized units)"})
    norm: str = field(default="group", metadata={"help": "batch | group | instance: group by default (batch, the papers', "
                                                          "leaves a train/eval gap after short training)"})
    w_rec: float = field(default=10.0, metadata={"help": "weight of the multi-scale L1 reconstruction loss"})
    w_equi_value: float = field(default=10.0, metadata={"help": "weight of the keypoint equivariance loss"})
    w_equi_jacobian: float = field(default=10.0, metadata={"help": "weight of the Jacobian equivariance loss"})
    sigma_affine: float = field(default=0.05, metadata={"help": "std of the random affine part of the TPS"})
    sigma_tps: float = field(default=0.005, metadata={"help": "std of the random TPS weights"})
    points_tps: int = field(default=5, metadata={"help": "TPS control grid is points x points"})


class OcclusionAwareGenerator(nn.Module):
    """(source [B,3,H,W], kp_driving, kp_source) -> {"prediction", "deformed" (source warped by the dense
    flow), "deformation" [B,h,w,2], "mask", "occlusion_map" (when used)}."""

    def __init__(self, cfg: FommConfig, channels: int = 3):
        super().__init__()
        w, mf, n = cfg.gen_width, cfg.max_features, cfg.norm
        self.dense_motion = DenseMotionNetwork(cfg.num_kp, channels, cfg.motion_width, cfg.motion_blocks, mf,
                                               cfg.use_occlusion, cfg.kp_variance, cfg.kp_scale, cfg.use_jacobian, n,
                                               cfg.affine_range, cfg.mask_init)
        self.first = nn.Sequential(nn.Conv2d(channels, w, 7, padding=3), norm_layer(n, w), nn.ReLU())
        ch = [min(mf, w * 2**i) for i in range(cfg.gen_down + 1)]
        self.down = nn.Sequential(*[DownBlock(ch[i], ch[i + 1], n) for i in range(cfg.gen_down)])
        self.bottleneck = nn.Sequential(*[ResnetBlock(ch[-1], n) for _ in range(cfg.gen_res)])
        self.up = nn.Sequential(*[UpBlock(ch[i + 1], ch[i], n) for i in reversed(range(cfg.gen_down))])
        self.final = nn.Conv2d(w, channels, 7, padding=3)
        self.output_blend = cfg.output_blend and cfg.use_occlusion
        if self.output_blend:  # start close to the warped source (occlusion ~ 0.88): the generator only inpaints
            nn.init.constant_(self.dense_motion.occlusion.bias, 2.0)

    def forward(self, source, kp_driving, kp_source):
        feat = self.down(self.first(source))
        motion = self.dense_motion(source, kp_driving, kp_source)
        grid = motion["deformation"]
        feat = deform(feat, grid)
        out = {"deformation": grid, "mask": motion["mask"], "deformed": deform(source, grid)}
        if "occlusion_map" in motion:
            occ = motion["occlusion_map"]
            if occ.shape[-2:] != feat.shape[-2:]:
                occ = nn.functional.interpolate(occ, size=feat.shape[-2:], mode="bilinear", align_corners=False)
            feat = feat * occ
            out["occlusion_map"] = motion["occlusion_map"]
        pred = torch.sigmoid(self.final(self.up(self.bottleneck(feat))))
        if self.output_blend:
            occ = motion["occlusion_map"]
            if occ.shape[-2:] != pred.shape[-2:]:
                occ = nn.functional.interpolate(occ, size=pred.shape[-2:], mode="bilinear", align_corners=False)
            out["generated"] = pred
            pred = occ * out["deformed"] + (1 - occ) * pred
        out["prediction"] = pred
        return out


@register("fomm")
class Fomm(KeypointAnimationMethod):
    description = "first-order motion model: keypoints + local affine motion + occlusion-aware generator"
    Config = FommConfig

    def __init__(self, cfg: FommConfig, info):
        super().__init__(cfg, info)
        c = info.get("channels", 3)
        self.kp_detector = KeypointDetector(cfg.num_kp, c, cfg.kp_width, cfg.kp_blocks, cfg.max_features,
                                            cfg.temperature, cfg.use_jacobian, cfg.kp_scale, cfg.norm)
        self.generator = OcclusionAwareGenerator(cfg, c)

    def generate(self, source, kp_driving, kp_source):
        return self.generator(source, kp_driving, kp_source)

    def loss(self, phase, batch, step):
        return self.equivariant_reconstruction_loss(batch, self.kp_detector, "kp_driving",
                                                    jacobian=self.cfg.use_jacobian,
                                                    w_jacobian=self.cfg.w_equi_jacobian)

    def render_extras(self, out, batch):
        ex = super().render_extras(out, batch)
        ex["deformed"] = out["deformed"]
        if "occlusion_map" in out:
            ex["occlusion"] = out["occlusion_map"]
        return ex
