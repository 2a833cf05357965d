"""Condition -> video with a trained pix2pix / pix2pixhd / vid2vid run; for the labels -> scene task, render a
scene edited in 3D (an object moved, an object duplicated) and score where the object lands.

    neuralrender train vid2vid --task scene --out runs/vid2vid_scene        # train first (any of the three)
    python recipes/cond2video.py --run runs/vid2vid_scene --out out/scene    # held-out video
    python recipes/cond2video.py --run runs/vid2vid_scene --out out/edit --edit move --object globe --by -0.3 0 -1.1
    python recipes/cond2video.py --run runs/vid2vid_scene --out out/dup --edit duplicate --object can --by -1.1 0 0.6

Writes OUT.mp4 (condition | output | ground truth, or condition | output | real edited render for edits) and
OUT.png (frames). Edits re-render the semantic G-buffer of the edited scene from the run's camera path (its
held-out last 20%), feed it to the network and report the mask IoU of the edited object: a small segmentation
U-Net (neuralrender.methods._cond2d.fit_segmenter) trained on real renders only — the run's training frames and
renders of randomly rearranged scenes from the training cameras (data.conditions.random_layout_renders) —
labels the output, and its mask of the object is compared with the rasterized edited labels. The same segmenter's IoU on
the real edited render is printed as the ceiling. benchmarks/cond2d.py compare runs the same check for all
three methods.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.data.conditions import (  # noqa: E402
    SCENE_TASKS,
    edit_scene_spec,
    random_layout_renders,
    scene_camera_path,
    scene_condition,
)
from neuralrender.data.scenes import load_scene  # noqa: E402
from neuralrender.errors import NeuralRenderError, script_main  # noqa: E402
from neuralrender.io.images import save_grid  # noqa: E402
from neuralrender.io.video import write_video  # noqa: E402
from neuralrender.methods._cond2d import cond_to_rgb, fit_segmenter, mask_iou  # noqa: E402
from neuralrender.train.trainer import load_run  # noqa: E402


@script_main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--edit", choices=["none", "move", "duplicate"], default="none")
    ap.add_argument("--object", default="globe")
    ap.add_argument("--by", type=float, nargs=3, default=[-0.3, 0.0, -1.1])
    ap.add_argument("--seg-steps", type=int, default=3000, help="segmenter training steps")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
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
        video = model.generate_clip(cond, inst)
        panels = [cond, video, real]
    else:
        if cfg.task not in SCENE_TASKS:
            raise NeuralRenderError(f"{a.run}: 3D edits need a labels -> scene run (this one is '{cfg.task}')")
        spec = load_scene("default")
        spec = dataclasses.replace(spec, shadows=False)
        frames = cfg.frames or 100
        cams = scene_camera_path(spec, frames, width=cfg.size, height=cfg.size)
        n_test = math.ceil(0.2 * frames)
        cams = cams[frames - n_test:]
        k = bundle.info["num_classes"]
        seq = bundle.val.sequences[0]  # the scene as built (train may also hold `layouts`)
        n_train = len(seq) - n_test
        extra_img, extra_lab = random_layout_renders(spec, scene_camera_path(spec, frames, width=cfg.size,
                                                                             height=cfg.size)[:n_train])
        segment = fit_segmenter(torch.cat([seq.target[:n_train], extra_img]),
                                torch.cat([seq.instances[:n_train], extra_lab]), k, steps=a.seg_steps)
        new_spec, label = edit_scene_spec(spec, a.edit, a.object, a.by)
        cond, r = scene_condition(new_spec, cams, k, f"{new_spec.source} ({a.edit} {a.object})",
                                  cfg.task == "scene-gbuffer")
        cond = cond[None]
        video = model.generate_clip(cond, r.labels[None])
        iou = mask_iou(segment(video[0]), r.labels, label)
        ceiling = mask_iou(segment(r.images), r.labels, label)
        print(f"{a.edit} {a.object} by {a.by}: mask IoU of label {label} = {iou:.3f} over {n_test} held-out views "
              f"(the segmenter on the real edited render: {ceiling:.3f})")
        panels = [cond, video, r.images[None]]
    crgb = cond_to_rgb(panels[0][0], cfg.task)[None]
    strip = torch.cat([crgb] + panels[1:], -1)[0]
    write_video(strip, out.with_suffix(".mp4"), fps=8)
    save_grid(strip[:: max(1, strip.shape[0] // 4)], out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.mp4')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
