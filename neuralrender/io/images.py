"""Image files: read/write PNG/JPEG (the one image-writing helper of the project), PNG grids,
16-bit depth and integer label maps, Fashion-MNIST IDX files and the scikit-image LFW subset.

Images in memory are float32 tensors [C,H,W] or [B,C,H,W] in [0,1]; files are 8-bit.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np
import torch

from neuralrender.errors import DataError

# ---------------------------------------------------------------------------------------------
# reading / writing single images


def read_image(path: str | os.PathLike, channels: int | None = 3) -> torch.Tensor:
    """Read an image file -> float32 [C,H,W] in [0,1].

    channels: 3 (RGB; gray is repeated, alpha is dropped), 4 (RGBA; alpha 1 added when absent),
    1 (luma of RGB / the gray plane) or None (as stored). 16-bit files are scaled by 1/65535.
    """
    arr = read_image_array(path)
    if arr.dtype == np.uint16:
        x = arr.astype(np.float32) / 65535.0
    elif arr.dtype == np.uint8:
        x = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.bool_:
        x = arr.astype(np.float32)
    else:
        raise DataError(path, f"unsupported pixel type {arr.dtype}", field="dtype")
    if x.ndim == 2:
        x = x[..., None]
    x = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1).contiguous()
    return convert_channels(x, channels, path)


def read_image_array(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as stored: numpy [H,W] or [H,W,C], uint8/uint16. Raises DataError."""
    import imageio.v3 as iio

    p = Path(path)
    if not p.is_file():
        raise DataError(p, "image file not found", field="file")
    try:
        arr = np.asarray(iio.imread(p))
    except Exception as e:  # imageio raises many types for broken files
        raise DataError(p, f"cannot decode image: {e}", field="file") from e
    if arr.ndim == 3 and arr.shape[0] == 1 and p.suffix.lower() == ".gif":
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise DataError(p, f"expected a 2D image, got array of shape {arr.shape}", field="shape")
    return arr


def convert_channels(x: torch.Tensor, channels: int | None, path="<tensor>") -> torch.Tensor:
    """Convert [C,H,W] (C in 1..4) to `channels` (1, 3, 4 or None = unchanged)."""
    c = x.shape[0]
    if channels is None or channels == c:
        return x
    rgb = x[:3] if c >= 3 else x[:1].expand(3, -1, -1)
    if channels == 3:
        return rgb.contiguous()
    if channels == 4:
        alpha = x[3:4] if c == 4 else (x[1:2] if c == 2 else torch.ones_like(x[:1]))
        return torch.cat([rgb, alpha], 0)
    if channels == 1:
        if c < 3:
            return x[:1].contiguous()
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(3, 1, 1)
        return (rgb * w).sum(0, keepdim=True)
    raise DataError(path, f"cannot convert {c} channels to {channels}", field="channels")


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """float [C,H,W] in [0,1] -> uint8 numpy [H,W,C] (or [H,W] for C=1), rounded, clamped."""
    if img.ndim != 3:
        raise ValueError(f"expected [C,H,W], got shape {tuple(img.shape)}")
    x = img.detach().cpu().float().permute(1, 2, 0).numpy()  # numpy: no thread start-up for small images
    a = np.rint(np.clip(x, 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)  # round half to even
    return a[..., 0] if a.shape[2] == 1 else a


def save_image(img: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write one image float [C,H,W] or [1,C,H,W] in [0,1] (C = 1, 3 or 4) as 8-bit PNG/JPEG.

    A batch [B,C,H,W] with B > 1 is written as a grid (see `save_grid`). Parent folders are made.
    """
    import imageio.v3 as iio

    if img.ndim == 4:
        if img.shape[0] != 1:
            return save_grid(img, path)
        img = img[0]
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or img.shape[0] not in (1, 3, 4):
        raise ValueError(f"save_image expects [C,H,W] with C in (1,3,4), got {tuple(img.shape)}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(img)
    if p.suffix.lower() in (".jpg", ".jpeg") and arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    iio.imwrite(p, arr)
    return p


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = 1.0):
    """Tile [B,C,H,W] into one image [C, rows*(H+p)+p, nrow*(W+p)+p]; nrow defaults to ceil(sqrt(B))."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"make_grid expects [B,C,H,W], got {tuple(images.shape)}")
    b, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(b)))
    ncol = min(nrow, b)
    rows = math.ceil(b / nrow)
    grid = images.new_full((c, rows * (h + padding) + padding, ncol * (w + padding) + padding), pad_value)
    for k in range(b):
        r, q = divmod(k, nrow)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[:, y : y + h, x : x + w] = images[k]
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2,
              pad_value: float = 1.0) -> Path:
    """Write [B,C,H,W] in [0,1] as one PNG grid (nrow images per row)."""
    return save_image(make_grid(images.detach().float().cpu(), nrow, padding, pad_value), path)


