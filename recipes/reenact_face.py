"""Facial reenactment: drive a target actor with a source actor's head pose, expression and eyes.

    python recipes/reenact_face.py --source shared:videos/face_talking/source_katiehill_weekly_address_256.mp4 \
        --target shared:videos/face_talking/driving_obama_weekly_address_256.mp4 --out out/reenact --steps 600

1. Tracks both videos (Face2Face-style, `neuralrender.faces.tracking`), or loads --source-track / --target-track.
2. Trains the target's Deep Video Portraits renderer (`dvp`, first 80% of the target's frames), or loads --run.
3. Transfers the source's expression and relative head pose onto the target's identity, lighting and camera,
   rasterizes the conditioning maps, runs the renderer, and writes OUT/reenact.mp4 (source | conditioning |
   output), OUT/face2face.mp4 (Face2Face-style: the target's re-rendered face model with the source expression
   pasted into the target frames) and OUT/metrics.json: the held-out self-reenactment metrics of the run (dvp vs
   the nearest-neighbour baseline) and, for the cross-reenactment, the correlation of mouth opening between
   source and output. Mouth opening and identity on the OUTPUT need dlib (extra `faces`); without it the
   correlation is measured on the conditioning's model landmarks instead and labelled so, and the identity
   check is reported as unavailable (never faked).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.errors import NeuralRenderError  # noqa: E402

MOUTH = (62, 66)  # iBUG 63 / 67: inner upper / lower lip middle


def mouth_opening(lm: torch.Tensor) -> torch.Tensor:
    """Landmarks [T,68,2] -> inner-lip gap / inter-ocular distance [T]."""
    from neuralrender.faces.landmarks import inter_ocular

    return torch.linalg.norm(lm[:, MOUTH[0]] - lm[:, MOUTH[1]], dim=-1) / inter_ocular(lm).clamp_min(1e-6)


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--out", default="out/reenact")
    ap.add_argument("--source-track", default=None)
    ap.add_argument("--target-track", default=None)
    ap.add_argument("--run", default=None, help="a trained dvp run of the target (else one is trained)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--window", type=int, default=3)
    ap.add_argument("--frames", type=int, default=None, help="use the first N frames of each video")
    ap.add_argument("--pose", default="relative", choices=["relative", "source", "target"])
    a = ap.parse_args(argv)
    try:
        return run(a)
    except NeuralRenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(a) -> int:
    import torch.nn.functional as F

    from neuralrender.faces.conditioning import (
        cond_to_rgb,
        conditioning_maps,
        eye_offsets_from_track,
        face2face_composite,
        stack_window,
        transfer_params,
    )
    from neuralrender.faces.landmarks import inter_ocular
    from neuralrender.faces.model import FaceModel
    from neuralrender.io.video import video_info, write_video
    from neuralrender.paths import resolve_data_path
    from neuralrender.train.trainer import Trainer, build_configs, load_run

    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    src_v, tgt_v = resolve_data_path(a.source), resolve_data_path(a.target)
    (out / "source").mkdir(exist_ok=True)
    (out / "target").mkdir(exist_ok=True)
    src, src_frames = get_track(src_v, a.source_track, out / "source", a.frames)
    tgt, tgt_frames = get_track(tgt_v, a.target_track, out / "target", a.frames)
    tgt_track_path = a.target_track or str(out / "target" / "track.safetensors")
    if a.run:
        model, bundle, tcfg, _ = load_run(a.run, device="cpu")
        run_eval = last_eval(Path(a.run))
    else:
        over = {"track": tgt_track_path, "data": str(tgt_v), "steps": a.steps, "size": a.size, "window": a.window,
                "out": str(out / "dvp"), "quiet": True, "frames": a.frames or 0}
        _, tcfg, mcfg = build_configs("dvp", {}, over)
        tr = Trainer("dvp", tcfg, mcfg)
        run_eval = tr.run()["eval"]
        model = tr.model.eval()
    size = model.cfg.size
    face = FaceModel(num_identity=tgt.params.identity.shape[1])
    p = transfer_params(src.params, tgt.params, pose=a.pose)
    W, H = tgt.width, tgt.height
    scale = (inter_ocular(tgt.landmarks).mean() / inter_ocular(src.landmarks).mean()).item()
    fitted = src.lm_pred if src.lm_pred is not None else face.landmarks_2d(src.params, src.width, src.height,
                                                                           src.landmarks)[0]
    eyes = eye_offsets_from_track(src.landmarks, fitted) * scale
    T = p.batch_size
    with torch.no_grad():
        maps = torch.cat([conditioning_maps(face, p.index(torch.arange(s, min(s + 32, T))), W, H, size,
                                            eyes[s:s + 32]) for s in range(0, T, 32)])
        cond = stack_window(maps, model.cfg.window)
        video = model.generate(cond)
    src_small = F.interpolate(src_frames, size=(size, size), mode="area")
    side = torch.cat([src_small, cond_to_rgb(cond), video], -1)
    fps = video_info(src_v).fps or 25.0
    write_video(side, out / "reenact.mp4", fps=fps)
    # Face2Face: expression transfer with the target's pose, composited into the target frames
    n = min(T, tgt_frames.shape[0])
    f2f = face2face_composite(face, transfer_params(src.params.index(torch.arange(n)), tgt.params, pose="target"),
                              tgt_frames[:n])
    write_video(f2f, out / "face2face.mp4", fps=video_info(tgt_v).fps or 25.0)

    metrics = {"self_reenactment_heldout": run_eval, "frames": T}
    src_open = mouth_opening(src.landmarks)
    try:
        from neuralrender.metrics.keypoints import detect_face_landmarks_dlib, face_embeddings_dlib

        up = F.interpolate(video, size=(H, W), mode="bilinear", align_corners=False)
        kp, ok = detect_face_landmarks_dlib(up)
        good = ok.all(-1)
        metrics["mouth_corr_dlib"] = corr(src_open[good], mouth_opening(kp[good]))
        e_out, v_out = face_embeddings_dlib(up)
        e_tgt, _ = face_embeddings_dlib(tgt_frames[: min(50, tgt_frames.shape[0])])
        e_src, _ = face_embeddings_dlib(src_frames[: min(50, src_frames.shape[0])])
        mo = e_out[v_out].mean(0)
        metrics["identity_dist_to_target"] = float((mo - e_tgt.mean(0)).norm())
        metrics["identity_dist_to_source"] = float((mo - e_src.mean(0)).norm())
    except NeuralRenderError as e:  # MissingDependencyError: dlib is an optional extra
        pred, _ = face.landmarks_2d(p, W, H)
        metrics["mouth_corr_model_landmarks_proxy"] = corr(src_open, mouth_opening(pred))
        metrics["dlib"] = f"unavailable: {e}"
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics, indent=1))
    print(f"wrote {out}/reenact.mp4, face2face.mp4, metrics.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
