"""Speed and memory of pix2pix, pix2pixhd and vid2vid, side by side in one run, on synthetic conditions.

For each method at 128^2 and 256^2 (default model configs, batch 1, 6 condition channels = the labels -> scene
task) it prints training iterations per second (one d + g step through the method's own `loss`), inference
frames per second (`generate_clip` on an 8-frame clip, vid2vid sequentially) and the peak memory: CUDA
max_memory_allocated on a GPU, else the increase of the process's peak resident set size during the row.

    python benchmarks/cond2d.py                 # CPU, 128 and 256
    python benchmarks/cond2d.py --sizes 128 --iters 2 --device cpu
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender import registry  # noqa: E402
from neuralrender.train.config import TrainConfig  # noqa: E402
from neuralrender.train.trainer import make_optimizer  # noqa: E402


def _batch(size: int, T: int, C: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, C - 1, (1, T, 1, size // 8, size // 8), generator=g)
    lab = torch.nn.functional.interpolate(lab.flatten(0, 1).float(), size=(size, size), mode="nearest").long()
    cond = torch.nn.functional.one_hot(lab[:, 0], C).permute(0, 3, 1, 2).float().reshape(1, T, C, size, size)
    return {"cond": cond.to(device), "image": torch.rand(1, T, 3, size, size, generator=g).to(device),
            "flow": torch.zeros(1, T, 2, size, size, device=device), "flow_mask": torch.ones(1, T, 1, size, size, device=device),
            "inst": lab.reshape(1, T, 1, size, size).to(device)}


def _peak_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(name: str, size: int, iters: int, device) -> dict:
    cls = registry.get_method(name)
    cfg = cls.Config(size=size)
    info = {"cond_channels": 6, "mean_image": torch.zeros(3, size, size), "num_classes": 6}
    torch.manual_seed(0)
    model = cls(cfg, info).to(device)
    if hasattr(cfg, "spatial_steps"):
        cfg.spatial_steps, cfg.temporal_every = 0, 0  # full resolution, full clip
    if hasattr(cfg, "global_steps"):
        cfg.global_steps = 0
    T = getattr(cfg, "clip_len", 1)
    train_batch = _batch(size, T, 6, device)
    eval_batch = _batch(size, 8, 6, device)
    opts = {ph: make_optimizer(TrainConfig(), model.parameters_for(ph), 2e-4) for ph in cls.phases}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = _peak_mb(device)
    model.train()

    def step(k):
        for ph, opt in opts.items():
            opt.zero_grad(set_to_none=True)
            loss, _ = model.loss(ph, train_batch, 10_000 + k)
            loss.backward()
            opt.step()

    step(-1)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for k in range(iters):
        step(k)
    if device.type == "cuda":
        torch.cuda.synchronize()
    it_s = iters / (time.perf_counter() - t0)
    model.eval()
    args = (eval_batch["cond"], eval_batch["inst"]) if name == "pix2pixhd" else (eval_batch["cond"],)
    model.generate_clip(*args)
    t0 = time.perf_counter()
    for _ in range(iters):
        model.generate_clip(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    fps = iters * 8 / (time.perf_counter() - t0)
    peak = _peak_mb(device) - (0 if device.type == "cuda" else base)
    params = sum(p.numel() for p in model.generator.parameters()) / 1e6
    return {"method": name, "size": size, "train_clip": T, "it_s": it_s, "fps": fps, "peak_mb": peak, "g_params_m": params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", nargs="+", default=["pix2pix", "pix2pixhd", "vid2vid"])
    a = ap.parse_args()
    dev = torch.device(a.device)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, batch 1")
    print(f"{'method':<10} {'size':>5} {'clip':>4} {'train it/s':>10} {'infer fps':>9} {'peak MB':>8} {'G params (M)':>12}")
    for size in a.sizes:
        for name in a.methods:
            r = run(name, size, a.iters, dev)
            print(f"{r['method']:<10} {r['size']:>5} {r['train_clip']:>4} {r['it_s']:>10.2f} {r['fps']:>9.2f} "
                  f"{r['peak_mb']:>8.0f} {r['g_params_m']:>12.2f}")


if __name__ == "__main__":
    main()
