"""Generator-only screen for the pose -> body task: how well each generator alone fits the training frames.

Each row's generator is fitted by L1 alone (no discriminator, no feature matching: Adam with the method's
betas, lr 2e-4, `--steps` x `--batch` training frames drawn at random, seed `--seed`, one torch thread), then
scored on the body's training and held-out frames with the wall / person split of benchmarks/cond2d_wall.py
(mean SSIM over the static wall and over the moving person, per clip wave1 / jack / bend, and their means).
It separates the generator's capacity to paint the static wall from the GAN losses (docs/methods/pix2pixhd.md,
sessions 7 and 8). A row is a method name followed by its config overrides:

    python benchmarks/cond2d_screen.py "pix2pix" "pix2pixhd up=shuffle feat_channels=0" \
        "pix2pixhd up=shuffle feat_channels=0 canvas=4" --out runs/10/s8/screen.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cond2d_wall import wall_person_split  # noqa: E402


def screen_row(spec: str, steps: int, batch: int, seed: int, lr: float, task: str = "body") -> dict:
    import yaml

    from neuralrender.data.conditions import body_pose_sequences
    from neuralrender.train.trainer import build_configs, make_optimizer

    name, *items = spec.split()
    over = {k: yaml.safe_load(v) for k, v in (i.split("=", 1) for i in items)}
    cls, tcfg, mcfg = build_configs(name, {}, {"task": task, "size": 64, "seed": seed, "lr": lr, **over})
    torch.manual_seed(seed)
    data = cls.build_data(mcfg, tcfg.data, seed)
    torch.manual_seed(seed)
    model = cls(mcfg, data.info)
    opt = make_optimizer(tcfg, model.parameters_for("g"), lr)
    g = torch.Generator().manual_seed(seed)
    n = len(data.train)
    model.train()
    t0 = time.process_time()
    for _ in range(steps):
        items = [data.train[int(i)] for i in torch.randint(0, n, (batch,), generator=g)]
        cond = torch.stack([it["cond"][0] for it in items])
        real = torch.stack([it["image"][0] for it in items])
        loss = F.l1_loss(model(cond), real)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    cpu = time.process_time() - t0
    model.eval()
    seqs, _ = body_pose_sequences(64)
    row = {"row": spec, "steps": steps, "batch": batch, "seed": seed, "g_cpu_s": cpu, "last_l1": loss.item(),
           "g_params": sum(p.numel() for p in model.parameters_for("g"))}
    for split in ("train", "val"):
        clips = wall_person_split(model, seqs, split)
        row[split] = clips
        for k in ("wall_ssim", "person_ssim"):
            row[f"{split}_{k}_mean"] = sum(c[k] for c in clips) / len(clips)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", nargs="+", help='"METHOD [KEY=VALUE ...]" per row')
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--out", default="", help="write the rows as JSON here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    print(f"body, generator fitted by L1 alone, {a.steps} x {a.batch}, lr {a.lr}, seed {a.seed}, 1 torch thread")
    print("| row | training wall SSIM (mean; wave1 / jack / bend) | training person SSIM (mean; per clip) "
          "| held-out wall / person SSIM (means) | G CPU s | G params |")
    print("|---|---|---|---|---|---|")
    for spec in a.rows:
        r = screen_row(spec, a.steps, a.batch, a.seed, a.lr)
        rows.append(r)
        tw = " / ".join(f"{c['wall_ssim']:.3f}" for c in r["train"])
        tp = " / ".join(f"{c['person_ssim']:.3f}" for c in r["train"])
        print(f"| {spec} | {r['train_wall_ssim_mean']:.3f} ({tw}) | {r['train_person_ssim_mean']:.3f} ({tp}) "
              f"| {r['val_wall_ssim_mean']:.3f} / {r['val_person_ssim_mean']:.3f} | {r['g_cpu_s']:.0f} "
              f"| {r['g_params']} |", flush=True)
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
