"""PatchGAN, multi-scale and flow-conditioned video discriminators (pix2pix, pix2pixHD, vid2vid).

`PatchDiscriminator` is the 70x70 PatchGAN of pix2pix for n_layers=3: 4x4 convs, stride 2 for the first
n_layers, then two stride-1 convs down to one logit per patch. It returns the list of every layer's output
(the last is the logits map [B,1,h,w]) so that losses.gan.feature_matching_loss can use the features.
`MultiScaleDiscriminator` runs num_d PatchGANs on the input downsampled by 1, 2, 4, ... (pix2pixHD).
`VideoDiscriminator` is vid2vid's D_V: a multi-scale PatchGAN over K consecutive frames stacked on the
channel axis together with the K-1 optical flows between them, so it judges both appearance over time and
whether the motion is consistent with the flow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.nn.blocks import norm_layer

__all__ = ["PatchDiscriminator", "MultiScaleDiscriminator", "VideoDiscriminator"]


class PatchDiscriminator(nn.Module):
    """x [B,in_channels,H,W] -> list of n_layers + 2 maps; the last is the logits [B,1,~H/2**n_layers,~W/2**n_layers].

    width: channels of the first layer (doubled per layer, capped at max_width); norm: 'instance' | 'batch' |
    'group' | 'none' (never on the first and last layer, as in pix2pix); spectral: spectral normalization on
    every conv (an alternative to the norm for hinge losses).
    """

    def __init__(self, in_channels: int, width: int = 64, n_layers: int = 3, norm: str = "instance",
                 max_width: int = 512, spectral: bool = False):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"PatchDiscriminator n_layers must be >= 1, got {n_layers}")
        sn = nn.utils.spectral_norm if spectral else (lambda m: m)
        chans = [min(width * 2**i, max_width) for i in range(n_layers + 1)]
        layers = [nn.Sequential(sn(nn.Conv2d(in_channels, chans[0], 4, 2, 1)), nn.LeakyReLU(0.2, True))]
        for i in range(1, n_layers + 1):
            stride = 2 if i < n_layers else 1
            layers.append(nn.Sequential(sn(nn.Conv2d(chans[i - 1], chans[i], 4, stride, 1)), norm_layer(norm, chans[i]),
                                        nn.LeakyReLU(0.2, True)))
        layers.append(nn.Sequential(sn(nn.Conv2d(chans[-1], 1, 4, 1, 1))))
        self.layers = nn.ModuleList(layers)
        self.in_channels = in_channels
        self.min_size = 3 * 2**n_layers  # smallest input side that leaves a logits map of at least 1x1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise NeuralRenderError(f"PatchDiscriminator expects [B,{self.in_channels},H,W], got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_size:
            raise NeuralRenderError(f"PatchDiscriminator with {len(self.layers) - 2} layers needs inputs of at least "
                                    f"{self.min_size}x{self.min_size}, got {tuple(x.shape[-2:])}")
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x)
        return feats


class MultiScaleDiscriminator(nn.Module):
    """x [B,C,H,W] -> [features of scale 0 (full res), scale 1 (H/2), ...]: num_d lists from PatchDiscriminator.

    Inputs between scales are downsampled with 3x3 average pooling, stride 2 (count_include_pad=False). Scales
    whose input would be smaller than a PatchDiscriminator's min_size are skipped (so a small image, e.g. in a
    coarse training stage, gets fewer scales); scale 0 always runs.
    """

    def __init__(self, in_channels: int, num_d: int = 2, width: int = 64, n_layers: int = 3, norm: str = "instance",
                 max_width: int = 512, spectral: bool = False):
        super().__init__()
        if num_d < 1:
            raise ValueError(f"MultiScaleDiscriminator num_d must be >= 1, got {num_d}")
        self.scales = nn.ModuleList(PatchDiscriminator(in_channels, width, n_layers, norm, max_width, spectral)
                                    for _ in range(num_d))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outs = []
        for k, d in enumerate(self.scales):
            if k > 0:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
                if min(x.shape[-2:]) < d.min_size:
                    break
            outs.append(d(x))
        return outs


class VideoDiscriminator(nn.Module):
    """vid2vid's flow-conditioned video discriminator over K consecutive frames.

    forward(frames [B,K,C,H,W], flows [B,K-1,2,H,W]) -> multi-scale outputs. flows[:, k] is the flow from
    frame k+1 back to frame k (warp(frames[:, k], flows[:, k]) ~ frames[:, k+1]), in pixels; it is divided
    by `flow_scale` (pixels) before being stacked with the frames so that its magnitude is about one.
    """

    def __init__(self, channels: int = 3, k: int = 3, num_d: int = 2, width: int = 64, n_layers: int = 3,
                 norm: str = "instance", flow_scale: float = 8.0):
        super().__init__()
        if k < 2:
            raise ValueError(f"VideoDiscriminator needs k >= 2 frames, got {k}")
        self.channels, self.k, self.flow_scale = channels, k, flow_scale
        self.net = MultiScaleDiscriminator(k * channels + (k - 1) * 2, num_d, width, n_layers, norm)

    def forward(self, frames: torch.Tensor, flows: torch.Tensor) -> list[list[torch.Tensor]]:
        B, K, C, H, W = frames.shape
        if K != self.k or C != self.channels:
            raise NeuralRenderError(f"VideoDiscriminator expects [B,{self.k},{self.channels},H,W], got {tuple(frames.shape)}")
        if tuple(flows.shape) != (B, K - 1, 2, H, W):
            raise NeuralRenderError(f"VideoDiscriminator flows must be [B,{K - 1},2,{H},{W}], got {tuple(flows.shape)}")
        x = torch.cat([frames.reshape(B, K * C, H, W), flows.reshape(B, (K - 1) * 2, H, W) / self.flow_scale], 1)
        return self.net(x)
