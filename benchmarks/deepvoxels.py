"""DeepVoxels vs pix2pix-nearest (and neural textures): quality under one CPU budget, consistency, speed.

    python benchmarks/deepvoxels.py compare --data spot --cpu-minutes 8 [--steps N] [--threads 1]
        [--methods deepvoxels pix2pix-nearest neural-textures] [--set '{"neural-textures": {...}}']
    python benchmarks/deepvoxels.py speed [--data spot] [--sizes 128 256] [--steps 3]
    python benchmarks/deepvoxels.py grid-writes --run RUN_DIR [--views 8]
    python benchmarks/deepvoxels.py curves RESULTS.json [RESULTS.json ...] --out curves.png [--method deepvoxels]

compare: trains each method on the same posed dataset with the same budget, one after the other in this
process with torch threads fixed (default 1): `--cpu-minutes` counts the CPU time of the training steps
(time.process_time, so it is fair under a shared, loaded machine: data loading and evaluation are not
counted), `--steps` counts steps; with both, whichever ends first. neural-textures (it needs a mesh) is
skipped on captures without one. Then it reports test-split PSNR / SSIM (LPIPS when available),
DeepVoxels' depth error, and on a 24-frame orbit (around the centre of the box a built scene carries, so the
same orbit whichever methods run in the process; else of the first method's box) the temporal warping
error: consecutive frames are related by the flow that the known cameras and the scene's true depth give
(built scenes are re-rendered on the orbit for that depth; graphics.flow.rigid_flow), frame t-1 is warped
into frame t and the mean squared
difference on pixels visible in both is reported x1000 (graphics.flow.warping_error). It writes
results.json and images into --out/<data>: test_views.png (rows: target, each method, DeepVoxels' learned
depth, the true depth), orbit.png (rows: truth, each method), orbit_depth_truth_deepvoxels.png.
With `--curve-every S` compare also evaluates every S CPU seconds of training (clock stopped; results.json:
"curve", "eval_cpu_seconds"); `curves` plots those curves (val = training views, test = test split).
grid-writes (a trained deepvoxels run, forward only): how much the test-time image depends on which training
pair wrote the stored grid last. PSNR of the stored grid (what eval reports) on the test views and on --views
training views; "fresh": each view rendered from the grid just written from its own nearest training views
(the path a training step renders: it uses source images, so it is a diagnostic, not the method's test-time
output); "after write j": the stored grid replaced by the GRU write of training pair j (j over --views spread
training views) and the test views rendered from it.
speed: training it/s, render fps and peak memory (CUDA: max allocated; CPU: peak RSS) at each size, and the
share of a training step spent in lifting / 3D nets / projection / 2D nets (torch profiler record_function
scopes over the method's own calls).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.config import save_yaml  # noqa: E402
from neuralrender.data.view_pairs import camera_path  # noqa: E402
from neuralrender.graphics.cameras import Cameras  # noqa: E402
from neuralrender.metrics import lpips_available, lpips_metric, psnr, ssim  # noqa: E402
from neuralrender.train.trainer import (  # noqa: E402
    Trainer,
    build_configs,
    evaluate_model,
    load_run,
    run_config_dict,
    to_device,
)


# ------------------------------------------------------------------------------------------ consistency
def orbit_warp_error(frames: torch.Tensor, depth: torch.Tensor, cams: Cameras) -> float:
    """Temporal warping error x1000 of frames [T,3,H,W] along cameras [T]: graphics.flow.warping_error with the
    exact flow of frame t -> t-1 from the cameras and the scene's true depth [T,1,H,W] (graphics.flow.rigid_flow,
    foreground pixels visible in both frames)."""
    from neuralrender.graphics.flow import rigid_flow, warping_error

    flow, valid = rigid_flow(depth[1:], cams[1:], cams[:-1], source_depth=depth[:-1], background="invalid")
    flows = torch.cat([torch.zeros_like(flow[:1]), flow])[None]
    masks = torch.cat([torch.zeros_like(valid[:1]), valid])[None]
    return float(warping_error(frames[None].float(), flows, masks)[0]) * 1000


def orbit_truth(data_root: str, cams: Cameras):
    """(images, depth) of a built scene re-rendered at `cams`, or None for a capture without a scene spec."""
    root = Path(data_root)
    spec_path = root / "scene.yaml"
    if not spec_path.is_file():
        return None
    from neuralrender.data import scenes

    spec = scenes.load_scene(spec_path)
    spec = replace(spec, width=cams.width, height=cams.height)
    r = scenes.render_scene(spec, scenes.scene_mesh(spec), cams)
    return r.images, r.depth


# ------------------------------------------------------------------------------------------ training
def method_overrides(method: str, data: str, image_size: int) -> dict:
    """Flags that make `method` train at `image_size` on `data` (neural-textures takes a downscale factor)."""
    if method != "neural-textures":
        return {"image_size": image_size}
    from neuralrender.data.view_pairs import downscale_for, resolve_posed
    from neuralrender.io.posed import load_transforms

    full = load_transforms(resolve_posed(data), "train")
    return {"downscale": downscale_for(full.width, full.height, image_size)}


def train_for(method: str, data: str, out: Path, cpu_seconds: float | None, steps: int | None, threads: int,
              overrides: dict, curve_every: float | None = None, val_views: int = 8) -> tuple:
    """Train `method` until `steps` steps or `cpu_seconds` of CPU time (time.process_time of this process,
    training steps only: data loading between steps and evaluation are not counted) -> (trainer, test metrics,
    budget). With `curve_every` (CPU seconds of training), the model is also evaluated every that many training
    CPU seconds (and at the end) on `val_views` training views spread evenly over the train split (rendered as
    test views: a measure of fit) and on the test split; the training clock is stopped meanwhile, and the
    evaluation CPU time is reported apart (budget["curve"], budget["eval_cpu_seconds"]). The final metrics are
    always those of the model at the end of the budget."""
    shutil.rmtree(out, ignore_errors=True)
    _, tcfg, mcfg = build_configs(method, {}, {"data": data, "out": str(out), "threads": threads, "quiet": True,
                                               "steps": steps or 10**9, "eval_batches": 0, **overrides})
    tr = Trainer(method, tcfg, mcfg)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(run_config_dict(method, tcfg, mcfg), out / "config.yaml")  # so `--reuse` / load_run can reload it
    n_train = len(tr.data.train)
    val = torch.utils.data.Subset(tr.data.train, sorted({i * n_train // val_views for i in range(min(val_views, n_train))}))
    curve, eval_cpu, losses = [], 0.0, []

    def point():
        nonlocal eval_cpu
        e0 = time.process_time()
        v = evaluate_model(tr.model, val, tcfg.batch_size, tr.device, 0, tr.ema_weights)
        t = evaluate_model(tr.model, tr.data.val, tcfg.batch_size, tr.device, 0, tr.ema_weights)
        eval_cpu += time.process_time() - e0
        row = {"step": tr.step, "train_cpu_seconds": round(train_cpu, 1), "val_psnr": round(v["psnr"], 3),
               "test_psnr": round(t["psnr"], 3), "test_ssim": round(t["ssim"], 4)}
        if losses:
            row["train_l1"] = round(sum(losses) / len(losses), 4)
            losses.clear()
        if "depth_mae_rel" in t:
            row["test_depth_mae_rel"] = round(t["depth_mae_rel"], 4)
        curve.append(row)
        print("curve", json.dumps(row), flush=True)

    train_cpu, t0, next_eval = 0.0, time.time(), curve_every
    with torch.enable_grad():
        while (steps is None or tr.step < steps) and (cpu_seconds is None or train_cpu < cpu_seconds):
            c = time.process_time()
            logs = tr.train_step()
            train_cpu += time.process_time() - c
            if "l1" in logs:
                losses.append(logs["l1"])
            if curve_every and train_cpu >= next_eval:
                point()
                next_eval += curve_every
    if curve_every and (not curve or curve[-1]["step"] != tr.step):
        point()
    budget = {"steps": tr.step, "cpu_seconds": round(train_cpu, 1), "wall_seconds": round(time.time() - t0, 1)}
    if curve_every:
        budget.update(curve=curve, eval_cpu_seconds=round(eval_cpu, 1), val_views=[int(i) for i in val.indices])
    tr.save()
    ev = tr.evaluate()
    tr.keep_ema_weights()  # the orbit and the images below show the model that was evaluated (as load_run does)
    return tr, ev, budget


class Reloaded:
    """A finished run loaded back (model + data), with the attributes of a Trainer that `compare` reads."""

    def __init__(self, run_dir: Path):
        self.model, self.data, _, meta = load_run(run_dir, device="cpu")
        self.step = meta["step"]


def lpips_of(model, ds, render_fn) -> float | None:
    ok, _ = lpips_available()
    if not ok:
        return None
    vals = []
    for i in range(len(ds)):
        batch = to_device(torch.utils.data.default_collate([ds[i]]), next(model.parameters()).device)
        v = lpips_metric(render_fn(batch), batch["image"])
        if v is None:
            return None
        vals.append(float(v.mean()))
    return sum(vals) / len(vals)


def render_test(method: str, model, batch) -> torch.Tensor:
    """A method's test-view prediction [B,3,H,W] for a batch of its own test dataset."""
    if method == "deepvoxels":
        return model(model._cameras(batch))["rgb"]
    if method == "pix2pix-nearest":
        return model(*model._inputs(batch))
    return model(model.cameras_of(batch))["rgb"]


