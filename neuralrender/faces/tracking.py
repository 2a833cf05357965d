"""Face2Face-style monocular face tracking by analysis-by-synthesis through our rasterizer.

Energy (Thies et al. 2016, simplified; all terms are means so the weights are comparable across video lengths):

    E = w_lm  * mean ||pi(model landmark) - detected landmark||^2 / s^2       (s = 1% of the image size)
      + w_ph  * mean over covered pixels of sqrt(||I_render - I_frame||_2^2 + eps^2)   (robust L2,1 norm)
      + w_id ||identity||^2 + w_expr mean ||expression||^2 + w_alb (||offset||^2 + edge smoothness)
      + w_smooth * mean ||x_{t+1} - x_t||^2 over expression, rotation, translation (temporal smoothness)

Identity and albedo are shared by the whole video; rotation, translation, expression and SH lighting are per
frame. Schedule (coarse to fine): (1) rigid pose on the landmarks, (2) + identity and expression on the
landmarks, (3) dense photometric term at the `photo_sizes` resolutions (e.g. 64 then 128), batched over frames,
Adam steps. Frames without a detected face (valid=False) get no data term and their per-frame parameters are
linearly interpolated from the nearest tracked frames afterwards (reported as missing).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.faces.landmarks import inter_ocular, interpolate_missing
from neuralrender.faces.model import FaceModel, FaceParams

__all__ = ["TrackConfig", "Track", "track_video", "landmark_errors", "photometric_error", "photometric_term",
           "save_track", "load_track", "overlay_frames"]


@dataclass
class TrackConfig:
    """Tracking hyperparameters (see the module doc for the energy)."""

    num_identity: int = 40
    focal: float | None = None  # pixels; None = 2 x image width (a ~28 degree field of view)
    rigid_iters: int = 150
    landmark_iters: int = 300
    photo_sizes: tuple[int, ...] = (64, 128)
    photo_epochs: tuple[int, ...] = (6, 2)
    batch_frames: int = 48
    w_landmark: float = 1.0
    w_photo: float = 10.0
    w_identity: float = 1e-3
    w_expression: float = 1e-3
    w_albedo: float = 1.0
    w_smooth: float = 1.0
    lr: float = 0.02
    photometric: bool = True
    photo_geometry: bool = True  # False: the photometric stage fits only lighting and albedo (ablation)
    smooth: bool = True
    backend: str = "auto"
    quiet: bool = False
    threads: int | None = 1  # torch CPU threads while tracking (1 is fastest on a loaded machine); None = as is


@dataclass
class Track:
    """The result: params (per frame, T rows; identity/albedo shared), target landmarks [T,68,2], valid [T],
    per-frame errors lm_px [T], lm_iod [T] (fraction of the inter-ocular distance), photo [T] (mean L1 over the
    rendered face at `photo_size`), image size, timings (seconds per stage) and the config used."""

    params: FaceParams
    landmarks: torch.Tensor
    valid: torch.Tensor
    width: int
    height: int
    lm_px: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    lm_iod: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    photo: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    photo_size: int = 0
    timings: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    lm_pred: torch.Tensor | None = None  # fitted landmarks [T,68,2] (undefined ones NaN)

    @property
    def num_frames(self) -> int:
        return self.params.batch_size

    def summary(self) -> dict:
        ok = self.valid.bool()
        iod = self.lm_iod[ok]
        return {"frames": self.num_frames, "missing": int((~ok).sum()),
                "lm_iod_mean_pct": 100 * float(iod.mean()) if iod.numel() else float("nan"),
                "lm_iod_p95_pct": 100 * float(iod.quantile(0.95)) if iod.numel() else float("nan"),
                "lm_px_mean": float(self.lm_px[ok].mean()) if ok.any() else float("nan"),
                "photo_l1_mean": float(self.photo[ok].mean()) if self.photo.numel() and ok.any() else float("nan"),
                "photo_size": self.photo_size, "seconds": self.timings,
                "jitter_px": self.jitter(), "detected_jitter_px": _accel(self.landmarks)}

    def jitter(self) -> float:
        """Mean second difference (acceleration) of the fitted landmark positions in pixels: a flicker measure
        (lower = smoother); compare with the same number on the detected landmarks (`detected_jitter`)."""
        if self.lm_pred is None or self.lm_pred.shape[0] < 3:
            return float("nan")
        return _accel(self.lm_pred)


def _accel(x: torch.Tensor) -> float:
    if x.shape[0] < 3:
        return float("nan")
    n = (x[2:] - 2 * x[1:-1] + x[:-2]).norm(dim=-1)
    return float(n[torch.isfinite(n)].mean())


# ------------------------------------------------------------------------------------------------ terms
def landmark_errors(model: FaceModel, p: FaceParams, target: torch.Tensor, width: int, height: int):
    """Per-frame mean landmark error over the defined landmarks: (pixels [T], fraction of inter-ocular [T])."""
    pred, mask = model.landmarks_2d(p, width, height, target)
    d = torch.linalg.norm(pred[:, mask] - target[:, mask], dim=-1).mean(-1)
    return d, d / inter_ocular(target).clamp_min(1e-6)


def photometric_term(rendered: torch.Tensor, mask: torch.Tensor, frames: torch.Tensor, eps: float = 1e-3):
    """Robust (L2,1) photometric energy: mean over covered pixels of sqrt(||r||^2 + eps^2), r the RGB residual.
    rendered, frames [B,3,H,W]; mask [B,1,H,W] -> scalar."""
    r2 = ((rendered - frames) ** 2).sum(1, keepdim=True)
    return ((r2 + eps * eps).sqrt() * mask).sum() / mask.sum().clamp_min(1.0)


def photometric_error(model: FaceModel, p: FaceParams, frames: torch.Tensor, size: int, batch: int = 48,
                      backend: str = "auto") -> torch.Tensor:
    """Mean absolute error per frame [T] over the rendered face region at size x size (frames [T,3,H,W])."""
    out = []
    with torch.no_grad():
        for s in range(0, p.batch_size, batch):
            idx = torch.arange(s, min(s + batch, p.batch_size))
            q = _scaled(p.index(idx), frames.shape[-1], size)
            r = model.render(q, size, size, backend=backend)
            tgt = _resize(frames[idx], size)
            err = ((r["image"] - tgt).abs().mean(1, keepdim=True) * r["mask"]).sum((1, 2, 3))
            out.append(err / r["mask"].sum((1, 2, 3)).clamp_min(1.0))
    return torch.cat(out)


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    if frames.shape[-1] == size and frames.shape[-2] == size:
        return frames
    return F.interpolate(frames, size=(size, size), mode="area")


def _scaled(p: FaceParams, width: int, size: int) -> FaceParams:
    """Parameters for rendering a width-pixel image at size pixels (focal scales; pose stays)."""
    return p.replace(focal=p.focal * (size / width))


# ------------------------------------------------------------------------------------------------ optimizer
class _Vars(torch.nn.Module):
    """The optimised variables in well-scaled units (translation in decimetres, rotation in radians)."""

    def __init__(self, p: FaceParams):
        super().__init__()
        self.identity = torch.nn.Parameter(p.identity.clone())
        self.expression = torch.nn.Parameter(p.expression.clone())
        self.rotation = torch.nn.Parameter(p.rotation.clone())
        self.trans_dm = torch.nn.Parameter(p.translation.clone() / 100.0)
        self.sh = torch.nn.Parameter(p.sh.clone())
        self.albedo = torch.nn.Parameter(p.albedo.clone())
        self.register_buffer("focal", p.focal.clone())

    def params(self, idx=None) -> FaceParams:
        sl = slice(None) if idx is None else idx
        return FaceParams(self.identity, self.expression[sl], self.rotation[sl], self.trans_dm[sl] * 100.0,
                          self.focal[sl], self.sh[sl], self.albedo)


def _smoothness(v: _Vars, idx: torch.Tensor) -> torch.Tensor:
    """Mean squared first difference over consecutive frames in idx (a contiguous chunk)."""
    if idx.numel() < 2:
        return v.expression.sum() * 0
    terms = []
    for x in (v.expression[idx], v.rotation[idx] * 10.0, v.trans_dm[idx]):
        terms.append(((x[1:] - x[:-1]) ** 2).sum(-1).mean())
    return sum(terms)


def _init_params(model: FaceModel, target: torch.Tensor, width: int, height: int, focal: float | None) -> FaceParams:
    """Frontal mean face placed so that its outer-eye distance and landmark centroid match each frame's."""
    T = target.shape[0]
    p = model.default_params(T, width, height, focal)
    eyes = model.mean[model.ibug_vertex[[36, 45]]]
    iod_mm = float(torch.linalg.norm(eyes[0] - eyes[1]))
    z = p.focal * iod_mm / inter_ocular(target).clamp_min(1.0)
    c = target[:, 27:36].mean(1)  # nose landmarks
    nose = model.mean[model.ibug_vertex[27:36].clamp_min(0)].mean(0)
    x = (c[:, 0] - width / 2) * z / p.focal - nose[0]
    y = (c[:, 1] - height / 2) * z / p.focal + nose[1]
    return p.replace(translation=torch.stack([x, y, z + nose[2]], -1))


