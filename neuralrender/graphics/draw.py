"""Draw conditions into image tensors: landmarks, skeletons, Gaussian heatmaps, label maps and edges.

Points are pixel coordinates (x right, y down) with pixel centres at +0.5 (pixel (i, j) is centred at
x = j + 0.5, y = i + 0.5), as produced by `Cameras.project`. Outputs are float32 [B,C,H,W] in [0,1].
Discs and sticks are anti-aliased with a one-pixel linear ramp (coverage = clamp(r + 0.5 - d, 0, 1),
d the distance from the pixel centre), so they are differentiable w.r.t. the point positions wherever
the ramp is hit. Points that are NaN or have visibility 0 are not drawn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from neuralrender.errors import NeuralRenderError

__all__ = [
    "pixel_centers",
    "draw_landmarks",
    "draw_skeleton",
    "gaussian_heatmaps",
    "label_map_to_onehot",
    "colorize_labels",
    "label_palette",
    "edge_map_from_labels",
]


def pixel_centers(height: int, width: int, dtype=torch.float32, device=None) -> torch.Tensor:
    """[H,W,2] pixel-centre coordinates (x, y) = (j + 0.5, i + 0.5)."""
    y = torch.arange(height, dtype=dtype, device=device) + 0.5
    x = torch.arange(width, dtype=dtype, device=device) + 0.5
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    return torch.stack([xx, yy], -1)


def _colors(colors, n: int, batch: int, ref: torch.Tensor) -> torch.Tensor:
    """colors None | [3] | [N,3] | [B,N,3] -> [B,N,3]."""
    if colors is None:
        c = ref.new_ones(3)
    else:
        c = torch.as_tensor(colors, dtype=ref.dtype, device=ref.device)
    if c.dim() == 1:
        c = c.expand(n, -1)
    if c.dim() == 2:
        c = c.unsqueeze(0)
    if c.shape[-2] != n:
        raise NeuralRenderError(f"colors must have {n} rows (one per item), got {tuple(c.shape)}")
    return c.expand(batch, n, c.shape[-1])


def _box(pts, pad: float, height: int, width: int):
    """Integer pixel box (y0, y1, x0, x1) covering the (x, y) points (python floats) +- pad, clipped."""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0 = max(0, int(math.floor(min(xs) - pad)))
    y0 = max(0, int(math.floor(min(ys) - pad)))
    x1 = min(width, int(math.ceil(max(xs) + pad)) + 1)
    y1 = min(height, int(math.ceil(max(ys) + pad)) + 1)
    return y0, y1, x0, x1


def _paint(out: torch.Tensor, b: int, box, coverage: torch.Tensor, color: torch.Tensor) -> None:
    """'Over' compositing of one item into out[b] inside box: coverage [h,w], color [C]."""
    y0, y1, x0, x1 = box
    old = out[b, :, y0:y1, x0:x1].clone()
    out[b, :, y0:y1, x0:x1] = old * (1 - coverage) + color[:, None, None] * coverage


def _canvas(B: int, C: int, height: int, width: int, ref: torch.Tensor, background) -> torch.Tensor:
    if background is None:
        return ref.new_zeros(B, C, height, width)
    if tuple(background.shape) != (B, C, height, width):
        raise NeuralRenderError(f"background must be [{B},{C},{height},{width}], got {tuple(background.shape)}")
    return background.to(ref.dtype).clone()


def _visible(points: torch.Tensor, visibility: torch.Tensor | None) -> torch.Tensor:
    vis = torch.isfinite(points).all(-1)
    if visibility is not None:
        vis = vis & (visibility > 0)
    return vis


def draw_landmarks(points: torch.Tensor, height: int, width: int, radius: float = 2.0, colors=None,
                   visibility: torch.Tensor | None = None, background: torch.Tensor | None = None) -> torch.Tensor:
    """Anti-aliased discs: points [B,N,2] (pixels) -> [B,3,H,W] (or [B,C,H,W] for C-channel colors).

    colors: None (white) | [3] | [N,3] | [B,N,3]; visibility [B,N] (0 = skip); background [B,C,H,W].
    Later points paint over earlier ones.
    """
    if points.dim() != 3 or points.shape[-1] != 2:
        raise NeuralRenderError(f"points must be [B,N,2], got {tuple(points.shape)}")
    B, N, _ = points.shape
    vis = _visible(points, visibility)
    col = _colors(colors, N, B, points)
    out = _canvas(B, col.shape[-1], height, width, points, background)
    grid = pixel_centers(height, width, points.dtype, points.device)  # [H,W,2]
    visible = vis.cpu().tolist()
    where = torch.nan_to_num(points.detach()).cpu().tolist()
    for k in range(N):
        for b in range(B):
            if visible[b][k]:
                box = _box([where[b][k]], radius + 1.0, height, width)
                if box[0] < box[1] and box[2] < box[3]:
                    _paint(out, b, box, _disc(grid[box[0]:box[1], box[2]:box[3]], points[b, k], radius), col[b, k])
    return out


def _disc(grid: torch.Tensor, centre: torch.Tensor, radius: float) -> torch.Tensor:
    """Anti-aliased disc coverage: grid [h,w,2], centre [2] -> [h,w]."""
    d = torch.sqrt(((grid - centre) ** 2).sum(-1) + 1e-20)  # eps keeps the gradient finite at d = 0
    return (radius + 0.5 - d).clamp(0, 1)


def _segment_distance(grid: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from each pixel centre grid [h,w,2] to the segment a-b ([2] each) -> [h,w]."""
    ab = b - a
    ap = grid - a
    t = ((ap * ab).sum(-1) / (ab * ab).sum().clamp_min(1e-12)).clamp(0, 1)
    return torch.sqrt(((ap - t[..., None] * ab) ** 2).sum(-1) + 1e-20)