def render_orbit(method: str, model, cams: Cameras, train) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(rgb [T,3,H,W], learned depth [T,1,H,W] or None) of a method along cameras `cams`."""
    if method == "deepvoxels":
        rgb, depth = model.render_cameras(cams)
        return rgb.cpu(), depth.cpu()
    if method == "pix2pix-nearest":
        return model.render_cameras(cams, train).cpu(), None
    return model.render_cameras(cams).cpu(), None


def has_mesh(data: str) -> bool:
    from neuralrender.data.view_pairs import resolve_posed
    from neuralrender.io.posed import load_transforms

    return load_transforms(resolve_posed(data), "train").mesh_path is not None


@torch.no_grad()
def compare(args) -> dict:
    from neuralrender.data.view_pairs import dataset_box
    from neuralrender.io.images import save_grid

    out = Path(args.out) / Path(args.data).name
    methods = [m for m in args.methods if m != "neural-textures" or has_mesh(args.data)]
    cpu_s = None if args.cpu_minutes is None else args.cpu_minutes * 60
    results = {"data": args.data, "budget_per_method": {"cpu_minutes": args.cpu_minutes, "steps": args.steps},
               "threads": args.threads, "image_size": args.image_size, "methods": methods}
    frames, tests = {}, {}
    cams = truth = None
    old = json.loads((out / "results.json").read_text()) if args.reuse and (out / "results.json").is_file() else {}
    for method in methods:
        if args.reuse:  # evaluate the runs a previous `compare` trained (same numbers, e.g. after a metric change)
            tr = Reloaded(out / method)
            ev = evaluate_model(tr.model, tr.data.val, 1, next(tr.model.parameters()).device)
            budget = {k: old.get(method, {}).get(k) for k in ("steps", "cpu_seconds", "wall_seconds")}
        else:
            over = {**method_overrides(method, args.data, args.image_size), **dict(args.set.get(method, {}))}
            m_cpu = over.pop("cpu_minutes", None)  # a per-method budget given through --set (stated in results)
            m_cpu_s = cpu_s if m_cpu is None else float(m_cpu) * 60
            tr, ev, budget = train_for(method, args.data, out / method, m_cpu_s, over.pop("steps", args.steps),
                                       args.threads, over, args.curve_every, args.val_views)
            budget["overrides"] = over
        model = tr.model.eval()
        if cams is None:  # the orbit circles the scene's own box (method-independent), else the first method's
            info = tr.data.info
            box = dataset_box(info["data"]) or (info["bounds_min"], info["bounds_max"])
            centre = (torch.as_tensor(box[0]) + torch.as_tensor(box[1])) / 2
            cams = camera_path(info["train_cameras"], "orbit", args.orbit_frames, centre)
            truth = orbit_truth(info["data"], cams)
            near, far = float(info["near"]), float(info["far"])
        rgb, depth = render_orbit(method, model, cams, tr.data.train)
        frames[method] = (rgb, depth)
        res = {**budget, **{k: round(v, 4) for k, v in ev.items()},
               "lpips": lpips_of(model, tr.data.val, lambda b, _m=method, _o=model: render_test(_m, _o, b))}
        if truth is not None:
            res["orbit_psnr"] = round(float(psnr(rgb, truth[0]).mean()), 3)
            res["orbit_ssim"] = round(float(ssim(rgb, truth[0]).mean()), 4)
            res["orbit_warp_error"] = round(orbit_warp_error(rgb, truth[1], cams), 3)
        results[method] = res
        # the first 4 test views: targets, predictions (and DeepVoxels' learned / the true depth)
        n = min(4, len(tr.data.val))
        batch = to_device(torch.utils.data.default_collate([tr.data.val[i] for i in range(n)]),
                          next(model.parameters()).device)
        tests[method] = render_test(method, model, batch).cpu()
        tests.setdefault("target", batch["image"].cpu())
        if method == "deepvoxels":
            r = model.render(batch)
            tests["deepvoxels_depth"] = r["depth"].cpu()
            if "depth_true" in r:
                tests["true_depth"] = r["depth_true"].cpu()
        print(method, json.dumps(res), flush=True)
    rows = ["target", *methods] + [k for k in ("deepvoxels_depth", "true_depth") if k in tests]
    save_grid(torch.cat([tests[k].expand(-1, 3, -1, -1) for k in rows]).clamp(0, 1), out / "test_views.png",
              nrow=tests["target"].shape[0])
    results["test_views_rows"] = rows
    if truth is not None:
        results["ground_truth_orbit_warp_error"] = round(orbit_warp_error(truth[0], truth[1], cams), 3)
        strip = torch.cat([truth[0][::4]] + [frames[m][0][::4] for m in methods])
        save_grid(strip.clamp(0, 1), out / "orbit.png", nrow=len(truth[0][::4]))
        results["orbit_rows"] = ["truth", *methods]
        if "deepvoxels" in frames:
            dimg = lambda d: (1 - (d - near) / (far - near)).clamp(0, 1) * (d > 0)  # noqa: E731
            save_grid(torch.cat([dimg(truth[1][::4]), dimg(frames["deepvoxels"][1][::4])]).expand(-1, 3, -1, -1),
                      out / "orbit_depth_truth_deepvoxels.png", nrow=len(truth[0][::4]))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    return results


# ------------------------------------------------------------------------------------------ speed
def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def speed(args) -> dict:
    from torch.profiler import ProfilerActivity, profile, record_function

    from neuralrender.methods import deepvoxels as dvm

    res = {}
    for size in args.sizes:
        out = Path(args.out) / f"speed_{size}"
        shutil.rmtree(out, ignore_errors=True)
        _, tcfg, mcfg = build_configs("deepvoxels", {}, {"data": args.data, "out": str(out), "threads": args.threads,
                                                         "quiet": True, "image_size": size, "device": args.device})
        tr = Trainer("deepvoxels", tcfg, mcfg)
        dev = tr.device
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        m = tr.model
        # scopes: wrap the method's stages (instance attributes shadow the class's methods)
        scopes = {"lifting (extractor + lift)": ("lift",), "3D nets (GRU + 3D U-Net)": ("integrate",)}
        orig_project = dvm.DeepVoxels.project

        def project(grid, cams, _m=m):
            with record_function("3D nets (GRU + 3D U-Net)"):
                g = _m.inpaint(grid)
            with record_function("projection (sample_along_rays + occlusion)"):
                fr, depths = _m.frustum(g, cams)
                feats, depth, w = _m.occlusion(fr, depths)
            with record_function("2D rendering net"):
                up = F.interpolate(feats, size=(_m.height, _m.width), mode="bilinear", align_corners=False)
                rgb = _m.renderer(up)
            return {"rgb": rgb, "depth": depth, "weights": w, "features": feats}

        for label, names in scopes.items():
            for n in names:
                fn = getattr(m, n)
                setattr(m, n, (lambda f, lab: (lambda *a, **k: _scoped(lab, f, *a, **k)))(fn, label))
        m.project = project
        tr.train_step()  # warm-up
        n = args.steps
        t0 = time.time()
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(n):
                tr.train_step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
        it_s = n / (time.time() - t0)
        ev = {e.key: e for e in prof.key_averages()}
        keys = ["lifting (extractor + lift)", "3D nets (GRU + 3D U-Net)", "projection (sample_along_rays + occlusion)",
                "2D rendering net"]
        attr = "device_time_total" if dev.type == "cuda" else "cpu_time_total"
        tot = {k: getattr(ev[k], attr) if k in ev else 0.0 for k in keys}
        s = sum(tot.values()) or 1.0
        # forward-only render fps of the trained-grid path (target camera only)
        cams = tr.data.val.cameras[:1].to(dev)
        m.eval()
        with torch.no_grad():
            m(cams)
            t0 = time.time()
            for _ in range(args.steps):
                m(cams)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            fps = args.steps / (time.time() - t0)
        dvm.DeepVoxels.project = orig_project
        res[size] = {"train_it_s": round(it_s, 3), "render_fps": round(fps, 3),
                     "peak_memory_mb": round(peak_memory_mb(dev), 1), "device": str(dev),
                     "forward_share_%": {k: round(100 * v / s, 1) for k, v in tot.items()},
                     "image": [m.width, m.height]}
        print(size, json.dumps(res[size]), flush=True)
    return res


@torch.no_grad()
def grid_writes(args) -> dict:
    torch.set_num_threads(args.threads)
    model, data, _, meta = load_run(Path(args.run), device="cpu")
    model.eval()
    train, test = data.train, data.val
    picks = sorted({i * len(train) // args.views for i in range(min(args.views, len(train)))})
    stored = model.grid.detach().clone()

    def item(ds, i):
        return torch.utils.data.default_collate([ds[i]])

    def write(b):
        src_cams = model._cameras({k: b["src_" + k].flatten(0, 1) for k in ("K", "R", "t")})
        lifted, _ = model.lift(b["src_image"].flatten(0, 1), src_cams)
        return model.integrate(lifted)

    def view_psnr(grid, b):
        return float(psnr(model.project(grid, model._cameras(b))["rgb"], b["image"]).mean())

    def mean(v):
        return round(sum(v) / len(v), 3)

    test_items = [item(test, i) for i in range(len(test))]
    val_items = [item(train, i) for i in picks]
    res = {"run": str(args.run), "step": meta["step"], "val_views": picks,
           "stored_test_psnr": mean([view_psnr(stored, b) for b in test_items]),
           "stored_val_psnr": mean([view_psnr(stored, b) for b in val_items]),
           "fresh_test_psnr": mean([view_psnr(write(b), b) for b in test_items]),
           "fresh_val_psnr": mean([view_psnr(write(b), b) for b in val_items])}
    after = []
    for b in val_items:
        g = write(b)
        after.append(mean([view_psnr(g, t) for t in test_items]))
    res["test_psnr_after_write"] = after
    res["after_write_min_max"] = [min(after), max(after)]
    print(json.dumps(res), flush=True)
    return res


def curves(args) -> dict:
    """Plot the eval curves (val and test PSNR vs training CPU minutes) of `args.method` in results.json files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    out = {}
    for i, path in enumerate(args.results):
        res = json.loads(Path(path).read_text())
        curve = res[args.method]["curve"]
        name = Path(path).parent.parent.name
        x = [p["train_cpu_seconds"] / 60 for p in curve]
        ax.plot(x, [p["test_psnr"] for p in curve], "-o", ms=3, color=f"C{i}", label=f"{name} test")
        ax.plot(x, [p["val_psnr"] for p in curve], "--", color=f"C{i}", label=f"{name} val (train views)")
        out[name] = curve
    ax.set_xlabel("training CPU minutes (1 thread)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"{args.method}: PSNR during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    return out


def _scoped(label, fn, *a, **k):
    from torch.profiler import record_function

    with record_function(label):
        return fn(*a, **k)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--data", default="spot")
    c.add_argument("--cpu-minutes", type=float, default=None,
                   help="budget per method: CPU minutes of training steps (time.process_time, --threads 1)")
    c.add_argument("--steps", type=int, default=None, help="budget per method: training steps (with or instead of "
                                                           "--cpu-minutes, whichever ends first)")
    c.add_argument("--methods", nargs="+", default=["deepvoxels", "pix2pix-nearest", "neural-textures"],
                   help="neural-textures is skipped on data without a mesh")
    c.add_argument("--set", type=json.loads, default={},
                   help='per-method config overrides as JSON, e.g. \'{"pix2pix-nearest": {"lr": 1e-3}}\'; the keys '
                        '"cpu_minutes" and "steps" set that method\'s own budget')
    c.add_argument("--image-size", type=int, default=128)
    c.add_argument("--orbit-frames", type=int, default=24)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--out", default="runs/bench_deepvoxels")
    c.add_argument("--curve-every", type=float, default=None,
                   help="evaluate every this many CPU seconds of training (val: training views rendered from the "
                        "trained model; test: the test split); evaluation CPU is not counted in the budget")
    c.add_argument("--val-views", type=int, default=8, help="training views (evenly spread) in the curve's val set")
    c.add_argument("--reuse", action="store_true", help="evaluate the runs already in --out instead of training")
    s = sub.add_parser("speed")
    s.add_argument("--data", default="spot")
    s.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    s.add_argument("--steps", type=int, default=3)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", default="runs/bench_deepvoxels")
    gw = sub.add_parser("grid-writes")
    gw.add_argument("--run", required=True, help="a trained deepvoxels run directory")
    gw.add_argument("--views", type=int, default=8)
    gw.add_argument("--threads", type=int, default=1)
    cv = sub.add_parser("curves")
    cv.add_argument("results", nargs="+", help="results.json files of `compare --curve-every` runs")
    cv.add_argument("--method", default="deepvoxels")
    cv.add_argument("--out", default="curves.png")
    args = p.parse_args(argv)
    if args.cmd == "compare" and args.cpu_minutes is None and args.steps is None:
        p.error("compare needs a budget: --cpu-minutes and/or --steps")
    if args.cmd == "curves":
        curves(args)
        return 0
    if args.cmd == "grid-writes":
        grid_writes(args)
        return 0
    torch.set_num_threads(args.threads)
    res = compare(args) if args.cmd == "compare" else speed(args)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