def _adam(groups):
    return torch.optim.Adam([g for g in groups if g["params"]])


def _prior(v: _Vars, cfg: TrackConfig, idx, model: FaceModel) -> torch.Tensor:
    e = v.expression[idx]
    out = cfg.w_identity * (v.identity ** 2).sum() + cfg.w_expression * (e ** 2).sum(-1).mean()
    a = v.albedo[0]
    edge = ((a[model.edges[:, 0]] - a[model.edges[:, 1]]) ** 2).sum(-1).mean()
    return out + cfg.w_albedo * ((a ** 2).sum(-1).mean() + 10.0 * edge)


def _landmark_loss(model, v, target, weight, width, height, idx=None):
    p = v.params(idx)
    t = target if idx is None else target[idx]
    w = weight if idx is None else weight[idx]
    pred, mask = model.landmarks_2d(p, width, height, t)
    s = 0.01 * max(width, height)
    d2 = ((pred[:, mask] - t[:, mask]) ** 2).sum(-1).mean(-1) / (s * s)
    return (d2 * w).sum() / w.sum().clamp_min(1.0)


def _progress(total, desc, quiet):
    from neuralrender.train.progress import Progress
    return Progress(total, desc=desc, quiet=quiet)


def track_video(frames: torch.Tensor, landmarks: torch.Tensor, valid: torch.Tensor | None = None,
                cfg: TrackConfig | None = None, model: FaceModel | None = None) -> Track:
    """Track a face through frames [T,3,H,W] (float [0,1]) given landmarks [T,68,2] (pixels, our convention)
    and valid [T] (False = no face: interpolated). Returns a Track with errors filled in. CPU or CUDA (device of
    `frames`)."""
    cfg = cfg or TrackConfig()
    old = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _track(frames, landmarks, valid, cfg, model)
    finally:
        torch.set_num_threads(old)


