"""Scene specs: the YAML files in scenes/ parsed and validated into dataclasses.

A spec names objects (a procedural primitive or a mesh file, a texture, a material, a transform and a
semantic label), lights, camera rigs and the image size. Every key is checked: an unknown or malformed
key raises ConfigError naming the file and the key path (e.g. ``objects[1].material.shininess``).
See docs/data.md for the format and scenes/default.yaml for an example.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from neuralrender.errors import ConfigError
from neuralrender.paths import REPO_DIR

SCENES_DIR = REPO_DIR / "scenes"
PRIMITIVES = ("uv_sphere", "icosphere", "box", "plane", "cylinder", "torus")
RIG_TYPES = ("orbit", "hemisphere", "shell", "spiral")
SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ObjectSpec:
    """One object. Exactly one of `primitive` ({"type": ..., args}) or `mesh` (a file path, "shared:" ok).

    texture: "skimage:<name>" (a scikit-image sample photo), an image path, or None (then `color`).
    color: RGB for untextured faces; None keeps a mesh file's vertex colours (else 0.8 gray).
    normalize: fit a mesh file into a sphere of this radius (centred) before the transform.
    on_floor: after the transform, lift the object so its lowest point sits at y = floor_y.
    rotate_deg: XYZ Euler angles (applied as Rz @ Ry @ Rx), then scale, then translate.
    """

    name: str
    label: int
    primitive: dict | None = None
    mesh: str | None = None
    texture: str | None = None
    color: tuple[float, float, float] | None = None
    specular: float = 0.3
    shininess: float = 32.0
    normalize: float | None = None
    on_floor: bool = False
    floor_y: float = 0.0
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotate_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0


@dataclass
class LightSpec:
    """kind "directional" (direction: from the scene towards the light) or "point" (position)."""

    kind: str
    vector: tuple[float, float, float]
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    attenuation: tuple[float, float, float] = (1.0, 0.0, 0.0)


@dataclass
class RigSpec:
    """A set of cameras looking at the scene target.

    orbit: n cameras evenly in azimuth at one radius and elevation.
    hemisphere: n cameras spread evenly (Fibonacci) over the elevation band at one radius.
    shell: n cameras at seeded random radius in [r0, r1] and direction in the elevation band, aimed at
      the target moved by a seeded random offset of up to `jitter`.
    spiral: n cameras on H1's spiral (turns, elevation band, radius) — the usual held-out test path.
    """

    type: str
    n: int
    radius: tuple[float, float]
    elevation_deg: tuple[float, float]
    split: str = "train"
    turns: float = 1.0
    azimuth_deg: float = 0.0
    jitter: float = 0.0


@dataclass
class SceneSpec:
    name: str
    objects: list[ObjectSpec]
    lights: list[LightSpec]
    rigs: list[RigSpec]
    width: int = 256
    height: int = 256
    fov_deg: float = 40.0
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ambient: float = 0.25
    shadows: bool = True
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    description: str = ""
    source: str = "<dict>"
    raw: dict = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return sum(r.n for r in self.rigs)


# ---------------------------------------------------------------------------------------------


def list_scenes() -> dict[str, str]:
    """Built-in scene names -> one-line descriptions (the YAML files in scenes/)."""
    out = {}
    for p in sorted(SCENES_DIR.glob("*.yaml")):
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError:
            d = {}
        out[p.stem] = str(d.get("description", "")).strip() if isinstance(d, dict) else ""
    return out


def load_scene(name_or_path: str | os.PathLike) -> SceneSpec:
    """A built-in scene by name ("default", "spot", ...) or a YAML file path -> SceneSpec."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if not (p.suffix in (".yaml", ".yml") or p.is_file()):
        p = SCENES_DIR / f"{s}.yaml"
        if not p.is_file():
            raise ConfigError(f"unknown scene {s!r}; built-in scenes: {', '.join(list_scenes())} "
                              f"(or pass a .yaml path)")
    if not p.is_file():
        raise ConfigError(f"{p}: scene file not found")
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML: {e}") from e
    return parse_scene(d, source=str(p), default_name=p.stem)


