"""The `neuralrender` command. It knows methods only through the registry and training only through the trainer.

    neuralrender methods | info | train METHOD [flags] | eval --run DIR | render --run DIR | scenes ... | demo
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import traceback
from pathlib import Path

from neuralrender.errors import ConfigError, NeuralRenderError

COMMANDS = {
    "methods": "list the registered methods with one-line descriptions",
    "info": "versions, rasterizer backends, device and optional packages",
    "train": "train a method: neuralrender train METHOD [--config cfg.yaml] [--FIELD VALUE ...]",
    "eval": "evaluate a run on its eval split: PSNR/SSIM (LPIPS when available) as a table and JSON",
    "render": "render outputs of a trained run (grids, videos, novel-view paths)",
    "scenes": "built-in scenes: list | build NAME | show DATASET",
    "faces": "3D morphable face model: track VIDEO (Face2Face-style fitting), ...",
    "demo": "the main job on the built-in default scene",
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuralrender", description="3D-aware neural rendering framework.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="commands:\n" + "\n".join(f"  {k:9s} {v}" for k, v in COMMANDS.items()))
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("command", nargs="?", help="one of: " + ", ".join(COMMANDS))
    return p


def _reject_unknown(rest: list[str], valid: list[str]) -> None:
    flags = [a for a in rest if a.startswith("--")]
    if flags or rest:
        bad = (flags or rest)[0]
        key = bad.lstrip("-").split("=")[0].replace("-", "_")
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" (did you mean '--{close[0].replace('_', '-')}'?)" if close else ""
        raise ConfigError(f"unknown config key '{key}'{hint}; valid keys: {', '.join(valid)}")


# ---------------------------------------------------------------------------------------------- commands


def cmd_methods(argv: list[str]) -> int:
    from neuralrender import registry
    from neuralrender.train.progress import print_table

    argparse.ArgumentParser(prog="neuralrender methods").parse_args(argv)
    rows = [(name, cls.description) for name, cls in registry.methods().items()]
    print_table("registered methods", rows)
    return 0


def cmd_info(argv: list[str]) -> int:
    import importlib.util
    import platform

    import torch

    from neuralrender import __version__
    from neuralrender.metrics import lpips_available
    from neuralrender.train.progress import print_table

    argparse.ArgumentParser(prog="neuralrender info").parse_args(argv)
    rows = [("neuralrender", __version__), ("python", platform.python_version()), ("torch", torch.__version__)]
    for mod in ("numpy", "kornia", "trimesh", "safetensors", "imageio"):
        try:
            rows.append((mod, __import__(mod).__version__))
        except Exception:
            rows.append((mod, "missing"))
    cuda = torch.cuda.is_available()
    rows.append(("device", f"cuda ({torch.cuda.get_device_name(0)})" if cuda else "cpu"))
    rows.append(("cpu threads", str(torch.get_num_threads())))
    try:
        from neuralrender.graphics.raster import available_backends

        rows.append(("raster backends", ", ".join(available_backends())))
    except ImportError as e:
        rows.append(("raster backends", f"unavailable ({e})"))
    opt = {"nvdiffrast": "gpu", "pytorch3d": "pytorch3d", "open3d": "open3d", "dlib": "faces",
           "mediapipe": "faces", "cv2": "flow", "xatlas": "uv", "embreex": "fast", "lpips": "lpips"}
    for mod, extra in opt.items():
        found = importlib.util.find_spec(mod) is not None
        rows.append((f"optional {mod}", "installed" if found else f"not installed (extra '{extra}')"))
    rows.append(("LPIPS", lpips_available()[1]))
    print_table("neuralrender info", rows)
    return 0


def cmd_train(argv: list[str]) -> int:
    from neuralrender import registry
    from neuralrender.config import add_dataclass_args, field_names, load_yaml, overrides_from_args
    from neuralrender.train.config import TrainConfig
    from neuralrender.train.trainer import Trainer, build_configs

    pre = argparse.ArgumentParser(prog="neuralrender train", add_help=False)
    pre.add_argument("method", nargs="?")
    pre.add_argument("--config")
    pre.add_argument("--out")
    pre.add_argument("--resume", nargs="?", const="true")
    ns, _ = pre.parse_known_args(argv)
    yaml_data = load_yaml(ns.config) if ns.config else {}
    if ns.resume not in (None, "false", "0", "no") and ns.out and (Path(ns.out) / "config.yaml").is_file():
        run_yaml = load_yaml(Path(ns.out) / "config.yaml")  # resume keeps the run's own config
        yaml_data = {**run_yaml, **{k: v for k, v in yaml_data.items() if k != "method"}}
    method = ns.method or yaml_data.get("method")
    if not method or method.startswith("-"):
        names = ", ".join(registry.methods())
        if "-h" in argv or "--help" in argv:
            print(f"usage: neuralrender train METHOD [--config FILE] [--FIELD VALUE ...]\nmethods: {names}")
            return 0
        raise NeuralRenderError(f"train needs a method name; registered methods: {names}")
    cls = registry.get_method(method)
    parser = argparse.ArgumentParser(prog=f"neuralrender train {method}", description=cls.description)
    parser.add_argument("method")
    parser.add_argument("--config", help="YAML with keys method, train, model; flags override it")
    add_dataclass_args(parser, TrainConfig, "training")
    add_dataclass_args(parser, cls.Config, f"model ({method})")
    args, rest = parser.parse_known_args(argv)
    valid = field_names(TrainConfig) + field_names(cls.Config) + ["config"]
    _reject_unknown(rest, valid)
    overrides = {**overrides_from_args(args, TrainConfig), **overrides_from_args(args, cls.Config)}
    _, tcfg, mcfg = build_configs(method, yaml_data, overrides)
    summary = Trainer(method, tcfg, mcfg).run()
    if tcfg.quiet:
        print(json.dumps({k: summary[k] for k in ("method", "run_dir", "steps", "eval")}))
    return 0


def _run_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("--run", required=True, help="run directory (holds config.yaml and checkpoints/)")
    p.add_argument("--checkpoint", help="a checkpoint file (default: the run's last)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA copy")
    return p


def cmd_eval(argv: list[str]) -> int:
    import torch

    from neuralrender.metrics import lpips_available
    from neuralrender.train.progress import print_table
    from neuralrender.train.trainer import evaluate_model, load_run

    p = _run_parser("neuralrender eval")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", help="JSON file (default RUN/eval.json)")
    args = p.parse_args(argv)
    model, bundle, tcfg, meta = load_run(args.run, args.device, args.checkpoint, not args.no_ema)
    if bundle.val is None:
        raise NeuralRenderError(f"{args.run}: method '{meta['method']}' has no eval split")
    metrics = evaluate_model(model, bundle.val, args.batch_size, next(model.parameters(), torch.empty(0)).device)
    result = {"method": meta["method"], "step": meta["step"], "items": len(bundle.val), "metrics": metrics,
              "lpips": lpips_available()[1]}
    out = Path(args.out or Path(args.run) / "eval.json")
    out.write_text(json.dumps(result, indent=2))
    print_table(f"eval of {args.run} (step {meta['step']}, {len(bundle.val)} items)",
                [(k, f"{v:.4f}") for k, v in metrics.items()] + [("note", result["lpips"]), ("json", str(out))])
    return 0


def cmd_render(argv: list[str]) -> int:
    from neuralrender.train.trainer import load_run

    p = _run_parser("neuralrender render")
    p.add_argument("--out", help="output file or folder (default RUN/renders)")
    p.add_argument("--path", default=None, help="camera path for view synthesis: orbit | spiral | a camera file")
    p.add_argument("--frames", type=int, default=60)
    args = p.parse_args(argv)
    model, bundle, tcfg, meta = load_run(args.run, args.device, args.checkpoint, not args.no_ema)
    out = Path(args.out) if args.out else Path(args.run) / "renders"
    written = model.render_run(bundle, out, path=args.path, frames=args.frames)
    for w in written:
        print(w)
    return 0


def cmd_scenes(argv: list[str]) -> int:
    try:
        from neuralrender.data import scenes
    except ImportError as e:
        raise NeuralRenderError(f"scenes are not available in this build ({e})") from None
    return scenes.cli(argv)


def cmd_faces(argv: list[str]) -> int:
    try:
        from neuralrender.faces import cli as faces_cli
    except ImportError as e:
        raise NeuralRenderError(f"face tools are not available in this build ({e})") from None
    return faces_cli.cli(argv)


def cmd_demo(argv: list[str]) -> int:
    from neuralrender.demo import main as demo_main

    return demo_main(argv)


HANDLERS = {"methods": cmd_methods, "info": cmd_info, "train": cmd_train, "eval": cmd_eval,
            "render": cmd_render, "scenes": cmd_scenes, "faces": cmd_faces, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    top = _top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    cmd, rest = argv[0], argv[1:]
    try:
        if cmd not in HANDLERS:
            close = difflib.get_close_matches(cmd, list(HANDLERS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise NeuralRenderError(f"unknown command '{cmd}'{hint}; commands: {', '.join(HANDLERS)}")
        return HANDLERS[cmd](rest)
    except NeuralRenderError as e:
        if debug:
            traceback.print_exc()
        print(f"neuralrender: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuralrender: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
