"""vid2vid: smoke (shapes, finite losses, progressive schedule reached, checkpoint round trip), resume,
learning on labels -> scene (beats the train frames' mean image on held-out frames)."""

import pytest
import torch

from neuralrender.io.checkpoint import load_checkpoint
from neuralrender.train.trainer import Trainer, build_configs, load_run

SCENE = {"task": "scene", "size": 32, "frames": 40, "eval_clip": 4, "d_layers": 2, "d_width": 8, "quiet": True,
         "eval_every": 0, "log_every": 1, "batch_size": 2, "threads": 1, "width": 8, "n_blocks": 1,
         "clip_len": 4, "clip_start": 2, "temporal_every": 2, "spatial_steps": 2}


def _trainer(out, steps, **kw):
    _, t, m = build_configs("vid2vid", {}, {**SCENE, "out": str(out), "steps": steps, **kw})
    return Trainer("vid2vid", t, m)


def test_smoke_progressive_and_checkpoint_round_trip(tmp_path):
    tr = _trainer(tmp_path / "run", 5, eval_batches=1)
    logs = [tr.train_step() for _ in range(5)]
    # spatial switch at step 2 (16x16 -> 32x32), clip 2 -> 4 frames (k_frames=3: the video D joins at 4)
    assert [lg["scale"] for lg in logs] == [0.5, 0.5, 1.0, 1.0, 1.0]
    assert [lg["clip_len"] for lg in logs] == [2, 2, 4, 4, 4]
    assert "g_video" not in logs[0] and "g_video" in logs[2]
    for lg in logs:
        assert all(torch.isfinite(torch.tensor(v)) for v in lg.values())
    summary = tr.run()  # already at step 5: saves, evaluates and renders
    assert {"psnr", "ssim", "warp_err", "warp_err_gt"} <= set(summary["eval"])
    assert any(p.endswith("video.mp4") for p in summary["renders"])
    item = tr.data.val[0]
    cond = item["cond"][None]
    tr.model.eval()
    out = tr.model.generate(cond)
    assert out["image"].shape == (1, 4, 3, 32, 32) and out["flow"].shape == (1, 4, 2, 32, 32)
    assert bool((out["mask"][:, 0] == 1).all())  # the first frame has no history: pure hallucination
    model, _, _, _ = load_run(tmp_path / "run", device="cpu")
    assert torch.equal(model.generate_clip(cond), out["image"])


def test_resume_is_bit_identical(tmp_path):
    _trainer(tmp_path / "full", 4, ckpt_every=2, eval_batches=1, generator="sequential").run()
    _trainer(tmp_path / "part", 2, ckpt_every=2, eval_batches=1, generator="sequential").run()
    _trainer(tmp_path / "part", 4, ckpt_every=2, eval_batches=1, resume=True, generator="sequential").run()
    a, _ = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors")
    b, mb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.safetensors")
    assert mb["step"] == 4 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_learns_labels_to_scene(tmp_path):
    """Held-out frames: after 80 steps PSNR beats the untrained generator (same seed) by 2 dB."""
    tr = _trainer(tmp_path / "learn", 80, lr=1e-3, eval_batches=0, width=16, batch_size=4, clip_start=3,
                  temporal_every=30, spatial_steps=30)
    before = tr.evaluate()["psnr"]
    ev = tr.run()["eval"]
    assert ev["psnr"] >= before + 2.0, (before, ev)


def test_mask_starts_from_the_warped_previous_frame():
    """mask_bias: an untrained generator blends sigmoid(mask_bias) of the hallucination into the warped previous
    frame (flow 0); the output consistency term is logged when lambda_temporal > 0."""
    from neuralrender.methods.vid2vid import Vid2Vid, Vid2VidConfig

    cfg = Vid2VidConfig(size=16, width=4, n_blocks=1, d_layers=1, d_width=4, mask_bias=-2.0)
    model = Vid2Vid(cfg, {"cond_channels": 3, "mean_image": torch.zeros(3, 16, 16)}).eval()
    out = model.generate(torch.rand(1, 3, 3, 16, 16))
    assert torch.allclose(out["mask"][:, 1:], torch.sigmoid(torch.tensor(-2.0)).expand_as(out["mask"][:, 1:]))
    assert bool((out["flow"] == 0).all())
    batch = {"cond": torch.rand(1, 3, 3, 16, 16), "image": torch.rand(1, 3, 3, 16, 16),
             "flow": torch.zeros(1, 3, 2, 16, 16), "flow_mask": torch.ones(1, 3, 1, 16, 16)}
    model.train()
    _, logs = model.loss("g", batch, 10_000)
    assert logs["temporal"] >= 0
    _, logs = Vid2Vid(Vid2VidConfig(size=16, width=4, n_blocks=1, d_layers=1, d_width=4, lambda_temporal=0),
                      {"cond_channels": 3, "mean_image": torch.zeros(3, 16, 16)}).train().loss("g", batch, 10_000)
    assert "temporal" not in logs


