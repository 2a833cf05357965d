"""Causality and receptive fields of the autoregressive networks (masked convs, gated PixelCNN, Row LSTM).

For output pixel i (raster order) and colour channel c, the gradient of its logits w.r.t. the input must be
zero at every pixel after i, at pixel i for channels >= c, and non-zero where the paper says the model looks.
The checks are shown to fail on deliberately broken models (a mask-B first layer, an unshifted vertical stack,
the original PixelCNN's blind spot).
"""

import pytest
import torch

from neuralrender.nn import masked
from neuralrender.nn.masked import (
    GatedPixelCNN,
    MaskedConv2d,
    PixelCNN,
    autoregressive_sample,
    causal_mask,
    channel_groups,
)
from neuralrender.nn.rowlstm import PixelRNN, RowLSTMLayer

H = W = 12

PIX = (6, 6)


def dependency(net, channels, pixel=PIX, channel=0, trials=4, **kw):
    """bool [C,H,W]: input (channel, pixel) entries the logits of (channel, pixel) depend on (union of trials)."""
    seen = torch.zeros(channels, H, W, dtype=torch.bool)
    i, j = pixel
    for t in range(trials):
        g = torch.Generator().manual_seed(t)
        x = torch.randint(0, net.levels, (1, channels, H, W), generator=g)
        f = net.features(x).detach().requires_grad_(True)
        out = net.body(f, **kw)[0, channel, :, i, j]
        weights = torch.randn(out.shape, generator=g)
        (grad,) = torch.autograd.grad((out * weights).sum(), f)
        seen |= grad[0].view(channels, -1, H, W).abs().sum(1) > 0
    return seen


def allowed(channels, pixel=PIX, channel=0):
    """bool [C,H,W]: entries the logits of (channel, pixel) may depend on."""
    i, j = pixel
    rows = torch.arange(H).view(H, 1).expand(H, W)
    cols = torch.arange(W).view(1, W).expand(H, W)
    before = (rows < i) | ((rows == i) & (cols < j))
    ok = before.unsqueeze(0).repeat(channels, 1, 1)
    ok[:channel, i, j] = True
    return ok


def violations(net, channels, **kw):
    """Number of (output channel, input entry) pairs that leak, over every output channel at PIX."""
    return sum(int((dependency(net, channels, channel=c, **kw) & ~allowed(channels, channel=c)).sum())
               for c in range(channels))


def gated(channels=3, **kw):
    torch.manual_seed(0)
    return GatedPixelCNN(channels, 4, channels=24, layers=3, kernel=3, first_kernel=5, **kw)


# ---- masks -----------------------------------------------------------------------------------------


def test_causal_mask_layout():
    g = channel_groups(3, 3)
    a = causal_mask((3, 3), g, g, "A")
    b = causal_mask((3, 3), g, g, "B")
    assert a.shape == (3, 3, 3, 3)
    assert torch.all(a[:, :, 0] == 1) and torch.all(a[:, :, 2] == 0) and torch.all(a[:, :, 1, 2] == 0)
    assert torch.equal(a[:, :, 1, 1], torch.tensor([[0, 0, 0], [1, 0, 0], [1, 1, 0.]]))  # G sees R; B sees R, G
    assert torch.equal(b[:, :, 1, 1], torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1.]]))
    v = causal_mask((3, 3), g, g, "V")
    assert torch.all(v[:, :, :2] == 1) and torch.all(v[:, :, 2] == 0)
    assert torch.equal(channel_groups(6, 3), torch.tensor([0, 0, 1, 1, 2, 2]))
    with pytest.raises(ValueError):
        channel_groups(5, 3)
    with pytest.raises(ValueError):
        causal_mask((2, 3), g, g, "A")


