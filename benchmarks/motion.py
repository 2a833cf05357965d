"""Human-motion benchmark: pose2body vs frame-by-frame pix2pixHD, skeleton-cgan vs deformable-gan vs copying the
reference, trained here with equal budgets (same steps, batch and learning rate per comparison, one torch
thread; the CPU seconds of each run are recorded), evaluated on held-out data and tabulated.

    python benchmarks/motion.py all --out runs/motion_bench      # train (skips finished runs) + eval
    python benchmarks/motion.py train --steps 300 --out runs/motion_bench --only skeleton-cgan deformable-gan
    python benchmarks/motion.py all --p2b-steps 1000 --set seed=1 --out runs/motion_bench_seed1
    python benchmarks/motion.py eval --out runs/motion_bench                      # tables from the runs

Runs (each in OUT/<name>, a normal run directory; extra flags go to every run of the group, e.g. --seed 1):
- pose transfer (split by clip; trained on jack + bend, evaluated on the unseen wave1 clip with reference = its
  first frame, targets = its own poses): `skeleton-cgan`, `deformable-gan` (defaults: --blend --region).
- pose2body (one subject, jack; its last 20% frames held out, autoregressive rollouts of 8 frames): `pose2body`
  (temporal + face GAN) and `pose2body-frame` (--temporal false --face false: frame-by-frame pix2pixHD on the
  same pose images, same generator and discriminator otherwise).

Tables (OUT/results.md and OUT/results.json):
- pose transfer: L1 / PSNR / SSIM of each method and of copying the reference frame (and of deformable-gan with
  its blend mask closed: the deformed reference alone inside the motion region); L1 per pose-distance bin
  (mean joint distance in pixels between reference and target pose); pose accuracy: mediapipe Pose
  (`metrics.keypoints.detect_pose_mediapipe`, frames upsampled to 256 as the reference poses were) on the
  generated frames, AKD = mean distance in pixels (at 64 px) to the driving pose over joints found in both
  (driving joints: observed and inside the image), MKR = driving joints not found, frames found = frames where
  it finds a person at all; the same for the real frames (the detector's own floor) and for the reference.
- pose2body: L1 / PSNR / SSIM, temporal warping error (x1000, both models' rollouts warped with the same real
  DIS flow and masks: `graphics.flow.warping_error`), head-box PSNR with / without the face GAN, AKD / MKR.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RUNS = {  # name -> (method, overrides)
    "skeleton-cgan": ("skeleton-cgan", {}),
    "deformable-gan": ("deformable-gan", {}),
    "pose2body": ("pose2body", {}),
    "pose2body-frame": ("pose2body", {"temporal": False, "face": False}),
}
TRANSFER = ("skeleton-cgan", "deformable-gan")
P2B = ("pose2body", "pose2body-frame")


def _parse_value(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def train(names, out: Path, steps: int, p2b_steps: int, extra: dict) -> None:
    from neuralrender.train.trainer import Trainer, build_configs

    torch.set_num_threads(1)
    for name in names:
        method, over = RUNS[name]
        n_steps = p2b_steps if name in P2B else steps
        run_dir = out / name
        done = run_dir / "cpu.json"
        if done.exists() and json.loads(done.read_text()).get("steps") == n_steps:
            print(f"{name}: already trained ({done})")
            continue
        resume = (run_dir / "checkpoints" / "last.safetensors").exists()
        _, t, m = build_configs(method, {}, {**over, **extra, "steps": n_steps, "threads": 1, "eval_every": 0,
                                             "quiet": True, "out": str(run_dir), "resume": resume})
        cpu0, wall0 = time.process_time(), time.time()
        Trainer(method, t, m).run()
        prev = json.loads(done.read_text()) if done.exists() else {"cpu_s": 0.0, "wall_s": 0.0}
        rec = {"steps": n_steps, "batch_size": t.batch_size, "lr": t.lr, "threads": 1,
               "cpu_s": prev["cpu_s"] + time.process_time() - cpu0, "wall_s": prev["wall_s"] + time.time() - wall0}
        done.write_text(json.dumps(rec))
        print(f"{name}: {n_steps} steps, {rec['cpu_s']:.0f} CPU s")


def _collate_all(ds, lo=0, hi=None):
    from torch.utils.data import default_collate

    return default_collate([ds[i] for i in range(lo, len(ds) if hi is None else hi)])


def _pose_accuracy(frames: torch.Tensor, joints: torch.Tensor, observed: torch.Tensor) -> dict:
    """mediapipe on frames [N,3,H,W] vs driving joints [N,33,2] (observed [N,33]) -> {akd, mkr} (pixels) over the
    driving joints observed and inside the image (the cut-off feet are the detector's guesses), and `found`: the
    fraction of frames where the detector finds a person at all (most of MKR is whole frames missed)."""
    from neuralrender.methods._motion import inside_image
    from neuralrender.metrics.keypoints import akd, detect_pose_mediapipe, mkr

    kp, valid = detect_pose_mediapipe(frames)
    ref_valid = (observed > 0) & inside_image(joints, *frames.shape[-2:])
    return {"akd": akd(kp, joints, valid, ref_valid), "mkr": mkr(valid, ref_valid),
            "found": float(valid.any(1).float().mean())}


def _frame_metrics(fake: torch.Tensor, real: torch.Tensor) -> dict:
    from neuralrender.metrics import psnr, ssim

    return {"l1": float((fake - real).abs().mean()), "psnr": float(psnr(fake, real).mean()),
            "ssim": float(ssim(fake, real).mean())}


@torch.no_grad()
def eval_transfer(out: Path, pose: bool) -> dict:
    from neuralrender.methods._motion import pose_distance
    from neuralrender.train.trainer import load_run

    models = {n: load_run(out / n, device="cpu")[:2] for n in TRANSFER if (out / n / "config.yaml").exists()}
    if not models:
        return {}
    val = next(iter(models.values()))[1].val
    batch = _collate_all(val)
    real, ref = batch["image"], batch["ref_image"]
    outputs = {"copy reference": ref}
    def generate(model):
        return torch.cat([model.generate(_collate_all(val, s, min(len(val), s + 16))) for s in range(0, len(val), 16)])

    for n, (model, _) in models.items():
        outputs[n] = generate(model)
    dg = models.get("deformable-gan", (None,))[0]
    if dg is not None and dg.cfg.blend:  # what the generator adds to its deformation: the same with its mask closed
        bias = dg.decoder.head.bias  # channel 3 is the blend mask's logit: -60 closes it
        saved = bias[3].item()
        try:
            bias[3] = -60.0
            outputs["deformable-gan, mask closed"] = generate(dg)
        finally:
            bias[3] = saved
    res = {"frames": len(val), "rows": {n: _frame_metrics(f, real) for n, f in outputs.items()}}
    dist = pose_distance(batch["joints"], batch["ref_joints"], batch["observed"], batch["ref_observed"])
    bins = {}
    for lo, hi in ((0, 2), (2, 4), (4, 8), (8, math.inf)):
        m = (dist >= lo) & (dist < hi)
        if m.any():
            label = f"[{lo}, {hi}) px" if hi < math.inf else f">= {lo} px"
            bins[label] = {"n": int(m.sum())} | {n: float((f - real).abs().mean((1, 2, 3))[m].mean())
                                                 for n, f in outputs.items()}
    res["bins"] = bins
    if pose:
        res["pose"] = {n: _pose_accuracy(f, batch["joints"], batch["observed"]) for n, f in
                       {"real frames": real, **outputs}.items()}
    res["cpu"] = {n: json.loads((out / n / "cpu.json").read_text()) for n in models if (out / n / "cpu.json").exists()}
    _figure_transfer(out / "transfer.png", ref, real, {n: outputs[n] for n in models}, dist)
    _gif(out / "transfer.gif", torch.cat([ref, real, *[outputs[n] for n in models]], -1)[::3])
    return res


@torch.no_grad()
def eval_pose2body(out: Path, pose: bool) -> dict:
    from neuralrender.train.trainer import evaluate_model, load_run

    res = {"rows": {}, "pose": {}, "cpu": {}}
    videos = {}
    for n in P2B:
        if not (out / n / "config.yaml").exists():
            continue
        model, bundle, tcfg, _ = load_run(out / n, device="cpu")
        res["rows"][n] = evaluate_model(model, bundle.val, 4, torch.device("cpu"))
        batch = _collate_all(bundle.val)
        video = model.generate_clip(batch["cond"], batch["joints"])
        videos[n] = video
        if pose:
            res["pose"][n] = _pose_accuracy(video.flatten(0, 1), batch["joints"].flatten(0, 1),
                                            batch["observed"].flatten(0, 1))
        if (out / n / "cpu.json").exists():
            res["cpu"][n] = json.loads((out / n / "cpu.json").read_text())
    if videos:
        res["frames"] = int(batch["image"].shape[0] * batch["image"].shape[1])
        if pose:
            res["pose"]["real frames"] = _pose_accuracy(batch["image"].flatten(0, 1), batch["joints"].flatten(0, 1),
                                                        batch["observed"].flatten(0, 1))
        _figure_p2b(out / "pose2body.png", batch, videos)
        _gif(out / "pose2body.gif", torch.cat([batch["cond"], batch["image"], *videos.values()], -1).flatten(0, 1))
    return res


def _save_png(path: Path, img: torch.Tensor, scale: int = 2) -> None:
    import imageio.v3 as iio

    img = img.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    iio.imwrite(path, (img.clamp(0, 1).permute(1, 2, 0) * 255).round().byte().numpy())


def _gif(path: Path, frames: torch.Tensor, scale: int = 2, fps: float = 8.0) -> None:
    """frames [T,3,H,W] -> an animated GIF (looping)."""
    import imageio.v3 as iio

    f = frames.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    iio.imwrite(path, (f.clamp(0, 1).permute(0, 2, 3, 1) * 255).round().byte().numpy(), duration=1000 / fps, loop=0)


def _figure_transfer(path, ref, real, outputs, dist) -> None:
    """Rows: target, each method; columns: the reference then the 6 frames with the largest pose distance."""
    idx = dist.argsort(descending=True)[:6].sort().values
    rows = [torch.cat([ref[0]] + [real[i] for i in idx], -1)]
    rows += [torch.cat([ref[0]] + [f[i] for i in idx], -1) for f in outputs.values()]
    _save_png(path, torch.cat(rows, -2))


def _figure_p2b(path, batch, videos) -> None:
    """Rows: pose, real, then each model's rollout (first held-out run)."""
    rows = [batch["cond"][0], batch["image"][0], *[v[0] for v in videos.values()]]
    _save_png(path, torch.cat([torch.cat(list(r), -1) for r in rows], -2))


def _fmt(v, nd=4):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def markdown(res: dict) -> str:
    lines = []
    tr = res.get("transfer")
    if tr:
        lines += [f"### Pose transfer: held-out clip, reference = its first frame ({tr['frames']} frames)", "",
                  "| method | L1 | PSNR | SSIM | AKD px (mediapipe) | MKR | frames found |",
                  "|---|---|---|---|---|---|---|"]
        pose = tr.get("pose", {})
        for n in ["real frames", *tr["rows"]]:
            r, p = tr["rows"].get(n, {}), pose.get(n, {})
            lines.append(f"| {n} | {_fmt(r.get('l1'))} | {_fmt(r.get('psnr'), 2)} | {_fmt(r.get('ssim'), 3)} | "
                         f"{_fmt(p.get('akd'), 2)} | {_fmt(p.get('mkr'), 3)} | {_fmt(p.get('found'), 2)} |")
        names = [n for n in tr["rows"]]
        gap = all(n in names for n in TRANSFER)  # deformable-gan vs skeleton-cgan, relative L1
        lines += ["", "L1 per pose-distance bin (mean joint distance reference -> target, pixels at 64 px):", "",
                  "| pose distance | frames | " + " | ".join(names) + (" | deformable vs skeleton |" if gap else " |"),
                  "|---|---|" + "---|" * (len(names) + gap)]
        for label, b in tr["bins"].items():
            rel = f" {100 * (b[TRANSFER[1]] / b[TRANSFER[0]] - 1):+.1f}% |" if gap else ""
            lines.append(f"| {label} | {b['n']} | " + " | ".join(_fmt(b[n]) for n in names) + " |" + rel)
        for n, c in tr.get("cpu", {}).items():
            lines.append(f"\n{n}: {c['steps']} steps, batch {c['batch_size']}, lr {c['lr']}, 1 thread, "
                         f"{c['cpu_s']:.0f} CPU s")
        lines.append("")
    p2 = res.get("pose2body")
    if p2 and p2["rows"]:
        lines += [f"### pose2body: held-out frames of the training subject ({p2.get('frames')} frames, "
                  "rollouts of 8)", "",
                  "| model | L1 | PSNR | SSIM | warp err x1000 | warp err real frames | head PSNR (no face GAN) | "
                  "head PSNR (face GAN) | AKD px | MKR |", "|---|---|---|---|---|---|---|---|---|---|"]
        for n, r in p2["rows"].items():
            p = p2["pose"].get(n, {})
            lines.append(f"| {n} | {_fmt(r.get('l1'))} | {_fmt(r.get('psnr'), 2)} | {_fmt(r.get('ssim'), 3)} | "
                         f"{_fmt(r.get('warp_err'), 3)} | {_fmt(r.get('warp_err_gt'), 3)} | "
                         f"{_fmt(r.get('psnr_head_noface'), 2)} | {_fmt(r.get('psnr_head'), 2)} | "
                         f"{_fmt(p.get('akd'), 2)} | {_fmt(p.get('mkr'), 3)} |")
        if "real frames" in p2["pose"]:
            p = p2["pose"]["real frames"]
            lines.append(f"| real frames | | | | | | | | {_fmt(p['akd'], 2)} | {_fmt(p['mkr'], 3)} |")
        for n, c in p2.get("cpu", {}).items():
            lines.append(f"\n{n}: {c['steps']} steps, batch {c['batch_size']}, lr {c['lr']}, 1 thread, "
                         f"{c['cpu_s']:.0f} CPU s")
    return "\n".join(lines) + "\n"


def evaluate(out: Path, pose: bool) -> dict:
    from neuralrender.metrics.keypoints import detector_status

    torch.set_num_threads(1)
    ok, why = detector_status("pose")
    if pose and not ok:
        print(why)
        pose = False
    res = {"transfer": eval_transfer(out, pose), "pose2body": eval_pose2body(out, pose)}
    (out / "results.json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    (out / "results.md").write_text(md)
    print(md)
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["train", "eval", "all"])
    ap.add_argument("--out", default="runs/motion_bench")
    ap.add_argument("--steps", type=int, default=300, help="training steps of skeleton-cgan and deformable-gan")
    ap.add_argument("--p2b-steps", type=int, default=1000, help="training steps of both pose2body runs")
    ap.add_argument("--only", nargs="*", choices=list(RUNS), help="runs to train (default: all)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra config for every trained run, e.g. seed=1 batch_size=4")
    ap.add_argument("--no-pose", action="store_true", help="skip the mediapipe pose accuracy")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {k.replace("-", "_"): _parse_value(v) for k, v in (s.split("=", 1) for s in a.set)}
    if a.command in ("train", "all"):
        train(a.only or list(RUNS), out, a.steps, a.p2b_steps, extra)
    if a.command in ("eval", "all"):
        evaluate(out, not a.no_pose)


if __name__ == "__main__":
    main()
