"""Convolutional GRU, one implementation for 2D feature maps and 3D feature volumes (`dims=2|3`).

h' = (1 - z) * h + z * n with z = sigmoid(conv([x, h])), r = sigmoid(conv([x, h])),
n = tanh(conv_x(x) + r * conv_h(h)) (Cho et al. 2014, gates by convolutions: Ballas et al. 2016).
DeepVoxels integrates lifted features into its persistent grid with the 3D version; video methods can use
the 2D one over time.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralrender.nn.unet3d import Conv3d

_CONV = {2: nn.Conv2d, 3: Conv3d}  # unet3d.Conv3d: nn.Conv3d with a faster CPU path for one volume


class ConvGRUCell(nn.Module):
    """One GRU update. x [B,in_channels,*S], h [B,hidden_channels,*S] or None (zeros) -> h' [B,hidden,*S].

    S is (H, W) for dims=2 and (D, H, W) for dims=3; kernel is odd and padded to keep S.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel: int = 3, dims: int = 2):
        super().__init__()
        if dims not in _CONV:
            raise ValueError(f"ConvGRUCell dims must be 2 or 3, got {dims}")
        if kernel % 2 != 1:
            raise ValueError(f"ConvGRUCell kernel must be odd, got {kernel}")
        conv = _CONV[dims]
        self.dims, self.hidden_channels = dims, hidden_channels
        self.gates = conv(in_channels + hidden_channels, 2 * hidden_channels, kernel, padding=kernel // 2)
        self.cand_x = conv(in_channels, hidden_channels, kernel, padding=kernel // 2)
        self.cand_h = conv(hidden_channels, hidden_channels, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != self.dims + 2:
            raise ValueError(f"ConvGRUCell(dims={self.dims}) expects [B,C,{'D,' if self.dims == 3 else ''}H,W], "
                             f"got {tuple(x.shape)}")
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[2:])
        if h.shape[0] != x.shape[0]:
            h = h.expand(x.shape[0], *h.shape[1:])
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        n = torch.tanh(self.cand_x(x) + r * self.cand_h(h))
        return (1 - z) * h + z * n


class ConvGRU(nn.Module):
    """A ConvGRU over a sequence: x [B,T,C,*S] (or one step [B,C,*S]), h0 optional
    -> (all hidden states [B,T,hidden,*S], last hidden [B,hidden,*S])."""

    def __init__(self, in_channels: int, hidden_channels: int, kernel: int = 3, dims: int = 2):
        super().__init__()
        self.cell = ConvGRUCell(in_channels, hidden_channels, kernel, dims)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() == self.cell.dims + 2:
            x = x.unsqueeze(1)
        outs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outs.append(h)
        return torch.stack(outs, 1), h
