"""Shared blocks of the image-animation methods: hourglass, keypoints (soft-argmax, Jacobians, transfer),
dense motion, TPS transforms, equivariance and pyramid losses, frame-pair data."""

import numpy as np
import pytest
import torch

from neuralrender.data.frame_pairs import FramePairDataset, build_frame_pair_data, color_jitter, split_videos
from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.tps import ThinPlateSpline, random_tps
from neuralrender.graphics.warp import grid_to_flow, identity_grid, make_coordinate_grid
from neuralrender.losses.equivariance import equivariance_losses
from neuralrender.losses.pyramid import image_pyramid, pyramid_l1
from neuralrender.nn.dense_motion import DenseMotionNetwork, deform, sparse_motions
from neuralrender.nn.hourglass import Hourglass
from neuralrender.nn.keypoints import KeypointDetector, keypoint_heatmaps, soft_argmax, transfer_keypoints


def test_hourglass_shapes_and_size_check():
    h = Hourglass(5, block_expansion=8, num_blocks=3, max_features=32, norm="group")
    y = h(torch.rand(2, 5, 16, 24))
    assert y.shape == (2, h.out_channels, 16, 24) and h.out_channels == 8 + 5
    with pytest.raises(NeuralRenderError, match="divisible by 8"):
        h(torch.rand(1, 5, 12, 16))


def test_soft_argmax_finds_pixel_centres():
    logits = torch.full((1, 2, 8, 16), -50.0)
    logits[0, 0, 3, 5] = 50.0  # row 3, column 5
    logits[0, 1, 7, 0] = 50.0
    kp, heat = soft_argmax(logits, temperature=0.1)
    grid = make_coordinate_grid(8, 16)
    assert torch.allclose(kp[0, 0], grid[3, 5]) and torch.allclose(kp[0, 1], grid[7, 0])
    assert torch.allclose(heat.sum(dim=(2, 3)), torch.ones(1, 2))


def test_keypoint_detector_shapes_and_identity_jacobian_at_init():
    det = KeypointDetector(num_kp=5, channels=3, block_expansion=8, num_blocks=2, max_features=16, norm="group")
    out = det(torch.rand(3, 3, 16, 16))
    assert out["value"].shape == (3, 5, 2) and out["jacobian"].shape == (3, 5, 2, 2)
    assert out["value"].abs().max() <= 1
    assert torch.allclose(out["jacobian"], torch.eye(2).expand(3, 5, 2, 2), atol=1e-6)
    assert "jacobian" not in KeypointDetector(3, 3, 8, 2, 16, estimate_jacobian=False, norm="none")(torch.rand(1, 3, 8, 8))


# --- equivariance ------------------------------------------------------------------------------------

POINTS = torch.tensor([[[-0.4, -0.3], [0.35, -0.2], [0.0, 0.45], [-0.3, 0.3]]])


def blob_image(size=64):
    """Three channels... one Gaussian blob per keypoint channel: [1,K,S,S]."""
    return keypoint_heatmaps(POINTS, size, size, variance=0.004)


def blob_detector(img):
    """An exactly equivariant 'detector': soft-argmax of each channel's log-intensity."""
    kp, _ = soft_argmax(torch.log(img.clamp_min(1e-8)), temperature=1.0)
    return {"value": kp}


@pytest.mark.parametrize("sigma_tps", [0.0, 0.005])
def test_detector_equivariance_under_affine_and_tps(sigma_tps):
    g = torch.Generator().manual_seed(3)
    tps = random_tps(1, sigma_affine=0.08, sigma_tps=sigma_tps, points_tps=5, generator=g)
    img = blob_image()
    kp = blob_detector(img)
    assert torch.allclose(kp["value"], POINTS, atol=5e-3)
    eq = equivariance_losses(blob_detector, img, kp, tps, jacobian=False)
    assert eq["equivariance_value"] < 6e-3
    # a detector that ignores the image is not equivariant: the same loss catches it
    fixed = lambda x: {"value": POINTS.expand(x.shape[0], -1, -1)}  # noqa: E731
    assert equivariance_losses(fixed, img, fixed(img), tps, jacobian=False)["equivariance_value"] > 0.02


