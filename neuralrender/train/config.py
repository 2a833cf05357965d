"""The trainer's own config: every field is a `neuralrender train` flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


def _h(text: str, **kw):
    return field(metadata={"help": text}, **kw)


@dataclass
class TrainConfig:
    data: str | None = _h("dataset path for the method ('shared:...' = inside ../shared/data); default: the method's", default=None)
    out: str | None = _h("run directory (default runs/<method>)", default=None)
    steps: int = _h("optimizer steps in total", default=1000)
    batch_size: int = _h("batch size per process", default=8)
    optimizer: Literal["adam", "adamw", "sgd"] = _h("optimizer for every phase", default="adam")
    lr: float = _h("learning rate of the generator / main phase", default=2e-4)
    lr_d: float | None = _h("learning rate of the discriminator phase (default: lr)", default=None)
    betas: tuple[float, float] = _h("Adam betas", default=(0.9, 0.999))
    weight_decay: float = _h("weight decay", default=0.0)
    scheduler: Literal["constant", "cosine", "linear", "step"] = _h("learning-rate schedule", default="constant")
    warmup_steps: int = _h("linear warm-up steps", default=0)
    grad_clip: float = _h("clip gradient norm per phase (0 = off)", default=0.0)
    ema: float = _h("EMA decay of the generator weights (0 = off), used for eval and render", default=0.0)
    eval_every: int = _h("evaluate every N steps (0 = only at the end)", default=500)
    eval_batches: int = _h("batches of the eval split per evaluation (0 = all)", default=8)
    ckpt_every: int = _h("checkpoint every N steps (and at the end)", default=500)
    keep_ckpts: int = _h("numbered checkpoints to keep besides last", default=2)
    log_every: int = _h("log training losses every N steps", default=25)
    seed: int = _h("seed: same seed, same numbers on CPU", default=0)
    device: str = _h("auto | cpu | cuda | cuda:N", default="auto")
    threads: int = _h("torch CPU threads (0 = torch's default)", default=0)
    resume: bool = _h("continue from the run directory's last complete checkpoint", default=False)
    quiet: bool = _h("no progress bar or summary table", default=False)
