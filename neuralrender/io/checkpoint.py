"""Safe checkpoints: safetensors files written atomically (temp file, fsync, rename).

A checkpoint holds flat tensors and a JSON metadata dict. Loading never unpickles anything. Optimizer states
are flattened to tensors + JSON so they round-trip exactly.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from neuralrender.errors import DataError

FORMAT = "neuralrender-checkpoint-1"


def save_checkpoint(path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors + metadata to `path` atomically; a crash leaves the old file or the new one, never half."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {"format": FORMAT, "meta": json.dumps(meta)}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata=header)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by `save_checkpoint`; any problem is a DataError naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DataError(path, f"not a readable safetensors checkpoint ({str(e).splitlines()[0][:120]})") from None
    if header.get("format") != FORMAT:
        raise DataError(path, f"not a neuralrender checkpoint (format {header.get('format')!r})", field="format")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError):
        raise DataError(path, "metadata is missing or not JSON", field="meta") from None
    return tensors, meta


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (tensors keyed f"{prefix}.{param}.{key}", JSON-able rest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict, rest: dict) -> None:
    state: dict[int, dict] = {}
    head = prefix + "."
    for name, v in tensors.items():
        if name.startswith(head):
            pid, k = name[len(head):].split(".", 1)
            state.setdefault(int(pid), {})[k] = v
    for name, v in rest.get("scalars", {}).items():
        pid, k = name.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})