def test_masked_conv_single_layer_is_causal():
    conv = MaskedConv2d(3, 6, 3, "A", groups=3)
    x = torch.rand(1, 3, 5, 5, requires_grad=True)
    y = conv(x)
    (g,) = torch.autograd.grad(y[0, 2:4, 2, 2].sum(), x)  # output group 1 (green) at (2, 2)
    assert torch.all(g[0, :, 3:] == 0) and torch.all(g[0, :, 2, 3:] == 0)
    assert g[0, 0, 2, 2] != 0 and g[0, 1, 2, 2] == 0 and g[0, 2, 2, 2] == 0
    assert torch.all(g[0, :, 1, 1:4] != 0) and torch.all(g[0, :, 2, 1] != 0)


# ---- gated PixelCNN: causal, no blind spot, conditional ---------------------------------------------


def test_gated_pixelcnn_is_causal_per_colour_channel():
    net = gated()
    assert violations(net, 3) == 0
    # channel order at the current pixel: G sees R, B sees R and G
    for c in range(3):
        d = dependency(net, 3, channel=c)
        assert d[:c, PIX[0], PIX[1]].all() and not d[c:, PIX[0], PIX[1]].any()


def no_blind_spot_window(reach):
    """Pixels a blind-spot-free model must see: `reach` rows above (every column within reach) and the row's left."""
    i, j = PIX
    want = torch.zeros(H, W, dtype=torch.bool)
    want[max(0, i - reach):i, max(0, j - reach):j + reach + 1] = True
    want[i, max(0, j - reach):j] = True
    return want


def test_gated_pixelcnn_has_no_blind_spot():
    net = gated()
    seen = dependency(net, 3).any(0)
    # first kernel 5 (reach 2) + 2 more layers of kernel 3 (reach 1 each): 3 rows up, 3 columns either side
    want = no_blind_spot_window(3)
    assert seen[want].all(), (want & ~seen).nonzero().tolist()
    assert seen[PIX[0] - 1, PIX[1] + 3]  # the upper right, which the original PixelCNN misses


def test_original_pixelcnn_is_causal_but_has_the_blind_spot():
    torch.manual_seed(0)
    net = PixelCNN(3, 4, channels=24, layers=3, kernel=3, first_kernel=3)
    assert violations(net, 3) == 0
    seen = dependency(net, 3).any(0)
    i, j = PIX
    assert seen[i - 1, j + 1] and seen[i, j - 1] and seen[i - 2, j + 1]
    assert not seen[i - 1, j + 2] and not seen[i - 1, j + 3]  # the blind spot
    assert not seen[no_blind_spot_window(3)].all()  # so the no-blind-spot check above rejects it


def test_broken_first_mask_leaks():
    net = gated()
    layer = net.layers[0].h_conv
    layer.mask = causal_mask(layer.kernel_size, channel_groups(3, 3), channel_groups(24, 3).repeat(2), "B")
    assert violations(net, 3) > 0


def test_unshifted_vertical_stack_leaks(monkeypatch):
    net = gated()
    monkeypatch.setattr(masked, "shift_down", lambda x: x)
    assert violations(net, 3) > 0


def test_broken_pixelcnn_mask_leaks():
    torch.manual_seed(0)
    net = PixelCNN(1, 4, channels=8, layers=2, kernel=3, first_kernel=3)
    net.first.mask = causal_mask((3, 3), channel_groups(1, 1), channel_groups(8, 1), "B")
    assert violations(net, 1) > 0


def test_conditional_gated_pixelcnn_is_causal_and_uses_its_condition():
    net = gated(1, num_classes=5, cond_channels=2)
    cond = torch.rand(1, 2, H, W)
    assert violations(net, 1, label=torch.tensor([3]), cond=cond) == 0
    x = torch.randint(0, 4, (1, 1, H, W))
    a = net(x, label=torch.tensor([3]), cond=cond)
    b = net(x, label=torch.tensor([1]), cond=cond)
    c = net(x, label=torch.tensor([3]), cond=torch.rand(1, 2, H, W))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    with pytest.raises(ValueError):
        net(x, cond=cond)


