"""GAN building blocks: generator / discriminator shapes at several sizes, GAN losses, feature matching,
instance features and multimodal sampling, vid2vid's progressive-training switch points."""

import pytest
import torch
import torch.nn.functional as F

from neuralrender.errors import NeuralRenderError
from neuralrender.losses.gan import discriminator_loss, feature_matching_loss, gan_loss, generator_loss
from neuralrender.methods.vid2vid import progressive_schedule
from neuralrender.nn.discriminators import MultiScaleDiscriminator, PatchDiscriminator, VideoDiscriminator
from neuralrender.nn.encoders import FeatureBank, InstanceFeatureEncoder, instance_average, paint_instances
from neuralrender.nn.generators import LocalEnhancer, ResnetGenerator, SequentialGenerator


@pytest.mark.parametrize("hw", [(32, 32), (48, 40), (64, 96), (37, 53)])
def test_generator_shapes(hw):
    torch.manual_seed(0)
    x = torch.rand(2, 5, *hw)
    y = ResnetGenerator(5, 3, width=8, n_down=3, n_blocks=1)(x)
    assert y.shape == (2, 3, *hw) and 0 <= float(y.min()) and float(y.max()) <= 1
    le = LocalEnhancer(5, 3, width=4, n_down_global=2, n_blocks_global=1, n_blocks_local=1)
    assert le(x).shape == (2, 3, *hw)
    assert le.global_only(x).shape == (2, 3, (hw[0] + 1) // 2, (hw[1] + 1) // 2)
    for up in ("bilinear", "nearest", "shuffle"):  # resize-convolution and sub-pixel upsampling
        assert LocalEnhancer(5, 3, width=4, n_down_global=2, n_blocks_global=1, n_blocks_local=1, up=up)(x).shape \
            == (2, 3, *hw)
    sg = SequentialGenerator(5, n_prev=2, width=4, n_down=2, n_blocks=1)
    out = sg(torch.rand(2, 15, *hw), torch.rand(2, 6, *hw))
    assert out["image"].shape == (2, 3, *hw) and out["flow"].shape == (2, 2, *hw) and out["mask"].shape == (2, 1, *hw)
    first = sg(torch.rand(2, 15, *hw), None)
    assert torch.equal(first["image"], first["hallucinated"]) and bool((first["mask"] == 1).all())


def test_generator_upsampling_options():
    """'transpose' (the default) keeps the transposed convs and the checkpoint keys; a resize conv has none and
    maps a constant feature map to a constant (no checkerboard); unknown modes are an error."""
    default = LocalEnhancer(5, 3, width=4, n_down_global=2, n_blocks_global=1, n_blocks_local=1)
    paper = LocalEnhancer(5, 3, width=4, n_down_global=2, n_blocks_global=1, n_blocks_local=1, up="transpose")
    assert default.state_dict().keys() == paper.state_dict().keys()
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in default.modules())
    resize = LocalEnhancer(5, 3, width=4, n_down_global=2, n_blocks_global=1, n_blocks_local=1, up="bilinear")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in resize.modules())
    from neuralrender.nn.generators import _upsample

    for up, flat in (("transpose", False), ("bilinear", True), ("nearest", True), ("shuffle", True)):
        torch.manual_seed(0)
        y = torch.nn.Sequential(*_upsample(2, 2, up))(torch.ones(1, 2, 8, 8))[..., 2:-2, 2:-2]
        assert bool(torch.allclose(y, y[..., :1, :1].expand_as(y), atol=1e-6)) == flat, up
    # 'shuffle' (ICNR init) starts as nearest resize + conv, but each sub-pixel has its own filters: after a change
    # of one sub-pixel's filters a constant input gives a 2x2 pattern, which a resize conv cannot make
    torch.manual_seed(0)
    shuffle = torch.nn.Sequential(*_upsample(2, 1, "shuffle"))
    with torch.no_grad():
        shuffle[1].bias[0] += 1.0  # output sub-pixel (0, 0)
    y = shuffle(torch.ones(1, 2, 8, 8))[0, 0, 2:-2, 2:-2]
    assert torch.allclose(y[0::2, 0::2] - y[1::2, 1::2], torch.ones(6, 6), atol=1e-5)
    with pytest.raises(ValueError, match="unknown upsampling 'cubic'"):
        ResnetGenerator(5, 3, width=8, n_down=2, n_blocks=1, up="cubic")