def test_jacobian_equivariance_loss_is_zero_only_for_consistent_jacobians():
    g = torch.Generator().manual_seed(1)
    tps = random_tps(1, sigma_affine=0.1, sigma_tps=0.0, generator=g)  # affine: dT = A everywhere
    A = tps.theta[:, :, :2]
    img = blob_image()
    J = torch.tensor([[1.2, 0.3], [-0.1, 0.9]])

    def consistent(x):  # J(F') = A^-1 J(F) for the transformed frame
        out = blob_detector(x)
        jac = J if x is img else torch.inverse(A)[0] @ J
        out["jacobian"] = jac.expand(1, 4, 2, 2)
        return out

    def constant(x):
        out = blob_detector(x)
        out["jacobian"] = J.expand(1, 4, 2, 2)
        return out

    assert equivariance_losses(consistent, img, consistent(img), tps)["equivariance_jacobian"] < 1e-5
    assert equivariance_losses(constant, img, constant(img), tps)["equivariance_jacobian"] > 0.03


def test_tps_jacobian_matches_finite_differences_and_identity():
    tps = random_tps(2, 0.05, 0.01, 4, generator=torch.Generator().manual_seed(0))
    p = torch.rand(2, 6, 2) * 1.6 - 0.8
    J = tps.jacobian(p)
    e = 1e-3
    for i in range(2):
        d = torch.zeros(2)
        d[i] = e
        fd = (tps.transform_points(p + d) - tps.transform_points(p - d)) / (2 * e)
        assert torch.allclose(J[..., :, i], fd, atol=2e-3)
    ident = ThinPlateSpline(torch.eye(2, 3).expand(1, 2, 3))
    img = torch.rand(1, 3, 9, 12)
    assert torch.allclose(ident.transform_image(img), img, atol=1e-5)


# --- dense motion ------------------------------------------------------------------------------------

def test_dense_motion_with_identical_keypoints_is_identity_flow():
    torch.manual_seed(0)
    net = DenseMotionNetwork(num_kp=4, channels=3, block_expansion=8, num_blocks=2, max_features=16, norm="group")
    kp = {"value": torch.rand(2, 4, 2) * 1.6 - 0.8, "jacobian": torch.eye(2) + 0.2 * torch.randn(2, 4, 2, 2)}
    out = net(torch.rand(2, 3, 16, 16), kp, kp)
    assert out["mask"].shape == (2, 5, 16, 16) and out["occlusion_map"].shape == (2, 1, 16, 16)
    assert torch.allclose(out["mask"].sum(1), torch.ones(2, 16, 16), atol=1e-5)
    assert torch.allclose(out["deformation"], identity_grid(2, 16, 16), atol=1e-5)
    assert grid_to_flow(out["deformation"]).abs().max() < 1e-3  # pixels


