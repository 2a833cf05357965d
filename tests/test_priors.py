"""The prior methods: pixelcnn, gated-pixelcnn, pixelrnn, vqvae, vqvae2, code-prior.

Per method a smoke test (a few Trainer steps: finite loss, metric keys, renders, and a checkpoint round trip
through `load_run` giving the same outputs) and a learning test against a named baseline with a stated margin.
"""

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from neuralrender.errors import ConfigError
from neuralrender.losses.likelihood import bernoulli_nll, categorical_nll
from neuralrender.metrics.density import (
    bits_per_dim,
    independent_pixel_nll,
    perplexity,
    uniform_nll,
    unigram_nll,
)
from neuralrender.train.trainer import Trainer, build_configs, load_run

QUIET = {"quiet": True, "eval_every": 0, "ckpt_every": 0, "log_every": 1, "threads": 1}
TINY_AR = {"channels": 8, "layers": 2, "first_kernel": 5, "samples": 2, "batch_size": 4, "eval_batches": 1}
TINY_VQ = {"hidden": 16, "res_blocks": 1, "code_dim": 4, "batch_size": 4, "eval_batches": 1}


def train(name, out, steps, **kw):
    _, tcfg, mcfg = build_configs(name, {}, {**QUIET, "out": str(out), "steps": steps, **kw})
    tr = Trainer(name, tcfg, mcfg)
    return tr, tr.run()


def first_items(ds, n=4):
    return default_collate([ds[i] for i in range(n)])


# ---- likelihood helpers -------------------------------------------------------------------------------


def test_nll_helpers_agree_with_hand_computation():
    logits = torch.zeros(2, 1, 4, 3, 3)  # uniform over 4 values
    x = torch.randint(0, 4, (2, 1, 3, 3))
    assert torch.allclose(categorical_nll(logits, x), torch.full((2,), 9 * math.log(4)))
    assert abs(bits_per_dim(9 * math.log(4), 9) - 2.0) < 1e-6
    assert torch.allclose(categorical_nll(torch.zeros(2, 4, 3, 3), x[:, 0]), torch.full((2,), 9 * math.log(4)))
    b = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(bernoulli_nll(torch.zeros(1, 2), b), torch.tensor([2 * math.log(2)]))
    # two-level softmax == Bernoulli on the logit difference
    lg = torch.randn(3, 1, 2, 4, 4)
    xb = torch.randint(0, 2, (3, 1, 4, 4))
    assert torch.allclose(categorical_nll(lg, xb), bernoulli_nll(lg[:, :, 1] - lg[:, :, 0], xb.float()), atol=1e-5)


def test_baselines():
    train = torch.tensor([[0, 1], [0, 1], [0, 0], [0, 1]])  # pixel 0 always 0, pixel 1 mostly 1
    test = torch.tensor([[0, 1]])
    nll = independent_pixel_nll(train, test, 2, alpha=1.0)
    assert torch.allclose(nll, torch.tensor([-math.log(5 / 6) - math.log(4 / 6)]))
    uni = unigram_nll(train, test, 2, alpha=0.0)  # 5 zeros, 3 ones
    assert torch.allclose(uni, torch.tensor([-math.log(5 / 8) - math.log(3 / 8)]))
    assert abs(uniform_nll(49, 128) - 49 * math.log(128)) < 1e-9
    assert abs(perplexity(torch.ones(7)) - 7) < 1e-9


# ---- smoke tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,extra", [
    ("pixelcnn", {"variant": "256"}),
    ("gated-pixelcnn", {"variant": "binary"}),
    ("pixelrnn", {"variant": "binary", "layers": 1})])
def test_pixel_models_smoke_and_checkpoint_round_trip(tmp_path, shared_data, name, extra):
    tr, s = train(name, tmp_path / name, 3, **{**TINY_AR, **extra, "dataset": "lfw"})
    ev = s["eval"]
    assert math.isfinite(s["train"]["nll_nats"]) and ev["nll_nats"] > 0
    assert {"bits_per_dim", "baseline_nll_nats", "baseline_bits_per_dim"} <= set(ev)
    names = sorted(Path(p).name.split("_", 2)[-1] for p in s["renders"])
    assert names == ["completions.png", "samples.png"]
    model, bundle, _, _ = load_run(tmp_path / name, device="cpu")
    x, y = first_items(bundle.val)
    tr.model.eval()
    assert torch.equal(model.logits(x.long(), y), tr.model.logits(x.long(), y))
    levels = 256 if extra["variant"] == "256" else 2
    assert model.logits(x.long(), y).shape == (4, 1, levels, 25, 25)
    g = torch.Generator().manual_seed(0)
    samples = model.sample(2, torch.tensor([0, 1]), generator=g)
    assert samples.shape == (2, 1, 25, 25) and samples.max() < levels


