import numpy as np
import pytest
import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.warp import (
    flow_to_grid,
    grid_to_flow,
    identity_grid,
    make_coordinate_grid,
    normalized_to_pixel,
    pixel_to_normalized,
    sample_grid,
    warp,
)


def _smooth_image(B=1, C=3, H=24, W=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(B, C, 5, 6, generator=g)
    return torch.nn.functional.interpolate(small, size=(H, W), mode="bicubic", align_corners=False)


def test_coordinate_grid_is_pixel_centres():
    g = make_coordinate_grid(4, 8)
    assert g.shape == (4, 8, 2)
    assert torch.allclose(g[0, 0], torch.tensor([1 / 8 - 1, 1 / 4 - 1]))
    assert torch.allclose(g[-1, -1], torch.tensor([1 - 1 / 8, 1 - 1 / 4]))
    px = normalized_to_pixel(g, 4, 8)
    assert torch.allclose(px[2, 5], torch.tensor([5.5, 2.5]))
    assert torch.allclose(pixel_to_normalized(px, 4, 8), g, atol=1e-6)


def test_zero_flow_is_identity():
    img = torch.rand(2, 3, 9, 13)
    out = warp(img, torch.zeros(2, 2, 9, 13))
    assert torch.allclose(out, img, atol=1e-6)
    assert torch.allclose(sample_grid(img, identity_grid(2, 9, 13)), img, atol=1e-6)


@pytest.mark.parametrize("dx,dy", [(3, -2), (-5, 1), (0, 4)])
def test_integer_translation_is_exact(dx, dy):
    img = torch.rand(1, 2, 16, 20)
    flow = torch.zeros(1, 2, 16, 20)
    flow[:, 0], flow[:, 1] = dx, dy
    out = warp(img, flow)  # out[i, j] = img[i + dy, j + dx]
    expect = torch.zeros_like(img)
    H, W = 16, 20
    i0, i1 = max(0, -dy), min(H, H - dy)
    j0, j1 = max(0, -dx), min(W, W - dx)
    expect[..., i0:i1, j0:j1] = img[..., i0 + dy:i1 + dy, j0 + dx:j1 + dx]
    assert torch.allclose(out, expect, atol=1e-6)


def test_subpixel_translation_of_a_ramp_is_exact():
    H, W = 10, 12
    x = torch.arange(W, dtype=torch.float64) + 0.5
    y = torch.arange(H, dtype=torch.float64) + 0.5
    ramp = (0.3 * x[None, :] + 0.7 * y[:, None]).expand(1, 1, H, W).contiguous()
    flow = torch.zeros(1, 2, H, W, dtype=torch.float64)
    flow[:, 0], flow[:, 1] = 0.25, -0.4
    out = warp(ramp, flow, padding="border")
    expect = ramp + 0.3 * 0.25 - 0.7 * 0.4
    assert torch.allclose(out[..., 1:-1, 1:-1], expect[..., 1:-1, 1:-1], atol=1e-10)


def test_flow_grid_round_trip():
    flow = torch.randn(2, 2, 7, 5) * 3
    assert torch.allclose(grid_to_flow(flow_to_grid(flow)), flow, atol=1e-5)


def test_warp_gradcheck():
    img = torch.rand(1, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    flow = (torch.rand(1, 2, 5, 6, dtype=torch.float64) - 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, f: warp(a, f, padding="border"), (img, flow))


def test_bad_inputs():
    with pytest.raises(NeuralRenderError, match="flow"):
        warp(torch.rand(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(NeuralRenderError, match="padding"):
        warp(torch.rand(1, 3, 4, 4), torch.zeros(1, 2, 4, 4), padding="wrap")
    with pytest.raises(NeuralRenderError, match="same H,W"):
        warp(torch.rand(1, 3, 4, 4), torch.zeros(1, 2, 5, 4))


def test_matches_cv2_remap():
    cv2 = pytest.importorskip("cv2")
    H, W = 20, 24
    img = _smooth_image(1, 1, H, W)
    g = torch.Generator().manual_seed(1)
    # fractions on OpenCV's 1/32 interpolation grid so that remap is exact
    flow = torch.round((torch.rand(1, 2, H, W, generator=g) - 0.5) * 6 * 32) / 32
    out = warp(img, flow)[0, 0].numpy()
    jj, ii = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    mx = jj + flow[0, 0].numpy()
    my = ii + flow[0, 1].numpy()
    ref = cv2.remap(img[0, 0].numpy(), mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                    borderValue=0)
    assert np.abs(out - ref).max() < 1e-4


def test_consistent_with_cv2_farneback_flow():
    cv2 = pytest.importorskip("cv2")
    H, W = 64, 64
    big = _smooth_image(1, 1, H + 16, W + 16, seed=3)[0, 0]
    sx, sy = 2, 1
    prev = big[8:8 + H, 8:8 + W]
    nxt = big[8 - sy:8 - sy + H, 8 - sx:8 - sx + W]  # content moved by (+sx, +sy): nxt(p + s) = prev(p)
    to8 = lambda a: (a.numpy() * 255).astype(np.uint8)
    f = cv2.calcOpticalFlowFarneback(to8(prev), to8(nxt), None, 0.5, 3, 15, 3, 5, 1.2, 0)
    flow = torch.from_numpy(f).permute(2, 0, 1)[None].float()
    inner = (slice(8, -8), slice(8, -8))
    assert abs(flow[0, 0][inner].mean() - sx) < 0.2 and abs(flow[0, 1][inner].mean() - sy) < 0.2
    back = warp(nxt[None, None], flow)[0, 0]
    wrong = warp(nxt[None, None], -flow)[0, 0]
    err = (back - prev)[inner].abs().mean()
    err_wrong = (wrong - prev)[inner].abs().mean()
    assert err < 0.01 and err < err_wrong / 5
