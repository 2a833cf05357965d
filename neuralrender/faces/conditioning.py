"""Deep Video Portraits conditioning, parameter transfer (reenactment) and interactive edits.

Per frame, `conditioning_maps` rasterizes the fitted face model into COND_CHANNELS = 5 channels at size x size:
  0-2 correspondence: the MEAN face's vertex coordinates (normalised to [0,1]) as colour, so a pixel tells which
      point of the face it shows, whatever the identity or expression;
  3   diffuse shading: the SH light of the frame on a white surface (grey, averaged over colours);
  4   eyes: Gaussian blobs on the 12 eye landmarks (iBUG 37-48); their positions are the model's eye landmarks
      plus the detected-minus-fitted residual of the track (`eye_offsets`), which carries blinks and gaze that the
      6 expression blendshapes cannot (the paper tracks gaze separately; we have no gaze tracker). With
      `mouth=True` the same channel also gets blobs on 10 lip landmarks (MOUTH_IDS: corners, outer and inner lip
      middles), the model's plus the detected-minus-fitted residual (`mouth_offsets`): the SFM's mouth is a hole
      shaped by 6 blendshapes, and the lip landmarks make the mouth opening explicit to the renderer. With
      `mouth_fill=True` the inner-lip polygon of those landmarks (corners + inner lip) is also filled (coverage
      in [0,1], 4x4 supersampled): the opening as an area, not only as a distance between blobs.
`stack_window` stacks the last N frames' maps into channels (frame t-N+1 ... t; the paper uses N = 11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuralrender.faces.model import FaceModel, FaceParams, axis_angle_to_matrix
from neuralrender.graphics.draw import gaussian_heatmaps

__all__ = ["COND_CHANNELS", "EYE_IDS", "MOUTH_IDS", "conditioning_maps", "stack_window", "repeated_frames",
           "hold_index", "track_maps", "eye_offsets_from_track", "polygon_coverage", "transfer_params", "transfer_expression", "edit_params", "face2face_composite",
           "cond_to_rgb"]

COND_CHANNELS = 5
EYE_IDS = tuple(range(36, 48))
MOUTH_IDS = (48, 51, 54, 57, 61, 62, 63, 65, 66, 67)  # 0-based iBUG: corners, outer/inner lip middles (60, 64
#                                                      are undefined in the SFM)
INNER_LIP = (0, 4, 5, 6, 2, 7, 8, 9)  # indices into MOUTH_IDS: the mouth opening's outline (48 61 62 63 54 65 66 67)


def _correspondence_colors(model: FaceModel) -> torch.Tensor:
    m = model.mean
    lo, hi = m.min(0).values, m.max(0).values
    return (m - lo) / (hi - lo)


def eye_offsets_from_track(landmarks: torch.Tensor, fitted: torch.Tensor, ids: tuple[int, ...] = EYE_IDS
                           ) -> torch.Tensor:
    """Detected [T,68,2] minus fitted [T,68,2] landmarks `ids` (default the 12 eye landmarks; MOUTH_IDS for the
    lips) -> residual offsets [T,len(ids),2] in pixels (NaN -> 0)."""
    ids = list(ids)
    return torch.nan_to_num(landmarks[:, ids] - fitted[:, ids])


def conditioning_maps(model: FaceModel, p: FaceParams, width: int, height: int, size: int,
                      eye_offsets: torch.Tensor | None = None, eye_sigma: float | None = None,
                      backend: str = "auto", mouth: bool = False,
                      mouth_offsets: torch.Tensor | None = None, mouth_fill: bool = False) -> torch.Tensor:
    """Maps [B,5,size,size] for parameters p of frames width x height (rendered at size x size, same field of
    view). eye_offsets [B,12,2] / mouth_offsets [B,10,2] in pixels of the width x height frames (or None);
    mouth: also draw the lip landmarks into the eye channel; mouth_fill (with mouth): and fill the inner-lip
    polygon."""
    s = size / width
    q = p.replace(focal=p.focal * s)
    white_sh = q.sh.mean(-1, keepdim=True).expand_as(q.sh)
    white = (1.0 - model.skin).view(1, 1, 3).expand(1, model.num_verts, 3)  # skin + offset = 1: white surface
    r = model.render(q.replace(sh=white_sh, albedo=white), size, round(height * s), backend=backend,
                     extra={"corr": _correspondence_colors(model).unsqueeze(0)})
    shading = r["image"].mean(1, keepdim=True).clamp(0, 1.5) / 1.5 * r["mask"]
    corr = r["corr"]
    pts, _ = model.landmarks_2d(p, width, height)
    eyes = pts[:, list(EYE_IDS)]
    if eye_offsets is not None:
        eyes = eyes + eye_offsets.to(eyes)
    lips = None
    if mouth:
        lips = pts[:, list(MOUTH_IDS)]
        lips = lips if mouth_offsets is None else lips + mouth_offsets.to(lips)
        eyes = torch.cat([eyes, lips], 1)
    sigma = eye_sigma if eye_sigma is not None else max(0.75, size / 96)
    heat = gaussian_heatmaps(eyes * s, r["mask"].shape[-2], size, sigma=sigma).amax(1, keepdim=True)
    if lips is not None and mouth_fill:
        heat = torch.maximum(heat, polygon_coverage(lips[:, list(INNER_LIP)] * s, heat.shape[-2], size))
    return torch.cat([corr, shading, heat], 1)


def polygon_coverage(poly: torch.Tensor, height: int, width: int, ss: int = 4) -> torch.Tensor:
    """Filled polygons [B,K,2] (pixels, x right, y down, pixel centres at +0.5; any winding, even-odd rule) ->
    coverage [B,1,height,width] in [0,1], from ss x ss samples per pixel. NaN vertices fill nothing."""
    B, K, _ = poly.shape
    y = ((torch.arange(height * ss, dtype=poly.dtype, device=poly.device) + 0.5) / ss).view(1, -1, 1)
    x = ((torch.arange(width * ss, dtype=poly.dtype, device=poly.device) + 0.5) / ss).view(1, 1, -1)
    inside = torch.zeros(B, height * ss, width * ss, dtype=torch.bool, device=poly.device)
    for k in range(K):
        a, b = poly[:, k].view(B, 1, 1, 2), poly[:, (k + 1) % K].view(B, 1, 1, 2)
        ax, ay, bx, by = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
        spans = (ay > y) != (by > y)  # the edge crosses this sample row
        xcross = ax + (y - ay) * (bx - ax) / torch.where(spans, by - ay, torch.ones_like(y))
        inside ^= spans & (x < xcross)
    return F.avg_pool2d(inside.unsqueeze(1).to(poly.dtype), ss)


def stack_window(maps: torch.Tensor, window: int, repeats: torch.Tensor | None = None, diff: bool = False,
                 ahead: int = 0) -> torch.Tensor:
    """[T,C,H,W] -> [T,window*C,H,W]: for frame t the maps of t-window+1 ... t (clamped at frame 0), oldest first.
    With `repeats` [T] bool (frame t shows the same picture as t-1, `repeated_frames`): the past slots hold the last
    frame of each of the window-1 preceding runs of distinct pictures, so a repeated frame's window is its
    predecessor's up to the current slot. diff: difference-coded, the same information — every slot but the last
    holds the next slot's maps minus its own (the motion from one window frame to the next), the last slot the
    current frame's maps; zero past slots = a still window. ahead (offline use: the whole driving track is known):
    `ahead` of the window-1 slots before the current one hold the NEXT frames t+1 ... t+ahead instead of past ones
    (with `repeats`: the first frames of the next distinct pictures), nearest first, after the past slots; past the
    clip's last frame it is repeated. Slots: [t-window+1+ahead ... t-1, t+1 ... t+ahead, t]."""
    T = maps.shape[0]
    t = torch.arange(T)
    if not 0 <= ahead < window:
        raise ValueError(f"stack_window: ahead must be in [0, window - 1], got {ahead} for window {window}")
    back = window - 1 - ahead
    if repeats is None:
        idx = (t.unsqueeze(1) + torch.arange(-back, 1).unsqueeze(0)).clamp_min(0)  # [T,back+1]
        if ahead:
            idx = torch.cat([idx[:, :-1], (t.unsqueeze(1) + torch.arange(1, ahead + 1)).clamp_max(T - 1), idx[:, -1:]], 1)
        return _stack(maps, idx, diff)
    new = ~repeats.bool().cpu()
    new[0] = True
    run = torch.cumsum(new.long(), 0) - 1  # run of distinct pictures of each frame
    last = torch.zeros(int(run[-1]) + 1, dtype=torch.long).scatter_reduce(0, run, t, "amax")
    past = last[(run.unsqueeze(1) - torch.arange(back, 0, -1).unsqueeze(0)).clamp_min(0)]  # [T,back]
    idx = torch.cat([torch.minimum(past, t.unsqueeze(1)), t.unsqueeze(1)], 1)
    if ahead:
        first = torch.full_like(last, T).scatter_reduce(0, run, t, "amin")
        nxt = run.unsqueeze(1) + torch.arange(1, ahead + 1).unsqueeze(0)  # [T,ahead]
        fut = torch.where(nxt <= run[-1], first[nxt.clamp_max(int(run[-1]))], torch.full_like(nxt, T - 1))
        idx = torch.cat([idx[:, :-1], fut, idx[:, -1:]], 1)
    return _stack(maps, idx, diff)


