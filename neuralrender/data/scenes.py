"""Scenes: load a spec (scenes/*.yaml), assemble its mesh and cameras, render a posed dataset.

Public API (wired into `neuralrender scenes list|build|show`):
    list_scenes() -> {name: description}
    load_scene(name_or_path) -> SceneSpec
    build_scene(spec_or_name, out_dir, size=None, batch=8, overwrite=False, progress=None, threads=1) -> Path
    show_dataset(root, out_dir, max_images=16, fps=12) -> (contact_sheet.png, orbit.mp4)
    preview_scene(spec_or_name, path, tile=125) -> Path   (2x2 PNG: two views, labels, depth)

A built dataset is a transforms.json folder (see neuralrender.io.posed): images/*.png (lit, with
view-dependent Blinn-Phong highlights and optional shadow maps), depth/*.png (16-bit, mm),
labels/*.png (per-object semantic ids, 0 = background), masks/*.png, mesh/scene.obj (+ textures),
scene.yaml (the spec used); transforms.json also carries "bounds", the box of the scene's geometry.
The same seed gives the same bytes.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import yaml

from neuralrender.data.scene_spec import SceneSpec, list_scenes, load_scene, parse_scene
from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics import meshes as M
from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at, orbit, spiral
from neuralrender.paths import resolve_data_path

__all__ = ["list_scenes", "load_scene", "parse_scene", "build_scene", "show_dataset", "scene_mesh",
           "scene_cameras", "scene_box", "render_scene", "SceneRender", "load_texture_source", "preview_scene", "cli",
           "torch_threads"]


# ---------------------------------------------------------------------------------------------
# assets


def load_texture_source(src: str, source: str = "<spec>") -> torch.Tensor:
    """A texture [3,H,W] in [0,1] from "skimage:<name>" (photos bundled with scikit-image, e.g.
    astronaut, coffee, chelsea, brick, rocket) or an image path ("shared:" prefix allowed)."""
    if src.startswith("skimage:"):
        import numpy as np
        import skimage.data

        name = src[len("skimage:"):]
        fn = getattr(skimage.data, name, None)
        if fn is None or not callable(fn):
            raise DataError(source, f"scikit-image has no sample image {name!r}", field="texture")
        arr = np.asarray(fn())
        x = torch.from_numpy(arr.astype(np.float32) / 255.0)
        x = x[..., None] if x.ndim == 2 else x
        return x.permute(2, 0, 1)[:3].expand(3, -1, -1).contiguous()
    from neuralrender.io.meshes import load_texture

    return load_texture(resolve_data_path(src))[:3]


def _rotation(deg: tuple[float, float, float]) -> torch.Tensor:
    """Rz @ Ry @ Rx for XYZ Euler angles in degrees -> [3,3]."""
    rx, ry, rz = (math.radians(a) for a in deg)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=torch.float64)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    Rz = torch.tensor([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    return Rz @ Ry @ Rx


def _object_mesh(o, source: str) -> M.Mesh:
    if o.primitive is not None:
        args = {k: v for k, v in o.primitive.items() if k != "type"}
        fn = getattr(M, o.primitive["type"])
        try:
            mesh = fn(**args)
        except TypeError as e:
            raise DataError(source, f"object {o.name!r}: bad primitive arguments {args}: {e}",
                            field="primitive") from e
    else:
        from neuralrender.io.meshes import load_mesh

        mesh = load_mesh(resolve_data_path(o.mesh))
    if o.normalize is not None:
        mesh = M.normalize_mesh(mesh, radius=o.normalize)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = _rotation(o.rotate_deg) * o.scale
    T[:3, 3] = torch.tensor(o.translate, dtype=torch.float64)
    mesh = mesh.transform(T.float())
    if o.on_floor:
        lift = o.floor_y - float(mesh.verts[:, 1].min())
        mesh = replace(mesh, verts=mesh.verts + torch.tensor([0.0, lift, 0.0]))
    if o.texture is not None:
        if mesh.uvs is None:
            raise DataError(source, f"object {o.name!r} has a texture but its mesh has no UVs", field="texture")
        mesh = replace(mesh, textures=[load_texture_source(o.texture, source)],
                       face_material=torch.zeros(mesh.num_faces, dtype=torch.long))
    elif o.mesh is None:
        mesh = replace(mesh, textures=[], face_material=None)
    n = mesh.num_faces
    colors = mesh.colors
    if o.color is not None or colors is None:
        rgb = o.color if o.color is not None else (0.8, 0.8, 0.8)
        colors = torch.tensor(rgb, dtype=torch.float32).expand(mesh.num_verts, 3).contiguous()
    return replace(mesh, labels=torch.full((n,), o.label, dtype=torch.long), colors=colors)


@dataclass
class SceneMesh:
    """The assembled scene: mesh (labels = object labels), per-face specular [F] and shininess [F]."""

    mesh: M.Mesh
    specular: torch.Tensor
    shininess: torch.Tensor


def scene_mesh(spec: SceneSpec) -> SceneMesh:
    """Build every object of the spec and join them (object labels kept per face)."""
    parts = [_object_mesh(o, spec.source) for o in spec.objects]
    mesh = M.concat_meshes(parts)
    spec_f = torch.cat([torch.full((p.num_faces,), o.specular) for p, o in zip(parts, spec.objects)])
    shin_f = torch.cat([torch.full((p.num_faces,), o.shininess) for p, o in zip(parts, spec.objects)])
    return SceneMesh(mesh, spec_f, shin_f)


def scene_box(mesh: M.Mesh) -> list[float]:
    """The axis-aligned box of a scene's geometry, [xmin, ymin, zmin, xmax, ymax, zmax] in world units
    (written into a built dataset's transforms.json as "bounds": what view-synthesis methods put their grid in)."""
    v = mesh.verts.reshape(-1, 3).double()
    return [round(float(x), 6) for x in torch.cat([v.min(0).values, v.max(0).values])]


# ---------------------------------------------------------------------------------------------
# cameras


def _directions(az_deg: torch.Tensor, el_deg: torch.Tensor) -> torch.Tensor:
    """Unit vectors [N,3] at azimuth (about +y, 0 = +z) and elevation (above the xz plane)."""
    az, el = torch.deg2rad(az_deg), torch.deg2rad(el_deg)
    return torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)], -1)