def test_sequential_generator_blends_warp_and_hallucination():
    torch.manual_seed(0)
    sg = SequentialGenerator(2, n_prev=1, width=4, n_down=1, n_blocks=1)
    prev = torch.rand(1, 3, 16, 16)
    out = sg(torch.rand(1, 4, 16, 16), prev)
    # the flow head starts at zero: warped == previous frame, mask == 0.5
    assert torch.allclose(out["warped"], prev, atol=1e-6)
    assert torch.allclose(out["mask"], torch.full_like(out["mask"], 0.5))
    assert torch.allclose(out["image"], 0.5 * prev + 0.5 * out["hallucinated"], atol=1e-6)


@pytest.mark.parametrize("size,n_layers,logit", [(64, 3, 6), (32, 2, 6), (70, 3, 6), (128, 3, 14)])
def test_patch_discriminator_shapes(size, n_layers, logit):
    d = PatchDiscriminator(4, width=8, n_layers=n_layers)
    feats = d(torch.rand(2, 4, size, size))
    assert len(feats) == n_layers + 2
    assert feats[-1].shape == (2, 1, logit, logit)


def test_patch_discriminator_too_small_is_an_error():
    with pytest.raises(NeuralRenderError, match="at least 24x24"):
        PatchDiscriminator(3, 8, 3)(torch.rand(1, 3, 16, 16))


def test_multiscale_discriminator_scales_and_skipping():
    d = MultiScaleDiscriminator(3, num_d=3, width=8, n_layers=2)
    out = d(torch.rand(2, 3, 64, 64))
    assert [o[-1].shape[-1] for o in out] == [14, 6, 2]
    assert len(d(torch.rand(2, 3, 24, 24))) == 2  # 24 -> 12 (the minimum for 2 layers) -> 6: two scales
    small = d(torch.rand(2, 3, 20, 20))
    assert len(small) == 1  # 20 -> 10 < 12: only the full-resolution scale runs


def test_video_discriminator_checks_shapes():
    d = VideoDiscriminator(3, k=3, num_d=2, width=8, n_layers=2)
    out = d(torch.rand(2, 3, 3, 32, 32), torch.rand(2, 2, 2, 32, 32))
    assert len(out) == 2 and out[0][0].shape[1] == 8
    with pytest.raises(NeuralRenderError, match="flows"):
        d(torch.rand(2, 3, 3, 32, 32), torch.rand(2, 3, 2, 32, 32))


def test_gan_losses_known_values():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert gan_loss(ones, True, "lsgan").item() == 0 and gan_loss(ones, False, "lsgan").item() == 1
    assert gan_loss(2 * ones, True, "hinge").item() == 0 and gan_loss(-ones, True, "hinge").item() == 2
    assert gan_loss(-3 * ones, False, "hinge").item() == 0
    assert gan_loss(3 * ones, True, "hinge", for_discriminator=False).item() == -3
    assert abs(gan_loss(zeros, True, "vanilla").item() - 0.6931) < 1e-3
    # perfect discriminator (real -> 1, fake -> 0): zero D loss, generator loss 1 per scale (lsgan)
    assert discriminator_loss([[ones]] * 2, [[zeros]] * 2, "lsgan").item() == 0
    assert generator_loss([[zeros]] * 2, "lsgan").item() == 1
    with pytest.raises(NeuralRenderError, match="unknown GAN loss"):
        gan_loss(ones, True, "wgan")


def test_feature_matching_gradient_reaches_fake_only():
    real = [[torch.rand(1, 4, 8, 8, requires_grad=True), torch.rand(1, 1, 4, 4)]]
    fake = [[torch.rand(1, 4, 8, 8, requires_grad=True), torch.rand(1, 1, 4, 4)]]
    loss = feature_matching_loss(real, fake, weight=2.0)
    assert abs(loss.item() - 2 * (fake[0][0] - real[0][0]).abs().mean().item()) < 1e-6
    loss.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None
    assert feature_matching_loss(real, real).item() == 0


