"""Figures for docs/methods/neural_textures.md from two trained runs on the same data.

    python docs/figures_neural_textures.py --nt RUN_NT --gb RUN_GB --name spot [--views 4]

Writes docs/figures/neural_textures_<name>.png: rows = ground truth, neural-textures, pix2pix-gbuffer,
and the first three neural-texture channels (the part regressed to RGB) for a few test views.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from torch.utils.data import default_collate

    from neuralrender.io.images import save_grid
    from neuralrender.train.trainer import load_run, to_device

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nt", required=True)
    p.add_argument("--gb", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--views", type=int, default=4)
    args = p.parse_args(argv)
    nt, bundle, _, _ = load_run(args.nt, device="cpu")
    gb, _, _, _ = load_run(args.gb, device="cpu")
    ds = bundle.val
    idx = torch.linspace(0, len(ds) - 1, args.views).round().long().tolist()
    batch = to_device(default_collate([ds[i] for i in idx]), "cpu")
    with torch.no_grad():
        a = nt(nt.cameras_of(batch))
        b = gb(gb.cameras_of(batch))
    rows = [batch["image"], a["rgb"], b["rgb"], a["direct"].clamp(0, 1)]
    out = Path(__file__).resolve().parent / "figures" / f"neural_textures_{args.name}.png"
    save_grid(torch.cat(rows, 0), out, nrow=len(idx))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