def test_identity_mask_init_background_share_and_flow_for_any_keypoints():
    """mask_init="identity" (Monkey-Net's, optional for fomm): masks e^2/(e^2+K) on the background and
    1/(e^2+K) per keypoint at every pixel for any image and keypoints, so the flow is the identity plus
    (1 - share) x the mean keypoint motion's displacement (exactly the identity where no keypoint moved);
    the random init's masks vary over the image."""
    K, H = 4, 16
    torch.manual_seed(0)
    net = DenseMotionNetwork(K, 3, 8, 2, 16, norm="group", mask_init="identity")
    torch.manual_seed(0)
    rnd = DenseMotionNetwork(K, 3, 8, 2, 16, norm="group")
    assert torch.count_nonzero(net.mask.weight) == 0 and net.mask.bias.tolist() == [2.0] + [0.0] * K
    for (name, a), (_, b) in zip(net.named_parameters(), rnd.named_parameters()):  # nothing else changes
        assert name.startswith("mask.") or torch.equal(a, b), name
    g = torch.Generator().manual_seed(1)
    kp_s = {"value": torch.rand(2, K, 2, generator=g) * 1.6 - 0.8,
            "jacobian": torch.eye(2) + 0.2 * torch.randn(2, K, 2, 2, generator=g)}
    kp_d = {"value": torch.rand(2, K, 2, generator=g) * 1.6 - 0.8,
            "jacobian": torch.eye(2) + 0.2 * torch.randn(2, K, 2, 2, generator=g)}
    src = torch.rand(2, 3, H, H, generator=g)
    out = net(src, kp_d, kp_s)
    share = torch.e**2 / (torch.e**2 + K)
    assert torch.allclose(out["mask"][:, 0], torch.full((2, H, H), share), atol=1e-6)
    assert torch.allclose(out["mask"][:, 1:], torch.full((2, K, H, H), (1 - share) / K), atol=1e-6)
    motions = sparse_motions(H, H, kp_d["value"], kp_s["value"], kp_d["jacobian"], kp_s["jacobian"])
    expect = identity_grid(2, H, H) + (1 - share) * (motions[:, 1:] - motions[:, :1]).mean(1)
    assert torch.allclose(out["deformation"], expect, atol=1e-5)
    assert grid_to_flow(out["deformation"] - expect + identity_grid(2, H, H)).abs().max() < 1e-3
    still = net(src, kp_s, kp_s)  # no keypoint moved: exactly the identity flow
    assert torch.allclose(still["deformation"], identity_grid(2, H, H), atol=1e-6)
    zeroth = DenseMotionNetwork(K, 3, 8, 2, 16, norm="group", use_jacobian=False, mask_init="identity")
    shift = (1 - share) * (kp_s["value"] - kp_d["value"]).mean(1)  # zeroth order: a global translation
    assert torch.allclose(zeroth(src, kp_d, kp_s)["deformation"], identity_grid(2, H, H) + shift.view(2, 1, 1, 2), atol=1e-5)
    m = rnd(src, kp_d, kp_s)["mask"]
    assert m[:, 0].std() > 1e-3 and m[:, 0].mean() < 0.3  # random init: varies, little on the background
    with pytest.raises(NeuralRenderError, match="mask_init"):
        DenseMotionNetwork(K, 3, 8, 2, 16, norm="group", mask_init="zeros")


def test_sparse_motions_translation_and_affine():
    kp_s = torch.tensor([[[0.1, -0.2]]])
    kp_d = torch.tensor([[[0.3, 0.0]]])
    m = sparse_motions(4, 4, kp_d, kp_s)
    z = make_coordinate_grid(4, 4)
    assert torch.allclose(m[0, 0], z) and torch.allclose(m[0, 1], z + (kp_s - kp_d)[0, 0])
    js = torch.tensor([[[[2.0, 0.0], [0.0, 1.0]]]])
    m = sparse_motions(4, 4, kp_d, kp_s, torch.eye(2).expand(1, 1, 2, 2), js)
    expect = (z - kp_d[0, 0]) * torch.tensor([2.0, 1.0]) + kp_s[0, 0]
    assert torch.allclose(m[0, 1], expect, atol=1e-6)


def test_localised_affine_term_far_and_near_the_keypoint():
    """affine_range: far from the keypoint only its translation, near it the affine motion; identity keypoints
    still give the identity flow."""
    kp_s, kp_d = torch.tensor([[[0.1, -0.2]]]), torch.tensor([[[-0.9, -0.9]]])
    js, jd = torch.tensor([[[[1.5, 0.3], [-0.2, 0.8]]]]), torch.eye(2).expand(1, 1, 2, 2)
    z = make_coordinate_grid(64, 64)
    full = sparse_motions(64, 64, kp_d, kp_s, jd, js)
    local = sparse_motions(64, 64, kp_d, kp_s, jd, js, affine_range=0.1)
    zeroth = z + (kp_s - kp_d)[0, 0]
    far = (z - kp_d[0, 0]).norm(dim=-1) > 0.6
    assert torch.allclose(local[0, 1][far], zeroth[far], atol=1e-6)
    assert (full[0, 1][far] - zeroth[far]).abs().max() > 0.3  # the paper's affine term is large there
    near = (z - kp_d[0, 0]).norm(dim=-1) < 0.02
    assert near.any() and torch.allclose(local[0, 1][near], full[0, 1][near], atol=1e-4)
    assert torch.equal(local[0, 0], z)  # background
    same = sparse_motions(8, 8, kp_d, kp_d, js, js, affine_range=0.1)
    assert torch.allclose(same[0, 1], make_coordinate_grid(8, 8), atol=1e-6)