def draw_skeleton(joints: torch.Tensor, edges, height: int, width: int, thickness: float = 3.0, colors=None,
                  visibility: torch.Tensor | None = None, joint_radius: float = 0.0,
                  background: torch.Tensor | None = None) -> torch.Tensor:
    """Anti-aliased sticks: joints [B,J,2] (pixels), edges [E,2] (joint index pairs) -> [B,C,H,W].

    thickness: stick width in pixels; colors: None | [3] | [E,3] | [B,E,3] (one per edge);
    visibility [B,J]: an edge is drawn only if both ends are visible (and finite);
    joint_radius > 0 also draws a disc on every visible joint in the colour of its first edge.
    Differentiable w.r.t. joint positions (through the anti-aliasing ramp).
    """
    if joints.dim() != 3 or joints.shape[-1] != 2:
        raise NeuralRenderError(f"joints must be [B,J,2], got {tuple(joints.shape)}")
    e = torch.as_tensor(edges, dtype=torch.long, device=joints.device).reshape(-1, 2)
    B, J, _ = joints.shape
    if e.numel() and (e.min() < 0 or e.max() >= J):
        raise NeuralRenderError(f"edges index joints outside [0, {J - 1}]")
    E = e.shape[0]
    vis = _visible(joints, visibility)
    col = _colors(colors, E, B, joints)
    out = _canvas(B, col.shape[-1], height, width, joints, background)
    grid = pixel_centers(height, width, joints.dtype, joints.device)
    evis = (vis[:, e[:, 0]] & vis[:, e[:, 1]]).cpu().tolist()
    where = torch.nan_to_num(joints.detach()).cpu().tolist()
    el = e.cpu().tolist()
    pad = thickness / 2 + 1.0
    for k, (ja, jb) in enumerate(el):
        for b in range(B):
            if not evis[b][k]:
                continue
            pa, pb = joints[b, ja], joints[b, jb]
            box = _box([where[b][ja], where[b][jb]], pad, height, width)
            if box[0] < box[1] and box[2] < box[3]:
                d = _segment_distance(grid[box[0]:box[1], box[2]:box[3]], pa, pb)
                _paint(out, b, box, (thickness / 2 + 0.5 - d).clamp(0, 1), col[b, k])
    if joint_radius > 0 and E:
        first_edge = [-1] * J
        for k in range(E - 1, -1, -1):
            first_edge[el[k][0]] = first_edge[el[k][1]] = k
        jvis = vis.cpu().tolist()
        for j in range(J):
            for b in range(B):
                if first_edge[j] < 0 or not jvis[b][j]:
                    continue
                box = _box([where[b][j]], joint_radius + 1.0, height, width)
                if box[0] < box[1] and box[2] < box[3]:
                    _paint(out, b, box, _disc(grid[box[0]:box[1], box[2]:box[3]], joints[b, j], joint_radius),
                           col[b, first_edge[j]])
    return out


