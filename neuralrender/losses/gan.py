"""Adversarial losses (vanilla / non-saturating, LSGAN, hinge) and discriminator feature matching.

Discriminator outputs come in three shapes, all accepted everywhere here:
- a tensor of logits [B,1,h,w] (or any shape),
- a list of feature maps of one discriminator whose LAST entry is the logits (`PatchDiscriminator`),
- a list of such lists, one per scale (`MultiScaleDiscriminator`); the loss is averaged over scales.

Conventions (pix2pixHD): the discriminator loss is 0.5 * (real term + fake term); the generator loss is the
"real" term on fakes (non-saturating for 'vanilla'); feature matching is the L1 distance between the
discriminator's intermediate features on real and fake inputs (real detached), averaged over layers and
scales, times `weight`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from neuralrender.errors import NeuralRenderError

GAN_MODES = ("vanilla", "lsgan", "hinge")

__all__ = ["GAN_MODES", "logits_per_scale", "features_per_scale", "gan_loss", "discriminator_loss",
           "generator_loss", "feature_matching_loss"]


def _check_mode(mode: str) -> None:
    if mode not in GAN_MODES:
        raise NeuralRenderError(f"unknown GAN loss '{mode}'; valid: {', '.join(GAN_MODES)}")


def _per_scale(outputs) -> list[list[torch.Tensor]]:
    """Normalise discriminator outputs to [[feat_1, ..., logits], ...] (one list per scale)."""
    if torch.is_tensor(outputs):
        return [[outputs]]
    outputs = list(outputs)
    if not outputs:
        raise NeuralRenderError("discriminator outputs are empty")
    if torch.is_tensor(outputs[0]):
        return [outputs]
    return [list(o) if not torch.is_tensor(o) else [o] for o in outputs]


def logits_per_scale(outputs) -> list[torch.Tensor]:
    """The logits (last map) of each scale."""
    return [feats[-1] for feats in _per_scale(outputs)]


def features_per_scale(outputs) -> list[list[torch.Tensor]]:
    """The intermediate features (all but the logits) of each scale."""
    return [feats[:-1] for feats in _per_scale(outputs)]


def gan_loss(logits: torch.Tensor, real: bool, mode: str = "lsgan", for_discriminator: bool = True) -> torch.Tensor:
    """Mean adversarial loss of one logits map.

    real: whether the input should be judged real. for_discriminator only matters for 'hinge', where the
    discriminator uses relu(1 -/+ D) and the generator uses -D (the latter only with real=True).
    """
    _check_mode(mode)
    if mode == "vanilla":
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return ((logits - (1.0 if real else 0.0)) ** 2).mean()
    if for_discriminator:
        return F.relu(1.0 - logits).mean() if real else F.relu(1.0 + logits).mean()
    if not real:
        raise NeuralRenderError("hinge generator loss is only defined for real=True")
    return -logits.mean()


def discriminator_loss(real_outputs, fake_outputs, mode: str = "lsgan") -> torch.Tensor:
    """0.5 * (loss(real judged real) + loss(fake judged fake)), averaged over scales."""
    reals, fakes = logits_per_scale(real_outputs), logits_per_scale(fake_outputs)
    if len(reals) != len(fakes):
        raise NeuralRenderError(f"real and fake outputs have {len(reals)} and {len(fakes)} scales")
    total = sum(gan_loss(r, True, mode) + gan_loss(f, False, mode) for r, f in zip(reals, fakes))
    return 0.5 * total / len(reals)


def generator_loss(fake_outputs, mode: str = "lsgan") -> torch.Tensor:
    """The generator's adversarial loss (fakes judged real), averaged over scales."""
    fakes = logits_per_scale(fake_outputs)
    return sum(gan_loss(f, True, mode, for_discriminator=False) for f in fakes) / len(fakes)


def feature_matching_loss(real_outputs, fake_outputs, weight: float = 10.0, layers: str = "mean") -> torch.Tensor:
    """pix2pixHD discriminator feature matching: weight * L1(fake, real.detach()) over scales and layers.

    layers: 'mean' (default): the mean over all scales and layers; 'pix2pixhd': the paper's weighting, per scale
    each of its L feature maps weighted 4 / L and summed, scales averaged (= 4 x 'mean' when every scale has the
    same number of feature maps)."""
    if layers not in ("mean", "pix2pixhd"):
        raise NeuralRenderError(f"unknown feature matching layer weighting '{layers}'; valid: mean, pix2pixhd")
    reals, fakes = features_per_scale(real_outputs), features_per_scale(fake_outputs)
    if len(reals) != len(fakes):
        raise NeuralRenderError(f"real and fake outputs have {len(reals)} and {len(fakes)} scales")
    per_scale = [[F.l1_loss(f, r.detach()) for r, f in zip(rs, fs)] for rs, fs in zip(reals, fakes)]
    terms = [t for ts in per_scale for t in ts]
    if not terms:
        raise NeuralRenderError("feature matching needs discriminators that return intermediate features")
    if layers == "mean":
        return weight * torch.stack(terms).mean()
    return weight * sum(4.0 / len(ts) * torch.stack(ts).sum() for ts in per_scale if ts) / len(per_scale)
