"""Diagnostic for the pose -> body task: where a trained run loses SSIM, the static wall or the moving person.

For each Weizmann clip, the wall is the pixels within `--tol` (mean absolute over RGB) of the clip's median frame;
the rest is the person. Prints per clip and split (training / held-out frames) the mean SSIM map (kornia, window 11)
over each part and the wall's L1. `wall_person_split(model, seqs, split)` is the same measurement as a function
(used by benchmarks/cond2d_screen.py).

    python benchmarks/cond2d_wall.py runs/10/s6/body400/pix2pix runs/10/s6/body400/pix2pixhd
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@torch.no_grad()
def wall_person_split(model, seqs, split: str, tol: float = 0.06) -> list[dict]:
    """Per clip of `seqs` (body_pose_sequences), on its 'train' (first 80%) or 'val' (last 20%) frames: the mean
    SSIM map over the wall and over the person, the wall's share of the pixels and the wall's L1.
    model.generate_clip(cond [1,T,C,H,W], inst) -> [1,T,3,H,W] (pix2pix, pix2pixhd)."""
    import kornia

    rows = []
    for s in seqs:
        n = len(s)
        n_test = math.ceil(0.2 * n)
        sl = slice(0, n - n_test) if split == "train" else slice(n - n_test, n)
        real = s.target[sl]
        out = model.generate_clip(s.cond[sl][None], s.instances[sl][None])[0].clamp(0, 1)
        wall = ((real - s.target.median(0).values).abs().mean(1, keepdim=True) < tol).float()
        smap = kornia.metrics.ssim(out, real, 11).mean(1, keepdim=True)
        l1 = (out - real).abs().mean(1, keepdim=True)
        w, p = wall.sum().item(), (1 - wall).sum().item()
        rows.append({"wall_ssim": (smap * wall).sum().item() / w,
                     "person_ssim": (smap * (1 - wall)).sum().item() / max(p, 1),
                     "wall_share": w / wall.numel(), "wall_l1": (l1 * wall).sum().item() / w})
    return rows


def main() -> None:
    from neuralrender.data.conditions import body_pose_sequences
    from neuralrender.train.trainer import load_run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="trained body runs (pix2pix / pix2pixhd)")
    ap.add_argument("--tol", type=float, default=0.06)
    a = ap.parse_args()
    torch.set_num_threads(1)
    seqs, _ = body_pose_sequences(64)
    for run in a.runs:
        model, _, _, _ = load_run(run, device="cpu")
        model.eval()
        for split in ("train", "val"):
            print(f"{run} {split}")
            for k, r in enumerate(wall_person_split(model, seqs, split, a.tol)):
                print(f"  clip {k}: SSIM wall {r['wall_ssim']:.3f} person {r['person_ssim']:.3f} "
                      f"(wall {r['wall_share']:.0%} of pixels), L1 wall {r['wall_l1']:.4f}")


if __name__ == "__main__":
    main()
