"""losses.reconstruction: masked L1, and the VGG16 perceptual loss that only runs with weights from disk."""

import pytest
import torch

from neuralrender.errors import DataError
from neuralrender.losses.reconstruction import PerceptualLoss, _vgg16_features, l1_loss, perceptual_status


def test_l1_masked():
    a, b = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    b[:, :, :2] = 0.0  # top half equal
    m = torch.zeros(2, 1, 4, 4)
    m[:, :, :2] = 1
    assert float(l1_loss(a, b)) == pytest.approx(0.5)
    assert float(l1_loss(a, b, m)) == 0.0
    assert float(l1_loss(a, b, 1 - m)) == pytest.approx(1.0)
    assert float(l1_loss(a, b, (1 - m)[:, 0])) == pytest.approx(1.0)  # [B,H,W] masks too


def test_perceptual_off_without_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("NR_VGG_WEIGHTS", raising=False)
    assert PerceptualLoss.from_path(None) is None
    assert "off" in perceptual_status(None)
    assert "does not exist" in perceptual_status(tmp_path / "nope.pth")
    with pytest.raises(DataError, match="not found"):
        PerceptualLoss.from_path(tmp_path / "nope.pth")


def test_perceptual_loads_torchvision_layout(tmp_path, monkeypatch):
    """A file in torchvision's vgg16 key layout ('features.N.weight') loads; identical images give 0."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = {f"features.{k}": v.contiguous() for k, v in _vgg16_features(22).state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # other keys are ignored
    path = tmp_path / "vgg16.safetensors"
    save_file(sd, str(path))
    monkeypatch.setenv("NR_VGG_WEIGHTS", str(path))
    assert perceptual_status(None).startswith("perceptual loss: on")
    loss = PerceptualLoss.from_path(None)
    x = torch.rand(1, 3, 32, 32)
    assert float(loss(x, x)) == 0.0
    y = torch.rand(1, 3, 32, 32, requires_grad=True)
    v = loss(y, x)
    v.backward()
    assert v.item() > 0 and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    bad = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.zeros(64, 3, 3, 3)}, str(bad))
    with pytest.raises(DataError, match="missing"):
        PerceptualLoss.from_path(bad)
