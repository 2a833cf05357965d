"""Condition -> video datasets for pix2pix / pix2pixHD / vid2vid: three tasks and one clip dataset.

A task builds `CondSequence`s (condition images, target frames, ground-truth flow between consecutive
frames with its validity mask, an instance map) and `CondVideoDataset` cuts clips from them:
- labels -> scene (`scene_label_sequences`): a camera path through a scene of neuralrender.data.scenes (the
  default scene's labelled objects on a ground plane, lit with view-dependent Blinn-Phong); condition = the
  semantic G-buffer as one-hot labels + the label boundary map; flow = exact (`graphics.flow.rigid_flow`
  from the rendered depth and the known cameras, occlusion-masked).
- G-buffer -> scene (task 'scene-gbuffer', `scene_label_sequences(gbuffer=True)`): the same sequence with the
  rasterizer's geometry appended to the condition: world normals (3) and inverse depth (1/z, 0 on background).
- scene tasks, extra training data (`layout_sequences`, the `layouts` option of the cond2d methods): the scene
  rearranged at random (objects moved / duplicated), rendered from the training cameras only.
- edges -> face (`face_edge_sequences`): the talking-head clip in shared videos/face_talking; condition =
  the dlib68 landmarks drawn as polylines + Canny edges of the background (outside the face hull);
  flow = OpenCV DIS optical flow with a forward-backward occlusion check.
- pose -> body (`body_pose_sequences`): the Weizmann strips in shared videos/fullbody_weizmann; condition =
  the mediapipe pose33 skeleton drawn with one colour per limb (NaN joints omitted); flow = DIS as above.
Held out: the last `test_fraction` (20%) of every sequence's frames. Flows follow graphics.warp:
flow[t] lives on frame t and warp(frame[t-1], flow[t]) ~= frame[t] (flow[0] = 0, flow_mask[0] = 0).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.skeleton import POSE33_EDGES

__all__ = ["CondSequence", "CondVideoDataset", "TASKS", "build_task", "label_condition", "scene_camera_path",
           "scene_label_sequences", "render_scene_labels", "scene_condition", "GBUFFER_EXTRA", "SCENE_TASKS", "edit_scene_spec", "random_layout_renders",
           "random_layout_specs", "layout_sequences", "LAYOUT_SEED",
           "face_edge_sequences", "body_pose_sequences", "DLIB68_POLYLINES", "POSE33_EDGES"]

TASKS = ("scene", "face", "body", "scene-gbuffer")
SCENE_TASKS = ("scene", "scene-gbuffer")  # the tasks rendered from a scene spec (3D edits apply)
GBUFFER_EXTRA = 4  # channels 'scene-gbuffer' appends to the label condition: world normals (3), inverse depth


@dataclass
class CondSequence:
    """One condition/target sequence of N frames (source names the file, for error messages).

    cond [N,C,H,W] float, target [N,3,H,W] float in [0,1], flow [N,2,H,W] (frame t -> t-1, pixels),
    flow_mask [N,1,H,W] in {0,1}, instances [N,1,H,W] int64 (0 when the task has none).
    """

    source: str
    cond: torch.Tensor
    target: torch.Tensor
    flow: torch.Tensor
    flow_mask: torch.Tensor
    instances: torch.Tensor

    def __post_init__(self):
        n = self.target.shape[0]
        for name in ("cond", "flow", "flow_mask", "instances"):
            t = getattr(self, name)
            if t.shape[0] != n:
                raise DataError(self.source, f"{name} has {t.shape[0]} frames but the target video has {n} "
                                             f"(first unmatched frame: {min(n, t.shape[0])})", field=name)
            if t.shape[-2:] != self.target.shape[-2:]:
                raise DataError(self.source, f"frame 0: {name} is {tuple(t.shape[-2:])} (H,W) but the target is "
                                             f"{tuple(self.target.shape[-2:])}", field=name)
        for t in range(n):
            if not bool(torch.isfinite(self.cond[t]).all()):
                raise DataError(self.source, f"frame {t}: condition holds NaN or inf", field="cond")

    def __len__(self) -> int:
        return self.target.shape[0]


class CondVideoDataset(Dataset):
    """Clips of `clip_len` consecutive frames from the train or held-out part of each sequence.

    split 'train': frames [0, n - ceil(test_fraction n)); 'val': the last ceil(test_fraction n) frames.
    hop: distance between clip starts (default 1 for train; use clip_len for non-overlapping eval clips).
    Item: {"cond" [T,C,H,W], "image" [T,3,H,W], "flow" [T,2,H,W], "flow_mask" [T,1,H,W],
           "inst" [T,1,H,W] int64, "frame" int64 [T] (frame indices), "seq" int}.
    A split part shorter than clip_len is a DataError naming the sequence's file.
    """

    def __init__(self, sequences: list[CondSequence], split: str = "train", clip_len: int = 1,
                 test_fraction: float = 0.2, hop: int = 1):
        if split not in ("train", "val", "all"):
            raise NeuralRenderError(f"split must be 'train', 'val' or 'all', got {split!r}")
        if clip_len < 1 or hop < 1:
            raise NeuralRenderError(f"clip_len and hop must be >= 1, got {clip_len}, {hop}")
        self.sequences, self.clip_len = sequences, clip_len
        self.index: list[tuple[int, int]] = []
        for s, seq in enumerate(sequences):
            n = len(seq)
            n_test = math.ceil(test_fraction * n)
            lo, hi = {"train": (0, n - n_test), "val": (n - n_test, n), "all": (0, n)}[split]
            if hi - lo < clip_len:
                raise DataError(seq.source, f"the {split} part has {hi - lo} frames (frames {lo}..{hi - 1}), fewer "
                                            f"than the temporal window of {clip_len} frames", field="frames")
            self.index += [(s, t) for t in range(lo, hi - clip_len + 1, hop)]

    @property
    def cond_channels(self) -> int:
        return self.sequences[0].cond.shape[1]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        s, t = self.index[i]
        seq, sl = self.sequences[s], slice(t, t + self.clip_len)
        return {"cond": seq.cond[sl], "image": seq.target[sl], "flow": seq.flow[sl], "flow_mask": seq.flow_mask[sl],
                "inst": seq.instances[sl], "frame": torch.arange(t, t + self.clip_len), "seq": s}


# ------------------------------------------------------------------------------------------ helpers


def label_condition(labels: torch.Tensor, num_classes: int, source: str = "<labels>",
                    frame_offset: int = 0) -> torch.Tensor:
    """Label maps [N,1,H,W] int (0 = background) -> condition [N,num_classes+1,H,W]: one-hot + boundary map.

    A label >= num_classes (or < 0) is a DataError naming `source` and the first bad frame.
    """
    from neuralrender.graphics.draw import edge_map_from_labels, label_map_to_onehot

    bad = (labels < 0) | (labels >= num_classes)
    if bool(bad.any()):
        f = int(bad.flatten(1).any(1).nonzero()[0])
        raise DataError(source, f"frame {f + frame_offset}: label {int(labels[f][bad[f]][0])} is outside "
                                f"[0, {num_classes - 1}] (num_classes={num_classes})", field="labels")
    return torch.cat([label_map_to_onehot(labels, num_classes, ignore_index=None), edge_map_from_labels(labels)], 1)


def real_flow(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DIS flow frame t -> t-1 and its forward-backward mask for frames [N,3,H,W]."""
    from neuralrender.graphics.flow import forward_backward_mask, optical_flow

    n = frames.shape[0]
    flow = torch.zeros(n, 2, *frames.shape[-2:])
    mask = torch.zeros(n, 1, *frames.shape[-2:])
    if n > 1:
        fw = optical_flow(frames[1:], frames[:-1], "dis")
        bw = optical_flow(frames[:-1], frames[1:], "dis")
        flow[1:], mask[1:] = fw, forward_backward_mask(fw, bw)
    return flow, mask


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    if frames.shape[-1] == size and frames.shape[-2] == size:
        return frames
    return F.interpolate(frames, size=(size, size), mode="area" if frames.shape[-1] > size else "bilinear",
                         align_corners=None if frames.shape[-1] > size else False).clamp(0, 1)


