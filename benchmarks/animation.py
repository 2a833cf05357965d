"""Image-animation benchmarks: speed/memory per method, and the reconstruction table of trained runs.

    python benchmarks/animation.py speed [--sizes 64 256] [--steps 3]     # training it/s, animation fps, peak memory
    python benchmarks/animation.py eval RUN_DIR [RUN_DIR ...] [--step N]     # L1 / AKD / MKR / AED table (+ co-part)
    python benchmarks/animation.py compare --dataset weizmann --steps 1000 --variants x2face monkey-net fomm
    python benchmarks/animation.py figures --root runs/animation_compare/weizmann    # docs images
    python benchmarks/animation.py jacobians RUN_DIR    # fomm: learned Jacobians vs J = I at test time, per clip
    python benchmarks/animation.py split RUN_DIR [RUN_DIR ...]   # held-out L1 on unchanging / changing pixels
    python benchmarks/animation.py motion RUN_DIR [RUN_DIR ...]  # fomm: masks, zeroth / first-order flow there

speed: each (method, size) row runs in its own subprocess (default model configs, batch 4 at 64^2 and 2 at 256^2,
kp/seg scale 0.25 at 256^2 as in the paper) so that the peak-memory column (max RSS growth on CPU,
torch.cuda.max_memory_allocated on CUDA) belongs to that row alone.
eval: the papers' video-reconstruction protocol on each run's held-out videos (source = first frame, driving =
every frame, absolute motion): L1 of the method, of copy-source and of the same model driven by the source
(no motion), and the method's and copy-source's L1 on the pixels that change / do not change (l1_moving_px,
l1_still_px: mean over channels of |frame - first frame| above / below 0.08); AKD/MKR with mediapipe Pose (bodies) or dlib (faces) and AED (faces) when the optional 'faces'
extra is installed, otherwise the reason is printed; for copart (and, for comparison, keypoint methods) on
clips with mediapipe reference poses beside them: landmark regression error from part centres / keypoints
(fit on train videos, measured on test videos, pixels) and foreground IoU of copart's parts vs a motion mask.
compare: trains each variant (a method, or a fomm ablation) in its own 1-thread subprocess with the same steps,
batch, lr, seed, data augmentation (off unless --augment) and weight EMA (--ema, the same for all; skipped
when its run already holds that step's checkpoint), records the CPU seconds it took, evaluates all of them as `eval` does and prints one table with copy-source on top.
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


def _detect(clips: list[torch.Tensor], body: bool) -> dict:
    """External detections on clips (each [T,3,H,W] in [0,1]), concatenated: keypoints / validity (+ face
    embeddings). Bodies: mediapipe Pose in video mode, run per clip (on 64^2 frames upsampled to 256 its
    single-image mode misses the person in ~20 % of the real frames and in most slightly blurred ones)."""
    if body:
        from neuralrender.metrics.keypoints import detect_pose_mediapipe

        det = [detect_pose_mediapipe(c, static=False) for c in clips]
        return {"kp": torch.cat([d[0] for d in det]), "valid": torch.cat([d[1] for d in det])}
    frames = torch.cat(clips)
    from neuralrender.metrics.keypoints import detect_face_landmarks_dlib, face_embeddings_dlib

    kp, v = detect_face_landmarks_dlib(frames)
    emb, ev = face_embeddings_dlib(frames)
    return {"kp": kp, "valid": v, "emb": emb, "emb_valid": ev}


def keypoint_metrics(pred: dict, ref: dict) -> dict:
    """AKD (pixels of the evaluated frames), MKR, and AED (faces) of detections `pred` against `ref`."""
    from neuralrender.metrics.keypoints import aed, akd, mkr

    out = {"akd": akd(pred["kp"], ref["kp"], pred["valid"], ref["valid"]), "mkr": mkr(pred["valid"], ref["valid"])}
    if "emb" in pred:
        out["aed"] = aed(pred["emb"], ref["emb"], pred["emb_valid"], ref["emb_valid"])
    return out


def _test_clips(bundle) -> list[torch.Tensor]:
    """The held-out clips (uint8 [T,3,H,W]) of the reconstruction protocol."""
    return [bundle.val.videos[v][s:e] for v, s, e in bundle.info["test_segments"]]


@torch.no_grad()
def reconstruct_clips(model, clips, dev) -> list[torch.Tensor]:
    """Video reconstruction (source = first frame, driving = every frame, absolute motion) -> predictions."""
    out = []
    for clip in clips:
        vid = clip.float().div(255).to(dev)
        src = vid[:1]
        out.append(torch.cat([model.reconstruct(src.expand(d.shape[0], -1, -1, -1), d)["prediction"].cpu()
                              for d in vid.split(16)]))
    return out


@torch.no_grad()
def eval_run(run_dir: str, step: int | None, device: str, ref_cache: dict | None = None, use_ema: bool = True) -> dict:
    from neuralrender.metrics.keypoints import detector_status, landmark_regression_error
    from neuralrender.train.trainer import load_run

    ck = str(Path(run_dir) / "checkpoints" / f"step_{step:08d}.safetensors") if step else None
    model, bundle, _, meta = load_run(run_dir, device=device, checkpoint=ck, use_ema=use_ema)
    dev = next(model.parameters()).device
    info = bundle.info
    videos = bundle.val.videos
    body = any("weizmann" in s for s in info["sources"])
    ok, reason = detector_status("pose" if body else "face")
    res = {"run": run_dir, "method": meta["method"], "step": meta["step"], "split": info["split"]}
    clips = _test_clips(bundle)
    preds = reconstruct_clips(model, clips, dev)
    gts = [c.float().div(255) for c in clips]
    stills = [model.reconstruct(g[:1].to(dev), g[:1].to(dev))["prediction"].cpu() for g in gts]
    n = sum(g.shape[0] for g in gts)
    res["l1"] = sum(float((p - g).abs().mean(dim=(1, 2, 3)).sum()) for p, g in zip(preds, gts)) / n
    res["l1_copy_source"] = sum(float((g[:1] - g).abs().mean(dim=(1, 2, 3)).sum()) for g in gts) / n
    res["l1_no_motion"] = sum(float((s - g).abs().mean(dim=(1, 2, 3)).sum()) for s, g in zip(stills, gts)) / n
    res["frames"] = n
    # where the error is: pixels that change (mean over channels of |frame - first frame| > 0.08) or do not
    moving = [(g - g[:1]).abs().mean(1, keepdim=True) > 0.08 for g in gts]
    n_mov = sum(float(m.sum()) for m in moving)
    n_still = sum(float((~m).sum()) for m in moving)
    for tag, preds_ in (("", preds), ("_copy_source", [g[:1].expand_as(g) for g in gts])):
        err = [(p - g).abs().mean(1, keepdim=True) for p, g in zip(preds_, gts)]
        res["l1_moving_px" + tag] = sum(float(e[m].sum()) for e, m in zip(err, moving)) / max(n_mov, 1)
        res["l1_still_px" + tag] = sum(float(e[~m].sum()) for e, m in zip(err, moving)) / max(n_still, 1)
    if ok:
        key = (tuple(info["sources"]), tuple(map(tuple, info["test_segments"])), info["size"])
        cache = ref_cache if ref_cache is not None else {}
        if key not in cache:
            cache[key] = {"ref": _detect(gts, body), "copy": _detect([x[:1].expand_as(x) for x in gts], body)}
        ref = cache[key]["ref"]
        res.update(keypoint_metrics(_detect(preds, body), ref))
        res["copy_source"] = keypoint_metrics(cache[key]["copy"], ref)
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
            res.update(part_consistency(model, bundle, dev))
    return res


@torch.no_grad()
def part_consistency(model, bundle, dev) -> dict:
    """copart on every clip: segment-wise keypoint tracking vs the clip's mediapipe reference poses
    (metrics.keypoints.part_tracking) and foreground vs the motion mask (IoU, and the share of moving pixels
    inside the foreground). Held-out clips -> keys '..._test', training clips -> '..._train' (clip means)."""
    from neuralrender.metrics.keypoints import foreground_iou, motion_mask, part_tracking

    info, videos = bundle.info, bundle.val.videos
    acc: dict = {}
    for v, vid in enumerate(videos):
        x = vid.float().div(255)
        H, W = x.shape[-2:]
        seg = torch.cat([model.segment(c.to(dev))["segmentation"].cpu() for c in x.split(16)])
        seg = torch.nn.functional.interpolate(seg, size=(H, W), mode="bilinear", align_corners=False)
        labels = seg.argmax(1)
        tag = "test" if v in info["test_videos"] else "train"
        mm = motion_mask(x)
        fg = labels > 0
        row = {"foreground_iou": foreground_iou(fg, mm),
               "motion_in_foreground": float((fg & mm).sum() / mm.sum().clamp_min(1)),
               "foreground_fraction": float(fg.float().mean())}
        ref = _reference_poses(info["sources"][v], x.shape[0], H)
        if ref is not None:
            from neuralrender.graphics.warp import normalized_to_pixel

            centres = torch.cat([normalized_to_pixel(model.segment(c.to(dev))["value"], H, W).cpu() for c in x.split(16)])
            row.update(part_tracking(seg, centres, ref))
        for k, val in row.items():
            acc.setdefault(f"{k}_{tag}", []).append(val)
    return {k: sum(v) / len(v) for k, v in acc.items()}


def _f(x, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def cmd_eval(args) -> None:
    rows = []
    cache: dict = {}
    for r in args.runs:
        row = eval_run(r, args.step, args.device, cache, use_ema=not args.raw_weights)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| run | method | step | L1 | L1 copy-source | L1 no-motion | AKD | MKR | AED | landmark reg. (px) | "
          "mean-pose (px) | reg. in-video (px) | mean-pose in-video (px) | fg IoU |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['run']).name} | {r['method']} | {r['step']} | {_f(r['l1'])} | {_f(r['l1_copy_source'])} | "
              f"{_f(r['l1_no_motion'])} | {_f(r.get('akd'), 2)} | {_f(r.get('mkr'), 3)} | {_f(r.get('aed'), 3)} | "
              f"{_f(r.get('landmark_regression_px'), 2)} | {_f(r.get('landmark_mean_pose_px'), 2)} | "
              f"{_f(r.get('landmark_regression_time_px'), 2)} | {_f(r.get('landmark_mean_pose_time_px'), 2)} | "
              f"{_f(r.get('foreground_iou_test'), 3)} |")
    for n in {r["akd_note"] for r in rows if "akd_note" in r}:
        print(f"note: {n}")


# --- compare: train every method with the same budget, then evaluate them side by side -----------------

VARIANTS = {  # name -> (registered method, extra `neuralrender train` flags)
    "x2face": ("x2face", []),
    "monkey-net": ("monkey-net", []),
    "monkey-net-paper-output": ("monkey-net", ["--output", "decoded"]),
    "monkey-net-no-gate": ("monkey-net", ["--gate", "none"]),
    "fomm": ("fomm", []),
    "fomm-no-jacobian": ("fomm", ["--use-jacobian", "false"]),
    "fomm-no-occlusion": ("fomm", ["--use-occlusion", "false"]),
    "fomm-paper-output": ("fomm", ["--output-blend", "false"]),
    "fomm-local-affine": ("fomm", ["--affine-range", "1.0"]),
    "fomm-identity-start": ("fomm", ["--mask-init", "identity"]),
    "copart": ("copart", []),
}


def train_variant(name: str, out: Path, args) -> dict:
    """Train one variant in a 1-thread subprocess (skipped when its final checkpoint exists) and return
    {"cpu_s": CPU seconds of the training process, "wall_s"}; stored in out/budget.json."""
    budget = out / "budget.json"
    if (out / "checkpoints" / f"step_{args.steps:08d}.safetensors").is_file() and budget.is_file():
        return json.loads(budget.read_text())
    method, extra = VARIANTS[name]
    cmd = [sys.executable, "-m", "neuralrender.cli", "train", method, "--dataset", args.dataset,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--size", str(args.size), "--seed", str(args.seed), "--threads", "1", "--eval-every", str(args.steps),
           "--ckpt-every", str(min(args.steps, 500)), "--keep-ckpts", "0", "--quiet", "true", "--out", str(out),
           *extra, *(["--augment", "true"] if args.augment else []),
           *(["--ema", str(args.ema)] if args.ema is not None else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    print(f"[compare] training {name}: {' '.join(cmd[2:])}", flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rec = {"cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
           "wall_s": time.perf_counter() - t0, "steps": args.steps, "batch_size": args.batch_size}
    budget.write_text(json.dumps(rec))
    return rec


def cmd_compare(args) -> None:
    torch.set_num_threads(1)
    root = Path(args.out) / args.dataset
    rows, cache = [], {}
    for name in args.variants:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        run = root / name
        budget = train_variant(name, run, args)
        row = eval_run(str(run), args.steps, args.device, cache)
        row.update(variant=name, **budget)
        rows.append(row)
        print(json.dumps(row), flush=True)
    (root / "results.json").write_text(json.dumps(rows, indent=1))
    body = args.dataset == "weizmann"
    print(f"\n{args.dataset}, {args.size}², {args.steps} steps x batch {args.batch_size}, lr {args.lr}, seed {args.seed}, "
          f"1 torch thread; test frames: {rows[0]['frames'] if rows else 0}")
    print("\n| method | L1 ↓ | AKD ↓ (px) | MKR ↓ |" + ("" if body else " AED ↓ |") + " L1 no-motion | train CPU s |")
    print("|---|---|---|---|" + ("" if body else "---|") + "---|---|")
    if rows:
        c = rows[0].get("copy_source", {})
        print(f"| copy-source | {_f(rows[0]['l1_copy_source'])} | {_f(c.get('akd'), 2)} | {_f(c.get('mkr'), 3)} |"
              + ("" if body else f" {_f(c.get('aed'), 3)} |") + " — | — |")
    for r in rows:
        print(f"| {r['variant']} | {_f(r['l1'])} | {_f(r.get('akd'), 2)} | {_f(r.get('mkr'), 3)} |"
              + ("" if body else f" {_f(r.get('aed'), 3)} |") + f" {_f(r['l1_no_motion'])} | {r['cpu_s']:.0f} |")
    for n in {r["akd_note"] for r in rows if "akd_note" in r}:
        print(f"note: {n}")


@torch.no_grad()
def cmd_jacobians(args) -> None:
    """A trained fomm run's reconstruction (source = first frame, absolute motion) of every clip, held-out and
    training, with its learned Jacobians and with J = I (zeroth-order motion, the same weights): do the
    Jacobians help where they were learned, and where they were not? Also |J_s J_d^-1 - I| (max entry)."""
    from neuralrender.train.trainer import load_run

    model, bundle, _, meta = load_run(args.run, device="cpu")
    if meta["method"] != "fomm" or not model.cfg.use_jacobian:
        raise SystemExit(f"{args.run} is not a fomm run with Jacobians")
    info = bundle.info
    dm = model.generator.dense_motion
    trained = dm.affine_range
    ranges = args.affine_range or []
    print("| clip | split | L1 learned J | L1 J = I | " + "".join(f"L1 range {r:g} | " for r in ranges)
          + "copy-source | median / max abs(J_s J_d^-1 - I) |")
    print("|---|---|---|---|" + "---|" * len(ranges) + "---|---|")
    for v, vid in enumerate(bundle.val.videos):
        g = vid.float().div(255)
        src = g[:1].expand_as(g)
        ks, kd = model.keypoints(src), model.keypoints(g)
        eye = {k: {**x, "jacobian": torch.eye(2).expand_as(x["jacobian"])} for k, x in (("s", ks), ("d", kd))}
        l1 = (model.generate(src, kd, ks)["prediction"] - g).abs().mean()
        l1_eye = (model.generate(src, eye["d"], eye["s"])["prediction"] - g).abs().mean()
        l1_r = []
        for r in ranges:  # the first-order term localised at test time only (`sparse_motions`' affine_range)
            dm.affine_range = r
            l1_r.append(float((model.generate(src, kd, ks)["prediction"] - g).abs().mean()))
            dm.affine_range = trained
        dev = (ks["jacobian"] @ torch.inverse(kd["jacobian"]) - torch.eye(2)).abs().amax((-2, -1))
        print(f"| {Path(info['sources'][v]).stem.split('_')[0]} | {'test' if v in info['test_videos'] else 'train'} | "
              f"{float(l1):.4f} | {float(l1_eye):.4f} | " + "".join(f"{x:.4f} | " for x in l1_r)
              + f"{float((src - g).abs().mean()):.4f} | {float(dev.median()):.2f} / {float(dev.max()):.2f} |", flush=True)


@torch.no_grad()
def split_l1(run: str) -> dict:
    """Where a run's held-out L1 is: pixels that do not change ('still': mean over channels of |frame - first
    frame| < 0.08) and pixels that do ('moving'). Per part: 'share' of all test pixels, and the mean error there
    of the method ('pred'), of copy-source ('copy'), of the method's warped source alone ('warp', its
    'deformed' output) and the mean blend weight ('weight': fomm's occlusion map, monkey-net's gate);
    'contribution' = share x pred, so the two parts' contributions add up to the L1."""
    from neuralrender.train.trainer import load_run

    model, bundle, _, meta = load_run(run, device="cpu")
    acc: dict = {}
    for g in (c.float().div(255) for c in _test_clips(bundle)):
        mov = (g - g[:1]).abs().mean(1, keepdim=True) > 0.08
        outs = [model.reconstruct(g[:1].expand(d.shape[0], -1, -1, -1), d) for d in g.split(16)]
        o = {k: torch.cat([x[k] for x in outs]) for k in ("prediction", "deformed", "occlusion_map", "gate")
             if k in outs[0]}
        terms = {"pred": o["prediction"], "copy": g[:1].expand_as(g), "warp": o.get("deformed")}
        terms = {k: (v - g).abs().mean(1, keepdim=True) for k, v in terms.items() if v is not None}
        for k in ("occlusion_map", "gate"):
            if k in o:
                terms["weight"] = torch.nn.functional.interpolate(o[k], size=g.shape[-2:], mode="bilinear",
                                                                  align_corners=False)
        for part, m in (("still", ~mov), ("moving", mov)):
            acc[part, "n"] = acc.get((part, "n"), 0.0) + float(m.sum())
            for k, e in terms.items():
                acc[part, k] = acc.get((part, k), 0.0) + float(e[m].sum())
    n = acc["still", "n"] + acc["moving", "n"]
    res = {"run": run, "method": meta["method"]}
    for part in ("still", "moving"):
        m = max(acc[part, "n"], 1.0)
        res[part] = {"share": acc[part, "n"] / n, "contribution": acc[part, "pred"] / n,
                     **{k: acc[part, k] / m for k in ("pred", "copy", "warp", "weight") if (part, k) in acc}}
    return res


