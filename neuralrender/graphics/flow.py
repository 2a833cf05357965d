"""Optical flow between frames: exact flow for rendered views, classical estimators for real video, and the
temporal warping error.

All flows follow graphics.warp's BACKWARD convention: `flow` [B,2,H,W] (pixels, dx then dy) is defined on the
pixels of the *target* frame and points to where that content is in the *source* frame, so
warp(source, flow) ~= target wherever the content is visible in both.

- `rigid_flow`: exact flow for a static scene seen by two known cameras, from the target view's depth (the
  graphics core's G-buffer): unproject every pixel, project it into the source camera. Background pixels
  (depth 0) are treated as points at infinity (their flow is the rotation-only homography) or marked invalid.
  With the source view's depth, points hidden in the source (disocclusions) are masked out.
- `optical_flow`: OpenCV DIS or Farneback flow for real frames (cv2 imported lazily).
- `forward_backward_mask`: occlusion mask of an estimated flow from a forward-backward consistency check.
- `warping_error`: the temporal warping error of a video (vid2vid's temporal-consistency score).
"""

from __future__ import annotations

import torch

from neuralrender.errors import MissingDependencyError, NeuralRenderError
from neuralrender.graphics.warp import warp

__all__ = ["rigid_flow", "optical_flow", "forward_backward_mask", "warping_error", "flow_to_rgb"]


def _depth_bhw(depth: torch.Tensor, name: str) -> torch.Tensor:
    if depth.dim() == 4 and depth.shape[1] == 1:
        depth = depth[:, 0]
    if depth.dim() != 3:
        raise NeuralRenderError(f"rigid_flow: {name} must be [B,H,W] or [B,1,H,W], got {tuple(depth.shape)}")
    return depth


def rigid_flow(depth: torch.Tensor, cameras, source_cameras, source_depth: torch.Tensor | None = None,
               rel_tol: float = 0.02, background: str = "infinity") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact flow of a static scene: target view (depth [B,H,W] camera z, 0 = background, seen by `cameras`) ->
    source view (`source_cameras`, same image size).

    Returns (flow [B,2,H,W] in pixels, valid [B,1,H,W] float in {0,1}): warp(source_image, flow) reproduces the
    target image where valid. valid is 0 where the point lands outside the source image or behind its camera,
    on background pixels when background='invalid', and, when source_depth is given, where the point is
    occluded in the source view (its depth there differs from source_depth at the landing pixel, nearest
    sample, by more than rel_tol relative).
    """
    depth = _depth_bhw(depth, "depth")
    B, H, W = depth.shape
    if (cameras.height, cameras.width) != (H, W) or (source_cameras.height, source_cameras.width) != (H, W):
        raise NeuralRenderError(f"rigid_flow: cameras are {cameras.width}x{cameras.height} and "
                                f"{source_cameras.width}x{source_cameras.height}, depth is {W}x{H}")
    if background not in ("infinity", "invalid"):
        raise NeuralRenderError(f"rigid_flow: background must be 'infinity' or 'invalid', got {background!r}")
    cams, src = cameras.to(depth.device), source_cameras.to(depth.device)
    xy = cams.pixel_grid().reshape(1, H * W, 2).expand(B, -1, -1).to(depth.dtype)
    z = depth.reshape(B, H * W)
    fg = z > 0
    pts = cams.unproject(xy, torch.where(fg, z, torch.ones_like(z)))
    if background == "infinity":
        # A point at infinity along the pixel's ray: far along the ray from the camera centre.
        centers = cams.centers[:, None, :]
        far = centers + (pts - centers) * 1e4
        pts = torch.where(fg[..., None], pts, far)
    xy_src, z_src = src.project(pts)
    flow = (xy_src - xy).reshape(B, H, W, 2).permute(0, 3, 1, 2).contiguous()
    x, y = xy_src[..., 0], xy_src[..., 1]
    valid = (z_src > 0) & (x >= 0) & (x <= W) & (y >= 0) & (y <= H)
    if background == "invalid":
        valid = valid & fg
    if source_depth is not None:
        sd = _depth_bhw(source_depth, "source_depth")
        if sd.shape != depth.shape:
            raise NeuralRenderError(f"rigid_flow: source_depth {tuple(sd.shape)} != depth {tuple(depth.shape)}")
        landed = warp(sd[:, None], flow, padding="border", mode="nearest").reshape(B, H * W)
        same = torch.where(fg, (landed - z_src).abs() <= rel_tol * z_src.abs(), landed <= 0)
        valid = valid & same
    return flow, valid.reshape(B, 1, H, W).to(depth.dtype)


def optical_flow(target: torch.Tensor, source: torch.Tensor, method: str = "dis") -> torch.Tensor:
    """Classical optical flow on real frames: target, source [B,3,H,W] (or [B,1,H,W]) in [0,1] -> flow [B,2,H,W]
    with warp(source, flow) ~= target. method: 'dis' (OpenCV DIS, medium preset) | 'farneback'.
    Runs on the CPU through OpenCV (opencv-python-headless); the result is on the input's device."""
    try:
        import cv2
    except ImportError as e:
        raise MissingDependencyError("opencv-python-headless", "video", "classical optical flow") from e
    import numpy as np

    if target.shape != source.shape or target.dim() != 4:
        raise NeuralRenderError(f"optical_flow: target {tuple(target.shape)} and source {tuple(source.shape)} must "
                                f"be equal [B,C,H,W]")
    if method not in ("dis", "farneback"):
        raise NeuralRenderError(f"optical_flow: method must be 'dis' or 'farneback', got {method!r}")

    def gray(x):
        x = x.detach().float().cpu().clamp(0, 1)
        g = x.mean(0) if x.shape[0] != 3 else 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
        return (g.numpy() * 255).round().astype(np.uint8)

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) if method == "dis" else None
    out = []
    for t, s in zip(target, source):
        a, b = gray(t), gray(s)
        # OpenCV: flow computed from prev=a to next=b satisfies a(y, x) ~ b(y + fy, x + fx): our backward flow.
        f = dis.calc(a, b, None) if dis is not None else cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        out.append(torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1))
    return torch.stack(out).to(target.device, torch.float32)


