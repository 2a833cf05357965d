"""The trainer: a seedable loop over a method's phases, with checkpoints, resume, eval, logs and renders.

Determinism: before every step the global RNG is re-seeded from (seed, step, rank) and the batch indices
are drawn from a generator seeded the same way, so a run resumed from a checkpoint at step k computes exactly
what an uninterrupted run computes from step k (bit-identical weights on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

from neuralrender import registry
from neuralrender.config import from_dict, load_yaml, save_yaml, to_dict
from neuralrender.errors import ConfigError, NeuralRenderError
from neuralrender.io.checkpoint import (
    flatten_optimizer,
    load_checkpoint,
    save_checkpoint,
    unflatten_optimizer,
)
from neuralrender.train import distributed as dist
from neuralrender.train.config import TrainConfig
from neuralrender.train.outputs import RunLog, save_renders
from neuralrender.train.progress import Progress, print_summary


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NeuralRenderError(f"device '{name}' asked for, but CUDA is not available here")
    return dev


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    return (int(seed) * 1_000_003 + int(step) * 7919 + rank * 104_729) % (2**63 - 1)


def sample_batch(dataset, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> dict:
    g = torch.Generator().manual_seed(step_seed(seed, step))
    idx = torch.randint(len(dataset), (batch_size * world,), generator=g)[rank * batch_size:(rank + 1) * batch_size]
    return default_collate([dataset[int(i)] for i in idx])


def to_device(batch, device):
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def lr_factor(cfg: TrainConfig, step: int) -> float:
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    p = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
    if cfg.scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if cfg.scheduler == "linear":
        return 1.0 - p
    if cfg.scheduler == "step":
        return 0.1 ** int(p * 3)
    return 1.0


def make_optimizer(cfg: TrainConfig, params, lr: float) -> torch.optim.Optimizer:
    params = list(params)
    if not params:
        raise NeuralRenderError("a training phase has no parameters")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)


# --------------------------------------------------------------------------------------------------
# configs of a run


def build_configs(method_name: str, yaml_data: dict | None, overrides: dict) -> tuple[type, TrainConfig, object]:
    """TrainConfig defaults <- method.train_defaults <- YAML {train:, model:} <- flags."""
    cls = registry.get_method(method_name)
    yaml_data = dict(yaml_data or {})
    extra = set(yaml_data) - {"method", "train", "model"}
    if extra:
        raise ConfigError(f"config: unknown top-level key '{sorted(extra)[0]}'; valid keys: method, train, model")
    if yaml_data.get("method") not in (None, method_name):
        raise ConfigError(f"config is for method '{yaml_data['method']}', not '{method_name}'")
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    train_d = {**cls.train_defaults, **(yaml_data.get("train") or {})}
    model_d = dict(yaml_data.get("model") or {})
    for k, v in overrides.items():
        (train_d if k in train_names else model_d)[k] = v
    return cls, from_dict(TrainConfig, train_d, "train"), from_dict(cls.Config, model_d, "model")


def run_config_dict(method_name: str, tcfg: TrainConfig, mcfg) -> dict:
    return {"method": method_name, "train": to_dict(tcfg), "model": to_dict(mcfg)}


# --------------------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, method_name: str, tcfg: TrainConfig, mcfg, console=None):
        self.method_name = method_name
        self.cls = registry.get_method(method_name)
        self.tcfg, self.mcfg = tcfg, mcfg
        self.console = console
        if tcfg.threads > 0:
            torch.set_num_threads(tcfg.threads)
        self.device = resolve_device(tcfg.device)
        self.rank, self.world = dist.init(self.device)
        self.main = self.rank == 0
        self.run_dir = Path(tcfg.out or f"runs/{method_name}")
        torch.manual_seed(tcfg.seed)
        self.data = self.cls.build_data(mcfg, tcfg.data, tcfg.seed)
        torch.manual_seed(tcfg.seed)
        self.model = self.cls(mcfg, self.data.info).to(self.device)
        dist.broadcast_parameters(self.model)
        self.opts = {}
        for phase in self.cls.phases:
            lr = tcfg.lr_d if (phase == "d" and tcfg.lr_d is not None) else tcfg.lr
            self.opts[phase] = make_optimizer(tcfg, self.model.parameters_for(phase), lr)
        self.base_lrs = {ph: [g["lr"] for g in o.param_groups] for ph, o in self.opts.items()}
        self.ema = None
        if tcfg.ema > 0:
            self.ema = {n: p.detach().clone() for n, p in self._ema_params()}
        self.step = 0

    # ---- checkpoints --------------------------------------------------------------------------------
    def _ema_params(self):
        ids = {id(q) for p in self.model.parameters_for("g")  # parameters or optimizer param-group dicts
               for q in (p["params"] if isinstance(p, dict) else [p])}
        return [(n, p) for n, p in self.model.named_parameters() if id(p) in ids]

    def state(self) -> tuple[dict, dict]:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        optim_meta = {}
        for ph, opt in self.opts.items():
            t, rest = flatten_optimizer(opt, f"optim.{ph}")
            tensors.update(t)
            optim_meta[ph] = rest
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.items()})
        meta = {"method": self.method_name, "step": self.step, "optim": optim_meta,
                "config": run_config_dict(self.method_name, self.tcfg, self.mcfg)}
        return tensors, meta

    def save(self) -> Path | None:
        if not self.main:
            return None
        tensors, meta = self.state()
        ck = self.run_dir / "checkpoints"
        path = save_checkpoint(ck / f"step_{self.step:08d}.safetensors", tensors, meta)
        save_checkpoint(ck / "last.safetensors", tensors, meta)
        numbered = sorted(ck.glob("step_*.safetensors"))
        for old in numbered[: max(0, len(numbered) - max(1, self.tcfg.keep_ckpts))]:
            old.unlink(missing_ok=True)
        return path

    def load(self, path: Path) -> None:
        tensors, meta = load_checkpoint(path, self.device)
        check_method(path, meta, self.method_name)
        sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        load_model_state(self.model, sd, path)
        for ph, opt in self.opts.items():
            unflatten_optimizer(opt, f"optim.{ph}", tensors, meta["optim"][ph])
        if self.ema is not None:
            for k in self.ema:
                if f"ema.{k}" in tensors:
                    self.ema[k] = tensors[f"ema.{k}"].clone()
        self.step = int(meta["step"])

    def try_resume(self) -> int | None:
        ck = self.run_dir / "checkpoints"
        candidates = [ck / "last.safetensors"] + sorted(ck.glob("step_*.safetensors"), reverse=True)
        errors = []
        for c in candidates:
            if c.is_file():
                try:
                    self.load(c)
                    return self.step
                except NeuralRenderError as e:
                    errors.append(str(e))
        if errors:
            raise NeuralRenderError(f"cannot resume from {ck}: {errors[0]}")
        return None

    # ---- the loop -----------------------------------------------------------------------------------
    def _set_lr(self) -> None:
        f = lr_factor(self.tcfg, self.step)
        for ph, opt in self.opts.items():
            for g, base in zip(opt.param_groups, self.base_lrs[ph]):
                g["lr"] = base * f

    def train_step(self) -> dict[str, float]:
        tcfg = self.tcfg
        torch.manual_seed(step_seed(tcfg.seed, self.step, self.rank))
        batch = to_device(sample_batch(self.data.train, self.step, tcfg.batch_size, tcfg.seed, self.rank, self.world), self.device)
        self.model.train()
        self._set_lr()
        logs: dict[str, float] = {}
        for ph, opt in self.opts.items():
            opt.zero_grad(set_to_none=True)
            loss, phase_logs = self.model.loss(ph, batch, self.step)
            if not torch.isfinite(loss):
                raise NeuralRenderError(f"{self.method_name}: {ph} loss is {loss.item()} at step {self.step} (try a lower --lr)")
            loss.backward()
            params = [p for g in opt.param_groups for p in g["params"]]
            dist.average_gradients(params)
            if tcfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
            opt.step()
            logs.update(phase_logs)
        if self.ema is not None:
            with torch.no_grad():
                for n, p in self._ema_params():
                    self.ema[n].lerp_(p.detach(), 1 - tcfg.ema)
        self.step += 1
        return logs

    def keep_ema_weights(self) -> None:
        """Copy the EMA weights into the model for good (what load_run gives): for a caller that renders after
        training ends. No-op without EMA."""
        if self.ema is not None:
            with torch.no_grad():
                for n, p in self._ema_params():
                    p.copy_(self.ema[n])

    @contextlib.contextmanager
    def ema_weights(self):
        if self.ema is None:
            yield
            return
        params = dict(self._ema_params())
        backup = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.ema[n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(backup[n])

    def evaluate(self, max_batches: int | None = None) -> dict[str, float]:
        return evaluate_model(self.model, self.data.val, self.tcfg.batch_size, self.device,
                              max_batches if max_batches is not None else self.tcfg.eval_batches, self.ema_weights)

    def render(self) -> list[Path]:
        if not self.main:
            return []
        ds = self.data.val if self.data.val is not None else self.data.train
        n = min(len(ds), 8)
        batch = to_device(default_collate([ds[i] for i in range(n)]), self.device)
        self.model.eval()
        with self.ema_weights():
            images = self.model.render(batch)
        return save_renders(images, self.run_dir / "renders", f"step_{self.step:08d}")

    def run(self) -> dict:
        tcfg = self.tcfg
        resumed = None
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if tcfg.resume:
            resumed = self.try_resume()
        elif self.main and (self.run_dir / "checkpoints" / "last.safetensors").exists():
            raise NeuralRenderError(f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out")
        if self.main:
            save_yaml(run_config_dict(self.method_name, tcfg, self.mcfg), self.run_dir / "config.yaml")
        log = RunLog(self.run_dir, resumed, enabled=self.main)
        quiet = tcfg.quiet or not self.main
        progress = Progress(total=tcfg.steps, start=self.step, desc=self.method_name, quiet=quiet)
        t0, start_step = time.time(), self.step
        acc: dict[str, list[float]] = {}
        last_train: dict[str, float] = {}
        eval_metrics: dict[str, float] = {}
        try:
            while self.step < tcfg.steps:
                logs = self.train_step()
                for k, v in logs.items():
                    acc.setdefault(k, []).append(float(v))
                if self.step % tcfg.log_every == 0 or self.step == tcfg.steps:
                    last_train = {k: sum(v) / len(v) for k, v in acc.items()}
                    acc = {}
                    log.write(self.step, "train", {**last_train, "lr": self.opts[self.cls.phases[-1]].param_groups[0]["lr"]})
                    progress.set_postfix(last_train)
                progress.update(self.step)
                if tcfg.ckpt_every > 0 and self.step % tcfg.ckpt_every == 0 and self.step < tcfg.steps:
                    self.save()
                if tcfg.eval_every > 0 and self.step % tcfg.eval_every == 0 and self.step < tcfg.steps:
                    eval_metrics = self.evaluate()
                    log.write(self.step, "val", eval_metrics)
                    self.render()
                dist.barrier()
        finally:
            progress.close()
        self.save()
        eval_metrics = self.evaluate()
        if eval_metrics:
            log.write(self.step, "val", eval_metrics)
        renders = self.render()
        log.close()
        elapsed = time.time() - t0
        summary = {"method": self.method_name, "run_dir": str(self.run_dir), "steps": self.step,
                   "resumed_from": resumed, "seconds": elapsed,
                   "steps_per_s": (self.step - start_step) / max(elapsed, 1e-9),
                   "train": last_train, "eval": eval_metrics, "renders": [str(p) for p in renders]}
        if self.main and not tcfg.quiet:
            print_summary(summary, log.tb_note)
        dist.shutdown()
        return summary


# --------------------------------------------------------------------------------------------------
# loading a finished run for eval / render


def check_method(path, meta: dict, method_name: str) -> None:
    if meta.get("method") != method_name:
        raise NeuralRenderError(f"{path}: checkpoint was written by method '{meta.get('method')}', not '{method_name}'")


def load_model_state(model: torch.nn.Module, sd: dict, path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or bad:
        what = (f"missing '{missing[0]}'" if missing else f"unexpected '{unexpected[0]}'" if unexpected
                else f"shape of '{bad[0]}' is {tuple(sd[bad[0]].shape)}, model has {tuple(own[bad[0]].shape)}")
        raise NeuralRenderError(f"{path}: checkpoint does not fit this model config ({what})")
    model.load_state_dict(sd)


def evaluate_model(model, dataset, batch_size: int, device, max_batches: int = 0, weights_ctx=None) -> dict[str, float]:
    if dataset is None or len(dataset) == 0:
        return {}
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    n = len(dataset)
    nb = math.ceil(n / batch_size)
    if max_batches:
        nb = min(nb, max_batches)
    ctx = weights_ctx() if weights_ctx else contextlib.nullcontext()
    with ctx, torch.no_grad():
        for b in range(nb):
            items = [dataset[i] for i in range(b * batch_size, min(n, (b + 1) * batch_size))]
            batch = to_device(default_collate(items), device)
            m = model.evaluate(batch)
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(items)
            count += len(items)
    return {k: v / count for k, v in sums.items()}


def load_run(run_dir, device: str = "auto", checkpoint: str | None = None, use_ema: bool = True):
    """(model in eval mode, data bundle, train config, meta) of a finished or running run."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise NeuralRenderError(f"{run_dir}: not a run directory (no config.yaml)")
    data = load_yaml(cfg_path)
    name = data.get("method")
    if not name:
        raise ConfigError(f"{cfg_path}: missing key 'method'")
    cls = registry.get_method(name)
    data = {**data, "model": {**cls.legacy_config, **(data.get("model") or {})}}  # runs saved before a field
    cls, tcfg, mcfg = build_configs(name, data, {})
    dev = resolve_device(device)
    ck = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "last.safetensors"
    tensors, meta = load_checkpoint(ck, dev)
    check_method(ck, meta, name)
    bundle = cls.build_data(mcfg, tcfg.data, tcfg.seed)
    model = cls(mcfg, bundle.info).to(dev)
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    load_model_state(model, sd, ck)
    if use_ema:
        with torch.no_grad():
            params = dict(model.named_parameters())
            for k, v in tensors.items():
                if k.startswith("ema."):
                    params[k[4:]].copy_(v)
    model.eval()
    return model, bundle, tcfg, meta