# ---------------------------------------------------------------------------------------------
# depth and label maps


def save_depth(depth: torch.Tensor, path: str | os.PathLike, scale: float = 1000.0) -> Path:
    """Write depth [H,W] or [1,H,W] (scene units, 0 = no hit) as a 16-bit PNG of round(depth*scale).

    scale 1000 means millimetres when units are metres (nerfstudio's depth_unit_scale_factor = 1/scale).
    Values beyond 65535/scale are clipped to the largest code.
    """
    import imageio.v3 as iio

    d = depth.detach().cpu().float().reshape(depth.shape[-2:]).numpy()
    code = np.clip(np.rint(np.maximum(d, 0.0) * np.float32(scale)), 0, 65535).astype(np.uint16)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(p, code)
    return p


def read_depth(path: str | os.PathLike, scale: float = 1000.0) -> torch.Tensor:
    """Read a 16-bit depth PNG written by `save_depth` -> float32 [1,H,W] in scene units."""
    arr = read_image_array(path)
    if arr.ndim != 2:
        raise DataError(path, f"depth image must have one channel, got shape {arr.shape}", field="depth")
    return torch.from_numpy(arr.astype(np.float32) / scale)[None]


def save_labels(labels: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write an integer label map [H,W] or [1,H,W] (0..255, e.g. 0 = background) as an 8-bit PNG."""
    import imageio.v3 as iio

    lab = labels.detach().cpu().reshape(labels.shape[-2:]).to(torch.int64)
    if lab.numel() and (lab.min() < 0 or lab.max() > 255):
        raise ValueError(f"label ids must lie in 0..255, got {int(lab.min())}..{int(lab.max())}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(p, lab.numpy().astype(np.uint8))
    return p


def read_labels(path: str | os.PathLike) -> torch.Tensor:
    """Read a label PNG -> int64 [1,H,W] (first channel when the file has several)."""
    arr = read_image_array(path)
    if arr.ndim == 3:
        arr = arr[..., 0]
    return torch.from_numpy(arr.astype(np.int64))[None]


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST IDX and the LFW subset

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally .gz) as used by (Fashion-)MNIST -> numpy array of its shape.

    Validates the magic number (two zero bytes, a known type code, ndim) and the payload size.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "IDX file not found", field="file")
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(p, f"cannot read file: {e}", field="file") from e
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        raise DataError(p, f"bad IDX magic number {data[:4].hex() if len(data) >= 4 else data.hex()!r}",
                        field="magic")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(p, "file ends inside the IDX header", field="dims")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_TYPES[data[2]])
    body = data[4 + 4 * ndim :]
    want = int(np.prod(dims)) * dtype.itemsize
    if len(body) != want:
        raise DataError(p, f"payload has {len(body)} bytes, header dims {dims} need {want}", field="dims")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def load_fashion_mnist(images_path: str | os.PathLike, labels_path: str | os.PathLike):
    """Load an IDX image/label pair -> (images uint8 [N,1,28,28] tensor, labels int64 [N] tensor)."""
    imgs = read_idx(images_path)
    labs = read_idx(labels_path)
    if imgs.ndim != 3:
        raise DataError(images_path, f"expected images of shape [N,H,W], got {imgs.shape}", field="dims")
    if labs.ndim != 1 or labs.shape[0] != imgs.shape[0]:
        raise DataError(labels_path, f"expected {imgs.shape[0]} labels, got shape {labs.shape}", field="dims")
    if labs.size and labs.max() > 9:
        raise DataError(labels_path, f"label {int(labs.max())} outside 0..9", field="labels")
    return torch.from_numpy(imgs.copy())[:, None], torch.from_numpy(labs.astype(np.int64))


def load_lfw_subset(path: str | os.PathLike):
    """Load scikit-image's lfw_subset.npy (no pickles) -> (images float32 [N,1,25,25] in [0,1],
    labels int64 [N]: 1 for the first half (faces), 0 for the second half (non-faces))."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file not found", field="file")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        raise DataError(p, f"not a plain numpy array file: {e}", field="file") from e
    if arr.ndim != 3 or arr.shape[0] % 2:
        raise DataError(p, f"expected [N,H,W] with N even, got {arr.shape}", field="shape")
    if not np.issubdtype(arr.dtype, np.floating) or not np.isfinite(arr).all():
        raise DataError(p, f"expected finite floats, got {arr.dtype}", field="dtype")
    x = torch.from_numpy(arr.astype(np.float32)).clamp(0, 1)[:, None]
    n = arr.shape[0]
    labels = torch.cat([torch.ones(n // 2, dtype=torch.int64), torch.zeros(n // 2, dtype=torch.int64)])
    return x, labels
