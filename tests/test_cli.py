"""The `neuralrender` command: help, methods, info, and one-line errors for bad input."""

import subprocess
import sys

import pytest
import torch

from neuralrender.cli import main
from neuralrender.io.checkpoint import save_checkpoint


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "neuralrender", *args], capture_output=True, text=True, timeout=300)


def test_help_methods_info():
    r = run_cli("--help")
    assert r.returncode == 0 and "train" in r.stdout and "scenes" in r.stdout
    r = run_cli("methods")
    assert r.returncode == 0 and "autoencoder" in r.stdout
    r = run_cli("info")
    assert r.returncode == 0 and "torch" in r.stdout and "device" in r.stdout


def test_train_help_lists_every_field():
    r = run_cli("train", "autoencoder", "--help")
    assert r.returncode == 0
    for flag in ("--steps", "--batch-size", "--lr", "--ema", "--resume", "--width", "--latent", "--dataset"):
        assert flag in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["train", "no-such-method"], "unknown method 'no-such-method'; registered methods: "),
    (["train", "autoencoder", "--stepz", "3"], "unknown config key 'stepz' (did you mean '--steps'?)"),
    (["train", "autoencoder", "--data", "/no/such/dir", "--steps", "1"], "/no/such/dir/t10k-images-idx3-ubyte.gz"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["eval", "--run", "/no/such/run"], "not a run directory"),
])
def test_bad_input_is_one_line_error(args, needle, capsys):
    rc = main(args)
    err = capsys.readouterr().err
    assert rc != 0
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_traceback(capsys):
    rc = main(["--debug", "train", "no-such-method"])
    assert rc != 0 and "Traceback" in capsys.readouterr().err


def test_bad_yaml_key(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: autoencoder\ntrain:\n  stepss: 3\n")
    rc = main(["train", "autoencoder", "--config", str(cfg)])
    err = capsys.readouterr().err
    assert rc != 0 and "unknown key 'stepss'" in err and "valid keys:" in err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("run") / "ae"
    rc = main(["train", "autoencoder", "--steps", "4", "--batch-size", "4", "--width", "8", "--latent", "4",
               "--eval-batches", "1", "--out", str(out), "--quiet"])
    assert rc == 0
    return out


def test_unreadable_and_foreign_checkpoints(tiny_run, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert main(["eval", "--run", str(tiny_run), "--checkpoint", str(bad)]) != 0
    err = capsys.readouterr().err
    assert str(bad) in err and "not a readable safetensors checkpoint" in err
    foreign = tmp_path / "other.safetensors"
    save_checkpoint(foreign, {"model.w": torch.zeros(1)}, {"method": "pixelcnn", "step": 1})
    assert main(["eval", "--run", str(tiny_run), "--checkpoint", str(foreign)]) != 0
    assert "written by method 'pixelcnn', not 'autoencoder'" in capsys.readouterr().err


def test_eval_and_render_of_a_run(tiny_run):
    assert main(["eval", "--run", str(tiny_run), "--batch-size", "64"]) == 0
    assert (tiny_run / "eval.json").is_file()
    assert main(["render", "--run", str(tiny_run)]) == 0
    assert (tiny_run / "renders" / "render_reconstructions.png").is_file()
    for f in ("config.yaml", "metrics.jsonl", "checkpoints/last.safetensors"):
        assert (tiny_run / f).exists()
    assert any((tiny_run / "tensorboard").iterdir())


def test_existing_run_needs_resume(tiny_run, capsys):
    assert main(["train", "autoencoder", "--steps", "4", "--out", str(tiny_run), "--quiet"]) != 0
    assert "pass --resume" in capsys.readouterr().err
