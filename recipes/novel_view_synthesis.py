"""Novel-view synthesis with deferred neural rendering, end to end: build a scene, train, evaluate, render.

    python recipes/novel_view_synthesis.py                          # default scene, a few CPU minutes
    python recipes/novel_view_synthesis.py --scene spot --steps 3000 --out runs/nvs_spot
    python recipes/novel_view_synthesis.py --data path/to/capture   # your transforms.json + "mesh_path"
    python recipes/novel_view_synthesis.py --run runs/nvs_default   # only render / evaluate a trained run

Writes OUT/<method>/ (the runs), OUT/<path>.mp4 (novel views along --path: orbit, spiral, train or a
transforms.json of cameras), OUT/test_views.png (rows: ground truth, prediction) and prints PSNR/SSIM on
the test split. The same steps as `neuralrender train neural-textures ...`, `neuralrender eval --run ...`,
`neuralrender render --run ... --path orbit --out video.mp4`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.errors import script_main  # noqa: E402


@script_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scene", default="default", help="built-in scene to build and train on (default: default)")
    p.add_argument("--data", help="a posed dataset folder instead of a built-in scene")
    p.add_argument("--run", help="an existing run to render / evaluate instead of training")
    p.add_argument("--method", default="neural-textures", choices=["neural-textures", "pix2pix-gbuffer"])
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--out", default=None, help="output folder (default runs/nvs_<scene>)")
    p.add_argument("--path", default="orbit", help="camera path: orbit | spiral | train | a transforms.json")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    from neuralrender.io.images import save_grid
    from neuralrender.train.progress import print_table
    from neuralrender.train.trainer import Trainer, build_configs, evaluate_model, load_run, to_device

    out = Path(args.out or f"runs/nvs_{Path(args.data).name if args.data else args.scene}")
    if args.run:
        model, bundle, tcfg, _ = load_run(args.run)
        run_dir = Path(args.run)
    else:
        run_dir = out / args.method
        _, tcfg, mcfg = build_configs(args.method, {}, {
            "data": args.data or args.scene, "out": str(run_dir), "steps": args.steps, "threads": args.threads,
            "resume": (run_dir / "checkpoints" / "last.safetensors").is_file()})
        tr = Trainer(args.method, tcfg, mcfg)
        tr.run()
        model, bundle = tr.model.eval(), tr.data
    dev = next(model.parameters()).device
    metrics = evaluate_model(model, bundle.val, 4, dev)
    video = model.render_run(bundle, out / f"{Path(args.path).stem}.mp4", path=args.path, frames=args.frames)[0]
    from torch.utils.data import default_collate

    batch = to_device(default_collate([bundle.val[i] for i in range(min(8, len(bundle.val)))]), dev)
    with torch.no_grad():
        pred = model(model.cameras_of(batch))["rgb"]
    grid = save_grid(torch.cat([batch["image"], pred], 0).cpu(), out / "test_views.png", nrow=pred.shape[0])
    print_table(f"novel-view synthesis ({run_dir})", [(k, f"{v:.4f}") for k, v in metrics.items()]
                + [("video", str(video)), ("test views", str(grid))])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