def test_resize_conv_and_coordinate_options(tmp_path):
    """--up bilinear --coords true (pix2pixHD's defaults; off for vid2vid): one step trains, shapes hold, the
    generator sees two extra channels per condition frame and no transposed convs."""
    tr = _trainer(tmp_path / "run", 1, up="bilinear", coords=True)
    lg = tr.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in lg.values())
    gen = tr.model.generator
    assert gen.cond_channels == tr.data.info["cond_channels"] + 2
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in gen.modules())
    out = tr.model.generate(tr.data.val[0]["cond"][None])
    assert out["image"].shape == (1, 4, 3, 32, 32)


def test_pix2pixhd_generator_option(tmp_path):
    """generator='pix2pixhd': the hallucinated image comes from pix2pixHD's LocalEnhancer (no transposed convs, x, y
    appended to the current condition), the sequential part keeps flow + mask; shapes, the first frame is the
    hallucination alone, a checkpoint round trip through load_run, and a bit-identical resume."""
    from neuralrender.methods.vid2vid import HDSequentialGenerator
    from neuralrender.nn.generators import LocalEnhancer

    kw = {"generator": "pix2pixhd", "ckpt_every": 1, "eval_batches": 1}
    tr = _trainer(tmp_path / "full", 3, **kw)
    tr.run()
    gen = tr.model.generator
    assert isinstance(gen, HDSequentialGenerator) and isinstance(gen.hallucinator, LocalEnhancer)
    assert not hasattr(gen, "dec_img") and not any(isinstance(m, torch.nn.ConvTranspose2d)
                                                   for m in gen.hallucinator.modules())
    assert gen.hallucinator.front[1].in_channels == tr.data.info["cond_channels"] + 2
    cond = tr.data.val[0]["cond"][None]
    tr.model.eval()
    out = tr.model.generate(cond)
    assert out["image"].shape == (1, 4, 3, 32, 32) and out["mask"].shape == (1, 4, 1, 32, 32)
    assert torch.equal(out["image"][:, 0], out["hallucinated"][:, 0]) and bool((out["mask"][:, 0] == 1).all())
    assert bool((out["mask"][:, 1:] < 1).all())
    model, _, _, _ = load_run(tmp_path / "full", device="cpu")
    assert torch.equal(model.generate_clip(cond), out["image"])
    _trainer(tmp_path / "part", 2, **kw).run()
    _trainer(tmp_path / "part", 3, resume=True, **kw).run()
    a, _ = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors")
    b, mb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.safetensors")
    assert mb["step"] == 3 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_lambda_h_option():
    """lambda_h (off by default): an L1 term on the hallucinated image alone, logged as l1_h when on; the loss with
    it is the loss without it plus lambda_h x |h - real| (same weights, same batch)."""
    from neuralrender.methods.vid2vid import Vid2Vid, Vid2VidConfig

    assert Vid2VidConfig().lambda_h == 0 and Vid2VidConfig(task="face").lambda_h == 0
    info = {"cond_channels": 3, "mean_image": torch.zeros(3, 16, 16)}
    batch = {"cond": torch.rand(1, 3, 3, 16, 16), "image": torch.rand(1, 3, 3, 16, 16),
             "flow": torch.zeros(1, 3, 2, 16, 16), "flow_mask": torch.ones(1, 3, 1, 16, 16)}
    kw = {"size": 16, "width": 4, "n_blocks": 1, "d_layers": 1, "d_width": 4}
    torch.manual_seed(0)
    off = Vid2Vid(Vid2VidConfig(**kw), info).train()
    on = Vid2Vid(Vid2VidConfig(**kw, lambda_h=100.0), info).train()
    on.load_state_dict(off.state_dict())
    loss_off, logs_off = off.loss("g", batch, 10_000)
    loss_on, logs_on = on.loss("g", batch, 10_000)
    assert "l1_h" not in logs_off and logs_on["l1_h"] > 0
    h = on.generate(batch["cond"])["hallucinated"]
    assert h.shape == (1, 3, 3, 16, 16)
    expected = loss_off + 100.0 * torch.nn.functional.l1_loss(h, batch["image"])
    assert torch.allclose(loss_on, expected, rtol=1e-5), (loss_on, expected)