def _rig_cameras(spec: SceneSpec, k: int) -> Cameras:
    r = spec.rigs[k]
    W, H, fov = spec.width, spec.height, spec.fov_deg
    target = torch.tensor(spec.target, dtype=torch.float32)
    g = torch.Generator().manual_seed(spec.seed * 1000 + k)
    if r.type == "orbit":
        return orbit(r.n, radius=r.radius[0], elevation_deg=r.elevation_deg[0], target=spec.target,
                     fov_deg=fov, width=W, height=H, start_azimuth_deg=r.azimuth_deg)
    if r.type == "spiral":
        return spiral(r.n, radius=r.radius[0], elevation_range_deg=r.elevation_deg, turns=r.turns,
                      target=spec.target, fov_deg=fov, width=W, height=H,
                      radius_wobble=0.5 * (r.radius[1] - r.radius[0]))
    lo, hi = (math.sin(math.radians(e)) for e in r.elevation_deg)
    if r.type == "hemisphere":  # Fibonacci lattice: equal-area rows, golden-angle azimuths
        s = (torch.arange(r.n, dtype=torch.float64) + 0.5) / r.n
        el = torch.rad2deg(torch.asin(lo + (hi - lo) * s))
        az = r.azimuth_deg + torch.arange(r.n, dtype=torch.float64) * (180.0 * (3.0 - math.sqrt(5.0)))
        radius = torch.full((r.n,), r.radius[0], dtype=torch.float64)
        aim = target.expand(r.n, 3)
    else:  # shell: uniform in the band's area and in radius^3 (uniform in volume)
        u = torch.rand(r.n, 4, generator=g, dtype=torch.float64)
        el = torch.rad2deg(torch.asin(lo + (hi - lo) * u[:, 0]))
        az = r.azimuth_deg + 360.0 * u[:, 1]
        r0, r1 = r.radius
        radius = (r0**3 + (r1**3 - r0**3) * u[:, 2]) ** (1.0 / 3.0)
        jit = (torch.rand(r.n, 3, generator=g, dtype=torch.float64) * 2 - 1) * r.jitter
        aim = target + jit.float()
    eye = target + (radius[:, None] * _directions(az, el)).float()
    R, t = look_at(eye, aim)
    K = intrinsics_from_fov(fov, W, H).expand(r.n, 3, 3)
    return Cameras(K=K, R=R, t=t, width=W, height=H)


