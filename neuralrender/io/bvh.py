"""BVH motion capture: a safe parser (errors name the line) and forward kinematics to 3D joints.

Conventions of the format, as kept here:
- joints are listed depth-first; `parents[j] < j`, the root has parent -1; End Sites are kept
  apart (`end_sites`) and are not joints;
- a joint's rotation channels are Euler angles in degrees, composed in the order listed
  (CHANNELS ... Zrotation Yrotation Xrotation -> R_local = Rz @ Ry @ Rx);
- a joint with position channels uses them as its local translation (in place of OFFSET), as
  Blender and most tools do; other joints translate by OFFSET;
- positions are in the file's units and axes (CMU: y up, inches / 0.45 scale), untouched.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuralrender.errors import DataError

_CHANNELS = ("Xposition", "Yposition", "Zposition", "Xrotation", "Yrotation", "Zrotation")
MAX_JOINTS = 1024


@dataclass
class BVHMotion:
    """A parsed BVH file.

    names [J], parents [J] (-1 for roots), offsets float32 [J,3], channels [J] tuples of names,
    motion float32 [T, sum(len(channels))], frame_time seconds, end_sites {joint index: offset [3]}.
    """

    names: list[str]
    parents: list[int]
    offsets: torch.Tensor
    channels: list[tuple[str, ...]]
    motion: torch.Tensor
    frame_time: float
    end_sites: dict[int, torch.Tensor]
    path: str = "<string>"

    @property
    def num_frames(self) -> int:
        return self.motion.shape[0]

    @property
    def num_joints(self) -> int:
        return len(self.names)

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time if self.frame_time > 0 else 0.0

    def bones(self) -> list[tuple[int, int]]:
        """(parent, child) joint index pairs, for drawing skeletons."""
        return [(p, j) for j, p in enumerate(self.parents) if p >= 0]

    def forward_kinematics(self, frames: slice | torch.Tensor | None = None) -> torch.Tensor:
        """World positions of the joints float32 [T,J,3] (see `forward_kinematics`)."""
        m = self.motion if frames is None else self.motion[frames]
        return forward_kinematics(self.parents, self.offsets, self.channels, m)


def load_bvh(path: str | os.PathLike) -> BVHMotion:
    """Read and validate a BVH file. Raises DataError naming the file, line and problem."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "BVH file not found", field="file")
    try:
        text = p.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise DataError(p, f"not a text file: {e}", field="file") from e
    return parse_bvh(text, p)


