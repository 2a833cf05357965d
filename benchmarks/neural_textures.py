"""Speed of neural-textures (and the pix2pix-gbuffer ablation) at 256 x 256, side by side in one run.

    python benchmarks/neural_textures.py [--data default] [--threads 2] [--device cpu] [--iters 20]

Prints, per method: training iterations/s (batch 1 full 256^2 frame, and the default batch 4 of 128^2 crops),
render frames/s (batch 1, 256^2, no grad), the share of render time spent in rasterization + interpolation
vs texture sampling vs the U-Net, and the process's peak memory. Times are wall-clock AND process CPU
seconds: on a machine shared with other work, CPU time per iteration is the steadier number.
Targets (issue 5): >= 10 it/s training, >= 30 fps rendering with batch 1, on CPU.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.graphics.interpolate import interpolate  # noqa: E402
from neuralrender.train.progress import print_table  # noqa: E402
from neuralrender.train.trainer import Trainer, build_configs, sample_batch, to_device  # noqa: E402


def timed(fn, iters: int, sync) -> tuple[float, float]:
    """(wall seconds, CPU seconds) per call, after one warm-up call."""
    fn()
    sync()
    w, c = time.perf_counter(), time.process_time()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - w) / iters, (time.process_time() - c) / iters


def bench(method: str, args) -> list[tuple[str, str]]:
    extra = {"texture_size": 512} if method == "neural-textures" else {}
    _, tcfg, mcfg = build_configs(method, {}, {"data": args.data, "out": "/tmp/nr_bench_nt", "quiet": True,
                                               "device": args.device, "threads": args.threads, **extra})
    tr = Trainer(method, tcfg, mcfg)
    model, dev = tr.model, tr.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    full = to_device(sample_batch(tr.data.val, 0, 1, 0), dev)  # one full 256^2 test view
    crops = [to_device(sample_batch(tr.data.train, i, 4, 0), dev) for i in range(4)]
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    state = {"i": 0}

    def train_on(batch):
        def step():
            opt.zero_grad(set_to_none=True)
            loss, _ = model.loss("g", batch() if callable(batch) else batch, 0)
            loss.backward()
            opt.step()
        return step

    def next_crop():
        state["i"] += 1
        return crops[state["i"] % len(crops)]

    model.train()
    t1 = timed(train_on(full), args.iters, sync)
    t4 = timed(train_on(next_crop), args.iters, sync)
    model.eval()
    cams = model.cameras_of(full)
    with torch.no_grad():
        r = timed(lambda: model(cams), args.iters, sync)
        ras = timed(lambda: interpolate(model.uvs, model.rasterize(cams), model.face_uvs), args.iters, sync)
        frags = model.rasterize(cams)
        if method == "neural-textures":
            tex = timed(lambda: model.features(cams, frags), args.iters, sync)
        else:
            tex = (0.0, 0.0)
        x, _ = model.inputs(cams, frags)
        xin = torch.cat([x, frags.mask.unsqueeze(1).float()], 1)
        net = timed(lambda: model.unet(xin), args.iters, sync)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        peak_gpu = torch.cuda.max_memory_allocated() / 2**20
    total = ras[1] + tex[1] + net[1]

    def rate(t):
        return f"{1 / t[0]:.1f}/s wall, {1 / max(t[1], 1e-9):.1f}/s per CPU-second"

    rows = [(f"{method}: train it/s, batch 1 x 256^2", rate(t1)),
            (f"{method}: train it/s, batch 4 x 128^2 crops", rate(t4)),
            (f"{method}: render fps, batch 1 x 256^2", rate(r)),
            (f"{method}: render time split (CPU)", f"raster+interp {100 * ras[1] / total:.0f}%, texture "
                                                   f"{100 * tex[1] / total:.0f}%, U-Net {100 * net[1] / total:.0f}%"),
            (f"{method}: peak memory", f"{peak:.0f} MiB RSS (process so far)" +
             (f", {peak_gpu:.0f} MiB GPU" if dev.type == "cuda" else ""))]
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="default", help="dataset or built-in scene (default: the default scene, 256^2)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--methods", default="neural-textures,pix2pix-gbuffer")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [("device", f"{args.device}, {torch.get_num_threads()} threads"), ("data", args.data)]
    for m in args.methods.split(","):
        rows += bench(m, args)
    print_table("neural-textures benchmark (targets: >= 10 it/s train, >= 30 fps render)", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