def _frames(path) -> torch.Tensor:
    from neuralrender.io.video import read_video_uint8

    return torch.from_numpy(read_video_uint8(path)).permute(0, 3, 1, 2).float().div(255.0)


def _side_array(path, key: str, n: int):
    import numpy as np

    from neuralrender.io.video import load_side_data

    sd = load_side_data(path, n)
    if key not in sd.per_frame:
        raise DataError(path, f"no per-frame array '{key}' with {n} rows (one per video frame); found "
                              f"{sorted(sd.per_frame) + sorted(sd.meta)}", field=key)
    return sd, np.asarray(sd.per_frame[key])


# ------------------------------------------------------------------------------------------ task 1: scene


def scene_camera_path(spec, frames: int = 100, elevation_deg=(18.0, 38.0), radius: float = 4.0,
                      turns: float = 1.0, start_azimuth_deg: float = 0.0, width: int = 64, height: int = 64):
    """A smooth camera path around the scene's target: `turns` orbits with the elevation swinging between the
    two values (two periods per turn). Cameras [frames] at width x height with the spec's field of view."""
    from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at

    s = torch.arange(frames, dtype=torch.float64) / frames
    az = torch.deg2rad(start_azimuth_deg + 360.0 * turns * s)
    lo, hi = elevation_deg
    el = torch.deg2rad(lo + (hi - lo) * 0.5 * (1 - torch.cos(4 * math.pi * turns * s)))
    d = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1).float()
    target = torch.tensor(spec.target, dtype=torch.float32)
    R, t = look_at(target + radius * d, target.expand(frames, 3))
    K = intrinsics_from_fov(spec.fov_deg, width, height).expand(frames, 3, 3)
    return Cameras(K=K, R=R, t=t, width=width, height=height)


