"""`PosedImageDataset`: posed images (transforms.json on disk) as a torch Dataset."""

from __future__ import annotations

import os
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuralrender.errors import DataError
from neuralrender.graphics.cameras import Cameras
from neuralrender.io.images import read_depth, read_image, read_labels
from neuralrender.io.posed import PosedData, load_transforms


def undistort_image(images: torch.Tensor, cameras: Cameras, mode: str = "bilinear") -> torch.Tensor:
    """Resample distorted images [B,C,H,W] taken by `cameras` (with dist) into pinhole images with the
    same K and no distortion; pixels whose source falls outside the image are 0.

    For each output pixel centre the pinhole ray is re-projected through the distorted camera
    (Cameras.project with dist) and looked up in the source image (pixel-edge convention, align_corners=False).
    """
    if cameras.dist is None:
        return images
    b, _, h, w = images.shape
    uv = cameras.pixel_grid().reshape(1, h * w, 2).expand(cameras.batch_size, -1, -1)
    pinhole = replace(cameras, dist=None)
    pts = pinhole.unproject(uv, torch.ones_like(uv[..., 0]))  # rays at depth 1, world space
    src, _ = cameras.project(pts)  # [B,HW,2] distorted pixel coordinates
    grid = torch.stack([2 * src[..., 0] / w - 1, 2 * src[..., 1] / h - 1], -1).reshape(-1, h, w, 2)
    grid = grid.expand(b, h, w, 2) if grid.shape[0] == 1 else grid
    return F.grid_sample(images, grid.to(images), mode=mode, padding_mode="zeros", align_corners=False)


class PosedImageDataset(Dataset):
    """Frames of one split of a posed-image dataset.

    root: dataset folder or transforms json ("shared:" prefix allowed); split: train|val|test|all.
    downscale: integer factor (images area-averaged, cameras scaled accordingly).
    undistort: resample images to a distortion-free pinhole camera (then `cameras.dist` is None).
    background: gray level that RGBA images are composited over (NeRF-synthetic style).
    cache: keep decoded items in memory.

    Item: {"image": float32 [3,H,W], "index": int (position in the split), "frame_id": int (in the json),
           and when the dataset has them "mask" float32 [1,H,W] (from mask files or the image's alpha),
           "depth" float32 [1,H,W] (scene units, 0 = unknown), "labels" int64 [1,H,W]}.
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", downscale: int = 1,
                 undistort: bool = False, background: float = 1.0, holdout_every: int = 8,
                 cache: bool = False):
        self.data: PosedData = load_transforms(root, split, holdout_every=holdout_every)
        cams = self.data.cameras
        if downscale < 1 or cams.width % downscale or cams.height % downscale:
            raise DataError(self.data.json_path, f"downscale {downscale} must divide the image size "
                                                 f"{cams.width}x{cams.height}", field="downscale")
        self.downscale = downscale
        self.undistort = undistort and cams.dist is not None
        self.background = background
        self._src_cams = cams.scaled(1.0 / downscale) if downscale > 1 else cams
        self.cameras: Cameras = replace(self._src_cams, dist=None) if self.undistort else self._src_cams
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.data)

    @property
    def split(self) -> list[str]:
        return self.data.splits

    def _resize(self, x: torch.Tensor, nearest: bool = False) -> torch.Tensor:
        if self.downscale == 1:
            return x
        if nearest:
            s = self.downscale
            return x[..., s // 2 :: s, s // 2 :: s]
        return F.avg_pool2d(x[None], self.downscale)[0]

    def _undist(self, x: torch.Tensor, i: int, nearest: bool = False) -> torch.Tensor:
        if not self.undistort:
            return x
        mode = "nearest" if nearest else "bilinear"
        return undistort_image(x[None].float(), self._src_cams[i], mode=mode)[0].to(x.dtype)

    def __getitem__(self, i: int) -> dict:
        if self._cache is not None and i in self._cache:
            return dict(self._cache[i])
        d = self.data
        img = read_image(d.image_paths[i], channels=None)
        if img.shape[0] in (2, 4):
            alpha = img[-1:]
            rgb = img[:3] if img.shape[0] == 4 else img[:1].expand(3, -1, -1)
            img = rgb * alpha + self.background * (1 - alpha)
        else:
            alpha = None
            img = img[:3] if img.shape[0] == 3 else img.expand(3, -1, -1)
        item = {"image": self._undist(self._resize(img), i), "index": i, "frame_id": d.frame_ids[i]}
        mp = d.side_paths["mask"][i]
        mask = read_image(mp, channels=1) if mp is not None else alpha
        if mask is not None:
            item["mask"] = self._undist(self._resize(mask), i)
        dp = d.side_paths["depth"][i]
        if dp is not None:
            depth = read_depth(dp, scale=1.0 / d.depth_unit_scale)
            item["depth"] = self._undist(self._resize(depth, nearest=True), i, nearest=True)
        lp = d.side_paths["labels"][i]
        if lp is not None:
            item["labels"] = self._undist(self._resize(read_labels(lp), nearest=True), i, nearest=True)
        if self._cache is not None:
            self._cache[i] = item
        return item

    def images(self) -> torch.Tensor:
        """All images of the split stacked [N,3,H,W]."""
        return torch.stack([self[i]["image"] for i in range(len(self))])
