import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from neuralrender.data.posed import PosedImageDataset, undistort_image
from neuralrender.errors import DataError
from neuralrender.graphics.cameras import Cameras, look_at, orbit
from neuralrender.io.images import save_image
from neuralrender.io.posed import load_transforms, save_posed_dataset

W, H = 24, 16


def _cams(n=5, dist=True, per_frame_k=False):
    c = orbit(n, radius=2.5, elevation_deg=25.0, target=(0.1, -0.2, 0.3), fov_deg=50.0, width=W, height=H)
    K = c.K.clone()
    K[:, 0, 0] *= 1.05
    K[:, 0, 2] += 0.7
    if per_frame_k:
        K[:, 1, 1] += torch.arange(n, dtype=torch.float32)
    d = torch.tensor([0.05, -0.02, 0.001, -0.002]).expand(n, 4) if dist else None
    return Cameras(K=K, R=c.R, t=c.t, width=W, height=H, dist=d)


def _images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, H, W), generator=g).float() / 255


def _assert_same_cams(a: Cameras, b: Cameras, tol=1e-6):
    assert (a.width, a.height) == (b.width, b.height)
    for f in ("K", "R", "t"):
        assert torch.allclose(getattr(a, f), getattr(b, f), atol=tol, rtol=0), f
    if a.dist is None:
        assert b.dist is None
    else:
        assert torch.allclose(a.dist, b.dist, atol=tol, rtol=0)


def _dataset(tmp_path, n=5, **kw):
    cams = _cams(n, **kw)
    imgs = _images(n)
    depth = torch.rand(n, 1, H, W) * 3
    labels = torch.randint(0, 5, (n, 1, H, W))
    masks = (labels > 0).float()
    splits = ["train", "train", "val", "test", "train"][:n]
    save_posed_dataset(tmp_path / "ds", cams, imgs, splits=splits, depth=depth, masks=masks, labels=labels,
                       extra={"scene": "unit"})
    return cams, imgs, depth, labels, masks


@pytest.mark.parametrize("per_frame_k", [False, True])
def test_roundtrip_cameras_images(tmp_path, per_frame_k):
    cams, imgs, depth, labels, masks = _dataset(tmp_path, per_frame_k=per_frame_k)
    d = load_transforms(tmp_path / "ds")
    _assert_same_cams(cams, d.cameras)
    doc = json.loads((tmp_path / "ds" / "transforms.json").read_text())
    assert ("fl_y" in doc) != per_frame_k and d.meta["scene"] == "unit"
    ds = PosedImageDataset(tmp_path / "ds", split="all")
    for i in range(len(ds)):
        it = ds[i]
        assert torch.equal(it["image"], imgs[i])
        assert torch.allclose(it["depth"], depth[i], atol=0.5e-3 + 1e-6)
        assert torch.equal(it["labels"], labels[i]) and torch.equal(it["mask"], masks[i])
    assert [len(load_transforms(tmp_path / "ds", s)) for s in ("train", "val", "test")] == [3, 1, 1]
    _assert_same_cams(cams[[3]], PosedImageDataset(tmp_path / "ds", split="test").cameras)


