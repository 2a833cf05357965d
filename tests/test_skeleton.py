"""graphics/skeleton.py and data/poses.py: BVH FK + retargeting, projection and drawing, EDN normalisation,
smoothing, and bad inputs (NaN joints, broken BVH files, mismatched video / pose lengths)."""

import math

import numpy as np
import pytest
import torch

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at
from neuralrender.graphics.draw import draw_skeleton
from neuralrender.graphics.skeleton import (
    CMU_TO_POSE33,
    LIMB_COLORS,
    POSE33_EDGES,
    POSE33_PARENTS,
    AnkleStats,
    ankle_stats,
    bone_lengths,
    draw_pose,
    fill_missing,
    head_box,
    normalize_poses,
    pose33_from_normalized,
    project_joints,
    rescale_bones,
    retarget_bvh,
    smooth_poses,
)
from neuralrender.io.bvh import load_bvh, parse_bvh


@pytest.fixture(scope="module")
def cmu(shared_data):
    return load_bvh(shared_data / "keypoints" / "mocap_bvh" / "cmu_01_01.bvh")


def test_cmu_fk_known_positions(cmu):
    """Root = its position channels; every bone keeps its OFFSET length in every frame (rigid FK)."""
    frames = slice(0, 2752, 250)
    p = cmu.forward_kinematics(frames)
    assert torch.allclose(p[:, 0], cmu.motion[frames, :3])
    for j, par in enumerate(cmu.parents):
        if par >= 0:
            d = (p[:, j] - p[:, par]).norm(dim=-1)
            assert torch.allclose(d, cmu.offsets[j].norm().expand_as(d), atol=1e-3), cmu.names[j]
    # an independent FK (scipy rotations, intrinsic 'ZYX' = Rz Ry Rx) down the left leg chain
    from scipy.spatial.transform import Rotation

    t = 1000
    chain = ["Hips", "LHipJoint", "LeftUpLeg", "LeftLeg", "LeftFoot", "LeftToeBase"]
    cols = np.cumsum([0] + [len(c) for c in cmu.channels])
    R, pos = np.eye(3), np.zeros(3)
    for k, name in enumerate(chain):
        j = cmu.names.index(name)
        vals = dict(zip(cmu.channels[j], cmu.motion[t, cols[j]:cols[j + 1]].double().numpy()))
        local = np.array([vals["Xposition"], vals["Yposition"], vals["Zposition"]]) if k == 0 else \
            cmu.offsets[j].double().numpy()
        pos = pos + R @ local
        order = "".join(c[0] for c in cmu.channels[j] if c.endswith("rotation"))
        if order:
            R = R @ Rotation.from_euler(order, [vals[c + "rotation"] for c in order], degrees=True).as_matrix()
        fk = cmu.forward_kinematics(slice(t, t + 1))[0, j].double().numpy()
        assert np.allclose(fk, pos, atol=1e-3), name
    assert p[0, cmu.names.index("Head"), 1] > p[0, cmu.names.index("LeftFoot"), 1] + 20  # y up, head above feet


def test_retarget_keeps_bone_directions(cmu):
    frames = torch.arange(0, 2752, 300)
    j33, vis = retarget_bvh(cmu, frames)
    assert j33.shape == (len(frames), 33, 3) and bool(torch.isfinite(j33).all()) and bool((vis == 1).all())
    fk = cmu.forward_kinematics(frames)
    for k, name in CMU_TO_POSE33.items():
        if ":" not in name:
            assert torch.equal(j33[:, k], fk[:, cmu.names.index(name)]), name
    # every pose33 edge between two mapped BVH joints points the same way as the BVH bone chain
    for a, b in [(11, 13), (13, 15), (12, 14), (14, 16), (23, 25), (25, 27), (24, 26), (26, 28)]:
        da = j33[:, b] - j33[:, a]
        db = fk[:, cmu.names.index(CMU_TO_POSE33[b])] - fk[:, cmu.names.index(CMU_TO_POSE33[a])]
        cos = torch.nn.functional.cosine_similarity(da, db, dim=-1)
        assert bool((cos > 1 - 1e-6).all()), (a, b)
    # the face looks where the toes point (both forward) and sits above the shoulders
    fwd_face = j33[:, 0] - 0.5 * (j33[:, 7] + j33[:, 8])
    fwd_feet = j33[:, 31] - j33[:, 27]
    assert bool(((fwd_face[:, [0, 2]] * fwd_feet[:, [0, 2]]).sum(-1) > 0).all())
    assert bool((j33[:, 0, 1] > j33[:, 11, 1]).all())


