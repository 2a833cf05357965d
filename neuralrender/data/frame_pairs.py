"""Frame pairs from videos for self-supervised image animation: (source, driving) frames of the SAME video.

Videos are anything `io.video.read_video_uint8` reads (mp4/..., GIF, image folders, frame strips such as
the Weizmann 64x64 RGBA strips), resized to `size` x `size` (anti-aliased) and kept in memory as uint8.

Split: "video" holds out whole videos (the papers' protocol), "time" holds out the last `test_fraction`
of every video (a contiguous segment, never interleaved frames), "auto" = "video" when there are at least
`min_videos_for_video_split` videos, else "time".
Train items are random pairs drawn from a per-item seeded generator (item i is always the same pair).
Augmentation (`augment`, training pairs only; off by default, see docs/methods/animation.md): the official
FOMM / Monkey-Net data augmentation (their `augmentation.py`, the Tai-Chi / VoxCeleb configs' `flip_param`, `jitter_param`),
the same transform for both frames of a pair: time flip (swap source and driving) and horizontal flip, each
with p = 0.5, and colour jitter with brightness, contrast, saturation factors in [0.9, 1.1] and a hue shift in
[-0.1, 0.1] (torchvision ColorJitter semantics, the four in a random order). Two departures from the official
code, both its bugs: its time flip returns early, so it never flips horizontally a clip it reversed (p 0.25,
not 0.5, for the horizontal flip), and its jitter loop keeps only the last of the four adjustments; here the
two flips are independent and all four adjustments apply.
Test items follow the reconstruction protocol: source = first frame of the held-out video (or segment),
driving = every `eval_stride`-th frame of it.
Item: {"source": [3,S,S], "driving": [3,S,S], "video": int, "source_index": int, "driving_index": int}.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.io.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_video_uint8
from neuralrender.paths import resolve_data_path, shared_path

__all__ = ["DATASETS", "dataset_sources", "load_videos", "split_videos", "FramePairDataset",
           "ReconstructionDataset", "build_frame_pair_data"]

DATASETS = {
    "weizmann": ("videos", "fullbody_weizmann", "*_strip64.png"),
    "face": ("videos", "face_talking", "*.mp4"),
}


def dataset_sources(name_or_path: str) -> list[Path]:
    """Video files of a named dataset ('weizmann', 'face') or of a user path (a video, or a folder of videos
    / GIFs / strips; a folder holding only images is ONE video of frames)."""
    if name_or_path in DATASETS:
        *parts, pattern = DATASETS[name_or_path]
        folder = shared_path(*parts)
        files = sorted(folder.glob(pattern))
        if not files:
            raise DataError(folder, f"no videos matching {pattern} (dataset '{name_or_path}')", field="file")
        return files
    p = resolve_data_path(name_or_path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(p, "video file or folder not found (or use a dataset name: "
                           f"{', '.join(DATASETS)})", field="data")
    vids = sorted(f for f in p.iterdir() if f.suffix.lower() in VIDEO_SUFFIXES + (".gif",))
    vids += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and "strip" in f.stem)
    subdirs = sorted(d for d in p.iterdir() if d.is_dir())
    if vids or subdirs:
        return sorted(vids) + subdirs
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.iterdir()):
        return [p]
    raise DataError(p, "folder holds no videos (mp4/avi/mov/mkv/webm/GIF, *strip*.png, frame folders)", field="data")


def resize_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [T,H,W,3] -> uint8 tensor [T,3,size,size] (anti-aliased bilinear; non-square is squashed)."""
    t = torch.from_numpy(frames).permute(0, 3, 1, 2)
    if t.shape[-2:] == (size, size):
        return t.contiguous()
    out = []
    for chunk in t.split(64):
        r = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
        out.append(r.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_videos(sources, size: int, max_frames: int | None = None) -> list[torch.Tensor]:
    """Decode and resize every video -> list of uint8 [T,3,size,size]; videos with < 2 frames raise."""
    vids = []
    for s in sources:
        a = read_video_uint8(s, count=max_frames)
        if a.shape[0] < 2:
            raise DataError(s, f"a video needs at least 2 frames for frame pairs, got {a.shape[0]}", field="frames")
        vids.append(resize_frames(a, size))
    return vids


def split_videos(num_videos: int, mode: str = "auto", test_fraction: float = 0.25, seed: int = 0,
                 min_videos_for_video_split: int = 3) -> tuple[str, list[int]]:
    """(effective mode, indices of the test videos). 'video' picks ceil(test_fraction * n) (>= 1) videos
    with a seeded permutation; 'time' returns all videos (each contributes its tail to the test split)."""
    if mode not in ("auto", "video", "time"):
        raise NeuralRenderError(f"split must be auto, video or time, got {mode!r}")
    if mode == "auto":
        mode = "video" if num_videos >= min_videos_for_video_split else "time"
    if mode == "video":
        if num_videos < 2:
            raise NeuralRenderError("a split by video needs at least 2 videos; use split='time'")
        n_test = max(1, int(np.ceil(test_fraction * num_videos)))
        g = torch.Generator().manual_seed(int(seed))
        return mode, sorted(torch.randperm(num_videos, generator=g)[:n_test].tolist())
    return mode, list(range(num_videos))


def _gray(x: torch.Tensor) -> torch.Tensor:
    """[...,3,H,W] in [0,1] -> luma [...,1,H,W] (ITU-R 601, as torchvision's rgb_to_grayscale)."""
    return (0.299 * x[..., 0:1, :, :] + 0.587 * x[..., 1:2, :, :] + 0.114 * x[..., 2:3, :, :])


def _shift_hue(x: torch.Tensor, shift: float) -> torch.Tensor:
    """Rotate the hue of [...,3,H,W] images in [0,1] by `shift` turns (HSV round trip)."""
    r, g, b = x.unbind(-3)
    mx, mn = x.amax(-3), x.amin(-3)
    d = mx - mn
    safe = torch.where(d > 0, d, torch.ones_like(d))
    h = torch.where(mx == r, (g - b) / safe, torch.where(mx == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    h = torch.where(d > 0, h / 6.0, torch.zeros_like(h))
    h = (h + shift) % 1.0
    s = torch.where(mx > 0, d / torch.where(mx > 0, mx, torch.ones_like(mx)), torch.zeros_like(mx))
    out = []
    for n in (5.0, 3.0, 1.0):  # hsv -> rgb: f(n) = v - v s max(0, min(k, 4 - k, 1)), k = (n + 6h) mod 6
        kk = (n + 6.0 * h) % 6.0
        out.append(mx - mx * s * torch.clamp(torch.minimum(kk, 4.0 - kk), 0.0, 1.0))
    return torch.stack(out, -3)


def color_jitter(x: torch.Tensor, brightness: float, contrast: float, saturation: float, hue: float,
                 order: list[int]) -> torch.Tensor:
    """torchvision ColorJitter's four adjustments with given factors, in `order` (0 brightness, 1 contrast,
    2 saturation, 3 hue), on [...,3,H,W] images in [0,1]; the same factors for every image of x."""
    for o in order:
        if o == 0:
            x = (x * brightness).clamp(0, 1)
        elif o == 1:
            m = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
            x = (contrast * x + (1 - contrast) * m).clamp(0, 1)
        elif o == 2:
            x = (saturation * x + (1 - saturation) * _gray(x)).clamp(0, 1)
        else:
            x = _shift_hue(x, hue)
    return x


class FramePairDataset(Dataset):
    """Random (source, driving) pairs within each segment; `length` items (item i is seeded by seed, i).

    segments: list of (video index, first frame, end frame) ranges of `videos` (uint8 [T,3,S,S]).
    augment: flips and colour jitter of the official code, the same for both frames (module docstring).
    """

    def __init__(self, videos: list[torch.Tensor], segments: list[tuple[int, int, int]], length: int = 10000,
                 seed: int = 0, augment: bool = False, jitter: float = 0.1, hue: float = 0.1):
        self.videos, self.segments, self.length, self.seed = videos, segments, length, seed
        self.augment, self.jitter, self.hue = augment, jitter, hue
        self.weights = torch.tensor([float(e - s) for _, s, e in segments])

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(i))
        seg = int(torch.multinomial(self.weights, 1, generator=g))
        v, s, e = self.segments[seg]
        a, b = (torch.randperm(e - s, generator=g)[:2] + s).tolist()
        vid = self.videos[v]
        pair = torch.stack([vid[a], vid[b]]).float() / 255.0
        if self.augment:
            u = torch.rand(6, generator=g).tolist()
            if u[0] < 0.5:  # time flip: the later frame becomes the source
                pair, a, b = pair.flip(0), b, a
            if u[1] < 0.5:
                pair = pair.flip(-1)
            j = self.jitter
            order = torch.randperm(4, generator=g).tolist()
            pair = color_jitter(pair, 1 - j + 2 * j * u[2], 1 - j + 2 * j * u[3], 1 - j + 2 * j * u[4],
                                self.hue * (2 * u[5] - 1), order)
        return {"source": pair[0], "driving": pair[1], "video": v, "source_index": a, "driving_index": b}


class ReconstructionDataset(Dataset):
    """The reconstruction protocol: for each segment, source = its first frame, driving = every
    `stride`-th frame of it (the first included)."""

    def __init__(self, videos: list[torch.Tensor], segments: list[tuple[int, int, int]], stride: int = 1):
        self.videos, self.segments = videos, segments
        self.items = [(v, s, t) for v, s, e in segments for t in range(s, e, stride)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        v, s, t = self.items[i]
        vid = self.videos[v]
        return {"source": vid[s].float() / 255.0, "driving": vid[t].float() / 255.0, "video": v,
                "source_index": s, "driving_index": t}


def build_frame_pair_data(data: str | os.PathLike, size: int = 64, split: str = "auto", test_fraction: float = 0.25,
                          seed: int = 0, length: int = 10000, eval_stride: int = 1, max_frames: int | None = None,
                          augment: bool = False):
    """(train FramePairDataset, test ReconstructionDataset, info dict) for a dataset name or a user path;
    augment: flips and colour jitter on the training pairs only.

    info: {"size", "channels": 3, "sources": [str], "split": mode, "test_videos": [int],
           "train_segments", "test_segments"}.
    """
    sources = dataset_sources(str(data))
    videos = load_videos(sources, size, max_frames)
    mode, test_ids = split_videos(len(videos), split, test_fraction, seed)
    if mode == "video":
        train_seg = [(v, 0, len(x)) for v, x in enumerate(videos) if v not in test_ids]
        test_seg = [(v, 0, len(x)) for v, x in enumerate(videos) if v in test_ids]
    else:
        train_seg, test_seg = [], []
        for v, x in enumerate(videos):
            cut = len(x) - max(2, int(round(test_fraction * len(x))))
            if cut < 2:
                raise DataError(sources[v], f"video of {len(x)} frames is too short for a time split", field="frames")
            train_seg.append((v, 0, cut))
            test_seg.append((v, cut, len(x)))
    train = FramePairDataset(videos, train_seg, length, seed, augment=augment)
    test = ReconstructionDataset(videos, test_seg, eval_stride)
    info = {"size": size, "channels": 3, "sources": [str(s) for s in sources], "split": mode,
            "test_videos": test_ids if mode == "video" else [], "train_segments": train_seg, "test_segments": test_seg}
    return train, test, info