def test_downscale(tmp_path):
    cams, imgs, *_ = _dataset(tmp_path, dist=False)
    ds = PosedImageDataset(tmp_path / "ds", split="all", downscale=2)
    assert ds[0]["image"].shape == (3, H // 2, W // 2) and ds[0]["depth"].shape == (1, H // 2, W // 2)
    assert torch.allclose(ds[0]["image"], torch.nn.functional.avg_pool2d(imgs[:1], 2)[0], atol=1e-6)
    assert torch.allclose(ds.cameras.K[:, 0, 0], cams.K[:, 0, 0] / 2)
    with pytest.raises(DataError, match="downscale"):
        PosedImageDataset(tmp_path / "ds", downscale=5)


def test_nerf_synthetic_layout(tmp_path):
    """camera_angle_x, file paths without extension, transforms_{split}.json files, RGBA images."""
    cams = _cams(4, dist=False)
    c2w = cams.opengl_c2w()
    for split, idx in (("train", [0, 1, 2]), ("test", [3])):
        frames = []
        for i in idx:
            rgba = torch.cat([_images(1, i)[0], torch.full((1, H, W), 0.5)])
            save_image(rgba, tmp_path / split / f"r_{i}.png")
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w[i].tolist()})
        doc = {"camera_angle_x": 2 * math.atan(0.5 * W / 20.0), "frames": frames}
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(doc))
    d = load_transforms(tmp_path, "all")
    assert d.splits == ["train"] * 3 + ["test"]
    assert torch.allclose(d.cameras.K[0], torch.tensor([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]]))
    assert torch.allclose(d.cameras.R, cams.R, atol=1e-6)
    ds = PosedImageDataset(tmp_path, "test", background=1.0)
    it = ds[0]
    src = _images(1, 3)[0]
    expect = (src * 255).round() / 255 * (128 / 255) + (1 - 128 / 255)
    assert torch.allclose(it["image"], expect, atol=1e-6) and "mask" in it


def test_split_sources(tmp_path):
    _dataset(tmp_path, n=5, dist=False)
    js = tmp_path / "ds" / "transforms.json"
    doc = json.loads(js.read_text())
    for f in doc["frames"]:
        f.pop("split")
    js.write_text(json.dumps(doc))
    # held-out every 2nd: 0, 2, 4 are test
    assert load_transforms(js, "test", holdout_every=2).frame_ids == [0, 2, 4]
    assert load_transforms(js, "val", holdout_every=2).frame_ids == [0, 2, 4]
    doc["train_filenames"] = [f["file_path"] for f in doc["frames"][:4]]
    doc["test_filenames"] = [doc["frames"][4]["file_path"]]
    js.write_text(json.dumps(doc))
    assert load_transforms(js, "test").frame_ids == [4]
    doc["test_filenames"] = []
    js.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"frames\[4\].*none of the"):
        load_transforms(js)


def _corrupt(tmp_path, edit):
    _dataset(tmp_path, n=3, dist=False)
    js = tmp_path / "ds" / "transforms.json"
    doc = json.loads(js.read_text())
    edit(doc, tmp_path / "ds")
    js.write_text(json.dumps(doc))
    return js


def _set(frame, key, value):
    def edit(doc, root):
        doc["frames"][frame][key] = value
    return edit