def _track(frames, landmarks, valid, cfg: TrackConfig, model) -> Track:
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise NeuralRenderError(f"track_video: frames must be [T,3,H,W], got {tuple(frames.shape)}")
    T, _, H, W = frames.shape
    if landmarks.shape != (T, 68, 2):
        raise NeuralRenderError(f"track_video: landmarks must be [{T},68,2] (one row per frame), got "
                                f"{tuple(landmarks.shape)}")
    dev = frames.device
    valid = torch.ones(T, dtype=torch.bool) if valid is None else valid.bool().cpu()
    if valid.shape != (T,):
        raise NeuralRenderError(f"track_video: valid must be [{T}], got {tuple(valid.shape)}")
    if not bool(valid.any()):
        raise NeuralRenderError("track_video: no frame has a face")
    target = landmarks.float().cpu()
    if not torch.isfinite(target[valid]).all():
        raise NeuralRenderError("track_video: landmarks of valid frames must be finite")
    target = interpolate_missing(torch.nan_to_num(target), valid).to(dev)
    model = (model or FaceModel(num_identity=cfg.num_identity)).to(dev)
    weight = valid.to(dev).float()
    timings = {}
    cpu0 = time.process_time()
    v = _Vars(_init_params(model, target, W, H, cfg.focal)).to(dev)
    all_idx = torch.arange(T, device=dev)
    lr = cfg.lr

    # (1) rigid, (2) + identity and expression, on landmarks over all frames at once
    t0 = time.time()
    stages = [("rigid", cfg.rigid_iters, [v.rotation, v.trans_dm], []),
              ("landmarks", cfg.landmark_iters, [v.rotation, v.trans_dm], [v.identity, v.expression])]
    for name, iters, rigid, nonrigid in stages:
        opt = _adam([{"params": rigid, "lr": lr}, {"params": nonrigid, "lr": 2 * lr}])
        bar = _progress(iters, name, cfg.quiet)
        for it in range(iters):
            opt.zero_grad()
            loss = cfg.w_landmark * _landmark_loss(model, v, target, weight, W, H) + _prior(v, cfg, all_idx, model)
            if cfg.smooth and nonrigid:
                loss = loss + cfg.w_smooth * _smoothness(v, all_idx)
            loss.backward()
            opt.step()
            if it % 25 == 0 or it == iters - 1:
                bar.set_postfix({"loss": loss.item()})
            bar.update(it + 1)
        bar.close()
    timings["landmarks"] = time.time() - t0

    # (3) dense photometric term, coarse to fine, contiguous chunks of frames
    t0 = time.time()
    if cfg.photometric and cfg.photo_epochs and sum(cfg.photo_epochs) > 0:
        opt = _adam([{"params": [v.rotation, v.trans_dm], "lr": 0.1 * lr}, {"params": [v.identity, v.expression],
                     "lr": 0.5 * lr}, {"params": [v.sh, v.albedo], "lr": lr}])
        B = max(1, cfg.batch_frames)
        chunks = [all_idx[s:s + B] for s in range(0, T, B)]
        # lighting first: a few lighting-only epochs at the coarsest size so the geometry is not pulled by a
        # wrong light
        sched = [(cfg.photo_sizes[0], 1, True)] + [(s, e, False) for s, e in zip(cfg.photo_sizes, cfg.photo_epochs)]
        total = sum(e * len(chunks) for _, e, _ in sched)
        bar = _progress(total, "photometric", cfg.quiet)
        done = 0
        for size, epochs, light_only in sched:
            tgt_all = _resize(frames, size)
            for _ in range(epochs):
                for idx in chunks:
                    opt.zero_grad()
                    p = _scaled(v.params(idx), W, size)
                    if light_only or not cfg.photo_geometry:
                        p = p.replace(identity=p.identity.detach(), expression=p.expression.detach(),
                                      rotation=p.rotation.detach(), translation=p.translation.detach())
                    r = model.render(p, size, size, backend=cfg.backend)
                    m = r["mask"] * weight[idx].view(-1, 1, 1, 1)
                    loss = cfg.w_photo * photometric_term(r["image"], m, tgt_all[idx])
                    loss = loss + cfg.w_landmark * _landmark_loss(model, v, target, weight, W, H, idx)
                    loss = loss + _prior(v, cfg, idx, model)
                    if cfg.smooth:
                        loss = loss + cfg.w_smooth * _smoothness(v, idx)
                    loss.backward()
                    opt.step()
                    done += 1
                    bar.set_postfix({"size": size, "loss": loss.item()})
                    bar.update(done)
        bar.close()
    timings["photometric"] = time.time() - t0

    params = v.params().detach()
    params = _fill_missing(params, valid.to(dev))
    tr = Track(params, target, valid, W, H, config=_cfg_dict(cfg), timings=timings)
    t0 = time.time()
    with torch.no_grad():
        tr.lm_px, tr.lm_iod = (x.cpu() for x in landmark_errors(model, params, target, W, H))
        pred, mask = model.landmarks_2d(params, W, H, target)
        tr.lm_pred = torch.where(mask.view(1, -1, 1), pred, torch.full_like(pred, float("nan"))).cpu()
    size = cfg.photo_sizes[-1] if cfg.photo_sizes else min(W, 128)
    tr.photo, tr.photo_size = photometric_error(model, params, frames, size, cfg.batch_frames, cfg.backend).cpu(), size
    timings["report"] = time.time() - t0
    timings["cpu_process"] = time.process_time() - cpu0  # CPU seconds of this process (all threads)
    return tr