def test_rescale_bones_keeps_directions_sets_lengths(cmu):
    j33, _ = retarget_bvh(cmu, torch.arange(0, 2752, 500))
    target = bone_lengths(j33[:1])[0] * torch.linspace(0.5, 1.5, 33)
    out = rescale_bones(j33, target)
    L = bone_lengths(out)
    root = [j for j, p in enumerate(POSE33_PARENTS) if p < 0]
    assert torch.allclose(out[:, root], j33[:, root])
    for j, p in enumerate(POSE33_PARENTS):
        if p >= 0:
            assert torch.allclose(L[:, j], target[j].expand(L.shape[0]), rtol=1e-4, atol=1e-4)
            cos = torch.nn.functional.cosine_similarity(out[:, j] - out[:, p], j33[:, j] - j33[:, p], dim=-1)
            assert bool((cos > 1 - 1e-5).all())


def test_drawn_bvh_skeleton_matches_projected_joints(shared_data):
    from neuralrender.data.poses import bvh_driver

    drv = bvh_driver(shared_data / "keypoints" / "mocap_bvh" / "cmu_01_01.bvh", size=64, frames=6, stride=40,
                     camera="orbit")
    xy, vis = project_joints(drv.joints3d, drv.cameras)
    assert torch.equal(xy, drv.joints) and torch.equal(vis, drv.visibility)
    expect = draw_skeleton(xy, POSE33_EDGES, 64, 64, thickness=2.0, colors=LIMB_COLORS, visibility=vis)
    assert torch.equal(drv.cond, expect)
    # every projected joint lies on ink: the pixel containing it is fully covered by a stick
    ink = drv.cond.amax(1)
    used = sorted({j for e in POSE33_EDGES for j in e})
    for t in range(xy.shape[0]):
        for j in used:
            x, y = xy[t, j].tolist()
            if 0 <= x < 64 and 0 <= y < 64:
                assert ink[t, int(y), int(x)] > 0.05, (t, j)
    # the camera orbits: the azimuth of the shoulders line changes sign over the clip
    sh = xy[:, 11, 0] - xy[:, 12, 0]
    assert float(sh.max()) > 0 > float(sh.min())


def test_project_joints_behind_camera_is_invisible():
    R, t = look_at(torch.tensor([[0.0, 0.0, -5.0]]), torch.zeros(1, 3))
    cam = Cameras(K=intrinsics_from_fov(40.0, 32, 32), R=R, t=t, width=32, height=32)
    j = torch.zeros(2, 33, 3)
    j[1, :, 2] = -10.0  # behind the camera
    j[0, 5] = float("nan")
    xy, vis = project_joints(j, cam)
    assert torch.allclose(xy[0, 0], torch.tensor([16.0, 16.0]))
    assert vis[0, 0] == 1 and vis[0, 5] == 0 and bool((vis[1] == 0).all())


def _poses(ankle_y, height, x=30.0):
    """Synthetic upright poses [T,33,2]: ankles at ankle_y, head `height` above, shoulders between."""
    T = len(ankle_y)
    p = torch.full((T, 33, 2), float("nan"))
    a = torch.as_tensor(ankle_y, dtype=torch.float32)
    h = torch.as_tensor(height, dtype=torch.float32)
    p[:, 27] = torch.stack([torch.full((T,), x - 2), a], -1)
    p[:, 28] = torch.stack([torch.full((T,), x + 2), a], -1)
    p[:, 0] = torch.stack([torch.full((T,), x), a - h], -1)
    p[:, 11] = torch.stack([torch.full((T,), x + 3), a - 0.8 * h], -1)
    p[:, 12] = torch.stack([torch.full((T,), x - 3), a - 0.8 * h], -1)
    return p


