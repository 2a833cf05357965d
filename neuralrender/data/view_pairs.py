"""Training pairs for view synthesis from one posed dataset: a target view and its nearest source views.

DeepVoxels lifts the source views into its grid and renders the target; pix2pix-nearest maps the nearest
source image (plus the camera delta) to the target. "Nearest" compares camera centres (in units of the
median distance of the cameras to their mean) and viewing directions (1 - cos of the angle between optical
axes), so a view from the same place looking elsewhere is far.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.cameras import Cameras


def camera_tensors(cameras: Cameras, i: int) -> dict[str, torch.Tensor]:
    """{"K" [3,3], "R" [3,3], "t" [3]} of camera i: what a dataset item carries (default_collate batches it)."""
    return {"K": cameras.K[i].clone(), "R": cameras.R[i].clone(), "t": cameras.t[i].clone()}


def cameras_from_batch(K: torch.Tensor, R: torch.Tensor, t: torch.Tensor, width: int, height: int) -> Cameras:
    """Cameras from batched K [B,3,3], R [B,3,3], t [B,3] (the inverse of `camera_tensors` + collate)."""
    return Cameras(K=K, R=R, t=t, width=int(width), height=int(height))


def view_distance(query: Cameras, pool: Cameras) -> torch.Tensor:
    """[Q,P] distance: |c_q - c_p| / scale + (1 - cos(angle between optical axes)), scale = the median
    distance of the pool's camera centres to their mean (so the two terms are comparable)."""
    cq, cp = query.centers, pool.centers
    scale = (cp - cp.mean(0)).norm(dim=-1).median().clamp_min(1e-8)
    zq, zp = query.R[:, 2], pool.R[:, 2]  # optical axes in world space (third row of R)
    return torch.cdist(cq, cp) / scale + (1 - zq @ zp.T)


def nearest_views(query: Cameras, pool: Cameras, k: int, exclude_same: bool = False, same_tol: float = 1e-5) -> torch.Tensor:
    """Indices [Q,k] into `pool` of the k nearest cameras to each query camera (nearest first).

    exclude_same: skip pool cameras identical to the query (distance < same_tol): a training view is never
    its own source.
    """
    d = view_distance(query, pool)
    if exclude_same:
        d = d.masked_fill(d < same_tol, float("inf"))
    avail = int(torch.isfinite(d).sum(1).min()) if d.numel() else 0
    if k > avail:
        raise NeuralRenderError(f"nearest_views: asked for {k} source views but only {avail} are available")
    return d.topk(k, dim=1, largest=False).indices


class ViewPairs(Dataset):
    """Items of `targets` (a PosedImageDataset split) each with its `n_sources` nearest views of `sources`
    (the training split; when it is the same dataset object a view is never its own source).

    Item: {"image" [3,H,W], "K" [3,3], "R" [3,3], "t" [3], "index" int, ("depth" [1,H,W], "mask" [1,H,W]
    when the dataset has them), "src_image" [S,3,H,W], "src_K" [S,3,3], "src_R" [S,3,3], "src_t" [S,3],
    "src_index" [S] (indices into `sources`)}.
    """

    def __init__(self, targets, sources, n_sources: int = 1, with_sources: bool = True):
        self.targets, self.sources = targets, sources
        self.n_sources, self.with_sources = int(n_sources), with_sources
        same = targets is sources
        need = self.n_sources + (1 if same else 0)
        where = getattr(getattr(sources, "data", None), "json_path", "<dataset>")
        if len(sources) < need:
            raise DataError(where, f"{len(sources)} training view(s), need at least {need} for "
                                   f"{self.n_sources} source view(s) per target", field="frames")
        if self.n_sources < 1:
            raise NeuralRenderError(f"ViewPairs: n_sources must be >= 1, got {n_sources}")
        tc, sc = targets.cameras, sources.cameras
        if (tc.width, tc.height) != (sc.width, sc.height):
            raise DataError(where, f"source views are {sc.width}x{sc.height} but targets {tc.width}x{tc.height}",
                            field="w/h")
        self.neighbours = nearest_views(tc, sc, self.n_sources, exclude_same=same)

    @property
    def cameras(self) -> Cameras:
        return self.targets.cameras

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        it = self.targets[i]
        item = {"image": it["image"], "index": i, **camera_tensors(self.targets.cameras, i)}
        for k in ("depth", "mask"):
            if k in it:
                item[k] = it[k]
        if self.with_sources:
            idx = self.neighbours[i]
            src = [self.sources[int(j)] for j in idx]
            item["src_image"] = torch.stack([s["image"] for s in src])
            cams = self.sources.cameras
            item["src_K"], item["src_R"], item["src_t"] = cams.K[idx].clone(), cams.R[idx].clone(), cams.t[idx].clone()
            item["src_index"] = idx.clone()
        return item