def _cfg_dict(cfg: TrackConfig) -> dict:
    d = asdict(cfg)
    d["photo_sizes"], d["photo_epochs"] = list(cfg.photo_sizes), list(cfg.photo_epochs)
    return d


def _fill_missing(p: FaceParams, valid: torch.Tensor) -> FaceParams:
    """Per-frame fields of frames with valid=False <- linear interpolation from the valid ones."""
    if bool(valid.all()):
        return p
    out = {}
    for k, x in p.as_dict().items():
        if x.shape[0] == valid.shape[0] and k != "focal":
            flat = x.reshape(x.shape[0], -1, 1).expand(-1, -1, 2).contiguous()
            out[k] = interpolate_missing(flat.cpu(), valid.cpu())[..., 0].reshape(x.shape).to(x)
        else:
            out[k] = x
    return FaceParams(**out)


# ------------------------------------------------------------------------------------------------ files
def save_track(tr: Track, path) -> Path:
    """Params + landmarks + per-frame errors as safetensors (metadata: size, config, summary)."""
    from neuralrender.io.checkpoint import save_checkpoint

    tensors = {f"params.{k}": x for k, x in tr.params.as_dict().items()}
    tensors.update({"landmarks": tr.landmarks, "valid": tr.valid.to(torch.uint8), "lm_px": tr.lm_px,
                    "lm_iod": tr.lm_iod, "photo": tr.photo})
    if tr.lm_pred is not None:
        tensors["lm_pred"] = tr.lm_pred
    meta = {"kind": "face-track", "width": tr.width, "height": tr.height, "photo_size": tr.photo_size,
            "config": tr.config, "timings": tr.timings}
    return save_checkpoint(path, tensors, meta)


