"""Condition -> video with a trained pix2pix / pix2pixhd / vid2vid run; for the labels -> scene task, render a
scene edited in 3D (an object moved, an object duplicated) and score where the object lands.

    neuralrender train vid2vid --task scene --out runs/vid2vid_scene        # train first (any of the three)
    python recipes/cond2video.py --run runs/vid2vid_scene --out out/scene    # held-out video
    python recipes/cond2video.py --run runs/vid2vid_scene --out out/edit --edit move --object globe --by 0.8 0 0
    python recipes/cond2video.py --run runs/vid2vid_scene --out out/dup --edit duplicate --object can --by -1.2 0 0.3

Writes OUT.mp4 (condition | output | ground truth, or condition | output for edits) and OUT.png (frames).
Edits re-render the semantic G-buffer of the edited scene from the run's camera path (its held-out last 20%),
feed it to the network and report the mask IoU of the edited object: the output's pixels are classified
into labels by the nearest per-label mean colour of the training frames, and compared with the
rasterized edited labels.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.data.conditions import label_condition, render_scene_labels, scene_camera_path  # noqa: E402
from neuralrender.data.scenes import load_scene  # noqa: E402
from neuralrender.errors import NeuralRenderError  # noqa: E402
from neuralrender.io.images import save_grid  # noqa: E402
from neuralrender.io.video import write_video  # noqa: E402
from neuralrender.train.trainer import load_run  # noqa: E402


def edited_spec(spec, edit: str, obj: str, by) -> tuple[object, int]:
    """The spec with object `obj` moved by `by` (edit='move') or a copy of it added at +by ('duplicate')."""
    names = [o.name for o in spec.objects]
    if obj not in names:
        raise NeuralRenderError(f"{spec.source}: no object '{obj}' (objects: {', '.join(names)})")
    o = spec.objects[names.index(obj)]
    moved = dataclasses.replace(o, translate=tuple(a + b for a, b in zip(o.translate, by)))
    objs = list(spec.objects)
    if edit == "move":
        objs[names.index(obj)] = moved
    else:
        objs.append(dataclasses.replace(moved, name=obj + "_copy"))
    return dataclasses.replace(spec, objects=objs), o.label


def label_classifier(images: torch.Tensor, labels: torch.Tensor, k: int):
    """Nearest-mean-colour classifier fit on frames [N,3,H,W] with labels [N,1,H,W] -> fn(images) -> labels."""
    px, lab = images.permute(0, 2, 3, 1).reshape(-1, 3), labels.reshape(-1)
    means = torch.stack([px[lab == c].mean(0) if bool((lab == c).any()) else torch.full((3,), 9.0) for c in range(k)])
    return lambda x: torch.cdist(x.permute(0, 2, 3, 1).reshape(-1, 3), means).argmin(1).reshape(x.shape[0], 1, *x.shape[-2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--edit", choices=["none", "move", "duplicate"], default="none")
    ap.add_argument("--object", default="globe")
    ap.add_argument("--by", type=float, nargs=3, default=[0.8, 0.0, 0.0])
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    model, bundle, _, _ = load_run(a.run, device=a.device)
    cfg = model.cfg
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if a.edit == "none":
        ds = bundle.val
        items = [ds[i] for i in range(len(ds))]
        cond = torch.cat([it["cond"] for it in items])[None]
        real = torch.cat([it["image"] for it in items])[None]
        inst = torch.cat([it["inst"] for it in items])[None]
        video = model.generate_clip(cond, inst) if cfg.__class__.__name__ == "Pix2PixHDConfig" else model.generate_clip(cond)
        panels = [cond, video, real]
    else:
        if cfg.task != "scene":
            raise NeuralRenderError(f"{a.run}: 3D edits need a labels -> scene run (this one is '{cfg.task}')")
        spec = load_scene("default")
        spec = dataclasses.replace(spec, shadows=False)
        frames = cfg.frames or 100
        cams = scene_camera_path(spec, frames, width=cfg.size, height=cfg.size)
        n_test = math.ceil(0.2 * frames)
        cams = cams[frames - n_test:]
        k = bundle.info["num_classes"]
        train_seq = bundle.train.sequences[0]
        classify = label_classifier(train_seq.target, train_seq.instances, k)
        new_spec, label = edited_spec(spec, a.edit, a.object, a.by)
        r = render_scene_labels(new_spec, cams)
        cond = label_condition(r.labels, k)[None]
        inst = r.labels[None]
        video = model.generate_clip(cond, inst) if cfg.__class__.__name__ == "Pix2PixHDConfig" else model.generate_clip(cond)
        pred = classify(video[0])
        want, got = r.labels == label, pred == label
        iou = (want & got).sum().item() / max(1, (want | got).sum().item())
        print(f"{a.edit} {a.object} by {a.by}: mask IoU of label {label} = {iou:.3f} over {n_test} held-out views")
        panels = [cond, video]
    from neuralrender.methods._cond2d import cond_to_rgb

    crgb = cond_to_rgb(panels[0][0], cfg.task)[None]
    strip = torch.cat([crgb] + panels[1:], -1)[0]
    write_video(strip, out.with_suffix(".mp4"), fps=8)
    save_grid(strip[:: max(1, strip.shape[0] // 4)], out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.mp4')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
