"""pose2body, skeleton-cgan, deformable-gan: smoke (shapes, finite losses, checkpoint round trip through the
Trainer), resume, learning (beats the untrained generator on held-out data by a stated margin), and the
building blocks of deformable-gan (part affines, deformable skips, nearest-neighbour loss)."""

import pytest
import torch

from neuralrender.io.checkpoint import load_checkpoint
from neuralrender.train.trainer import Trainer, build_configs, load_run

BASE = {"size": 32, "quiet": True, "eval_every": 0, "log_every": 1, "batch_size": 2, "threads": 1, "d_width": 8}
SMALL = {
    "pose2body": {"width": 4, "n_blocks_global": 1, "n_blocks_local": 1, "eval_clip": 4},
    "skeleton-cgan": {"width": 4, "depth": 3, "d_layers": 2, "pairs": 1},
    "deformable-gan": {"width": 4, "depth": 3, "d_layers": 2, "pairs": 1},
}
NAMES = list(SMALL)


def _trainer(name, out, steps, **kw):
    _, t, m = build_configs(name, {}, {**BASE, **SMALL[name], "out": str(out), "steps": steps, **kw})
    return Trainer(name, t, m)


def _first(ds, n=2):
    from torch.utils.data import default_collate

    return default_collate([ds[i] for i in range(n)])


def _generate(model, batch):
    if model.name == "pose2body":
        return model.generate_clip(batch["cond"], batch["joints"])
    return model.generate(batch)


@pytest.mark.parametrize("name", NAMES)
def test_smoke_and_checkpoint_round_trip(name, tmp_path, shared_data):
    tr = _trainer(name, tmp_path / "run", 3, eval_batches=1)
    summary = tr.run()
    assert summary["steps"] == 3
    for v in summary["train"].values():
        assert torch.isfinite(torch.tensor(v))
    ev = summary["eval"]
    expect = {"psnr", "ssim", "warp_err", "psnr_head", "psnr_head_noface"} if name == "pose2body" else \
        {"l1", "psnr", "ssim", "l1_copy_ref", "ssim_copy_ref"}
    assert expect <= set(ev)
    assert summary["renders"]
    batch = _first(tr.data.val)
    tr.model.eval()
    with torch.no_grad():
        out = _generate(tr.model, batch)
    shape = (2, 4, 3, 32, 32) if name == "pose2body" else (2, 3, 32, 32)
    assert out.shape == shape and 0 <= float(out.min()) and float(out.max()) <= 1
    model, _, _, _ = load_run(tmp_path / "run", device="cpu")  # a fresh model from the checkpoint
    with torch.no_grad():
        assert torch.equal(out, _generate(model, batch))


@pytest.mark.parametrize("name", NAMES)
def test_resume_is_bit_identical(name, tmp_path, shared_data):
    _trainer(name, tmp_path / "full", 4, ckpt_every=2, eval_batches=1).run()
    _trainer(name, tmp_path / "part", 2, ckpt_every=2, eval_batches=1).run()
    _trainer(name, tmp_path / "part", 4, ckpt_every=2, eval_batches=1, resume=True).run()
    a, _ = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors")
    b, mb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.safetensors")
    assert mb["step"] == 4 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name, extra", [("pose2body", {}), ("skeleton-cgan", {"blend": False}),
                                         ("deformable-gan", {"blend": False})])
def test_learns_beyond_untrained_generator(name, extra, tmp_path, shared_data):
    """Held-out data (pose2body: the subject's last 20% frames, autoregressive; the others: the unseen clip from
    its first frame, without the reference blend so the generator must synthesise every pixel): 40 steps at lr
    1e-3 raise PSNR by 3 dB over the untrained generator (same seed). Measured (2-core machine shared, load
    ~19): pose2body 13.9 -> 22.4 dB, skeleton-cgan 15.8 -> 21.2 dB, deformable-gan 15.5 -> 21.0 dB."""
    tr = _trainer(name, tmp_path / "learn", 40, lr=1e-3, batch_size=4, eval_batches=0, **extra)
    before = tr.evaluate()["psnr"]
    ev = tr.run()["eval"]
    assert ev["psnr"] >= before + 3.0, (before, ev)