def _stack(maps: torch.Tensor, idx: torch.Tensor, diff: bool) -> torch.Tensor:
    x = maps[idx]  # [T,window,C,H,W]
    if diff:
        x = torch.cat([x[:, 1:] - x[:, :-1], x[:, -1:]], 1)
    return x.flatten(1, 2)


def repeated_frames(frames: torch.Tensor, threshold: float = 2e-3) -> torch.Tensor:
    """Frames [T,3,H,W] in [0,1] -> [T] bool: frame t shows the same picture as frame t-1 (mean absolute difference
    below `threshold`; frame-rate conversion duplicates frames and the decoder's noise is ~1e-4)."""
    d = (frames[1:] - frames[:-1]).abs().flatten(1).mean(1)
    return torch.cat([torch.zeros(1, dtype=torch.bool), d < threshold])


def hold_index(repeats: torch.Tensor) -> torch.Tensor:
    """[T] bool (`repeated_frames`) -> [T] long: for every frame the first frame of its run of identical pictures
    (itself where the picture changes). Indexing a track with it holds the tracked parameters on repeated frames:
    the same picture gets the same conditioning (the tracker's jitter on identical pictures is removed)."""
    t = torch.arange(repeats.shape[0])
    new = ~repeats.bool().cpu()
    new[0] = True
    return torch.cummax(torch.where(new, t, torch.zeros_like(t)), 0).values