def cmd_split(args) -> None:
    print("| run | part | share | L1 | contribution | copy-source | warp alone | O / gate |")
    print("|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        r = split_l1(run)
        for part in ("still", "moving"):
            p = r[part]
            cells = [_f(p.get(k)) for k in ("copy", "warp", "weight")]
            print(f"| {run} ({r['method']}) | {part} | {p['share']:.3f} | {p['pred']:.4f} | "
                  f"{p['contribution']:.4f} | {' | '.join(cells)} |", flush=True)


@torch.no_grad()
def motion_terms(run: str) -> dict:
    """Where a fomm run's dense flow moves the pixels that do not change (the 'still' split of `split_l1`), at
    the dense-motion resolution: mean mask weight on the background motion ('bg') and on the keypoints
    ('kp'); displacement of the flow from the identity in pixels of the frame ('flow'), split into the
    zeroth-order part sum_k m_k (kp_s - kp_d) ('zeroth') and the first-order part
    sum_k m_k (J_s J_d^-1 - I)(z - kp_d) ('first'); 'dist' = mask-weighted |z - kp_d| over the keypoints (px);
    'first_far' = share of the first-order displacement at pixels whose 'dist' exceeds 8 px; warp L1 at
    full resolution with the learned flow ('warp'), with the same masks and J = I ('warp_eye_masks'), and with
    the dense-motion network re-run on J = I ('warp_eye')."""
    import torch.nn.functional as F

    from neuralrender.graphics.warp import make_coordinate_grid
    from neuralrender.nn.dense_motion import combine_motions, deform, sparse_motions
    from neuralrender.train.trainer import load_run

    model, bundle, _, meta = load_run(run, device="cpu")
    dm = model.generator.dense_motion
    acc: dict = {}
    for g in (c.float().div(255) for c in _test_clips(bundle)):
        H = g.shape[-1]
        mov_full = (g - g[:1]).abs().mean(1, keepdim=True) > 0.08
        for d, mv in zip(g.split(16), mov_full.split(16)):
            src = g[:1].expand(d.shape[0], -1, -1, -1)
            ks, kd = model.keypoints(src), model.keypoints(d)
            m = dm(src, kd, ks)["mask"]  # [B,K+1,h,w]
            h, w = m.shape[-2:]
            px = H / 2  # normalized units -> pixels of the frame
            z = make_coordinate_grid(h, w, g.dtype).view(1, 1, h, w, 2) - kd["value"][:, :, None, None]
            a = ks["jacobian"] @ torch.inverse(kd["jacobian"]) - torch.eye(2)
            first = (a[:, :, None, None] @ z.unsqueeze(-1)).squeeze(-1)  # [B,K,h,w,2]
            zeroth = (ks["value"] - kd["value"])[:, :, None, None].expand_as(first)
            mk = m[:, 1:].unsqueeze(-1)
            terms = {"zeroth": (mk * zeroth).sum(1).norm(dim=-1) * px, "first": (mk * first).sum(1).norm(dim=-1) * px,
                     "flow": (mk * (zeroth + first)).sum(1).norm(dim=-1) * px, "bg": m[:, 0], "kp": 1 - m[:, 0],
                     "dist": (m[:, 1:] * z.norm(dim=-1)).sum(1) / (1 - m[:, 0]).clamp_min(1e-6) * px}
            still = F.adaptive_avg_pool2d(mv.float(), (h, w))[:, 0] == 0
            eye = {k: {**x, "jacobian": torch.eye(2).expand_as(x["jacobian"])} for k, x in (("s", ks), ("d", kd))}
            grid_eye_masks = combine_motions(m, sparse_motions(h, w, kd["value"], ks["value"]))
            grid_eye = dm(src, eye["d"], eye["s"])["deformation"]
            warps = {"warp": model.generate(src, kd, ks)["deformed"], "warp_eye_masks": deform(src, grid_eye_masks),
                     "warp_eye": deform(src, grid_eye)}
            for part, sm, smf in (("still", still, ~mv[:, 0]), ("moving", ~still, mv[:, 0])):
                acc[part, "n"] = acc.get((part, "n"), 0) + float(sm.sum())
                acc[part, "nf"] = acc.get((part, "nf"), 0) + float(smf.sum())
                for k, t in terms.items():
                    acc[part, k] = acc.get((part, k), 0.0) + float(t[sm].sum())
                far = sm & (terms["dist"] > 8)
                acc[part, "first_far"] = acc.get((part, "first_far"), 0.0) + float(terms["first"][far].sum())
                for k, wp in warps.items():
                    acc[part, k] = acc.get((part, k), 0.0) + float((wp - d).abs().mean(1)[smf].sum())
    res = {"run": run}
    for part in ("still", "moving"):
        n, nf = max(acc[part, "n"], 1.0), max(acc[part, "nf"], 1.0)
        res[part] = {**{k: acc[part, k] / n for k in ("bg", "kp", "flow", "zeroth", "first", "dist")},
                     "first_far": acc[part, "first_far"] / max(acc[part, "first"], 1e-9),
                     **{k: acc[part, k] / nf for k in ("warp", "warp_eye_masks", "warp_eye")}}
    return res


def cmd_motion(args) -> None:
    cols = ("bg", "kp", "dist", "flow", "zeroth", "first", "first_far", "warp", "warp_eye_masks", "warp_eye")
    print("| run | part | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for run in args.runs:
        r = motion_terms(run)
        for part in ("still", "moving"):
            print(f"| {run} | {part} | " + " | ".join(_f(r[part][k], 4 if "warp" in k else 3) for k in cols) + " |",
                  flush=True)


# --- figures for docs/methods/animation.md ------------------------------------------------------------

@torch.no_grad()
def cmd_figures(args) -> None:
    """Reconstruction of the first held-out clip by every variant under --root (driving | variants...) as a
    GIF and a PNG of a few frames; for a copart run also its parts on every clip and a part swap."""
    import torch.nn.functional as F

    from neuralrender.io.images import save_grid
    from neuralrender.io.video import write_video
    from neuralrender.train.trainer import load_run

    root, out = Path(args.root), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = root.name
    panels, names, copart = [], [], None
    for name in args.variants:
        run = root / name
        if not (run / "checkpoints" / "last.safetensors").is_file():
            print(f"skip {run}: no checkpoint")
            continue
        model, bundle, _, _ = load_run(str(run), device="cpu")
        clip = _test_clips(bundle)[0][: args.frames].float().div(255)
        if not panels:
            panels, names = [clip[:1].expand_as(clip), clip], ["source", "driving"]
        panels.append(reconstruct_clips(model, [clip.mul(255).round().byte()], torch.device("cpu"))[0])
        names.append(name)
        if hasattr(model, "segment"):
            copart = (model, bundle)
    if not panels:
        raise SystemExit(f"no runs under {root}")
    strip = torch.cat(panels, -1).clamp(0, 1)
    strip = F.interpolate(strip, scale_factor=args.scale, mode="nearest")
    print("panels:", " | ".join(names))
    gif = out / f"animation_{tag}_reconstruction.gif"
    stride = args.gif_stride
    while True:  # docs images stay under 1 MB: fewer frames until they do
        write_video(strip[::stride], gif, fps=8 / stride * args.gif_stride)
        if gif.stat().st_size < 1_000_000 or stride >= strip.shape[0]:
            break
        stride += 1
    print("wrote", gif, f"({gif.stat().st_size / 1e6:.2f} MB, every {stride}th frame)")
    pick = torch.linspace(0, strip.shape[0] - 1, 5).round().long()
    print("wrote", save_grid(strip[pick], out / f"animation_{tag}_reconstruction.png", nrow=1))
    if copart is not None:
        model, bundle = copart
        rows = []
        for vid in bundle.val.videos:
            x = vid[torch.linspace(0, vid.shape[0] - 1, 6).round().long()].float().div(255)
            seg = model.segment(x)["segmentation"]
            col = model.colorize(seg, x.shape[-2:])
            fgm = (seg.argmax(1, keepdim=True) > 0).float()
            fgm = F.interpolate(fgm, size=x.shape[-2:], mode="nearest")
            rows.append(torch.cat([x, fgm * (0.6 * col + 0.4 * x) + (1 - fgm) * x], 0))
        grid = F.interpolate(torch.cat(rows), scale_factor=args.scale, mode="nearest")
        print("wrote", save_grid(grid, out / "animation_copart_parts.png", nrow=6))
        v0, v1 = bundle.val.videos[0], bundle.val.videos[-1]
        src = v0[torch.linspace(0, v0.shape[0] - 1, 4).round().long()].float().div(255)
        tgt = v1[torch.linspace(0, v1.shape[0] - 1, 4).round().long()].float().div(255)
        swap = model.part_swap(src, tgt, range(1, model.cfg.num_parts + 1))
        grid = F.interpolate(torch.cat([src, tgt, swap]), scale_factor=args.scale, mode="nearest")
        print("wrote", save_grid(grid, out / "animation_copart_swap.png", nrow=4))


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
    ev.add_argument("--raw-weights", action="store_true", help="a run trained with --ema: the last step's weights, "
                                                               "not the average")
    cp = sub.add_parser("compare", help="train the variants with the same steps/batch (1 thread each), then eval")
    cp.add_argument("--dataset", default="weizmann")
    cp.add_argument("--variants", nargs="+", default=["x2face", "monkey-net", "fomm"])
    cp.add_argument("--steps", type=int, default=1000)
    cp.add_argument("--batch-size", type=int, default=8)
    cp.add_argument("--lr", type=float, default=1e-3)
    cp.add_argument("--size", type=int, default=64)
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--out", default="runs/animation_compare")
    cp.add_argument("--augment", action="store_true",
                    help="train with the official flips / colour jitter of the training pairs (`--augment true`)")
    cp.add_argument("--ema", type=float, default=None,
                    help="EMA decay of the weights for every variant (evaluated with the averaged weights); "
                         "default: the method's own")
    cp.add_argument("--device", default="cpu")
    fg = sub.add_parser("figures", help="docs images from the runs of `compare`")
    fg.add_argument("--root", default="runs/animation_compare/weizmann")
    fg.add_argument("--variants", nargs="+", default=["x2face", "monkey-net", "fomm", "copart"])
    fg.add_argument("--out", default="docs/figures")
    fg.add_argument("--frames", type=int, default=48)
    fg.add_argument("--gif-stride", type=int, default=2)
    fg.add_argument("--scale", type=int, default=2)
    sl = sub.add_parser("split", help="held-out L1 on unchanging / changing pixels, with the warp alone")
    sl.add_argument("runs", nargs="+")
    mo = sub.add_parser("motion", help="fomm run: mask weights and zeroth / first-order flow on unchanging pixels")
    mo.add_argument("runs", nargs="+")
    jb = sub.add_parser("jacobians", help="fomm run: learned Jacobians vs J = I at test time, on every clip")
    jb.add_argument("run")
    jb.add_argument("--affine-range", type=float, nargs="*", help="also the L1 with the first-order term localised "
                                                                   "at test time to these ranges (normalized units)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    {"speed": cmd_speed, "eval": cmd_eval, "compare": cmd_compare, "figures": cmd_figures,
     "jacobians": cmd_jacobians, "split": cmd_split,
     "motion": cmd_motion}[args.cmd](args)


if __name__ == "__main__":
    main()
