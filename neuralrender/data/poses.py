"""Human-motion data: video frames with their pose33 skeletons (Weizmann), and BVH mocap driver sequences.

- `load_pose_clip(video, poses)`: one clip's frames [T,3,S,S] and mediapipe pose33 (converted to pixels at
  the working size S), with the documented fallback for missing joints: a joint that is NaN (or has
  visibility 0) in a frame is linearly interpolated in time from the frames where it was found
  (`graphics.skeleton.fill_missing`; held constant before the first / after the last detection) and marked
  unobserved in `observed`; a joint never detected in the clip stays NaN and is not drawn. Pose files with
  another number of frames than the video are a DataError naming both.
- `PoseFrameDataset`: frames of clips split by frame (the last 20% of every clip held out, as
  data/conditions.py does) or by clip (whole clips held out), each item with its drawn skeleton, the
  previous frame (pose2body's temporal conditioning) and a reference frame of the same clip (the
  appearance source of skeleton-cgan / deformable-gan).
- `bvh_driver`: a BVH clip retargeted to pose33, seen by a front or orbiting virtual camera that follows
  the hips, and (optionally) normalised into a target video's frame (Everybody Dance Now's ankle rule).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.skeleton import (
    NUM_JOINTS,
    ankle_stats,
    draw_pose,
    fill_missing,
    normalize_poses,
    pose33_from_normalized,
    project_joints,
    retarget_bvh,
    smooth_poses,
)

__all__ = ["WEIZMANN_CLIPS", "POSE_KEY", "PoseClip", "load_pose_clip", "weizmann_clips", "PoseFrameDataset",
           "PoseClipDataset", "clip_flows", "BVHDriver", "bvh_driver"]

WEIZMANN_CLIPS = ("wave1_00000002", "jack_00000004", "bend_00000006")
POSE_KEY = "pose33_xyzv_normalized"


@dataclass
class PoseClip:
    """One clip: frames [T,3,S,S] in [0,1]; joints [T,33,2] pixels (gaps filled); observed [T,33] bool (the
    detector found the joint in that frame); cond [T,3,S,S] the drawn skeleton; name and source (file)."""

    name: str
    source: str
    frames: torch.Tensor
    joints: torch.Tensor
    observed: torch.Tensor
    cond: torch.Tensor

    def __len__(self) -> int:
        return self.frames.shape[0]


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def load_pose_clip(video, poses, size: int = 64, key: str = POSE_KEY, smooth_sigma: float = 0.0,
                   name: str | None = None) -> PoseClip:
    """Read a video (anything io.video reads) and its pose .npz (`key`: mediapipe normalized [T,33,4]) -> PoseClip.

    smooth_sigma > 0 also smooths the poses in time (graphics.skeleton.smooth_poses, in frames).
    """
    import numpy as np

    from neuralrender.io.video import load_side_data, read_video_uint8
    from neuralrender.paths import resolve_data_path

    vpath, ppath = resolve_data_path(video), resolve_data_path(poses)
    frames = torch.from_numpy(read_video_uint8(vpath)).permute(0, 3, 1, 2).float().div(255.0)
    T = frames.shape[0]
    try:
        with np.load(ppath, allow_pickle=False) as z:
            if key in z.files and z[key].shape[0] != T:
                raise DataError(ppath, f"{key} has {z[key].shape[0]} frames but the video {vpath} has {T}",
                                field=key)
    except (ValueError, OSError) as e:
        raise DataError(ppath, f"not a plain .npz file: {e}", field="file") from e
    sd = load_side_data(ppath, T)
    if key not in sd.per_frame:
        raise DataError(ppath, f"no per-frame array {key!r}; found {sorted(sd.per_frame) + sorted(sd.meta)}",
                        field=key)
    arr = sd.per_frame[key].float()
    if arr.shape[1:] != (NUM_JOINTS, 4):
        raise DataError(ppath, f"{key} must be [T,{NUM_JOINTS},4] (x, y, z, visibility), got {tuple(arr.shape)}",
                        field=key)
    xy, vis = pose33_from_normalized(arr, size, size)
    filled, observed = fill_missing(xy, vis)
    if smooth_sigma > 0:
        filled = smooth_poses(filled, smooth_sigma)
    frames = _resize(frames, size)
    cond = draw_pose(filled, size, size)
    return PoseClip(name or vpath.stem, str(vpath), frames, filled, observed, cond)


@functools.lru_cache(maxsize=4)
def weizmann_clips(size: int = 64, clips: tuple[str, ...] = WEIZMANN_CLIPS, smooth_sigma: float = 0.0,
                   folder: str | None = None) -> tuple[PoseClip, ...]:
    """The shared Weizmann clips (videos/fullbody_weizmann) as PoseClips (cached per argument set)."""
    from neuralrender.paths import resolve_data_path, shared_path

    root = resolve_data_path(folder) if folder else shared_path("videos", "fullbody_weizmann")
    return tuple(load_pose_clip(root / f"{c}_strip64.png", root / f"{c}_mediapipe_pose33.npz", size,
                                smooth_sigma=smooth_sigma, name=c) for c in clips)


def _pair_index(i: int, n: int, seed: int) -> int:
    """A deterministic pseudo-random index in [0, n) for item i (a reference frame that does not depend on the
    data loader's state, so runs and resumes see the same pairs)."""
    return (i * 2654435761 + seed * 40503 + 12345) % 4294967296 % n


class PoseFrameDataset(Dataset):
    """Frames of PoseClips.

    split 'train' | 'val' | 'all'; split_by 'frame': val = the last ceil(test_fraction T) frames of every clip;
    'clip': val = the clips named in test_clips, train = the others.
    reference 'first': the reference is the first frame of the item's part of the clip (val by clip: the held-out
    clip's frame 0; val by frame: the first held-out frame); 'random': a deterministic pseudo-random frame of
    the same part (`pairs` items per frame, for training pose-transfer methods).

    Item: {"image" [3,S,S], "cond" [3,S,S], "joints" [33,2], "observed" [33] float,
           "prev_image", "prev_cond", "prev_joints" (the previous frame; the frame itself at the start of a part, with
           "has_prev" 0), "ref_image", "ref_cond", "ref_joints", "ref_observed", "clip" int, "frame" int}.
    """

    def __init__(self, clips, split: str = "train", split_by: str = "frame", test_clips=(),
                 test_fraction: float = 0.2, reference: str = "first", pairs: int = 1, seed: int = 0):
        if split not in ("train", "val", "all"):
            raise NeuralRenderError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if split_by not in ("frame", "clip"):
            raise NeuralRenderError(f"split_by must be 'frame' or 'clip', got {split_by!r}")
        if reference not in ("first", "random"):
            raise NeuralRenderError(f"reference must be 'first' or 'random', got {reference!r}")
        names = [c.name for c in clips]
        unknown = [c for c in test_clips if c not in names]
        if unknown:
            raise NeuralRenderError(f"test clips {unknown} are not among the clips {names}")
        if split_by == "clip" and split != "all" and not test_clips:
            raise NeuralRenderError("split_by='clip' needs test_clips (the held-out clip names)")
        self.clips, self.reference, self.pairs, self.seed = list(clips), reference, max(1, pairs), seed
        self.parts: list[tuple[int, int, int]] = []  # (clip, lo, hi)
        for k, c in enumerate(self.clips):
            n = len(c)
            if split == "all":
                lo, hi = 0, n
            elif split_by == "frame":
                cut = n - math.ceil(test_fraction * n)
                lo, hi = (0, cut) if split == "train" else (cut, n)
            else:
                held = c.name in test_clips
                if held != (split == "val"):
                    continue
                lo, hi = 0, n
            if hi - lo < 1:
                raise DataError(c.source, f"the {split} part of clip {c.name} is empty ({n} frames)", field="frames")
            self.parts.append((k, lo, hi))
        self.index = [(p, t) for p, (_, lo, hi) in enumerate(self.parts) for t in range(lo, hi)]
        if not self.index:
            raise NeuralRenderError(f"no frames in split {split!r} ({split_by}, test clips {list(test_clips)})")

    def __len__(self) -> int:
        return len(self.index) * self.pairs

    def __getitem__(self, i: int) -> dict:
        p, t = self.index[i % len(self.index)]
        k, lo, hi = self.parts[p]
        c = self.clips[k]
        r = lo if self.reference == "first" else lo + _pair_index(i, hi - lo, self.seed)
        tp = max(t - 1, lo)
        return {
            "image": c.frames[t], "cond": c.cond[t], "joints": c.joints[t], "observed": c.observed[t].float(),
            "prev_image": c.frames[tp], "prev_cond": c.cond[tp], "prev_joints": c.joints[tp], "has_prev": float(t > lo),
            "ref_image": c.frames[r], "ref_cond": c.cond[r], "ref_joints": c.joints[r],
            "ref_observed": c.observed[r].float(), "clip": k, "frame": t,
        }


def clip_flows(clip: PoseClip) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth optical flow of a clip (DIS, frame t -> t-1, graphics.warp convention) and its
    forward-backward validity mask: ([T,2,S,S], [T,1,S,S]); flow[0] = 0 with mask 0. Cached on the clip."""
    if getattr(clip, "_flows", None) is None:
        from neuralrender.data.conditions import real_flow  # the one DIS + occlusion-check implementation

        object.__setattr__(clip, "_flows", real_flow(clip.frames))
    return clip._flows


class PoseClipDataset(Dataset):
    """Runs of `clip_len` consecutive frames from the train / val part of each clip (split by frame as in
    PoseFrameDataset: val = the last ceil(test_fraction T) frames), for temporal models and video metrics.

    Item: {"cond" [L,3,S,S], "image" [L,3,S,S], "flow" [L,2,S,S], "flow_mask" [L,1,S,S], "joints" [L,33,2],
           "observed" [L,33] float, "frame" int64 [L], "clip" int} (the keys data/conditions.CondVideoDataset
    and methods/_cond2d.clip_metrics use).
    """

    def __init__(self, clips, split: str = "train", clip_len: int = 2, hop: int = 1, test_fraction: float = 0.2):
        if split not in ("train", "val", "all"):
            raise NeuralRenderError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if clip_len < 1 or hop < 1:
            raise NeuralRenderError(f"clip_len and hop must be >= 1, got {clip_len}, {hop}")
        self.clips, self.clip_len = list(clips), clip_len
        self.index = []
        for k, c in enumerate(self.clips):
            n = len(c)
            cut = n - math.ceil(test_fraction * n)
            lo, hi = {"train": (0, cut), "val": (cut, n), "all": (0, n)}[split]
            if hi - lo < clip_len:
                raise DataError(c.source, f"the {split} part of {c.name} has {hi - lo} frames, fewer than the "
                                          f"{clip_len} frames asked for", field="frames")
            self.index += [(k, t) for t in range(lo, hi - clip_len + 1, hop)]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        k, t = self.index[i]
        c, sl = self.clips[k], slice(t, t + self.clip_len)
        flow, mask = clip_flows(c)
        return {"cond": c.cond[sl], "image": c.frames[sl], "flow": flow[sl], "flow_mask": mask[sl],
                "joints": c.joints[sl], "observed": c.observed[sl].float(),
                "frame": torch.arange(t, t + self.clip_len), "clip": k}


@dataclass
class BVHDriver:
    """A mocap clip as 2D poses: joints [T,33,2] pixels, visibility [T,33], cond [T,3,S,S], joints3d [T,33,3],
    cameras (graphics.cameras.Cameras, batch T), fps."""

    joints: torch.Tensor
    visibility: torch.Tensor
    cond: torch.Tensor
    joints3d: torch.Tensor
    cameras: object
    fps: float


def bvh_driver(path, size: int = 64, frames: int | None = 120, stride: int = 4, camera: str = "front",
               fov_deg: float = 30.0, fill: float = 0.75, turns: float = 1.0, target: PoseClip | None = None,
               elevation_deg: float = 5.0) -> BVHDriver:
    """BVH file -> BVHDriver: every `stride`-th motion frame (at most `frames`), retargeted to pose33.

    camera 'front' (a fixed azimuth, facing the subject's rest pose) or 'orbit' (`turns` full turns over the
    clip); the camera looks at the hips of each frame (it follows the subject) from a distance at which the
    subject's largest height fills `fill` of the image. target: a PoseClip whose subject's ankle range and
    height the poses are mapped to (graphics.skeleton.normalize_poses), so a person-specific model sees poses
    at the scale and place it was trained on.
    """
    from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at
    from neuralrender.io.bvh import load_bvh
    from neuralrender.paths import resolve_data_path

    if camera not in ("front", "orbit"):
        raise NeuralRenderError(f"camera must be 'front' or 'orbit', got {camera!r}")
    if stride < 1:
        raise NeuralRenderError(f"stride must be >= 1, got {stride}")
    motion = load_bvh(resolve_data_path(path))
    idx = torch.arange(0, motion.num_frames, stride)
    if frames is not None:
        idx = idx[:frames]
    j3, vis = retarget_bvh(motion, idx)
    T = j3.shape[0]
    hips = 0.5 * (j3[:, 23] + j3[:, 24])
    height = float((j3[..., 1].amax(1) - j3[..., 1].amin(1)).max())  # CMU: y up
    fov = math.radians(fov_deg)
    dist = 0.5 * height / fill / math.tan(fov / 2)
    facing = j3[0, 0] - 0.5 * (j3[0, 7] + j3[0, 8])  # nose - mid-ears: the camera starts in front of the face
    az0 = math.atan2(float(facing[0]), float(facing[2]))
    az = az0 + (2 * math.pi * turns * torch.arange(T) / T if camera == "orbit" else torch.zeros(T))
    el = math.radians(elevation_deg)
    d = torch.stack([torch.sin(az) * math.cos(el), torch.full_like(az, math.sin(el)), torch.cos(az) * math.cos(el)], -1)
    look = hips.clone()
    look[:, 1] = float(0.5 * (j3[..., 1].amax() + j3[..., 1].amin()))  # keep the body's vertical centre
    R, t = look_at(look + dist * d, look)
    cams = Cameras(K=intrinsics_from_fov(fov_deg, size, size).expand(T, 3, 3), R=R, t=t, width=size, height=size)
    xy, v = project_joints(j3, cams, vis)
    if target is not None:
        xy = normalize_poses(xy, ankle_stats(xy, v), ankle_stats(target.joints, target.observed.float()), v)
    return BVHDriver(xy, v, draw_pose(xy, size, size, v), j3, cams, motion.fps / stride)

