"""PSNR, SSIM and optional LPIPS on [B,C,H,W] images in [0,1]."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-image PSNR in dB, [B]. `mask` [B,1,H,W] restricts the mean to covered pixels."""
    err = (pred.float() - target.float()) ** 2
    if mask is None:
        mse = err.flatten(1).mean(1)
    else:
        m = mask.float().expand_as(err)
        mse = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def ssim(pred: torch.Tensor, target: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-image SSIM [B] (Gaussian window 11, sigma 1.5), via kornia."""
    import kornia

    m = kornia.metrics.ssim(pred.float().clamp(0, 1), target.float().clamp(0, 1), window)
    return m.flatten(1).mean(1)


_LPIPS = {}


def _lpips_weights_path() -> Path | None:
    env = os.environ.get("NR_LPIPS_WEIGHTS")
    if env:
        return Path(env)
    return None


def lpips_available() -> tuple[bool, str]:
    """(available, reason). LPIPS needs the `lpips` package and its backbone weights on disk."""
    try:
        import lpips  # noqa: F401
    except Exception:
        return False, "LPIPS unavailable: the 'lpips' package is not installed (extra 'lpips')"
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    user = _lpips_weights_path()
    if user is not None and user.is_file():
        return True, f"LPIPS backbone weights from {user}"
    if any(hub.glob("alexnet-*.pth")) or any(hub.glob("vgg16-*.pth")):
        return True, f"LPIPS backbone weights from {hub}"
    return False, f"LPIPS unavailable: no backbone weights in {hub} and NR_LPIPS_WEIGHTS is not set"


def lpips_metric(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Per-image LPIPS [B], or None when unavailable (never a fake number)."""
    ok, _ = lpips_available()
    if not ok:
        return None
    import lpips

    key = str(pred.device)
    if key not in _LPIPS:
        _LPIPS[key] = lpips.LPIPS(net="alex", verbose=False).to(pred.device).eval()
    with torch.no_grad():
        return _LPIPS[key](pred * 2 - 1, target * 2 - 1).flatten()
