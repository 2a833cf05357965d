"""Facial reenactment: drive a target actor with a source actor's head pose, expression and eyes.

    python recipes/reenact_face.py --source shared:videos/face_talking/source_katiehill_weekly_address_256.mp4 \
        --target shared:videos/face_talking/driving_obama_weekly_address_256.mp4 --out runs/reenact

1. Tracks both videos (Face2Face-style, `neuralrender.faces.tracking`), or loads --source-track / --target-track.
2. Trains the target's Deep Video Portraits renderer (`dvp`, first 80% of the target's frames; default budget:
   1000 steps, batch 4, lr 5e-4, U-Net / PatchGAN width 16, window 3, lip blobs + filled inner lips, eye/lip L1
   weight 4, random shift / rotation / zoom of the training pairs, tracked parameters held on repeated pictures,
   distinct-picture window with one look-ahead slot (`--ahead 1`, offline), 128², 1 thread), or loads --run.
3. Transfers the source's expression (--expression: absolute, relative or normalised to the target's range) and
   relative head pose onto the target's identity, lighting and camera, rasterizes the conditioning maps, runs the
   renderer, and writes OUT/reenact.mp4 (source | conditioning | output), OUT/face2face.mp4 (Face2Face-style: the
   target's re-rendered face model with the source expression pasted into the target frames) and
   OUT/metrics.json: the held-out self-reenactment metrics of the run (dvp vs the nearest-neighbour baseline) and
   the cross-reenactment checks on the OUTPUT frames (`neuralrender.faces.evaluation.reenactment_checks`, dlib:
   mouth-opening correlation with the source, face-recognition embedding distance to target vs source), also for
   the Face2Face composite. Without dlib (extra `faces`) the checks are reported as unavailable (never faked) and
   the mouth correlation of the transferred model's landmarks is given instead, labelled as a proxy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.errors import NeuralRenderError, script_main  # noqa: E402


def last_eval(run_dir: Path) -> dict:
    """The last held-out evaluation logged in a run's metrics.jsonl ({} when none)."""
    out = {}
    log = run_dir / "metrics.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            d = json.loads(line)
            if d.get("split") == "val":
                out = d
    return out


def get_track(video: Path, track: str | None, out: Path, frames: int | None):
    from neuralrender.faces.landmarks import landmarks_for_video
    from neuralrender.faces.tracking import TrackConfig, load_track, save_track, track_video
    from neuralrender.io.video import read_video

    imgs = read_video(video, count=frames)
    if track:
        return load_track(track, num_frames=None), imgs
    lm = landmarks_for_video(video, imgs if frames is None else None)
    T = imgs.shape[0]
    tr = track_video(imgs, lm.landmarks[:T], lm.valid[:T], TrackConfig())
    save_track(tr, out / "track.safetensors")
    return tr, imgs


def driving_conditioning(cfg, face, src, tgt, src_frames: torch.Tensor, pose: str = "relative",
                         expression: str = "relative", light: str = "cycle"):
    """The renderer's stacked input [T,window*5,size,size] for the source track `src` driving the target track
    `tgt` (dvp config `cfg`) and the transferred parameters. As in training: with cfg.hold_repeats a repeated
    source picture (`repeated_frames` of src_frames) keeps its first frame's tracked parameters and landmarks
    (`hold_index`), with cfg.distinct_window repeated pictures do not advance the window, with cfg.diff_window the
    window is difference-coded, with cfg.ahead it looks ahead on the source track (the clip's last frame repeated)."""
    from neuralrender.faces.conditioning import (
        hold_index,
        repeated_frames,
        stack_window,
        track_maps,
        transfer_params,
    )
    from neuralrender.faces.landmarks import inter_ocular

    T = src.params.batch_size
    n = min(T, src_frames.shape[0])
    rep = torch.zeros(T, dtype=torch.bool)
    rep[:n] = repeated_frames(src_frames[:n])
    h = hold_index(rep) if cfg.hold_repeats else torch.arange(T)
    fitted = src.lm_pred if src.lm_pred is not None else face.landmarks_2d(src.params, src.width, src.height,
                                                                           src.landmarks)[0]
    sp, slm, fitted = src.params.index(h), src.landmarks[h], fitted[h]
    p = transfer_params(sp, tgt.params, pose=pose, expression=expression, light=light)
    scale = (inter_ocular(tgt.landmarks).mean() / inter_ocular(src.landmarks).mean()).item()
    maps = track_maps(face, p, slm, fitted, tgt.width, tgt.height, cfg.size, cfg.mouth, cfg.mouth_fill, scale)
    return stack_window(maps, cfg.window, rep if cfg.distinct_window else None, cfg.diff_window,
                        min(cfg.ahead, cfg.window - 1)), p


