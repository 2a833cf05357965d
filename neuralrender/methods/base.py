"""The contract between a method and the trainer.

A method is an `nn.Module` with a `Config` dataclass (its hyperparameters, every field a CLI flag), a way to
build its data, and one loss per optimizer phase. The trainer runs the phases in order each step (e.g.
("d", "g") for a GAN): zero grads, `loss(phase, batch, step)`, backward, all-reduce grads when distributed,
clip, optimizer step, EMA update of the "g" parameters when asked.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset


@dataclass
class DataBundle:
    """What `Method.build_data` returns: a train split, an eval split and facts the model needs."""

    train: Dataset
    val: Dataset | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class EmptyConfig:
    pass


class Method(nn.Module):
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig
    phases: ClassVar[tuple[str, ...]] = ("g",)
    # Overrides of TrainConfig defaults for this method (e.g. GAN betas), applied before YAML and flags.
    train_defaults: ClassVar[dict[str, Any]] = {}
    # Model-config values that `load_run` gives fields a saved run lacks (runs saved before the field existed).
    legacy_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg, info: dict[str, Any]):
        super().__init__()
        self.cfg = cfg
        self.info = info

    # --- data -------------------------------------------------------------------------------------
    @classmethod
    def build_data(cls, cfg, data: str | None, seed: int) -> DataBundle:
        """Build datasets from a user path (or the method's default data when None)."""
        raise NotImplementedError

    # --- training ---------------------------------------------------------------------------------
    def parameters_for(self, phase: str):
        """Parameters the optimizer of `phase` updates (default: all, for single-phase methods)."""
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, phase: str, batch: dict, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss for one phase and the numbers to log."""
        raise NotImplementedError

    def step_output(self, step: int, phase: str, generate):
        """For GANs (phases ("d", "g")): the generator's output of this step, computed once. Phase 'd' calls
        `generate()` and keeps the result; phase 'g' of the same step gets it back, still attached to the graph
        (then it is dropped); a 'g' without a preceding 'd' of that step calls `generate()` itself."""
        cached = self.__dict__.get("_step_output")
        if phase == "d" or cached is None or cached[0] != step:
            cached = (step, generate())
        self.__dict__["_step_output"] = cached if phase == "d" else None
        return cached[1]

    # --- evaluation and outputs --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, batch: dict) -> dict[str, float]:
        """Per-batch metrics on the eval split; the trainer averages them (weighted by batch size)."""
        return {}

    @torch.no_grad()
    def render(self, batch: dict) -> dict[str, torch.Tensor]:
        """Images [B,C,H,W] (or videos [B,T,C,H,W]) to save as grids / mp4s, keyed by name."""
        return {}

    @torch.no_grad()
    def render_run(self, bundle: DataBundle, out, path: str | None = None, frames: int = 60) -> list:
        """`neuralrender render`: by default, grids of `render` on the first 8 eval items.

        View-synthesis methods override this to render a camera `path` (orbit, spiral, a file) to an mp4.
        """
        from pathlib import Path

        from torch.utils.data import default_collate

        from neuralrender.train.outputs import save_renders

        ds = bundle.val if bundle.val is not None else bundle.train
        dev = next(self.parameters()).device
        batch = default_collate([ds[i] for i in range(min(8, len(ds)))])
        batch = batch.to(dev) if torch.is_tensor(batch) else type(batch)(
            (v.to(dev) if torch.is_tensor(v) else v) for v in batch) if isinstance(batch, (list, tuple)) else {
            k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in batch.items()}
        return save_renders(self.render(batch), Path(out), "render")

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.cfg)