def scene_cameras(spec: SceneSpec) -> tuple[Cameras, list[str]]:
    """All cameras of the spec's rigs in order -> (Cameras [N], split name per camera)."""
    cams = [_rig_cameras(spec, k) for k in range(len(spec.rigs))]
    splits = [r.split for r in spec.rigs for _ in range(r.n)]
    return Cameras(K=torch.cat([c.K for c in cams]), R=torch.cat([c.R for c in cams]),
                   t=torch.cat([c.t for c in cams]), width=spec.width, height=spec.height), splits


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass
class SceneRender:
    """images [B,3,H,W] in [0,1], depth [B,1,H,W] (camera z, 0 = background), labels [B,1,H,W]
    int64 (0 = background), mask [B,1,H,W] float; normals [B,3,H,W] (world, 0 = background) when asked for."""

    images: torch.Tensor
    depth: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    normals: torch.Tensor | None = None


def _lights(spec: SceneSpec):
    from neuralrender.graphics.shading import DirectionalLights, PointLights

    out = []
    for lt in spec.lights:
        v = torch.tensor([lt.vector], dtype=torch.float32)[None]
        c = torch.tensor([lt.color], dtype=torch.float32)[None]
        out.append(DirectionalLights(v, c) if lt.kind == "directional" else PointLights(v, c, lt.attenuation))
    return out


def _shadow_cameras(spec: SceneSpec, mesh: M.Mesh, res: int = 1024) -> list[Cameras]:
    """One pinhole camera per light that sees the whole scene (far away along directional lights)."""
    centre = 0.5 * (mesh.verts.min(0).values + mesh.verts.max(0).values)
    rad = float((mesh.verts - centre).norm(dim=-1).max())
    cams = []
    for lt in spec.lights:
        v = torch.tensor(lt.vector, dtype=torch.float32)
        if lt.kind == "directional":
            eye = centre + v / v.norm() * (rad * 20.0)
        else:
            eye = v
        d = float((eye - centre).norm())
        if d <= rad * 1.05:
            raise DataError(spec.source, f"point light at {lt.vector} is inside the scene; shadows need it "
                                         f"outside the bounding sphere (or set lights.shadows: false)",
                            field="lights")
        fov = 2 * math.degrees(math.asin(min(1.0, rad / d))) * 1.02
        R, t = look_at(eye[None], centre[None])
        cams.append(Cameras(K=intrinsics_from_fov(fov, res, res), R=R, t=t, width=res, height=res))
    return cams


