"""Motion transfer with a person-specific pose2body model (Everybody Dance Now), driven by a video or by mocap.

    # B's person does A's motion (B = the person the model learned; trains one first when --run is not given)
    python recipes/motion_transfer.py --source-video shared:videos/fullbody_weizmann/wave1_00000002_strip64.png \
        --target-video shared:videos/fullbody_weizmann/jack_00000004_strip64.png --out out/wave_on_jack
    # a CMU mocap clip on the learned person, seen from a camera orbiting the subject
    python recipes/motion_transfer.py --run runs/pose2body_jack --bvh shared:keypoints/mocap_bvh/cmu_01_01.bvh \
        --camera orbit --out out/bvh_orbit

Writes OUT.mp4 with driver | pose | output side by side (driver: the source video's frames, or the mocap
skeleton as projected by the virtual camera before normalisation) and OUT_frames.png.
The driving poses are mapped into the target video's frame with Everybody Dance Now's normalisation (ankle
range and subject height, graphics.skeleton.normalize_poses) and optionally smoothed in time (--smooth).
Source poses come from the .npz beside the video (`*_mediapipe_pose33.npz`, mediapipe normalized pose33) or
--source-poses; missing joints are filled in time (data.poses fallback). Bad input (unknown clip, a pose file
of another length than its video, a broken BVH) ends with a one-line error naming the file.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.errors import NeuralRenderError, script_main  # noqa: E402


def clip_name(path: str) -> str:
    """'shared:videos/fullbody_weizmann/jack_00000004_strip64.png' -> 'jack_00000004'."""
    return re.sub(r"_strip\d+$", "", Path(path.split(":", 1)[-1]).stem)


def pose_file(video: str, given: str | None) -> Path:
    from neuralrender.io.video import find_side_data
    from neuralrender.paths import resolve_data_path

    if given:
        return resolve_data_path(given)
    found = [p for p in find_side_data(resolve_data_path(video)) if p.suffix == ".npz"]
    if not found:
        raise NeuralRenderError(f"no pose .npz beside {video}; pass --source-poses")
    return found[0]


def train_target(target: str, out: Path, steps: int, threads: int) -> Path:
    """Train pose2body on the target clip (a Weizmann clip) -> run directory."""
    from neuralrender.train.trainer import Trainer, build_configs

    run = out.parent / f"{out.name}_run"
    _, t, m = build_configs("pose2body", {}, {"clip": clip_name(target), "out": str(run), "steps": steps,
                                              "eval_every": 0, "ckpt_every": steps, "threads": threads})
    Trainer("pose2body", t, m).run()
    return run


@script_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", help="a trained pose2body run (the target person)")
    ap.add_argument("--target-video", help="the target person's video (a Weizmann clip), trained on when --run is absent")
    ap.add_argument("--source-video", help="the video whose motion is transferred")
    ap.add_argument("--source-poses", help="pose33 .npz of the source video (default: found beside it)")
    ap.add_argument("--bvh", help="a BVH mocap file to drive the person instead of a video")
    ap.add_argument("--camera", choices=["front", "orbit"], default="orbit", help="virtual camera for --bvh")
    ap.add_argument("--frames", type=int, default=120, help="frames to render (BVH: every --stride-th mocap frame)")
    ap.add_argument("--stride", type=int, default=4, help="BVH frame stride")
    ap.add_argument("--smooth", type=float, default=1.0, help="temporal smoothing of the driving poses (frames)")
    ap.add_argument("--steps", type=int, default=300, help="training steps when --run is absent")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--out", required=True, help="output path without extension")
    a = ap.parse_args(argv)
    return run(a)


def run(a) -> int:
    from neuralrender.data.poses import bvh_driver, load_pose_clip, weizmann_clips
    from neuralrender.graphics.skeleton import ankle_stats, draw_pose, normalize_poses, smooth_poses
    from neuralrender.io.images import save_grid
    from neuralrender.io.video import write_video
    from neuralrender.train.trainer import load_run

    if (a.bvh is None) == (a.source_video is None):
        raise NeuralRenderError("give exactly one driver: --source-video or --bvh")
    if a.run is None and a.target_video is None:
        raise NeuralRenderError("give --run (a trained pose2body run) or --target-video (trained on first)")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run_dir = Path(a.run) if a.run else train_target(a.target_video, out, a.steps, a.threads)
    model, _, _, _ = load_run(run_dir, device="cpu")
    if model.name != "pose2body":
        raise NeuralRenderError(f"{run_dir} is a {model.name} run; motion transfer needs a pose2body run")
    size = model.cfg.size
    target = next(c for c in weizmann_clips(size) if c.name == model.cfg.clip)
    t_stats = ankle_stats(target.joints, target.observed.float())

    if a.bvh:
        drv = bvh_driver(a.bvh, size=size, frames=a.frames, stride=a.stride, camera=a.camera)
        joints, vis = drv.joints, drv.visibility
        driver = drv.cond  # the mocap skeleton as the virtual camera sees it
    else:
        src = load_pose_clip(a.source_video, pose_file(a.source_video, a.source_poses), size)
        n = min(a.frames, len(src))
        joints, vis, driver = src.joints[:n], src.observed[:n].float(), src.frames[:n]
    if a.smooth > 0:
        joints = smooth_poses(joints, a.smooth)
    poses = normalize_poses(joints, ankle_stats(joints, vis), t_stats)
    cond = draw_pose(poses, size, size)
    with torch.no_grad():
        video = model.generate_clip(cond[None], poses[None])[0]
    side = torch.cat([driver, cond, video], -1)  # driver | pose | output
    path = write_video(side, out.with_suffix(".mp4"), fps=a.fps)
    save_grid(side[:: max(1, len(side) // 8)][:8], out.parent / f"{out.name}_frames.png", nrow=1)
    print(f"wrote {path} ({len(side)} frames, driver | pose | output) using {run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
