"""Texture sampling: v-up convention, texel centres, wrap modes, mipmaps, neural textures, interpolation."""

import pytest
import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.raster import rasterize
from neuralrender.graphics.texture import build_mipmaps, mip_level, texture, uv_derivatives_finite


def _uv(points):
    return torch.tensor(points, dtype=torch.float32).view(1, 1, -1, 2)


def test_v_up_convention_and_texel_centres():
    # 2x2 texture: row 0 (top) = [1, 2], row 1 (bottom) = [3, 4]
    tex = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    uv = _uv([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75], [0.5, 0.5]])
    out = texture(tex, uv)[0, 0, 0]
    assert torch.allclose(out, torch.tensor([3.0, 4.0, 1.0, 2.0, 2.5]))
    out = texture(tex, uv, filter="nearest")[0, 0, 0]
    assert torch.allclose(out[:4], torch.tensor([3.0, 4.0, 1.0, 2.0]))


def test_wrap_modes():
    tex = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]])  # 1x4
    uv = _uv([[0.0, 0.5], [1.0, 0.5], [1.125, 0.5], [-0.125, 0.5]])
    clamp = texture(tex, uv, wrap="clamp")[0, 0, 0]
    assert torch.allclose(clamp, torch.tensor([0.0, 3.0, 3.0, 0.0]))
    rep = texture(tex, uv, wrap="repeat")[0, 0, 0]
    # u = 0 lies between the last and the first texel: average 1.5; u = 1.125 = texel 0 centre
    assert torch.allclose(rep, torch.tensor([1.5, 1.5, 0.0, 3.0]))
    rep_n = texture(tex, _uv([[1.125, 0.5], [-0.125, 0.5]]), filter="nearest", wrap="repeat")[0, 0, 0]
    assert torch.allclose(rep_n, torch.tensor([0.0, 3.0]))


def test_many_channels_batch_and_mask():
    tex = torch.rand(2, 16, 8, 8)
    uv = torch.rand(2, 5, 6, 2)
    mask = torch.rand(2, 5, 6) > 0.5
    out = texture(tex, uv, mask=mask)
    assert out.shape == (2, 16, 5, 6)
    assert (out.permute(0, 2, 3, 1)[~mask] == 0).all()
    single = texture(tex[1], uv[1:])
    assert torch.allclose(single[0], texture(tex, uv)[1])
    with pytest.raises(NeuralRenderError):
        texture(tex, uv, filter="cubic")
    with pytest.raises(NeuralRenderError):
        texture(tex, uv[..., :1])
    with pytest.raises(NeuralRenderError):
        texture(torch.rand(3, 3, 8, 8), uv)


def test_mipmaps():
    tex = torch.rand(3, 16, 16)
    levels = build_mipmaps(tex)
    assert [lv.shape[-1] for lv in levels] == [16, 8, 4, 2, 1]
    assert torch.allclose(levels[-1][0, :, 0, 0], tex.mean((1, 2)), atol=1e-6)
    # footprint of 4 texels per pixel -> level 2
    da = torch.zeros(1, 1, 1, 2, 2)
    da[..., 0, 0] = 4 / 16
    da[..., 1, 1] = 4 / 16
    assert torch.allclose(mip_level(da, (16, 16)), torch.tensor(2.0))
    uv = torch.full((1, 1, 1, 2), 0.5)
    out = texture(tex, uv, filter="mipmap", uv_da=da)
    assert torch.allclose(out[0, :, 0, 0], texture(levels[2], uv)[0, :, 0, 0], atol=1e-6)
    # magnification (footprint < 1 texel) equals plain bilinear
    small = da / 16
    assert torch.allclose(texture(tex, uv, filter="mipmap", uv_da=small), texture(tex, uv), atol=1e-6)
    # a minified checkerboard averages to grey with mipmaps, not with bilinear point sampling
    cb = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float().expand(1, 64, 64)
    ys, xs = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    uvs = torch.stack([(xs + 0.5) / 8, (ys + 0.5) / 8], -1)[None].float()
    mm = texture(cb, uvs, filter="mipmap")
    assert (mm - 0.5).abs().max() < 0.05
    fd = uv_derivatives_finite(uvs)
    assert torch.allclose(fd[0, 3, 3], torch.tensor([[1 / 8, 0.0], [0.0, 1 / 8]]))