def render_scene(spec: SceneSpec, smesh: SceneMesh, cameras: Cameras, batch: int = 8,
                 progress=None, texture_filter: str = "bilinear", normals: bool = False) -> SceneRender:
    """Render cameras [N] of the scene in batches through the graphics core: graphics.gbuffer's
    render_gbuffer (textures by material, two-sided normals) and shade (Blinn-Phong with the spec's
    lights, per-object specular strength and shininess, shadow maps when enabled). normals: also return the
    G-buffer's world normals (masked)."""
    from neuralrender.graphics.gbuffer import render_gbuffer, shade
    from neuralrender.graphics.shading import shadow_lookup, shadow_map

    mesh = smesh.mesh
    lights = _lights(spec)
    shadow_cams = _shadow_cameras(spec, mesh) if (spec.shadows and lights) else []
    smaps = [shadow_map(c, mesh.verts, mesh.faces) for c in shadow_cams]
    outs = []
    for s in range(0, cameras.batch_size, batch):
        cams = cameras[s : s + batch]
        g = render_gbuffer(cams, mesh, channels=("mask", "face_id", "depth", "positions", "normals", "labels",
                                                 "albedo"), two_sided=True, texture_filter=texture_filter)
        m = g["mask"][:, 0] > 0
        fid = g["face_id"][:, 0].clamp_min(0)
        ks = smesh.specular[fid].unsqueeze(-1)  # channel-last [B,H,W,1], as blinn_phong takes it
        shin = smesh.shininess[fid].unsqueeze(-1)
        shadow = None
        if smaps:  # visibility per light [B,L,H,W], looked up at the covered pixels only
            shadow = torch.ones(m.shape[0], len(smaps), *m.shape[1:])
            pts = g["positions"].permute(0, 2, 3, 1)[m][None]
            for k, (sm, c) in enumerate(zip(smaps, shadow_cams)):
                shadow[:, k][m] = shadow_lookup(sm, c, pts, pcf=0)[0]  # 1024² map: hard edges suffice
        if lights:
            img = shade(g, cams, lights, model="blinn_phong", ambient=spec.ambient, specular=ks,
                        shininess=shin, shadow=shadow, background=spec.background)
        else:
            img = shade(g, cams, model="albedo", background=spec.background) * spec.ambient
        labels = g["labels"].clamp_min(0)
        outs.append(SceneRender(img.clamp(0, 1), g["depth"] * g["mask"], labels, g["mask"],
                                g["normals"] * g["mask"] if normals else None))
        if progress is not None:
            progress(min(s + batch, cameras.batch_size))
    fields = ("images", "depth", "labels", "mask") + (("normals",) if normals else ())
    return SceneRender(*(torch.cat([getattr(o, f) for o in outs]) for f in fields))


# ---------------------------------------------------------------------------------------------
# build + show


class torch_threads:
    """Context manager: torch intra-op threads = n inside (None: unchanged), restored on exit.

    Scene rendering is many small tensor ops; on a shared 2-core machine one thread does the same
    work in a quarter of the CPU time and gives the same bytes (see docs/data.md, "Measured")."""

    def __init__(self, n: int | None):
        self.n, self.old = n, None

    def __enter__(self):
        if self.n is not None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            torch.set_num_threads(self.old)
        return False


def build_scene(spec: SceneSpec | str | os.PathLike, out_dir: str | os.PathLike, size: int | None = None,
                batch: int = 8, overwrite: bool = False, progress: bool | None = None,
                threads: int | None = 1) -> Path:
    """Render the scene's posed dataset into out_dir; returns the transforms.json path.

    spec: a SceneSpec, a built-in name or a YAML path. size: override the image size (square).
    overwrite: replace an existing out_dir (otherwise a non-empty out_dir is an error).
    threads: torch threads while building (default 1, fastest for these small ops; None = unchanged).
    """
    with torch_threads(threads):
        return _build_scene(spec, out_dir, size, batch, overwrite, progress)