@pytest.mark.parametrize("name", ["vqvae", "vqvae2"])
def test_vq_models_smoke_and_checkpoint_round_trip(tmp_path, shared_data, name):
    extra = {"num_codes": 16} if name == "vqvae" else {"num_codes_top": 8, "num_codes_bottom": 16}
    tr, s = train(name, tmp_path / name, 3, **TINY_VQ, **extra)
    ev = s["eval"]
    assert math.isfinite(s["train"]["mse"]) and 0 < ev["mse"] < 1 and "psnr_mean_image" in ev
    rendered = {Path(p).name.split("_", 2)[-1] for p in s["renders"]}
    assert "reconstructions.png" in rendered and any("codebook_usage" in r for r in rendered)
    model, bundle, _, _ = load_run(tmp_path / name, device="cpu")
    x, _ = first_items(bundle.val)
    tr.model.eval()
    assert torch.equal(model(x)[0], tr.model(x)[0])
    if name == "vqvae":
        codes = model.encode(x)
        assert codes.shape == (4, 7, 7) and codes.dtype == torch.long
        assert torch.allclose(model.decode_codes(codes), model(x)[0], atol=1e-6)
    else:
        top, bottom = model.encode(x)
        assert top.shape == (4, 4, 4) and bottom.shape == (4, 8, 8)
        assert torch.allclose(model.decode_codes(top, bottom), model(x)[0], atol=1e-6)


def test_code_prior_smoke_and_checkpoint_round_trip(tmp_path, shared_data):
    train("vqvae", tmp_path / "vq", 3, **TINY_VQ, num_codes=16)
    for cond in ("class", "image"):
        out = tmp_path / f"prior_{cond}"
        tr, s = train("code-prior", out, 3, vqvae_run=str(tmp_path / "vq"), condition=cond, **TINY_AR, embed=4)
        ev = s["eval"]
        assert math.isfinite(s["train"]["nll_nats"]) and ev["uniform_nll_nats"] == pytest.approx(49 * math.log(16))
        assert {"bits_per_code", "unigram_nll_nats"} <= set(ev)
        assert {Path(p).name.split("_", 2)[-1] for p in s["renders"]} == {"samples.png", "reconstructions.png"}
        model, bundle, _, _ = load_run(out, device="cpu")
        batch = first_items(bundle.val)
        tr.model.eval()
        assert torch.equal(model.nll(batch), tr.model.nll(batch))
        assert not any(k.startswith("_vqvae") for k in model.state_dict())


def test_code_prior_on_vqvae2_levels(tmp_path, shared_data):
    train("vqvae2", tmp_path / "vq2", 3, **TINY_VQ, num_codes_top=8, num_codes_bottom=16)
    common = {**TINY_AR, "embed": 4, "vqvae_run": str(tmp_path / "vq2")}
    _, s = train("code-prior", tmp_path / "top", 3, level="top", condition="class", **common)
    assert s["eval"]["uniform_nll_nats"] == pytest.approx(16 * math.log(8))  # 4x4 top codes, 8 values
    tr, s = train("code-prior", tmp_path / "bottom", 3, level="bottom", condition="none",
                  top_prior_run=str(tmp_path / "top"), **common)
    assert s["eval"]["uniform_nll_nats"] == pytest.approx(64 * math.log(16))  # 8x8 bottom codes, 16 values
    assert {Path(p).name.split("_", 2)[-1] for p in s["renders"]} == {
        "samples.png", "samples_given_top.png", "reconstructions.png"}
    # the bottom prior is conditioned on the top codes
    batch = first_items(tr.data.val)
    other = list(batch)
    other[4] = (batch[4] + 1) % 8
    tr.model.eval()
    assert not torch.allclose(tr.model.nll(batch), tr.model.nll(other))
    with pytest.raises(ConfigError, match="needs a `vqvae2` run"):
        train("vqvae", tmp_path / "vq1", 1, **TINY_VQ, num_codes=16)
        train("code-prior", tmp_path / "bad", 1, level="bottom", vqvae_run=str(tmp_path / "vq1"))


