"""pix2pix, pix2pixhd and vid2vid side by side: quality at one budget (`compare`) and speed / memory (`speed`).

compare: trains the three methods on one task with the same steps and batch (vid2vid's batch items are clips of
`--clip-len` frames), one torch thread, and prints / saves the held-out table: per-frame PSNR and SSIM, the
temporal warping error (x1000; previous output warped by the ground-truth flow vs the current output,
occlusion-masked) of the output and of the real frames, the train mean image's PSNR, and each run's CPU seconds
(time.process_time of this 1-thread process). Held out: the last 20% of each sequence (for the scene, the last
20% of the camera path: views not trained on). For the labels -> scene task it also renders the scene edited in
3D (an object moved, an object duplicated) on the held-out camera path and reports the edited object's mask
IoU: a small segmentation U-Net trained on the real training frames labels the generated frames, and its mask
of the object is compared with the rasterized edited labels (its IoU on the real edited renders is the
ceiling; it is trained on the training frames plus real renders of randomly rearranged scenes from the training
cameras, never on held-out views or generated frames). Runs resume after a kill (each method's run directory keeps checkpoints).

    python benchmarks/cond2d.py compare --task scene --steps 1000 --batch 4 --out runs/cond2d/scene
    python benchmarks/cond2d.py compare --task face --steps 1000 --batch 4 --out runs/cond2d/face
    python benchmarks/cond2d.py compare --task scene-gbuffer --methods pix2pix pix2pixhd --layouts 24 --out runs/x

--layouts N (scene tasks): every method also trains on N random layouts of the scene from the training cameras
(seeded apart from the segmenter's layouts).

pix2pixHD's configuration per task (docs/methods/pix2pixhd.md), given with --set; pix2pix uses its defaults:

    scene, scene-gbuffer   --set pix2pixhd.coords=false                               (session 5)
    face                   the defaults
    body                   --set pix2pixhd.up=shuffle pix2pixhd.feat_channels=0       (session 7; session 8's
                           screen-space texture `canvas` was measured there and not adopted)

vid2vid's pix2pixHD hallucinator takes its own options (`vid2vid.hd_up`, `vid2vid.hd_skip`, `vid2vid.canvas`; the
defaults are session 6's generator). The generator-only screen for the body is benchmarks/cond2d_screen.py.

edit: the edited-scene check alone, on runs already trained (one segmenter scores every run given; the runs must
share one scene task), e.g. two configurations of one method side by side:

    python benchmarks/cond2d.py edit --runs runs/cond2d/sceneg/pix2pix runs/cond2d/sceneg/pix2pixhd --out runs/x

speed: for each method at 128^2 and 256^2 (default model configs, batch 1, 6 condition channels = the labels -> scene
task) it prints training iterations per second (one d + g step through the method's own `loss`), inference
frames per second (`generate_clip` on an 8-frame clip, vid2vid sequentially) — on CPU per CPU second of this
process (one torch thread by default, so the rates do not depend on the machine's load) — and the peak memory: CUDA
max_memory_allocated on a GPU, else the increase of the process's peak resident set size during the row.

    python benchmarks/cond2d.py speed                 # CPU, 128 and 256
    python benchmarks/cond2d.py speed --sizes 128 --iters 2 --device cpu
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender import registry  # noqa: E402
from neuralrender.data.conditions import SCENE_TASKS, TASKS  # noqa: E402
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
    clock = time.perf_counter if device.type == "cuda" else time.process_time  # CPU: CPU seconds (fair under load)
    t0 = clock()
    for k in range(iters):
        step(k)
    if device.type == "cuda":
        torch.cuda.synchronize()
    it_s = iters / (clock() - t0)
    model.eval()
    args = (eval_batch["cond"], eval_batch["inst"]) if name == "pix2pixhd" else (eval_batch["cond"],)
    model.generate_clip(*args)
    t0 = clock()
    for _ in range(iters):
        model.generate_clip(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    fps = iters * 8 / (clock() - t0)
    peak = _peak_mb(device) - (0 if device.type == "cuda" else base)
    params = sum(p.numel() for p in model.generator.parameters()) / 1e6
    return {"method": name, "size": size, "train_clip": T, "it_s": it_s, "fps": fps, "peak_mb": peak, "g_params_m": params}


# ---------------------------------------------------------------------------------------------- compare

EDITS = (("move", "globe", (-0.3, 0.0, -1.1)), ("duplicate", "can", (-1.1, 0.0, 0.6)))
COLUMNS = ("psnr", "ssim", "warp_err", "warp_err_gt", "psnr_mean_image")


def _value(text: str):
    import yaml

    return yaml.safe_load(text)


def method_overrides(name: str, a) -> dict:
    """The budget shared by all methods + each method's schedule scaled to the step count."""
    common = {"task": a.task, "size": a.size, "frames": a.frames, "eval_clip": a.eval_clip, "steps": a.steps,
              "batch_size": a.batch, "lr": a.lr, "threads": 1, "seed": a.seed, "quiet": True, "eval_every": 0,
              "eval_batches": 0, "ckpt_every": max(1, a.steps // 4), "resume": True, "device": "cpu",
              **({"layouts": a.layouts} if a.layouts else {})}
    own = {"vid2vid": {"spatial_steps": a.steps // 4, "temporal_every": a.steps // 4, "clip_len": a.clip_len,
                       "clip_start": max(2, a.clip_len // 2)}}.get(name, {})
    for item in a.set:  # NAME.KEY=VALUE
        head, value = item.split("=", 1)
        m, key = head.split(".", 1)
        if m == name:
            own[key] = _value(value)
    return {**common, **own}


def edit_check(models: dict, bundle, a, out: Path) -> dict:
    """Mask IoU of the edited object in each model's output on the held-out camera path (scene task)."""
    import dataclasses

    from neuralrender.data.conditions import edit_scene_spec, random_layout_renders, scene_condition
    from neuralrender.data.scenes import load_scene
    from neuralrender.io.images import save_grid
    from neuralrender.methods._cond2d import cond_to_rgb, fit_segmenter, mask_iou

    seqs, info = bundle
    seq, k = seqs[0], info["num_classes"]
    n = len(seq)
    n_test = math.ceil(0.2 * n)
    t0 = time.process_time()
    spec = dataclasses.replace(load_scene("default"), shadows=info["spec"].shadows)
    images, labels = random_layout_renders(spec, info["cameras"][: n - n_test], a.seed)
    images, labels = torch.cat([seq.target[: n - n_test], images]), torch.cat([seq.instances[: n - n_test], labels])
    segment = fit_segmenter(images, labels, k, steps=a.seg_steps, seed=a.seed)
    res: dict = {"segmenter_cpu_s": time.process_time() - t0, "segmenter_frames": images.shape[0]}
    held = segment(seq.target[n - n_test:])
    per_class = [mask_iou(held, seq.instances[n - n_test:], c) for c in range(k)]
    res["segmenter_iou_real_heldout"], res["segmenter_miou_real_heldout"] = per_class, sum(per_class) / k
    cams = info["cameras"][n - n_test:]
    for edit, obj, by in EDITS:
        new_spec, label = edit_scene_spec(spec, edit, obj, by)
        cond, r = scene_condition(new_spec, cams, k, f"{new_spec.source} ({edit} {obj})", info["gbuffer"])
        cond = cond[None]
        row = {"object": obj, "label": label, "by": list(by),
               "real": mask_iou(segment(r.images), r.labels, label)}
        panels = [cond_to_rgb(cond[0], a.task)]
        for name, model in models.items():
            video = model.generate_clip(cond, r.labels[None])[0]
            row[name] = mask_iou(segment(video), r.labels, label)
            panels.append(video)
        panels.append(r.images)
        strip = torch.cat(panels, -1)  # condition | each method | real edited render
        save_grid(strip[:: max(1, n_test // 4)], out / f"edit_{edit}.png", nrow=1)
        res[edit] = row
    return res


def side_by_side_all(models: dict, val, task: str, out: Path) -> None:
    """compare.mp4 / compare.png: every held-out clip as condition | each method | ground truth."""
    from torch.utils.data import default_collate

    from neuralrender.io.images import save_grid
    from neuralrender.io.video import write_video
    from neuralrender.methods._cond2d import cond_to_rgb

    batch = default_collate([val[i] for i in range(len(val))])
    cond, inst = batch["cond"], batch["inst"]
    panels = [cond_to_rgb(cond.flatten(0, 1), task)]
    panels += [m.generate_clip(cond, inst).flatten(0, 1) for m in models.values()]
    panels.append(batch["image"].flatten(0, 1))
    strip = torch.cat(panels, -1)
    write_video(strip, out / "compare.mp4", fps=8)
    save_grid(strip[:: max(1, strip.shape[0] // 5)][:5], out / "compare.png", nrow=1)


def label_colour_psnr(seqs) -> float:
    """Baseline: every held-out pixel painted with its label's mean colour over the train frames (mean PSNR)."""
    from neuralrender.metrics import psnr

    seq = seqs[0]
    n = len(seq)
    n_test = math.ceil(0.2 * n)
    px = seq.target[: n - n_test].permute(0, 2, 3, 1).reshape(-1, 3)
    lab = seq.instances[: n - n_test].reshape(-1)
    k = int(seq.instances.max()) + 1
    means = torch.stack([px[lab == c].mean(0) if bool((lab == c).any()) else px.mean(0) for c in range(k)])
    pred = means[seq.instances[n - n_test:, 0]].permute(0, 3, 1, 2)
    return psnr(pred, seq.target[n - n_test:]).mean().item()


def compare(a) -> None:
    from neuralrender.methods._cond2d import _sequences
    from neuralrender.train.trainer import Trainer, build_configs

    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results, models = {}, {}
    for name in a.methods:
        _, tcfg, mcfg = build_configs(name, {}, {**method_overrides(name, a), "out": str(out / name)})
        t0 = time.process_time()
        tr = Trainer(name, tcfg, mcfg)
        start = tr.try_resume() or 0
        summary = tr.run()
        cpu = time.process_time() - t0
        done = max(1, summary["steps"] - start)
        results[name] = {**{k: summary["eval"].get(k) for k in COLUMNS},
                         "steps": summary["steps"], "batch": a.batch, "cpu_s_this_process": cpu,
                         "cpu_s_per_step": cpu / done if summary["steps"] > start else None,
                         "config": {k: v for k, v in method_overrides(name, a).items()
                                    if k not in ("quiet", "resume", "device")}}
        print(f"{name}: {json.dumps({k: results[name][k] for k in COLUMNS})} cpu {cpu:.0f} s", flush=True)
        tr.model.eval()
        models[name] = tr.model
    table = {"task": a.task, "size": a.size, "steps": a.steps, "batch": a.batch, "lr": a.lr, "methods": results}
    with torch.no_grad():
        side_by_side_all(models, tr.data.val, a.task, out)
    if a.task in SCENE_TASKS:
        table["psnr_label_colour"] = label_colour_psnr(_sequences(a.task, a.size, a.frames)[0])
    if a.task in SCENE_TASKS and not a.no_edit:
        with torch.no_grad():
            table["edit"] = edit_check(models, _sequences(a.task, a.size, a.frames), a, out)
    (out / "results.json").write_text(json.dumps(table, indent=1))
    lines = [f"task {a.task}, {a.size}x{a.size}, {a.steps} steps x batch {a.batch}, lr {a.lr}, seed {a.seed}, "
             "1 torch thread", "",
             "| method | PSNR | SSIM | warp_err (x1000) | warp_err real | mean-image PSNR | CPU s |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        cps = r["cpu_s_per_step"]
        cpu = f"{cps * a.steps:.0f}" if cps else "(resumed)"
        lines.append(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['warp_err']:.2f} | {r['warp_err_gt']:.2f} "
                     f"| {r['psnr_mean_image']:.2f} | {cpu} |")
    if "psnr_label_colour" in table:
        lines += ["", f"labels -> per-label mean colour of the train frames: held-out PSNR {table['psnr_label_colour']:.2f}"]
    if "edit" in table:
        lines += [""] + edit_table(table["edit"], list(models), a.seg_steps)
    text = "\n".join(lines)
    (out / "table.md").write_text(text + "\n")
    print(text)


def edit_table(res: dict, names, seg_steps: int) -> list[str]:
    lines = [f"edited scene, mask IoU of the edited object (segmenter: {seg_steps} steps, mIoU on real held-out "
             f"frames {res['segmenter_miou_real_heldout']:.3f}; per label "
             + " ".join(f"{v:.3f}" for v in res.get("segmenter_iou_real_heldout", [])) + ")", "",
             "| edit | " + " | ".join(names) + " | real edited render |", "|---" * (len(names) + 2) + "|"]
    for edit, _, _ in EDITS:
        row = res[edit]
        lines.append(f"| {edit} {row['object']} by {row['by']} | "
                     + " | ".join(f"{row[m]:.3f}" for m in names) + f" | {row['real']:.3f} |")
    return lines


def edit_runs(a) -> None:
    """The edited-scene check on trained runs (`--runs DIR ...`, one task): one segmenter scores them all."""
    from neuralrender.methods._cond2d import _sequences
    from neuralrender.train.trainer import load_run

    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    models, task = {}, None
    for run in a.runs:
        model, _, _, _ = load_run(run, device="cpu")
        if model.cfg.task not in SCENE_TASKS or task not in (None, model.cfg.task):
            raise SystemExit(f"{run}: task {model.cfg.task}; the edit check needs runs of one scene task")
        task, a.size, a.frames = model.cfg.task, model.cfg.size, model.cfg.frames
        models[f"{Path(run).parent.name}/{Path(run).name}"] = model
    a.task = task
    with torch.no_grad():
        res = edit_check(models, _sequences(task, a.size, a.frames), a, out)
    (out / "edit.json").write_text(json.dumps({"task": task, "runs": a.runs, "seed": a.seed, "seg_steps": a.seg_steps,
                                               **res}, indent=1))
    text = "\n".join([f"task {task}, runs: {' '.join(a.runs)}", ""] + edit_table(res, list(models), a.seg_steps))
    (out / "edit.md").write_text(text + "\n")
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", choices=["speed", "compare", "edit"], default="speed")
    ap.add_argument("--runs", nargs="+", default=[], help="edit: trained run directories of one scene task")
    ap.add_argument("--methods", nargs="+", default=["pix2pix", "pix2pixhd", "vid2vid"])
    sp = ap.add_argument_group("speed")
    sp.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    sp.add_argument("--iters", type=int, default=3)
    sp.add_argument("--device", default="cpu")
    sp.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    cp = ap.add_argument_group("compare")
    cp.add_argument("--task", choices=list(TASKS), default="scene")
    cp.add_argument("--steps", type=int, default=1000)
    cp.add_argument("--batch", type=int, default=4, help="images (pix2pix, pix2pixhd) or clips (vid2vid) per step")
    cp.add_argument("--size", type=int, default=64)
    cp.add_argument("--frames", type=int, default=0, help="frames per sequence (0 = the task's default)")
    cp.add_argument("--eval-clip", type=int, default=10, help="frames per held-out clip")
    cp.add_argument("--clip-len", type=int, default=4, help="vid2vid training clip length")
    cp.add_argument("--lr", type=float, default=2e-4)
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--layouts", type=int, default=0,
                    help="scene tasks: train every method also on this many random layouts of the scene (training "
                         "cameras only; `layouts` of the method configs)")
    cp.add_argument("--seg-steps", type=int, default=3000, help="segmenter training steps (edit check)")
    cp.add_argument("--no-edit", action="store_true", help="skip the edited-scene check")
    cp.add_argument("--set", nargs="*", default=[], metavar="METHOD.KEY=VALUE", help="per-method config overrides")
    cp.add_argument("--out", default="runs/cond2d_compare")
    a = ap.parse_args()
    if a.mode == "compare":
        compare(a)
        return
    if a.mode == "edit":
        edit_runs(a)
        return
    dev = torch.device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(a.threads)
    clock = "wall clock" if dev.type == "cuda" else "CPU seconds of this process (time.process_time)"
    print(f"device {dev}, torch threads {torch.get_num_threads()}, batch 1, rates per {clock}")
    print(f"{'method':<10} {'size':>5} {'clip':>4} {'train it/s':>10} {'infer fps':>9} {'peak MB':>8} {'G params (M)':>12}")
    for size in a.sizes:
        for name in a.methods:
            r = run(name, size, a.iters, dev)
            print(f"{r['method']:<10} {r['size']:>5} {r['train_clip']:>4} {r['it_s']:>10.2f} {r['fps']:>9.2f} "
                  f"{r['peak_mb']:>8.0f} {r['g_params_m']:>12.2f}")


if __name__ == "__main__":
    main()
