"""`pixelrnn`: PixelRNN with Row LSTM layers (van den Oord et al. 2016, "Pixel Recurrent Neural Networks").

A 7x7 mask-A convolution, then Row LSTM layers (rows processed top to bottom, a 1x3 masked input-to-state and
a 1x3 state-to-state convolution, triangular receptive field) with residual connections, and the same softmax
head, data, loss and metrics as `pixelcnn`. Slower than the convolutional models: each layer is a loop over rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neuralrender.methods._priors import PixelDensityMethod, PixelPriorConfig
from neuralrender.nn.rowlstm import PixelRNN
from neuralrender.registry import register


@dataclass
class PixelRNNConfig(PixelPriorConfig):
    layers: int = field(default=2, metadata={"help": "Row LSTM layers"})


@register("pixelrnn")
class PixelRNNMethod(PixelDensityMethod):
    description = "PixelRNN (Row LSTM) density model of binarized / 256-level Fashion-MNIST or LFW"
    Config = PixelRNNConfig

    def build_net(self, cfg, info):
        return PixelRNN(info["channels"], info["levels"], channels=cfg.channels, layers=cfg.layers,
                        kernel=cfg.kernel, first_kernel=cfg.first_kernel)
