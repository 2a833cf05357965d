import dataclasses
import filecmp
import json

import pytest
import torch

from neuralrender.data.posed import PosedImageDataset
from neuralrender.data.scenes import (
    build_scene,
    list_scenes,
    load_scene,
    parse_scene,
    preview_scene,
    render_scene,
    scene_cameras,
    scene_mesh,
    show_dataset,
)
from neuralrender.errors import ConfigError
from neuralrender.io.posed import load_transforms
from neuralrender.io.video import video_info


def _tiny(name="default", size=32, views=(3, 2, 2, 1, 2)):
    """The named spec at a small size with few views per rig (same rigs, same seed)."""
    spec = load_scene(name)
    rigs = [dataclasses.replace(r, n=n) for r, n in zip(spec.rigs, views)]
    return dataclasses.replace(spec, rigs=rigs, width=size, height=size)


def test_list_and_load():
    names = list_scenes()
    assert {"default", "spot", "fuze", "duck"} <= set(names) and names["default"]
    spec = load_scene("default")
    assert spec.name == "default" and (spec.width, spec.height) == (256, 256)
    assert [o.label for o in spec.objects] == [1, 2, 3, 4]
    # needs no external files: procedural geometry, textures bundled with scikit-image
    assert all(o.mesh is None and (o.texture or "skimage:").startswith("skimage:") for o in spec.objects)
    with pytest.raises(ConfigError, match="unknown scene 'nope'"):
        load_scene("nope")


def _spec_dict():
    return {
        "objects": [{"name": "ball", "primitive": {"type": "icosphere", "subdivisions": 1}}],
        "cameras": {"rigs": [{"type": "orbit", "n": 2, "radius": 3.0}]},
    }


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda d: d.update(colour=1), "[colour]"),
        (lambda d: d["objects"][0]["primitive"].update(type="teapot"), "[objects[0].primitive.type]"),
        (lambda d: d["objects"][0].update(label=0), "[objects]"),
        (lambda d: d["objects"][0].update(mesh="a.obj"), "[objects[0].primitive]"),
        (lambda d: d["objects"][0].update(material={"shininess": "high"}), "[objects[0].material.shininess]"),
        (lambda d: d["cameras"]["rigs"][0].update(type="dolly"), "[cameras.rigs[0].type]"),
        (lambda d: d["cameras"]["rigs"][0].update(radius=[4, 3]), "[cameras.rigs[0].radius]"),
        (lambda d: d["cameras"]["rigs"][0].update(split="holdout"), "[cameras.rigs[0].split]"),
        (lambda d: d.update(image_size=[64]), "[image_size]"),
        (lambda d: d.update(lights={"point": [{"position": [1, 2]}]}), "[lights.point[0].position]"),
    ],
)
def test_spec_errors_name_key(edit, key):
    d = _spec_dict()
    edit(d)
    with pytest.raises(ConfigError) as e:
        parse_scene(d, source="my.yaml")
    assert str(e.value).startswith("my.yaml") and key in str(e.value)


def test_rigs_deterministic_and_aimed():
    spec = _tiny()
    cams, splits = scene_cameras(spec)
    again, _ = scene_cameras(spec)
    assert torch.equal(cams.R, again.R) and torch.equal(cams.t, again.t)
    assert splits == ["train"] * 7 + ["val"] + ["test"] * 2
    # every camera sees the target near the image centre (shell cameras jitter their aim point)
    xy, z = cams.project(torch.tensor(spec.target)[None, None].expand(len(cams), 1, 3))
    assert (z > 0).all()
    assert ((xy[:, 0] - 16).abs() < 3).all()
    other, _ = scene_cameras(dataclasses.replace(spec, seed=1))
    assert not torch.equal(other.R, cams.R)  # the shell rig follows the seed