def _build_scene(spec, out_dir, size, batch, overwrite, progress) -> Path:
    from neuralrender.io.meshes import save_mesh
    from neuralrender.io.posed import save_posed_dataset

    if not isinstance(spec, SceneSpec):
        spec = load_scene(spec)
    if size is not None:
        spec = replace(spec, width=int(size), height=int(size))
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise NeuralRenderError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out)
    smesh = scene_mesh(spec)
    cams, splits = scene_cameras(spec)
    with _progress(progress, cams.batch_size, f"rendering {spec.name}") as tick:
        r = render_scene(spec, smesh, cams, batch=batch, progress=tick)
    save_mesh(smesh.mesh, out / "mesh" / "scene.obj")
    raw = dict(spec.raw)
    raw["image_size"] = [spec.width, spec.height]
    (out / "scene.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    names = {"0": "background", **{str(o.label): o.name for o in spec.objects}}
    return save_posed_dataset(out, cams, r.images, splits=splits, depth=r.depth, masks=r.mask, labels=r.labels,
                              mesh_path="mesh/scene.obj",
                              extra={"scene": spec.name, "seed": spec.seed, "label_names": names,
                                     "bounds": scene_box(smesh.mesh)})


class _progress:
    """Context manager yielding tick(done) that drives a rich progress bar (quiet when not a TTY)."""

    def __init__(self, enabled: bool | None, total: int, what: str):
        import sys

        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total, self.what = total, what

    def __enter__(self):
        if not self.enabled:
            return lambda done: None
        from rich.progress import Progress

        self.p = Progress(transient=True)
        self.p.start()
        task = self.p.add_task(self.what, total=self.total)
        return lambda done: self.p.update(task, completed=done)

    def __exit__(self, *exc):
        if self.enabled:
            self.p.stop()
        return False


def show_dataset(root: str | os.PathLike, out_dir: str | os.PathLike, max_images: int = 16,
                 fps: float = 12.0, orbit_frames: int = 48, threads: int | None = 1) -> tuple[Path, Path]:
    """Write out_dir/contact_sheet.png (up to max_images views with their label maps when present)
    and out_dir/orbit.mp4: for a built scene (scene.yaml beside the json) a fresh orbit render of
    orbit_frames views; for a capture, its images ordered by camera azimuth around the scene centre."""
    with torch_threads(threads):
        return _show_dataset(root, out_dir, max_images, fps, orbit_frames)


def _show_dataset(root, out_dir, max_images, fps, orbit_frames) -> tuple[Path, Path]:
    from neuralrender.data.posed import PosedImageDataset
    from neuralrender.io.images import save_grid
    from neuralrender.io.video import write_video

    ds = PosedImageDataset(root, split="all")
    out = Path(out_dir)
    n = len(ds)
    pick = torch.linspace(0, n - 1, min(n, max_images)).round().long().unique().tolist()
    items = [ds[i] for i in pick]
    tiles = [it["image"] for it in items]
    if all("labels" in it for it in items):
        from neuralrender.graphics.draw import colorize_labels

        lab = torch.stack([it["labels"] for it in items])
        tiles += list(colorize_labels(torch.where(lab == 0, -1, lab), num_classes=int(lab.max()) + 1,
                                      background=(1.0, 1.0, 1.0)))
    nrow = min(8, len(pick))
    sheet = save_grid(torch.stack(tiles), out / "contact_sheet.png", nrow=nrow)

    spec_file = ds.data.root / "scene.yaml"
    if spec_file.is_file():
        spec = load_scene(spec_file)
        smesh = scene_mesh(spec)
        cams = ds.cameras
        c = cams.centers
        target = torch.tensor(spec.target)
        radius = float((c - target).norm(dim=-1).mean())
        el = float(torch.rad2deg(torch.asin(((c - target)[:, 1] / (c - target).norm(dim=-1)).clamp(-1, 1))).median())
        ocams = orbit(orbit_frames, radius=radius, elevation_deg=el, target=spec.target, fov_deg=spec.fov_deg,
                      width=spec.width, height=spec.height)
        frames = render_scene(spec, smesh, ocams).images
    else:
        c = ds.cameras.centers
        fwd = ds.cameras.R[:, 2]
        A = torch.eye(3) - fwd[:, :, None] * fwd[:, None, :]
        centre = torch.linalg.lstsq(A.sum(0), (A @ c[..., None]).sum(0)).solution[:, 0]
        up = -ds.cameras.R[:, 1].mean(0)
        up = up / up.norm()
        d = c - centre
        e1 = torch.linalg.cross(up, d.mean(0) if d.mean(0).norm() > 1e-6 else torch.tensor([1.0, 0, 0]))
        e1 = e1 / e1.norm().clamp_min(1e-9)
        e2 = torch.linalg.cross(up, e1)
        az = torch.atan2(d @ e1, d @ e2)
        frames = torch.stack([ds[i]["image"] for i in az.argsort().tolist()])
    video = write_video(frames, out / "orbit.mp4", fps=fps)
    return sheet, video


def preview_scene(spec: SceneSpec | str | os.PathLike, path: str | os.PathLike, tile: int = 125) -> Path:
    """A 2x2 PNG of the scene without building it: two training views, the label map and the depth of
    the first (tile x tile each, 2-pixel white padding: 256x256 for the default tile)."""
    from neuralrender.graphics.draw import colorize_labels
    from neuralrender.io.images import save_grid

    if not isinstance(spec, SceneSpec):
        spec = load_scene(spec)
    spec = replace(spec, width=tile, height=tile)
    cams, _ = scene_cameras(spec)
    n0 = spec.rigs[0].n
    with torch_threads(1):
        r = render_scene(spec, scene_mesh(spec), cams[[0, n0 // 3 if n0 > 1 else 0]])
    lab = r.labels[:1]
    labels = colorize_labels(torch.where(lab == 0, -1, lab), num_classes=max(o.label for o in spec.objects) + 1,
                             background=(1.0, 1.0, 1.0))
    d = r.depth[:1]
    hit = d > 0
    lo, hi = d[hit].min(), d[hit].max()
    depth = torch.where(hit, 1 - (d - lo) / (hi - lo).clamp_min(1e-6) * 0.8, torch.ones_like(d)).expand(1, 3, -1, -1)
    return save_grid(torch.cat([r.images, labels[:, :3], depth]), path, nrow=2)


def cli(argv: list[str]) -> int:
    """`neuralrender scenes list | build NAME [--out DIR] | show DATASET [--out DIR] | preview NAME`."""
    import argparse

    p = argparse.ArgumentParser(prog="neuralrender scenes", description="built-in scenes and posed datasets")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the built-in scenes")
    b = sub.add_parser("build", help="render a scene into a posed dataset (transforms.json)")
    b.add_argument("scene", help="a built-in name (see `list`) or a scene .yaml")
    b.add_argument("--out", help="output folder (default data/scenes/NAME)")
    b.add_argument("--size", type=int, help="square image size (default: the spec's)")
    b.add_argument("--batch", type=int, default=8, help="views rendered at once")
    b.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("show", help="contact sheet PNG + orbit mp4 of a posed dataset")
    s.add_argument("dataset", help="a dataset folder or transforms json ('shared:' allowed)")
    s.add_argument("--out", help="output folder (default ./show/<dataset folder name>)")
    s.add_argument("--max-images", type=int, default=16)
    s.add_argument("--fps", type=float, default=12.0)
    v = sub.add_parser("preview", help="a 2x2 PNG of a scene (two views, labels, depth) without building")
    v.add_argument("scene")
    v.add_argument("--out", help="PNG path (default scene_NAME.png)")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for name, desc in list_scenes().items():
            print(f"{name:12s} {desc}")
        return 0
    if args.cmd == "build":
        spec = load_scene(args.scene)
        out = Path(args.out) if args.out else Path("data") / "scenes" / spec.name
        js = build_scene(spec, out, size=args.size, batch=args.batch, overwrite=args.overwrite,
                         progress=False if args.quiet else None)
        print(js)
        return 0
    if args.cmd == "show":
        root = resolve_data_path(args.dataset)
        folder = root if root.is_dir() else root.parent
        out = Path(args.out) if args.out else Path("show") / folder.name  # never inside the dataset
        for f in show_dataset(root, out, max_images=args.max_images, fps=args.fps):
            print(f)
        return 0
    spec = load_scene(args.scene)
    print(preview_scene(spec, args.out or f"scene_{spec.name}.png"))
    return 0