def test_lambda_h_run_round_trip(tmp_path):
    """A run with lambda_h saves it in its config and load_run restores the same generator; a config without the
    field (runs saved before it) loads with lambda_h 0."""
    import yaml

    tr = _trainer(tmp_path / "run", 2, generator="pix2pixhd", lambda_h=50.0, eval_batches=1)
    tr.run()
    cond = tr.data.val[0]["cond"][None]
    tr.model.eval()
    model, _, _, _ = load_run(tmp_path / "run", device="cpu")
    assert model.cfg.lambda_h == 50.0 and torch.equal(model.generate_clip(cond), tr.model.generate_clip(cond))
    cfg_path = tmp_path / "run" / "config.yaml"
    data = yaml.safe_load(cfg_path.read_text())
    del data["model"]["lambda_h"]
    cfg_path.write_text(yaml.safe_dump(data))
    assert load_run(tmp_path / "run", device="cpu")[0].cfg.lambda_h == 0


def test_hd_up_option():
    """hd_up (generator='pix2pixhd'): the hallucinator's upsampling; the default builds the session-6 hallucinator
    (pix2pixHD's session-4 generator, HD_GENERATOR: same parameters and shapes), 'shuffle' puts PixelShuffle layers
    in it and keeps the output shapes."""
    from neuralrender.methods.vid2vid import HD_GENERATOR, HDSequentialGenerator, Vid2VidConfig
    from neuralrender.nn.generators import LocalEnhancer

    assert Vid2VidConfig().hd_up == HD_GENERATOR["up"] == "bilinear"
    default = HDSequentialGenerator(5, 3, width=4, n_down=2, n_blocks=1)
    ref = LocalEnhancer(3 + 2, 3, **HD_GENERATOR).state_dict()
    assert {k: v.shape for k, v in default.hallucinator.state_dict().items()} == {k: v.shape for k, v in ref.items()}
    shuffle = HDSequentialGenerator(5, 3, width=4, n_down=2, n_blocks=1, hd_up="shuffle")
    assert not any(isinstance(m, torch.nn.PixelShuffle) for m in default.hallucinator.modules())
    assert any(isinstance(m, torch.nn.PixelShuffle) for m in shuffle.hallucinator.modules())
    out = shuffle(torch.rand(1, 15, 16, 16), torch.rand(1, 6, 16, 16))
    assert out["image"].shape == (1, 3, 16, 16) and out["hallucinated"].shape == (1, 3, 16, 16)


def test_canvas_option_half_and_full_resolution_and_round_trip(tmp_path):
    """canvas (generator='pix2pixhd'): a ScreenTexture input of the hallucinator (here with hd_skip, the
    hallucinator's full-resolution skip); off (default) adds no parameters;
    on, the run trains through the half-resolution steps and the switch to full resolution (the canvas is
    sampled at either), the canvas gets gradients, and load_run restores the same outputs."""
    from neuralrender.errors import NeuralRenderError
    from neuralrender.methods.vid2vid import HDSequentialGenerator

    off = HDSequentialGenerator(5, 3, width=4, n_down=2, n_blocks=1)
    assert off.canvas is None and not any("canvas" in k for k in off.state_dict())
    assert off.hallucinator.skip is False  # hd_skip off: session 6's hallucinator
    on = HDSequentialGenerator(5, 3, width=4, n_down=2, n_blocks=1, canvas=4, size=32, hd_skip=True)
    assert on.hallucinator.skip is True
    for hw in (16, 32):  # half and full resolution of a 32^2 canvas
        out = on(torch.rand(2, 15, hw, hw), torch.rand(2, 6, hw, hw))
        assert out["image"].shape == (2, 3, hw, hw) and out["hallucinated"].shape == (2, 3, hw, hw)
    out["hallucinated"].mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in on.canvas.parameters())
    with pytest.raises(NeuralRenderError, match="canvas"):
        _trainer(tmp_path / "bad", 1, generator="sequential", canvas=4)
    tr = _trainer(tmp_path / "run", 4, generator="pix2pixhd", canvas=4, hd_skip=True, eval_batches=1)
    assert any(p is q for p in tr.model.parameters_for("g") for q in tr.model.generator.canvas.parameters())
    logs = [tr.train_step() for _ in range(4)]
    assert [lg["scale"] for lg in logs] == [0.5, 0.5, 1.0, 1.0]
    tr.run()
    cond = tr.data.val[0]["cond"][None]
    tr.model.eval()
    model, _, _, _ = load_run(tmp_path / "run", device="cpu")
    assert model.cfg.canvas == 4 and model.cfg.hd_skip and torch.equal(model.generate_clip(cond), tr.model.generate_clip(cond))