@script_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", default="runs/reenact")
    ap.add_argument("--source-track", default=None)
    ap.add_argument("--target-track", default=None)
    ap.add_argument("--run", default=None, help="a trained dvp run of the target (else one is trained)")
    ap.add_argument("--checkpoint", default=None, help="with --run: this checkpoint instead of last.safetensors")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--width", type=int, default=16, help="U-Net and PatchGAN width of the trained renderer")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=None, help="use the first N frames of each video")
    ap.add_argument("--pose", default="relative", choices=["relative", "source", "target"])
    ap.add_argument("--expression", default="relative", choices=["absolute", "relative", "normalised"])
    ap.add_argument("--light", default="cycle", choices=["cycle", "mean"], help="the target's per-frame or mean SH")
    ap.add_argument("--no-checks", action="store_true", help="skip the dlib checks on the output")
    a = ap.parse_args(argv)
    return run(a)


def run(a) -> int:
    import time

    import torch.nn.functional as F

    from neuralrender.faces.conditioning import cond_to_rgb, face2face_composite, transfer_params
    from neuralrender.faces.evaluation import mean_embedding, mouth_opening, pearson, reenactment_checks
    from neuralrender.faces.model import FaceModel
    from neuralrender.io.video import video_info, write_video
    from neuralrender.paths import resolve_data_path
    from neuralrender.train.trainer import Trainer, build_configs, load_run

    torch.set_num_threads(1)
    cpu0 = time.process_time()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    src_v, tgt_v = resolve_data_path(a.source), resolve_data_path(a.target)
    (out / "source").mkdir(exist_ok=True)
    (out / "target").mkdir(exist_ok=True)
    src, src_frames = get_track(src_v, a.source_track, out / "source", a.frames)
    tgt, tgt_frames = get_track(tgt_v, a.target_track, out / "target", a.frames)
    tgt_track_path = a.target_track or str(out / "target" / "track.safetensors")
    if a.run:
        model, bundle, tcfg, _ = load_run(a.run, device="cpu", checkpoint=a.checkpoint)
        run_eval = last_eval(Path(a.run))
    else:
        over = {"track": tgt_track_path, "data": str(tgt_v), "steps": a.steps, "size": a.size, "window": a.window,
                "width": a.width, "d_width": a.width, "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed,
                "threads": 1, "eval_every": 0, "ckpt_every": 100, "out": str(out / "dvp"), "quiet": True,
                "frames": a.frames or 0}
        _, tcfg, mcfg = build_configs("dvp", {}, over)
        tr = Trainer("dvp", tcfg, mcfg)
        run_eval = tr.run()["eval"]
        model = tr.model.eval()
    cpu_train = time.process_time() - cpu0
    size = model.cfg.size
    face = FaceModel(num_identity=tgt.params.identity.shape[1])
    cond, p = driving_conditioning(model.cfg, face, src, tgt, src_frames, a.pose, a.expression, a.light)
    T = p.batch_size
    with torch.no_grad():
        video = model.generate(cond)
    src_small = F.interpolate(src_frames, size=(size, size), mode="area")
    side = torch.cat([src_small, cond_to_rgb(cond), video], -1)
    fps = video_info(src_v).fps or 25.0
    write_video(side, out / "reenact.mp4", fps=fps)
    write_video(video, out / "output.mp4", fps=fps)
    # Face2Face: expression transfer with the target's pose, composited into the target frames
    n = min(T, tgt_frames.shape[0])
    f2f = face2face_composite(face, transfer_params(src.params.index(torch.arange(n)), tgt.params, pose="target",
                                                    expression=a.expression), tgt_frames[:n])
    write_video(f2f, out / "face2face.mp4", fps=video_info(tgt_v).fps or 25.0)

    pred, _ = face.landmarks_2d(p, tgt.width, tgt.height)
    metrics = {"self_reenactment_heldout": run_eval, "frames": T, "pose": a.pose, "expression": a.expression,
               "light": a.light,
               "renderer": a.run or str(out / "dvp"), "checkpoint": a.checkpoint, "cpu_s_tracks_and_training": cpu_train,
               "mouth_corr_model_landmarks_proxy": pearson(mouth_opening(src.landmarks), mouth_opening(pred))}
    if not a.no_checks:
        try:
            res = src_frames.shape[-1]  # dlib at the source's resolution (its reference landmarks)
            e_tgt, e_src = mean_embedding(tgt_frames[::4])[0], mean_embedding(src_frames[::4])[0]
            metrics["dvp"] = reenactment_checks(video, src.landmarks, e_tgt, e_src, size=res)
            metrics["face2face"] = reenactment_checks(f2f, src.landmarks, e_tgt, e_src, size=res)
        except NeuralRenderError as e:  # MissingDependencyError: dlib is an optional extra
            metrics["dlib"] = f"unavailable: {e}"
    metrics["cpu_s_total"] = time.process_time() - cpu0
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics, indent=1))
    print(f"wrote {out}/reenact.mp4, output.mp4, face2face.mp4, metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