def test_uv_seams_through_face_uvs_and_derivatives():
    # a quad with its own uv indexing (face_uvs): the texture shows up right way up in the image
    verts = torch.tensor([[-1.0, -1, 3], [1, -1, 3], [1, 1, 3], [-1, 1, 3]])
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    uvs = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # world y down = image down
    face_uvs = faces.clone()
    cam = Cameras(K=intrinsics_from_fov(60.0, 32, 32), R=torch.eye(3), t=torch.zeros(3), width=32, height=32)
    fr = rasterize(cam, verts, faces)
    uv, duv = interpolate(uvs, fr, face_uvs, return_derivatives=True)
    tex = torch.zeros(1, 4, 4)
    tex[0, 0, :] = 1.0  # top row of the texture image
    img = texture(tex, uv, mask=fr.mask)
    rows = img[0, 0].sum(1)
    assert rows[:12].sum() > 0 and rows[20:].sum() == 0  # appears at the top of the rendered image
    m = fr.mask[0]
    # du/dx is constant over a fronto-parallel quad: 1 / (quad width in pixels)
    width_px = 2 * cam.K[0, 0, 0] / 3
    assert torch.allclose(duv[0][m][:, 0, 0], torch.full((int(m.sum()),), float(1 / width_px)), rtol=1e-3)
    assert torch.allclose(duv[0][m][:, 1, 1], torch.full((int(m.sum()),), float(-1 / width_px)), rtol=1e-3)
    with pytest.raises(NeuralRenderError):
        interpolate(uvs, fr, torch.tensor([[0, 1, 2]]))


def test_uv_derivatives_match_finite_differences_under_perspective():
    verts = torch.tensor([[-1.0, -1, 2], [1, -1, 5], [1, 1, 5], [-1, 1, 2]])  # strongly tilted quad
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    cam = Cameras(K=intrinsics_from_fov(70.0, 48, 40), R=torch.eye(3), t=torch.zeros(3), width=48, height=40)
    fr = rasterize(cam, verts, faces)
    uv, duv = interpolate(uvs, fr, return_derivatives=True)
    m = fr.mask[0]
    inner = m[1:-1, 1:-1] & m[1:-1, 2:] & m[1:-1, :-2] & m[2:, 1:-1] & m[:-2, 1:-1]
    fx = (uv[0, 1:-1, 2:] - uv[0, 1:-1, :-2]) / 2
    fy = (uv[0, 2:, 1:-1] - uv[0, :-2, 1:-1]) / 2
    dx, dy = duv[0, 1:-1, 1:-1, :, 0], duv[0, 1:-1, 1:-1, :, 1]
    assert inner.sum() > 200
    assert torch.allclose(dx[inner], fx[inner], rtol=0.02, atol=2e-4)
    assert torch.allclose(dy[inner], fy[inner], rtol=0.02, atol=2e-4)
    assert dx[inner][:, 0].std() > 1e-3  # perspective: the derivative varies over the quad


@pytest.mark.parametrize("dist", [1.6, 8.0])  # mostly covered / mostly background: both interpolate paths
def test_interpolate_matches_per_pixel_reference(dist):
    from neuralrender.graphics.meshes import icosphere

    m = icosphere(2)
    v, f = m.verts.float(), m.faces
    cams = Cameras(K=intrinsics_from_fov(60.0, 20, 16).expand(2, 3, 3), R=torch.eye(3).expand(2, 3, 3),
                   t=torch.tensor([[0.0, 0.0, dist], [0.1, 0.0, dist]]), width=20, height=16)
    fr = rasterize(cams, v, f)
    cov = fr.mask.float().mean()
    assert (cov > 0.5) if dist < 3 else (0 < cov < 0.5)
    attr = torch.randn(2, v.shape[0], 4)  # per-image attributes
    out = interpolate(attr, fr)
    ref = torch.zeros_like(out)
    for b, i, j in fr.mask.nonzero().tolist():
        tri = f[fr.face_id[b, i, j]]
        ref[b, i, j] = (fr.bary[b, i, j, :, None] * attr[b, tri]).sum(0)
    assert torch.allclose(out, ref, atol=1e-6)