def test_feature_matching_paper_layer_weights():
    """layers='pix2pixhd': per scale 4 / L x the sum over its L feature maps, scales averaged."""
    torch.manual_seed(0)
    real = [[torch.rand(1, 4, 8, 8), torch.rand(1, 4, 4, 4), torch.rand(1, 1, 2, 2)],
            [torch.rand(1, 4, 4, 4), torch.rand(1, 1, 2, 2)]]
    fake = [[torch.rand_like(t) for t in scale] for scale in real]
    d = [[(f - r).abs().mean().item() for r, f in zip(rs[:-1], fs[:-1])] for rs, fs in zip(real, fake)]
    want = 3.0 * ((4 / 2) * (d[0][0] + d[0][1]) + (4 / 1) * d[1][0]) / 2
    assert abs(feature_matching_loss(real, fake, 3.0, layers="pix2pixhd").item() - want) < 1e-5
    same = [real[0], real[0]]  # equal layer counts: 4 x the mean
    fake2 = [fake[0], fake[0]]
    assert abs(feature_matching_loss(same, fake2, 3.0, "pix2pixhd").item()
               - 4 * feature_matching_loss(same, fake2, 3.0).item()) < 1e-5
    with pytest.raises(NeuralRenderError, match="unknown feature matching"):
        feature_matching_loss(real, fake, layers="sum")


def test_instance_average_is_constant_per_instance():
    torch.manual_seed(0)
    f = torch.rand(2, 3, 8, 8)
    inst = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    inst[:, :, :, 4:] = 1
    inst[1, :, :4] = 7
    out = instance_average(f, inst)
    for b in range(2):
        for k in inst[b].unique():
            m = inst[b, 0] == k
            assert torch.allclose(out[b][:, m], f[b][:, m].mean(1, keepdim=True).expand(-1, int(m.sum())), atol=1e-6)
    g = instance_average(f, None)  # one instance per image
    assert torch.allclose(g, f.mean((2, 3), keepdim=True).expand_as(f), atol=1e-6)


def test_multimodal_sampling_gives_different_outputs():
    torch.manual_seed(0)
    enc = InstanceFeatureEncoder(3, 3, width=4, depth=2)
    inst = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    inst[..., 8:] = 1
    bank = FeatureBank(2, 3, size=8)
    for _ in range(4):
        bank.add(enc(torch.rand(1, 3, 16, 16), inst), inst)
    assert bank.count.tolist() == [4, 4]
    gen = LocalEnhancer(5 + 3, 3, width=4, n_down_global=1, n_blocks_global=1, n_blocks_local=1)
    cond = torch.rand(1, 5, 16, 16)
    a = bank.sample(inst, torch.Generator().manual_seed(1))
    b = bank.sample(inst, torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)
    ya, yb = gen(torch.cat([cond, a], 1)), gen(torch.cat([cond, b], 1))
    assert (ya - yb).abs().mean() > 1e-4
    same = bank.sample(inst, torch.Generator().manual_seed(1))
    assert torch.equal(gen(torch.cat([cond, same], 1)), ya)
    codes = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    painted = paint_instances(codes, inst)
    assert painted[0, :, 0, 0].tolist() == [1.0, 2.0] and painted[0, :, 0, 15].tolist() == [3.0, 4.0]


def test_progressive_schedule_switch_points():
    s = lambda step: progressive_schedule(step, spatial_steps=100, clip_start=2, clip_len=8, temporal_every=50)  # noqa
    assert s(0) == (0.5, 2) and s(49) == (0.5, 2)
    assert s(50) == (0.5, 4) and s(99) == (0.5, 4)
    assert s(100) == (1.0, 8) and s(1000) == (1.0, 8)  # doubled twice, capped at clip_len
    assert progressive_schedule(0, 0, 3, 6, 0) == (1.0, 6)  # both switched off


def test_local_enhancer_full_resolution_skip():
    """skip=True: the head also reads the stem's full-resolution features (head input width -> 2 x width); the
    default keeps the checkpoint keys and shapes of the paper's local enhancer; the stem feeds the output."""
    kw = dict(width=4, n_down_global=2, n_blocks_global=1, n_blocks_local=1, up="bilinear")
    torch.manual_seed(0)
    plain = LocalEnhancer(5, 3, **kw)
    torch.manual_seed(0)
    skip = LocalEnhancer(5, 3, skip=True, **kw)
    assert plain.state_dict().keys() == skip.state_dict().keys()
    assert plain.head[1].in_channels == 4 and skip.head[1].in_channels == 8
    x = torch.rand(2, 5, 24, 20)
    assert skip(x).shape == (2, 3, 24, 20)
    with torch.no_grad():
        y = skip(x)
        skip.head[1].weight[:, 4:] = 0  # cut the skip path: the output changes
        assert not torch.allclose(skip(x), y)


