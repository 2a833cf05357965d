"""Posed-image datasets in the transforms.json format (NeRF / instant-ngp / nerfstudio).

On disk (camera-to-world, OpenGL camera axes: x right, y up, z backward):

    {"fl_x", "fl_y", "cx", "cy", "w", "h"}   shared intrinsics in pixels (or per frame), or
    "camera_angle_x" [, "camera_angle_y"]     horizontal FOV in radians (centred principal point)
    "k1", "k2", "p1", "p2"                    OpenCV distortion (optional, shared or per frame)
    "frames": [{"file_path", "transform_matrix" 4x4, optional "depth_file_path", "mask_path",
                "label_path", "split" ("train" | "val" | "test"), per-frame intrinsics}, ...]
    optional: "train_filenames"/"val_filenames"/"test_filenames", "mesh_path",
              "depth_unit_scale_factor" (metres per depth code, default 1e-3), and anything else
              (instant-ngp's "aabb_scale", "scale", "offset", ...) which is kept in `meta`, unapplied.

Inside the library cameras are OpenCV world-to-camera `Cameras`; the conversion happens here only,
through graphics.cameras.opengl_c2w_to_opencv / opencv_to_opengl_c2w. Every field and file is
validated; errors are DataError naming the json file, the frame (index and file_path) and the field.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from neuralrender.data.splits import SPLITS, every_nth_indices
from neuralrender.errors import DataError
from neuralrender.graphics.cameras import Cameras, opencv_to_opengl_c2w, opengl_c2w_to_opencv
from neuralrender.paths import resolve_data_path

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".exr", ".bmp", ".tif", ".tiff", ".webp")
_INTR = ("fl_x", "fl_y", "cx", "cy", "w", "h")
_DIST = ("k1", "k2", "p1", "p2")
_UNSUPPORTED_DIST = ("k3", "k4", "p3", "p4")
_SIDE_KEYS = {"depth": "depth_file_path", "mask": "mask_path", "labels": "label_path"}


@dataclass
class PosedData:
    """A loaded posed-image dataset (one split).

    cameras: OpenCV `Cameras` [N] (float32); c2w float64 [N,4,4] exactly as in the file;
    image_paths / file_paths [N]; side_paths {"depth"|"mask"|"labels": [N] Path or None};
    frame_ids [N] indices of the frames in the json; splits [N] per-frame split names;
    meta: the json's other top-level fields; mesh_path: resolved Path or None.
    """

    root: Path
    json_path: Path
    cameras: Cameras
    c2w: torch.Tensor
    file_paths: list[str]
    image_paths: list[Path]
    side_paths: dict[str, list[Path | None]]
    frame_ids: list[int]
    splits: list[str]
    meta: dict = field(default_factory=dict)
    mesh_path: Path | None = None
    depth_unit_scale: float = 1e-3

    def __len__(self) -> int:
        return len(self.image_paths)

    @property
    def width(self) -> int:
        return self.cameras.width

    @property
    def height(self) -> int:
        return self.cameras.height


# ---------------------------------------------------------------------------------------------
# locating the json


def find_transforms(path: str | os.PathLike, split: str = "all") -> list[Path]:
    """The json file(s) for a dataset path: a .json file itself; in a folder transforms.json, else
    NeRF-style transforms_{train,val,test}.json (the one of `split`, all three for "all"), else the
    only transforms*.json whose first image exists."""
    p = resolve_data_path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DataError(p, "posed dataset not found (expected a folder or a transforms .json file)",
                        field="file")
    if (p / "transforms.json").is_file():
        return [p / "transforms.json"]
    per_split = {s: p / f"transforms_{s}.json" for s in ("train", "val", "test")}
    if any(f.is_file() for f in per_split.values()):
        if split == "all":
            return [f for f in per_split.values() if f.is_file()]
        if not per_split.get(split, p / "none").is_file():
            raise DataError(p, f"no transforms_{split}.json for split {split!r}", field="split")
        return [per_split[split]]
    cands = sorted(p.glob("transforms*.json"))
    usable = [c for c in cands if _first_image_exists(c)]
    if len(usable) == 1:
        return usable
    if not cands:
        raise DataError(p, "no transforms*.json in the folder", field="file")
    raise DataError(p, f"several transforms files, pass one: {[c.name for c in cands]}", field="file")


def _first_image_exists(js: Path) -> bool:
    try:
        fp = json.loads(js.read_text())["frames"][0]["file_path"]
        return _image_file(js.parent, fp) is not None
    except Exception:
        return False


def _image_file(root: Path, file_path: str) -> Path | None:
    """The image file for a frame's file_path (NeRF-synthetic paths may omit the extension)."""
    p = root / file_path
    if p.is_file():
        return p
    if p.suffix.lower() not in IMAGE_EXTS:
        for ext in (".png", ".jpg", ".jpeg"):
            if p.with_name(p.name + ext).is_file():
                return p.with_name(p.name + ext)
    return None


