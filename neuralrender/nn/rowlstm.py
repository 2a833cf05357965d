"""Row LSTM and the PixelRNN built from it (van den Oord et al. 2016a, section 3.1).

A Row LSTM layer processes the image one row at a time. Its gates at row r are
    [o, f, i, g] = sigma(K_ss * h_{r-1} + K_is * x_r)
with K_is a 1 x k masked convolution over the current row of the input features (mask "B": columns up to
the current one, channel groups in order) computed for the whole map at once, and K_ss a 1D convolution of
width k over the previous row's hidden state. The receptive field is a triangle above the pixel (the paper's
"triangular" context) plus the pixels to its left in the row.
"""

from __future__ import annotations

import torch
from torch import nn

from neuralrender.nn.masked import AutoregressiveNet, MaskedConv2d, channel_groups


class RowLSTMLayer(nn.Module):
    """x [B,Cin,H,W] -> hidden states h [B,C,H,W], C = `channels`, computed row by row."""

    def __init__(self, cin: int, channels: int, kernel: int = 3, groups: int = 1, in_groups: torch.Tensor | None = None):
        super().__init__()
        self.channels = channels
        gi = channel_groups(cin, groups) if in_groups is None else in_groups
        g4 = channel_groups(channels, groups).repeat(4)  # the four gates keep the channel-group layout
        self.input_to_state = MaskedConv2d(cin, 4 * channels, (1, kernel), "B", in_groups=gi, out_groups=g4)
        self.state_to_state = nn.Conv1d(channels, 4 * channels, kernel, padding=kernel // 2)
        with torch.no_grad():
            self.state_to_state.bias.zero_()
            self.state_to_state.bias[channels : 2 * channels] = 1.0  # forget gate starts open

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        pre = self.input_to_state(x)  # [B,4C,H,W]
        h = x.new_zeros(b, self.channels, width)
        c = torch.zeros_like(h)
        rows = []
        for r in range(height):
            gates = pre[:, :, r] + self.state_to_state(h)
            i, f, o, g = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            rows.append(h)
        return torch.stack(rows, dim=2)


class PixelRNN(AutoregressiveNet):
    """PixelRNN with Row LSTM layers: 7x7 mask-A conv -> `layers` Row LSTM layers with residual connections
    (a 1x1 mask-B conv after each) -> two 1x1 mask-B convs -> logits [B,C,K,H,W] for x int [B,C,H,W].
    """

    def __init__(self, in_channels: int, levels: int, channels: int = 32, layers: int = 4, kernel: int = 3,
                 first_kernel: int = 7, embed: int = 0):
        super().__init__(in_channels, levels, embed)
        g = in_channels
        self.first = MaskedConv2d(self.feat_channels, channels, first_kernel, "A", in_groups=self.feature_groups(),
                                  out_groups=channel_groups(channels, g))
        self.lstms = nn.ModuleList(RowLSTMLayer(channels, channels, kernel, g) for _ in range(layers))
        self.outs = nn.ModuleList(MaskedConv2d(channels, channels, 1, "B", groups=g) for _ in range(layers))
        self.head = self.make_head(channels)

    def body(self, f: torch.Tensor, label=None, cond=None) -> torch.Tensor:
        y = self.first(f)
        for lstm, out in zip(self.lstms, self.outs):
            y = y + out(lstm(y))
        return self.to_logits(self.head(y))
