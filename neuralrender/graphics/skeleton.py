"""The library's one 2D/3D body pose format: mediapipe Pose's 33 landmarks with a visibility flag.

A pose is `joints [B,33,2]` (pixels, x right, y down, centres at +0.5) or `[B,33,3]` (world), plus
`visibility [B,33]` in [0,1] (0 = missing). Missing joints may also be NaN; every function here accepts
both and never lets a NaN crash it (see `fill_missing` for the documented fallback).

What lives here:
- `POSE33_NAMES`, `POSE33_EDGES` (mediapipe POSE_CONNECTIONS), `POSE33_PARENTS` (a kinematic tree over the
  33 joints, rooted at the left hip), `LIMB_COLORS` (one colour per edge);
- `pose33_from_normalized`: mediapipe's normalized [T,33,4] (x, y, z, visibility) -> pixels + visibility;
- `retarget_bvh`: CMU BVH joint positions -> pose33 3D joints (joint mapping + face points built from the
  head and shoulders), `rescale_bones` (retarget to other bone lengths, keeping every bone's direction);
- `project_joints`: 3D joints through `graphics.cameras.Cameras.project`;
- `ankle_stats` / `normalize_poses`: Everybody Dance Now's global pose normalisation between subjects;
- `fill_missing` / `smooth_poses`: temporal gap filling and Gaussian smoothing of noisy 2D poses;
- `draw_pose`: condition images (coloured sticks or Gaussian heatmaps) through graphics/draw.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.draw import draw_skeleton, gaussian_heatmaps, label_palette

__all__ = [
    "POSE33_NAMES", "POSE33_EDGES", "POSE33_PARENTS", "NUM_JOINTS", "LIMB_COLORS", "BODY_PARTS",
    "pose33_from_normalized", "retarget_bvh", "CMU_TO_POSE33", "rescale_bones", "bone_lengths", "project_joints",
    "AnkleStats", "ankle_stats", "normalize_poses", "fill_missing", "smooth_poses", "draw_pose", "head_box",
]

NUM_JOINTS = 33
POSE33_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
# mediapipe POSE_CONNECTIONS
POSE33_EDGES = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (13, 15),
    (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20), (16, 22), (18, 20), (11, 23),
    (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (28, 30), (29, 31), (30, 32), (27, 31),
    (28, 32),
)
# A kinematic tree over the 33 joints (root: left hip), used to rescale bones.
POSE33_PARENTS = (
    11, 0, 1, 2, 0, 4, 5, 3, 6, 0, 0, 23, 24, 11, 12, 13, 14, 15, 16, 15, 16, 15, 16, -1, 23, 23, 24, 25, 26,
    27, 28, 27, 28,
)
# One colour per edge (the PASCAL palette without black), as data/conditions.py draws its body task.
LIMB_COLORS = label_palette(len(POSE33_EDGES) + 1)[1:]
# Rigid body parts for per-part affine warps (Deformable GANs): joint index lists.
BODY_PARTS = {
    "head": (0, 7, 8, 11, 12), "torso": (11, 12, 23, 24),
    "left_upper_arm": (11, 13), "left_forearm": (13, 15, 17, 19), "right_upper_arm": (12, 14),
    "right_forearm": (14, 16, 18, 20), "left_thigh": (23, 25), "left_shin": (25, 27, 29, 31),
    "right_thigh": (24, 26), "right_shin": (26, 28, 30, 32),
}

# pose33 joint <- CMU BVH joint (position of that joint; "name:end" = its End Site)
CMU_TO_POSE33 = {
    11: "LeftArm", 12: "RightArm", 13: "LeftForeArm", 14: "RightForeArm", 15: "LeftHand", 16: "RightHand",
    17: "LFingers", 18: "RFingers", 19: "LFingers:end", 20: "RFingers:end", 21: "LThumb:end", 22: "RThumb:end",
    23: "LeftUpLeg", 24: "RightUpLeg", 25: "LeftLeg", 26: "RightLeg", 27: "LeftFoot", 28: "RightFoot",
    31: "LeftToeBase:end", 32: "RightToeBase:end",
}


def _check_pose(joints: torch.Tensor, dims=(2, 3), name: str = "joints") -> None:
    if joints.dim() != 3 or joints.shape[1] != NUM_JOINTS or joints.shape[2] not in dims:
        raise NeuralRenderError(f"{name} must be [B,{NUM_JOINTS},{'|'.join(map(str, dims))}], got {tuple(joints.shape)}")


def _vis(joints: torch.Tensor, visibility: torch.Tensor | None) -> torch.Tensor:
    """Boolean [B,J]: finite and (visibility > 0 when given)."""
    ok = torch.isfinite(joints).all(-1)
    if visibility is not None:
        if visibility.shape != joints.shape[:2]:
            raise NeuralRenderError(f"visibility must be {tuple(joints.shape[:2])}, got {tuple(visibility.shape)}")
        ok = ok & (torch.nan_to_num(visibility, nan=0.0) > 0)
    return ok


def pose33_from_normalized(arr, width: int, height: int, min_visibility: float = 0.0):
    """mediapipe normalized landmarks [T,33,4] (x, y in [0,1] of the image, z, visibility) -> (xy pixels [T,33,2],
    visibility [T,33]). NaN rows (no pose found) keep NaN positions and get visibility 0; visibility below
    `min_visibility` is set to 0."""
    a = torch.as_tensor(arr, dtype=torch.float32)
    if a.dim() != 3 or a.shape[1:] != (NUM_JOINTS, 4):
        raise NeuralRenderError(f"mediapipe pose must be [T,{NUM_JOINTS},4], got {tuple(a.shape)}")
    xy = a[..., :2] * a.new_tensor([width, height])
    vis = torch.nan_to_num(a[..., 3], nan=0.0).clamp(0, 1)
    vis = torch.where(torch.isfinite(xy).all(-1) & (vis >= min_visibility), vis, torch.zeros_like(vis))
    return xy, vis


# ------------------------------------------------------------------------------------------ 3D: BVH


def _joint_position(names: list[str], positions: torch.Tensor, end_points: dict[int, torch.Tensor], key: str):
    name, _, end = key.partition(":")
    if name not in names:
        raise NeuralRenderError(f"BVH skeleton has no joint {name!r} needed for pose33 (joints: {names})")
    j = names.index(name)
    if end:
        if j not in end_points:
            raise NeuralRenderError(f"BVH joint {name!r} has no End Site")
        return end_points[j]
    return positions[:, j]


def _end_site_positions(motion, frames) -> dict[int, torch.Tensor]:
    """World positions [T,3] of every End Site: FK with the End Sites appended as channel-less joints."""
    from neuralrender.io.bvh import forward_kinematics

    m = motion.motion if frames is None else motion.motion[frames]
    parents = list(motion.parents) + list(motion.end_sites)
    offsets = torch.cat([motion.offsets, torch.stack([motion.end_sites[j] for j in motion.end_sites])])
    channels = list(motion.channels) + [()] * len(motion.end_sites)
    p = forward_kinematics(parents, offsets, channels, m)
    return {j: p[:, motion.num_joints + k] for k, j in enumerate(motion.end_sites)}


def retarget_bvh(motion, frames=None, mapping: dict[int, str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A CMU-style BVH (io.bvh.BVHMotion) -> (pose33 world joints [T,33,3] in the file's units, visibility [T,33]).

    Body joints are the BVH joints (or End Sites) of `mapping` (default CMU_TO_POSE33), so every mapped bone
    keeps its direction and length. Heels sit behind the ankle along the toe->ankle direction (a quarter of
    the foot); the 11 face points are built in a head frame (up: neck -> head End Site, right: right -> left
    shoulder, forward: their cross product) around the head centre. All 33 joints are visible.
    """
    mapping = mapping or CMU_TO_POSE33
    pos = motion.forward_kinematics(frames)  # [T,J,3]
    ends = _end_site_positions(motion, frames)
    T = pos.shape[0]
    out = pos.new_full((T, NUM_JOINTS, 3), float("nan"))
    for k, key in mapping.items():
        out[:, k] = _joint_position(motion.names, pos, ends, key)
    for heel, ankle, toe in ((29, 27, 31), (30, 28, 32)):
        out[:, heel] = out[:, ankle] + 0.25 * (out[:, ankle] - out[:, toe])
    neck = _joint_position(motion.names, pos, ends, "Head")
    top = _joint_position(motion.names, pos, ends, "Head:end")
    up = top - neck
    r = up.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    up = up / r
    right = out[:, 11] - out[:, 12]  # toward the subject's left = mediapipe "left"
    right = right - (right * up).sum(-1, keepdim=True) * up
    right = right / right.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    fwd = torch.cross(right, up, dim=-1)  # the way the face looks (CMU: shoulders left->right x up)
    centre = neck + 0.5 * r * up
    face = {  # (forward, left, up) in head radii
        0: (1.0, 0.0, -0.1), 1: (0.85, 0.15, 0.15), 2: (0.8, 0.3, 0.15), 3: (0.7, 0.45, 0.15),
        4: (0.85, -0.15, 0.15), 5: (0.8, -0.3, 0.15), 6: (0.7, -0.45, 0.15), 7: (0.0, 0.9, 0.1),
        8: (0.0, -0.9, 0.1), 9: (0.85, 0.25, -0.45), 10: (0.85, -0.25, -0.45),
    }
    half = 0.5 * r
    for k, (f, lft, u) in face.items():
        out[:, k] = centre + half * (f * fwd + lft * right + u * up)
    return out, torch.ones(T, NUM_JOINTS, dtype=pos.dtype, device=pos.device)