def test_build_deterministic_roundtrip_and_rerender(tmp_path):
    spec = _tiny()
    a = build_scene(spec, tmp_path / "a", progress=False)
    build_scene(spec, tmp_path / "b", progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 40
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", [str(f) for f in files], shallow=False)
    assert not mismatch and not errors

    # round trip: the cameras re-loaded from transforms.json are the ones that rendered the images
    cams, splits = scene_cameras(spec)
    data = load_transforms(a.parent)
    assert data.splits == splits and data.mesh_path.is_file()
    for f in ("K", "R", "t"):
        assert torch.allclose(getattr(data.cameras, f), getattr(cams, f), atol=1e-6, rtol=0)
    meta = json.loads(a.read_text())
    assert meta["label_names"]["2"] == "globe"

    # re-render from the loaded cameras and the saved spec: same images (the end-to-end convention check)
    ds = PosedImageDataset(a.parent, split="all")
    saved = torch.stack([ds[i]["image"] for i in range(len(ds))])
    again = render_scene(load_scene(a.parent / "scene.yaml"), scene_mesh(spec), ds.cameras).images
    diff = (again - saved).abs()
    assert diff.mean() < 1e-3 and (diff > 1 / 255 + 1e-6).float().mean() < 1e-3

    # the saved mesh (io.meshes round trip) gives the same textured surface
    from neuralrender.graphics.gbuffer import render_gbuffer
    from neuralrender.io.meshes import load_mesh

    alb_saved = render_gbuffer(ds.cameras[:2], load_mesh(data.mesh_path), channels=("albedo",))["albedo"]
    alb_spec = render_gbuffer(ds.cameras[:2], scene_mesh(spec).mesh, channels=("albedo",))["albedo"]
    assert (alb_saved - alb_spec).abs().max() < 1e-3

    # depth + labels agree with the geometry: floor pixels unproject to y = 0
    it = ds[0]
    floor = it["labels"][0] == 1
    assert floor.sum() > 20 and (it["labels"][0][it["mask"][0] == 0] == 0).all()
    grid = ds.cameras.pixel_grid()
    pts = ds.cameras[0].unproject(grid[floor][None], it["depth"][0][floor][None])
    assert pts[0, :, 1].abs().max() < 0.02


def test_specular_is_view_dependent_light():
    spec = _tiny(size=24)
    cams, _ = scene_cameras(spec)
    cams = cams[:2]
    sm = scene_mesh(spec)
    lit = render_scene(spec, sm, cams).images
    matte = render_scene(spec, dataclasses.replace(sm, specular=torch.zeros_like(sm.specular)), cams).images
    d = lit - matte
    assert d.min() >= -1e-6 and d.max() > 0.05


def test_default_needs_no_shared_data(tmp_path, monkeypatch):
    monkeypatch.setenv("NR_SHARED_DATA", str(tmp_path / "absent"))
    spec = _tiny(size=16, views=(1, 1, 1, 1, 1))
    js = build_scene(spec, tmp_path / "d", progress=False)
    assert len(load_transforms(js)) == 5
    with pytest.raises(Exception, match="not empty"):
        build_scene(spec, tmp_path / "d", progress=False)
    build_scene(spec, tmp_path / "d", progress=False, overwrite=True)


def test_show_built_dataset(tmp_path):
    spec = _tiny(size=24, views=(2, 1, 1, 1, 1))
    js = build_scene(spec, tmp_path / "ds", progress=False)
    sheet, video = show_dataset(js.parent, tmp_path / "show", orbit_frames=6)
    assert sheet.is_file() and video_info(video).num_frames == 6
    from neuralrender.io.images import read_image

    pic = read_image(preview_scene(spec, tmp_path / "p.png", tile=20))
    assert pic.shape == (3, 2 * 20 + 6, 2 * 20 + 6) and pic.std() > 0.05


@pytest.mark.parametrize("name", ["spot", "fuze", "duck"])
def test_real_mesh_scenes_render(shared_data, name):
    spec = _tiny(name, size=32)
    sm = scene_mesh(spec)
    cams, _ = scene_cameras(spec)
    r = render_scene(spec, sm, cams[:2])
    obj = r.labels == 2
    assert obj.float().mean(dim=(1, 2, 3)).min() > 0.05  # the mesh fills part of every view
    assert (r.labels == 1).any()  # and stands on the floor


def test_show_capture(shared_data, tmp_path):
    root = shared_data / "posed_images" / "instant_ngp_fox" / "transforms_270x480.json"
    sheet, video = show_dataset(root, tmp_path, max_images=4)
    info = video_info(video)
    assert info.num_frames == 50 and (info.width, info.height) == (270, 480)


@pytest.mark.slow
def test_default_scene_full_build_time(tmp_path):
    import time

    t = time.time()
    build_scene("default", tmp_path / "full", progress=False)
    assert time.time() - t < 60


def test_cli_list_build_show(tmp_path, capsys, monkeypatch):
    import yaml

    from neuralrender.data.scenes import cli

    assert cli(["list"]) == 0
    assert "default" in capsys.readouterr().out
    d = yaml.safe_load(open(load_scene("default").source))
    d["cameras"]["rigs"] = [{"type": "orbit", "n": 3, "radius": 4.0}, {"type": "spiral", "n": 2, "radius": 4.2}]
    d["name"] = "mini"
    (tmp_path / "mini.yaml").write_text(yaml.safe_dump(d))
    monkeypatch.chdir(tmp_path)
    assert cli(["build", str(tmp_path / "mini.yaml"), "--size", "16", "--quiet"]) == 0
    js = tmp_path / "data" / "scenes" / "mini" / "transforms.json"
    assert capsys.readouterr().out.strip() == str(js.relative_to(tmp_path))
    assert load_transforms(js, "test").frame_ids == [3, 4]
    assert cli(["show", str(js.parent), "--max-images", "2"]) == 0
    assert (tmp_path / "show" / "mini" / "orbit.mp4").is_file()
    with pytest.raises(Exception, match="not empty"):
        cli(["build", str(tmp_path / "mini.yaml"), "--size", "16", "--quiet"])
