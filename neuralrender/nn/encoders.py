"""pix2pixHD's instance-wise feature encoder, for multimodal synthesis.

The encoder E maps the real image to a low-dimensional feature map; instance-wise average pooling makes the
feature constant inside every instance, and the generator sees it as extra input channels. At test time a
feature vector per instance is sampled (pix2pixHD clusters the training features per class; here
`FeatureBank` keeps a ring buffer of training features per class and draws one at random), so one label map
gives several plausible outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.nn.unet import UNet

__all__ = ["instance_average", "InstanceFeatureEncoder", "FeatureBank", "paint_instances"]


def _flat_ids(instances: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Instance map [B,1,H,W] (or [B,H,W]) ints -> per-pixel ids unique across the batch [B,H*W], count."""
    if instances is None:
        B, _, H, W = like.shape
        return torch.arange(B, device=like.device)[:, None].expand(B, H * W), B
    inst = instances[:, 0] if instances.dim() == 4 else instances
    if inst.dtype.is_floating_point:
        raise NeuralRenderError(f"instance map must hold integers, got {inst.dtype}")
    if inst.shape[0] != like.shape[0] or inst.shape[-2:] != like.shape[-2:]:
        raise NeuralRenderError(f"instance map {tuple(inst.shape)} does not match features {tuple(like.shape)}")
    B = inst.shape[0]
    flat = inst.reshape(B, -1).long()
    _, ids = torch.unique(flat, return_inverse=True)  # dense ids 0..n-1 over the whole batch
    n_u = int(ids.max()) + 1 if ids.numel() else 1
    ids = ids + torch.arange(B, device=ids.device)[:, None] * n_u  # keep images apart
    return ids, B * n_u


def instance_average(features: torch.Tensor, instances: torch.Tensor | None) -> torch.Tensor:
    """Replace every pixel's feature by the mean over its instance: [B,C,H,W], ids [B,1,H,W] -> [B,C,H,W].

    instances=None treats each image as one instance (a global style code).
    """
    B, C, H, W = features.shape
    ids, n = _flat_ids(instances, features)
    f = features.permute(0, 2, 3, 1).reshape(-1, C)
    idx = ids.reshape(-1)
    sums = f.new_zeros(n, C).index_add_(0, idx, f)
    counts = f.new_zeros(n).index_add_(0, idx, torch.ones_like(idx, dtype=f.dtype)).clamp_min(1)
    return (sums / counts[:, None])[idx].reshape(B, H, W, C).permute(0, 3, 1, 2)


class InstanceFeatureEncoder(nn.Module):
    """image [B,3,H,W], instances [B,1,H,W] ints -> instance-averaged features [B,feat_channels,H,W] in [-1,1].

    The network is the project's U-Net without skips (an encoder-decoder, tanh output), as pix2pixHD's E.
    """

    def __init__(self, in_channels: int = 3, feat_channels: int = 3, width: int = 16, depth: int = 3,
                 norm: str = "instance"):
        super().__init__()
        self.feat_channels = feat_channels
        self.net = UNet(in_channels, feat_channels, width=width, depth=depth, norm=norm, act="relu", skips=False,
                        out_act="tanh")

    def forward(self, image: torch.Tensor, instances: torch.Tensor | None) -> torch.Tensor:
        return instance_average(self.net(image), instances)


def paint_instances(codes: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
    """Per-instance codes [B,N,C] (indexed by instance id in [0,N)) -> feature map [B,C,H,W] over ids [B,1,H,W].

    Negative ids (background) get zeros.
    """
    inst = (instances[:, 0] if instances.dim() == 4 else instances).long()
    B, N, C = codes.shape
    if int(inst.max()) >= N:
        raise NeuralRenderError(f"instance id {int(inst.max())} has no code (only {N} codes)")
    valid = inst >= 0
    idx = inst.clamp_min(0).reshape(B, -1, 1).expand(-1, -1, C)
    out = torch.gather(codes, 1, idx).reshape(B, *inst.shape[1:], C).permute(0, 3, 1, 2)
    return out * valid[:, None]


class FeatureBank(nn.Module):
    """Ring buffer of encoder features per class: bank [num_classes, size, C] (a buffer: saved in checkpoints).

    `add(features, instances)`: the instance-averaged feature of every instance (its class = its id) goes into
    its class's ring. `sample(instances, generator)`: a feature map with one randomly drawn stored feature per
    instance id (ids without stored features get the bank's mean feature).
    """

    def __init__(self, num_classes: int, feat_channels: int, size: int = 64):
        super().__init__()
        self.num_classes, self.size = num_classes, size
        self.register_buffer("bank", torch.zeros(num_classes, size, feat_channels))
        self.register_buffer("count", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def add(self, features: torch.Tensor, instances: torch.Tensor) -> None:
        inst = (instances[:, 0] if instances.dim() == 4 else instances).long()
        for b in range(inst.shape[0]):
            for k in torch.unique(inst[b]).tolist():
                if k < 0 or k >= self.num_classes:
                    continue
                m = inst[b] == k
                v = features[b][:, m].mean(1)
                self.bank[k, int(self.count[k]) % self.size] = v
                self.count[k] += 1

    @torch.no_grad()
    def sample(self, instances: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        B = instances.shape[0]
        C = self.bank.shape[-1]
        filled = self.count.clamp(max=self.size)
        mean = self.bank.sum((0, 1)) / filled.sum().clamp_min(1)
        codes = torch.empty(B, self.num_classes, C)
        for k in range(self.num_classes):
            n = int(filled[k])
            if n == 0:
                codes[:, k] = mean.cpu()
            else:
                pick = torch.randint(n, (B,), generator=generator)
                codes[:, k] = self.bank[k, pick.to(self.bank.device)].cpu()
        return paint_instances(codes.to(self.bank.device), instances)
