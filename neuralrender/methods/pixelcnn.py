"""`pixelcnn`: the original PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks").

A 7x7 mask-A convolution, residual blocks of mask-B convolutions (1x1 -> 3x3 -> 1x1), a 1x1 head giving a
softmax over the pixel values (2 for binarized images, 256 for 8-bit). Trained by maximum likelihood; scored by
the test NLL in nats per image and bits/dim against the independent-pixel histogram baseline. Has the blind
spot of stacked masked convolutions (see tests/test_nn_masked.py); `gated-pixelcnn` removes it.
"""

from __future__ import annotations

from neuralrender.methods._priors import PixelDensityMethod
from neuralrender.nn.masked import PixelCNN
from neuralrender.registry import register


@register("pixelcnn")
class PixelCNNMethod(PixelDensityMethod):
    description = "PixelCNN (masked convolutions) density model of binarized / 256-level Fashion-MNIST or LFW"

    def build_net(self, cfg, info):
        return PixelCNN(info["channels"], info["levels"], channels=cfg.channels, layers=cfg.layers,
                        kernel=cfg.kernel, first_kernel=cfg.first_kernel)