def track_maps(model: FaceModel, p: FaceParams, landmarks: torch.Tensor, fitted: torch.Tensor, width: int,
               height: int, size: int, mouth: bool = True, mouth_fill: bool = False, residual_scale: float = 1.0,
               chunk: int = 32) -> torch.Tensor:
    """Per-frame maps [T,5,size,size] of a track: parameters p [T] of width x height frames rendered with the eye
    (and with `mouth` the lip) residuals of the detected `landmarks` [T,68,2] minus the `fitted` model landmarks
    [T,68,2], times `residual_scale` (reenactment: the target's over the source's inter-ocular distance); in chunks
    of `chunk` frames, without gradients. The one path from a track to conditioning, for training and driving."""
    eyes = eye_offsets_from_track(landmarks, fitted)
    lips = eye_offsets_from_track(landmarks, fitted, MOUTH_IDS)
    if residual_scale != 1.0:
        eyes, lips = eyes * residual_scale, lips * residual_scale
    T = p.batch_size
    with torch.no_grad():
        return torch.cat([conditioning_maps(model, p.index(torch.arange(s, min(s + chunk, T))), width, height, size,
                                            eyes[s:s + chunk], mouth=mouth, mouth_offsets=lips[s:s + chunk],
                                            mouth_fill=mouth and mouth_fill)
                          for s in range(0, T, chunk)])


def cond_to_rgb(cond: torch.Tensor) -> torch.Tensor:
    """A viewable picture of the current frame's maps in a stacked cond [B,N*5,H,W] -> [B,3,H,W]: the
    correspondence colours times the shading, with the eye map in red."""
    c = cond[:, -COND_CHANNELS:]
    img = c[:, :3] * (0.4 + 0.6 * c[:, 3:4])
    return torch.maximum(img, torch.cat([c[:, 4:5], torch.zeros_like(c[:, :2])], 1)).clamp(0, 1)


# -------------------------------------------------------------------------------------------- reenactment
def transfer_expression(source: torch.Tensor, target: torch.Tensor, mode: str = "absolute") -> torch.Tensor:
    """Source expression weights [T,E] carried over to a target whose tracked weights are [N,E]: 'absolute' (as
    they are), 'relative' (the target's mean + the source's deviation from its own mean: the actors' resting faces
    differ, and the blendshapes also absorb identity the 40 identity components miss) or 'normalised' (relative,
    with each deviation scaled by the ratio of the target's to the source's standard deviation: the source's
    expression mapped onto the range the target's renderer was trained on)."""
    if mode == "absolute":
        return source.clone()
    ms, mt = source.mean(0, keepdim=True), target.mean(0, keepdim=True)
    if mode == "relative":
        return mt + (source - ms)
    if mode == "normalised":
        return mt + (source - ms) * target.std(0, keepdim=True) / source.std(0, keepdim=True).clamp_min(1e-6)
    raise ValueError(f"transfer_expression: mode must be absolute, relative or normalised, got {mode!r}")


