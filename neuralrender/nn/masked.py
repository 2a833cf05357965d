"""Masked and gated convolutions and the PixelCNN family (van den Oord et al. 2016a, 2016b).

Ordering. Pixels are generated in raster order (row by row, left to right) and, inside a pixel, colour
channel by colour channel (R, then G, then B). Feature maps keep that channel order by splitting their
channels into `groups` contiguous blocks (one per image channel): block g of a layer may read blocks < g of
its input at the current pixel (mask "A", used on the image itself) or blocks <= g (mask "B", every later
layer). Previous pixels are visible to every block.

Masks, for a kernel with centre (ch, cw):
  "A" / "B": rows above the centre, the centre row left of the centre, and the centre pixel per the
             channel-group rule above. A 1 x k kernel is the horizontal stack of the gated PixelCNN.
  "V":       rows up to and including the centre row (every column): the vertical stack. Its output at row r
             sees the current row, so it reaches the horizontal stack only after a shift down by one row.

Networks map integer images x [B,C,H,W] in [0, levels) to logits [B,C,levels,H,W]; the logits of pixel i,
channel c depend only on pixels before i and on the channels before c at pixel i. Each network splits into
`features(x)` (the input encoding, float [B,C*E,H,W], grouped by image channel) and `body(features, ...)`,
so tests can differentiate the logits w.r.t. the input. `autoregressive_sample` draws from any of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MASK_TYPES = ("A", "B", "V")


def channel_groups(channels: int, groups: int) -> torch.Tensor:
    """Group id of each of `channels` channels split into `groups` contiguous blocks: int64 [channels]."""
    if groups < 1 or channels % groups:
        raise ValueError(f"{channels} channels cannot be split into {groups} colour groups (need a multiple)")
    return torch.arange(channels) * groups // channels


def causal_mask(kernel: tuple[int, int], in_groups: torch.Tensor, out_groups: torch.Tensor, mask_type: str) -> torch.Tensor:
    """The float mask [Cout, Cin, kh, kw] of a masked convolution (see the module docstring).

    in_groups [Cin], out_groups [Cout]: channel-group ids (image channel each feature belongs to).
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(f"unknown mask type {mask_type!r}; valid: {', '.join(MASK_TYPES)}")
    kh, kw = kernel
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"masked convolutions need odd kernel sizes, got {kernel}")
    ch, cw = kh // 2, kw // 2
    m = torch.zeros(len(out_groups), len(in_groups), kh, kw)
    if mask_type == "V":
        m[:, :, : ch + 1, :] = 1
        return m
    m[:, :, :ch, :] = 1
    m[:, :, ch, :cw] = 1
    go, gi = out_groups.view(-1, 1), in_groups.view(1, -1)
    m[:, :, ch, cw] = (gi < go).float() if mask_type == "A" else (gi <= go).float()
    return m


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded convolution whose weight is multiplied by a causal mask.

    x [B,Cin,H,W] -> [B,Cout,H,W]. in_groups / out_groups: group ids (default: `groups` contiguous blocks).
    """

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], mask_type: str, groups: int = 1,
                 in_groups: torch.Tensor | None = None, out_groups: torch.Tensor | None = None, bias: bool = True):
        k = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
        super().__init__(cin, cout, k, padding=(k[0] // 2, k[1] // 2), bias=bias)
        gi = channel_groups(cin, groups) if in_groups is None else in_groups
        go = channel_groups(cout, groups) if out_groups is None else out_groups
        self.mask_type = mask_type
        self.register_buffer("mask", causal_mask(k, gi, go, mask_type), persistent=False)
        with torch.no_grad():  # re-scale the init to the fan-in the mask leaves
            self.weight.div_(self.mask.mean().clamp_min(1e-6).sqrt())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)


def gated(x: torch.Tensor) -> torch.Tensor:
    """Gated activation tanh(a) * sigmoid(b), a, b = the two channel halves of x [B,2C,...] -> [B,C,...]."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """[B,C,H,W] moved down one row (row 0 becomes zeros): row r of the result holds row r-1 of x."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


