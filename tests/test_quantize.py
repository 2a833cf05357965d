"""Vector quantizer: nearest-code assignment, straight-through gradients, EMA codebook, dead-code restarts."""

import torch

from neuralrender.metrics.density import perplexity
from neuralrender.nn.quantize import VectorQuantizer, usage_plot


def clusters(n_clusters=8, dim=4, per=64, seed=0):
    """z [1,D,n_clusters*per,1]: tight clusters around well-separated centres, and the centres [n,D]."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 5
    pts = centres.repeat_interleave(per, 0) + 0.05 * torch.randn(n_clusters * per, dim, generator=g)
    pts = pts[torch.randperm(len(pts), generator=g)]
    return pts.t().reshape(1, dim, -1, 1), centres


def test_assignment_and_straight_through():
    vq = VectorQuantizer(16, 4, decay=0.99)
    vq.eval()
    z = torch.randn(2, 4, 5, 6, requires_grad=True)
    out = vq(z)
    assert out.quantized.shape == z.shape and out.codes.shape == (2, 5, 6) and out.codes.dtype == torch.long
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    ref = torch.cdist(flat, vq.embedding.detach()).argmin(1)
    assert torch.equal(out.codes.flatten(), ref)
    assert torch.allclose(out.quantized, vq.lookup(out.codes), atol=1e-6)
    assert torch.equal(vq.encode(z.detach()), out.codes)
    g = torch.randn_like(z)
    (grad,) = torch.autograd.grad((out.quantized * g).sum(), z)
    assert torch.allclose(grad, g)  # straight through
    assert 1.0 <= out.perplexity.item() <= 16.0 and out.counts.sum() == 60


def test_eval_mode_changes_nothing():
    vq = VectorQuantizer(8, 4)
    vq.eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(1, 4, 3, 3))
    for k, v in vq.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_ema_codebook_moves_to_the_means_of_its_cells():
    torch.manual_seed(0)
    z, _ = clusters()
    vq = VectorQuantizer(8, 4, decay=0.8, restart_threshold=1.0)
    vq.train()
    for _ in range(60):
        out = vq(z)
    assert torch.all(out.counts > 0)  # every code in use
    flat = z[0, :, :, 0].t()
    codes = vq.encode(z).flatten()
    for k in range(8):
        mean = flat[codes == k].mean(0)
        assert torch.allclose(vq.embedding[k].detach(), mean, atol=0.05), k  # k-means fixed point
    assert not vq.embedding.requires_grad


def test_dead_codes_are_restarted():
    torch.manual_seed(0)
    z, _ = clusters()

    def run(threshold):
        vq = VectorQuantizer(8, 4, decay=0.8, restart_threshold=threshold)
        vq.train()
        vq(z)  # initialise from data, then collapse the codebook: code 0 takes everything, 7 dead codes
        with torch.no_grad():
            vq.embedding.data[:] = vq.embedding.data[0]
            vq.embedding.data[1:] += 100.0
            vq.cluster_size.fill_(1.0)
            vq.embed_sum.copy_(vq.embedding.data)
            vq.usage[1:] = 0.5  # their usage history says: unused
        for _ in range(10):
            out = vq(z)
        return int((out.counts > 0).sum()), out.perplexity.item()

    used, perp = run(1.0)
    assert used == 8 and perp > 4.0
    used, perp = run(0.0)
    assert used == 1 and perp < 1.01  # without restarts the dead codes stay dead


def test_codebook_loss_without_ema_trains_the_codebook():
    vq = VectorQuantizer(8, 4, decay=0.0, restart_threshold=0.0)
    assert vq.embedding.requires_grad
    vq.train()
    z = torch.randn(2, 4, 3, 3)
    out = vq(z)
    (g,) = torch.autograd.grad(out.loss, vq.embedding)
    assert g.abs().sum() > 0
    used = out.counts > 0
    assert torch.all(g[~used] == 0) and torch.all(g[used].abs().sum(1) > 0)


def test_state_round_trip_and_perplexity_helper():
    torch.manual_seed(0)
    z, _ = clusters()
    a = VectorQuantizer(8, 4)
    a.train()
    for _ in range(5):
        a(z)
    b = VectorQuantizer(8, 4)
    b.load_state_dict(a.state_dict())
    a.eval()
    b.eval()
    assert torch.equal(a(z).codes, b(z).codes)
    assert abs(perplexity(torch.tensor([5.0, 5.0, 5.0, 5.0])) - 4.0) < 1e-6
    assert abs(perplexity(torch.tensor([9.0, 0.0, 0.0])) - 1.0) < 1e-6


def test_usage_plot_marks_dead_codes():
    img = usage_plot(torch.tensor([4.0, 0.0, 2.0, 1.0]), height=40, width=80)
    assert img.shape == (1, 3, 86, 80) and img.min() >= 0 and img.max() <= 1
    red = (img[0, 0] > 0.8) & (img[0, 1] < 0.2)
    blue = (img[0, 2] > 0.7) & (img[0, 0] < 0.2)
    assert red[:40, 20:40].any() and not red[:40, :20].any()  # code 1 (unused) is a red tick
    assert blue[:40, :20].sum() > blue[:40, 60:].sum()  # code 0's bar is taller than code 3's
