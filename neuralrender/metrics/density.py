"""Density-model metrics: bits/dim, the independent-pixel and unigram baselines, codebook perplexity.

Baselines are what a model that ignores context scores, computed from the training split with add-`alpha`
(Laplace) smoothing: `independent_pixel_nll` keeps one histogram per (channel, pixel) position (for binary
images: an independent Bernoulli per pixel), `unigram_nll` one histogram shared by every position (for code
maps: the code frequencies), `uniform_nll` none at all.
"""

from __future__ import annotations

import math

import torch

LN2 = math.log(2.0)


def bits_per_dim(nll_nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """NLL in nats per image (tensor [B] or float) -> bits per dimension (dims = C*H*W values per image)."""
    return nll_nats / (dims * LN2)


def _histogram_nll(probs: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """probs [K,P] (one distribution per position, or P=1 for all), test int [M,...] -> nats [M]."""
    logp = probs.clamp_min(1e-30).log()
    t = test.reshape(test.shape[0], -1).long()
    if logp.shape[1] == 1:
        return -logp[:, 0][t].sum(1)
    return -logp.t().gather(1, t.t()).sum(0)


def independent_pixel_nll(train: torch.Tensor, test: torch.Tensor, levels: int, alpha: float = 1.0) -> torch.Tensor:
    """NLL in nats [M] of test int [M,...] under one add-alpha histogram per position, fitted on train [N,...]."""
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"train items {tuple(train.shape[1:])} and test items {tuple(test.shape[1:])} differ")
    tr = train.reshape(train.shape[0], -1).long()
    counts = torch.zeros(levels, tr.shape[1], dtype=torch.float64)
    counts.scatter_add_(0, tr, torch.ones_like(tr, dtype=torch.float64))
    probs = (counts + alpha) / (tr.shape[0] + alpha * levels)
    return _histogram_nll(probs, test).float()


def unigram_nll(train: torch.Tensor, test: torch.Tensor, levels: int, alpha: float = 1.0) -> torch.Tensor:
    """NLL in nats [M] of test int [M,...] under one add-alpha value histogram (all positions) fitted on train."""
    counts = torch.bincount(train.reshape(-1).long(), minlength=levels).double()
    probs = (counts + alpha) / (counts.sum() + alpha * levels)
    return _histogram_nll(probs.view(levels, 1), test).float()


def uniform_nll(dims: int, levels: int) -> float:
    """NLL in nats of any image of `dims` values under the uniform distribution over `levels` values."""
    return dims * math.log(levels)


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of a usage histogram counts [K]: the effective number of codes in use (1..K)."""
    p = counts.double() / counts.sum().clamp_min(1e-12)
    ent = -(p * p.clamp_min(1e-30).log()).sum()
    return float(ent.exp())
