"""Edit a trained neural-textures scene and re-render it: geometry edits and neural-texture edits.

    python recipes/edit_scene.py --run runs/demo/neural-textures --out runs/edits            # a default edit
    python recipes/edit_scene.py --run RUN --list                                             # objects in the scene
    python recipes/edit_scene.py --run RUN --move 2:0.4,0,0 --rotate 2:45 --scale 1:1.3
    python recipes/edit_scene.py --run RUN --duplicate 2:0,0,1.2 --deform wave
    python recipes/edit_scene.py --run RUN --copy-texture 0.1,0.1,0.3,0.3:0.6,0.6,0.8,0.8
    python recipes/edit_scene.py --run RUN --paint-from OTHER_RUN:0.1,0.1,0.4,0.4:0.5,0.5,0.8,0.8
    python recipes/edit_scene.py --run RUN --mask-texture 0.5,0.5,1,1

Objects are the mesh's parts (label = part index, see --list). UV boxes are u0,v0,u1,v1 in [0,1] with v up,
in the model's texture atlas (each object has its own tile: --list prints the tiles). --paint-from copies
features from another trained neural-textures run (another scene or object) into this texture. Without
edit flags the recipe duplicates the largest object next to itself and copies a texture patch.
Writes OUT/before_after.png (rows: before, after, for a few test views) and OUT/before_after.mp4 (orbit,
before | after side by side).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.errors import NeuralRenderError, script_main  # noqa: E402
from neuralrender.methods import editing  # noqa: E402


def _floats(s: str, n: int | None = None, what: str = "") -> list[float]:
    try:
        v = [float(x) for x in s.split(",")]
    except ValueError:
        raise NeuralRenderError(f"{what}: expected comma-separated numbers, got '{s}'") from None
    if n is not None and len(v) != n:
        raise NeuralRenderError(f"{what}: expected {n} numbers, got '{s}'")
    return v


def _label_arg(s: str, n: int, what: str) -> tuple[int, list[float]]:
    if ":" not in s:
        raise NeuralRenderError(f"{what}: expected LABEL:VALUES, got '{s}'")
    lab, vals = s.split(":", 1)
    return int(lab), _floats(vals, n, what)


def list_objects(model) -> list[tuple[str, str]]:
    rows = []
    for lab in torch.unique(model.labels).tolist():
        sel = model.labels == lab
        c = editing.object_center(model, lab)
        uv = model.uvs[model.face_uvs[sel]].reshape(-1, 2)
        lo, hi = uv.min(0).values, uv.max(0).values
        rows.append((f"object {lab}", f"{int(sel.sum())} faces, centre ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}), "
                                      f"UV tile ({lo[0]:.2f}, {lo[1]:.2f}, {hi[0]:.2f}, {hi[1]:.2f})"))
    return rows


def apply_edits(model, args) -> list[str]:
    done = []
    for s in args.move or []:
        lab, d = _label_arg(s, 3, "--move")
        editing.transform_object(model, lab, editing.transform_matrix(translate=d))
        done.append(f"moved object {lab} by {d}")
    for s in args.rotate or []:
        lab, (deg,) = _label_arg(s, 1, "--rotate")
        piv = editing.object_center(model, lab).tolist()
        editing.transform_object(model, lab, editing.transform_matrix(rotate_deg=(0, deg, 0), pivot=piv))
        done.append(f"rotated object {lab} by {deg} deg about the vertical axis")
    for s in args.scale or []:
        lab, (sc,) = _label_arg(s, 1, "--scale")
        piv = editing.object_center(model, lab).tolist()
        editing.transform_object(model, lab, editing.transform_matrix(scale=sc, pivot=piv))
        done.append(f"scaled object {lab} by {sc}")
    for s in args.duplicate or []:
        lab, d = _label_arg(s, 3, "--duplicate")
        new = editing.duplicate_object(model, lab, editing.transform_matrix(translate=d))
        done.append(f"duplicated object {lab} (offset {d}) as object {new}")
    if args.deform == "wave":
        lo, hi = model.verts.min(0).values, model.verts.max(0).values
        amp = 0.03 * float((hi - lo).max())
        editing.deform_vertices(model, lambda v: v + amp * torch.stack(
            [torch.sin(6 * v[:, 1]), torch.zeros_like(v[:, 0]), torch.cos(6 * v[:, 0])], -1))
        done.append("deformed every vertex by a sine wave")
    for s in args.copy_texture or []:
        src, dst = s.split(":")
        editing.copy_texture_region(model, _floats(src, 4, "--copy-texture"), _floats(dst, 4, "--copy-texture"))
        done.append(f"copied texture box {src} onto {dst}")
    for s in args.paint_from or []:
        parts = s.rsplit(":", 2)
        if len(parts) != 3:
            raise NeuralRenderError(f"--paint-from: expected RUN:SRC_BOX:DST_BOX, got '{s}'")
        from neuralrender.train.trainer import load_run

        other, _, _, _ = load_run(parts[0], device="cpu")
        patch = editing.texture_region(other, _floats(parts[1], 4, "--paint-from"))
        editing.paint_texture(model, _floats(parts[2], 4, "--paint-from"), patch)
        done.append(f"painted box {parts[2]} with features of {parts[0]} box {parts[1]}")
    for s in args.mask_texture or []:
        editing.mask_texture(model, _floats(s, 4, "--mask-texture"))
        done.append(f"masked texture box {s} to the mean feature")
    return done


@script_main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a trained neural-textures (or pix2pix-gbuffer) run")
    p.add_argument("--out", default=None, help="output folder (default RUN/edits)")
    p.add_argument("--list", action="store_true", help="list the objects and their UV tiles, then stop")
    p.add_argument("--move", action="append", metavar="LABEL:DX,DY,DZ")
    p.add_argument("--rotate", action="append", metavar="LABEL:DEG")
    p.add_argument("--scale", action="append", metavar="LABEL:S")
    p.add_argument("--duplicate", action="append", metavar="LABEL:DX,DY,DZ")
    p.add_argument("--deform", choices=["wave"])
    p.add_argument("--copy-texture", action="append", metavar="SRC_BOX:DST_BOX")
    p.add_argument("--paint-from", action="append", metavar="RUN:SRC_BOX:DST_BOX")
    p.add_argument("--mask-texture", action="append", metavar="BOX")
    p.add_argument("--frames", type=int, default=36)
    args = p.parse_args(argv)
    from torch.utils.data import default_collate

    from neuralrender.data.view_pairs import camera_path
    from neuralrender.io.images import save_grid
    from neuralrender.io.video import write_video
    from neuralrender.train.progress import print_table
    from neuralrender.train.trainer import load_run, to_device

    model, bundle, _, _ = load_run(args.run)
    if args.list:
        print_table(f"objects of {args.run}", list_objects(model))
        return 0
    out = Path(args.out or Path(args.run) / "edits")
    dev = next(model.parameters()).device
    ds = bundle.val if bundle.val is not None else bundle.train
    batch = to_device(default_collate([ds[i] for i in range(min(4, len(ds)))]), dev)
    cams = model.cameras_of(batch)
    path = camera_path(bundle.info["train_cameras"], "orbit", args.frames, bundle.info["target"])
    with torch.no_grad():
        before, before_v = model(cams)["rgb"].cpu(), model.render_cameras(path)
        edits = [a for a in ("move", "rotate", "scale", "duplicate", "deform", "copy_texture", "paint_from",
                             "mask_texture") if getattr(args, a)]
        if not edits:  # the default edit
            counts = torch.bincount(model.labels)
            lab = int(counts.argmax())
            lo, hi = model.verts.min(0).values, model.verts.max(0).values
            args.duplicate = [f"{lab}:{0.35 * float(hi[0] - lo[0]):.3f},0,0"]
            if hasattr(model, "texture"):
                args.copy_texture = ["0.05,0.55,0.2,0.7:0.25,0.55,0.4,0.7"]
        done = apply_edits(model, args)
        after, after_v = model(cams)["rgb"].cpu(), model.render_cameras(path)
    out.mkdir(parents=True, exist_ok=True)
    grid = save_grid(torch.cat([before, after], 0), out / "before_after.png", nrow=before.shape[0])
    video = out / "before_after.mp4"
    write_video(torch.cat([before_v, after_v], -1), video, fps=12)
    print_table(f"scene edits of {args.run}", [("edit", d) for d in done] + [("images", str(grid)),
                                                                            ("video", str(video))])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
