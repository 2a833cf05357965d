"""iBUG-68 facial landmarks for a video: read a precomputed `<video>_landmarks.npz` as given (the shared clips ship
dlib68 and mediapipe arrays), else detect them with dlib (extra `faces`: dlib-bin + face-recognition-models) and
cache the result beside the video (or in `cache_dir`). Nothing is downloaded.

Arrays: landmarks [T,68,2] float32 pixels in OUR convention (pixel (i,j) centre at x=j+0.5): the npz stores dlib's
integer pixel indices (part.x, part.y) as given, so loading adds 0.5 (and the dlib cache subtracts it), valid [T] bool (False
where no face was found: those rows are NaN in the file and are filled by `interpolate_missing`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuralrender.errors import DataError

__all__ = ["FaceLandmarks", "load_landmarks", "landmarks_for_video", "interpolate_missing", "inter_ocular",
           "LANDMARK_KEY"]

LANDMARK_KEY = "dlib68_xy_pixels"
MEDIAPIPE_KEY = "mediapipe468_xyz_normalized"


@dataclass
class FaceLandmarks:
    """landmarks [T,68,2] pixels (missing frames interpolated), valid [T] bool (face found), source str,
    mediapipe [T,468,3] normalised or None, image_size (W, H) or None."""

    landmarks: torch.Tensor
    valid: torch.Tensor
    source: str
    mediapipe: torch.Tensor | None = None
    image_size: tuple[int, int] | None = None

    @property
    def num_frames(self) -> int:
        return self.landmarks.shape[0]


def interpolate_missing(landmarks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Fill frames with valid=False [T] by linear interpolation in time between the nearest valid frames
    (constant extrapolation at the ends). landmarks [T,L,2] -> [T,L,2]. All-missing raises."""
    valid = valid.bool()
    if not bool(valid.any()):
        raise ValueError("no frame has landmarks")
    T = landmarks.shape[0]
    t = torch.arange(T, dtype=torch.float64)
    good = t[valid].numpy()
    flat = landmarks.reshape(T, -1).double().numpy()
    out = np.stack([np.interp(t.numpy(), good, flat[valid.numpy(), k]) for k in range(flat.shape[1])], 1)
    return torch.from_numpy(out).to(landmarks.dtype).reshape(landmarks.shape)


def inter_ocular(landmarks: torch.Tensor) -> torch.Tensor:
    """Distance between the outer eye corners (iBUG 37 and 46, the 300-W normalisation): [...,68,2] -> [...]."""
    return torch.linalg.norm(landmarks[..., 36, :] - landmarks[..., 45, :], dim=-1)


def load_landmarks(path: str | os.PathLike, num_frames: int | None = None) -> FaceLandmarks:
    """Read a landmarks npz (key dlib68_xy_pixels [T,68,2]; NaN rows = no face). Validates shape, frame count
    (when num_frames is given) and finiteness; raises DataError naming the file and key."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as d:
            arr = {k: d[k] for k in d.files}
    except FileNotFoundError as e:
        raise DataError(p, "landmarks file not found", field="file") from e
    except Exception as e:
        raise DataError(p, f"cannot read npz: {e}", field="file") from e
    if LANDMARK_KEY not in arr:
        raise DataError(p, f"missing array (keys: {sorted(arr)})", field=LANDMARK_KEY)
    lm = np.asarray(arr[LANDMARK_KEY], dtype=np.float32)
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise DataError(p, f"expected [T,68,2] landmarks, got shape {lm.shape}", field=LANDMARK_KEY)
    if num_frames is not None and lm.shape[0] != num_frames:
        raise DataError(p, f"has {lm.shape[0]} frames but the video has {num_frames}", field=LANDMARK_KEY)
    valid = np.isfinite(lm).all(axis=(1, 2))
    if np.isinf(lm).any():
        raise DataError(p, "infinite landmark values", field=LANDMARK_KEY)
    if not valid.any():
        raise DataError(p, "no frame has a face (all landmarks NaN)", field=LANDMARK_KEY)
    lm_t, valid_t = torch.from_numpy(lm) + 0.5, torch.from_numpy(valid)
    mp = None
    if MEDIAPIPE_KEY in arr:
        m = np.asarray(arr[MEDIAPIPE_KEY], dtype=np.float32)
        if m.ndim == 3 and m.shape[0] == lm.shape[0] and m.shape[2] == 3:
            mp = torch.from_numpy(m)
    size = tuple(int(v) for v in arr["image_size_wh"]) if "image_size_wh" in arr else None
    return FaceLandmarks(interpolate_missing(lm_t, valid_t), valid_t, str(p), mp, size)


def _sidecar(video: Path) -> Path:
    return video.with_name(video.stem + "_landmarks.npz")


def landmarks_for_video(video: str | os.PathLike, frames: torch.Tensor | None = None,
                        cache_dir: str | os.PathLike | None = None) -> FaceLandmarks:
    """Landmarks of every frame of `video`: its `<stem>_landmarks.npz` beside it (or in cache_dir) when present,
    else dlib's 68-point predictor on `frames` [T,3,H,W] (read from the video when None), saved to the cache.
    Without dlib installed: MissingDependencyError naming the `faces` extra."""
    video = Path(video)
    cands = [_sidecar(video)] + ([Path(cache_dir) / _sidecar(video).name] if cache_dir else [])
    T = None if frames is None else frames.shape[0]
    for c in cands:
        if c.is_file():
            return load_landmarks(c, T)
    from neuralrender.metrics.keypoints import detect_face_landmarks_dlib  # raises MissingDependencyError

    if frames is None:
        from neuralrender.io.video import read_video
        frames = read_video(video)
    kp, ok = detect_face_landmarks_dlib(frames)
    valid = ok.all(-1)
    if not bool(valid.any()):
        raise DataError(video, "dlib found no face in any frame", field="frames")
    out = Path(cache_dir) / _sidecar(video).name if cache_dir else _sidecar(video)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, **{LANDMARK_KEY: kp.numpy() - 0.5, "image_size_wh": np.array([frames.shape[-1], frames.shape[-2]])})
    except OSError:
        pass  # read-only folder: no cache, still return the detections
    return FaceLandmarks(interpolate_missing(kp, valid), valid, "dlib", None, (frames.shape[-1], frames.shape[-2]))