def test_deform_identity_and_resized_grid():
    img = torch.rand(1, 2, 8, 8)
    assert torch.allclose(deform(img, identity_grid(1, 8, 8)), img, atol=1e-6)
    assert torch.allclose(deform(img, identity_grid(1, 4, 4)), img, atol=1e-6)  # identity stays identity


# --- motion transfer -----------------------------------------------------------------------------------

def test_relative_transfer_with_static_driving_returns_source_keypoints():
    src = {"value": torch.rand(3, 5, 2) - 0.5, "jacobian": torch.eye(2) + 0.1 * torch.randn(3, 5, 2, 2)}
    d0 = {"value": torch.rand(1, 5, 2) - 0.5, "jacobian": torch.eye(2) + 0.1 * torch.randn(1, 5, 2, 2)}
    drv = {k: v.expand(3, -1, -1, -1) if v.dim() == 4 else v.expand(3, -1, -1) for k, v in d0.items()}
    out = transfer_keypoints(src, drv, d0, relative=True, adapt_scale=True)
    assert torch.allclose(out["value"], src["value"], atol=1e-6)
    assert torch.allclose(out["jacobian"], src["jacobian"], atol=1e-5)
    assert transfer_keypoints(src, drv, d0, relative=False)["value"] is drv["value"]


def test_adaptive_scale_uses_hull_areas():
    base = torch.tensor([[[-0.1, -0.1], [0.1, -0.1], [0.1, 0.1], [-0.1, 0.1]]])
    src, d0 = {"value": base * 2}, {"value": base}
    drv = {"value": base + 0.05}
    out = transfer_keypoints(src, drv, d0, relative=True, adapt_scale=True)
    assert torch.allclose(out["value"], base * 2 + 2 * 0.05, atol=1e-6)  # scale sqrt(4) = 2
    out = transfer_keypoints(src, drv, d0, relative=True, adapt_scale=False)
    assert torch.allclose(out["value"], base * 2 + 0.05, atol=1e-6)


def test_pyramid_l1():
    a = torch.rand(2, 3, 16, 16)
    assert [p.shape[-1] for p in image_pyramid(a)] == [16, 8, 4, 2]
    assert pyramid_l1(a, a) == 0
    assert pyramid_l1(a, a + 0.1) == pytest.approx(0.4, abs=1e-4)


# --- data ----------------------------------------------------------------------------------------------

def write_gif(path, frames):
    import imageio.v3 as iio

    iio.imwrite(path, frames, duration=40, loop=0)


def test_split_by_video_and_time():
    mode, test = split_videos(3, "auto")
    assert mode == "video" and len(test) == 1
    assert split_videos(2, "auto") == ("time", [0, 1])
    with pytest.raises(NeuralRenderError):
        split_videos(1, "video")


