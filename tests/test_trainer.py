"""The trainer: resume after a kill is bit-identical, 2-process torchrun stays in sync, the toy method learns."""

import json
import os
import signal
import subprocess
import sys
import time

import torch

from neuralrender.io.checkpoint import load_checkpoint
from neuralrender.train.trainer import Trainer, build_configs

SMALL = {"batch_size": 8, "width": 8, "latent": 4, "eval_batches": 1, "quiet": True, "log_every": 5}


def make_trainer(out, steps, **kw):
    _, tcfg, mcfg = build_configs("autoencoder", {}, {**SMALL, "out": str(out), "steps": steps, **kw})
    return Trainer("autoencoder", tcfg, mcfg)


def weights(run_dir):
    tensors, meta = load_checkpoint(run_dir / "checkpoints" / "last.safetensors")
    return tensors, meta


def assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_in_process_is_bit_identical(tmp_path, shared_data):
    make_trainer(tmp_path / "full", 30, ckpt_every=10, ema=0.9).run()
    make_trainer(tmp_path / "part", 20, ckpt_every=10, ema=0.9).run()   # stops at 20 (as if killed after it)
    make_trainer(tmp_path / "part", 30, ckpt_every=10, ema=0.9, resume=True).run()
    (ta, ma), (tb, mb) = weights(tmp_path / "full"), weights(tmp_path / "part")
    assert ma["step"] == mb["step"] == 30
    assert_identical(ta, tb)  # model, optimizer state and EMA
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln)["split"] == "train"]
    assert steps == sorted(set(steps))  # no duplicated log lines after resume


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, shared_data):
    steps = 400
    args = [sys.executable, "-m", "neuralrender", "train", "autoencoder", "--steps", str(steps), "--ckpt-every", "20",
            "--batch-size", "8", "--width", "8", "--latent", "4", "--eval-every", "0", "--eval-batches", "1",
            "--quiet", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    p = subprocess.Popen(args + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ck = killed / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (ck.exists() and len(list(ck.glob("step_*.safetensors"))) >= 2):
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    _, meta = weights(killed)
    assert meta["step"] < steps, "the run finished before it could be killed"
    r = subprocess.run(args + ["--out", str(killed), "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    full = tmp_path / "full"
    r = subprocess.run(args + ["--out", str(full)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (ta, _), (tb, mb) = weights(full), weights(killed)
    assert mb["step"] == steps
    assert_identical(ta, tb)


WORKER = r"""
import json, os, sys, torch
from neuralrender.train.trainer import Trainer, build_configs
out = sys.argv[1]
_, t, m = build_configs("autoencoder", {}, {"out": out + "/run", "steps": 6, "batch_size": 4, "width": 8,
                        "latent": 4, "eval_batches": 1, "quiet": True, "ckpt_every": 3})
tr = Trainer("autoencoder", t, m)
init = torch.cat([p.detach().flatten().clone() for p in tr.model.parameters()])
tr.run()
final = torch.cat([p.detach().flatten() for p in tr.model.parameters()])
torch.save({"init": init, "final": final}, f"{out}/rank{tr.rank}.pt")
"""


def test_torchrun_two_processes_stay_in_sync(tmp_path, shared_data):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                        str(script), str(tmp_path)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a["init"], b["init"])
    assert torch.equal(a["final"], b["final"])
    assert not torch.equal(a["init"], a["final"])


def test_autoencoder_learns(tmp_path, shared_data):
    """Learning test: after 300 steps, test PSNR beats the mean-image baseline by >= 5 dB."""
    summary = make_trainer(tmp_path / "learn", 300, eval_every=0, eval_batches=0, width=16, latent=8,
                           lr=2e-3, batch_size=32).run()
    ev = summary["eval"]
    assert ev["psnr"] >= ev["psnr_mean_image"] + 5.0, ev
    assert (tmp_path / "learn" / "renders" / "step_00000300_reconstructions.png").is_file()


def test_step_output_runs_the_generator_once_per_gan_step():
    """Method.step_output: phase 'd' computes, 'g' of the same step reuses (attached), a new step recomputes."""
    from neuralrender.methods.base import Method

    m = Method.__new__(Method)
    torch.nn.Module.__init__(m)
    w = torch.ones(2, requires_grad=True)
    calls = []

    def gen():
        calls.append(1)
        return w * 2

    a = m.step_output(0, "d", gen)
    b = m.step_output(0, "g", gen)
    assert len(calls) == 1 and b is a and b.requires_grad
    m.step_output(0, "g", gen)  # the g phase dropped the cache: a second g recomputes
    m.step_output(1, "d", gen)
    assert len(calls) == 3
    m.step_output(2, "g", gen)  # stale cache of step 1: recomputed
    assert len(calls) == 4


def test_keep_ema_weights_matches_load_run(tmp_path, shared_data):
    """After training, keep_ema_weights puts the averaged weights in the model: the same weights load_run gives."""
    from neuralrender.train.trainer import load_run

    tr = make_trainer(tmp_path / "run", 10, ckpt_every=0, ema=0.9)
    tr.run()
    raw = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    tr.keep_ema_weights()
    loaded, _, _, _ = load_run(tmp_path / "run", device="cpu")
    kept = dict(tr.model.named_parameters())
    assert any(not torch.equal(raw[n], kept[n]) for n in raw)  # the average differs from the last step's weights
    for n, p in loaded.named_parameters():
        assert torch.equal(p, kept[n]), n