def test_embedded_inputs_are_causal():
    torch.manual_seed(0)
    net = GatedPixelCNN(1, 16, channels=8, layers=2, kernel=3, first_kernel=3, embed=4)
    assert net.features(torch.zeros(2, 1, H, W, dtype=torch.long)).shape == (2, 4, H, W)
    assert violations(net, 1) == 0


# ---- Row LSTM -----------------------------------------------------------------------------------------


def test_row_lstm_is_causal_and_sees_its_triangle():
    torch.manual_seed(0)
    net = PixelRNN(3, 4, channels=24, layers=2, kernel=3, first_kernel=3)
    assert violations(net, 3) == 0
    seen = dependency(net, 3).any(0)
    i, j = PIX
    assert seen[i, j - 1] and seen[i - 1, j + 1] and seen[i - 2, j + 2]  # the state reaches up-right
    assert seen[i - 4, j + 4] and seen[i - 5, j] and seen[i - 5, j - 5]  # the whole triangle, all the way up
    assert not seen[i - 1, j + 2] and not seen[i - 2, j + 4]  # outside the triangle: Row LSTM's missing context


def test_row_lstm_layer_runs_row_by_row():
    layer = RowLSTMLayer(4, 6)
    y = layer(torch.rand(2, 4, 5, 7))
    assert y.shape == (2, 6, 5, 7)
    x = torch.rand(1, 4, 5, 7, requires_grad=True)
    (g,) = torch.autograd.grad(layer(x)[0, :, 2, 3].sum(), x)
    assert torch.all(g[0, :, 3:] == 0) and torch.all(g[0, :, 2, 4:] == 0)


# ---- sampling -------------------------------------------------------------------------------------------


def test_sampling_shapes_completion_and_determinism():
    net = gated(3)
    x0 = torch.randint(0, 4, (2, 3, 6, 5))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    s1 = autoregressive_sample(net, x0, start_row=3, generator=g1)
    s2 = autoregressive_sample(net, x0, start_row=3, generator=g2)
    assert s1.shape == x0.shape and s1.dtype == torch.long
    assert torch.equal(s1, s2)
    assert torch.equal(s1[:, :, :3], x0[:, :, :3])
    assert s1.min() >= 0 and s1.max() < 4
    # a network that puts all mass on value 2 samples 2 everywhere
    with torch.no_grad():
        head = net.head[-1]
        head.weight.zero_()
        head.bias.copy_(torch.tensor([-50.0, -50.0, 50.0, -50.0]).repeat(3))
    assert torch.all(autoregressive_sample(net, torch.zeros(1, 3, 3, 3, dtype=torch.long)) == 2)


@pytest.mark.parametrize("make", [
    lambda: GatedPixelCNN(1, 4, channels=8, layers=3, kernel=3, first_kernel=5, num_classes=2, cond_channels=1),
    lambda: PixelCNN(1, 4, channels=8, layers=2, kernel=3, first_kernel=5)])
def test_row_reach_cropping_is_exact(make):
    """The sampler crops rows above `row_reach`: the logits of the last row must not change."""
    torch.manual_seed(0)
    net = make()
    x = torch.randint(0, 4, (2, 1, 16, 9))
    kw = {"label": torch.tensor([0, 1]), "cond": torch.rand(2, 1, 16, 9)} if isinstance(net, GatedPixelCNN) else {}
    full = net(x, **kw)[..., -1, :]
    top = 16 - 1 - net.row_reach
    crop = {k: (v[:, :, top:] if k == "cond" else v) for k, v in kw.items()}
    assert torch.allclose(net(x[:, :, top:], **crop)[..., -1, :], full, atol=1e-5)
    crop = {k: (v[:, :, top + 1:] if k == "cond" else v) for k, v in kw.items()}
    assert not torch.allclose(net(x[:, :, top + 1:], **crop)[..., -1, :], full, atol=1e-5)  # the reach is tight
