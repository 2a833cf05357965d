"""Videos: read mp4/avi/mov/mkv/webm (PyAV), GIF, image folders and frame strips (one image of
frames side by side, e.g. the Weizmann 64x64 strips); per-frame side data from .npz; mp4/GIF writer.

Frames in memory are float32 [T,3,H,W] in [0,1] (uint8 [T,H,W,3] from `read_video_uint8`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from neuralrender.errors import DataError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class VideoInfo:
    """num_frames, width, height, fps (None for image folders and strips), kind."""

    num_frames: int
    width: int
    height: int
    fps: float | None
    kind: str  # "container" | "gif" | "folder" | "strip"


def _kind(p: Path) -> str:
    if p.is_dir():
        return "folder"
    if not p.is_file():
        raise DataError(p, "video not found", field="file")
    suf = p.suffix.lower()
    if suf in VIDEO_SUFFIXES:
        return "container"
    if suf == ".gif":
        return "gif"
    if suf in IMAGE_SUFFIXES:
        return "strip"
    raise DataError(p, f"unknown video type {suf!r}; known: {VIDEO_SUFFIXES + ('.gif',) + IMAGE_SUFFIXES}",
                    field="file")


def _folder_files(p: Path) -> list[Path]:
    files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(p, "folder holds no image frames", field="file")
    return files


def _to_rgb(arr: np.ndarray, background: float = 0.0) -> np.ndarray:
    """uint8 [...,H,W] / [...,H,W,1|3|4] -> uint8 [...,H,W,3]; alpha composited over `background`."""
    if arr.ndim == 2 or (arr.ndim >= 3 and arr.shape[-1] not in (1, 3, 4)):
        arr = arr[..., None]
    c = arr.shape[-1]
    if c == 1:
        return np.repeat(arr, 3, -1)
    if c == 4:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        if (a == 1).all():
            return np.ascontiguousarray(arr[..., :3])
        rgb = arr[..., :3].astype(np.float32) * a + background * 255.0 * (1 - a)
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return arr


def strip_frame_width(p: Path, width: int, height: int, frame_width: int | None) -> int:
    """Frame width of a strip: `frame_width`, else the number after 'strip' in the name, else height."""
    if frame_width is None:
        m = re.search(r"strip(\d+)", p.stem)
        frame_width = int(m.group(1)) if m else height
    if frame_width <= 0 or width % frame_width:
        raise DataError(p, f"strip width {width} is not a multiple of the frame width {frame_width}",
                        field="frame_width")
    return frame_width


def video_info(path: str | os.PathLike, frame_width: int | None = None) -> VideoInfo:
    """Frame count, size and fps without decoding every frame (containers: decodes to count)."""
    p = Path(path)
    kind = _kind(p)
    if kind == "container":
        import av

        try:
            with av.open(str(p)) as c:
                if not c.streams.video:
                    raise DataError(p, "file has no video stream", field="video")
                s = c.streams.video[0]
                n = sum(1 for _ in c.decode(s))
                return VideoInfo(n, s.codec_context.width, s.codec_context.height,
                                 float(s.average_rate) if s.average_rate else None, kind)
        except av.error.FFmpegError as e:
            raise DataError(p, f"cannot decode video: {e}", field="file") from e
    if kind == "folder":
        from neuralrender.io.images import read_image_array

        files = _folder_files(p)
        a = read_image_array(files[0])
        return VideoInfo(len(files), a.shape[1], a.shape[0], None, kind)
    frames = read_video_uint8(p, frame_width=frame_width)
    return VideoInfo(frames.shape[0], frames.shape[2], frames.shape[1], None, kind)


def read_video_uint8(path: str | os.PathLike, start: int = 0, count: int | None = None, stride: int = 1,
                     frame_width: int | None = None, background: float = 0.0) -> np.ndarray:
    """Decode frames start, start+stride, ... (at most `count`) -> uint8 numpy [T,H,W,3].

    path: a video container, a GIF, a folder of images (sorted by name) or a frame strip (a single
    image of frames side by side, frame_width wide; default: the number after 'strip' in the file name,
    else square frames). Alpha is composited over `background` (0..1 gray level).
    """
    p = Path(path)
    kind = _kind(p)
    if start < 0 or stride < 1 or (count is not None and count < 0):
        raise DataError(p, f"bad frame range start={start} count={count} stride={stride}", field="frames")
    want = lambda i: i >= start and (i - start) % stride == 0  # noqa: E731
    out: list[np.ndarray] = []
    full = lambda: count is not None and len(out) >= count  # noqa: E731
    if kind == "container":
        import av

        try:
            with av.open(str(p)) as c:
                if not c.streams.video:
                    raise DataError(p, "file has no video stream", field="video")
                for i, fr in enumerate(c.decode(c.streams.video[0])):
                    if full():
                        break
                    if want(i):
                        out.append(fr.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as e:
            raise DataError(p, f"cannot decode video: {e}", field="file") from e
    elif kind == "folder":
        from neuralrender.io.images import read_image_array

        for i, f in enumerate(_folder_files(p)):
            if full():
                break
            if want(i):
                a = _to_rgb(read_image_array(f), background)
                if out and a.shape != out[0].shape:
                    raise DataError(f, f"frame size {a.shape[:2]} differs from the first frame's "
                                       f"{out[0].shape[:2]}", field="size")
                out.append(a)
    else:
        from neuralrender.io.images import read_image_array

        if kind == "gif":
            import imageio.v3 as iio

            try:
                # RGBA for every frame: palette GIFs may mix modes between frames.
                arr = np.asarray(iio.imread(p, index=None, mode="RGBA"))
            except Exception as e:
                raise DataError(p, f"cannot decode GIF: {e}", field="file") from e
            if arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4)):
                arr = arr[None]
        else:
            strip = read_image_array(p)
            h, w = strip.shape[:2]
            fw = strip_frame_width(p, w, h, frame_width)
            arr = np.stack(np.split(strip, w // fw, axis=1))
        idx = list(range(start, arr.shape[0], stride))
        if count is not None:
            idx = idx[:count]
        out = [_to_rgb(arr[i], background) for i in idx]
    if not out:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(out)


def read_video(path: str | os.PathLike, start: int = 0, count: int | None = None, stride: int = 1,
               frame_width: int | None = None, background: float = 0.0) -> torch.Tensor:
    """Like `read_video_uint8` but returns float32 [T,3,H,W] in [0,1]."""
    a = read_video_uint8(path, start, count, stride, frame_width, background)
    return torch.from_numpy(a).permute(0, 3, 1, 2).float().div_(255.0)


def frames_to_uint8(frames) -> np.ndarray:
    """[T,3,H,W] / [T,H,W,3] tensor or array, float in [0,1] or uint8 -> uint8 numpy [T,H,W,3]."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu()
        if frames.ndim == 4 and frames.shape[1] in (1, 3) and frames.shape[-1] not in (1, 3):
            frames = frames.permute(0, 2, 3, 1)
        frames = frames.numpy()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
        raise ValueError(f"expected frames [T,3,H,W] or [T,H,W,3], got shape {frames.shape}")
    if frames.dtype != np.uint8:
        frames = np.clip(np.round(frames.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if frames.shape[-1] == 1:
        frames = np.repeat(frames, 3, -1)
    return np.ascontiguousarray(frames)


def write_video(frames, path: str | os.PathLike, fps: float = 25.0, crf: int = 18) -> Path:
    """Write frames ([T,3,H,W] or [T,H,W,3]; float in [0,1] or uint8) as an H.264 mp4 (yuv420p;
    odd sizes are padded by one edge pixel) or, for a .gif path, an animated GIF."""
    a = frames_to_uint8(frames)
    if a.shape[0] == 0:
        raise ValueError("write_video needs at least one frame")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() == ".gif":
        import imageio.v3 as iio

        iio.imwrite(p, a, duration=1000.0 / fps, loop=0)
        return p
    import av

    h, w = a.shape[1:3]
    a = np.pad(a, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    with av.open(str(p), mode="w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        s.width, s.height = a.shape[2], a.shape[1]
        s.pix_fmt = "yuv420p"
        s.options = {"crf": str(crf), "preset": "medium"}
        s.codec_context.thread_count = 1
        for img in a:
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return p


# ---------------------------------------------------------------------------------------------
# side data


@dataclass
class SideData:
    """Arrays of an .npz aligned to a video: per_frame {key: tensor [T,...]}, meta {key: numpy}."""

    per_frame: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, np.ndarray] = field(default_factory=dict)


def load_side_data(path: str | os.PathLike, num_frames: int) -> SideData:
    """Load an .npz (no pickles) and split it into per-frame arrays (first dim == num_frames) and
    metadata (scalars, or arrays of another length such as image_size_wh). A folder of label-map
    images (one per frame, sorted by name) gives {folder name: int64 [T,1,H,W]}.

    Raises DataError when no array has num_frames rows (the file belongs to another video).
    """
    p = Path(path)
    if p.is_dir():
        return _label_folder(p, num_frames)
    if not p.is_file():
        raise DataError(p, "side-data file not found", field="file")
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise DataError(p, f"not a plain .npz file: {e}", field="file") from e
    out = SideData()
    with z:
        for k in z.files:
            try:
                v = z[k]
            except ValueError as e:
                raise DataError(p, f"array holds Python objects: {e}", field=k) from e
            if v.ndim >= 1 and v.shape[0] == num_frames and v.dtype.kind in "fiub":
                out.per_frame[k] = torch.from_numpy(np.ascontiguousarray(v))
            else:
                out.meta[k] = v
    if not out.per_frame:
        shapes = {k: v.shape for k, v in out.meta.items()}
        raise DataError(p, f"no array has {num_frames} rows (one per video frame); found {shapes}",
                        field="frames")
    return out


def _label_folder(p: Path, num_frames: int) -> SideData:
    from neuralrender.io.images import read_labels

    files = _folder_files(p)
    if len(files) != num_frames:
        raise DataError(p, f"{len(files)} label images for a video of {num_frames} frames", field="frames")
    maps = [read_labels(f) for f in files]
    for f, m in zip(files, maps):
        if m.shape != maps[0].shape:
            raise DataError(f, f"label map size {tuple(m.shape[1:])} differs from {tuple(maps[0].shape[1:])}",
                            field="size")
    return SideData(per_frame={p.name: torch.stack(maps)})


def find_side_data(video_path: str | os.PathLike) -> list[Path]:
    """.npz files (and label-map folders) beside a video whose name starts with the video's stem + "_"
    (a trailing '_strip<N>' of the stem is ignored): e.g. clip.mp4 -> clip_landmarks.npz and
    clip_labels/, x_strip64.png -> x_pose.npz."""
    p = Path(video_path)
    stem = re.sub(r"_strip\d+$", "", p.stem if p.is_file() else p.name)
    parent = p.parent
    npz = [f for f in parent.glob("*.npz") if f.stem == stem or f.stem.startswith(stem + "_")]
    dirs = [d for d in parent.iterdir() if d.is_dir() and d.name.startswith(stem + "_") and d != p]
    return sorted(npz + dirs)
