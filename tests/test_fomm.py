"""fomm: smoke (shapes, finite loss, checkpoint round trip), resume, relative transfer, learning."""

import pytest
import torch
from animation_helpers import TINY, TINY_MODEL, moving_disc_videos
from torch.utils.data import default_collate

from neuralrender.graphics.warp import identity_grid
from neuralrender.io.checkpoint import load_checkpoint
from neuralrender.train.trainer import Trainer, build_configs, load_run


def trainer(out, steps, **kw):
    _, tcfg, mcfg = build_configs("fomm", {}, {**TINY, **TINY_MODEL["fomm"], "out": str(out), "steps": steps, **kw})
    return Trainer("fomm", tcfg, mcfg)


def test_fomm_smoke_and_checkpoint_round_trip(tmp_path, shared_data):
    tr = trainer(tmp_path / "run", 3, ckpt_every=3)
    summary = tr.run()
    assert all(torch.isfinite(torch.tensor(v)) for v in summary["train"].values()), summary["train"]
    assert {"l1", "l1_copy_source", "l1_no_motion", "psnr"} <= set(summary["eval"])
    batch = default_collate([tr.data.val[i] for i in range(2)])
    tr.model.eval()
    with torch.no_grad():
        out = tr.model.reconstruct(batch["source"], batch["driving"])
    assert out["prediction"].shape == (2, 3, 32, 32)
    assert out["kp_source"]["value"].shape == (2, 3, 2) and out["kp_source"]["jacobian"].shape == (2, 3, 2, 2)
    assert out["occlusion_map"].shape == (2, 1, 32, 32) and out["deformation"].shape == (2, 32, 32, 2)
    model, _, _, meta = load_run(tmp_path / "run", device="cpu")
    assert meta["step"] == 3
    with torch.no_grad():
        again = model.reconstruct(batch["source"], batch["driving"])["prediction"]
    assert torch.equal(again, out["prediction"])
    names = {p.name for p in (tmp_path / "run" / "renders").iterdir()}
    assert {"step_00000003_source_driving_prediction.png", "step_00000003_keypoints.png"} <= names


def test_fomm_resume_is_bit_identical(tmp_path, shared_data):
    trainer(tmp_path / "full", 4, ckpt_every=2).run()
    trainer(tmp_path / "part", 2, ckpt_every=2).run()
    trainer(tmp_path / "part", 4, ckpt_every=2, resume=True).run()
    a, ma = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors")
    b, mb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.safetensors")
    assert ma["step"] == mb["step"] == 4 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_relative_transfer_with_static_driving_leaves_source_unchanged(tmp_path, shared_data):
    """A static driving video: relative keypoints equal the source's, the dense motion is the identity and
    every output frame is the model's reconstruction of the source from itself."""
    tr = trainer(tmp_path / "static", 1)
    model = tr.model.eval()
    src = tr.data.val[0]["source"][None]
    drv_frame = tr.data.val[1]["driving"][None]
    static = drv_frame.expand(5, -1, -1, -1)
    with torch.no_grad():
        res = model.animate(src, static, relative=True, adapt_scale=True)
        assert torch.allclose(res["kp_used"], res["kp_source"].expand(5, -1, -1), atol=1e-6)
        kp_s = model.keypoints(src)
        gen = model.generate(src, kp_s, kp_s)
        assert torch.allclose(gen["deformation"], identity_grid(1, 32, 32), atol=1e-5)
        assert torch.allclose(res["prediction"], gen["prediction"].expand(5, -1, -1, -1), atol=1e-5)
        # absolute transfer with the same static video follows the driving frame's keypoints instead
        absol = model.animate(src, static, relative=False)
        assert torch.allclose(absol["kp_used"], res["kp_driving"], atol=1e-6)


def test_output_blend_is_occlusion_weighted_warp_and_starts_near_the_source(tmp_path, shared_data):
    """Default output (TPSMM's): occlusion * deformed source + (1 - occlusion) * generated; the occlusion map
    starts near 0.88, so an untrained model driven by the source itself stays close to the source; with
    --output-blend false (the paper's output) it is the generator's alone."""
    tr = trainer(tmp_path / "blend", 1)
    model = tr.model.eval()
    src = tr.data.val[0]["source"][None]
    with torch.no_grad():
        kp = model.keypoints(src)
        out = model.generate(src, kp, kp)
        occ = out["occlusion_map"]
        assert occ.shape == (1, 1, 32, 32) and 0.8 < float(occ.mean()) < 0.95
        assert torch.allclose(out["prediction"], occ * out["deformed"] + (1 - occ) * out["generated"], atol=1e-6)
        assert (out["prediction"] - src).abs().mean() < 0.5 * (out["generated"] - src).abs().mean()
    paper = trainer(tmp_path / "paper", 1, output_blend=False).model.eval()
    with torch.no_grad():
        kp = paper.keypoints(src)
        out = paper.generate(src, kp, kp)
    assert "generated" not in out and float(out["occlusion_map"].mean()) == pytest.approx(0.5, abs=0.1)


@pytest.mark.slow
def test_fomm_learns_motion_on_moving_discs(tmp_path):
    """Learning: on held-out synthetic videos (a disc circling over a gradient), after 300 steps the
    reconstruction L1 is at least 20% below copy-source and below the same model driven by the source
    (no-motion baseline). Measured: 0.0304 vs 0.0474 copy-source, 0.0676 no-motion (~165 s)."""
    data = moving_disc_videos(tmp_path / "discs")
    s = trainer(tmp_path / "learn", 300, data=str(data), batch_size=4, lr=2e-3, max_frames=0, eval_stride=1,
                eval_batches=0, num_kp=4, kp_width=8, motion_width=8, gen_width=8, max_features=32, kp_blocks=3, motion_blocks=3,
                gen_res=2, kp_scale=0.5).run()
    ev = s["eval"]
    assert ev["l1"] < 0.8 * ev["l1_copy_source"], ev
    assert ev["l1"] < ev["l1_no_motion"], ev


def test_benchmark_split_adds_up_to_the_l1(tmp_path, shared_data):
    """benchmarks/animation.py split: the unchanging and changing pixels' contributions add up to the held-out L1
    of the reconstruction protocol, copy-source's parts to copy-source's L1; fomm's warp and occlusion reported."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "animation.py"
    spec = importlib.util.spec_from_file_location("bench_animation", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    trainer(tmp_path / "run", 2, ckpt_every=2).run()
    r = bench.split_l1(str(tmp_path / "run"))
    model, bundle, _, _ = load_run(tmp_path / "run", device="cpu")
    gts = [c.float().div(255) for c in bench._test_clips(bundle)]
    preds = bench.reconstruct_clips(model, bench._test_clips(bundle), torch.device("cpu"))
    l1 = torch.cat([(p - g).abs().flatten() for p, g in zip(preds, gts)]).mean()
    copy = torch.cat([(g[:1] - g).abs().flatten() for g in gts]).mean()
    still, moving = r["still"], r["moving"]
    assert still["share"] + moving["share"] == pytest.approx(1.0)
    assert still["contribution"] + moving["contribution"] == pytest.approx(float(l1), rel=1e-4)
    assert still["share"] * still["copy"] + moving["share"] * moving["copy"] == pytest.approx(float(copy), rel=1e-4)
    assert 0 < still["weight"] < 1 and still["warp"] >= 0 and still["copy"] < 0.08