class _Reader:
    """Typed access to one mapping of the spec, with errors naming file and key path."""

    def __init__(self, d, source: str, where: str):
        self.source, self.where = source, where
        if not isinstance(d, dict):
            self.fail("", f"expected a mapping, got {type(d).__name__}")
        self.d = d

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, msg: str):
        raise ConfigError(f"{self.source} [{self.path(key) if key else self.where or 'top level'}]: {msg}")

    def check_keys(self, allowed):
        for k in self.d:
            if k not in allowed:
                self.fail(k, f"unknown key; valid keys: {', '.join(sorted(allowed))}")

    def num(self, key, default=None, lo=None, integer=False):
        v = self.d.get(key, default)
        if v is None:
            self.fail(key, "required")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            self.fail(key, f"expected {'an integer' if integer else 'a number'}, got {v!r}")
        if lo is not None and v < lo:
            self.fail(key, f"must be >= {lo}, got {v}")
        return int(v) if integer else float(v)

    def vec(self, key, default=None, n=3):
        return self.vec_value(key, self.d.get(key, default), n)

    def vec_value(self, key, v, n=3):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and n == 3 and key in ("color", "background"):
            v = [v] * 3
        if (not isinstance(v, (list, tuple)) or len(v) != n
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            self.fail(key, f"expected a list of {n} numbers, got {v!r}")
        return tuple(float(x) for x in v)

    def range2(self, key, default=None):
        v = self.d.get(key, default)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v), float(v)
        r = self.vec_value(key, v, n=2)
        if r[0] > r[1]:
            self.fail(key, f"range must be [low, high], got {list(r)}")
        return r

    def text(self, key, default=None, choices=None):
        v = self.d.get(key, default)
        if v is None:
            return None
        if not isinstance(v, str):
            self.fail(key, f"expected a string, got {v!r}")
        if choices and v not in choices:
            self.fail(key, f"{v!r} is not one of {', '.join(choices)}")
        return v

    def flag(self, key, default):
        v = self.d.get(key, default)
        if not isinstance(v, bool):
            self.fail(key, f"expected true or false, got {v!r}")
        return v


