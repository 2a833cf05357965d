"""`gated-pixelcnn`: the conditional Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation
with PixelCNN Decoders").

Vertical and horizontal stacks (no blind spot), gated activations tanh * sigmoid, residual connections in the
horizontal stack, and a class embedding added to every layer's gates (`--conditional`, on by default; samples
are then drawn per class). Same data, loss and metrics as `pixelcnn`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from neuralrender.methods._priors import PixelDensityMethod, PixelPriorConfig
from neuralrender.nn.masked import GatedPixelCNN
from neuralrender.registry import register


@dataclass
class GatedPixelCNNConfig(PixelPriorConfig):
    conditional: bool = field(default=True, metadata={"help": "condition on the class label"})


@register("gated-pixelcnn")
class GatedPixelCNNMethod(PixelDensityMethod):
    description = "Gated PixelCNN (no blind spot, class-conditional) density model of Fashion-MNIST / LFW"
    Config = GatedPixelCNNConfig

    def build_net(self, cfg, info):
        self.conditional = bool(cfg.conditional)
        return GatedPixelCNN(info["channels"], info["levels"], channels=cfg.channels, layers=cfg.layers,
                             kernel=cfg.kernel, first_kernel=cfg.first_kernel,
                             num_classes=info["num_classes"] if cfg.conditional else 0)
