"""Negative log-likelihoods of discrete images under autoregressive models, in nats per image.

Convert to bits/dim with `neuralrender.metrics.density.bits_per_dim` (nats / (dims * ln 2)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def categorical_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NLL in nats per image [B] of integer values under per-entry softmax distributions.

    logits [B,C,K,H,W] (K values per channel) with target int [B,C,H,W] in [0,K); or logits [B,K,H,W]
    with target [B,H,W] (one channel, e.g. a code map). Sums over channels and pixels.
    """
    if logits.dim() == target.dim() + 1 and logits.dim() == 5:
        logits = logits.transpose(1, 2)  # class dim second, as cross_entropy wants
    if logits.dim() != target.dim() + 1:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets {tuple(target.shape)}")
    nll = F.cross_entropy(logits.float(), target.long(), reduction="none")
    return nll.flatten(1).sum(1)


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """NLL in nats per image [B] of binary target [B,...] in {0,1} under Bernoulli(sigmoid(logits)) [B,...]."""
    nll = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    return nll.flatten(1).sum(1)