@pytest.mark.parametrize("name", ["skeleton-cgan", "deformable-gan"])
def test_beats_copying_the_reference(name, tmp_path, shared_data):
    """The unseen clip animated from its first frame (default --blend --region: the generator's RGB is blended with
    the (deformed) reference only where the skeleton moved): after 40 steps L1 is >= 5% below copying the
    reference frame and SSIM above it. Measured: skeleton-cgan L1 0.0151 vs 0.0166 (-9%), SSIM 0.920 vs 0.904;
    deformable-gan (--warp-body) L1 0.0139 (-16%), SSIM 0.940."""
    tr = _trainer(name, tmp_path / "learn", 40, lr=1e-3, batch_size=4, eval_batches=0)
    ev = tr.run()["eval"]
    assert ev["l1"] <= 0.95 * ev["l1_copy_ref"] and ev["ssim"] > ev["ssim_copy_ref"], ev


def test_part_affines_recover_a_known_transform():
    from neuralrender.methods.deformable_gan import PART_JOINTS, part_affines

    g = torch.Generator().manual_seed(0)
    tgt = torch.rand(2, 33, 2, generator=g) * 1.6 - 0.8
    A = torch.tensor([[[0.9, -0.3, 0.1], [0.4, 1.1, -0.2]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    src = torch.einsum("bij,bnj->bni", A, torch.cat([tgt, torch.ones(2, 33, 1)], -1))
    valid = torch.ones(2, 33, dtype=torch.bool)
    est = part_affines(src, tgt, valid, ridge=1e-6)
    for p, joints in enumerate(PART_JOINTS):
        if len(joints) >= 3:  # a full affine is determined
            assert torch.allclose(est[:, p], A, atol=1e-3), p
        pred = torch.einsum("bij,bnj->bni", est[:, p], torch.cat([tgt[:, joints], torch.ones(2, len(joints), 1)], -1))
        if len(joints) == 2:  # a similarity maps 2 points exactly
            assert torch.allclose(pred, src[:, joints], atol=1e-3), p
    valid[0, :] = False  # no valid joint: identity
    est = part_affines(src, tgt, valid)
    assert torch.allclose(est[0], torch.eye(2, 3).expand_as(est[0]))


def test_deformable_skip_moves_features_with_the_part():
    """A blob on the 'left forearm' of the source moves to where that part is in the target pose."""
    from neuralrender.graphics.warp import pixel_to_normalized
    from neuralrender.methods.deformable_gan import deform_features, part_affines, part_masks

    H = W = 32
    src = torch.full((1, 33, 2), 16.0)
    src[0, 13], src[0, 15], src[0, 17], src[0, 19] = (torch.tensor(v) for v in ([8.0, 8], [8, 14], [8, 15], [9, 15]))
    tgt = src.clone()
    tgt[0, [13, 15, 17, 19], 0] += 12  # the forearm moved 12 px right
    feat = torch.zeros(1, 1, H, W)
    feat[0, 0, 10:13, 7:10] = 1.0  # on the source forearm
    valid = torch.ones(1, 33, dtype=torch.bool)
    A = part_affines(pixel_to_normalized(src, H, W), pixel_to_normalized(tgt, H, W), valid)
    out = deform_features(feat, A, part_masks(tgt, valid, H, W, 2.0))
    assert out[0, 0, 10:13, 19:22].mean() > 0.6  # the forearm's features followed it
    assert feat[0, 0, 10:13, 19:22].max() == 0
    # where the body is absent in the target (background), the source features stay in place
    assert torch.allclose(out[0, 0, 10:13, 7:10], feat[0, 0, 10:13, 7:10], atol=0.01)


def test_nearest_neighbour_loss_tolerates_one_pixel_shift():
    from neuralrender.methods.deformable_gan import nearest_neighbour_loss

    g = torch.Generator().manual_seed(0)
    real = torch.rand(1, 3, 16, 16, generator=g)
    shifted = torch.roll(real, 1, -1)
    assert nearest_neighbour_loss(real, real) == 0
    assert nearest_neighbour_loss(shifted, real) < 0.3 * (shifted - real).abs().mean()


def test_recipe_writes_bvh_orbit_video(tmp_path, shared_data):
    import importlib.util
    from pathlib import Path

    from neuralrender.io.video import video_info

    _trainer("pose2body", tmp_path / "run", 1, eval_batches=1).run()
    spec = importlib.util.spec_from_file_location("mt", Path(__file__).resolve().parents[1] / "recipes" / "motion_transfer.py")
    mt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mt)
    bvh = str(shared_data / "keypoints" / "mocap_bvh" / "cmu_01_01.bvh")
    assert mt.main(["--run", str(tmp_path / "run"), "--bvh", bvh, "--camera", "orbit", "--frames", "5", "--stride", "200",
                    "--out", str(tmp_path / "orbit")]) == 0
    info = video_info(tmp_path / "orbit.mp4")
    assert info.num_frames == 5 and info.width == 3 * 32  # driver | pose | output
    assert mt.main(["--run", str(tmp_path / "run"), "--out", str(tmp_path / "x")]) == 2  # no driver: one-line error


def test_motion_region_opens_only_where_the_skeleton_moved():
    """A forearm that moved 12 px opens its old and new place; parts that moved less than the jitter allowance
    (1 px) and joints outside the image (extrapolated feet) open nothing; the background stays closed."""
    from neuralrender.methods._motion import motion_region

    H = W = 64
    ref = torch.full((1, 33, 2), 32.0)
    ref[0, :, 1] = torch.linspace(10, 60, 33)  # some pose inside the image
    ref[0, [27, 28, 29, 30, 31, 32], 1] = 90.0  # feet below the image
    tgt = ref.clone()
    tgt[0, [13, 15, 17, 19], 0] += 12  # the left forearm moved right
    tgt[0, :13, 1] += 0.5  # head + shoulders jitter
    tgt[0, [27, 28, 29, 30, 31, 32], 1] -= 10  # the extrapolated feet drift (still outside)
    reg = motion_region(ref, tgt, H, W)[0, 0]
    for p in (ref[0, 15], tgt[0, 15]):  # the wrist, before and after
        assert reg[int(p[1]), int(p[0])] > 0.9
    assert reg[int(ref[0, 0, 1]), int(ref[0, 0, 0])] < 0.05  # the nose (head part) did not move
    assert reg[:, :16].max() < 1e-3 and reg[:, 58:].max() < 1e-3  # background far from the body
    assert motion_region(ref, ref, H, W).max() == 0


def test_pose2body_blends_with_the_previous_frame():
    """--prev-blend: a first frame is the generator's RGB; with a previous frame, a closed mask returns it."""
    from neuralrender.methods.pose2body import Pose2Body, Pose2BodyConfig

    torch.manual_seed(0)
    cfg = Pose2BodyConfig(size=32, width=4, n_blocks_global=1, n_blocks_local=1, face=False)
    model = Pose2Body(cfg, {"cond_channels": 3, "mean_image": torch.zeros(3, 32, 32)}).eval()
    cond, prev = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        first = model(cond)
        assert first.shape == (2, 3, 32, 32) and torch.equal(first, model.generator(torch.cat([cond, 0 * prev], 1))[:, :3])
        model.generator.head[1].bias[3] = -60.0  # mask ~ 0: carry the previous frame over
        assert torch.allclose(model(cond, prev), prev, atol=1e-5)


def test_deformable_gan_takes_the_moved_body_from_the_deformed_source():
    """--warp-body (default): on the target body the output is the deformed source image whatever the generator's
    blend mask says (opening it fully changes the moved wrist's pixel by < 0.05, and that pixel is the source's
    wrist, 12 px away); with --warp-body false the open mask replaces it with the generator's RGB."""
    import torch.nn.functional as F

    from neuralrender.methods.deformable_gan import DeformableGAN, DeformableGANConfig

    H = W = 32
    torch.manual_seed(0)
    src_j = torch.full((1, 33, 2), 16.0)
    src_j[0, :, 1] = torch.linspace(4, 28, 33)
    src_j[0, [13, 15, 17, 19]] = torch.tensor([[8.0, 8], [8, 14], [8, 15], [9, 15]])
    tgt_j = src_j.clone()
    tgt_j[0, [13, 15, 17, 19], 0] += 12  # the left forearm moved 12 px right
    obs = torch.ones(1, 33)
    src = F.interpolate(torch.rand(1, 3, 8, 8), size=(H, W), mode="bilinear")  # smooth texture
    (xs, ys), (xt, yt) = src_j[0, 15].long().tolist(), tgt_j[0, 15].long().tolist()
    for warp_body in (True, False):
        model = DeformableGAN(DeformableGANConfig(size=H, width=4, depth=3, warp_body=warp_body), {}).eval()
        out = {}
        with torch.no_grad():
            for bias in (-60.0, 60.0):  # blend mask closed / fully open
                model.decoder.head.bias[3] = bias
                out[bias] = model(src, src_j, obs, tgt_j, obs)[0, :, yt, xt]
        change = (out[60.0] - out[-60.0]).abs().max()
        if warp_body:
            assert change < 0.05 and torch.allclose(out[60.0], src[0, :, ys, xs], atol=0.05), (change, out)
        else:
            assert change > 0.1, change