def bone_lengths(joints: torch.Tensor) -> torch.Tensor:
    """Length of each joint's bone to its POSE33_PARENTS parent: joints [B,33,D] -> [B,33] (0 at the root)."""
    _check_pose(joints)
    par = torch.tensor([max(p, 0) for p in POSE33_PARENTS], device=joints.device)
    d = (joints - joints[:, par]).norm(dim=-1)
    d[:, [j for j, p in enumerate(POSE33_PARENTS) if p < 0]] = 0
    return d


def rescale_bones(joints: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Retarget to other proportions: joints [B,33,D], lengths [33] or [B,33] (per bone of POSE33_PARENTS) ->
    [B,33,D] with the same root and every bone direction, each bone `lengths` long."""
    _check_pose(joints)
    lengths = lengths.to(joints).expand(joints.shape[0], NUM_JOINTS)
    out = joints.clone()
    order = sorted(range(NUM_JOINTS), key=lambda j: _depth(j))
    for j in order:
        p = POSE33_PARENTS[j]
        if p < 0:
            continue
        d = joints[:, j] - joints[:, p]
        d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        out[:, j] = out[:, p] + lengths[:, j, None] * d
    return out


def _depth(j: int) -> int:
    d = 0
    while POSE33_PARENTS[j] >= 0:
        j, d = POSE33_PARENTS[j], d + 1
    return d


def project_joints(joints: torch.Tensor, cameras, visibility: torch.Tensor | None = None):
    """World joints [B,J,3] through Cameras (batch B, or 1 broadcast) -> (pixels [B,J,2], visibility [B,J]).

    Joints behind the camera (depth <= 0) or NaN get visibility 0 (their pixels are kept, NaN stays NaN).
    """
    if joints.dim() != 3 or joints.shape[-1] != 3:
        raise NeuralRenderError(f"joints must be [B,J,3], got {tuple(joints.shape)}")
    B = joints.shape[0]
    cams = cameras
    if cams.batch_size == 1 and B > 1:
        from neuralrender.graphics.cameras import Cameras

        cams = Cameras(K=cams.K.expand(B, 3, 3), R=cams.R.expand(B, 3, 3), t=cams.t.expand(B, 3),
                       width=cams.width, height=cams.height, dist=cams.dist)
    if cams.batch_size != B:
        raise NeuralRenderError(f"{cams.batch_size} cameras for {B} poses")
    xy, z = cams.project(joints.to(cams.R))
    vis = _vis(joints, visibility) & (z > 0)
    return xy, vis.to(xy.dtype)


# ------------------------------------------------------------------------------------------ normalisation


@dataclass
class AnkleStats:
    """Per-video ankle statistics (pixels, y down): farthest (smallest y) and closest (largest y) ankle
    heights in the image and the subject's height (ankle y - top y) near each."""

    far: float
    close: float
    height_far: float
    height_close: float


def _ankle_y(joints: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Mean y of the visible ankles [T] (NaN where neither is visible)."""
    y = joints[:, [27, 28], 1]
    v = vis[:, [27, 28]]
    n = v.sum(1)
    return torch.where(n > 0, torch.where(v, y, torch.zeros_like(y)).sum(1) / n.clamp_min(1), torch.nan)


def _top_y(joints: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
    """Smallest visible y of the head points (0..10) and shoulders [T] (NaN if none)."""
    idx = list(range(11)) + [11, 12]
    y = torch.where(vis[:, idx], joints[:, idx, 1], torch.full_like(joints[:, idx, 1], math.inf))
    top = y.min(1).values
    return torch.where(torch.isfinite(top), top, torch.nan)


def ankle_stats(joints: torch.Tensor, visibility: torch.Tensor | None = None, band: float = 0.05) -> AnkleStats:
    """Everybody Dance Now's statistics of one video: joints [T,33,2] (pixels).

    far/close: robust min/max of the per-frame ankle y (the quantiles `band` and 1 - band);
    height_far/height_close: the largest subject height (ankle y - top y) among frames whose ankle y is within
    `band` of the ankle range from far/close (as the paper takes the max height near each extreme).
    """
    _check_pose(joints, (2,))
    vis = _vis(joints, visibility)
    a, top = _ankle_y(joints, vis), _top_y(joints, vis)
    ok = torch.isfinite(a) & torch.isfinite(top)
    if int(ok.sum()) == 0:
        raise NeuralRenderError("no frame has a visible ankle and head: cannot normalise this pose sequence")
    a, h = a[ok], (a - top)[ok]
    far, close = torch.quantile(a, band).item(), torch.quantile(a, 1 - band).item()
    tol = max(band * (close - far), 1e-6)
    hf = h[a <= far + tol].max().item()
    hc = h[a >= close - tol].max().item()
    return AnkleStats(far, close, hf, hc)


def normalize_poses(joints: torch.Tensor, source: AnkleStats, target: AnkleStats,
                    visibility: torch.Tensor | None = None, eps: float = 1e-3) -> torch.Tensor:
    """Map source-video poses [T,33,2] into the target video's frame (Everybody Dance Now, sec. 4):

    per frame with source ankle y = a and alpha = (a - s.far) / (s.close - s.far) (0.5 when the source never
    moves in depth),
        translation  b = t.far + alpha (t.close - t.far) - a          (the ankle lands on the target's range)
        scale        s = t.hf / s.hf + alpha (t.hc / s.hc - t.hf / s.hf)
    and every joint p -> (p - (p_x, a)_anchor) * s + anchor + (0, b) with the anchor at the frame's ankle
    midpoint (x of the mean visible ankle): x is scaled about the ankles, not moved. Frames without a
    visible ankle use the previous frame's anchor (the first valid one at the start); NaN joints stay NaN.
    """
    _check_pose(joints, (2,))
    vis = _vis(joints, visibility)
    a = _ankle_y(joints, vis)
    ax = torch.where(vis[:, [27, 28]], joints[:, [27, 28], 0], torch.zeros_like(joints[:, [27, 28], 0]))
    ax = torch.where(vis[:, [27, 28]].any(1), ax.sum(1) / vis[:, [27, 28]].sum(1).clamp_min(1), torch.nan)
    a, ax = _hold(a), _hold(ax)
    span = source.close - source.far
    alpha = (a - source.far) / span if abs(span) > eps else torch.full_like(a, 0.5)
    b = target.far + alpha * (target.close - target.far) - a
    s_far = target.height_far / max(source.height_far, eps)
    s_close = target.height_close / max(source.height_close, eps)
    s = s_far + alpha * (s_close - s_far)
    anchor = torch.stack([ax, a], -1)[:, None]  # [T,1,2]
    shift = torch.stack([torch.zeros_like(b), b], -1)[:, None]
    return (joints - anchor) * s[:, None, None] + anchor + shift


def _hold(x: torch.Tensor) -> torch.Tensor:
    """Replace NaN entries of a [T] series by the previous valid value (the first valid one at the start)."""
    ok = torch.isfinite(x)
    if not bool(ok.any()):
        raise NeuralRenderError("no frame has a visible ankle: cannot normalise this pose sequence")
    idx = torch.where(ok, torch.arange(len(x)), torch.zeros_like(x, dtype=torch.long))
    idx = torch.cummax(idx, 0).values
    first = int(ok.nonzero()[0])
    idx = torch.where(torch.arange(len(x)) < first, torch.full_like(idx, first), idx)
    return x[idx]


# ------------------------------------------------------------------------------------------ temporal


def fill_missing(joints: torch.Tensor, visibility: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The documented fallback for missing joints: joints [T,J,D] (NaN or visibility 0 = missing) ->
    (filled [T,J,D], observed [T,J] bool).

    Each joint is linearly interpolated in time between its nearest observed frames and held constant before
    the first / after the last observation. A joint never observed in the sequence stays NaN (draw functions
    skip it). Observed joints are returned unchanged.
    """
    if joints.dim() != 3:
        raise NeuralRenderError(f"joints must be [T,J,D], got {tuple(joints.shape)}")
    obs = torch.isfinite(joints).all(-1)
    if visibility is not None:
        obs = obs & (torch.nan_to_num(visibility, nan=0.0) > 0)
    T = joints.shape[0]
    t = torch.arange(T)
    out = joints.clone()
    for j in range(joints.shape[1]):
        o = obs[:, j]
        if bool(o.all()) or not bool(o.any()):
            if not bool(o.any()):
                out[:, j] = float("nan")
            continue
        ts = t[o]
        nxt = torch.searchsorted(ts, t).clamp(max=len(ts) - 1)
        prv = (torch.searchsorted(ts, t, right=True) - 1).clamp(min=0)
        t0, t1 = ts[prv], ts[nxt]
        w = torch.where(t1 > t0, (t - t0).float() / (t1 - t0).clamp_min(1).float(), torch.zeros(T)).clamp(0, 1)
        w = w.to(joints.dtype)[:, None]
        out[:, j] = joints[t0, j] * (1 - w) + joints[t1, j] * w
        out[o, j] = joints[o, j]
    return out, obs


def smooth_poses(joints: torch.Tensor, sigma: float = 1.0, visibility: torch.Tensor | None = None) -> torch.Tensor:
    """Temporal Gaussian smoothing of noisy poses: joints [T,J,D] -> [T,J,D].

    Missing joints are first filled (`fill_missing`); the kernel (std `sigma` frames, radius 3 sigma) is
    renormalised at the sequence ends so a constant pose stays exactly constant. sigma 0 = fill only.
    """
    filled, _ = fill_missing(joints, visibility)
    if sigma <= 0 or joints.shape[0] < 2:
        return filled
    r = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=joints.dtype, device=joints.device) / sigma) ** 2)
    T = joints.shape[0]
    x = filled.permute(1, 2, 0).reshape(-1, 1, T)  # [J*D,1,T]
    nan = ~torch.isfinite(x)
    x0 = torch.where(nan, torch.zeros_like(x), x)
    ones = torch.ones(1, 1, T, dtype=x.dtype, device=x.device)
    num = torch.nn.functional.conv1d(x0, k.view(1, 1, -1), padding=r)
    den = torch.nn.functional.conv1d(ones, k.view(1, 1, -1), padding=r)
    y = torch.where(nan, x, num / den)
    return y.reshape(joints.shape[1], joints.shape[2], T).permute(2, 0, 1).contiguous()


