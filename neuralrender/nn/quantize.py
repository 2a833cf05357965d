"""Vector quantization (VQ-VAE, van den Oord et al. 2017) with EMA codebook updates and dead-code restarts.

Forward: z [B,D,H,W] -> each vector snaps to its nearest of K codebook entries e_k [D].
  - straight-through estimator: the decoder gets z + (e - z).detach(), so gradients skip the argmin;
  - commitment loss beta * ||z - sg(e)||^2 pulls the encoder to its codes;
  - codebook: with `decay` > 0 the entries are exponential moving averages of the vectors assigned to them
    (appendix A.1 of the paper; no codebook loss), else they learn through the loss ||sg(z) - e||^2;
  - the codebook is initialised from the first training batch (random encoder outputs), and entries whose
    EMA usage falls below `restart_threshold` assignments per batch are restarted at random encoder outputs
    of the current batch (as in Jukebox), so all codes stay in use;
  - perplexity exp(H(usage)) of the batch says how many codes are effectively used.
Under torch.distributed the usage counts and sums are averaged over processes and restarts are broadcast
from rank 0, so every process keeps the same codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Quantized:
    """What `VectorQuantizer.forward` returns."""

    quantized: torch.Tensor  # [B,D,H,W], straight-through (gradients flow to z)
    codes: torch.Tensor  # int64 [B,H,W]
    loss: torch.Tensor  # scalar: commitment (+ codebook loss without EMA)
    perplexity: torch.Tensor  # scalar: exp(entropy) of this batch's code usage
    counts: torch.Tensor  # float [K]: assignments per code in this batch


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class VectorQuantizer(nn.Module):
    """num_codes K entries of dimension dim D. z [B,D,H,W] -> `Quantized`.

    commitment: beta; decay: EMA decay of the codebook (0 = learn it by gradient); restart_threshold: restart
    codes whose EMA usage (assignments per batch) drops below it (0 = never).
    """

    def __init__(self, num_codes: int, dim: int, commitment: float = 0.25, decay: float = 0.99,
                 restart_threshold: float = 1.0, eps: float = 1e-5):
        super().__init__()
        self.num_codes, self.dim = num_codes, dim
        self.commitment, self.decay, self.restart_threshold, self.eps = commitment, decay, restart_threshold, eps
        self.embedding = nn.Parameter(torch.randn(num_codes, dim) / dim**0.5, requires_grad=decay == 0)
        self.register_buffer("cluster_size", torch.ones(num_codes))
        self.register_buffer("embed_sum", self.embedding.detach().clone())
        self.register_buffer("usage", torch.ones(num_codes))  # EMA of assignments per batch (also without EMA)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    # ---- lookup ---------------------------------------------------------------------------------------
    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """flat [N,D] -> index int64 [N] of the nearest codebook entry (squared Euclidean distance)."""
        e = self.embedding
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]
        return d.argmin(1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """codes int [B,H,W] -> codebook vectors [B,D,H,W]."""
        return F.embedding(codes.long(), self.embedding).permute(0, 3, 1, 2).contiguous()

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B,D,H,W] -> codes int64 [B,H,W] (no state change)."""
        b, d, h, w = z.shape
        return self.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).view(b, h, w)

    # ---- training-time codebook maintenance ----------------------------------------------------------
    def _random_rows(self, flat: torch.Tensor, n: int) -> torch.Tensor:
        idx = torch.randint(flat.shape[0], (n,), device=flat.device)
        rows = flat[idx].clone()
        if _dist_ready():
            torch.distributed.broadcast(rows, 0)
        return rows

    @torch.no_grad()
    def _init_from(self, flat: torch.Tensor) -> None:
        rows = self._random_rows(flat, self.num_codes)
        self.embedding.data.copy_(rows)
        self.embed_sum.copy_(rows)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, onehot: torch.Tensor) -> None:
        counts, sums = onehot.sum(0), onehot.t() @ flat
        if _dist_ready():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
            ws = torch.distributed.get_world_size()
            counts, sums = counts / ws, sums / ws
        self.usage.lerp_(counts, 1 - max(self.decay, 0.9))
        if self.decay > 0:
            self.cluster_size.lerp_(counts, 1 - self.decay)
            self.embed_sum.lerp_(sums, 1 - self.decay)
            n = self.cluster_size.sum()
            size = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace smoothing
            self.embedding.data.copy_(self.embed_sum / size[:, None])
        if self.restart_threshold > 0:
            dead = (self.usage < self.restart_threshold).to(torch.uint8)
            if _dist_ready():
                torch.distributed.broadcast(dead, 0)
            dead = dead.bool()
            k = int(dead.sum())
            if k:
                rows = self._random_rows(flat, k)
                self.embedding.data[dead] = rows
                self.embed_sum[dead] = rows * self.restart_threshold
                self.cluster_size[dead] = self.restart_threshold
                self.usage[dead] = self.restart_threshold

    # ---- forward ---------------------------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> Quantized:
        b, d, h, w = z.shape
        if d != self.dim:
            raise ValueError(f"quantizer expects {self.dim} channels, got {d}")
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        if self.training and not bool(self.initialized):
            self._init_from(flat.detach().float())
        codes = self.nearest(flat.detach())
        onehot = F.one_hot(codes, self.num_codes).to(flat.dtype)
        counts = onehot.sum(0).detach()
        if self.training:
            self._update(flat.detach(), onehot)
        e = self.embedding[codes]
        loss = self.commitment * F.mse_loss(flat, e.detach())
        if self.decay == 0:
            loss = loss + F.mse_loss(e, flat.detach())
        q = flat + (e - flat).detach()
        p = counts / counts.sum().clamp_min(1)
        perp = torch.exp(-(p * torch.log(p.clamp_min(1e-10))).sum())
        return Quantized(q.view(b, h, w, d).permute(0, 3, 1, 2).contiguous(), codes.view(b, h, w), loss, perp, counts)


def usage_plot(counts: torch.Tensor, height: int = 96, width: int = 256) -> torch.Tensor:
    """A bar chart of code usage counts [K] (drawn with numpy): float [1,3,H,W] in [0,1].

    Top: bars in code order; bottom: the same counts sorted (a flat profile = all codes in use). Bars of
    unused codes are red ticks on the axis; the rest are blue, scaled to the largest count.
    """
    c = counts.detach().double().cpu().numpy()
    k = len(c)
    img = np.ones((2 * height + 6, width, 3))
    for panel, vals in enumerate((c, np.sort(c)[::-1])):
        top = panel * (height + 6)
        peak = max(vals.max(), 1e-12)
        edges = np.linspace(0, width, k + 1).round().astype(int)
        for i, v in enumerate(vals):
            x0, x1 = edges[i], max(edges[i] + 1, edges[i + 1] - (1 if k < width // 2 else 0))
            bar = int(round((height - 2) * v / peak))
            if v <= 0:
                img[top + height - 3: top + height, x0:x1] = (0.85, 0.1, 0.1)
            else:
                img[top + height - bar: top + height, x0:x1] = (0.15, 0.35, 0.8)
        img[top + height - 1, :] = 0.0  # axis
    return torch.from_numpy(img).float().permute(2, 0, 1)[None]
