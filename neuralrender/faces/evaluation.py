"""Cross-reenactment checks of issue #9, measured on OUTPUT frames with dlib (extra `faces`, imported lazily):

- expression: `mouth_opening` (inner-lip gap / outer-eye-corner distance, from 68 landmarks) of dlib's landmarks
  on the output against the source's; `pearson` correlation over the frames where dlib found a face in both;
- identity: dlib's face-recognition embedding (128-d) of every output frame, its distance to the mean embedding
  of the target's frames and to the mean embedding of the source's frames (`identity_distances`; the same
  person is < 0.6 in dlib's convention).

`reenactment_checks(output, source_landmarks, target_frames, source_frames)` runs both and returns a dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MOUTH", "mouth_opening", "pearson", "mean_embedding", "identity_distances", "reenactment_checks"]

MOUTH = (62, 66)  # iBUG 63 / 67 (0-based 62 / 66): inner upper / lower lip, middle


def mouth_opening(landmarks: torch.Tensor) -> torch.Tensor:
    """Landmarks [T,68,2] -> inner-lip gap divided by the outer-eye-corner distance [T] (NaN where NaN)."""
    from neuralrender.faces.landmarks import inter_ocular

    gap = torch.linalg.norm(landmarks[:, MOUTH[0]] - landmarks[:, MOUTH[1]], dim=-1)
    return gap / inter_ocular(landmarks).clamp_min(1e-6)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two series [T] over the entries finite in both (NaN if fewer than 3)."""
    a, b = a.double().flatten(), b.double().flatten()
    ok = torch.isfinite(a) & torch.isfinite(b)
    if int(ok.sum()) < 3:
        return float("nan")
    a, b = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12))


def _at(frames: torch.Tensor, size: int | None) -> torch.Tensor:
    """frames resized to size x size, channels-last in memory (dlib reads image buffers ignoring strides)."""
    if size is not None and (frames.shape[-1] != size or frames.shape[-2] != size):
        frames = F.interpolate(frames.float(), size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return frames.contiguous(memory_format=torch.channels_last)


def mean_embedding(frames: torch.Tensor, every: int = 1) -> tuple[torch.Tensor, int]:
    """dlib face-recognition embedding averaged over frames[::every] where a face is found -> ([128], count).
    Raises NeuralRenderError when no face is found in any of them."""
    from neuralrender.errors import NeuralRenderError
    from neuralrender.metrics.keypoints import face_embeddings_dlib

    emb, ok = face_embeddings_dlib(_at(frames[::every], None))
    if not bool(ok.any()):
        raise NeuralRenderError("mean_embedding: dlib found no face in any frame")
    return emb[ok].mean(0), int(ok.sum())


def identity_distances(output: torch.Tensor, target_ref: torch.Tensor, source_ref: torch.Tensor) -> dict:
    """Embedding distances of output frames [T,3,H,W] to two identities given as mean embeddings [128]:
    per-frame distances averaged over the frames with a face, and the fraction of those frames nearer the target."""
    from neuralrender.metrics.keypoints import face_embeddings_dlib

    emb, ok = face_embeddings_dlib(_at(output, None))
    out = {"identity_frames_with_face": int(ok.sum()), "identity_frames": int(output.shape[0])}
    if not bool(ok.any()):
        return {**out, "identity_dist_to_target": float("nan"), "identity_dist_to_source": float("nan"),
                "identity_frac_nearer_target": float("nan")}
    dt = torch.linalg.norm(emb[ok] - target_ref, dim=-1)
    ds = torch.linalg.norm(emb[ok] - source_ref, dim=-1)
    return {**out, "identity_dist_to_target": float(dt.mean()), "identity_dist_to_source": float(ds.mean()),
            "identity_frac_nearer_target": float((dt < ds).float().mean())}


def reenactment_checks(output: torch.Tensor, source_landmarks: torch.Tensor, target: torch.Tensor,
                       source: torch.Tensor, size: int | None = 256, ref_every: int = 4) -> dict:
    """Both checks on output frames [T,3,h,w] (resized to size x size first, the resolution dlib's reference
    landmarks were taken at) driven by source frames whose dlib landmarks are source_landmarks [T,68,2].
    Identities `target` / `source`: their frames [N,3,H,W] (mean embedding of every ref_every-th) or a mean
    embedding [128] (`mean_embedding`). Returns mouth_corr_dlib, mouth_frames_with_face, the identity distances
    and `passed_*` flags."""
    from neuralrender.metrics.keypoints import detect_face_landmarks_dlib

    out = _at(output, size)
    T = out.shape[0]
    kp, ok = detect_face_landmarks_dlib(out)
    kp[~ok.all(-1)] = float("nan")
    src_open, out_open = mouth_opening(source_landmarks[:T]), mouth_opening(kp)
    res = {"mouth_corr_dlib": pearson(src_open, out_open), "mouth_frames_with_face": int(ok.all(-1).sum()),
           "mouth_frames": T, "mouth_opening_source_mean": float(src_open.nanmean()),
           "mouth_opening_output_mean": float(out_open.nanmean())}
    refs = [(x, -1) if x.ndim == 1 else mean_embedding(_at(x, size), ref_every) for x in (target, source)]
    (e_tgt, n_tgt), (e_src, n_src) = refs
    res.update(identity_distances(out, e_tgt, e_src), identity_target_ref_frames=n_tgt,
               identity_source_ref_frames=n_src, identity_dist_target_to_source=float((e_tgt - e_src).norm()))
    res["passed_mouth_corr_ge_0.8"] = bool(res["mouth_corr_dlib"] >= 0.8)
    res["passed_identity_nearer_target"] = bool(res["identity_dist_to_target"] < res["identity_dist_to_source"])
    return res