def render_scene_labels(spec, cameras, batch: int = 16, normals: bool = False):
    """Render a scene spec from cameras -> SceneRender (images, depth, labels, mask; normals when asked) via
    data.scenes."""
    from neuralrender.data.scenes import render_scene, scene_mesh

    spec = dataclasses.replace(spec, width=cameras.width, height=cameras.height)
    return render_scene(spec, scene_mesh(spec), cameras, batch=batch, normals=normals)


def scene_condition(spec, cameras, num_classes: int, source: str, gbuffer: bool = False):
    """Render a scene spec from cameras -> (condition [N,C,H,W], SceneRender): one-hot labels + boundary map
    (label_condition), and with gbuffer=True also the same rasterization's world normals (3 channels in [-1,1])
    and inverse depth (1/z; both 0 on background): C = num_classes + 1 (+ 4)."""
    r = render_scene_labels(spec, cameras, normals=gbuffer)
    cond = label_condition(r.labels, num_classes, source=source)
    if not gbuffer:
        return cond, r
    inv_depth = r.mask / r.depth.clamp_min(1e-3) * r.mask
    return torch.cat([cond, r.normals, inv_depth], 1), r


def scene_label_sequences(scene: str = "default", size: int = 64, frames: int = 100, num_classes: int | None = None,
                          shadows: bool = False, gbuffer: bool = False) -> tuple[list[CondSequence], dict]:
    """Task 1: one camera-path sequence through a scene -> ([CondSequence], info). gbuffer: append normals and
    inverse depth to the condition (scene_condition; the 'scene-gbuffer' task).

    info: num_classes (max label + 1 unless given), scene spec, cameras (for re-rendering edits), gbuffer.
    """
    from neuralrender.data.scenes import load_scene
    from neuralrender.graphics.flow import rigid_flow

    spec = load_scene(scene)
    spec = dataclasses.replace(spec, shadows=shadows and spec.shadows)
    cams = scene_camera_path(spec, frames, width=size, height=size)
    k = num_classes or max(o.label for o in spec.objects) + 1
    cond, r = scene_condition(spec, cams, k, spec.source, gbuffer)
    depth = r.depth[:, 0]
    flow = torch.zeros(frames, 2, size, size)
    mask = torch.zeros(frames, 1, size, size)
    if frames > 1:
        flow[1:], mask[1:] = rigid_flow(depth[1:], cams[1:], cams[:-1], source_depth=depth[:-1])
    seq = CondSequence(f"{spec.source} (camera path, {frames} frames)", cond, r.images, flow, mask, r.labels.long())
    return [seq], {"num_classes": k, "spec": spec, "cameras": cams, "gbuffer": gbuffer}


