"""Video clip datasets: T frames with a stride from one or more videos, with per-frame side data
(landmarks, 2D/3D poses, label maps) cut from the same frame indices."""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from neuralrender.errors import NeuralRenderError
from neuralrender.io.video import find_side_data, load_side_data, read_video_uint8
from neuralrender.paths import resolve_data_path


class VideoClipDataset(Dataset):
    """Clips of `clip_len` frames taken every `stride` frames from each video.

    sources: video paths (anything `read_video` reads; "shared:" prefixes allowed).
    side_data: None = auto (the .npz files `find_side_data` finds beside each video), False = none,
      or a list (one entry per source) of .npz paths or lists of paths.
    hop: distance in frames between the starts of consecutive clips (default 1: every start).
    num_clips: when set, that many clips are drawn (seeded, with replacement only when there are
      fewer distinct clips) instead of every clip.

    Item: {"frames": float32 [T,3,H,W] in [0,1], "frame_index": int64 [T], "video": int,
           "start": int, plus each side array cut to [T,...] under its npz key}.
    Frames are decoded once per video and kept in memory as uint8.
    """

    def __init__(self, sources, clip_len: int = 8, stride: int = 1, hop: int = 1, side_data=None,
                 num_clips: int | None = None, seed: int = 0, frame_width: int | None = None):
        if isinstance(sources, (str, os.PathLike)):
            sources = [sources]
        self.paths = [resolve_data_path(s) for s in sources]
        if clip_len < 1 or stride < 1 or hop < 1:
            raise NeuralRenderError(f"clip_len, stride and hop must be >= 1 (got {clip_len}, {stride}, {hop})")
        self.clip_len, self.stride, self.frame_width = clip_len, stride, frame_width
        self._frames = [read_video_uint8(p, frame_width=frame_width) for p in self.paths]
        self.side = []
        self.meta = []
        for k, (p, fr) in enumerate(zip(self.paths, self._frames)):
            if side_data is False:
                files = []
            elif side_data is None:
                files = find_side_data(p)
            else:
                entry = side_data[k]
                files = [] if entry is None else [entry] if isinstance(entry, (str, os.PathLike)) else entry
            per_frame, meta = {}, {}
            for f in files:
                sd = load_side_data(resolve_data_path(f), fr.shape[0])
                per_frame.update(sd.per_frame)
                meta.update(sd.meta)
            self.side.append(per_frame)
            self.meta.append(meta)
        span = (clip_len - 1) * stride + 1
        clips = [(v, s) for v, fr in enumerate(self._frames) for s in range(0, fr.shape[0] - span + 1, hop)]
        if not clips:
            lens = [fr.shape[0] for fr in self._frames]
            raise NeuralRenderError(f"no clip of {clip_len} frames at stride {stride} fits in videos of "
                                    f"{lens} frames: {[str(p) for p in self.paths]}")
        if num_clips is not None:
            g = torch.Generator().manual_seed(int(seed))
            if num_clips <= len(clips):
                pick = torch.randperm(len(clips), generator=g)[:num_clips]
            else:
                pick = torch.randint(len(clips), (num_clips,), generator=g)
            clips = [clips[i] for i in pick.tolist()]
        self.clips = clips

    def num_frames(self, video: int) -> int:
        return self._frames[video].shape[0]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        v, s = self.clips[i]
        idx = torch.arange(s, s + self.clip_len * self.stride, self.stride)
        frames = torch.from_numpy(self._frames[v][idx.numpy()]).permute(0, 3, 1, 2).float().div_(255.0)
        item = {"frames": frames, "frame_index": idx, "video": v, "start": s}
        for k, arr in self.side[v].items():
            item[k] = arr[idx]
        return item

