"""Keypoint metrics of the image-animation papers: AKD (average keypoint distance), MKR (missing keypoint
rate), AED (average euclidean distance of identity embeddings), with external detectors imported lazily
(mediapipe Pose for bodies, dlib's 68 landmarks and face-recognition embedding for faces: the optional
extra 'faces'); plus the co-part metrics (landmark regression from parts, foreground IoU vs a motion mask).

Keypoints are pixel coordinates [N,K,2] (x right, y down, centres at +0.5) with a validity mask [N,K];
the pure metric functions need no optional package, the detectors raise MissingDependencyError.
"""

from __future__ import annotations

import numpy as np
import torch

from neuralrender.errors import MissingDependencyError

__all__ = ["akd", "mkr", "aed", "detector_status", "detect_pose_mediapipe", "detect_face_landmarks_dlib",
           "face_embeddings_dlib", "landmark_regression_error", "foreground_iou", "motion_mask", "part_tracking"]


def akd(pred: torch.Tensor, ref: torch.Tensor, pred_valid: torch.Tensor | None = None,
        ref_valid: torch.Tensor | None = None) -> float:
    """Mean distance in pixels between keypoints [N,K,2] found in BOTH the generated and the real frame."""
    ok = torch.isfinite(pred).all(-1) & torch.isfinite(ref).all(-1)
    if pred_valid is not None:
        ok &= pred_valid.bool()
    if ref_valid is not None:
        ok &= ref_valid.bool()
    if not bool(ok.any()):
        return float("nan")
    return float(torch.linalg.norm(pred - ref, dim=-1)[ok].mean())


def mkr(pred_valid: torch.Tensor, ref_valid: torch.Tensor) -> float:
    """Fraction of the keypoints detected in the real frames [N,K] that are missing in the generated ones."""
    ref = ref_valid.bool()
    if not bool(ref.any()):
        return float("nan")
    return float((ref & ~pred_valid.bool()).sum() / ref.sum())


def aed(pred_emb: torch.Tensor, ref_emb: torch.Tensor, pred_valid: torch.Tensor | None = None,
        ref_valid: torch.Tensor | None = None) -> float:
    """Mean L2 distance of identity embeddings [N,D] over frames where both were computed."""
    ok = torch.ones(pred_emb.shape[0], dtype=torch.bool)
    if pred_valid is not None:
        ok &= pred_valid.bool().cpu()
    if ref_valid is not None:
        ok &= ref_valid.bool().cpu()
    if not bool(ok.any()):
        return float("nan")
    return float(torch.linalg.norm((pred_emb - ref_emb).cpu()[ok], dim=-1).mean())


# --- external detectors (optional extra 'faces') ------------------------------------------------------

_NEEDS = {"pose": ("mediapipe",), "face": ("dlib", "face_recognition_models")}


def detector_status(kind: str) -> tuple[bool, str]:
    """('pose' | 'face') -> (available, reason). Never imports anything at module import time."""
    import importlib.util

    missing = [m for m in _NEEDS[kind] if importlib.util.find_spec(m) is None]
    if missing:
        what = "AKD/MKR on bodies (mediapipe Pose)" if kind == "pose" else "AKD/MKR/AED on faces (dlib)"
        return False, f"{what} unavailable: {', '.join(missing)} not installed (pip install 'neuralrender[faces]')"
    return True, "ok"