def test_code_prior_needs_a_vqvae_run(tmp_path):
    with pytest.raises(ConfigError, match="vqvae-run"):
        train("code-prior", tmp_path / "p", 1, vqvae_run="")
    with pytest.raises(ConfigError, match="not a run directory"):
        train("code-prior", tmp_path / "p", 1, vqvae_run=str(tmp_path))


# ---- learning tests ---------------------------------------------------------------------------------------

LEARN_AR = {"channels": 16, "layers": 4, "kernel": 3, "first_kernel": 5, "samples": 4, "batch_size": 16,
            "eval_batches": 0, "lr": 2e-3}


def test_gated_pixelcnn_beats_independent_pixels(tmp_path, shared_data):
    """Binarized Fashion-MNIST, 150 steps: test NLL at most 60% of the independent-Bernoulli baseline's."""
    _, s = train("gated-pixelcnn", tmp_path / "g", 150, **LEARN_AR, variant="binary")
    ev = s["eval"]
    print("gated-pixelcnn", ev)
    assert ev["nll_nats"] <= 0.6 * ev["baseline_nll_nats"], ev


def test_pixelcnn_256_levels_beats_per_pixel_histograms(tmp_path, shared_data):
    """256-level Fashion-MNIST, 150 steps: test bits/dim at least 0.5 below the per-pixel histogram baseline."""
    _, s = train("pixelcnn", tmp_path / "p", 150, **LEARN_AR, variant="256")
    ev = s["eval"]
    print("pixelcnn-256", ev)
    assert ev["bits_per_dim"] <= ev["baseline_bits_per_dim"] - 0.5, ev


def test_pixelrnn_beats_independent_pixels(tmp_path, shared_data):
    """Binarized Fashion-MNIST, 100 steps of a one-layer Row LSTM: test NLL at most 70% of the baseline's."""
    _, s = train("pixelrnn", tmp_path / "r", 100, **{**LEARN_AR, "layers": 1}, variant="binary")
    ev = s["eval"]
    print("pixelrnn", ev)
    assert ev["nll_nats"] <= 0.7 * ev["baseline_nll_nats"], ev


@pytest.fixture(scope="module")
def vqvae_run(tmp_path_factory, shared_data):
    """A VQ-VAE trained for 300 steps (32 codes), shared by the VQ-VAE and code-prior learning tests."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("vq") / "vqvae"
    try:
        _, s = train("vqvae", out, 300, hidden=32, res_blocks=1, num_codes=32, code_dim=8, batch_size=32,
                     eval_batches=0, lr=2e-3)
    finally:
        torch.set_num_threads(n)
    return out, s


def test_vqvae_reconstructs_with_all_codes_in_use(vqvae_run):
    """PSNR at least 5 dB above the train mean image's; >= 90% of the codes in every test batch; perplexity > K/4."""
    ev = vqvae_run[1]["eval"]
    print("vqvae", ev)
    assert ev["psnr"] >= ev["psnr_mean_image"] + 5.0, ev
    assert ev["codes_used"] >= 0.9 * 32 and ev["perplexity"] > 8, ev  # distinct codes per test batch


def test_vqvae2_reconstructs(tmp_path, shared_data):
    """Two levels, 300 steps: PSNR at least 5 dB above the mean image's; per test batch >= 90% of the bottom
    codebook and >= 50% of the top one in use."""
    _, s = train("vqvae2", tmp_path / "v2", 300, hidden=32, res_blocks=1, num_codes_top=16, num_codes_bottom=32,
                 code_dim=8, batch_size=32, eval_batches=0, lr=2e-3)
    ev = s["eval"]
    print("vqvae2", ev)
    assert ev["psnr"] >= ev["psnr_mean_image"] + 5.0, ev
    # the top level is picked up slowly (the bottom can reconstruct alone): half its codes per batch this early
    assert ev["codes_used_top"] >= 0.5 * 16 and ev["codes_used_bottom"] >= 0.9 * 32, ev


def test_code_prior_beats_unigram_codes(tmp_path, vqvae_run):
    """Class-conditional prior over the 7x7 codes, 200 steps: test NLL at least 15% below the unigram's."""
    _, s = train("code-prior", tmp_path / "cp", 200, vqvae_run=str(vqvae_run[0]), condition="class",
                 **{**LEARN_AR, "embed": 8})
    ev = s["eval"]
    print("code-prior", ev)
    assert ev["nll_nats"] <= 0.85 * ev["unigram_nll_nats"] < ev["uniform_nll_nats"], ev