def transfer_params(source: FaceParams, target: FaceParams, pose: str = "relative",
                    expression: str = "absolute", light: str = "cycle") -> FaceParams:
    """Full-head reenactment parameters: the target's identity, albedo, camera and (per-frame, cycled) lighting;
    the source's expression (`transfer_expression(..., expression)`); head pose by `pose`: 'relative' (the
    target's mean pose + the source's deviation from its own mean pose; translation scaled by the depth ratio),
    'source' (the source's absolute pose) or 'target' (the target's pose, cycled: expression-only transfer as in
    Face2Face). Lighting by `light`: 'cycle' (the target's per-frame SH, cycled) or 'mean' (the target's mean SH
    on every frame: the per-frame fit also absorbs the target's own mouth and eye changes, which would then leak
    into the reenactment in step with the target's frames instead of the source's). Returns len(source) frames."""
    T = source.batch_size
    cyc = torch.arange(T, device=source.rotation.device) % target.batch_size
    if pose == "target":
        rot, trans = target.rotation[cyc], target.translation[cyc]
    elif pose == "source":
        rot, trans = source.rotation, source.translation
    elif pose == "relative":
        rs, rt = source.rotation.mean(0, keepdim=True), target.rotation.mean(0, keepdim=True)
        ts, tt = source.translation.mean(0, keepdim=True), target.translation.mean(0, keepdim=True)
        rot = rt + (source.rotation - rs)
        trans = tt + (source.translation - ts) * (tt[:, 2:] / ts[:, 2:])
    else:
        raise ValueError(f"transfer_params: pose must be relative, source or target, got {pose!r}")
    focal = target.focal[:1].expand(T) if target.focal.shape[0] else source.focal
    expr = transfer_expression(source.expression, target.expression, expression)
    if light == "cycle":
        sh = target.sh[cyc]
    elif light == "mean":
        sh = target.sh.mean(0, keepdim=True).expand(T, *target.sh.shape[1:]).clone()
    else:
        raise ValueError(f"transfer_params: light must be cycle or mean, got {light!r}")
    return FaceParams(target.identity, expr, rot, trans, focal.clone(), sh, target.albedo)


def edit_params(model: FaceModel, p: FaceParams, yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0,
                expression: dict[str, float] | None = None) -> FaceParams:
    """Interactive edits: turn the head (radians, applied in camera space about the head's centre) and set
    blendshape weights by name (e.g. {"surprise": 0.8} opens the mouth)."""
    rot = p.rotation
    if yaw or pitch or roll:
        d = torch.tensor([pitch, yaw, roll], dtype=rot.dtype, device=rot.device).expand_as(rot)
        R = axis_angle_to_matrix(d) @ axis_angle_to_matrix(rot)
        rot = _matrix_to_axis_angle(R)
    expr = p.expression.clone()
    for name, val in (expression or {}).items():
        if name not in model.blendshape_names:
            raise ValueError(f"edit_params: unknown expression {name!r}; choose from {model.blendshape_names}")
        expr[:, model.blendshape_names.index(name)] = val
    return p.replace(rotation=rot, expression=expr)


def _matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    from neuralrender.graphics.cameras import matrix_to_quaternion

    q = matrix_to_quaternion(R)  # (w, x, y, z), w >= 0
    v = q[..., 1:]
    n = v.norm(dim=-1, keepdim=True)
    ang = 2 * torch.atan2(n, q[..., :1])
    return torch.where(n > 1e-8, v / n.clamp_min(1e-12) * ang, 2 * v)


def face2face_composite(model: FaceModel, p: FaceParams, frames: torch.Tensor, feather: int = 2,
                        backend: str = "auto") -> torch.Tensor:
    """Face2Face-style reenactment output: re-render the face model with parameters p [T] and paste it into
    frames [T,3,H,W] inside its (slightly eroded, feathered) mask -> [T,3,H,W]."""
    T, _, H, W = frames.shape
    out = []
    with torch.no_grad():
        for s in range(0, T, 32):
            idx = torch.arange(s, min(s + 32, T))
            r = model.render(p.index(idx.to(p.rotation.device)), W, H, backend=backend)
            m = r["mask"]
            if feather > 0:
                k = 2 * feather + 1
                m = -torch.nn.functional.max_pool2d(-m, k, 1, feather)  # erode
                m = torch.nn.functional.avg_pool2d(m, k, 1, feather)  # feather
            out.append(frames[idx] * (1 - m) + r["image"].clamp(0, 1) * m)
    return torch.cat(out)

