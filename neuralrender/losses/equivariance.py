"""Equivariance losses of unsupervised keypoints (Monkey-Net, FOMM, co-part segmentation).

With a random transform T (`graphics.tps`) and the transformed frame F'(z) = F(T(z)):
  value loss     = mean |kp(F) - T(kp(F'))|                                   (L1, normalized coords)
  jacobian loss  = mean |I - J(F)^-1 (dT(kp(F')) J(F'))|                       (FOMM eq. 8)
"""

from __future__ import annotations

from typing import Callable

import torch

from neuralrender.graphics.tps import ThinPlateSpline

__all__ = ["equivariance_losses"]


def equivariance_losses(detector: Callable[[torch.Tensor], dict], frame: torch.Tensor, kp_frame: dict,
                        transform: ThinPlateSpline, jacobian: bool = True) -> dict[str, torch.Tensor]:
    """detector: image [B,C,H,W] -> {"value" [B,K,2], "jacobian" [B,K,2,2]?}; kp_frame = detector(frame).

    Returns {"equivariance_value": scalar, "equivariance_jacobian": scalar (when asked and available),
    "transformed_frame": [B,C,H,W], "transformed_kp": dict}.
    """
    transformed = transform.transform_image(frame)
    kp_t = detector(transformed)
    out = {"transformed_frame": transformed, "transformed_kp": kp_t,
           "equivariance_value": (kp_frame["value"] - transform.transform_points(kp_t["value"])).abs().mean()}
    if jacobian and "jacobian" in kp_frame and "jacobian" in kp_t:
        jt = transform.jacobian(kp_t["value"]) @ kp_t["jacobian"]
        m = torch.inverse(kp_frame["jacobian"]) @ jt
        eye = torch.eye(2, dtype=m.dtype, device=m.device)
        out["equivariance_jacobian"] = (eye - m).abs().mean()
    return out