class GatedPixelCNNLayer(nn.Module):
    """One Gated PixelCNN layer with a vertical and a horizontal stack (no blind spot).

    v, h [B,Cv_in,H,W], [B,Ch_in,H,W] -> (v', h') [B,C,H,W] each, C = `channels`.
      v' = gated(Vconv(v) + cond)                     (k x k, mask "V")
      h' = h + W1x1 gated(Hconv(h) + V2H(shift_down(Vconv(v))) + cond)   (1 x k, mask "A" if first else "B")
    The first layer has no residual. Conditioning: `label_embed` [B,E] (a class embedding, added to both
    stacks through a linear map) and/or `cond` [B,S,H,W] (a spatial map at the image size, through 1x1 convs).
    """

    def __init__(self, cin: int, channels: int, kernel: int, first: bool, groups: int = 1,
                 in_groups: torch.Tensor | None = None, label_dim: int = 0, cond_channels: int = 0):
        super().__init__()
        gi = channel_groups(cin, groups) if in_groups is None else in_groups
        g2 = channel_groups(channels, groups).repeat(2)  # the two halves of a gated pre-activation
        self.first = first
        self.v_conv = MaskedConv2d(cin, 2 * channels, kernel, "V", in_groups=gi, out_groups=g2)
        self.h_conv = MaskedConv2d(cin, 2 * channels, (1, kernel), "A" if first else "B", in_groups=gi, out_groups=g2)
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d(channels, channels, 1, "B", groups=groups)
        self.label = nn.Linear(label_dim, 4 * channels, bias=False) if label_dim else None
        self.cond = nn.Conv2d(cond_channels, 4 * channels, 1, bias=False) if cond_channels else None

    def forward(self, v, h, label_embed=None, cond=None):
        v_pre = self.v_conv(v)
        h_pre = self.h_conv(h) + self.v_to_h(shift_down(v_pre))
        bias = 0
        if self.label is not None and label_embed is not None:
            bias = bias + self.label(label_embed)[:, :, None, None]
        if self.cond is not None and cond is not None:
            bias = bias + self.cond(cond)
        if torch.is_tensor(bias):
            bv, bh = bias.chunk(2, dim=1)
            v_pre, h_pre = v_pre + bv, h_pre + bh
        v_new = gated(v_pre)
        h_new = self.h_out(gated(h_pre))
        if not self.first:
            h_new = h_new + h
        return v_new, h_new


# --------------------------------------------------------------------------------------------------
# networks