# ---------------------------------------------------------------------------------------------
# validation helpers


def _inside(root: Path, rel, js: Path, where: str, fld: str) -> Path:
    """Resolve rel against root, refusing absolute paths and paths that escape root."""
    if not isinstance(rel, str) or not rel:
        raise DataError(js, f"{where}: expected a relative path string, got {rel!r}", field=fld)
    if os.path.isabs(rel) or rel.startswith("~"):
        raise DataError(js, f"{where}: absolute path {rel!r} not allowed; paths are relative to "
                            f"the dataset folder", field=fld)
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise DataError(js, f"{where}: path {rel!r} escapes the dataset folder {root}", field=fld)
    return root / rel


def _number(js: Path, where: str, fld: str, v, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise DataError(js, f"{where}: expected a finite number, got {v!r}", field=fld)
    if positive and v <= 0:
        raise DataError(js, f"{where}: must be positive, got {v}", field=fld)
    return float(v)


def _matrix(js: Path, where: str, m) -> np.ndarray:
    fld = "transform_matrix"
    try:
        a = np.asarray(m, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(js, f"{where}: not a numeric matrix ({e})", field=fld) from e
    if a.shape != (4, 4):
        raise DataError(js, f"{where}: expected a 4x4 matrix, got shape {a.shape}", field=fld)
    if not np.isfinite(a).all():
        raise DataError(js, f"{where}: matrix holds NaN or infinity", field=fld)
    if np.abs(a[3] - [0, 0, 0, 1]).max() > 1e-6:
        raise DataError(js, f"{where}: last row must be [0, 0, 0, 1], got {a[3].tolist()}", field=fld)
    r = a[:3, :3]
    err = np.abs(r.T @ r - np.eye(3)).max()
    if err > 1e-3 or np.linalg.det(r) < 0:
        raise DataError(js, f"{where}: rotation part is not a rotation (|R^T R - I| = {err:.2g}, "
                            f"det = {np.linalg.det(r):.3g})", field=fld)
    return a


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:
        raise DataError(path, f"cannot read image: {e}", field="file") from e


# ---------------------------------------------------------------------------------------------
# loading


def load_transforms(path: str | os.PathLike, split: str = "all", holdout_every: int = 8,
                    check_images: bool = True) -> PosedData:
    """Load and validate a transforms.json dataset -> PosedData for `split`.

    path: a json file or a folder (see `find_transforms`); "shared:" prefixes allowed.
    split: "train" | "val" | "test" | "all". Sources of the split, in order: NeRF-style
      transforms_{split}.json files; *_filenames lists in the json; per-frame "split" fields; else every
      `holdout_every`-th frame (0, N, 2N, ...) is held out as test (and val), the rest train.
    check_images: check every image / side file exists and has the stated size (reads headers only).
    """
    if split not in SPLITS:
        raise DataError(path, f"unknown split {split!r}; valid: {', '.join(SPLITS)}", field="split")
    files = find_transforms(path, split)
    parts = [_load_one(js, check_images) for js in files]
    if len(files) > 1 or files[0].stem in ("transforms_train", "transforms_val", "transforms_test"):
        for part, js in zip(parts, files):
            part["splits"] = [js.stem.split("_", 1)[1]] * len(part["frames"])
    out = parts[0]
    for part in parts[1:]:
        _merge(out, part)
    js = files[0]
    n = len(out["frames"])
    splits = out["splits"]
    if splits is None:
        splits = ["train"] * n
        for i in every_nth_indices(n, "test", holdout_every).tolist():
            splits[i] = "test"
    if split == "all":
        keep = list(range(n))
    elif split == "val" and "val" not in splits:
        keep = [i for i in range(n) if splits[i] == "test"]  # NeRF practice: val = test when absent
    else:
        keep = [i for i in range(n) if splits[i] == split]
    if not keep:
        raise DataError(js, f"split {split!r} has no frames (splits present: {sorted(set(splits))})",
                        field="split")

    fr = [out["frames"][i] for i in keep]
    c2w = torch.from_numpy(np.stack([f["c2w"] for f in fr]))
    R, t = opengl_c2w_to_opencv(c2w)
    K = torch.zeros(len(fr), 3, 3, dtype=torch.float64)
    for k, f in enumerate(fr):
        fx, fy, cx, cy = f["intr"][:4]
        K[k] = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)
    dist = torch.tensor([f["dist"] for f in fr], dtype=torch.float64)
    dist = dist.float() if bool(dist.abs().gt(0).any()) else None
    w, h = fr[0]["intr"][4:]
    cams = Cameras(K=K.float(), R=R.float(), t=t.float(), width=int(w), height=int(h), dist=dist)
    return PosedData(
        root=js.parent,
        json_path=js,
        cameras=cams,
        c2w=c2w,
        file_paths=[f["file_path"] for f in fr],
        image_paths=[f["image"] for f in fr],
        side_paths={k: [f["side"][k] for f in fr] for k in _SIDE_KEYS},
        frame_ids=keep,
        splits=[splits[i] for i in keep],
        meta=out["meta"],
        mesh_path=out["mesh_path"],
        depth_unit_scale=out["depth_unit_scale"],
    )


def _merge(a: dict, b: dict):
    if a["frames"] and b["frames"] and a["frames"][0]["intr"][4:] != b["frames"][0]["intr"][4:]:
        raise DataError(b["json"], "image size differs from the other split files", field="w/h")
    a["frames"] += b["frames"]
    a["splits"] += b["splits"]


def _load_one(js: Path, check_images: bool) -> dict:
    try:
        d = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(js, f"cannot read file: {e}", field="file") from e
    except json.JSONDecodeError as e:
        raise DataError(js, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}", field="file") from e
    if not isinstance(d, dict):
        raise DataError(js, "top level must be a JSON object", field="file")
    frames = d.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DataError(js, "missing or empty 'frames' list", field="frames")
    root = js.parent
    model = d.get("camera_model", "OPENCV")
    if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        raise DataError(js, f"camera_model {model!r} is not supported (pinhole with k1 k2 p1 p2 only)",
                        field="camera_model")

    out_frames = []
    for i, f in enumerate(frames):
        if not isinstance(f, dict):
            raise DataError(js, f"frames[{i}]: expected an object", field="frames")
        where = f"frames[{i}]"
        fp = f.get("file_path")
        img_rel = _inside(root, fp, js, where, "file_path")
        where = f"frames[{i}] ({fp})"
        img = _image_file(root, fp)
        if img is None:
            raise DataError(js, f"{where}: image file {img_rel} not found", field="file_path")
        if "transform_matrix" not in f:
            raise DataError(js, f"{where}: missing", field="transform_matrix")
        c2w = _matrix(js, where, f["transform_matrix"])
        intr, dist = _intrinsics(js, d, f, where, img if check_images else None)
        side = {}
        for name, key in _SIDE_KEYS.items():
            rel = f.get(key)
            if rel is None:
                side[name] = None
                continue
            sp = _inside(root, rel, js, where, key)
            if not sp.is_file():
                raise DataError(js, f"{where}: {name} file {sp} not found", field=key)
            if check_images:
                size = _image_size(sp)
                if size != (int(intr[4]), int(intr[5])):
                    raise DataError(js, f"{where}: {name} image {sp.name} is {size[0]}x{size[1]}, "
                                        f"expected {int(intr[4])}x{int(intr[5])}", field=key)
            side[name] = sp
        out_frames.append({"file_path": fp, "image": img, "c2w": c2w, "intr": intr, "dist": dist,
                           "side": side})

    sizes = {tuple(f["intr"][4:]) for f in out_frames}
    if len(sizes) > 1:
        raise DataError(js, f"frames have different image sizes {sorted(sizes)}; one size per dataset",
                        field="w/h")

    splits = _splits(js, d, frames)
    mesh_path = None
    if d.get("mesh_path") is not None:
        mp = d["mesh_path"]
        if isinstance(mp, str) and mp.startswith("shared:"):
            mesh_path = resolve_data_path(mp)
        else:
            mesh_path = _inside(root, mp, js, "top level", "mesh_path")
        if not mesh_path.is_file():
            raise DataError(js, f"mesh file {mesh_path} not found", field="mesh_path")
    scale = d.get("depth_unit_scale_factor", 1e-3)
    scale = _number(js, "top level", "depth_unit_scale_factor", scale, positive=True)
    known = set(_INTR) | set(_DIST) | {"frames", "camera_angle_x", "camera_angle_y", "mesh_path",
                                        "depth_unit_scale_factor", "camera_model", "train_filenames",
                                        "val_filenames", "test_filenames"}
    meta = {k: v for k, v in d.items() if k not in known}
    return {"json": js, "frames": out_frames, "splits": splits, "meta": meta, "mesh_path": mesh_path,
            "depth_unit_scale": scale}


def _intrinsics(js: Path, d: dict, f: dict, where: str, img: Path | None):
    """(fl_x, fl_y, cx, cy, w, h), (k1, k2, p1, p2) of a frame (frame keys override shared keys)."""
    get = lambda k: f.get(k, d.get(k))  # noqa: E731
    w, h = get("w"), get("h")
    if img is not None:
        iw, ih = _image_size(img)
        if w is not None and h is not None:
            w = _number(js, where, "w", w, positive=True)
            h = _number(js, where, "h", h, positive=True)
            if (int(w), int(h)) != (iw, ih):
                raise DataError(js, f"{where}: image {img.name} is {iw}x{ih}, the json says {int(w)}x{int(h)}",
                                field="w/h")
        w, h = iw, ih
    if w is None or h is None:
        raise DataError(js, f"{where}: image size unknown (give w and h)", field="w/h")
    w = _number(js, where, "w", w, positive=True)
    h = _number(js, where, "h", h, positive=True)
    if w != int(w) or h != int(h):
        raise DataError(js, f"{where}: image size must be whole pixels, got {w}x{h}", field="w/h")
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None and fy is None:
        ax, ay = get("camera_angle_x"), get("camera_angle_y")
        if ax is None and ay is None:
            raise DataError(js, f"{where}: no focal length (fl_x/fl_y or camera_angle_x)", field="fl_x")
        if ax is not None:
            fx = 0.5 * w / math.tan(0.5 * _number(js, where, "camera_angle_x", ax, positive=True))
        if ay is not None:
            fy = 0.5 * h / math.tan(0.5 * _number(js, where, "camera_angle_y", ay, positive=True))
        fx = fy if fx is None else fx
        fy = fx if fy is None else fy
    fx = _number(js, where, "fl_x", fx if fx is not None else fy, positive=True)
    fy = _number(js, where, "fl_y", fy if fy is not None else fx, positive=True)
    cx = _number(js, where, "cx", get("cx") if get("cx") is not None else w / 2)
    cy = _number(js, where, "cy", get("cy") if get("cy") is not None else h / 2)
    for k in _UNSUPPORTED_DIST:
        if get(k) not in (None, 0, 0.0):
            raise DataError(js, f"{where}: distortion coefficient {k} is not supported (k1 k2 p1 p2 only)",
                            field=k)
    dist = tuple(_number(js, where, k, get(k) if get(k) is not None else 0.0) for k in _DIST)
    return (fx, fy, cx, cy, w, h), dist


def _splits(js: Path, d: dict, frames: list) -> list[str] | None:
    lists = {s: d.get(f"{s}_filenames") for s in ("train", "val", "test")}
    if any(v is not None for v in lists.values()):
        owner = {}
        for s, names in lists.items():
            if names is None:
                continue
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DataError(js, "expected a list of file paths", field=f"{s}_filenames")
            for n in names:
                owner[os.path.normpath(n)] = s
        out = []
        for i, f in enumerate(frames):
            s = owner.get(os.path.normpath(f["file_path"]))
            if s is None:
                raise DataError(js, f"frames[{i}] ({f['file_path']}): in none of the *_filenames lists",
                                field="split")
            out.append(s)
        return out
    has = ["split" in f for f in frames]
    if not any(has):
        return None
    out = []
    for i, f in enumerate(frames):
        s = f.get("split")
        if s not in ("train", "val", "test"):
            raise DataError(js, f"frames[{i}] ({f['file_path']}): split must be train, val or test, got {s!r}",
                            field="split")
        out.append(s)
    return out


# ---------------------------------------------------------------------------------------------
# writing


def write_transforms(path: str | os.PathLike, cameras: Cameras, frames: list[dict],
                     extra: dict | None = None) -> Path:
    """Write a transforms.json for `cameras` [N] and N frame dicts (each with "file_path" and
    optionally "depth_file_path", "mask_path", "label_path", "split", other keys kept).

    Intrinsics and distortion are written once at the top level when all frames share them, else per
    frame; matrices are converted in float64 so a re-load gives back the cameras to ~1e-7.
    """
    n = cameras.batch_size
    if len(frames) != n:
        raise ValueError(f"{n} cameras but {len(frames)} frames")
    R = cameras.R.detach().double().cpu()
    t = cameras.t.detach().double().cpu()
    c2w = opencv_to_opengl_c2w(R, t)
    K = cameras.K.detach().double().cpu()
    dist = cameras.dist.detach().double().cpu() if cameras.dist is not None else torch.zeros(n, 4, dtype=torch.float64)
    intr = torch.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], 1)
    if bool(K[:, 0, 1].abs().gt(1e-9).any()):
        raise ValueError("transforms.json cannot store skewed intrinsics (K[0,1] != 0)")
    shared = bool((intr == intr[:1]).all()) and bool((dist == dist[:1]).all())
    doc: dict = {}
    if shared:
        doc.update(zip(("fl_x", "fl_y", "cx", "cy"), intr[0].tolist()))
    doc["w"], doc["h"] = cameras.width, cameras.height
    if shared and bool(dist.abs().gt(0).any()):
        doc.update(zip(_DIST, dist[0].tolist()))
    doc.update(extra or {})
    out = []
    for i, f in enumerate(frames):
        fr = dict(f)
        if "file_path" not in fr:
            raise ValueError(f"frames[{i}] has no file_path")
        if not shared:
            fr.update(zip(("fl_x", "fl_y", "cx", "cy"), intr[i].tolist()))
            if bool(dist[i].abs().gt(0).any()):
                fr.update(zip(_DIST, dist[i].tolist()))
        fr["transform_matrix"] = c2w[i].tolist()
        out.append(fr)
    doc["frames"] = out
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def save_posed_dataset(root: str | os.PathLike, cameras: Cameras, images: torch.Tensor,
                       splits: list[str] | None = None, depth: torch.Tensor | None = None,
                       masks: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                       mesh_path: str | None = None, extra: dict | None = None,
                       names: list[str] | None = None) -> Path:
    """Write images [N,3,H,W] in [0,1] as images/<name>.png (+ depth/ 16-bit PNG, masks/, labels/
    for [N,1,H,W] tensors given) and root/transforms.json. Returns the json path."""
    from neuralrender.io.images import save_depth, save_image, save_labels

    root = Path(root)
    n = images.shape[0]
    if images.shape[-2:] != (cameras.height, cameras.width) or n != cameras.batch_size:
        raise ValueError(f"images {tuple(images.shape)} do not match {cameras.batch_size} cameras of "
                         f"{cameras.width}x{cameras.height}")
    names = names or [f"{i:04d}" for i in range(n)]
    frames = []
    for i in range(n):
        f = {"file_path": f"images/{names[i]}.png"}
        save_image(images[i], root / f["file_path"])
        if depth is not None:
            f["depth_file_path"] = f"depth/{names[i]}.png"
            save_depth(depth[i], root / f["depth_file_path"])
        if masks is not None:
            f["mask_path"] = f"masks/{names[i]}.png"
            save_image(masks[i].float().reshape(1, *masks.shape[-2:]), root / f["mask_path"])
        if labels is not None:
            f["label_path"] = f"labels/{names[i]}.png"
            save_labels(labels[i], root / f["label_path"])
        if splits is not None:
            f["split"] = splits[i]
        frames.append(f)
    ex = dict(extra or {})
    if mesh_path is not None:
        ex["mesh_path"] = str(mesh_path)
    if depth is not None:
        ex.setdefault("depth_unit_scale_factor", 1e-3)
    return write_transforms(root / "transforms.json", cameras, frames, ex)