def test_frame_pairs_from_user_folder_with_gray_rgba_and_bad_input(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "vids"
    folder.mkdir()
    write_gif(folder / "a.gif", rng.integers(0, 255, (6, 20, 20, 3), dtype=np.uint8))
    write_gif(folder / "b.gif", rng.integers(0, 255, (6, 20, 20), dtype=np.uint8))  # grayscale
    strip = rng.integers(0, 255, (20, 6 * 20, 4), dtype=np.uint8)  # RGBA frame strip
    import imageio.v3 as iio

    iio.imwrite(folder / "c_strip20.png", strip)
    train, test, info = build_frame_pair_data(folder, size=16, split="video", test_fraction=0.3)
    assert info["split"] == "video" and len(info["test_videos"]) == 1
    train_videos = {train[i]["video"] for i in range(50)}
    assert info["test_videos"][0] not in train_videos and len(train_videos) == 2
    item = train[0]
    assert item["source"].shape == (3, 16, 16) and item["source_index"] != item["driving_index"]
    assert torch.equal(train[5]["source"], train[5]["source"])  # item i is always the same pair
    assert all(test[i]["source_index"] == 0 for i in range(len(test))) and len(test) == 6
    one = tmp_path / "one"
    one.mkdir()
    write_gif(one / "x.gif", rng.integers(0, 255, (1, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="at least 2 frames"):
        build_frame_pair_data(one, size=8)
    (one / "x.gif").write_bytes(b"GIF89a corrupt")
    with pytest.raises(DataError, match="GIF"):
        build_frame_pair_data(one, size=8)


def test_augmentation_flips_and_jitters_both_frames_alike():
    """The official augmentation: the same flips and colour jitter for source and driving, seeded per item,
    the time flip swaps the frames; with no jitter a flipped pair is the mirrored original pair."""
    g = torch.Generator().manual_seed(0)
    vid = (torch.rand(5, 3, 8, 8, generator=g) * 255).round().to(torch.uint8)
    plain = FramePairDataset([vid], [(0, 0, 5)], length=64)
    flips = FramePairDataset([vid], [(0, 0, 5)], length=64, augment=True, jitter=0.0, hue=0.0)
    seen = set()
    for i in range(64):
        p, f = plain[i], flips[i]
        swapped = f["source_index"] != p["source_index"]
        a, b = (p["driving"], p["source"]) if swapped else (p["source"], p["driving"])
        mirrored = not torch.allclose(f["source"], a, atol=1e-6)
        assert (f["source_index"], f["driving_index"]) == ((p["driving_index"], p["source_index"]) if swapped
                                                           else (p["source_index"], p["driving_index"]))
        if mirrored:
            a, b = a.flip(-1), b.flip(-1)
        assert torch.allclose(f["source"], a, atol=1e-6) and torch.allclose(f["driving"], b, atol=1e-6)
        seen.add((swapped, mirrored))
    assert len(seen) == 4  # every combination of the two flips occurs
    still = FramePairDataset([vid[:1].expand(4, -1, -1, -1)], [(0, 0, 4)], length=16, augment=True, jitter=0.3)
    for i in range(16):  # identical frames stay identical: one jitter for the pair
        assert torch.equal(still[i]["source"], still[i]["driving"])
    jit = FramePairDataset([vid], [(0, 0, 5)], length=16, augment=True)
    assert torch.equal(jit[3]["source"], jit[3]["source"]) and not torch.equal(jit[3]["source"], plain[3]["source"])
    x = torch.rand(2, 3, 4, 4, generator=g)
    assert torch.allclose(color_jitter(x, 1.0, 1.0, 1.0, 0.0, [3, 2, 1, 0]), x, atol=1e-6)
    assert torch.allclose(color_jitter(x, 1.0, 1.0, 1.0, 1.0, [3]), x, atol=1e-5)  # a full turn of hue
    import colorsys

    r, gr, b = x[0, :, 1, 2].tolist()
    h, sat, v = colorsys.rgb_to_hsv(r, gr, b)
    want = torch.tensor(colorsys.hsv_to_rgb((h + 0.1) % 1, sat, v))
    assert torch.allclose(color_jitter(x, 1.0, 1.0, 1.0, 0.1, [3])[0, :, 1, 2], want, atol=1e-5)
    gray = color_jitter(x, 1.0, 1.0, 0.0, 0.0, [2])
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-6)  # saturation 0: grayscale


def test_time_split_on_weizmann_and_face(shared_data):
    train, test, info = build_frame_pair_data("face", size=32, split="time", eval_stride=5, max_frames=60)
    for (v, s, e), (v2, s2, e2) in zip(info["train_segments"], info["test_segments"]):
        assert v == v2 and e <= s2
    assert all(test[i]["source_index"] in {s for _, s, _ in info["test_segments"]} for i in range(len(test)))
    train, test, info = build_frame_pair_data("weizmann", size=64)
    assert info["split"] == "video" and train[0]["source"].shape == (3, 64, 64)