class AutoregressiveNet(nn.Module):
    """Shared input encoding and output head of the PixelCNN-family networks.

    in_channels C: image channels (colour groups); levels K: values per channel; embed E: 0 encodes a value v
    as the scalar 2v/(K-1)-1, E>0 as a learned E-vector (codes of a VQ-VAE).
    """

    row_reach: int | None = None  # rows above a pixel that can affect its logits (None: all of them)

    def __init__(self, in_channels: int, levels: int, embed: int = 0):
        super().__init__()
        self.in_channels, self.levels, self.embed_dim = in_channels, levels, embed
        self.embed = nn.Embedding(levels, embed) if embed else None
        self.feat_channels = in_channels * (embed or 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x int [B,C,H,W] in [0,K) -> float features [B,C*E,H,W] (channel c's features contiguous)."""
        if self.embed is None:
            return x.float() * (2.0 / max(1, self.levels - 1)) - 1.0
        b, c, h, w = x.shape
        e = self.embed(x.long())  # [B,C,H,W,E]
        return e.permute(0, 1, 4, 2, 3).reshape(b, c * self.embed_dim, h, w)

    def feature_groups(self) -> torch.Tensor:
        return channel_groups(self.feat_channels, self.in_channels)

    def make_head(self, channels: int) -> nn.Sequential:
        g = self.in_channels
        return nn.Sequential(nn.ReLU(), MaskedConv2d(channels, channels, 1, "B", groups=g), nn.ReLU(),
                             MaskedConv2d(channels, self.in_channels * self.levels, 1, "B", groups=g))

    def to_logits(self, y: torch.Tensor) -> torch.Tensor:
        b, _, h, w = y.shape
        return y.view(b, self.in_channels, self.levels, h, w)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None, cond: torch.Tensor | None = None):
        """x int [B,C,H,W] -> logits [B,C,K,H,W]."""
        return self.body(self.features(x), label=label, cond=cond)


class PixelCNN(AutoregressiveNet):
    """The original PixelCNN: a 7x7 mask-A conv, residual blocks of masked convs (1x1 -> kxk -> 1x1, mask B),
    a two-layer 1x1 head. Has the blind spot of stacked masked convolutions (kept on purpose: it is the paper).
    """

    def __init__(self, in_channels: int, levels: int, channels: int = 64, layers: int = 8, kernel: int = 3,
                 first_kernel: int = 7, embed: int = 0):
        super().__init__(in_channels, levels, embed)
        g = in_channels
        half = max(g, (channels // 2) // g * g)
        self.first = MaskedConv2d(self.feat_channels, channels, first_kernel, "A", in_groups=self.feature_groups(),
                                  out_groups=channel_groups(channels, g))
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.ReLU(), MaskedConv2d(channels, half, 1, "B", groups=g), nn.ReLU(),
            MaskedConv2d(half, half, kernel, "B", groups=g), nn.ReLU(),
            MaskedConv2d(half, channels, 1, "B", groups=g)) for _ in range(layers))
        self.head = self.make_head(channels)
        self.row_reach = first_kernel // 2 + layers * (kernel // 2)  # rows above that can reach the output

    def body(self, f: torch.Tensor, label=None, cond=None) -> torch.Tensor:
        y = self.first(f)
        for blk in self.blocks:
            y = y + blk(y)
        return self.to_logits(self.head(y))


class GatedPixelCNN(AutoregressiveNet):
    """Gated PixelCNN (no blind spot), optionally conditional.

    num_classes > 0: class-conditional (label int [B]); cond_channels > 0: conditioned on a spatial map
    cond [B,S,H,W] at the image size. body(f, label, cond) -> logits [B,C,K,H,W].
    """

    def __init__(self, in_channels: int, levels: int, channels: int = 64, layers: int = 8, kernel: int = 5,
                 first_kernel: int = 7, embed: int = 0, num_classes: int = 0, cond_channels: int = 0,
                 label_dim: int = 32):
        super().__init__(in_channels, levels, embed)
        g = in_channels
        self.num_classes, self.cond_channels = num_classes, cond_channels
        self.label_embed = nn.Embedding(num_classes, label_dim) if num_classes else None
        ld = label_dim if num_classes else 0
        self.layers = nn.ModuleList()
        for i in range(layers):
            first = i == 0
            self.layers.append(GatedPixelCNNLayer(
                self.feat_channels if first else channels, channels, first_kernel if first else kernel, first, g,
                in_groups=self.feature_groups() if first else None, label_dim=ld, cond_channels=cond_channels))
        self.head = self.make_head(channels)
        # rows above that can reach the output: the vertical stack's reach plus the one-row shift into h
        self.row_reach = first_kernel // 2 + (layers - 1) * (kernel // 2) + 1

    def body(self, f: torch.Tensor, label=None, cond=None) -> torch.Tensor:
        if self.num_classes and label is None:
            raise ValueError("this Gated PixelCNN is class-conditional: pass label [B]")
        if self.cond_channels and cond is None:
            raise ValueError(f"this Gated PixelCNN is conditioned on a spatial map: pass cond [B,{self.cond_channels},H,W]")
        le = self.label_embed(label.long()) if self.num_classes else None
        v = h = f
        for layer in self.layers:
            v, h = layer(v, h, le, cond if self.cond_channels else None)
        return self.to_logits(self.head(h))


# --------------------------------------------------------------------------------------------------
# sampling


@torch.no_grad()
def autoregressive_sample(net: nn.Module, x: torch.Tensor, label: torch.Tensor | None = None,
                          cond: torch.Tensor | None = None, start_row: int = 0, temperature: float = 1.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral sampling in raster and channel order.

    x int [B,C,H,W]: rows >= start_row are (re)drawn, the rows above are kept (start_row=0: unconditional
    samples; H//2: completions of the top halves). net(x, label=, cond=) -> logits [B,C,K,H,W]; cond [B,S,H,W]
    is cropped with x, since the logits of row i only depend on rows <= i (and on no row more than
    `net.row_reach` above it, when the network states it). Returns a new int64 [B,C,H,W].
    """
    x = x.clone().long()
    b, c, h, w = x.shape
    reach = getattr(net, "row_reach", None)
    was_training = net.training
    net.eval()
    try:
        for i in range(start_row, h):
            top = 0 if reach is None else max(0, i - reach)  # rows above `top` cannot affect row i
            ci = cond[:, :, top : i + 1] if cond is not None else None
            for j in range(w):
                for ch in range(c):
                    logits = net(x[:, :, top : i + 1], label=label, cond=ci)[:, ch, :, -1, j]
                    probs = torch.softmax(logits.float() / max(temperature, 1e-6), dim=-1)
                    x[:, ch, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    finally:
        net.train(was_training)
    return x


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


__all__ = ["MASK_TYPES", "channel_groups", "causal_mask", "MaskedConv2d", "gated", "shift_down",
           "GatedPixelCNNLayer", "AutoregressiveNet", "PixelCNN", "GatedPixelCNN", "autoregressive_sample", "count_parameters"]