def test_normalisation_maps_ankles_as_specified():
    # source moves in depth: far ankle y 40 (height 20), close 60 (height 30); target: far 100 (h 50), close 140 (h 90)
    src = _poses(torch.linspace(40, 60, 21), torch.linspace(20, 30, 21))
    tgt = _poses(torch.linspace(100, 140, 11), torch.linspace(50, 90, 11))
    s, t = ankle_stats(src, band=0.0), ankle_stats(tgt, band=0.0)
    assert (s.far, s.close, s.height_far, s.height_close) == pytest.approx((40, 60, 20, 30))
    assert (t.far, t.close, t.height_far, t.height_close) == pytest.approx((100, 140, 50, 90))
    out = normalize_poses(src, s, t)
    ank = out[:, [27, 28], 1].mean(1)
    assert ank[0] == pytest.approx(100, abs=1e-4) and ank[-1] == pytest.approx(140, abs=1e-4)
    assert ank[10] == pytest.approx(120, abs=1e-4)  # alpha = 0.5
    h = ank - out[:, 0, 1]
    assert h[0] == pytest.approx(20 * 50 / 20, abs=1e-3) and h[-1] == pytest.approx(30 * 90 / 30, abs=1e-3)
    assert h[10] == pytest.approx(25 * (2.5 + 3.0) / 2, abs=1e-3)  # s = t.hf/s.hf + 0.5 (t.hc/s.hc - t.hf/s.hf)
    # x: scaled about the ankle midpoint, which does not move
    assert torch.allclose(out[:, [27, 28], 0].mean(1), src[:, [27, 28], 0].mean(1))
    # NaN joints stay NaN; a static source (no depth range) uses alpha = 0.5
    assert bool(torch.isnan(out[:, 5]).all())
    still = _poses(torch.full((5,), 50.0), torch.full((5,), 25.0))
    o2 = normalize_poses(still, ankle_stats(still), t)
    assert o2[:, 27, 1].mean().item() == pytest.approx(120, abs=1e-4)


def test_fill_missing_and_smoothing():
    T = 9
    j = torch.arange(T, dtype=torch.float32)[:, None, None].expand(T, 33, 2).clone()
    j[3:5, 4] = float("nan")  # a gap: linearly interpolated
    j[:2, 6] = float("nan")  # missing at the start: held
    j[:, 7] = float("nan")  # never seen: stays NaN
    vis = torch.ones(T, 33)
    vis[6, 8] = 0  # visibility 0 counts as missing
    f, obs = fill_missing(j, vis)
    assert torch.allclose(f[3:5, 4, 0], torch.tensor([3.0, 4.0]))
    assert torch.allclose(f[:2, 6, 0], torch.tensor([2.0, 2.0]))
    assert bool(torch.isnan(f[:, 7]).all()) and f[6, 8, 0] == 6 and not obs[6, 8] and obs[0, 0]
    const = torch.full((T, 33, 2), 5.0)
    assert torch.allclose(smooth_poses(const, 1.5), const)
    g = torch.Generator().manual_seed(0)
    noisy = j.nan_to_num(0) + torch.randn(T, 33, 2, generator=g)
    sm = smooth_poses(noisy, 1.0)
    clean = torch.arange(T, dtype=torch.float32)[:, None, None]
    assert ((sm - clean)[2:-2, :4] ** 2).mean() < 0.6 * ((noisy - clean)[2:-2, :4] ** 2).mean()


