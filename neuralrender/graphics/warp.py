"""Flow warping and sampling grids with ONE pinned convention.

Pixel coordinates follow the camera convention: pixel (i, j) (row i, column j) has its centre at
x = j + 0.5, y = i + 0.5; the image covers [0, W] x [0, H]. Normalized coordinates are those of
`torch.nn.functional.grid_sample(..., align_corners=False)`: -1 is the LEFT/TOP EDGE of the first pixel
and +1 the right/bottom edge of the last one, so

    x_norm = 2 * x / W - 1        x = (x_norm + 1) * W / 2      (same for y with H)

and the centre of pixel j is at (2j + 1) / W - 1. Grids are [B,H,W,2] with (x, y) in the last axis;
flows are [B,2,H,W] in pixels with channel 0 = dx (right) and channel 1 = dy (down).
`warp(image, flow)` is a BACKWARD warp: out[:, :, i, j] = image at (x + dx, y + dy), i.e. each output
pixel fetches from where its flow points. That matches OpenCV: cv2.remap(img, j + dx, i + dy) (OpenCV
puts pixel centres at integers), and Farneback flow computed from prev to next satisfies
prev ~= warp(next, flow).
Every grid_sample in the library that works in image space goes through `sample_grid`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuralrender.errors import NeuralRenderError

__all__ = [
    "pixel_to_normalized",
    "normalized_to_pixel",
    "make_coordinate_grid",
    "identity_grid",
    "flow_to_grid",
    "grid_to_flow",
    "sample_grid",
    "warp",
]

_PADDING = ("zeros", "border", "reflection")
_MODES = ("bilinear", "nearest", "bicubic")


def pixel_to_normalized(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel coordinates [..., 2] (x, y; centres at +0.5) -> grid_sample coordinates in [-1, 1]."""
    scale = xy.new_tensor([2.0 / width, 2.0 / height])
    return xy * scale - 1.0


def normalized_to_pixel(grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """grid_sample coordinates [..., 2] -> pixel coordinates (x, y) with centres at +0.5."""
    scale = grid.new_tensor([width / 2.0, height / 2.0])
    return (grid + 1.0) * scale


def make_coordinate_grid(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalized coordinates of every pixel centre: [H,W,2] with (x, y) = ((2j+1)/W - 1, (2i+1)/H - 1).

    Note: first-order-model's make_coordinate_grid uses linspace(-1, 1) (the align_corners=True grid);
    this one is the align_corners=False grid, consistent with `sample_grid` and with the cameras.
    """
    x = (torch.arange(width, dtype=dtype, device=device) * 2 + 1) / width - 1
    y = (torch.arange(height, dtype=dtype, device=device) * 2 + 1) / height - 1
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], dim=-1)


def identity_grid(batch: int, height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[B,H,W,2]: the grid for which sample_grid(image, grid) returns the image unchanged."""
    return make_coordinate_grid(height, width, dtype, device).unsqueeze(0).expand(batch, -1, -1, -1)


def _check_flow(flow: torch.Tensor) -> None:
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise NeuralRenderError(f"flow must be [B,2,H,W] (dx, dy in pixels), got {tuple(flow.shape)}")


def flow_to_grid(flow: torch.Tensor) -> torch.Tensor:
    """Flow [B,2,H,W] in pixels -> sampling grid [B,H,W,2] (normalized, align_corners=False)."""
    _check_flow(flow)
    B, _, H, W = flow.shape
    scale = flow.new_tensor([2.0 / W, 2.0 / H])
    return identity_grid(B, H, W, flow.dtype, flow.device) + flow.permute(0, 2, 3, 1) * scale


def grid_to_flow(grid: torch.Tensor) -> torch.Tensor:
    """Sampling grid [B,H,W,2] (normalized) -> flow [B,2,H,W] in pixels. Inverse of flow_to_grid."""
    if grid.dim() != 4 or grid.shape[-1] != 2:
        raise NeuralRenderError(f"grid must be [B,H,W,2], got {tuple(grid.shape)}")
    B, H, W, _ = grid.shape
    scale = grid.new_tensor([W / 2.0, H / 2.0])
    return ((grid - identity_grid(B, H, W, grid.dtype, grid.device)) * scale).permute(0, 3, 1, 2)


def sample_grid(image: torch.Tensor, grid: torch.Tensor, padding: str = "zeros", mode: str = "bilinear") -> torch.Tensor:
    """grid_sample with the pinned convention: image [B,C,H,W], grid [B,Ho,Wo,2] -> [B,C,Ho,Wo].

    padding: 'zeros' | 'border' | 'reflection'; mode: 'bilinear' | 'nearest' | 'bicubic'.
    """
    if padding not in _PADDING:
        raise NeuralRenderError(f"padding must be one of {_PADDING}, got {padding!r}")
    if mode not in _MODES:
        raise NeuralRenderError(f"mode must be one of {_MODES}, got {mode!r}")
    if image.dim() != 4:
        raise NeuralRenderError(f"image must be [B,C,H,W], got {tuple(image.shape)}")
    if grid.shape[0] != image.shape[0]:
        raise NeuralRenderError(f"grid batch {grid.shape[0]} != image batch {image.shape[0]}")
    return F.grid_sample(image, grid.to(image.dtype), mode=mode, padding_mode=padding, align_corners=False)


def warp(image: torch.Tensor, flow: torch.Tensor, padding: str = "zeros", mode: str = "bilinear") -> torch.Tensor:
    """Backward warp: image [B,C,H,W], flow [B,2,H,W] (pixels) -> [B,C,H,W], out(p) = image(p + flow(p)).

    Differentiable w.r.t. image and flow. For a flow at another resolution, resize it and scale its
    values first, or build a grid and call `sample_grid`.
    """
    _check_flow(flow)
    if flow.shape[-2:] != image.shape[-2:]:
        raise NeuralRenderError(
            f"flow {tuple(flow.shape[-2:])} and image {tuple(image.shape[-2:])} must have the same H,W")
    return sample_grid(image, flow_to_grid(flow), padding=padding, mode=mode)
