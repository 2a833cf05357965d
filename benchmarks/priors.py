"""Learning curves of the prior methods against training wall-clock time (docs/methods/pixelcnn.md, vqvae.md).

Drives the Trainer step by step, evaluates the whole test split every `--eval-minutes` of *training* time (eval
time is not counted), and at the end saves a checkpoint and the renders (samples, completions, usage charts).

    python benchmarks/priors.py gated-pixelcnn --minutes 5 --eval-minutes 0.5 --out runs/bench_gated
    python benchmarks/priors.py vqvae --minutes 5 --out runs/bench_vqvae
    python benchmarks/priors.py code-prior --minutes 5 --set vqvae_run=runs/bench_vqvae --out runs/bench_prior

Prints a table of (training minutes, step, metrics) and writes it to OUT/curve.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from neuralrender.config import save_yaml
from neuralrender.train.trainer import Trainer, build_configs, run_config_dict

KEYS = ("nll_nats", "bits_per_dim", "bits_per_code", "baseline_nll_nats", "unigram_nll_nats", "mse", "psnr",
        "psnr_mean_image", "perplexity", "codes_used", "perplexity_top", "perplexity_bottom")


@torch.no_grad()
def test_code_usage(tr, out: Path) -> dict:
    """Code histogram of the whole test split per level: codes used, perplexity, a usage chart PNG."""
    from neuralrender.io.images import save_image
    from neuralrender.metrics.density import perplexity
    from neuralrender.nn.quantize import usage_plot

    model = tr.model.eval()
    images = tr.data.val.images.float()
    codes = [model.encode(images[i:i + 256].to(tr.device)) for i in range(0, len(images), 256)]
    levels = {"": (model.vq, codes)} if not isinstance(codes[0], tuple) else {
        "_top": (model.vq_t, [c[0] for c in codes]), "_bottom": (model.vq_b, [c[1] for c in codes])}
    res = {}
    for name, (vq, cs) in levels.items():
        counts = torch.bincount(torch.cat(cs).flatten().cpu(), minlength=vq.num_codes).float()
        res[f"test_codes_used{name}"] = int((counts > 0).sum())
        res[f"test_perplexity{name}"] = perplexity(counts)
        res[f"num_codes{name}"] = vq.num_codes
        save_image(usage_plot(counts), out / f"test_code_usage{name}.png")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("method")
    ap.add_argument("--minutes", type=float, default=5.0, help="training wall-clock budget")
    ap.add_argument("--eval-minutes", type=float, default=0.5, help="evaluate every this many training minutes")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="train / model config overrides (YAML values), e.g. --set channels=64 --set lr=5e-4")
    args = ap.parse_args()
    over = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    out = args.out or f"runs/bench_{args.method}"
    over = {"steps": 10**9, "eval_every": 0, "ckpt_every": 0, "quiet": True, "threads": args.threads, "out": out, **over}
    torch.set_num_threads(args.threads)
    _, tcfg, mcfg = build_configs(args.method, {}, over)
    tr = Trainer(args.method, tcfg, mcfg)
    Path(out).mkdir(parents=True, exist_ok=True)
    rows, trained, next_eval = [], 0.0, 0.0
    while True:
        if trained >= next_eval or trained >= args.minutes * 60:
            ev = tr.evaluate(max_batches=0)
            row = {"minutes": round(trained / 60, 3), "step": tr.step, **{k: ev[k] for k in KEYS if k in ev}}
            rows.append(row)
            print(json.dumps(row), flush=True)
            next_eval += args.eval_minutes * 60
            if trained >= args.minutes * 60:
                break
        t0 = time.time()
        tr.train_step()
        trained += time.time() - t0
    extra = test_code_usage(tr, Path(out)) if args.method in ("vqvae", "vqvae2") else {}
    if extra:
        print(json.dumps(extra), flush=True)
    tr.tcfg.steps = tr.step
    save_yaml(run_config_dict(args.method, tr.tcfg, mcfg), Path(out) / "config.yaml")  # a run `load_run` reads
    tr.save()
    renders = tr.render()
    (Path(out) / "curve.json").write_text(json.dumps({"method": args.method, "overrides": over, "curve": rows,
                                                      "test_code_usage": extra,
                                                      "renders": [str(p) for p in renders]}, indent=1))
    print("renders:", *renders)


if __name__ == "__main__":
    main()
