"""Deterministic train/val/test splits of N items (same seed -> same indices on every machine)."""

from __future__ import annotations

import torch

from neuralrender.errors import NeuralRenderError

SPLITS = ("train", "val", "test", "all")


def split_indices(n: int, split: str, test_fraction: float = 0.1, val_fraction: float = 0.0,
                  seed: int = 0) -> torch.Tensor:
    """Indices (int64 [M], sorted) of `split` in a seeded random permutation of range(n).

    The permutation's first round(n*test_fraction) items are test, the next round(n*val_fraction)
    val, the rest train; "all" is range(n). The three splits are disjoint and cover range(n).
    """
    if split not in SPLITS:
        raise NeuralRenderError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1 and test_fraction + val_fraction < 1):
        raise NeuralRenderError(f"split fractions must be in [0,1) and sum below 1, got "
                                f"test={test_fraction}, val={val_fraction}")
    if split == "all":
        return torch.arange(n)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=g)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    part = {"test": perm[:n_test], "val": perm[n_test : n_test + n_val], "train": perm[n_test + n_val :]}[split]
    return part.sort().values


def every_nth_indices(n: int, split: str, every: int = 8) -> torch.Tensor:
    """NeRF-style hold-out: items i with i % every == 0 are test (and val), the others train."""
    if split not in SPLITS:
        raise NeuralRenderError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    if every < 2:
        raise NeuralRenderError(f"hold-out period must be >= 2, got {every}")
    idx = torch.arange(n)
    if split == "all":
        return idx
    held = idx % every == 0
    return idx[held] if split in ("test", "val") else idx[~held]
