"""Image and video generators: the ResNet generator (= pix2pixHD's global generator G1), pix2pixHD's local
enhancer (G2 wrapped around G1, coarse-to-fine) and vid2vid's sequential generator.

All generators are fully convolutional: inputs whose H, W are not multiples of 2**n_down are padded
(replicate) and the output is cropped back. Outputs are images in [0,1] ('sigmoid'), [-1,1] ('tanh') or raw.
(The U-Net generator of pix2pix is neuralrender.nn.unet.UNet.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.warp import warp
from neuralrender.nn.blocks import norm_layer

__all__ = ["ResnetBlock", "ResnetGenerator", "LocalEnhancer", "SequentialGenerator", "apply_out_act"]


def apply_out_act(y: torch.Tensor, kind: str) -> torch.Tensor:
    """'sigmoid' | 'tanh' | 'none'."""
    if kind == "sigmoid":
        return torch.sigmoid(y)
    if kind == "tanh":
        return torch.tanh(y)
    if kind == "none":
        return y
    raise ValueError(f"unknown output activation '{kind}'; valid: sigmoid, tanh, none")


def pad_to(x: torch.Tensor, m: int) -> torch.Tensor:
    ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x


class ResnetBlock(nn.Module):
    """x + [reflect-pad, conv3, norm, ReLU, reflect-pad, conv3, norm](x): channels and size kept (pix2pixHD)."""

    def __init__(self, channels: int, norm: str = "instance", dropout: float = 0.0):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm_layer(norm, channels), nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm_layer(norm, channels)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _front(cin: int, width: int, n_down: int, norm: str, max_width: int) -> tuple[nn.Sequential, int]:
    """conv7 stem + n_down stride-2 conv3 downsamplings; returns (module, channels out)."""
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(cin, width, 7), norm_layer(norm, width), nn.ReLU(True)]
    c = width
    for _ in range(n_down):
        c2 = min(c * 2, max_width)
        layers += [nn.Conv2d(c, c2, 3, 2, 1), norm_layer(norm, c2), nn.ReLU(True)]
        c = c2
    return nn.Sequential(*layers), c


def pixel_coords(x: torch.Tensor, octaves: int = 0) -> torch.Tensor:
    """[B,C,H,W] -> [B,2,H,W]: each pixel's x and y, -1 .. 1 across the image. octaves > 0 appends Fourier
    features (Tancik et al. 2020) sin, cos(2^k pi x) and of y for k < octaves: [B,2+4*octaves,H,W] (periods W/2^k
    pixels: k = 4 is 4 pixels at 64^2)."""
    B, _, H, W = x.shape
    ys = torch.linspace(-1, 1, H, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, W, device=x.device, dtype=x.dtype)
    xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), 0)
    feats = [xy] + [f(2**k * torch.pi * xy) for k in range(octaves) for f in (torch.sin, torch.cos)]
    return torch.cat(feats, 0).expand(B, -1, H, W)


UP_MODES = ("transpose", "bilinear", "nearest", "shuffle")


def _upsample(c: int, c2: int, up: str) -> list[nn.Module]:
    """x2 upsampling c -> c2 channels: 'transpose' (3x3 stride-2 transposed conv, pix2pixHD's), a resize
    convolution ('bilinear' | 'nearest' upsampling, then a reflect-padded 3x3 conv: no checkerboard pattern), or
    'shuffle' (sub-pixel conv, Shi et al. 2016: a reflect-padded 3x3 conv to 4*c2 channels, then PixelShuffle; each
    of the 4 output sub-pixels has its own filters, as with a transposed conv, without its uneven overlap; ICNR
    init, Aitken et al. 2017: the 4 filters start equal, i.e. nearest resize + conv)."""
    if up == "transpose":
        return [nn.ConvTranspose2d(c, c2, 3, 2, 1, output_padding=1)]
    if up == "shuffle":
        conv = nn.Conv2d(c, 4 * c2, 3)
        with torch.no_grad():
            conv.weight.copy_(conv.weight[::4].repeat_interleave(4, 0))
            conv.bias.copy_(conv.bias[::4].repeat_interleave(4, 0))
        return [nn.ReflectionPad2d(1), conv, nn.PixelShuffle(2)]
    if up not in UP_MODES:
        raise ValueError(f"unknown upsampling '{up}'; valid: {', '.join(UP_MODES)}")
    resize = nn.Upsample(scale_factor=2, mode=up, align_corners=False if up == "bilinear" else None)
    return [resize, nn.ReflectionPad2d(1), nn.Conv2d(c, c2, 3)]


def _back(c: int, width: int, n_up: int, norm: str, up: str = "transpose") -> tuple[nn.Sequential, int]:
    """n_up x2 upsamplings (see _upsample) halving channels down to `width`; returns (module, channels out)."""
    layers = []
    for i in range(n_up):
        c2 = max(width, c // 2) if i < n_up - 1 else width
        layers += [*_upsample(c, c2, up), norm_layer(norm, c2), nn.ReLU(True)]
        c = c2
    return nn.Sequential(*layers), c


def _head(c: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(c, cout, 7))


class ResnetGenerator(nn.Module):
    """x [B,in_channels,H,W] -> [B,out_channels,H,W] (Johnson et al. / pix2pixHD global generator G1).

    conv7 stem (width) -> n_down stride-2 convs (channels doubled, capped at max_width) -> n_blocks ResnetBlocks
    -> n_down x2 upsamplings (`up`: 'transpose' = transposed convs as in the paper, or a resize convolution
    'bilinear' | 'nearest') -> conv7 head -> out_act. `features(x)` returns the last feature map before the head
    ([B,width,H,W]), which the local enhancer adds to its own features.
    """

    def __init__(self, in_channels: int, out_channels: int = 3, width: int = 64, n_down: int = 3, n_blocks: int = 9,
                 norm: str = "instance", max_width: int = 1024, out_act: str = "sigmoid", up: str = "transpose"):
        super().__init__()
        self.n_down, self.out_act, self.width = n_down, out_act, width
        self.front, c = _front(in_channels, width, n_down, norm, max_width)
        self.blocks = nn.Sequential(*[ResnetBlock(c, norm) for _ in range(n_blocks)])
        self.back, c = _back(c, width, n_down, norm, up)
        self.head = _head(c, out_channels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        h = self.back(self.blocks(self.front(pad_to(x, 2**self.n_down))))
        return h[..., :H, :W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_out_act(self.head(self.features(x)), self.out_act)


class LocalEnhancer(nn.Module):
    """pix2pixHD's coarse-to-fine generator: G1 (a ResnetGenerator of width 2*width) on the input downsampled by
    2, and G2 whose front end (conv7 + one stride-2 conv to 2*width) is added to G1's last features before G2's
    residual blocks and upsampling (`up` for both, see ResnetGenerator).

    forward(x [B,C,H,W]) -> [B,out,H,W]; global_only(x) -> G1's own output at H/2 x W/2 (the first training stage).
    skip (not in the paper; default off): the stem's full-resolution features are concatenated to the upsampled
    features before the head (a U-Net-like full-resolution skip; otherwise the only full-resolution layers are
    the stem, the last upsampling conv and the head).
    """

    def __init__(self, in_channels: int, out_channels: int = 3, width: int = 32, n_down_global: int = 3,
                 n_blocks_global: int = 9, n_blocks_local: int = 3, norm: str = "instance", max_width: int = 1024,
                 out_act: str = "sigmoid", up: str = "transpose", skip: bool = False):
        super().__init__()
        self.out_act, self.skip = out_act, skip
        self.global_g = ResnetGenerator(in_channels, out_channels, width * 2, n_down_global, n_blocks_global, norm,
                                        max_width, out_act, up)
        self.front, c = _front(in_channels, width, 1, norm, max_width)
        self.blocks = nn.Sequential(*[ResnetBlock(c, norm) for _ in range(n_blocks_local)])
        self.back, c = _back(c, width, 1, norm, up)
        self.head = _head(c + (width if skip else 0), out_channels)
        self.multiple = 2 ** (n_down_global + 1)

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        """The input pyramid of pix2pixHD: 3x3 average pooling, stride 2."""
        return F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)

    def global_only(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_g(self.downsample(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        xp = pad_to(x, self.multiple)
        g = self.global_g.features(self.downsample(xp))
        stem = self.front[:4](xp)  # reflect-pad, conv7, norm, ReLU: full resolution
        h = self.back(self.blocks(self.front[4:](stem) + g))
        if self.skip:
            h = torch.cat([h, stem], 1)
        return apply_out_act(self.head(h), self.out_act)[..., :H, :W]


class SequentialGenerator(nn.Module):
    """vid2vid's sequential generator: frame t from conditions t-L..t and generated frames t-L..t-1.

    forward(conds [B,(L+1)*Cc,H,W], prev [B,L*3,H,W] or None) -> dict with
      image [B,3,H,W]   = (1 - mask) * warped + mask * hallucinated,
      hallucinated [B,3,H,W], flow [B,2,H,W] (pixels; warp(prev_last, flow) = warped), mask [B,1,H,W] in [0,1],
      warped [B,3,H,W].
    Two encoders (conditions; previous frames) are summed before the residual blocks; two decoders give the
    hallucinated image and the flow + occlusion mask. With prev=None (the first frames of a sequence) the
    previous-frame encoder sees zeros and the mask is forced to 1 (pure hallucination).
    flow_scale: the flow head's output is multiplied by it (pixels), so that small weights give useful flows.
    up: the decoders' x2 upsamplings (see ResnetGenerator; default 'transpose').
    """

    def __init__(self, cond_channels: int, n_prev: int = 2, width: int = 32, n_down: int = 3, n_blocks: int = 6,
                 norm: str = "instance", max_width: int = 512, flow_scale: float = 4.0, up: str = "transpose"):
        super().__init__()
        self.n_prev, self.cond_channels, self.n_down, self.flow_scale = n_prev, cond_channels, n_down, flow_scale
        self.enc_cond, c = _front(cond_channels * (n_prev + 1), width, n_down, norm, max_width)
        self.enc_prev, _ = _front(3 * n_prev, width, n_down, norm, max_width)
        self.blocks = nn.Sequential(*[ResnetBlock(c, norm) for _ in range(n_blocks)])
        self.dec_img, ci = _back(c, width, n_down, norm, up)
        self.head_img = _head(ci, 3)
        self.dec_flow, cf = _back(c, width, n_down, norm, up)
        self.head_flow = _head(cf, 3)
        nn.init.zeros_(self.head_flow[1].weight)  # start from zero flow and mask = 0.5
        nn.init.zeros_(self.head_flow[1].bias)

    def check_conds(self, conds: torch.Tensor) -> None:
        if conds.shape[1] != self.cond_channels * (self.n_prev + 1):
            raise NeuralRenderError(f"{type(self).__name__} expects {self.n_prev + 1} conditions of {self.cond_channels} "
                                    f"channels ({self.cond_channels * (self.n_prev + 1)}), got {conds.shape[1]}")

    def trunk(self, conds: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """Both encoders summed, then the residual blocks (prev None: the previous-frame encoder sees zeros)."""
        m = 2**self.n_down
        cp = pad_to(conds, m)
        prev_in = cp.new_zeros(conds.shape[0], 3 * self.n_prev, *cp.shape[-2:]) if prev is None else pad_to(prev, m)
        return self.blocks(self.enc_cond(cp) + self.enc_prev(prev_in))

    def blend(self, h: torch.Tensor, prev: torch.Tensor | None, hallucinated: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flow + mask decoder on the trunk's features h, and the output dict of `forward`."""
        H, W = hallucinated.shape[-2:]
        fm = self.head_flow(self.dec_flow(h))[..., :H, :W]
        flow = fm[:, :2] * self.flow_scale
        if prev is None:
            mask = torch.ones_like(fm[:, 2:])
            warped = torch.zeros_like(hallucinated)
            image = hallucinated
        else:
            mask = torch.sigmoid(fm[:, 2:])
            warped = warp(prev[:, -3:], flow, padding="border")
            image = (1 - mask) * warped + mask * hallucinated
        return {"image": image, "hallucinated": hallucinated, "flow": flow, "mask": mask, "warped": warped}

    def forward(self, conds: torch.Tensor, prev: torch.Tensor | None) -> dict[str, torch.Tensor]:
        self.check_conds(conds)
        H, W = conds.shape[-2:]
        h = self.trunk(conds, prev)
        hallucinated = torch.sigmoid(self.head_img(self.dec_img(h)))[..., :H, :W]
        return self.blend(h, prev, hallucinated)