def _uint8_frames(frames: torch.Tensor) -> np.ndarray:
    # C-contiguous [T,H,W,3]: dlib reads the buffer ignoring numpy strides, so the permuted view of an NCHW tensor
    # gave it scrambled images (no face found, or garbage) unless the tensor happened to be channels-last.
    x = (frames.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return np.ascontiguousarray(x)


def detect_pose_mediapipe(frames: torch.Tensor, upsample: int = 256,
                          static: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """mediapipe Pose on frames [T,3,H,W] -> (keypoints [T,33,2] in pixels of the input, valid [T,33]).

    Frames are upsampled to `upsample` px first, bicubic (as the shared data's reference poses were computed:
    on 64^2 Weizmann frames bilinear upsampling moves the detections by ~15 px, bicubic by ~2 px).
    static: every frame is detected on its own (static_image_mode); False: mediapipe's video mode, which
    tracks the person's region from frame to frame (frames must be one clip, in order)."""
    try:
        import mediapipe as mp
    except ImportError as e:
        raise MissingDependencyError("mediapipe", "faces", "AKD/MKR on bodies") from e
    import torch.nn.functional as F

    T, _, H, W = frames.shape
    up = F.interpolate(frames.float(), size=(upsample, upsample), mode="bicubic", align_corners=False)
    kp = torch.full((T, 33, 2), float("nan"))
    valid = torch.zeros(T, 33, dtype=torch.bool)
    with mp.solutions.pose.Pose(static_image_mode=static) as pose:
        for t, img in enumerate(_uint8_frames(up)):
            res = pose.process(img)
            if res.pose_landmarks is None:
                continue
            for i, lm in enumerate(res.pose_landmarks.landmark):
                kp[t, i] = torch.tensor([lm.x * W, lm.y * H])
                valid[t, i] = lm.visibility > 0.5
    return kp, valid


class _DlibModels:
    """Paths of the model files shipped by `face-recognition-models`, found without importing its __init__
    (which needs `pkg_resources`, gone from recent setuptools)."""

    def __init__(self, root):
        self.root = root

    def _file(self, name: str) -> str:
        path = self.root / name
        if not path.is_file():
            raise MissingDependencyError("face_recognition_models", "faces", f"dlib model file {path}")
        return str(path)

    def pose_predictor_model_location(self) -> str:
        return self._file("shape_predictor_68_face_landmarks.dat")

    def face_recognition_model_location(self) -> str:
        return self._file("dlib_face_recognition_resnet_model_v1.dat")


def _dlib():
    import importlib.util
    from pathlib import Path

    try:
        import dlib
    except ImportError as e:
        raise MissingDependencyError("dlib", "faces", "AKD/MKR/AED on faces") from e
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("face_recognition_models", "faces", "dlib's 68-landmark predictor")
    return dlib, _DlibModels(Path(list(spec.submodule_search_locations)[0]) / "models")


def detect_face_landmarks_dlib(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib's 68 landmarks on frames [T,3,H,W] -> (keypoints [T,68,2] pixels, valid [T,68])."""
    dlib, frm = _dlib()
    det = dlib.get_frontal_face_detector()
    pred = dlib.shape_predictor(frm.pose_predictor_model_location())
    T = frames.shape[0]
    kp = torch.full((T, 68, 2), float("nan"))
    valid = torch.zeros(T, 68, dtype=torch.bool)
    for t, img in enumerate(_uint8_frames(frames)):
        boxes = det(img, 1)
        if not boxes:
            continue
        s = pred(img, boxes[0])
        kp[t] = torch.tensor([[p.x + 0.5, p.y + 0.5] for p in s.parts()], dtype=torch.float32)
        valid[t] = True
    return kp, valid


def face_embeddings_dlib(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib's face-recognition embedding on frames [T,3,H,W] -> (embeddings [T,128], valid [T])."""
    dlib, frm = _dlib()
    det = dlib.get_frontal_face_detector()
    pred = dlib.shape_predictor(frm.pose_predictor_model_location())
    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    T = frames.shape[0]
    emb = torch.zeros(T, 128)
    valid = torch.zeros(T, dtype=torch.bool)
    for t, img in enumerate(_uint8_frames(frames)):
        boxes = det(img, 1)
        if boxes:
            emb[t] = torch.tensor(list(rec.compute_face_descriptor(img, pred(img, boxes[0]))))
            valid[t] = True
    return emb, valid


# --- co-part segmentation --------------------------------------------------------------------------------

def landmark_regression_error(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                              test_y: torch.Tensor, ridge: float = 1e-3) -> float:
    """Fit a linear map (with bias, ridge-regularised) from features [N,F] (e.g. flattened part centres) to
    landmarks [N,L,2] on train frames, report the mean L2 error on test frames. NaN landmarks (not detected)
    are left out of the fit of their coordinate and of the error. Units of the landmarks (pixels)."""
    def design(x):
        return torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)

    X, Xt = design(train_x), design(test_x)
    y = train_y.flatten(1).double()
    pred = torch.full((test_x.shape[0], y.shape[1]), float("nan"), dtype=torch.float64)
    eye = ridge * torch.eye(X.shape[1], dtype=X.dtype)
    for j in range(y.shape[1]):  # one least-squares fit per landmark coordinate, on the frames that have it
        ok = torch.isfinite(y[:, j])
        if int(ok.sum()) >= 2:
            Xo = X[ok]
            w = torch.linalg.solve(Xo.T @ Xo + eye, Xo.T @ y[ok, j])
            pred[:, j] = Xt @ w
    d = torch.linalg.norm(pred.view(test_y.shape) - test_y.double(), dim=-1)
    d = d[torch.isfinite(d)]
    return float(d.mean()) if d.numel() else float("nan")


def motion_mask(video: torch.Tensor, threshold: float = 0.08) -> torch.Tensor:
    """Foreground of a static-camera video [T,3,H,W]: pixels differing from the per-pixel temporal median
    by more than `threshold` (mean over channels) -> bool [T,H,W]."""
    med = video.median(dim=0).values
    return (video - med).abs().mean(1) > threshold


def foreground_iou(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """Intersection over union of two boolean masks [...,H,W] (all frames pooled)."""
    p, r = pred.bool(), ref.bool()
    union = (p | r).sum()
    return float((p & r).sum() / union) if union > 0 else float("nan")


def part_tracking(segmentation: torch.Tensor, centres: torch.Tensor, landmarks: torch.Tensor) -> dict:
    """Do parts follow the body? Part maps [T,K+1,H,W] (channel 0 = background; probabilities or one-hot, at
    the landmarks' pixel scale), part centres [T,K,2] and reference landmarks [T,L,2] (pixels, NaN = not
    detected) of ONE clip.

    Each landmark is owned by the part with the largest summed probability at its pixel over the clip
    (background ignored: thin limbs at 64^2 often fall between part pixels). Returns
      label_consistency: share of (frame, landmark) in which the owner is also that frame's most probable
        part at the landmark (background ignored);
      tracking_error_px: segment-wise keypoint tracking error, mean over landmarks and frames of
        | (c_k(t) - c_k(t0)) - (x(t) - x(t0)) |: each landmark x predicted to move with its part's centre c_k
        from its first detection t0;
      static_error_px: the same for parts that do not move (| x(t) - x(t0) |), the baseline;
      parts_used: number of parts that own a landmark.
    """
    T, C, H, W = segmentation.shape
    xy = landmarks.float()
    ok = torch.isfinite(xy).all(-1)
    ix = xy[..., 0].nan_to_num(-1).floor().long()
    iy = xy[..., 1].nan_to_num(-1).floor().long()
    ok &= (ix >= 0) & (ix < W) & (iy >= 0) & (iy < H)
    t_idx = torch.arange(T).unsqueeze(1).expand_as(ix)
    probs = torch.zeros(*xy.shape[:2], C - 1)
    probs[ok] = segmentation[t_idx[ok], 1:, iy[ok], ix[ok]].float()
    owner = probs.sum(0).argmax(-1)  # [L] part index 0..K-1
    has = ok.any(0)
    same = (probs.argmax(-1) == owner.unsqueeze(0)) & ok
    consistency = float(same.sum() / ok.sum()) if bool(ok.any()) else float("nan")
    err, static = [], []
    for j in has.nonzero().flatten().tolist():
        valid = ok[:, j]
        t0 = int(valid.nonzero()[0])
        dx = xy[valid, j] - xy[t0, j]
        c = centres[:, owner[j]].float()
        dc = c[valid] - c[t0]
        err.append(torch.linalg.norm(dc - dx, dim=-1))
        static.append(torch.linalg.norm(dx, dim=-1))
    if not err:
        return {"label_consistency": consistency, "tracking_error_px": float("nan"),
                "static_error_px": float("nan"), "parts_used": 0}
    return {"label_consistency": consistency, "tracking_error_px": float(torch.cat(err).mean()),
            "static_error_px": float(torch.cat(static).mean()), "parts_used": int(owner[has].unique().numel())}
