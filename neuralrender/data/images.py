"""Small image datasets for the priors (PixelCNN, VQ-VAE): Fashion-MNIST and the LFW subset.

Each item is (image, label). `variant` picks the pixel form:
  "float"  float32 [1,H,W] in [0,1]
  "binary" float32 [1,H,W] in {0,1} (threshold 0.5, deterministic)
  "256"    int64   [1,H,W] in 0..255 (256-level targets for autoregressive models)
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from neuralrender.data.splits import split_indices
from neuralrender.errors import NeuralRenderError
from neuralrender.io.images import load_fashion_mnist, load_lfw_subset
from neuralrender.paths import resolve_data_path, shared_path

VARIANTS = ("float", "binary", "256")

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


def quantize(images01: torch.Tensor, variant: str) -> torch.Tensor:
    """float images in [0,1] (any shape) -> the `variant` form described in the module docstring."""
    if variant == "float":
        return images01.float()
    if variant == "binary":
        return (images01 >= 0.5).float()
    if variant == "256":
        return (images01 * 255.0).round().clamp(0, 255).to(torch.int64)
    raise NeuralRenderError(f"unknown image variant {variant!r}; valid: {', '.join(VARIANTS)}")


class TensorImageDataset(Dataset):
    """(image, label) pairs from in-memory tensors images01 [N,C,H,W] in [0,1] and labels [N]."""

    def __init__(self, images01: torch.Tensor, labels: torch.Tensor, variant: str = "float"):
        if images01.shape[0] != labels.shape[0]:
            raise NeuralRenderError(f"{images01.shape[0]} images but {labels.shape[0]} labels")
        self.images = quantize(images01, variant)
        self.labels = labels.to(torch.int64)
        self.variant = variant

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


class FashionMNIST(TensorImageDataset):
    """Fashion-MNIST from IDX files (default: the t10k pair in the shared data folder).

    split: "train" | "test" | "all" — a seeded split of the file's images (test_fraction of them).
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: str | os.PathLike | None = None, split: str = "train", variant: str = "float",
                 test_fraction: float = 0.1, seed: int = 0, prefix: str = "t10k"):
        root = resolve_data_path(root) if root is not None else shared_path("images", "fashion_mnist")
        imgs, labels = load_fashion_mnist(root / f"{prefix}-images-idx3-ubyte.gz",
                                          root / f"{prefix}-labels-idx1-ubyte.gz")
        idx = split_indices(imgs.shape[0], split, test_fraction=test_fraction, seed=seed)
        super().__init__(imgs[idx].float() / 255.0, labels[idx], variant)
        self.indices = idx


class LFWSubset(TensorImageDataset):
    """scikit-image's LFW subset: 25x25 gray crops, label 1 = face, 0 = non-face.

    path defaults to the copy in the shared data folder; a seeded split as in FashionMNIST.
    """

    classes = ("non-face", "face")

    def __init__(self, path: str | os.PathLike | None = None, split: str = "train", variant: str = "float",
                 test_fraction: float = 0.2, seed: int = 0, faces_only: bool = False):
        path = resolve_data_path(path) if path is not None else shared_path(
            "images", "skimage_lfw_subset", "lfw_subset.npy")
        imgs, labels = load_lfw_subset(path)
        if faces_only:
            keep = labels == 1
            imgs, labels = imgs[keep], labels[keep]
        idx = split_indices(imgs.shape[0], split, test_fraction=test_fraction, seed=seed)
        super().__init__(imgs[idx], labels[idx], variant)
        self.indices = idx
