"""pix2pix and pix2pixhd: smoke (shapes, finite losses, checkpoint round trip through the Trainer), resume,
learning (beats the train frames' mean image on held-out frames of labels -> scene), bad inputs."""

import pytest
import torch

from neuralrender.data.conditions import CondSequence, CondVideoDataset, label_condition
from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.io.checkpoint import load_checkpoint
from neuralrender.train.trainer import Trainer, build_configs, load_run

# labels -> scene at 32x32, 40 frames of the camera path (32 train, 8 held out)
SCENE = {"task": "scene", "size": 32, "frames": 40, "eval_clip": 4, "d_layers": 2, "d_width": 8, "quiet": True,
         "eval_every": 0, "log_every": 1, "batch_size": 4, "threads": 1}
SMALL = {"pix2pix": {"width": 8, "depth": 4}, "pix2pixhd": {"width": 4, "n_blocks_global": 1, "n_blocks_local": 1,
                                                            "global_steps": 2}}


def _trainer(name, out, steps, **kw):
    _, t, m = build_configs(name, {}, {**SCENE, **SMALL[name], "out": str(out), "steps": steps, **kw})
    return Trainer(name, t, m)


@pytest.mark.parametrize("name", ["pix2pix", "pix2pixhd"])
def test_smoke_and_checkpoint_round_trip(name, tmp_path):
    tr = _trainer(name, tmp_path / "run", 4, eval_batches=1)
    summary = tr.run()
    assert summary["steps"] == 4
    for v in summary["train"].values():
        assert torch.isfinite(torch.tensor(v))
    ev = summary["eval"]
    assert {"psnr", "ssim", "warp_err", "psnr_mean_image"} <= set(ev)
    names = {p.rsplit("_", 1)[-1] for p in summary["renders"]}
    assert {"video.mp4", "frames.png"} <= names
    if name == "pix2pixhd":
        assert "styles.png" in names
    batch = {k: (v.unsqueeze(0) if torch.is_tensor(v) else v) for k, v in tr.data.val[0].items()}
    tr.model.eval()
    out = tr.model.generate_clip(batch["cond"], batch["inst"]) if name == "pix2pixhd" else \
        tr.model.generate_clip(batch["cond"])
    assert out.shape == (1, 4, 3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1
    model, _, _, _ = load_run(tmp_path / "run", device="cpu")  # a fresh model from the checkpoint
    again = model.generate_clip(batch["cond"], batch["inst"]) if name == "pix2pixhd" else model.generate_clip(batch["cond"])
    assert torch.equal(out, again)


@pytest.mark.parametrize("name", ["pix2pix", "pix2pixhd"])
def test_resume_is_bit_identical(name, tmp_path):
    _trainer(name, tmp_path / "full", 4, ckpt_every=2, eval_batches=1).run()
    _trainer(name, tmp_path / "part", 2, ckpt_every=2, eval_batches=1).run()
    _trainer(name, tmp_path / "part", 4, ckpt_every=2, eval_batches=1, resume=True).run()
    a, _ = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors")
    b, mb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.safetensors")
    assert mb["step"] == 4 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", ["pix2pix", "pix2pixhd"])
def test_learns_labels_to_scene(name, tmp_path):
    """Held-out frames (the last 20% of the camera path): after 60 steps PSNR beats the untrained generator
    (same seed, same data) by 2 dB."""
    kw = {"width": 16} if name == "pix2pix" else {"width": 8, "global_steps": 20}
    tr = _trainer(name, tmp_path / "learn", 60, lr=1e-3, eval_batches=0, **kw)
    before = tr.evaluate()["psnr"]
    ev = tr.run()["eval"]
    assert ev["psnr"] >= before + 2.0, (before, ev)


def _seq(n=10, c=2, hw=(8, 8), target_hw=None, source="clip.mp4"):
    th = target_hw or hw
    return dict(source=source, cond=torch.zeros(n, c, *hw), target=torch.zeros(n, 3, *th), flow=torch.zeros(n, 2, *th),
                flow_mask=torch.zeros(n, 1, *th), instances=torch.zeros(n, 1, *th, dtype=torch.long))


def test_bad_inputs_name_file_and_frame():
    with pytest.raises(DataError, match=r"clip\.mp4.*cond is \(8, 8\).*target is \(16, 16\)"):
        CondSequence(**{**_seq(), "cond": torch.zeros(10, 2, 8, 8), "target": torch.zeros(10, 3, 16, 16),
                        "flow": torch.zeros(10, 2, 16, 16), "flow_mask": torch.zeros(10, 1, 16, 16),
                        "instances": torch.zeros(10, 1, 16, 16, dtype=torch.long)})
    with pytest.raises(DataError, match=r"clip\.mp4.*cond has 7 frames but the target video has 10"):
        CondSequence(**{**_seq(), "cond": torch.zeros(7, 2, 8, 8)})
    labels = torch.zeros(5, 1, 8, 8, dtype=torch.long)
    labels[3, 0, 2, 2] = 9
    with pytest.raises(DataError, match=r"scene\.yaml.*frame 3: label 9 is outside \[0, 4\]"):
        label_condition(labels, 5, source="scene.yaml")
    seq = CondSequence(**_seq(n=10))
    with pytest.raises(DataError, match=r"clip\.mp4.*val part has 2 frames.*temporal window of 4"):
        CondVideoDataset([seq], "val", clip_len=4)
    nan = _seq()
    nan["cond"][6, 0, 1, 1] = float("nan")
    with pytest.raises(DataError, match="frame 6: condition holds NaN"):
        CondSequence(**nan)


def test_label_condition_is_onehot_plus_boundaries():
    labels = torch.zeros(1, 1, 6, 6, dtype=torch.long)
    labels[..., 3:] = 2
    c = label_condition(labels, 3)
    assert c.shape == (1, 4, 6, 6)
    assert torch.equal(c[0, :3].argmax(0), labels[0, 0]) and c[0, :3].sum(0).eq(1).all()
    assert c[0, 3, :, 2:4].eq(1).all() and c[0, 3, :, :2].eq(0).all()


def test_edit_scene_spec_moves_and_duplicates():
    from neuralrender.data.conditions import edit_scene_spec
    from neuralrender.data.scenes import load_scene

    spec = load_scene("default")
    globe = next(o for o in spec.objects if o.name == "globe")
    moved, label = edit_scene_spec(spec, "move", "globe", (1.0, 0.0, -0.5))
    assert label == globe.label and len(moved.objects) == len(spec.objects)
    new = next(o for o in moved.objects if o.name == "globe")
    assert new.translate == pytest.approx((globe.translate[0] + 1.0, globe.translate[1], globe.translate[2] - 0.5))
    dup, _ = edit_scene_spec(spec, "duplicate", "globe", (1.0, 0.0, 0.0))
    assert [o.name for o in dup.objects] == [o.name for o in spec.objects] + ["globe_copy"]
    assert dup.objects[-1].label == globe.label
    with pytest.raises(DataError, match=r"default\.yaml.*no object 'teapot'"):
        edit_scene_spec(spec, "move", "teapot", (0, 0, 0))


def test_random_layout_renders_turn_keeps_the_layout(monkeypatch):
    """The segmenter's training renders: `turn` only adds a random yaw per object (not the floor) to the same
    random layout (session 4's renders are turn=False, layouts=6)."""
    from types import SimpleNamespace

    from neuralrender.data import conditions
    from neuralrender.data.scenes import load_scene

    specs = []

    def fake_render(s, cams):
        specs.append(s)
        return SimpleNamespace(images=torch.zeros(len(cams), 3, 2, 2), labels=torch.zeros(len(cams), 1, 2, 2))

    monkeypatch.setattr(conditions, "render_scene_labels", fake_render)
    spec = load_scene("default")
    ims, _ = conditions.random_layout_renders(spec, list(range(4)), layouts=2, turn=False)
    conditions.random_layout_renders(spec, list(range(4)), layouts=2, turn=True)
    assert ims.shape[0] == 4 and len(specs) == 4
    for plain, turned in zip(specs[:2], specs[2:]):
        assert [(o.name, o.translate) for o in plain.objects] == [(o.name, o.translate) for o in turned.objects]
        for o, t in zip(plain.objects, turned.objects):
            assert (o.rotate_deg == t.rotate_deg) == (o.name == "floor")
    assert len(specs[1].objects) == len(spec.objects) + 1  # every other layout duplicates an object


def test_segmenter_and_mask_iou():
    """The edit check's segmenter learns a toy two-class image set (squares of one texture on another);
    mask_iou is 1 for identical masks and 0 for disjoint ones."""
    from neuralrender.methods._cond2d import fit_segmenter, mask_iou

    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(16, 1, 32, 32, dtype=torch.long)
    for i in range(16):
        y, x = torch.randint(0, 20, (2,), generator=g).tolist()
        labels[i, 0, y:y + 12, x:x + 12] = 1
    noise = torch.rand(16, 3, 32, 32, generator=g) * 0.3
    images = torch.where(labels.bool(), torch.tensor([0.8, 0.3, 0.2])[:, None, None], torch.tensor([0.4, 0.5, 0.6])[:, None, None]) + noise
    seg = fit_segmenter(images[:12], labels[:12], 2, steps=60)
    assert mask_iou(seg(images[12:]), labels[12:], 1) > 0.9
    assert mask_iou(labels, labels, 1) == 1.0 and mask_iou(labels, 1 - labels, 1) == 0.0


def test_scene_gbuffer_condition_appends_normals_and_inverse_depth():
    """'scene-gbuffer' = the labels condition + world normals (unit, 0 on background) + inverse depth (1/z)."""
    from neuralrender.data.conditions import GBUFFER_EXTRA, build_task
    from neuralrender.methods._cond2d import cond_to_rgb

    (lab,), info = build_task("scene", size=24, frames=3)
    (gb,), ginfo = build_task("scene-gbuffer", size=24, frames=3)
    assert not info["gbuffer"] and ginfo["gbuffer"]
    k = info["num_classes"]
    assert gb.cond.shape[1] == lab.cond.shape[1] + GBUFFER_EXTRA == k + 1 + GBUFFER_EXTRA
    assert torch.equal(gb.cond[:, :k + 1], lab.cond) and torch.equal(gb.target, lab.target)
    fg = gb.instances[:, 0] > 0
    normals, inv_depth = gb.cond[:, k + 1:k + 4], gb.cond[:, -1]
    assert torch.allclose(normals.norm(dim=1)[fg], torch.ones(()), atol=1e-3)
    assert bool((inv_depth[fg] > 0).all()) and float(normals.abs().amax(1)[~fg].max()) == 0
    assert torch.equal(cond_to_rgb(gb.cond, "scene-gbuffer"), cond_to_rgb(lab.cond, "scene"))


def test_pix2pixhd_pixel_coords():
    """The coordinate channels pix2pixhd appends to its generator input (`coords`): x along W, y along H."""
    from neuralrender.nn.generators import pixel_coords

    c = pixel_coords(torch.zeros(2, 5, 3, 4))
    assert c.shape == (2, 2, 3, 4)
    assert torch.equal(c[0, 0, 1], torch.linspace(-1, 1, 4)) and torch.equal(c[1, 1, :, 2], torch.linspace(-1, 1, 3))
    f = pixel_coords(torch.zeros(1, 1, 8, 8), octaves=2)  # + sin, cos(pi x), sin, cos(pi y), then 2 pi
    assert f.shape == (1, 10, 8, 8) and torch.equal(f[:, :2], pixel_coords(torch.zeros(1, 1, 8, 8)))
    assert torch.allclose(f[0, 2:4], torch.sin(torch.pi * f[0, :2])) and torch.allclose(f[0, 8:], torch.cos(2 * torch.pi * f[0, :2]))


def test_pix2pixhd_run_saved_before_up_and_coords_loads_as_it_was_trained(tmp_path, load_as_old_run):
    """A run whose config.yaml predates `up` / `coords` loads with the paper's transposed convs and no coordinates."""
    _trainer("pix2pixhd", tmp_path / "run", 1, up="transpose", coords=False, eval_batches=1).run()
    model = load_as_old_run(tmp_path / "run", "up", "coords")
    assert model.cfg.up == "transpose" and model.cfg.coords is False


def test_layouts_append_random_layouts_from_training_cameras_only(monkeypatch):
    """`layouts` (scene tasks): N random layouts, each from every other training camera, appended to the train
    frames with the same condition channels; held-out clips and the mean image unchanged; 0 = the old data."""
    from neuralrender.data import conditions
    from neuralrender.methods import _cond2d
    from neuralrender.methods.pix2pix import Pix2PixConfig

    seen = {}
    real = conditions.layout_sequences

    def spy(spec, cams, *args, **kw):
        seen["cams"], seen["args"] = cams, args
        return real(spec, cams, *args, **kw)

    monkeypatch.setattr(_cond2d, "layout_sequences", spy)
    cfg = Pix2PixConfig(task="scene-gbuffer", size=24, frames=10, eval_clip=2)
    plain = _cond2d.build_cond_data(cfg, train_clip=1)
    more = _cond2d.build_cond_data(Pix2PixConfig(**{**cfg.__dict__, "layouts": 2}), train_clip=1, seed=1)
    assert isinstance(plain.train, conditions.CondVideoDataset) and len(plain.train) == 8
    assert len(more.train) == 8 + 2 * 4 and len(more.val) == len(plain.val)
    assert torch.equal(more.info["mean_image"], plain.info["mean_image"])
    info = _cond2d._sequences("scene-gbuffer", 24, 10)[1]
    assert torch.equal(seen["cams"].t, info["cameras"][:8].t)  # the training cameras, never a held-out one
    assert seen["args"][2] == conditions.LAYOUT_SEED + 1  # seeded apart from the segmenter (run seed)
    item = more.train[len(more.train) - 1]
    assert item["cond"].shape == plain.train[0]["cond"].shape and item["image"].shape == (1, 3, 24, 24)
    assert not torch.equal(item["image"], plain.train[7]["image"])
    clips = _cond2d.build_cond_data(Pix2PixConfig(**{**cfg.__dict__, "layouts": 2}), train_clip=3, seed=1)
    assert len(clips.train) == 6 + 2 * 2 and clips.train[9]["flow"].shape == (3, 2, 24, 24)  # vid2vid: clips
    with pytest.raises(NeuralRenderError, match="layouts=2 needs a scene task"):
        _cond2d.build_cond_data(Pix2PixConfig(task="body", layouts=2), train_clip=1)


def test_benchmark_edit_mode_scores_saved_runs(tmp_path, monkeypatch):
    """benchmarks/cond2d.py edit: loads saved scene runs and scores both edits with one segmenter (a tiny one here)."""
    import functools
    import importlib.util
    import json
    from argparse import Namespace
    from pathlib import Path

    from neuralrender.data import conditions

    _trainer("pix2pix", tmp_path / "run", 2, eval_batches=1).run()
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cond2d.py"
    spec = importlib.util.spec_from_file_location("bench_cond2d", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setattr(conditions, "random_layout_renders", functools.partial(conditions.random_layout_renders,
                                                                               layouts=2))
    bench.edit_runs(Namespace(runs=[str(tmp_path / "run")], out=str(tmp_path / "edit"), seed=0, seg_steps=3))
    res = json.loads((tmp_path / "edit" / "edit.json").read_text())
    assert res["task"] == "scene" and res["segmenter_frames"] == 32 + 2 * 16
    for edit in ("move", "duplicate"):
        assert 0 <= res[edit][f"{tmp_path.name}/run"] <= 1 and 0 <= res[edit]["real"] <= 1
        assert (tmp_path / "edit" / f"edit_{edit}.png").is_file()


def test_pix2pixhd_canvas_option(tmp_path):
    """canvas: a ScreenTexture appended to the generator input; 0 (default) adds no parameters (old checkpoints
    load); C > 0 adds C input channels, its parameters are trained in the 'g' phase and get gradients, and the run
    round-trips through load_run."""
    off = _trainer("pix2pixhd", tmp_path / "off", 1)
    assert off.model.canvas is None and not any("canvas" in k for k in off.model.state_dict())
    tr = _trainer("pix2pixhd", tmp_path / "run", 2, canvas=3, feat_channels=0, eval_batches=1)
    g_params = tr.model.parameters_for("g")
    canvas = list(tr.model.canvas.parameters())
    assert all(any(p is q for q in g_params) for p in canvas)
    assert tr.model.generator.front[1].in_channels == tr.data.info["cond_channels"] + 2 + 3  # cond, x, y, canvas
    item = tr.data.train[0]
    loss, _ = tr.model.loss("g", {k: v[None] for k, v in item.items() if torch.is_tensor(v)}, 10)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in canvas)
    tr.run()
    cond = tr.data.val[0]["cond"][None]
    tr.model.eval()
    model, _, _, _ = load_run(tmp_path / "run", device="cpu")
    assert model.cfg.canvas == 3 and torch.equal(model.generate_clip(cond), tr.model.generate_clip(cond))
    with pytest.raises(NeuralRenderError, match="'canvas'"):  # a negative channel count names the key
        _trainer("pix2pixhd", tmp_path / "neg", 1, canvas=-1)
