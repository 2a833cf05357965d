"""Animate a still image with the motion of a driving video, using a trained animation run.

    python recipes/animate_image.py --run runs/fomm --source face.png --driving driving.mp4 --out out/anim
    python recipes/animate_image.py --run runs/fomm --source shared:videos/face_talking/source_portrait_official_680x676.png \
        --driving shared:videos/face_talking/driving_obama_weekly_address_256.mp4 --find-best-frame

Train the run first, e.g. `neuralrender train fomm --dataset face --out runs/fomm` (any of fomm,
monkey-net, x2face, copart; --method checks that the run is of that method). Writes OUT.mp4 and OUT.gif
with source | driving | output side by side (plus the keypoints drawn on driving and output for keypoint
methods) and OUT_frames.png (a few frames). Motion transfer is relative by default (FOMM, with the adaptive
scale); --absolute uses the driving keypoints as they are. --find-best-frame starts the relative transfer at
the driving frame whose keypoint layout is closest to the source's (the model's own keypoints, normalized
for position and scale) and animates forward and backward from it.

Bad input is handled or reported in one line: a source of another size than the model's is resized (said),
grayscale / RGBA images are converted (alpha over black, as the training frames), a one-frame driving video
gives a one-frame output (said), an unreadable file gives a one-line error naming it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.errors import NeuralRenderError, script_main  # noqa: E402


def load_source(path: str) -> torch.Tensor:
    """Image file -> [1,3,H,W]; gray repeated, RGBA composited over black."""
    from neuralrender.io.images import read_image
    from neuralrender.paths import resolve_data_path

    x = read_image(resolve_data_path(path), channels=None)
    if x.shape[0] == 4:
        x = x[:3] * x[3:4]
    elif x.shape[0] == 2:
        x = x[:1] * x[1:2]
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x[:3].unsqueeze(0).contiguous()


def normalized_layout(kp: torch.Tensor) -> torch.Tensor:
    """Keypoints [N,K,2] -> centred and scaled to unit RMS radius (position- and size-free layout)."""
    c = kp - kp.mean(1, keepdim=True)
    return c / c.pow(2).sum(-1).mean(1).sqrt().clamp_min(1e-6)[:, None, None]


def find_best_frame(model, source: torch.Tensor, driving: torch.Tensor) -> int:
    """Index of the driving frame whose keypoint layout is closest to the source's."""
    with torch.no_grad():
        ks = normalized_layout(model.keypoints(source)["value"])
        kd = torch.cat([model.keypoints(d)["value"] for d in driving.split(16)])
    return int((normalized_layout(kd) - ks).pow(2).sum((1, 2)).argmin())


def animate(model, source, driving, relative=True, adapt_scale=True, best_frame: int | None = None) -> dict:
    """source [1,3,S,S], driving [T,3,S,S] -> model.animate's dict; with best_frame, the relative
    transfer is anchored at that frame and run forward and backward from it (FOMM's --find_best_frame)."""
    if best_frame is None or best_frame == 0:
        return model.animate(source, driving, relative=relative, adapt_scale=adapt_scale)
    fwd = model.animate(source, driving[best_frame:], relative=relative, adapt_scale=adapt_scale)
    bwd = model.animate(source, driving[: best_frame + 1].flip(0), relative=relative, adapt_scale=adapt_scale)
    out = {}
    for k, v in fwd.items():
        if v.shape[0] == driving.shape[0] - best_frame and k in bwd and bwd[k].shape[0] == best_frame + 1:
            out[k] = torch.cat([bwd[k][1:].flip(0), v])
        else:
            out[k] = v
    return out


@script_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="run directory of a trained animation method")
    ap.add_argument("--source", required=True, help="source image (png/jpg/...; 'shared:...' allowed)")
    ap.add_argument("--driving", required=True, help="driving video (mp4/GIF/frame folder/strip)")
    ap.add_argument("--method", default=None, help="fomm | monkey-net | x2face | copart (checked against the run)")
    ap.add_argument("--out", default="animation", help="output path without suffix")
    ap.add_argument("--absolute", action="store_true", help="absolute motion transfer (default: relative)")
    ap.add_argument("--no-adapt-scale", action="store_true", help="relative transfer without the adaptive scale")
    ap.add_argument("--find-best-frame", action="store_true", help="anchor relative motion at the best-aligned frame")
    ap.add_argument("--max-frames", type=int, default=0, help="use at most this many driving frames (0 = all)")
    ap.add_argument("--fps", type=float, default=12.0)
    ap.add_argument("--scale", type=int, default=0, help="nearest upscale of the preview (0 = to ~256 px per panel)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    return run(args)


def run(args) -> int:
    from neuralrender.data.frame_pairs import resize_frames
    from neuralrender.io.images import save_grid
    from neuralrender.io.video import read_video_uint8, write_video
    from neuralrender.methods._animation import draw_keypoints
    from neuralrender.paths import resolve_data_path
    from neuralrender.train.trainer import load_run

    model, _, _, meta = load_run(args.run, device=args.device)
    name = meta.get("method")
    if args.method and args.method != name:
        raise NeuralRenderError(f"{args.run}: the run was trained with '{name}', not '{args.method}'")
    if not hasattr(model, "animate"):
        raise NeuralRenderError(f"{args.run}: method '{name}' is not an image-animation method")
    dev = next(model.parameters()).device
    size = model.cfg.size
    source = load_source(args.source)
    if source.shape[-2:] != (size, size):
        print(f"note: source is {source.shape[-1]}x{source.shape[-2]}, the model works at {size}x{size}: resized")
    source = model.check_input(source).to(dev)
    frames = read_video_uint8(resolve_data_path(args.driving), count=args.max_frames or None)
    if frames.shape[0] == 0:
        raise NeuralRenderError(f"{args.driving}: the driving video has no frames")
    if frames.shape[0] == 1:
        print("note: the driving video has one frame: the output is one frame")
    driving = resize_frames(frames, size).float().div(255).to(dev)
    relative = not args.absolute
    if relative and not hasattr(model, "keypoints"):
        print(f"note: {name} has no keypoints: motion transfer is absolute")
    best = None
    if args.find_best_frame:
        if hasattr(model, "keypoints"):
            best = find_best_frame(model, source, driving)
            print(f"best-aligned driving frame: {best}")
        else:
            print(f"note: --find-best-frame needs keypoints, {name} has none: ignored")
    with torch.no_grad():
        res = animate(model, source, driving, relative, not args.no_adapt_scale, best)
    pred = res["prediction"]
    T = pred.shape[0]
    panels = [source.expand(T, -1, -1, -1), driving, pred]
    if "kp_driving" in res:
        panels += [draw_keypoints(driving, res["kp_driving"]), draw_keypoints(pred, res["kp_used"])]
    strip = torch.cat(panels, -1).clamp(0, 1).cpu()
    scale = args.scale or max(1, 256 // size)
    if scale > 1:  # small models: upscale the preview so it is watchable
        strip = F.interpolate(strip, scale_factor=scale, mode="nearest")
    out = Path(args.out)
    written = [write_video(strip, out.with_suffix(".mp4"), fps=args.fps),
               write_video(strip, out.with_suffix(".gif"), fps=args.fps)]
    pick = torch.linspace(0, T - 1, min(T, 6)).round().long()
    written.append(save_grid(strip[pick], out.parent / f"{out.name}_frames.png", nrow=1))
    for p in written:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
