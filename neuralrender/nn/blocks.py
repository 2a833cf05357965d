"""Small shared building blocks: normalization / activation factories and conv blocks."""

from __future__ import annotations

from torch import nn


def norm_layer(kind: str, channels: int, dims: int = 2) -> nn.Module:
    """'batch' | 'instance' | 'group' | 'none', for 2D images (dims=2) or 3D volumes (dims=3)."""
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{kind}'; valid: batch, instance, group, none")


def activation(kind: str) -> nn.Module:
    """'relu' | 'lrelu' | 'gelu' | 'silu' | 'tanh' | 'none'."""
    table = {"relu": lambda: nn.ReLU(inplace=True), "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True),
             "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "none": nn.Identity}
    if kind not in table:
        raise ValueError(f"unknown activation '{kind}'; valid: {', '.join(table)}")
    return table[kind]()


def conv_block(cin: int, cout: int, kernel: int = 3, stride: int = 1, norm: str = "group", act: str = "relu",
               transpose: bool = False) -> nn.Sequential:
    """conv (or transposed conv, which doubles the size when stride=2) -> norm -> activation."""
    if transpose:
        conv = nn.ConvTranspose2d(cin, cout, kernel, stride, padding=(kernel - 1) // 2, output_padding=stride - 1)
    else:
        conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2)
    return nn.Sequential(conv, norm_layer(norm, cout), activation(act))