# ---------------------------------------------------------------------------------------------
# a posed dataset as view pairs, with the scene box and camera paths of view-synthesis methods


def downscale_for(width: int, height: int, image_size: int) -> int:
    """The largest integer factor dividing both sides that keeps the longer side >= image_size (>= 1)."""
    best = 1
    for d in range(1, max(width, height) + 1):
        if width % d == 0 and height % d == 0 and max(width, height) // d >= image_size:
            best = d
    return best


def resolve_posed(data: str | None) -> str:
    """A dataset argument -> a transforms.json folder: an existing path ('shared:...' allowed) as is;
    otherwise a built-in scene name (scenes/*.yaml), rendered on first use into runs/scenes/<name> (every
    method resolves datasets through here, so methods share built scenes); None = the default scene."""
    from pathlib import Path

    from neuralrender.paths import resolve_data_path

    if data is not None:
        p = resolve_data_path(data)
        if p.exists():
            return str(p)
    from neuralrender.data import scenes

    name = data or "default"
    if name not in scenes.list_scenes():
        raise DataError(name, f"no such dataset folder, and not a built-in scene "
                              f"({', '.join(scenes.list_scenes())})")
    out = Path("runs") / "scenes" / name
    if not (out / "transforms.json").is_file():
        scenes.build_scene(scenes.load_scene(name), out, overwrite=True)
    return str(out)


