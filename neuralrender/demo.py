"""`neuralrender demo`: the README's main job, on CPU in a few minutes.

1. build the built-in `default` scene (procedural objects with scikit-image photo textures) into OUT/data,
   unless it is already there;
2. train `neural-textures` on it (deferred neural rendering), then the `pix2pix-gbuffer` ablation with the
   same number of steps (skip with --no-baseline);
3. evaluate both on the held-out test views (PSNR / SSIM, LPIPS when available);
4. render a novel-view orbit video (OUT/orbit.mp4) and a comparison grid of test views (OUT/comparison.png:
   rows = ground truth, neural textures, baseline);
5. print a summary table and write OUT/summary.json.

Runs are resumable: running the demo again continues (or just re-evaluates) the runs in OUT.
`--quick` is a ~30-second version (64 x 64 images, a few steps) used by the tests.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

FULL = {"size": 128, "steps": 1000, "crop": 96, "batch_size": 4, "frames": 48}
QUICK = {"size": 64, "steps": 40, "crop": 48, "batch_size": 2, "frames": 8}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuralrender demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a ~30 s version at 64x64 with a few steps")
    p.add_argument("--steps", type=int, help="training steps of each method (default 1000, quick 40)")
    p.add_argument("--size", type=int, help="image size of the built scene (default 128, quick 64)")
    p.add_argument("--no-baseline", action="store_true", help="skip the pix2pix-gbuffer baseline")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a small shared CPU, "
                   "one thread per process is several times more efficient than torch's default; 0 = torch's default)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no per-run progress or summary tables")
    return p


def _build_data(out: Path, size: int) -> Path:
    from neuralrender.data.scenes import build_scene

    data = out / "data"
    if (data / "transforms.json").is_file():
        print(f"scene: using {data}")
        return data
    t = time.time()
    build_scene("default", data, size=size, overwrite=True)
    print(f"scene: built 'default' at {size}x{size} into {data} in {time.time() - t:.1f} s")
    return data


def _train(method: str, data: Path, out: Path, cfg: dict, args) -> tuple:
    from neuralrender.train.trainer import Trainer, build_configs

    run = out / method
    overrides = {"data": str(data), "out": str(run), "steps": cfg["steps"], "crop": cfg["crop"],
                 "batch_size": cfg["batch_size"], "eval_every": 0, "ckpt_every": max(100, cfg["steps"] // 5),
                 "threads": args.threads, "device": args.device, "seed": args.seed, "quiet": args.quiet,
                 "resume": (run / "checkpoints" / "last.safetensors").is_file()}
    if method == "neural-textures":
        overrides.update(texture_size=256 if cfg["size"] <= 128 else 512)
    _, tcfg, mcfg = build_configs(method, {}, overrides)
    trainer = Trainer(method, tcfg, mcfg)
    print(f"train: {method} for {cfg['steps']} steps -> {run}   ({trainer.model.perceptual_note})")
    t = time.time()
    summary = trainer.run()
    summary["train_seconds"] = time.time() - t
    return summary, trainer


def main(argv: list[str] | None = None) -> int:
    import torch

    from neuralrender.io.images import save_grid
    from neuralrender.metrics import lpips_available
    from neuralrender.train.progress import print_table
    from neuralrender.train.trainer import to_device

    args = _parser().parse_args(argv)
    cfg = dict(QUICK if args.quick else FULL)
    if args.steps is not None:
        cfg["steps"] = args.steps
    if args.size is not None:
        cfg["size"] = args.size
    cfg["crop"] = min(cfg["crop"], cfg["size"])
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data = _build_data(out, cfg["size"])

    methods = ["neural-textures"] + ([] if args.no_baseline else ["pix2pix-gbuffer"])
    results = {}
    for m in methods:
        results[m] = _train(m, data, out, cfg, args)

    nt_summary, nt = results["neural-textures"]
    model = nt.model.eval()
    with nt.ema_weights():
        video = model.render_run(nt.data, out / "orbit.mp4", path="orbit", frames=cfg["frames"])[0]
        ds = nt.data.val
        from torch.utils.data import default_collate

        batch = to_device(default_collate([ds[i] for i in range(min(6, len(ds)))]), nt.device)
        rows = [batch["image"].cpu()]
        with torch.no_grad():
            rows.append(model(model.cameras_of(batch))["rgb"].cpu())
            if "pix2pix-gbuffer" in results:
                gb = results["pix2pix-gbuffer"][1].model.eval()
                rows.append(gb(gb.cameras_of(batch))["rgb"].cpu())
    grid = out / "comparison.png"
    save_grid(torch.cat(rows, 0), grid, nrow=rows[0].shape[0])

    table = []
    for m, (s, _) in results.items():
        e = s["eval"]
        table.append((m, f"PSNR {e.get('psnr', float('nan')):.2f} dB   SSIM {e.get('ssim', float('nan')):.3f}"
                         + (f"   LPIPS {e['lpips']:.3f}" if "lpips" in e else "")
                         + f"   ({s['steps']} steps, {s['train_seconds']:.0f} s)"))
    e = nt_summary["eval"]
    table.append(("mean colour", f"PSNR {e.get('psnr_mean_color', float('nan')):.2f} dB (predicting the training mean colour)"))
    table += [("test views", str(len(nt.data.val))), ("LPIPS", lpips_available()[1]),
              ("orbit video", str(video)), ("comparison", f"{grid} (rows: truth, " + ", ".join(methods) + ")"),
              ("total time", f"{time.time() - t0:.0f} s")]
    print_table("neuralrender demo: novel-view synthesis on the default scene", table)
    summary = {"data": str(data), "config": cfg, "seconds": time.time() - t0, "video": str(video),
               "comparison": str(grid),
               "methods": {m: {"eval": s["eval"], "steps": s["steps"], "train_seconds": s["train_seconds"],
                               "run_dir": s["run_dir"]} for m, (s, _) in results.items()}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
