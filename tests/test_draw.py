import math

import pytest
import torch

from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.draw import (
    colorize_labels,
    draw_landmarks,
    draw_skeleton,
    edge_map_from_labels,
    gaussian_heatmaps,
    label_map_to_onehot,
)


def test_landmark_disc_coverage_is_exact():
    pts = torch.tensor([[[5.5, 3.5]]])
    img = draw_landmarks(pts, 8, 10, radius=1.0, colors=[1.0, 0.5, 0.0])
    assert img.shape == (1, 3, 8, 10)
    cov = img[0, 0]
    assert cov[3, 5] == 1.0
    for i, j in ((2, 5), (4, 5), (3, 4), (3, 6)):  # distance 1 -> 0.5
        assert cov[i, j] == pytest.approx(0.5)
    assert cov[2, 4] == pytest.approx(1.5 - math.sqrt(2))
    assert cov[1, 5] == 0 and cov.sum() == pytest.approx(1 + 4 * 0.5 + 4 * (1.5 - math.sqrt(2)))
    assert torch.allclose(img[0, 1], 0.5 * cov) and img[0, 2].abs().max() == 0


def test_invisible_and_nan_points_not_drawn():
    pts = torch.tensor([[[2.5, 2.5], [float("nan"), 1.0], [6.5, 6.5]]])
    vis = torch.tensor([[1, 1, 0]])
    img = draw_landmarks(pts, 10, 10, radius=1.0, visibility=vis)
    assert img[0, 0, 2, 2] == 1 and img[0, 0, 6, 6] == 0
    assert torch.isfinite(img).all()
    heat = gaussian_heatmaps(pts, 10, 10, sigma=1.0, visibility=vis)
    assert heat[0, 1].abs().max() == 0 and heat[0, 2].abs().max() == 0 and torch.isfinite(heat).all()


def test_skeleton_stick_thickness():
    joints = torch.tensor([[[2.5, 5.5], [12.5, 5.5], [12.5, 9.5]]])
    edges = [[0, 1], [1, 2]]
    thin = draw_skeleton(joints, edges, 12, 16, thickness=1.0, colors=[[1.0, 0, 0], [0, 1.0, 0]])
    assert thin[0, 0, 5, 2:12].min() == 1.0  # on the first stick
    assert thin[0, 0, 4].max() == 0 and thin[0, 0, 6, :12].max() == 0
    assert thin[0, 1, 6:10, 12].min() == 1.0  # second stick, green, painted over the joint
    thick = draw_skeleton(joints, edges[:1], 12, 16, thickness=3.0)
    assert thick[0, 0, 4, 2:13].min() == 1.0 and thick[0, 0, 6, 2:13].min() == 1.0
    assert thick[0, 0, 3].max() == 0 and thick[0, 0, 7].max() == 0


def test_skeleton_visibility_and_gradient():
    joints = torch.tensor([[[2.5, 5.3], [12.5, 5.3], [12.5, 9.5]]], requires_grad=True)
    vis = torch.tensor([[1, 1, 0]])
    img = draw_skeleton(joints, [[0, 1], [1, 2]], 12, 16, thickness=2.0, visibility=vis)
    assert img[0, 0, 8, 12] == 0  # edge 1-2 hidden
    img[0, 0, :5].sum().backward()
    assert joints.grad[0, :2, 1].abs().sum() > 0  # moving the stick vertically changes the coverage
    with pytest.raises(NeuralRenderError, match="edges"):
        draw_skeleton(joints.detach(), [[0, 3]], 12, 16)


def test_gaussian_heatmaps_peak_and_falloff():
    pts = torch.tensor([[[4.5, 2.5], [0.0, 0.0]]])
    h = gaussian_heatmaps(pts, 6, 8, sigma=1.5)
    assert h.shape == (1, 2, 6, 8)
    assert h[0, 0, 2, 4] == pytest.approx(1.0)
    assert int(h[0, 0].argmax()) == 2 * 8 + 4
    assert h[0, 0, 2, 5] == pytest.approx(math.exp(-1 / (2 * 1.5**2)))
    assert h[0, 1, 0, 0] == pytest.approx(math.exp(-0.5 / (2 * 1.5**2)))


def test_onehot_and_colorize():
    lab = torch.tensor([[[0, 1, 2], [-1, 2, 1]]])
    oh = label_map_to_onehot(lab, 3)
    assert oh.shape == (1, 3, 2, 3)
    assert torch.equal(oh.sum(1), torch.tensor([[[1.0, 1, 1], [0, 1, 1]]]))
    assert oh[0, 2, 1, 1] == 1 and oh[0, 1, 0, 1] == 1
    with pytest.raises(NeuralRenderError, match="outside"):
        label_map_to_onehot(lab, 2)
    rgb = colorize_labels(lab)
    assert rgb.shape == (1, 3, 2, 3)
    assert torch.equal(rgb[0, :, 1, 0], torch.zeros(3))  # background
    cols = {tuple(rgb[0, :, 0, j].tolist()) for j in range(3)}
    assert len(cols) == 3 and (0.0, 0.0, 0.0) not in cols
    assert torch.equal(rgb[0, :, 0, 2], rgb[0, :, 1, 1])  # same label, same colour


def test_edge_map_marks_both_sides_of_boundaries():
    lab = torch.zeros(1, 1, 5, 6, dtype=torch.long)
    lab[..., 3:] = 4
    e = edge_map_from_labels(lab)
    assert e.shape == (1, 1, 5, 6)
    assert e[0, 0, :, 2].min() == 1 and e[0, 0, :, 3].min() == 1
    assert e.sum() == 10
    with pytest.raises(NeuralRenderError, match="integers"):
        edge_map_from_labels(lab.float())