def edit_scene_spec(spec, edit: str, obj: str, by) -> tuple[object, int]:
    """A scene edited in 3D -> (edited spec, the object's label): object `obj` moved by `by` (x, y, z world units;
    edit='move') or a copy of it added at +by (edit='duplicate'). Unknown object: a DataError naming the scene."""
    if edit not in ("move", "duplicate"):
        raise NeuralRenderError(f"unknown scene edit '{edit}'; valid: move, duplicate")
    names = [o.name for o in spec.objects]
    if obj not in names:
        raise DataError(spec.source, f"no object '{obj}' (objects: {', '.join(names)})", field="objects")
    o = spec.objects[names.index(obj)]
    moved = dataclasses.replace(o, translate=tuple(a + b for a, b in zip(o.translate, by)))
    objs = list(spec.objects)
    if edit == "move":
        objs[names.index(obj)] = moved
    else:
        objs.append(dataclasses.replace(moved, name=obj + "_copy"))
    return dataclasses.replace(spec, objects=objs), o.label


def random_layout_specs(spec, seed: int = 0, layouts: int = 24, turn: bool = True):
    """`layouts` random rearrangements of a scene spec (a generator of specs): every object but the floor moved by
    up to 1.2 in x and z (turn: and turned about the vertical axis by a random angle), every other layout also
    duplicating one object (the same layouts with and without turn). Seeded: the same seed, the same layouts."""
    g, g_turn = torch.Generator().manual_seed(seed + 1), torch.Generator().manual_seed(seed + 2)
    movable = [o.name for o in spec.objects if o.name != "floor"]
    for i in range(layouts):
        s = spec
        for name in movable:
            dx, dz = (torch.rand(2, generator=g) * 2.4 - 1.2).tolist()
            s, _ = edit_scene_spec(s, "move", name, (dx, 0.0, dz))
        if i % 2:
            name = movable[int(torch.randint(len(movable), (1,), generator=g))]
            dx, dz = (torch.rand(2, generator=g) * 2.4 - 1.2).tolist()
            s, _ = edit_scene_spec(s, "duplicate", name, (dx, 0.0, dz))
        if turn:
            yaw = (torch.rand(len(s.objects), generator=g_turn) * 360).tolist()
            s = dataclasses.replace(s, objects=[o if o.name == "floor" else dataclasses.replace(
                o, rotate_deg=(o.rotate_deg[0], y, o.rotate_deg[2])) for o, y in zip(s.objects, yaw)])
        yield s