# ------------------------------------------------------------------------------------------ drawing


def draw_pose(joints: torch.Tensor, height: int, width: int, visibility: torch.Tensor | None = None,
              style: str = "sticks", thickness: float | None = None, sigma: float | None = None) -> torch.Tensor:
    """Condition images of 2D poses: joints [B,33,2] (pixels) ->
    'sticks': [B,3,H,W], one LIMB_COLORS colour per POSE33_EDGES edge (draw.draw_skeleton);
    'heatmaps': [B,33,H,W] Gaussian heatmaps (draw.gaussian_heatmaps).
    Missing joints (NaN / visibility 0) are not drawn. thickness default max(1.5, H/32); sigma default H/32.
    """
    _check_pose(joints, (2,))
    if style == "sticks":
        t = max(1.5, height / 32) if thickness is None else thickness
        return draw_skeleton(joints, POSE33_EDGES, height, width, thickness=t,
                             colors=LIMB_COLORS.to(joints.device, joints.dtype), visibility=visibility)
    if style == "heatmaps":
        return gaussian_heatmaps(joints, height, width, sigma=max(1.0, height / 32) if sigma is None else sigma,
                                 visibility=visibility)
    raise NeuralRenderError(f"unknown pose drawing style {style!r}; valid: sticks, heatmaps")


