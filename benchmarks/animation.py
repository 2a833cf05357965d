"""Image-animation benchmarks: speed/memory per method, and the reconstruction table of trained runs.

    python benchmarks/animation.py speed [--sizes 64 256] [--steps 3]     # training it/s, animation fps, peak memory
    python benchmarks/animation.py eval RUN_DIR [RUN_DIR ...] [--step N]     # L1 / AKD / MKR / AED table (+ co-part)

speed: each (method, size) row runs in its own subprocess (default model configs, batch 4 at 64^2 and 2 at 256^2,
kp/seg scale 0.25 at 256^2 as in the paper) so that the peak-memory column (max RSS growth on CPU,
torch.cuda.max_memory_allocated on CUDA) belongs to that row alone.
eval: the papers' video-reconstruction protocol on each run's held-out videos (source = first frame, driving =
every frame, absolute motion): L1 of the method, of copy-source and of the same model driven by the source
(no motion); AKD/MKR with mediapipe Pose (bodies) or dlib (faces) and AED (faces) when the optional 'faces'
extra is installed, otherwise the reason is printed; for copart (and, for comparison, keypoint methods) on
clips with mediapipe reference poses beside them: landmark regression error from part centres / keypoints
(fit on train videos, measured on test videos, pixels) and foreground IoU of copart's parts vs a motion mask.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ["x2face", "monkey-net", "fomm", "copart"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def speed_one(method: str, size: int, steps: int, device: str) -> dict:
    from torch.utils.data import default_collate

    from neuralrender.train.trainer import build_configs

    over = {"size": size, "max_frames": 16}
    if size >= 256:
        over["seg_scale" if method == "copart" else "kp_scale"] = 0.25
    cls, _, mcfg = build_configs(method, {}, {k: v for k, v in over.items() if not (method == "x2face" and "scale" in k)})
    dev = torch.device(device)
    bundle = cls.build_data(mcfg, None, 0)
    model = cls(mcfg, bundle.info).to(dev)
    bs = 4 if size <= 64 else 2
    batch = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in default_collate([bundle.train[i] for i in range(bs)]).items()}
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    rss0 = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for i in range(steps + 1):
        if i == 1:
            sync()
            t0 = time.perf_counter()
        loss, _ = model.loss("g", batch, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
    sync()
    it_s = steps / (time.perf_counter() - t0)
    model.eval()
    src, drv = batch["source"][:1], torch.cat([batch["driving"]] * 2)[:8]
    with torch.no_grad():
        model.animate(src, drv[:2])
        sync()
        t0 = time.perf_counter()
        model.animate(src, drv)
        sync()
        fps = drv.shape[0] / (time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _rss_mb() - rss0
    return {"method": method, "size": size, "batch": bs, "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "train_it_s": it_s, "train_img_s": it_s * bs, "animate_fps": fps, "peak_mem_MB": mem, "device": str(dev)}


def cmd_speed(args) -> None:
    rows = []
    for size in args.sizes:
        for m in args.methods:
            r = subprocess.run([sys.executable, __file__, "_one", m, str(size), str(args.steps), args.device],
                               capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            if r.returncode != 0:
                print(f"{m} {size}: failed\n{r.stderr[-2000:]}")
                continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| method | size | batch | params (M) | train it/s | train img/s | animate fps | peak mem (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['size']}² | {r['batch']} | {r['params_M']:.2f} | {r['train_it_s']:.2f} | "
              f"{r['train_img_s']:.2f} | {r['animate_fps']:.1f} | {r['peak_mem_MB']:.0f} |")
    print(f"(device {rows[0]['device'] if rows else '?'}, torch threads {args.threads})")


# --- eval -------------------------------------------------------------------------------------------

def _reference_poses(source: str, num_frames: int, size: int):
    """mediapipe pose33 of the shared clip (pixels at `size`, NaN where missing) or None."""
    from neuralrender.io.video import find_side_data, load_side_data

    for f in find_side_data(source):
        sd = load_side_data(f, num_frames)
        if "pose33_xyzv_normalized" in sd.per_frame:
            p = sd.per_frame["pose33_xyzv_normalized"].float()
            xy = p[..., :2] * size
            xy[p[..., 3] < 0.5] = float("nan")
            return xy
    return None


@torch.no_grad()
def eval_run(run_dir: str, step: int | None, device: str) -> dict:
    from neuralrender.metrics.keypoints import (
        aed,
        akd,
        detect_face_landmarks_dlib,
        detect_pose_mediapipe,
        detector_status,
        face_embeddings_dlib,
        foreground_iou,
        landmark_regression_error,
        mkr,
        motion_mask,
    )
    from neuralrender.train.trainer import load_run

    ck = str(Path(run_dir) / "checkpoints" / f"step_{step:08d}.safetensors") if step else None
    model, bundle, _, meta = load_run(run_dir, device=device, checkpoint=ck)
    dev = next(model.parameters()).device
    info, test = bundle.info, bundle.val
    videos = test.videos
    body = any("weizmann" in s for s in info["sources"])
    kind = "pose" if body else "face"
    ok, reason = detector_status(kind)
    res = {"run": run_dir, "method": meta["method"], "step": meta["step"], "split": info["split"]}
    l1 = l1c = l1n = 0.0
    n = 0
    preds_all, gts_all = [], []
    for v, s, e in info["test_segments"]:
        vid = videos[v][s:e].float().div(255).to(dev)
        src = vid[:1]
        pred = torch.cat([model.reconstruct(src.expand(d.shape[0], -1, -1, -1), d)["prediction"] for d in vid.split(16)])
        still = model.reconstruct(src, src)["prediction"]
        l1 += float((pred - vid).abs().mean(dim=(1, 2, 3)).sum())
        l1c += float((src - vid).abs().mean(dim=(1, 2, 3)).sum())
        l1n += float((still - vid).abs().mean(dim=(1, 2, 3)).sum())
        n += vid.shape[0]
        preds_all.append(pred.cpu())
        gts_all.append(vid.cpu())
    res.update({"l1": l1 / n, "l1_copy_source": l1c / n, "l1_no_motion": l1n / n, "frames": n})
    if ok:
        p, g = torch.cat(preds_all), torch.cat(gts_all)
        det = detect_pose_mediapipe if body else detect_face_landmarks_dlib
        kp_p, v_p = det(p)
        kp_g, v_g = det(g)
        res["akd"], res["mkr"] = akd(kp_p, kp_g, v_p, v_g), mkr(v_p, v_g)
        if not body:
            e_p, ev_p = face_embeddings_dlib(p)
            e_g, ev_g = face_embeddings_dlib(g)
            res["aed"] = aed(e_p, e_g, ev_p, ev_g)
    else:
        res["akd_note"] = reason
    # part / keypoint consistency against the reference poses beside the clips
    feats = getattr(model, "segment", None) or getattr(model, "keypoints", None)
    if feats is not None:
        size = model.cfg.size
        X, Y, split = [], [], []
        for v, vid in enumerate(videos):
            ref = _reference_poses(info["sources"][v], vid.shape[0], size)
            if ref is None:
                continue
            f = torch.cat([feats(c.float().div(255).to(dev))["value"].flatten(1).cpu() for c in vid.split(16)])
            X.append(f)
            Y.append(ref)
            split.append(v in info["test_videos"])
        if X and any(split) and not all(split):
            tx = torch.cat([x for x, t in zip(X, split) if not t])
            ty = torch.cat([y for y, t in zip(Y, split) if not t])
            ex = torch.cat([x for x, t in zip(X, split) if t])
            ey = torch.cat([y for y, t in zip(Y, split) if t])
            res["landmark_regression_px"] = landmark_regression_error(tx, ty, ex, ey)
            # baseline: no features (the regression predicts the train videos' mean pose)
            res["landmark_mean_pose_px"] = landmark_regression_error(tx[:, :0], ty, ex[:, :0], ey)
        if X:  # within-video protocol: fit on the first 75% of every clip, measure on the last 25%
            cut = [int(0.75 * x.shape[0]) for x in X]
            tx = torch.cat([x[:c] for x, c in zip(X, cut)])
            ty = torch.cat([y[:c] for y, c in zip(Y, cut)])
            ex = torch.cat([x[c:] for x, c in zip(X, cut)])
            ey = torch.cat([y[c:] for y, c in zip(Y, cut)])
            res["landmark_regression_time_px"] = landmark_regression_error(tx, ty, ex, ey)
            res["landmark_mean_pose_time_px"] = landmark_regression_error(tx[:, :0], ty, ex[:, :0], ey)
        if hasattr(model, "segment"):
            ious = []
            for v, s, e in info["test_segments"]:
                vid = videos[v][s:e].float().div(255)
                seg = torch.cat([model.segment(c.to(dev))["segmentation"].cpu() for c in vid.split(16)])
                fg = torch.nn.functional.interpolate(1 - seg[:, :1], size=vid.shape[-2:], mode="bilinear") > 0.5
                ious.append(foreground_iou(fg[:, 0], motion_mask(vid)))
            res["foreground_iou"] = sum(ious) / len(ious)
    return res


def cmd_eval(args) -> None:
    rows = []
    for r in args.runs:
        row = eval_run(r, args.step, args.device)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| run | method | step | L1 | L1 copy-source | L1 no-motion | AKD | MKR | landmark reg. (px) | mean-pose (px) | reg. in-video (px) | mean-pose in-video (px) | fg IoU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    f = lambda x: "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"  # noqa: E731
    for r in rows:
        print(f"| {Path(r['run']).name} | {r['method']} | {r['step']} | {f(r['l1'])} | {f(r['l1_copy_source'])} | "
              f"{f(r['l1_no_motion'])} | {f(r.get('akd'))} | {f(r.get('mkr'))} | {f(r.get('landmark_regression_px'))} | "
              f"{f(r.get('landmark_mean_pose_px'))} | {f(r.get('landmark_regression_time_px'))} | "
              f"{f(r.get('landmark_mean_pose_time_px'))} | {f(r.get('foreground_iou'))} |")
    notes = {r["akd_note"] for r in rows if "akd_note" in r}
    for n in notes:
        print(f"note: {n}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        m, size, steps, device = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        print(json.dumps(speed_one(m, size, steps, device)))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("speed")
    sp.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    sp.add_argument("--methods", nargs="+", default=METHODS)
    sp.add_argument("--steps", type=int, default=3)
    sp.add_argument("--threads", type=int, default=1)
    sp.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ev = sub.add_parser("eval")
    ev.add_argument("runs", nargs="+")
    ev.add_argument("--step", type=int, default=None, help="evaluate the numbered checkpoint of this step")
    ev.add_argument("--device", default="cpu")
    args = ap.parse_args()
    (cmd_speed if args.cmd == "speed" else cmd_eval)(args)


if __name__ == "__main__":
    main()
