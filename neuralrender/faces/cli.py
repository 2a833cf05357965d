"""`neuralrender faces track VIDEO`: track a face through a video and write params, an overlay video and a report.

    neuralrender faces track shared:videos/face_talking/driving_obama_weekly_address_256.mp4 --out runs/obama_track

Writes OUT/track.safetensors (per-frame parameters, landmarks, errors), OUT/overlay.mp4 (shaded mesh over the
frames, detected landmarks green, model landmarks red) and OUT/report.json (summary + per-frame errors).
Landmarks: --landmarks NPZ, else `<video>_landmarks.npz` beside the video, else dlib (extra `faces`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from neuralrender.errors import NeuralRenderError

__all__ = ["cli"]


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuralrender faces", description="3D morphable face model tools.")
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("track", help="Face2Face-style tracking of a video")
    t.add_argument("video", help="video file (or shared:relative/path)")
    t.add_argument("--out", default=None, help="output folder (default: runs/faces/<video stem>)")
    t.add_argument("--landmarks", default=None, help="landmarks npz (dlib68_xy_pixels [T,68,2])")
    t.add_argument("--frames", type=int, default=None, help="track only the first N frames")
    t.add_argument("--sizes", type=_ints, default=(64, 128), help="photometric resolutions, coarse to fine")
    t.add_argument("--epochs", type=_ints, default=(6, 2), help="photometric epochs per resolution")
    t.add_argument("--landmark-iters", type=int, default=300, help="Adam steps of the landmark stage")
    t.add_argument("--num-identity", type=int, default=40, help="identity PCA components used (<= 63)")
    t.add_argument("--no-photometric", action="store_true", help="landmark term and priors only")
    t.add_argument("--light-only", action="store_true",
                   help="photometric stage fits only lighting and albedo (ablation: geometry from landmarks)")
    t.add_argument("--no-smooth", action="store_true", help="drop the temporal smoothness term")
    t.add_argument("--no-video", action="store_true", help="skip the overlay video")
    t.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = leave as is)")
    t.add_argument("--device", default="cpu", help="cpu or cuda")
    t.add_argument("--quiet", action="store_true")
    return p


def track_command(a: argparse.Namespace) -> int:
    import torch

    from neuralrender.faces.landmarks import landmarks_for_video, load_landmarks
    from neuralrender.faces.model import FaceModel
    from neuralrender.faces.tracking import TrackConfig, overlay_frames, report_json, save_track, track_video
    from neuralrender.io.video import read_video, video_info, write_video
    from neuralrender.paths import resolve_data_path

    video = resolve_data_path(a.video)
    info = video_info(video)
    frames = read_video(video, count=a.frames)
    T = frames.shape[0]
    if a.landmarks:
        lm = load_landmarks(resolve_data_path(a.landmarks))
    else:
        lm = landmarks_for_video(video, frames if a.frames is None else None)
    if lm.num_frames < T:
        raise NeuralRenderError(f"{lm.source}: {lm.num_frames} landmark frames for {T} video frames")
    if a.frames is None and lm.num_frames != T:
        raise NeuralRenderError(f"{lm.source}: {lm.num_frames} landmark frames but {video} has {T} frames")
    out = Path(a.out) if a.out else Path("runs") / "faces" / video.stem
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrackConfig(num_identity=a.num_identity, photo_sizes=a.sizes, photo_epochs=a.epochs,
                      landmark_iters=a.landmark_iters, photometric=not a.no_photometric,
                      photo_geometry=not a.light_only, smooth=not a.no_smooth,
                      quiet=a.quiet, threads=a.threads or None)
    frames = frames.to(a.device)
    model = FaceModel(num_identity=cfg.num_identity).to(a.device)
    tr = track_video(frames, lm.landmarks[:T].to(a.device), lm.valid[:T], cfg, model)
    save_track(tr, out / "track.safetensors")
    (out / "report.json").write_text(report_json(tr))
    if not a.no_video:
        old = torch.get_num_threads()
        if a.threads:
            torch.set_num_threads(a.threads)
        try:
            ov = overlay_frames(model, tr, frames)
        finally:
            torch.set_num_threads(old)
        write_video(ov.cpu(), out / "overlay.mp4", fps=info.fps or 25.0)
    s = tr.summary()
    if not a.quiet:
        print(json.dumps(s, indent=1))
        print(f"wrote {out}/track.safetensors, report.json" + ("" if a.no_video else ", overlay.mp4"))
    return 0


def cli(argv: list[str] | None = None) -> int:
    """Entry point of `neuralrender faces ...`; returns the exit code (2 with a message on user errors)."""
    a = _parser().parse_args(argv)
    try:
        if a.cmd == "track":
            return track_command(a)
    except NeuralRenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    raise SystemExit(cli())