def test_pose_format_and_drawing_bad_inputs():
    arr = np.full((3, 33, 4), np.nan, np.float32)
    arr[0] = 0.5
    arr[0, :, 3] = 0.9
    xy, vis = pose33_from_normalized(arr, 64, 32)
    assert torch.allclose(xy[0, 0], torch.tensor([32.0, 16.0])) and vis[0, 0] == pytest.approx(0.9)
    assert bool((vis[1:] == 0).all())
    img = draw_pose(xy, 32, 64, vis)
    assert img.shape == (3, 3, 32, 64) and bool(torch.isfinite(img).all()) and float(img[1:].abs().sum()) == 0
    assert draw_pose(xy, 32, 64, vis, style="heatmaps").shape == (3, 33, 32, 64)
    with pytest.raises(NeuralRenderError, match="33"):
        draw_pose(torch.zeros(1, 17, 2), 8, 8)
    with pytest.raises(NeuralRenderError, match="style"):
        draw_pose(xy, 8, 8, style="mesh")
    with pytest.raises(NeuralRenderError, match="visibility"):
        ankle_stats(xy, torch.ones(2, 33))
    with pytest.raises(NeuralRenderError, match="no frame"):
        ankle_stats(torch.full((4, 33, 2), float("nan")))
    boxes = head_box(xy, 32, 64, vis)  # NaN frames: a box at the image centre, inside the image
    assert bool((boxes[:, 2] <= 64).all()) and bool((boxes[:, 3] <= 32).all()) and bool((boxes[:, :2] >= 0).all())
    with pytest.raises(NeuralRenderError):
        normalize_poses(torch.full((3, 33, 2), float("nan")), AnkleStats(0, 1, 1, 1), AnkleStats(0, 1, 1, 1))


BVH = """HIERARCHY
ROOT Hips
{
  OFFSET 0 0 0
  CHANNELS 6 Xposition Yposition Zposition Zrotation Yrotation Xrotation
  End Site
  {
    OFFSET 0 1 0
  }
}
MOTION
Frames: 2
Frame Time: 0.1
0 0 0 0 0 0
0 0 0 0 0 0
"""


def test_bad_bvh_files_are_clear_errors(tmp_path):
    bad_order = BVH.replace("Zrotation Yrotation Xrotation", "Zrotation Yrotation Wrotation")
    with pytest.raises(DataError, match="line 5.*channel"):
        parse_bvh(bad_order, "x.bvh")
    truncated = BVH.rsplit("\n", 2)[0] + "\n"
    with pytest.raises(DataError, match="Frames: 2.*1 motion lines"):
        parse_bvh(truncated, "x.bvh")
    p = tmp_path / "tiny.bvh"
    p.write_text(BVH)
    with pytest.raises(NeuralRenderError, match="no joint 'LeftArm'"):  # not a CMU skeleton
        retarget_bvh(load_bvh(p))


def test_mismatched_video_and_pose_lengths(tmp_path):
    from PIL import Image

    from neuralrender.data.poses import PoseFrameDataset, load_pose_clip

    strip = np.zeros((16, 16 * 5, 3), np.uint8)
    Image.fromarray(strip).save(tmp_path / "c_strip16.png")
    pose = np.full((4, 33, 4), 0.5, np.float32)
    np.savez(tmp_path / "c_pose.npz", pose33_xyzv_normalized=pose)
    with pytest.raises(DataError, match="4 frames but the video.*5"):
        load_pose_clip(tmp_path / "c_strip16.png", tmp_path / "c_pose.npz", size=16)
    pose = np.full((5, 33, 4), 0.5, np.float32)
    pose[2] = np.nan  # a frame without a detection: filled from its neighbours, marked unobserved
    np.savez(tmp_path / "c_pose.npz", pose33_xyzv_normalized=pose)
    clip = load_pose_clip(tmp_path / "c_strip16.png", tmp_path / "c_pose.npz", size=16)
    assert bool(torch.isfinite(clip.joints).all()) and not bool(clip.observed[2].any()) and clip.cond.shape == (5, 3, 16, 16)
    ds = PoseFrameDataset([clip], "val", "frame")
    assert len(ds) == math.ceil(0.2 * 5) and ds[0]["has_prev"] == 0.0
    with pytest.raises(NeuralRenderError, match="test_clips"):
        PoseFrameDataset([clip], "val", "clip")