def parse_scene(d, source: str = "<dict>", default_name: str = "scene") -> SceneSpec:
    """Validate a spec mapping (as loaded from YAML) -> SceneSpec."""
    top = _Reader(d, source, "")
    top.check_keys({"name", "description", "seed", "image_size", "background", "objects", "lights", "cameras"})
    size = top.d.get("image_size", 256)
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    w, h = top.vec_value("image_size", size, n=2)
    if w < 8 or h < 8 or w != int(w) or h != int(h) or w > 4096 or h > 4096:
        top.fail("image_size", f"expected whole pixels in 8..4096, got {size!r}")

    objs = top.d.get("objects")
    if not isinstance(objs, list) or not objs:
        top.fail("objects", "expected a non-empty list of objects")
    objects = [_parse_object(o, source, i) for i, o in enumerate(objs)]
    names = [o.name for o in objects]
    if len(set(names)) != len(names):
        top.fail("objects", f"object names must be unique, got {names}")
    labels = [o.label for o in objects]
    if any(not 1 <= lab <= 255 for lab in labels):
        top.fail("objects", f"labels must be in 1..255 (0 is background), got {labels}")

    lr = _Reader(top.d.get("lights", {}), source, "lights")
    lr.check_keys({"ambient", "shadows", "directional", "point"})
    lights = []
    for kind, key in (("directional", "direction"), ("point", "position")):
        lst = lr.d.get(kind, [])
        if not isinstance(lst, list):
            lr.fail(kind, "expected a list")
        for i, ld in enumerate(lst):
            r = _Reader(ld, source, f"lights.{kind}[{i}]")
            r.check_keys({key, "color", "attenuation"})
            lights.append(LightSpec(kind, r.vec(key), r.vec("color", 1.0),
                                    r.vec("attenuation", (1.0, 0.0, 0.0))))

    cr = _Reader(top.d.get("cameras"), source, "cameras")
    cr.check_keys({"fov_deg", "target", "rigs"})
    rigs_d = cr.d.get("rigs")
    if not isinstance(rigs_d, list) or not rigs_d:
        cr.fail("rigs", "expected a non-empty list of camera rigs")
    rigs = []
    for i, rd in enumerate(rigs_d):
        r = _Reader(rd, source, f"cameras.rigs[{i}]")
        r.check_keys({"type", "n", "radius", "elevation_deg", "split", "turns", "azimuth_deg", "jitter"})
        typ = r.text("type", None, RIG_TYPES)
        if typ is None:
            r.fail("type", f"required: one of {', '.join(RIG_TYPES)}")
        rigs.append(RigSpec(
            type=typ,
            n=r.num("n", None, lo=1, integer=True),
            radius=r.range2("radius"),
            elevation_deg=r.range2("elevation_deg", 20.0),
            split=r.text("split", "test" if typ == "spiral" else "train", SPLIT_NAMES),
            turns=r.num("turns", 1.0),
            azimuth_deg=r.num("azimuth_deg", 0.0),
            jitter=r.num("jitter", 0.0, lo=0.0),
        ))
        if rigs[-1].radius[0] <= 0:
            r.fail("radius", "must be positive")

    fov = cr.num("fov_deg", 40.0)
    if not 1.0 <= fov <= 170.0:
        cr.fail("fov_deg", f"must be in 1..170 degrees, got {fov}")
    return SceneSpec(
        name=top.text("name", default_name),
        description=top.text("description", "") or "",
        objects=objects,
        lights=lights,
        rigs=rigs,
        width=int(w),
        height=int(h),
        fov_deg=fov,
        target=cr.vec("target", (0.0, 0.0, 0.0)),
        ambient=lr.num("ambient", 0.25, lo=0.0),
        shadows=lr.flag("shadows", True),
        background=top.vec("background", (1.0, 1.0, 1.0)),
        seed=top.num("seed", 0, integer=True),
        source=source,
        raw=d,
    )


def _parse_object(o, source: str, i: int) -> ObjectSpec:
    r = _Reader(o, source, f"objects[{i}]")
    r.check_keys({"name", "label", "primitive", "mesh", "texture", "color", "material", "normalize",
                  "on_floor", "floor_y", "translate", "rotate_deg", "scale"})
    prim, mesh = r.d.get("primitive"), r.text("mesh")
    if (prim is None) == (mesh is None):
        r.fail("primitive", "give exactly one of 'primitive' or 'mesh'")
    if prim is not None:
        pr = _Reader(prim, source, f"objects[{i}].primitive")
        pr.text("type", None, PRIMITIVES)
        if "type" not in prim:
            pr.fail("type", f"required: one of {', '.join(PRIMITIVES)}")
        for k, v in prim.items():
            if k != "type" and not isinstance(v, (int, float, str, list)):
                pr.fail(k, f"unsupported value {v!r}")
        prim = dict(prim)
    mat = _Reader(r.d.get("material", {}), source, f"objects[{i}].material")
    mat.check_keys({"specular", "shininess"})
    norm = r.d.get("normalize")
    return ObjectSpec(
        name=r.text("name", f"object{i}"),
        label=r.num("label", i + 1, integer=True),
        primitive=prim,
        mesh=mesh,
        texture=r.text("texture"),
        color=r.vec("color") if "color" in r.d else None,
        specular=mat.num("specular", 0.3, lo=0.0),
        shininess=mat.num("shininess", 32.0, lo=1.0),
        normalize=None if norm is None else r.num("normalize", lo=1e-6),
        on_floor=r.flag("on_floor", False),
        floor_y=r.num("floor_y", 0.0),
        translate=r.vec("translate", (0.0, 0.0, 0.0)),
        rotate_deg=r.vec("rotate_deg", (0.0, 0.0, 0.0)),
        scale=r.num("scale", 1.0, lo=1e-9),
    )