def gaussian_heatmaps(points: torch.Tensor, height: int, width: int, sigma: float = 2.0,
                      visibility: torch.Tensor | None = None) -> torch.Tensor:
    """exp(-|c - p|^2 / (2 sigma^2)) at every pixel centre c: points [B,N,2] (pixels) -> [B,N,H,W].

    Peak value 1 when a point sits on a pixel centre; invisible/NaN points give all-zero maps.
    """
    if points.dim() != 3 or points.shape[-1] != 2:
        raise NeuralRenderError(f"points must be [B,N,2], got {tuple(points.shape)}")
    vis = _visible(points, visibility)
    p = torch.where(vis[..., None], points, torch.zeros_like(points))
    x = torch.arange(width, dtype=points.dtype, device=points.device) + 0.5
    y = torch.arange(height, dtype=points.dtype, device=points.device) + 0.5
    gx = torch.exp(-((x - p[..., :1]) ** 2) / (2 * sigma**2))  # [B,N,W]  (separable Gaussian)
    gy = torch.exp(-((y - p[..., 1:]) ** 2) / (2 * sigma**2))  # [B,N,H]
    return gy.unsqueeze(-1) * gx.unsqueeze(-2) * vis[..., None, None].to(points.dtype)


def _labels_bhw(labels: torch.Tensor) -> torch.Tensor:
    if labels.dim() == 4:
        if labels.shape[1] != 1:
            raise NeuralRenderError(f"label map must be [B,H,W] or [B,1,H,W], got {tuple(labels.shape)}")
        labels = labels[:, 0]
    if labels.dim() != 3:
        raise NeuralRenderError(f"label map must be [B,H,W] or [B,1,H,W], got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point:
        raise NeuralRenderError(f"label map must hold integers, got {labels.dtype}")
    return labels.long()


def label_map_to_onehot(labels: torch.Tensor, num_classes: int, ignore_index: int | None = -1) -> torch.Tensor:
    """Integer labels [B,H,W] or [B,1,H,W] -> float one-hot [B,K,H,W].

    Pixels equal to ignore_index (default -1, the background of render_gbuffer) are all-zero; other
    labels outside [0, K) raise.
    """
    lab = _labels_bhw(labels)
    ign = lab == ignore_index if ignore_index is not None else torch.zeros_like(lab, dtype=torch.bool)
    bad = (~ign) & ((lab < 0) | (lab >= num_classes))
    if bool(bad.any()):
        raise NeuralRenderError(
            f"label map has values outside [0, {num_classes - 1}] (e.g. {int(lab[bad][0])}); "
            f"raise num_classes or set ignore_index")
    oh = F.one_hot(torch.where(ign, torch.zeros_like(lab), lab), num_classes).permute(0, 3, 1, 2).float()
    return oh * (~ign).unsqueeze(1)


def label_palette(n: int, device=None) -> torch.Tensor:
    """[n,3] distinct colours in [0,1]: the PASCAL VOC bit-interleaved palette (0 = black)."""
    ids = torch.arange(n, device=device)
    rgb = torch.zeros(n, 3, dtype=torch.long, device=device)
    c = ids.clone()
    for shift in range(7, -1, -1):
        for ch in range(3):
            rgb[:, ch] |= ((c >> ch) & 1) << shift
        c = c >> 3
    return rgb.float() / 255.0


def colorize_labels(labels: torch.Tensor, num_classes: int | None = None, palette: torch.Tensor | None = None,
                    background=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """Integer labels [B,H,W] or [B,1,H,W] -> RGB [B,3,H,W]; negative labels get `background`.

    palette [K,3] in [0,1]; default `label_palette` of size max(num_classes, max label + 1) shifted by
    one so that label 0 is not black.
    """
    lab = _labels_bhw(labels)
    k = int(lab.max().item()) + 1 if lab.numel() else 1
    k = max(k, num_classes or 0, 1)
    pal = label_palette(k + 1, lab.device)[1:] if palette is None else palette.to(lab.device).float()
    if pal.shape[0] < k:
        raise NeuralRenderError(f"palette has {pal.shape[0]} colours but labels go up to {k - 1}")
    bg = torch.as_tensor(background, dtype=pal.dtype, device=lab.device)
    rgb = pal[lab.clamp_min(0)]  # [B,H,W,3]
    rgb = torch.where((lab < 0)[..., None], bg, rgb)
    return rgb.permute(0, 3, 1, 2).contiguous()


def edge_map_from_labels(labels: torch.Tensor) -> torch.Tensor:
    """Boundaries of a label/instance map: [B,H,W] or [B,1,H,W] ints -> [B,1,H,W] float in {0,1}.

    A pixel is 1 when one of its 4-neighbours has a different label (both sides of a boundary are
    marked), as in pix2pixHD's instance edge map.
    """
    lab = _labels_bhw(labels)
    edge = torch.zeros_like(lab, dtype=torch.bool)
    dh = lab[:, :, 1:] != lab[:, :, :-1]
    dv = lab[:, 1:, :] != lab[:, :-1, :]
    edge[:, :, 1:] |= dh
    edge[:, :, :-1] |= dh
    edge[:, 1:, :] |= dv
    edge[:, :-1, :] |= dv
    return edge.unsqueeze(1).float()