def test_local_enhancer_shuffle_fits_a_fixed_texture():
    """up='shuffle' (sub-pixel convs) paints a fixed per-pixel texture from the coordinates alone far better than the
    bilinear resize conv at the same steps (150 Adam steps, 16^2 random texture: L1 under half the bilinear's; 3
    seeds measured 0.008-0.011 vs 0.059-0.074): what the body's static wall needs (docs/methods/pix2pixhd.md)."""
    import torch.nn.functional as F

    from neuralrender.nn.generators import pixel_coords

    target = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x = pixel_coords(torch.zeros(1, 1, 16, 16))
    fit = {}
    for up in ("bilinear", "shuffle"):
        torch.manual_seed(0)
        net = LocalEnhancer(2, 3, width=8, n_down_global=1, n_blocks_global=1, n_blocks_local=1, up=up)
        opt = torch.optim.Adam(net.parameters(), 3e-3)
        for _ in range(150):
            loss = F.l1_loss(net(x), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        fit[up] = F.l1_loss(net(x), target).item()
    assert fit["shuffle"] < 0.5 * fit["bilinear"], fit


def test_screen_texture_is_pinned_to_the_screen():
    """screen_uv: pixel centres in the v-up convention; ScreenTexture returns its texels exactly at the texture's
    resolution, their 2x2 means at half of it, the same canvas for every batch item, and gets gradients."""
    from neuralrender.nn.neural_texture import ScreenTexture, screen_uv

    uv = screen_uv(2, 4, 8)
    assert uv.shape == (2, 4, 8, 2)
    assert torch.allclose(uv[0, 0, 0], torch.tensor([0.5 / 8, 1 - 0.5 / 4]))  # top-left pixel: small u, v near 1
    assert torch.allclose(uv[1, 3, 7], torch.tensor([7.5 / 8, 0.5 / 4]))
    torch.manual_seed(0)
    canvas = ScreenTexture(3, 16, levels=3)
    with torch.no_grad():
        canvas.texture.levels[0].normal_()
    full = canvas.texture.full()
    out = canvas(torch.zeros(2, 5, 16, 16))
    assert out.shape == (2, 3, 16, 16) and torch.equal(out[0], out[1])
    assert torch.allclose(out[:1], full, atol=1e-5)
    assert torch.allclose(canvas(torch.zeros(1, 1, 8, 8)), F.avg_pool2d(full, 2), atol=1e-5)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in canvas.parameters())


def test_canvas_fits_a_fixed_screen_texture_that_coordinates_do_not():
    """A fixed random 32^2 screen texture (the body's static wall in miniature), fitted by L1 from x, y alone or from
    x, y + a 4-channel canvas (ScreenTexture) with the local enhancer's full-resolution skip (100 Adam steps):
    with the canvas the L1 is under half of x, y's (3 seeds measured 0.016-0.017 vs 0.041-0.050)."""
    from neuralrender.nn.generators import pixel_coords
    from neuralrender.nn.neural_texture import ScreenTexture

    target = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = pixel_coords(torch.zeros(1, 1, 32, 32))
    fit = {}
    for c in (0, 4):
        torch.manual_seed(0)
        net = LocalEnhancer(2 + c, 3, width=8, n_down_global=1, n_blocks_global=1, n_blocks_local=1, up="shuffle",
                            skip=True)
        canvas = ScreenTexture(c, 32, levels=2) if c else None
        opt = torch.optim.Adam(list(net.parameters()) + (list(canvas.parameters()) if c else []), 3e-3)

        def run():
            return net(torch.cat([x, canvas(x)], 1) if c else x)

        for _ in range(100):
            loss = F.l1_loss(run(), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
        fit[c] = F.l1_loss(run(), target).item()
    assert fit[4] < 0.5 * fit[0], fit


def test_global_instance_code_is_erased_by_the_stem_instance_norm():
    """With one instance per image (face, body) the encoder's code is constant over the image; the generator's
    stems (conv7 + instance norm) subtract it out, so the output does not depend on it (why the body and face
    configurations use feat_channels=0)."""
    torch.manual_seed(0)
    gen = LocalEnhancer(3 + 3, 3, width=4, n_down_global=2, n_blocks_global=1, n_blocks_local=1, up="shuffle")
    cond = torch.rand(2, 3, 16, 16)
    a = instance_average(torch.rand(2, 3, 16, 16), None)
    b = instance_average(torch.rand(2, 3, 16, 16) * 2 - 1, None)
    assert not torch.allclose(a, b)
    assert torch.allclose(gen(torch.cat([cond, a], 1)), gen(torch.cat([cond, b], 1)), atol=1e-5)
