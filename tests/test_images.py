import gzip

import numpy as np
import pytest
import torch

from neuralrender.data.images import FashionMNIST, LFWSubset, quantize
from neuralrender.data.splits import every_nth_indices, split_indices
from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.io.images import (
    load_lfw_subset,
    make_grid,
    read_depth,
    read_idx,
    read_image,
    read_labels,
    save_depth,
    save_grid,
    save_image,
    save_labels,
)


def _write_idx(path, arr, magic=None):
    header = magic if magic is not None else bytes([0, 0, 0x08, arr.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + dims + arr.astype(np.uint8).tobytes())


def test_save_read_image_roundtrip(tmp_path):
    g = torch.Generator().manual_seed(1)
    img = (torch.randint(0, 256, (3, 5, 7), generator=g).float() / 255)
    p = save_image(img, tmp_path / "a" / "x.png")
    back = read_image(p)
    assert back.shape == (3, 5, 7) and back.dtype == torch.float32
    assert torch.equal(back, img)
    assert read_image(p, channels=1).shape == (1, 5, 7)
    assert read_image(p, channels=4)[3].eq(1).all()


def test_grid_layout(tmp_path):
    imgs = torch.zeros(5, 3, 4, 6)
    for k in range(5):
        imgs[k] = k / 4
    grid = make_grid(imgs, nrow=3, padding=1)
    assert grid.shape == (3, 2 * 5 + 1, 3 * 7 + 1)
    # image 4 sits at row 1, col 1
    assert torch.allclose(grid[:, 1 + 5 : 1 + 5 + 4, 1 + 7 : 1 + 7 + 6], imgs[4])
    assert grid[:, 0, :].eq(1).all()
    back = read_image(save_grid(imgs, tmp_path / "g.png", nrow=3, padding=1))
    assert back.shape == grid.shape


def test_depth_and_labels_roundtrip(tmp_path):
    d = torch.tensor([[0.0, 1.2345], [3.0, 70.0]])
    back = read_depth(save_depth(d, tmp_path / "d.png"))
    assert back.shape == (1, 2, 2)
    assert torch.allclose(back[0, :, :], torch.tensor([[0.0, 1.2345], [3.0, 65.535]]), atol=6e-4)
    lab = torch.tensor([[0, 1], [2, 255]])
    assert torch.equal(read_labels(save_labels(lab, tmp_path / "l.png"))[0], lab)
    with pytest.raises(ValueError):
        save_labels(torch.tensor([[256]]), tmp_path / "bad.png")


def test_read_image_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")


def test_idx_roundtrip_and_bad_magic(tmp_path):
    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    _write_idx(tmp_path / "ok.gz", arr)
    assert np.array_equal(read_idx(tmp_path / "ok.gz"), arr)
    _write_idx(tmp_path / "bad.gz", arr, magic=bytes([8, 3, 0, 0]))
    with pytest.raises(DataError, match=r"bad.gz \[magic\]"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\0" * 3)
    with pytest.raises(DataError, match=r"\[dims\]"):
        read_idx(tmp_path / "short.gz")


def test_lfw_rejects_pickles(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="obj.npy"):
        load_lfw_subset(tmp_path / "obj.npy")


def test_splits_deterministic_and_disjoint():
    a = split_indices(100, "train", test_fraction=0.2, val_fraction=0.1, seed=3)
    b = split_indices(100, "test", test_fraction=0.2, val_fraction=0.1, seed=3)
    c = split_indices(100, "val", test_fraction=0.2, val_fraction=0.1, seed=3)
    assert len(a) == 70 and len(b) == 20 and len(c) == 10
    assert torch.equal(torch.cat([a, b, c]).sort().values, torch.arange(100))
    assert torch.equal(b, split_indices(100, "test", test_fraction=0.2, val_fraction=0.1, seed=3))
    assert not torch.equal(b, split_indices(100, "test", test_fraction=0.2, val_fraction=0.1, seed=4))
    assert every_nth_indices(10, "test", 4).tolist() == [0, 4, 8]
    with pytest.raises(NeuralRenderError, match="unknown split"):
        split_indices(10, "tain")


def test_quantize_variants():
    x = torch.tensor([0.0, 0.49, 0.5, 1.0])
    assert quantize(x, "binary").tolist() == [0, 0, 1, 1]
    assert quantize(x, "256").tolist() == [0, 125, 128, 255]
    with pytest.raises(NeuralRenderError):
        quantize(x, "bits")


def test_fashion_mnist_real(shared_data):
    tr = FashionMNIST(split="train", variant="256", test_fraction=0.1, seed=0)
    te = FashionMNIST(split="test", variant="binary", test_fraction=0.1, seed=0)
    assert len(tr) == 9000 and len(te) == 1000
    x, y = tr[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.int64 and 0 <= int(y) <= 9
    assert set(torch.unique(te.images).tolist()) <= {0.0, 1.0}
    assert set(tr.indices.tolist()).isdisjoint(te.indices.tolist())
    # all ten classes present, roughly balanced
    counts = torch.bincount(tr.labels, minlength=10)
    assert counts.min() > 800


def test_lfw_real(shared_data):
    ds = LFWSubset(split="all")
    assert len(ds) == 200 and ds.labels[:100].eq(1).all() and ds.labels[100:].eq(0).all()
    x, _ = ds[0]
    assert x.shape == (1, 25, 25) and 0 <= x.min() and x.max() <= 1
    assert len(LFWSubset(split="test", faces_only=True)) == 20