BAD = {
    "missing image": (_set(1, "file_path", "images/nope.png"), "transforms.json [file_path]", r"frames\[1\]"),
    "3x4 matrix": (lambda d, r: d["frames"][2].update(transform_matrix=d["frames"][2]["transform_matrix"][:3]),
                   "[transform_matrix]", r"frames\[2\] \(images/0002.png\).*4x4"),
    "nan": (lambda d, r: d["frames"][0]["transform_matrix"][0].__setitem__(1, float("nan")),
            "[transform_matrix]", "NaN"),
    "not rotation": (lambda d, r: d["frames"][0]["transform_matrix"][0].__setitem__(0, 2.0),
                     "[transform_matrix]", "not a rotation"),
    "escape": (_set(0, "file_path", "../outside.png"), "[file_path]", "escapes the dataset folder"),
    "absolute": (_set(0, "file_path", "/etc/passwd"), "[file_path]", "absolute path"),
    "escape depth": (_set(1, "depth_file_path", "../../d.png"), "[depth_file_path]", "escapes"),
    "wrong size": (lambda d, r: save_image(torch.zeros(3, H, W + 2), r / "images" / "0001.png"),
                   "[w/h]", r"frames\[1\].*26x16, the json says 24x16"),
    "wrong depth size": (lambda d, r: save_image(torch.zeros(1, H + 1, W), r / "depth" / "0002.png"),
                         "[depth_file_path]", "expected 24x16"),
    "missing mask": (_set(0, "mask_path", "masks/none.png"), "[mask_path]", "not found"),
    "no focal": (lambda d, r: [d.pop(k) for k in ("fl_x", "fl_y")], "[fl_x]", "no focal length"),
    "bad focal": (lambda d, r: d.update(fl_x="12"), "[fl_x]", "finite number"),
    "k3": (lambda d, r: d.update(k3=0.1), "[k3]", "not supported"),
    "split value": (_set(0, "split", "training"), "[split]", "train, val or test"),
    "no frames": (lambda d, r: d.update(frames=[]), "[frames]", "empty"),
    "mesh": (lambda d, r: d.update(mesh_path="mesh/none.obj"), "[mesh_path]", "not found"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs(tmp_path, case):
    edit, where, pattern = BAD[case]
    js = _corrupt(tmp_path, edit)
    with pytest.raises(DataError, match=pattern) as e:
        load_transforms(js)
    assert str(js) in str(e.value) and where in str(e.value)


def test_invalid_json_and_missing(tmp_path):
    (tmp_path / "transforms.json").write_text('{"frames": [1,]}')
    with pytest.raises(DataError, match="invalid JSON at line 1"):
        load_transforms(tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_transforms(tmp_path / "nothing")


def test_undistort_moves_points_to_pinhole(tmp_path):
    """A point drawn at its distorted projection lands at its pinhole projection after undistortion."""
    h, w = 48, 64
    R, t = look_at(torch.tensor([[0.0, 0.0, -3.0]]), torch.zeros(1, 3))
    K = torch.tensor([[[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]]])
    cam = Cameras(K=K, R=R, t=t, width=w, height=h, dist=torch.tensor([[0.5, 0.1, 0.01, -0.01]]))
    pt = torch.tensor([[[1.2, 0.9, 0.0]]])
    xy_d, _ = cam.project(pt)
    xy_p, _ = replace(cam, dist=None).project(pt)
    assert (xy_d - xy_p).norm() > 2.0
    grid = cam.pixel_grid()
    blob = torch.exp(-((grid - xy_d[0, 0]) ** 2).sum(-1) / (2 * 1.5**2))[None, None]
    out = undistort_image(blob, cam)[0, 0]
    centroid = (grid * out[..., None]).sum((0, 1)) / out.sum()
    assert (centroid - xy_p[0, 0]).norm() < 0.3


def test_fox_capture(shared_data):
    root = shared_data / "posed_images" / "instant_ngp_fox"
    d = load_transforms(root / "transforms_270x480.json")
    doc = json.loads((root / "transforms_270x480.json").read_text())
    assert len(d) == 50 and (d.width, d.height) == (270, 480)
    assert d.meta["aabb_scale"] == 4
    assert torch.allclose(d.cameras.dist[0], torch.tensor([0.0578421, -0.0805099, -0.000980296, 0.00015575]))
    assert torch.allclose(d.cameras.K[0, 0, 0], torch.tensor(343.88))
    # the folder holds two jsons; the one whose images exist is picked
    assert load_transforms(root).json_path.name == "transforms_270x480.json"
    # reprojected camera centres match the file's camera-to-world translations
    file_c = torch.tensor(np.array([f["transform_matrix"] for f in doc["frames"]]))[:, :3, 3]
    assert torch.allclose(d.cameras.centers.double(), file_c, atol=1e-5)
    # all optical axes pass near one point (the fox), which every camera sees in front of it, in frame
    c = d.cameras.centers.double()
    z = d.cameras.R[:, 2].double()  # OpenCV forward axis in world coordinates
    A = torch.eye(3, dtype=torch.float64) - z[:, :, None] * z[:, None, :]
    p = torch.linalg.solve(A.sum(0), (A @ c[..., None]).sum(0))[:, 0]
    xy, depth = d.cameras.project(p.float()[None, None].expand(50, 1, 3))
    assert (depth > 0).all()
    assert (xy[..., 0] > 0).all() and (xy[..., 0] < 270).all() and (xy[..., 1] > 0).all() and (xy[..., 1] < 480).all()
    ds = PosedImageDataset(root / "transforms_270x480.json", split="test", undistort=True)
    assert len(ds) == 7 and ds[0]["image"].shape == (3, 480, 270) and ds.cameras.dist is None
