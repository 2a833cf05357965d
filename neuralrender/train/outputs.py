"""What a run writes: metrics.jsonl, TensorBoard events, PNG grids and mp4s of renders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch


class RunLog:
    """Append-only metrics.jsonl (+ TensorBoard when the package is present); rank 0 only."""

    def __init__(self, run_dir: Path, resume_step: int | None, enabled: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        self.tb_note = ""
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            # Drop lines past the checkpoint we resume from: those steps are re-run.
            keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            self.path.write_text("".join(ln + "\n" for ln in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=resume_step)
        except Exception as e:  # tensorboard is a core dependency, but never fail a run for logging
            self.tb_note = f"TensorBoard off ({e.__class__.__name__})"

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "split": split, **{k: float(v) for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                if math.isfinite(float(v)):
                    self.tb.add_scalar(f"{split}/{k}", float(v), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def save_renders(images: dict[str, torch.Tensor], out_dir: Path, tag: str, fps: int = 12) -> list[Path]:
    """Write each [B,C,H,W] as a PNG grid and each [B,T,C,H,W] as an mp4 (clips side by side)."""
    from neuralrender.io.images import save_grid

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, x in images.items():
        x = x.detach().float().cpu().clamp(0, 1)
        if x.dim() == 4:
            if x.shape[1] not in (1, 3):
                x = x[:, :3] if x.shape[1] > 3 else x[:, :1]
            p = out_dir / f"{tag}_{name}.png"
            save_grid(x, p)
            written.append(p)
        elif x.dim() == 5:
            from neuralrender.io.video import write_video

            b, t, c, h, w = x.shape
            strip = x.permute(1, 2, 3, 0, 4).reshape(t, c, h, b * w)  # clips side by side
            p = out_dir / f"{tag}_{name}.mp4"
            write_video(strip, p, fps=fps)
            written.append(p)
    return written