def parse_bvh(text: str, path: str | os.PathLike = "<string>") -> BVHMotion:
    """Parse BVH text (see the module docstring). `path` is only used in error messages."""
    lines = text.splitlines()
    pos = 0  # index of the next line to read

    def err(lineno: int, msg: str, field: str = "HIERARCHY"):
        return DataError(path, f"line {lineno}: {msg}", field=field)

    def next_tokens():
        nonlocal pos
        while pos < len(lines):
            pos += 1
            toks = lines[pos - 1].split()
            if toks:
                return pos, toks
        raise err(len(lines), "unexpected end of file")

    def floats(lineno, toks, n, field):
        if len(toks) != n:
            raise err(lineno, f"expected {n} numbers, got {len(toks)}", field)
        try:
            vals = [float(t) for t in toks]
        except ValueError as e:
            raise err(lineno, f"not a number: {e}", field) from e
        if not all(math.isfinite(v) for v in vals):
            raise err(lineno, "non-finite number", field)
        return vals

    names, parents, offsets, channels, end_sites = [], [], [], [], {}

    ln, toks = next_tokens()
    if toks[0] != "HIERARCHY":
        raise err(ln, f"file must start with HIERARCHY, found {toks[0]!r}")

    # iterative depth-first parse: stack of joint indices (-2 marks an End Site block)
    stack: list[int] = []
    ln, toks = next_tokens()
    while True:
        kw = toks[0]
        if kw in ("ROOT", "JOINT"):
            if kw == "ROOT" and stack:
                raise err(ln, "ROOT inside another joint")
            if kw == "JOINT" and (not stack or stack[-1] == -2):
                raise err(ln, "JOINT outside a ROOT / inside an End Site")
            if len(toks) < 2:
                raise err(ln, f"{kw} needs a name")
            if len(names) >= MAX_JOINTS:
                raise err(ln, f"more than {MAX_JOINTS} joints")
            name = " ".join(toks[1:])
            if name in names:
                raise err(ln, f"duplicate joint name {name!r}")
            j = len(names)
            names.append(name)
            parents.append(stack[-1] if stack else -1)
            offsets.append(None)
            channels.append(None)
            lb, t = next_tokens()
            if t != ["{"]:
                raise err(lb, f"expected '{{' after {kw} {name}, found {' '.join(t)!r}")
            stack.append(j)
        elif kw == "End" and toks[1:2] == ["Site"]:
            if not stack or stack[-1] < 0:
                raise err(ln, "End Site outside a joint")
            lb, t = next_tokens()
            if t != ["{"]:
                raise err(lb, "expected '{' after End Site")
            lo, t = next_tokens()
            if t[0] != "OFFSET":
                raise err(lo, f"End Site needs an OFFSET, found {t[0]!r}")
            end_sites[stack[-1]] = torch.tensor(floats(lo, t[1:], 3, "OFFSET"), dtype=torch.float32)
            stack.append(-2)
        elif kw == "OFFSET":
            if not stack or stack[-1] < 0 or offsets[stack[-1]] is not None:
                raise err(ln, "OFFSET outside a joint or given twice", "OFFSET")
            offsets[stack[-1]] = floats(ln, toks[1:], 3, "OFFSET")
        elif kw == "CHANNELS":
            if not stack or stack[-1] < 0 or channels[stack[-1]] is not None:
                raise err(ln, "CHANNELS outside a joint or given twice", "CHANNELS")
            try:
                n = int(toks[1])
            except (IndexError, ValueError) as e:
                raise err(ln, "CHANNELS needs a count", "CHANNELS") from e
            names_ch = tuple(toks[2:])
            if n != len(names_ch) or not 0 <= n <= 6:
                raise err(ln, f"CHANNELS count {n} does not match the {len(names_ch)} names given", "CHANNELS")
            bad = [c for c in names_ch if c not in _CHANNELS]
            if bad or len(set(names_ch)) != n:
                raise err(ln, f"bad or repeated channel names {list(names_ch)}; valid: {list(_CHANNELS)}",
                          "CHANNELS")
            channels[stack[-1]] = names_ch
        elif kw == "}":
            if not stack:
                raise err(ln, "unbalanced '}'")
            j = stack.pop()
            if j >= 0:
                if offsets[j] is None:
                    raise err(ln, f"joint {names[j]!r} has no OFFSET", "OFFSET")
                if channels[j] is None:
                    channels[j] = ()
            if not stack:
                ln, toks = next_tokens()
                if toks[0] == "ROOT":
                    continue
                break
        else:
            raise err(ln, f"unexpected token {kw!r}")
        ln, toks = next_tokens()

    if toks[0] != "MOTION":
        raise err(ln, f"expected MOTION after the hierarchy, found {toks[0]!r}", "MOTION")
    ln, toks = next_tokens()
    if toks[0] != "Frames:" or len(toks) != 2 or not toks[1].isdigit():
        raise err(ln, "expected 'Frames: <count>'", "Frames")
    num_frames = int(toks[1])
    ln, toks = next_tokens()
    if toks[:2] != ["Frame", "Time:"] or len(toks) != 3:
        raise err(ln, "expected 'Frame Time: <seconds>'", "Frame Time")
    frame_time = floats(ln, toks[2:], 1, "Frame Time")[0]
    if frame_time <= 0:
        raise err(ln, f"frame time must be positive, got {frame_time}", "Frame Time")

    num_ch = sum(len(c) for c in channels)
    rows, linenos = [], []
    for i in range(pos, len(lines)):
        toks = lines[i].split()
        if not toks:
            continue
        if len(rows) == num_frames:
            raise err(i + 1, f"more motion lines than 'Frames: {num_frames}'", "MOTION")
        if len(toks) != num_ch:
            raise err(i + 1, f"expected {num_ch} numbers, got {len(toks)}", "MOTION")
        rows.append(toks)
        linenos.append(i + 1)
    if len(rows) != num_frames:
        raise err(len(lines), f"'Frames: {num_frames}' but {len(rows)} motion lines", "MOTION")
    try:
        values = np.array(rows, dtype=np.float64).reshape(num_frames, num_ch)
        bad = np.nonzero(~np.isfinite(values).all(1))[0]
    except ValueError:  # find the offending line for the message
        values, bad = None, []
        for toks, ln in zip(rows, linenos):
            floats(ln, toks, num_ch, "MOTION")
    if len(bad):
        raise err(linenos[int(bad[0])], "non-finite number", "MOTION")

    return BVHMotion(
        names=names,
        parents=parents,
        offsets=torch.tensor(offsets, dtype=torch.float32).reshape(-1, 3),
        channels=[tuple(c) for c in channels],
        motion=torch.from_numpy(values.astype(np.float32)).reshape(num_frames, num_ch),
        frame_time=frame_time,
        end_sites=end_sites,
        path=str(path),
    )


def _axis_rotation(axis: str, deg: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [T,3,3] about x/y/z by angles in degrees [T]."""
    a = torch.deg2rad(deg)
    c, s = torch.cos(a), torch.sin(a)
    o, z = torch.ones_like(a), torch.zeros_like(a)
    if axis == "X":
        rows = [o, z, z, z, c, -s, z, s, c]
    elif axis == "Y":
        rows = [c, z, s, z, o, z, -s, z, c]
    else:
        rows = [c, -s, z, s, c, z, z, z, o]
    return torch.stack(rows, -1).reshape(*a.shape, 3, 3)


def forward_kinematics(parents: list[int], offsets: torch.Tensor, channels: list[tuple[str, ...]],
                       motion: torch.Tensor) -> torch.Tensor:
    """Joint world positions [T,J,3] from motion [T,C] (device/dtype follow `motion`).

    offsets [J,3]; channels per joint as in the file; see the module docstring for the conventions.
    """
    t = motion.shape[0]
    offsets = offsets.to(motion)
    eye = torch.eye(3, dtype=motion.dtype, device=motion.device).expand(t, 3, 3)
    glob_r: list[torch.Tensor] = []
    glob_p: list[torch.Tensor] = []
    col = 0
    for j, p in enumerate(parents):
        trans = offsets[j].expand(t, 3).clone()
        rot = eye
        has_pos = False
        for name in channels[j]:
            v = motion[:, col]
            col += 1
            if name.endswith("position"):
                if not has_pos:
                    trans = torch.zeros_like(trans)
                    has_pos = True
                trans[:, "XYZ".index(name[0])] = v
            else:
                rot = rot @ _axis_rotation(name[0], v)
        if p < 0:
            glob_r.append(rot)
            glob_p.append(trans)
        else:
            glob_p.append(glob_p[p] + (glob_r[p] @ trans[..., None])[..., 0])
            glob_r.append(glob_r[p] @ rot)
    return torch.stack(glob_p, 1)