def scene_bounds(cameras: Cameras, margin: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """An axis-aligned cube every camera looks into: centre = the point nearest (least squares) to all
    optical axes; half-size = margin * min over cameras of (distance to the centre) * tan(half of the
    narrower field of view), i.e. what the tightest view sees at the centre. -> (bounds_min [3], bounds_max [3])."""
    c, d = cameras.centers.double(), cameras.R[:, 2].double()
    P = torch.eye(3, dtype=torch.float64) - d[:, :, None] * d[:, None, :]
    A, b = P.sum(0), (P @ c[:, :, None]).sum(0).squeeze(-1)
    if cameras.batch_size < 2 or torch.linalg.matrix_rank(A) < 3:
        centre = c.mean(0) + d.mean(0) * (c - c.mean(0)).norm(dim=-1).mean().clamp_min(1.0)
    else:
        centre = torch.linalg.solve(A, b)
    r = (c - centre).norm(dim=-1)
    K = cameras.K.double()
    tan_half = torch.minimum(cameras.width / 2 / K[:, 0, 0], cameras.height / 2 / K[:, 1, 1])
    half = margin * float((r * tan_half).min())
    centre = centre.float()
    return centre - half, centre + half


SCENE_BOX_PAD = 0.025  # --bounds scene: the dataset's box grown by this fraction of its longest side on every side


def dataset_box(root) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The scene box a posed dataset carries, (bounds_min [3], bounds_max [3]), or None: transforms.json's
    "bounds" [xmin, ymin, zmin, xmax, ymax, zmax] (the scene builder writes the box of the scene's geometry);
    for a scene built before the builder wrote it (a scene.yaml beside the json), the same box recomputed from
    that spec; None for a capture with neither."""
    import math
    from pathlib import Path

    from neuralrender.io.posed import load_transforms

    data = load_transforms(root, "all")
    vals = data.meta.get("bounds")
    if vals is None:
        spec = Path(data.json_path).parent / "scene.yaml"
        if not spec.is_file():
            return None
        from neuralrender.data import scenes

        vals = scenes.scene_box(scenes.scene_mesh(scenes.load_scene(spec)).mesh)
    ok = isinstance(vals, (list, tuple)) and len(vals) == 6 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals)
    if not ok or any(vals[i + 3] < vals[i] for i in range(3)):
        raise DataError(data.json_path, f"bounds must be six finite numbers [xmin, ymin, zmin, xmax, ymax, zmax] "
                                        f"with max >= min, got {vals!r}", field="bounds")
    return torch.tensor(vals[:3], dtype=torch.float32), torch.tensor(vals[3:], dtype=torch.float32)


def check_cameras_outside(cameras: Cameras, bounds_min, bounds_max, where: str = "cameras") -> None:
    """Raise NeuralRenderError naming the first camera whose centre lies inside the box."""
    lo, hi = torch.as_tensor(bounds_min).float(), torch.as_tensor(bounds_max).float()
    c = cameras.centers.float()
    inside = ((c > lo) & (c < hi)).all(-1)
    if bool(inside.any()):
        i = int(inside.nonzero()[0])
        raise NeuralRenderError(f"{where}: camera {i} at {[round(v, 4) for v in c[i].tolist()]} lies inside the "
                                f"grid bounds {[round(v, 4) for v in lo.tolist()]} .. "
                                f"{[round(v, 4) for v in hi.tolist()]}; shrink the bounds or use cameras outside")


def check_cameras_see(cameras: Cameras, bounds_min, bounds_max, where: str = "cameras") -> None:
    """Raise NeuralRenderError naming the first camera that does not see the box centre (behind it or
    projecting outside its image): the grid would be outside that view."""
    lo, hi = torch.as_tensor(bounds_min).float(), torch.as_tensor(bounds_max).float()
    xy, z = cameras.project(((lo + hi) / 2).view(1, 1, 3).expand(cameras.batch_size, 1, 3))
    xy, z = xy[:, 0], z[:, 0]
    bad = (z <= 0) | (xy[:, 0] < 0) | (xy[:, 0] > cameras.width) | (xy[:, 1] < 0) | (xy[:, 1] > cameras.height)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise NeuralRenderError(f"{where}: camera {i} does not see the grid box centre "
                                f"{[round(v, 4) for v in ((lo + hi) / 2).tolist()]} (camera z {float(z[i]):.4g}, "
                                f"pixel {[round(v, 1) for v in xy[i].tolist()]} of {cameras.width}x{cameras.height}); "
                                f"the grid is outside its view: fix --bounds or drop the camera")


def near_far(cameras: Cameras, bounds_min, bounds_max) -> tuple[float, float]:
    """Camera-z range that covers the box's circumscribed sphere from every camera (near clamped > 0)."""
    lo, hi = torch.as_tensor(bounds_min).float(), torch.as_tensor(bounds_max).float()
    centre, rad = (lo + hi) / 2, float((hi - lo).norm() / 2)
    zc = cameras.world_to_camera(centre.view(1, 1, 3).expand(cameras.batch_size, 1, 3))[:, 0, 2]
    near = max(float(zc.min()) - rad, 0.05 * float(zc.min()), 1e-3)
    return near, float(zc.max()) + rad


def camera_path(cameras: Cameras, path: str | None, frames: int, centre: torch.Tensor) -> Cameras:
    """Cameras to render: 'orbit' (a circle around `centre` in the plane orthogonal to the cameras' mean up
    vector, at their mean distance and elevation, with their mean intrinsics), 'spiral' (the same with the
    elevation swinging +-15 degrees), 'train' (interpolating the given cameras in order), or a
    transforms.json path (its cameras, rescaled to this image size)."""
    import math

    from neuralrender.graphics.cameras import interpolate_cameras, look_at

    path = path or "orbit"
    if path == "train":
        return interpolate_cameras(cameras, frames)
    if path not in ("orbit", "spiral"):
        from neuralrender.io.posed import load_transforms

        cams = load_transforms(path, "all").cameras
        return cams.scaled(cameras.width / cams.width) if cams.width != cameras.width else cams
    centre = torch.as_tensor(centre).float()
    up = -cameras.R[:, 1].mean(0)
    up = up / up.norm().clamp_min(1e-8)
    off = cameras.centers - centre
    dist = float(off.norm(dim=-1).mean())
    elev = float(torch.asin((off @ up / off.norm(dim=-1)).clamp(-1, 1)).mean())
    e1 = off.mean(0) - (off.mean(0) @ up) * up
    if e1.norm() < 1e-6:
        e1 = torch.linalg.svd(torch.eye(3) - up[:, None] * up[None])[0][:, 0]
    e1 = e1 / e1.norm()
    e2 = torch.cross(up, e1, dim=0)
    s = torch.arange(frames, dtype=torch.float32) / frames
    az = 2 * math.pi * s
    el = torch.full_like(s, elev)
    if path == "spiral":
        el = el + math.radians(15.0) * torch.sin(2 * math.pi * s)
    eye = centre + dist * (torch.cos(el)[:, None] * (torch.cos(az)[:, None] * e1 + torch.sin(az)[:, None] * e2)
                           + torch.sin(el)[:, None] * up)
    R, t = look_at(eye, centre.expand(frames, 3), up.expand(frames, 3))
    K = cameras.K.mean(0, keepdim=True).expand(frames, 3, 3)
    return Cameras(K=K, R=R, t=t, width=cameras.width, height=cameras.height)


def load_view_pairs(data: str | None, image_size: int, n_sources: int, bounds: str = "auto",
                    bounds_margin: float = 1.0) -> tuple[ViewPairs, ViewPairs, dict]:
    """(train pairs, test pairs, info) of a posed dataset (see `resolve_posed`), images downscaled by
    `downscale_for(.., image_size)` and undistorted. bounds: 'auto' (scene_bounds of the training cameras,
    scaled by bounds_margin), 'scene' (the dataset's own box, `dataset_box`, padded by SCENE_BOX_PAD; 'auto' when
    it has none) or 'xmin,ymin,zmin,xmax,ymax,zmax'. info: width, height, bounds_min/max [3], bounds_source
    ('scene' | 'auto' | 'given'), near, far, mean_image [3,H,W] (train split), train_cameras, data (the resolved
    path), has_depth."""
    from neuralrender.data.posed import PosedImageDataset
    from neuralrender.io.posed import load_transforms

    root = resolve_posed(data)
    full = load_transforms(root, "train")
    ds = downscale_for(full.width, full.height, image_size)
    train = PosedImageDataset(root, "train", downscale=ds, undistort=True, cache=True)
    test = PosedImageDataset(root, "test", downscale=ds, undistort=True, cache=True)
    cams = train.cameras
    box = dataset_box(root) if bounds == "scene" else None
    if box is not None:  # the dataset's own box, padded so surfaces on its faces (a floor) lie inside the grid
        pad = SCENE_BOX_PAD * float((box[1] - box[0]).max())
        lo, hi, source = box[0] - pad, box[1] + pad, "scene"
    elif bounds in ("auto", "scene"):  # "scene" on a dataset without a box: the cameras' box
        lo, hi = scene_bounds(cams, bounds_margin)
        source = "auto"
    else:
        try:
            vals = [float(v) for v in bounds.replace(" ", "").split(",")]
        except ValueError:
            vals = []
        if len(vals) != 6:
            raise NeuralRenderError(f"bounds must be 'scene', 'auto' or six numbers 'xmin,ymin,zmin,xmax,ymax,zmax', "
                                    f"got {bounds!r}")
        lo, hi = torch.tensor(vals[:3]), torch.tensor(vals[3:])
        if bool((hi <= lo).any()):
            raise NeuralRenderError(f"bounds: max must exceed min on every axis, got {bounds!r}")
        source = "given"
    check_cameras_outside(cams, lo, hi, f"{full.json_path} (train split)")
    check_cameras_outside(test.cameras, lo, hi, f"{full.json_path} (test split)")
    check_cameras_see(cams, lo, hi, f"{full.json_path} (train split)")
    check_cameras_see(test.cameras, lo, hi, f"{full.json_path} (test split)")
    near, far = near_far(cams, lo, hi)
    tr, te = ViewPairs(train, train, n_sources), ViewPairs(test, train, n_sources)
    first = train[0]
    info = {"width": cams.width, "height": cams.height, "bounds_min": lo, "bounds_max": hi, "near": near,
            "far": far, "mean_image": train.images().mean(0), "train_cameras": cams, "data": root,
            "has_depth": "depth" in first, "downscale": ds, "bounds_source": source}
    return tr, te, info