def forward_backward_mask(flow_fw: torch.Tensor, flow_bw: torch.Tensor, alpha: float = 0.01, beta: float = 0.5) -> torch.Tensor:
    """Occlusion mask of a target->source flow from its consistency with the source->target flow.

    flow_fw [B,2,H,W] on the target's pixels, flow_bw [B,2,H,W] on the source's. A pixel is kept (1) when
    |fw + bw(p + fw)|^2 < alpha (|fw|^2 + |bw(p + fw)|^2) + beta (Sundaram et al. 2010). Returns [B,1,H,W].
    """
    bw = warp(flow_bw, flow_fw, padding="border")
    diff = ((flow_fw + bw) ** 2).sum(1, keepdim=True)
    bound = alpha * ((flow_fw**2).sum(1, keepdim=True) + (bw**2).sum(1, keepdim=True)) + beta
    return (diff < bound).to(flow_fw.dtype)


def warping_error(video: torch.Tensor, flows: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
    """Temporal warping error of videos [B,T,C,H,W]: mean over t >= 1 of the masked mean squared difference
    between frame t and frame t-1 warped by the ground-truth flow flows[:, t] (frame t -> t-1) -> [B].

    flows [B,T,2,H,W] (flows[:, 0] unused), masks [B,T,1,H,W] (1 = visible in both frames) or None.
    """
    B, T = video.shape[:2]
    if T < 2:
        raise NeuralRenderError(f"warping_error needs at least 2 frames, got {T}")
    if flows.shape[:2] != (B, T) or flows.shape[2] != 2:
        raise NeuralRenderError(f"warping_error: flows must be [B,{T},2,H,W], got {tuple(flows.shape)}")
    prev = video[:, :-1].flatten(0, 1)
    cur = video[:, 1:].flatten(0, 1)
    warped = warp(prev, flows[:, 1:].flatten(0, 1), padding="border")
    m = torch.ones_like(cur[:, :1]) if masks is None else masks[:, 1:].flatten(0, 1)
    err = (((warped - cur) ** 2).mean(1, keepdim=True) * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)
    return err.reshape(B, T - 1).mean(1)


def flow_to_rgb(flow: torch.Tensor, max_magnitude: float | None = None) -> torch.Tensor:
    """Visualise flow [B,2,H,W] as colour [B,3,H,W] in [0,1]: hue = direction, saturation = magnitude."""
    dx, dy = flow[:, 0], flow[:, 1]
    mag = torch.sqrt(dx**2 + dy**2)
    m = max_magnitude if max_magnitude is not None else float(mag.max().clamp_min(1e-6))
    hue = (torch.atan2(dy, dx) / (2 * torch.pi)) % 1.0
    sat = (mag / m).clamp(0, 1)
    k = (hue[:, None] * 6 + torch.tensor([5.0, 3.0, 1.0], device=flow.device)[None, :, None, None]) % 6
    rgb = 1 - sat[:, None] * (torch.minimum(k, 4 - k).clamp(0, 1))
    return rgb