def head_box(joints: torch.Tensor, height: int, width: int, visibility: torch.Tensor | None = None,
             scale: float = 1.0, min_size: int = 8) -> torch.Tensor:
    """Square head boxes: joints [B,33,2] -> int64 [B,4] (x0, y0, x1, y1), clipped/shifted into the image.

    Centre: mean of the visible face points (0..10); without any, 0.75 side above the shoulder midpoint; without
    shoulders either, the image centre. Side: max(min_size, scale * 0.6 * shoulder width, scale * 1.6 * face
    extent)."""
    _check_pose(joints, (2,))
    vis = _vis(joints, visibility)
    B = joints.shape[0]
    out = torch.zeros(B, 4, dtype=torch.long)
    jj = torch.nan_to_num(joints.detach()).cpu()
    vv = vis.cpu()
    for b in range(B):
        face = [k for k in range(11) if vv[b, k]]
        sh = [k for k in (11, 12) if vv[b, k]]
        side = float(min_size)
        if len(sh) == 2:
            side = max(side, scale * 0.6 * float((jj[b, 11] - jj[b, 12]).norm()))
        if face:
            c = jj[b, face].mean(0)
            if len(face) > 1:
                side = max(side, scale * 1.6 * float((jj[b, face].amax(0) - jj[b, face].amin(0)).max()))
        elif sh:
            c = jj[b, sh].mean(0) - torch.tensor([0.0, side * 0.75])
        else:
            c = torch.tensor([width / 2, height / 2])
        half = side / 2
        x0 = int(round(float(c[0]) - half))
        y0 = int(round(float(c[1]) - half))
        s = int(round(side))
        x0 = min(max(x0, 0), max(width - s, 0))
        y0 = min(max(y0, 0), max(height - s, 0))
        out[b] = torch.tensor([x0, y0, min(x0 + s, width), min(y0 + s, height)])
    return out
