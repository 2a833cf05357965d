import math

import pytest
import torch

from neuralrender.errors import DataError
from neuralrender.io.bvh import load_bvh, parse_bvh

SMALL = """HIERARCHY
ROOT root
{
  OFFSET 0 0 0
  CHANNELS 5 Xposition Yposition Zposition Zrotation Xrotation
  JOINT child
  {
    OFFSET 0 1 0
    CHANNELS 0
    End Site
    {
      OFFSET 0 0 2
    }
  }
}
MOTION
Frames: 2
Frame Time: 0.5
0 0 0 0 0
1 2 3 90 90
"""


def test_small_fk_rotation_order():
    b = parse_bvh(SMALL)
    assert b.names == ["root", "child"] and b.parents == [-1, 0]
    assert b.num_frames == 2 and b.fps == 2.0
    assert torch.allclose(b.end_sites[1], torch.tensor([0.0, 0.0, 2.0]))
    p = b.forward_kinematics()
    assert p.shape == (2, 2, 3)
    assert torch.allclose(p[0], torch.tensor([[0.0, 0, 0], [0, 1, 0]]))
    # R = Rz(90) @ Rx(90): (0,1,0) -> Rx -> (0,0,1) -> Rz -> (0,0,1); the reverse order gives (-1,0,0)
    assert torch.allclose(p[1, 0], torch.tensor([1.0, 2, 3]))
    assert torch.allclose(p[1, 1], torch.tensor([1.0, 2, 4]), atol=1e-6)


def test_fk_follows_dtype_and_device():
    b = parse_bvh(SMALL)
    from neuralrender.io.bvh import forward_kinematics

    p = forward_kinematics(b.parents, b.offsets, b.channels, b.motion.double())
    assert p.dtype == torch.float64


@pytest.mark.parametrize(
    "edit, line, field",
    [
        (("Frames: 2", "Frames: 3"), 20, "MOTION"),
        (("1 2 3 90 90", "1 2 3 90"), 20, "MOTION"),
        (("1 2 3 90 90", "1 2 x 90 90"), 20, "MOTION"),
        (("CHANNELS 0", "CHANNELS 1 Wrotation"), 9, "CHANNELS"),
        (("OFFSET 0 1 0", "OFFSET 0 1"), 8, "OFFSET"),
        (("  JOINT child\n  {", "  JOINT child\n  ("), 7, "HIERARCHY"),
        (("Frame Time: 0.5", "Frame Time: -1"), 18, "Frame Time"),
    ],
)
def test_bad_inputs_name_line(edit, line, field):
    bad = SMALL.replace(*edit)
    with pytest.raises(DataError) as e:
        parse_bvh(bad, "bad.bvh")
    assert e.value.field == field
    assert f"line {line}:" in str(e.value) and "bad.bvh" in str(e.value)


def test_truncated_and_missing(tmp_path):
    with pytest.raises(DataError, match="unexpected end of file"):
        parse_bvh(SMALL.split("MOTION")[0][:-10])
    with pytest.raises(DataError, match="not found"):
        load_bvh(tmp_path / "none.bvh")


def test_cmu_bone_lengths_constant(shared_data):
    b = load_bvh(shared_data / "keypoints" / "mocap_bvh" / "cmu_01_01.bvh")
    assert b.num_joints == 31 and b.num_frames == 2752
    assert math.isclose(b.fps, 120.0, rel_tol=1e-4)
    pos = b.forward_kinematics()
    assert pos.shape == (2752, 31, 3) and torch.isfinite(pos).all()
    bones = b.bones()
    lengths = torch.stack([(pos[:, c] - pos[:, p]).norm(dim=-1) for p, c in bones], 1)
    assert (lengths.max(0).values - lengths.min(0).values).max() < 1e-4
    assert torch.allclose(lengths[0], b.offsets[[c for _, c in bones]].norm(dim=-1), atol=1e-4)
    # the subject moves: the root travels more than a body height over the clip
    assert (pos[:, 0].max(0).values - pos[:, 0].min(0).values).norm() > 20


def test_cmu_projects_and_draws(shared_data):
    """3D skeleton -> any camera -> 2D condition image (the graphics core's projection and drawing)."""
    from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at
    from neuralrender.graphics.draw import draw_skeleton

    b = load_bvh(shared_data / "keypoints" / "mocap_bvh" / "cmu_01_01.bvh")
    pos = b.forward_kinematics(slice(0, 2752, 500))  # [6,31,3]
    centre = pos.mean(1)  # [6,3]
    R, t = look_at(centre + torch.tensor([0.0, 10.0, 60.0]), centre)
    cams = Cameras(K=intrinsics_from_fov(40.0, 64, 64), R=R, t=t, width=64, height=64)
    xy, depth = cams.project(pos)
    assert (depth > 0).all() and (xy > 0).all() and (xy < 64).all()
    img = draw_skeleton(xy, torch.tensor(b.bones()), 64, 64, thickness=1.5)
    assert img.shape[0] == 6 and img.shape[-2:] == (64, 64)
    assert ((img.amax(1) > 0.5).float().mean(dim=(1, 2)) > 0.01).all()
