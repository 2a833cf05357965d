"""nvdiffrast visibility backend (CUDA only; package ``diffrp-nvdiffrast``, extra ``gpu``).

nvdiffrast's clip space matches ours: NDC y = -1 is row 0 of its output buffer, pixel centres at
(2j+1)/W - 1, depth test on z/w with frustum clipping -w <= z <= w. Only face ids are taken from it;
barycentrics are recomputed in torch by raster.py.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neuralrender.errors import MissingDependencyError

_contexts: dict = {}


def _dr():
    try:
        import nvdiffrast.torch as dr
    except ImportError as e:  # pragma: no cover - depends on the install
        raise MissingDependencyError("nvdiffrast", "gpu", "the nvdiffrast rasterizer backend") from e
    return dr


def _context(device: torch.device):
    key = (device.type, device.index if device.index is not None else torch.cuda.current_device())
    if key not in _contexts:
        _contexts[key] = _dr().RasterizeCudaContext(device=torch.device("cuda", key[1]))
    return _contexts[key]


def _raster_ids(pos: Tensor, tri: Tensor, H: int, W: int) -> Tensor:
    """pos [B,V,4] float32 CUDA, tri [F,3] int32 -> face ids [B,H,W] int64 (-1 background).

    Older nvdiffrast CUDA contexts need H and W divisible by 8: rasterize a padded viewport anchored at the
    top-left corner and crop.
    """
    dr = _dr()
    H8, W8 = -(-H // 8) * 8, -(-W // 8) * 8
    if (H8, W8) != (H, W):
        x = (pos[..., 0] + pos[..., 3]) * (W / W8) - pos[..., 3]
        y = (pos[..., 1] + pos[..., 3]) * (H / H8) - pos[..., 3]
        pos = torch.stack([x, y, pos[..., 2], pos[..., 3]], -1).contiguous()
    rast, _ = dr.rasterize(_context(pos.device), pos, tri, resolution=[H8, W8])
    return rast[:, :H, :W, 3].round().long() - 1


def rasterize_visibility_nvdiffrast(verts_clip: Tensor, faces: Tensor, height: int, width: int,
                                    cull_backfaces: bool = False) -> Tensor:
    """verts_clip [B,V,4] (CUDA), faces [F,3] -> face_id [B,H,W] int64 (-1 background)."""
    pos = verts_clip.detach().float().contiguous()
    tri = faces.to(device=pos.device, dtype=torch.int32).contiguous()
    if not cull_backfaces:
        return _raster_ids(pos, tri, height, width)
    # nvdiffrast draws both sides; drop back faces (det(x, y, w) > 0, see raster.py) per image.
    v = pos[:, faces.long()][..., [0, 1, 3]]  # [B,F,3,3]
    det = torch.linalg.det(v.double())
    out = []
    for b in range(pos.shape[0]):
        keep = torch.nonzero(det[b] <= 0).squeeze(1)
        if keep.numel() == 0:
            out.append(torch.full((height, width), -1, dtype=torch.long, device=pos.device))
            continue
        ids = _raster_ids(pos[b:b + 1].contiguous(), tri[keep].contiguous(), height, width)[0]
        out.append(torch.where(ids >= 0, keep[ids.clamp(min=0)], ids))
    return torch.stack(out)
