"""graphics.flow: exact rigid flow against the graphics core's renders and the pinned warp convention,
OpenCV flow on a known shift, forward-backward occlusion mask, temporal warping error."""

import pytest
import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at
from neuralrender.graphics.flow import forward_backward_mask, optical_flow, rigid_flow, warping_error
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.meshes import box, concat_meshes, plane
from neuralrender.graphics.raster import rasterize
from neuralrender.graphics.warp import warp

H = W = 64


def _camera(eye, target=(0.0, 0.0, 0.0)):
    R, t = look_at(torch.tensor([eye]), torch.tensor([target]))
    return Cameras(K=intrinsics_from_fov(45.0, W, H), R=R, t=t, width=W, height=H)


def _scene():
    """A floor with a box on it, random per-vertex colours (texture-like detail for the warp check)."""
    g = torch.Generator().manual_seed(0)
    floor = plane(4.0, segments=24, axis="+y")
    cube = box(0.8).transform(torch.tensor([[1, 0, 0, 0.2], [0, 1, 0, 0.4], [0, 0, 1, 0.0], [0, 0, 0, 1.0]]))
    mesh = concat_meshes([floor, cube])
    colors = torch.rand(mesh.num_verts, 3, generator=g)
    return mesh.verts, mesh.faces, colors


def _render(cam, verts, faces, colors):
    frags = rasterize(cam, verts, faces)
    img = interpolate(colors, frags).permute(0, 3, 1, 2) * frags.mask[:, None]
    return img, frags.depth * frags.mask


def test_rigid_flow_sideways_translation_is_analytic():
    cam = Cameras(K=intrinsics_from_fov(60.0, W, H), R=torch.eye(3)[None], t=torch.zeros(1, 3), width=W, height=H)
    b, z = 0.3, 2.5
    src = Cameras(K=cam.K, R=cam.R, t=torch.tensor([[-b, 0.0, 0.0]]), width=W, height=H)  # centre at x = +b
    flow, valid = rigid_flow(torch.full((1, H, W), z), cam, src)
    fx = float(cam.K[0, 0, 0])
    assert torch.allclose(flow[:, 0], torch.full((1, H, W), -fx * b / z), atol=1e-3)
    assert flow[:, 1].abs().max() < 1e-4
    # pixels whose content moved out of the source image are invalid: the left columns
    cols = valid[0, 0].all(0)
    shift = fx * b / z
    assert not bool(cols[: int(shift) - 1].any()) and bool(cols[int(shift) + 1 :].all())


def test_rigid_flow_warps_rendered_views_onto_each_other():
    verts, faces, colors = _scene()
    cam_t = _camera((1.2, 1.6, 3.0))
    cam_s = _camera((1.5, 1.7, 2.8))
    img_t, depth_t = _render(cam_t, verts, faces, colors)
    img_s, depth_s = _render(cam_s, verts, faces, colors)
    flow, valid = rigid_flow(depth_t, cam_t, cam_s, source_depth=depth_s, background="invalid")
    warped = warp(img_s, flow)  # the pinned backward-warp convention of graphics.warp
    fg = valid[:, 0] > 0
    assert fg.float().mean() > 0.5
    err = (warped - img_t).abs().mean(1)[fg].mean()
    no_flow = (img_s - img_t).abs().mean(1)[fg].mean()
    assert err < 0.03 and err < 0.2 * no_flow, (err, no_flow)
    # flipping the sign (the forward-warp mistake) or a half-pixel shift is measurably worse
    assert (warp(img_s, -flow) - img_t).abs().mean(1)[fg].mean() > 3 * err
    shifted = flow + torch.tensor([0.5, 0.5]).view(1, 2, 1, 1)
    assert (warp(img_s, shifted) - img_t).abs().mean(1)[fg].mean() > 1.5 * err


def test_rigid_flow_marks_disocclusions():
    verts, faces, colors = _scene()
    cam_t, cam_s = _camera((0.0, 0.8, 3.0)), _camera((1.6, 0.8, 2.5))
    _, depth_t = _render(cam_t, verts, faces, colors)
    _, depth_s = _render(cam_s, verts, faces, colors)
    _, v_all = rigid_flow(depth_t, cam_t, cam_s, background="invalid")
    _, v_occ = rigid_flow(depth_t, cam_t, cam_s, source_depth=depth_s, background="invalid")
    hidden = (v_all - v_occ)[0, 0]
    assert bool((v_occ <= v_all).all()) and hidden.sum() > 20  # floor behind the box is hidden in the source


def test_rigid_flow_checks_inputs():
    cam = _camera((0.0, 0.0, 3.0))
    with pytest.raises(NeuralRenderError, match="depth is 32x32"):
        rigid_flow(torch.ones(1, 32, 32), cam, cam)
    with pytest.raises(NeuralRenderError, match="background"):
        rigid_flow(torch.ones(1, H, W), cam, cam, background="sky")


def _texture(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, 16, 16, generator=g)
    return torch.nn.functional.interpolate(x, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_optical_flow_recovers_a_known_shift(method):
    pytest.importorskip("cv2")
    source = _texture()
    d = torch.tensor([2.0, -1.5]).view(1, 2, 1, 1)
    target = warp(source, d.expand(1, 2, H, W), padding="border")  # target(p) = source(p + d)
    flow = optical_flow(target, source, method)
    inner = flow[:, :, 12:-12, 12:-12]
    assert torch.allclose(inner.median(-1).values.median(-1).values, d.view(1, 2), atol=0.3)
    assert (warp(source, flow, padding="border") - target)[..., 12:-12, 12:-12].abs().mean() < 0.02


def test_forward_backward_mask():
    d = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(1, 2, 16, 16)
    assert bool((forward_backward_mask(d, -d)[..., 2:-2, 2:-2] == 1).all())
    assert bool((forward_backward_mask(d, d) == 0).all())


def test_warping_error_is_zero_for_flow_consistent_video():
    frame0 = _texture(1)
    d = torch.tensor([1.0, 0.5]).view(1, 2, 1, 1).expand(1, 2, H, W)
    frames = [frame0]
    for _ in range(3):
        frames.append(warp(frames[-1], d, padding="border"))
    video = torch.stack(frames, 1)
    flows = d[:, None].expand(1, 4, 2, H, W)
    mask = torch.zeros(1, 4, 1, H, W)
    mask[..., 4:-4, 4:-4] = 1
    assert warping_error(video, flows, mask).item() < 1e-10
    assert warping_error(video, torch.zeros_like(flows), mask).item() > 1e-4
    with pytest.raises(NeuralRenderError, match="at least 2 frames"):
        warping_error(video[:, :1], flows[:, :1])
