"""`x2face`: X2Face (Wiles et al., ECCV 2018) as a pure 2D warp baseline.

Embedding network: a U-Net on the source predicts a sampling field (a displacement from the identity) that
resamples the source into an "embedded face", a canonical frame learned without supervision. Driving
network: a U-Net on the driving frame predicts the sampling field that fetches each driving pixel from the
embedded face. The output is the embedded face warped by the driving field: nothing is generated, only
moved, so occluded / disoccluded regions cannot be filled (the weakness the later papers fix).
Trained with the multi-scale L1 of the other animation methods (the paper: L1 + identity/photometric terms).
No keypoints, so motion transfer is absolute only (the driving field is computed from the driving frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from neuralrender.graphics.warp import identity_grid
from neuralrender.losses.pyramid import pyramid_l1
from neuralrender.methods._animation import AnimationDataConfig, AnimationMethod
from neuralrender.nn.dense_motion import deform
from neuralrender.nn.unet import UNet
from neuralrender.registry import register


@dataclass
class X2FaceConfig(AnimationDataConfig):
    width: int = field(default=16, metadata={"help": "first-level channels of both U-Nets"})
    depth: int = field(default=4, metadata={"help": "down-samplings of both U-Nets"})
    max_features: int = field(default=128, metadata={"help": "channel cap"})
    norm: str = field(default="group", metadata={"help": "batch | group | instance: group by default (batch, the papers', "
                                                          "leaves a train/eval gap after short training)"})
    w_rec: float = field(default=10.0, metadata={"help": "weight of the multi-scale L1 reconstruction loss"})


@register("x2face")
class X2Face(AnimationMethod):
    description = "X2Face: embedding network (source -> embedded face) + driving network (flow from it), pure warp"
    Config = X2FaceConfig

    def __init__(self, cfg: X2FaceConfig, info):
        super().__init__(cfg, info)
        c = info.get("channels", 3)
        kw = dict(width=cfg.width, depth=cfg.depth, max_width=cfg.max_features, norm=cfg.norm, up="bilinear",
                  out_act="tanh")
        self.embedding = UNet(c, 2, **kw)
        self.driving = UNet(c, 2, **kw)
        for net in (self.embedding, self.driving):  # start at the identity warp
            torch.nn.init.zeros_(net.head.weight)
            torch.nn.init.zeros_(net.head.bias)

    def field(self, net, image: torch.Tensor) -> torch.Tensor:
        """Sampling grid [B,H,W,2] = identity + 2 * tanh displacement (normalized units)."""
        B, _, H, W = image.shape
        return identity_grid(B, H, W, image.dtype, image.device) + 2 * net(image).permute(0, 2, 3, 1)

    def embed(self, source: torch.Tensor) -> torch.Tensor:
        return deform(source, self.field(self.embedding, source), padding="border")

    def reconstruct(self, source, driving):
        emb = self.embed(source)
        grid = self.field(self.driving, driving)
        return {"prediction": deform(emb, grid, padding="border"), "embedded": emb, "deformation": grid}

    @torch.no_grad()
    def animate(self, source, driving, relative=True, adapt_scale=True, chunk: int = 16):
        emb = self.embed(source)
        preds = [deform(emb.expand(d.shape[0], -1, -1, -1), self.field(self.driving, d), padding="border")
                 for d in driving.split(chunk)]
        return {"prediction": torch.cat(preds), "embedded": emb}

    def loss(self, phase, batch, step):
        out = self.reconstruct(batch["source"], batch["driving"])
        rec = pyramid_l1(out["prediction"], batch["driving"])
        return self.cfg.w_rec * rec, {"rec": rec.item()}

    def render_extras(self, out, batch):
        return {"embedded": out["embedded"]}
