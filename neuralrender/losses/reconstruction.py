"""Reconstruction losses: (masked) L1 and a VGG perceptual loss that needs real weights on disk.

The perceptual loss is never computed with random weights: `PerceptualLoss.from_path(None)` returns None and
`perceptual_status(path)` says why, so a run can print "perceptual loss: off (...)".
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.errors import DataError

# torchvision's vgg16().features layout: conv channel counts, "M" = max-pool. Keys match its state dict
# ("features.<i>.weight"), so a torchvision checkpoint (vgg16-*.pth) or a safetensors export of it loads as is.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_TAPS = (3, 8, 15, 22)  # relu1_2, relu2_2, relu3_3, relu4_3
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error of pred/target [B,C,H,W]; mask [B,1,H,W] (or [B,H,W]) restricts it to covered pixels."""
    err = (pred - target).abs()
    if mask is None:
        return err.mean()
    m = (mask if mask.dim() == 4 else mask.unsqueeze(1)).to(err.dtype).expand_as(err)
    return (err * m).sum() / m.sum().clamp_min(1.0)


def _vgg16_features(upto: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
        if len(layers) > upto:
            break
    return nn.Sequential(*layers[: upto + 1])


def _load_state(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise DataError(path, "not a state dict of VGG16 weights", field="weights")
    return {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}


def perceptual_weights_path(path: str | os.PathLike | None = None) -> Path | None:
    """The VGG16 weights file to use: `path`, else $NR_VGG_WEIGHTS, else None (never downloads)."""
    p = path or os.environ.get("NR_VGG_WEIGHTS")
    return Path(p).expanduser() if p else None


def perceptual_status(path: str | os.PathLike | None = None) -> str:
    """One line for a run's log: whether the perceptual loss is on, and with which weights."""
    p = perceptual_weights_path(path)
    if p is None:
        return "perceptual loss: off (no VGG16 weights given: pass --vgg-weights FILE or set NR_VGG_WEIGHTS)"
    if not p.is_file():
        return f"perceptual loss: off ({p} does not exist)"
    return f"perceptual loss: on (VGG16 weights from {p})"


class PerceptualLoss(nn.Module):
    """L1 between VGG16 relu1_2/2_2/3_3/4_3 features of pred and target [B,3,H,W] in [0,1]. Frozen."""

    def __init__(self, state: dict):
        super().__init__()
        self.net = _vgg16_features(_TAPS[-1])
        missing = [k for k in self.net.state_dict() if k not in state]
        if missing:
            raise DataError("VGG16 weights", f"missing tensor 'features.{missing[0]}'", field="features")
        self.net.load_state_dict({k: state[k] for k in self.net.state_dict()})
        self.net.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_path(cls, path: str | os.PathLike | None = None) -> "PerceptualLoss | None":
        """Load from a .pth / .safetensors file of torchvision's vgg16 (or $NR_VGG_WEIGHTS); None if none given."""
        p = perceptual_weights_path(path)
        if p is None:
            return None
        if not p.is_file():
            raise DataError(p, "VGG16 weights file not found", field="vgg_weights")
        return cls(_load_state(p))

    def train(self, mode: bool = True):  # the backbone always stays in eval mode
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = (torch.cat([pred, target], 0) - self.mean) / self.std
        loss = pred.new_zeros(())
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i in _TAPS:
                a, b = x.chunk(2, 0)
                loss = loss + F.l1_loss(a, b.detach())
        return loss