def random_layout_renders(spec, cams, seed: int = 0, layouts: int = 24,
                          turn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Renders (images [N,3,H,W], labels [N,1,H,W]) of the scene rearranged at random (random_layout_specs), each
    layout seen from every other camera of `cams` (layout i: cams[i % 2::2]). Training data for the segmenter of
    the edit check (give it training cameras only). Session 4's segmenter trained on layouts=6, turn=False."""
    ims, labs = [], []
    for i, s in enumerate(random_layout_specs(spec, seed, layouts, turn)):
        r = render_scene_labels(s, cams[i % 2::2])
        ims.append(r.images)
        labs.append(r.labels)
    return torch.cat(ims), torch.cat(labs)


LAYOUT_SEED = 1000  # the models' training layouts use seed LAYOUT_SEED + run seed; the edit check's segmenter
#                     uses the run seed (0, 1, ...): the instrument never sees the models' training layouts


def layout_sequences(spec, cams, num_classes: int, gbuffer: bool = False, seed: int = LAYOUT_SEED,
                     layouts: int = 24, turn: bool = False) -> list[CondSequence]:
    """Training data for a scene model that must render edited scenes: `layouts` random rearrangements of the
    scene (random_layout_specs), layout i rendered from cams[i % 2::2] (give it training cameras only) as one
    CondSequence each: its condition (scene_condition), real render, exact flow between consecutive views."""
    from neuralrender.graphics.flow import rigid_flow

    seqs = []
    for i, s in enumerate(random_layout_specs(spec, seed, layouts, turn)):
        c = cams[i % 2::2]
        source = f"{spec.source} (random layout {i}, seed {seed})"
        cond, r = scene_condition(s, c, num_classes, source, gbuffer)
        n, h, w = cond.shape[0], cond.shape[-2], cond.shape[-1]
        depth = r.depth[:, 0]
        flow, mask = torch.zeros(n, 2, h, w), torch.zeros(n, 1, h, w)
        if n > 1:
            flow[1:], mask[1:] = rigid_flow(depth[1:], c[1:], c[:-1], source_depth=depth[:-1])
        seqs.append(CondSequence(source, cond, r.images, flow, mask, r.labels.long()))
    return seqs


# ------------------------------------------------------------------------------------------ task 2: face

# dlib 68-point layout as polylines (closed ones repeat their first index).
DLIB68_POLYLINES = (
    list(range(0, 17)), list(range(17, 22)), list(range(22, 27)), list(range(27, 31)), list(range(31, 36)),
    list(range(36, 42)) + [36], list(range(42, 48)) + [42], list(range(48, 60)) + [48], list(range(60, 68)) + [60],
)


def _polyline_edges(lines) -> list[tuple[int, int]]:
    return [(a, b) for line in lines for a, b in zip(line[:-1], line[1:])]


FACE_VIDEO = "videos/face_talking/driving_obama_weekly_address_256.mp4"
FACE_LANDMARKS = "videos/face_talking/driving_obama_weekly_address_256_landmarks.npz"


def face_edge_sequences(size: int = 64, video=None, landmarks=None, max_frames: int | None = None,
                        canny=(60, 140)) -> tuple[list[CondSequence], dict]:
    """Task 2: edges -> face. Condition channels: [landmark polylines, background Canny edges] ([N,2,H,W])."""
    import numpy as np

    from neuralrender.graphics.draw import draw_skeleton
    from neuralrender.paths import resolve_data_path, shared_path

    vpath = resolve_data_path(video) if video else shared_path(*FACE_VIDEO.split("/"))
    lpath = resolve_data_path(landmarks) if landmarks else shared_path(*FACE_LANDMARKS.split("/"))
    frames = _frames(vpath)
    n = frames.shape[0] if max_frames is None else min(max_frames, frames.shape[0])
    sd, pts = _side_array(lpath, "dlib68_xy_pixels", frames.shape[0])
    if pts.shape[1:] != (68, 2):
        raise DataError(lpath, f"dlib68_xy_pixels must be [T,68,2], got {pts.shape}", field="dlib68_xy_pixels")
    W0 = frames.shape[-1]
    frames = _resize(frames[:n], size)
    scale = size / W0
    p = torch.from_numpy(pts[:n].astype(np.float32)) * scale
    lines = draw_skeleton(p, _polyline_edges(DLIB68_POLYLINES), size, size, thickness=max(1.0, size / 96))[:, :1]
    edges = _background_edges(frames, p, canny)
    cond = torch.cat([lines, edges], 1)
    flow, mask = real_flow(frames)
    seq = CondSequence(str(vpath), cond, frames, flow, mask, torch.zeros(n, 1, size, size, dtype=torch.long))
    return [seq], {}


def _background_edges(frames: torch.Tensor, pts: torch.Tensor, thresholds) -> torch.Tensor:
    """Canny edges [N,1,H,W] of frames outside the convex hull of the landmarks (jaw + brows), dilated by 2 px."""
    import cv2
    import numpy as np

    out = []
    for img, p in zip(frames, pts):
        g = (img.mul(255).round().byte().permute(1, 2, 0).numpy())
        e = cv2.Canny(cv2.cvtColor(g, cv2.COLOR_RGB2GRAY), *thresholds)
        hull_pts = p[:27].numpy()
        ok = np.isfinite(hull_pts).all(1)
        face = np.zeros(e.shape, np.uint8)
        if ok.sum() >= 3:
            hull = cv2.convexHull((hull_pts[ok]).astype(np.float32)).astype(np.int32)
            cv2.fillConvexPoly(face, hull, 1)
            face = cv2.dilate(face, np.ones((5, 5), np.uint8))
        out.append(torch.from_numpy((e > 0) & (face == 0)).float())
    return torch.stack(out)[:, None]


# ------------------------------------------------------------------------------------------ task 3: body

# mediapipe POSE_CONNECTIONS (33 landmarks): the library's one pose format lives in graphics/skeleton.py.
BODY_CLIPS = ("wave1_00000002", "jack_00000004", "bend_00000006")


def body_pose_sequences(size: int = 64, clips=BODY_CLIPS, folder=None) -> tuple[list[CondSequence], dict]:
    """Task 3: pose -> body on the Weizmann strips; condition = pose33 skeleton, one colour per limb [N,3,H,W]."""
    from neuralrender.graphics.draw import draw_skeleton, label_palette
    from neuralrender.paths import resolve_data_path, shared_path

    root = resolve_data_path(folder) if folder else shared_path("videos", "fullbody_weizmann")
    colors = label_palette(len(POSE33_EDGES) + 1)[1:]
    seqs = []
    for name in clips:
        vpath, ppath = root / f"{name}_strip64.png", root / f"{name}_mediapipe_pose33.npz"
        frames = _frames(vpath)
        n = frames.shape[0]
        _, pose = _side_array(ppath, "pose33_xyzv_normalized", n)
        if pose.shape[1:] != (33, 4):
            raise DataError(ppath, f"pose33_xyzv_normalized must be [T,33,4], got {pose.shape}",
                            field="pose33_xyzv_normalized")
        frames = _resize(frames, size)
        xy = torch.from_numpy(pose[..., :2].copy()).float() * size  # normalized [0,1] image coords -> pixels
        cond = draw_skeleton(xy, POSE33_EDGES, size, size, thickness=max(1.5, size / 32), colors=colors)
        flow, mask = real_flow(frames)
        seqs.append(CondSequence(str(vpath), cond, frames, flow, mask, torch.zeros(n, 1, size, size, dtype=torch.long)))
    return seqs, {}


# ------------------------------------------------------------------------------------------ dispatch


def build_task(task: str, size: int = 64, frames: int | None = None) -> tuple[list[CondSequence], dict]:
    """'scene' | 'face' | 'body' | 'scene-gbuffer' -> (sequences, info). frames: cap on frames (scene: path length)."""
    if task in SCENE_TASKS:
        return scene_label_sequences(size=size, frames=frames or 100, gbuffer=task == "scene-gbuffer")
    if task == "face":
        return face_edge_sequences(size=size, max_frames=frames)
    if task == "body":
        seqs, info = body_pose_sequences(size=size)
        if frames:
            seqs = [dataclasses.replace(s, cond=s.cond[:frames], target=s.target[:frames], flow=s.flow[:frames],
                                        flow_mask=s.flow_mask[:frames], instances=s.instances[:frames]) for s in seqs]
        return seqs, info
    raise NeuralRenderError(f"unknown condition task '{task}'; valid: {', '.join(TASKS)}")
