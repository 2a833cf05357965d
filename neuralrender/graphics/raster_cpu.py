"""Built-in rasterizer backend: visibility pass (face id + depth) on CPU.

Two implementations of the same arithmetic (see _raster_cpu.cpp for the method):
- a C++ kernel compiled on first use with torch.utils.cpp_extension (cached under ~/.cache/neuralrender,
  or $NR_CACHE_DIR), multithreaded over (batch, 16-row bands);
- a vectorized pure-torch fallback, used when no compiler is available, when NR_NO_CPP=1, or for tensors on
  another device (it runs wherever the input lives). Both produce identical face ids.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

_SRC = Path(__file__).with_name("_raster_cpu.cpp")
_lock = threading.Lock()
_ext = None
_ext_error: str | None = None


def cache_dir() -> Path:
    base = os.environ.get("NR_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "neuralrender"


def build_extension(src: Path, name: str, extra_cflags=()):
    """Compile (or load from cache) a one-file C++ torch extension; the build dir is keyed by source hash."""
    from torch.utils.cpp_extension import load

    digest = hashlib.sha1(src.read_bytes() + torch.__version__.encode()).hexdigest()[:12]
    build = cache_dir() / "torch_ext" / f"{name}_{digest}"
    build.mkdir(parents=True, exist_ok=True)
    return load(name=f"{name}_{digest}", sources=[str(src)], build_directory=str(build), verbose=False,
                extra_cflags=["-O3", "-ffp-contract=off", *extra_cflags])


def get_extension():
    """The compiled kernel module, or None (NR_NO_CPP=1, or the build failed: the reason is warned once)."""
    global _ext, _ext_error
    if os.environ.get("NR_NO_CPP") == "1":
        return None
    if _ext is not None or _ext_error is not None:
        return _ext
    with _lock:
        if _ext is None and _ext_error is None:
            try:
                _ext = build_extension(_SRC, "nr_raster_cpu")
            except Exception as e:  # no compiler, missing headers, ...
                _ext_error = f"{type(e).__name__}: {e}"
                warnings.warn(f"neuralrender: C++ rasterizer unavailable, using the pure-torch fallback ({_ext_error[:300]})",
                              RuntimeWarning, stacklevel=2)
    return _ext


def rasterize_visibility(verts_clip: Tensor, faces: Tensor, height: int, width: int, cull_backfaces: bool = False,
                         use_cpp: bool | None = None) -> tuple[Tensor, Tensor]:
    """verts_clip [B,V,4] float, faces [F,3] int64 -> (face_id [B,H,W] int64 (-1 background),
    depth [B,H,W] float32, bary [B,H,W,3] float32 from the kernel or None from the torch path).

    No gradients. ``use_cpp=None`` picks the kernel for CPU tensors when it is available.
    """
    verts_clip = verts_clip.detach()
    if use_cpp is None:
        use_cpp = verts_clip.device.type == "cpu"
    ext = get_extension() if use_cpp and verts_clip.device.type == "cpu" else None
    if ext is not None:
        fid, depth, bary = ext.rasterize_cpu(verts_clip.float().contiguous(), faces.long().contiguous(), int(height),
                                             int(width), bool(cull_backfaces), torch.get_num_threads())
        return fid, depth, bary
    return (*rasterize_visibility_torch(verts_clip, faces, height, width, cull_backfaces), None)


# --------------------------------------------------------------------------------------------- torch fallback
def _setup(v: Tensor, z: Tensor, H: int, W: int, cull: bool):
    """Per-face setup in float64, same formulas and operation order as setup_face() in the C++ kernel.

    v [F,3,3] (x, y, w per vertex), z [F,3] -> dict of per-face tensors and a validity mask [F].
    """
    def cross(a, b):
        return torch.stack([a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1], a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2],
                            a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]], -1)

    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    valid = ~((w <= 0).all(1) | (x < -w).all(1) | (x > w).all(1) | (y < -w).all(1) | (y > w).all(1)
              | (z < -w).all(1) | (z > w).all(1))
    n0, n1, n2 = cross(v[:, 1], v[:, 2]), cross(v[:, 2], v[:, 0]), cross(v[:, 0], v[:, 1])
    det = (v[:, 0, 0] * n0[:, 0] + v[:, 0, 1] * n0[:, 1]) + v[:, 0, 2] * n0[:, 2]
    valid &= (det != 0) & torch.isfinite(det)
    if cull:
        valid &= ~(det > 0)
    sg = torch.where(det > 0, 1.0, -1.0).to(v.dtype)
    absdet = det * sg
    n = torch.stack([n0, n1, n2], 1) * sg[:, None, None]  # [F,3 (i), 3 (coef)]
    q = ((n[:, 0] * z[:, 0:1] + n[:, 1] * z[:, 1:2]) + n[:, 2] * z[:, 2:3]) / absdet[:, None]
    all_pos = (w > 0).all(1)
    ws = torch.where(all_pos[:, None], w, torch.ones_like(w))
    px, py = x / ws, y / ws
    fx0 = torch.ceil((px.amin(1) + 1.0) * 0.5 * W - 0.5 - 1e-4)
    fx1 = torch.floor((px.amax(1) + 1.0) * 0.5 * W - 0.5 + 1e-4)
    fy0 = torch.ceil((py.amin(1) + 1.0) * 0.5 * H - 0.5 - 1e-4)
    fy1 = torch.floor((py.amax(1) + 1.0) * 0.5 * H - 0.5 + 1e-4)
    big = float(max(H, W) + 2)
    x0 = torch.where(all_pos, fx0.clamp(0, big), torch.zeros_like(fx0)).long()
    x1 = torch.where(all_pos, fx1.clamp(-1, W - 1), torch.full_like(fx1, W - 1)).long()
    y0 = torch.where(all_pos, fy0.clamp(0, big), torch.zeros_like(fy0)).long()
    y1 = torch.where(all_pos, fy1.clamp(-1, H - 1), torch.full_like(fy1, H - 1)).long()
    valid &= (x0 <= x1) & (y0 <= y1)
    return n, q, absdet, x0, x1, y0, y1, valid


def rasterize_visibility_torch(verts_clip: Tensor, faces: Tensor, height: int, width: int,
                               cull_backfaces: bool = False, max_candidates: int = 1 << 20) -> tuple[Tensor, Tensor]:
    """Vectorized pure-torch visibility pass; same result as the C++ kernel. Runs on the input's device."""
    H, W = int(height), int(width)
    dev = verts_clip.device
    B = verts_clip.shape[0]
    F = faces.shape[0]
    face_id = torch.full((B, H, W), -1, dtype=torch.long, device=dev)
    depth = torch.zeros((B, H, W), dtype=torch.float32, device=dev)
    if F == 0:
        return face_id, depth
    faces = faces.long().to(dev)
    vd = verts_clip.detach().float().double()
    for b in range(B):
        tri = vd[b][faces]  # [F,3,4]
        v = tri[..., [0, 1, 3]]
        n, q, absdet, x0, x1, y0, y1, valid = _setup(v, tri[..., 2], H, W, cull_backfaces)
        fidx = torch.nonzero(valid).squeeze(1)
        counts = (x1[fidx] - x0[fidx] + 1) * (y1[fidx] - y0[fidx] + 1)
        pix_all, dep_all, face_all = [], [], []
        csum = torch.cumsum(counts, 0)
        start = 0
        while start < fidx.numel():
            base = int(csum[start - 1]) if start > 0 else 0
            stop = int(torch.searchsorted(csum, torch.tensor(base + max_candidates, device=dev), right=True))
            stop = max(stop, start + 1)
            sel = fidx[start:stop]
            cnt = counts[start:stop]
            rep = torch.repeat_interleave(torch.arange(sel.numel(), device=dev), cnt)
            offs = torch.cumsum(cnt, 0) - cnt
            local = torch.arange(rep.numel(), device=dev) - offs[rep]
            f = sel[rep]
            wb = x1[f] - x0[f] + 1
            j = x0[f] + local % wb
            i = y0[f] + torch.div(local, wb, rounding_mode="floor")
            pxv = (2.0 * j.double() + 1.0) / float(W) - 1.0
            pyv = (2.0 * i.double() + 1.0) / float(H) - 1.0
            nf = n[f]
            c = (nf[..., 0] * pxv[:, None] + nf[..., 1] * pyv[:, None]) + nf[..., 2]  # [N,3]
            s = (c[:, 0] + c[:, 1]) + c[:, 2]
            qf = q[f]
            zn = (qf[:, 0] * pxv + qf[:, 1] * pyv) + qf[:, 2]
            ok = (c >= 0).all(1) & (s > 0) & (zn >= -1.0) & (zn <= 1.0)
            pix_all.append((i * W + j)[ok])
            dep_all.append((absdet[f] / s)[ok])
            face_all.append(f[ok])
            start = stop
        if not pix_all:
            continue
        pix, dep, fc = torch.cat(pix_all), torch.cat(dep_all), torch.cat(face_all)
        if pix.numel() == 0:
            continue
        zbest = torch.full((H * W,), float("inf"), dtype=torch.float64, device=dev)
        zbest.scatter_reduce_(0, pix, dep, reduce="amin")
        win = dep == zbest[pix]
        fbest = torch.full((H * W,), F, dtype=torch.long, device=dev)
        fbest.scatter_reduce_(0, pix[win], fc[win], reduce="amin")
        hit = fbest < F
        face_id[b].view(-1)[hit] = fbest[hit]
        depth[b].view(-1)[hit] = zbest[hit].float()
    return face_id, depth
