"""`monkey-net`: Monkey-Net (Siarohin et al., "Animating Arbitrary Objects via Deep Motion Transfer", CVPR 2019).

Keypoints without Jacobians (zeroth-order: each keypoint moves its neighbourhood by a pure translation),
a motion network that predicts motion masks over the K translations + background and combines them into
one dense flow (masks start on the background, as in the official code), and a U-Net generator whose encoder
features are warped by that flow at EVERY level, with the keypoint-heatmap difference given to every decoder
level and the warped source image to the last layer (the official code's first skip is the image).
Output (--output residual, our default, not the paper's): the last layer, zero-initialised, predicts a
correction to the warped source in logit space, sigmoid(logit(warped source) + last layer), so the untrained
generator is the warp; --output decoded is the paper's sigmoid(last layer), which after 500 Adam steps at
lr 1e-3 cannot yet pass the source through (blurry, worse than copying the source). --gate heat (default, ours)
multiplies the correction by 1 - prod_k(1 - |G(kp_d)_k - G(kp_s)_k|), so the decoder changes pixels only near
keypoints that moved (none when nothing moved); --gate none corrects everywhere.
Trained on frame pairs with a multi-scale L1 reconstruction loss and keypoint equivariance. The paper adds a
GAN and feature-matching loss; we train without them (same losses as our fomm, so the comparison isolates motion).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.losses.pyramid import pyramid_l1
from neuralrender.methods._animation import AnimationDataConfig, KeypointAnimationMethod
from neuralrender.nn.blocks import norm_layer
from neuralrender.nn.dense_motion import DenseMotionNetwork, deform
from neuralrender.nn.hourglass import DownBlock, UpBlock
from neuralrender.nn.keypoints import KeypointDetector, keypoint_heatmaps
from neuralrender.registry import register


@dataclass
class MonkeyNetConfig(AnimationDataConfig):
    num_kp: int = field(default=10, metadata={"help": "number of keypoints"})
    kp_width: int = field(default=16, metadata={"help": "block expansion of the keypoint detector hourglass"})
    kp_blocks: int = field(default=3, metadata={"help": "down blocks of the keypoint detector hourglass"})
    motion_width: int = field(default=16, metadata={"help": "block expansion of the motion-mask hourglass"})
    motion_blocks: int = field(default=3, metadata={"help": "down blocks of the motion-mask hourglass"})
    max_features: int = field(default=128, metadata={"help": "channel cap"})
    gen_width: int = field(default=16, metadata={"help": "channels of the generator's first layer"})
    gen_down: int = field(default=3, metadata={"help": "down blocks of the U-Net generator"})
    kp_scale: float = field(default=0.5, metadata={"help": "the detector and motion network see the image scaled by this"})
    temperature: float = field(default=0.1, metadata={"help": "soft-argmax temperature"})
    kp_variance: float = field(default=0.01, metadata={"help": "variance of keypoint Gaussians (normalized units)"})
    norm: str = field(default="group", metadata={"help": "batch | group | instance: group by default (batch, the papers', "
                                                          "leaves a train/eval gap after short training)"})
    w_rec: float = field(default=10.0, metadata={"help": "weight of the multi-scale L1 reconstruction loss"})
    w_equi_value: float = field(default=10.0, metadata={"help": "weight of the keypoint equivariance loss"})
    sigma_affine: float = field(default=0.05, metadata={"help": "std of the random affine part of the TPS"})
    sigma_tps: float = field(default=0.005, metadata={"help": "std of the random TPS weights"})
    points_tps: int = field(default=5, metadata={"help": "TPS control grid is points x points"})
    output: str = field(default="residual", metadata={"help": "residual: the generator's last layer (zero-initialised) "
                                                             "corrects the warped source in logit space; decoded: "
                                                             "sigmoid of the last layer (the paper's)"})
    gate: str = field(default="heat", metadata={"help": "residual output only: where the correction applies. heat: "
                                                       "near keypoints that moved, 1 - prod_k(1 - |G(kp_d) - G(kp_s)|) "
                                                       "(0 where nothing moved); none: everywhere"})
    w_rec_deformed: float = field(default=0.0, metadata={"help": "weight of a multi-scale L1 on the warped source "
                                                                 "alone (the official code's reconstruction_deformed)"})


class MotionTransferGenerator(nn.Module):
    """U-Net whose encoder features are all warped by the dense flow; (source, kp_driving, kp_source) ->
    {"prediction", "deformed", "deformation", "mask"}."""

    def __init__(self, cfg: MonkeyNetConfig, channels: int = 3):
        super().__init__()
        w, mf, n = cfg.gen_width, cfg.max_features, cfg.norm
        self.num_kp, self.kp_variance = cfg.num_kp, cfg.kp_variance
        self.motion = DenseMotionNetwork(cfg.num_kp, channels, cfg.motion_width, cfg.motion_blocks, mf,
                                         estimate_occlusion=False, kp_variance=cfg.kp_variance,
                                         scale_factor=cfg.kp_scale, use_jacobian=False, norm=n,
                                         mask_init="identity")  # the official code's (masks start on the background)
        self.first = nn.Sequential(nn.Conv2d(channels, w, 7, padding=3), norm_layer(n, w), nn.ReLU())
        ch = [min(mf, w * 2**i) for i in range(cfg.gen_down + 1)]
        self.down = nn.ModuleList(DownBlock(ch[i], ch[i + 1], n) for i in range(cfg.gen_down))
        self.up = nn.ModuleList()
        for i in reversed(range(cfg.gen_down)):  # every decoder level also gets the keypoint-heatmap difference
            cin = (ch[i + 1] if i == cfg.gen_down - 1 else 2 * ch[i + 1]) + cfg.num_kp
            self.up.append(UpBlock(cin, ch[i], n))
        # the last layer also sees the deformed source image itself (the official code's first skip is the image)
        self.final = nn.Conv2d(2 * w + cfg.num_kp + channels, channels, 7, padding=3)
        if cfg.output not in ("residual", "decoded"):
            raise NeuralRenderError(f"monkey-net --output must be residual or decoded, got {cfg.output!r}")
        self.residual = cfg.output == "residual"
        if cfg.gate not in ("heat", "none"):
            raise NeuralRenderError(f"monkey-net --gate must be heat or none, got {cfg.gate!r}")
        self.gate = cfg.gate == "heat" and self.residual
        if self.residual:  # the untrained generator returns the warped source; the decoder learns a correction
            nn.init.zeros_(self.final.weight)
            nn.init.zeros_(self.final.bias)

    def heat(self, kp_driving, kp_source, height, width):
        """Keypoint-heatmap difference G(kp_d) - G(kp_s) [B,K,height,width]."""
        return keypoint_heatmaps(kp_driving["value"], height, width, self.kp_variance) - \
            keypoint_heatmaps(kp_source["value"], height, width, self.kp_variance)

    def forward(self, source, kp_driving, kp_source):
        m = self.motion(source, kp_driving, kp_source)
        grid = m["deformation"]
        feats = [self.first(source)]
        for d in self.down:
            feats.append(d(feats[-1]))
        feats = [deform(f, grid) for f in feats]
        h = feats.pop()
        for u in self.up:
            h = torch.cat([h, self.heat(kp_driving, kp_source, *h.shape[-2:])], 1)
            h = torch.cat([u(h), feats.pop()], 1)
        heat = self.heat(kp_driving, kp_source, *source.shape[-2:])
        deformed = deform(source, grid)
        logits = self.final(torch.cat([h, heat, deformed], 1))
        out = {"deformation": grid, "mask": m["mask"], "deformed": deformed}
        if self.gate:  # the correction acts only where keypoints moved (where they came from and went to)
            out["gate"] = 1 - (1 - heat.abs()).prod(1, keepdim=True)
            logits = logits * out["gate"]
        if self.residual:
            logits = logits + torch.logit(deformed.clamp(0.01, 0.99))
        out["prediction"] = torch.sigmoid(logits)
        return out


@register("monkey-net")
class MonkeyNet(KeypointAnimationMethod):
    description = "Monkey-Net: keypoints + zeroth-order motion + motion masks + U-Net generator warping all levels"
    Config = MonkeyNetConfig
    legacy_config = {**KeypointAnimationMethod.legacy_config, "output": "decoded", "gate": "none"}  # runs saved before these fields existed

    def __init__(self, cfg: MonkeyNetConfig, info):
        super().__init__(cfg, info)
        c = info.get("channels", 3)
        self.kp_detector = KeypointDetector(cfg.num_kp, c, cfg.kp_width, cfg.kp_blocks, cfg.max_features,
                                            cfg.temperature, False, cfg.kp_scale, cfg.norm)
        self.generator = MotionTransferGenerator(cfg, c)

    def generate(self, source, kp_driving, kp_source):
        return self.generator(source, kp_driving, kp_source)

    def loss(self, phase, batch, step):
        loss, logs, out = self.equivariant_reconstruction_loss(batch, self.kp_detector, "kp_driving", return_out=True)
        if self.cfg.w_rec_deformed > 0:
            rec_d = pyramid_l1(out["deformed"], batch["driving"])
            loss = loss + self.cfg.w_rec_deformed * rec_d
            logs["rec_deformed"] = rec_d.item()
        return loss, logs

    def render_extras(self, out, batch):
        return {**super().render_extras(out, batch), "deformed": out["deformed"]}