def load_track(path, num_frames: int | None = None, device="cpu") -> Track:
    """Read a track written by `save_track`; num_frames (the video's length) is checked when given."""
    from neuralrender.io.checkpoint import load_checkpoint

    tensors, meta = load_checkpoint(path, device)
    if meta.get("kind") != "face-track":
        raise DataError(path, "not a face track (kind != face-track)", field="meta.kind")
    try:
        params = FaceParams(**{k: tensors[f"params.{k}"] for k in FaceParams.__dataclass_fields__})
    except KeyError as e:
        raise DataError(path, "missing tensor", field=str(e.args[0])) from None
    if num_frames is not None and params.batch_size != num_frames:
        raise DataError(path, f"track has {params.batch_size} frames but the video has {num_frames}",
                        field="params.rotation")
    return Track(params, tensors["landmarks"], tensors["valid"].bool(), int(meta["width"]), int(meta["height"]),
                 tensors["lm_px"], tensors["lm_iod"], tensors["photo"], int(meta.get("photo_size", 0)),
                 meta.get("timings", {}), meta.get("config", {}), tensors.get("lm_pred"))


def overlay_frames(model: FaceModel, tr: Track, frames: torch.Tensor, alpha: float = 0.6, batch: int = 32,
                   backend: str = "auto") -> torch.Tensor:
    """Frames [T,3,H,W] with the shaded tracked mesh blended over them (alpha) and landmarks drawn (detected:
    green, model: red) -> [T,3,H,W]."""
    from neuralrender.graphics.draw import draw_landmarks

    T, _, H, W = frames.shape
    out = []
    with torch.no_grad():
        for s in range(0, T, batch):
            idx = torch.arange(s, min(s + batch, T))
            p = tr.params.index(idx.to(tr.params.rotation.device))
            r = model.render(p, W, H, backend=backend)
            m = r["mask"] * alpha
            img = frames[idx] * (1 - m) + r["image"].clamp(0, 1) * m
            pred, mask = model.landmarks_2d(p, W, H, tr.landmarks[idx])
            rad = max(1.0, W / 200)
            img = draw_landmarks(tr.landmarks[idx], H, W, radius=rad, colors=[0.1, 0.9, 0.1], background=img)
            img = draw_landmarks(pred[:, mask], H, W, radius=rad, colors=[0.95, 0.1, 0.1], background=img)
            out.append(img)
    return torch.cat(out)


def report_json(tr: Track) -> str:
    """The per-frame error report as JSON: summary + one row per frame."""
    rows = [{"frame": i, "valid": bool(tr.valid[i]), "lm_px": round(float(tr.lm_px[i]), 3),
             "lm_iod_pct": round(100 * float(tr.lm_iod[i]), 3),
             "photo_l1": round(float(tr.photo[i]), 5) if tr.photo.numel() else None} for i in range(tr.num_frames)]
    return json.dumps({"summary": tr.summary(), "frames": rows}, indent=1, default=lambda o: None if (
        isinstance(o, float) and math.isnan(o)) else str(o))
