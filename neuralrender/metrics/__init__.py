"""Image metrics: PSNR, SSIM (kornia) and LPIPS (optional; needs backbone weights on disk)."""

from neuralrender.metrics.image import lpips_available, lpips_metric, psnr, ssim

__all__ = ["psnr", "ssim", "lpips_metric", "lpips_available"]
