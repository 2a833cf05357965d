"""Shared machinery of the deferred-rendering methods (`neural-textures` and its `pix2pix-gbuffer` ablation).

Data: a posed-image dataset with a mesh (transforms.json with "mesh_path", e.g. a built scene). Each training
item is a random crop of a randomly scaled view: the image is resized by s and cropped, and the camera's K is
changed to match, so the mesh is rasterized for exactly the pixels of the crop (no resampling of G-buffers).
Model: mesh buffers (not learned, not in checkpoints: they come from the dataset) + a U-Net fed with
per-pixel inputs that the subclass computes from the rasterized fragments (`inputs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuralrender.data.view_pairs import camera_path, cameras_from_batch, resolve_posed
from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.graphics.cameras import Cameras
from neuralrender.graphics.meshes import Mesh
from neuralrender.graphics.raster import rasterize
from neuralrender.losses.reconstruction import PerceptualLoss, l1_loss, perceptual_status
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import lpips_metric, psnr, ssim
from neuralrender.nn.unet import UNet


@dataclass
class DeferredConfig:
    """Fields shared by both deferred methods (every field is a `neuralrender train` flag)."""

    downscale: int = field(default=1, metadata={"help": "load the dataset's images downscaled by this integer"})
    crop: int = field(default=128, metadata={"help": "training crop size in pixels (0 = full images)"})
    scale_min: float = field(default=0.75, metadata={"help": "smallest random scale of a training view"})
    scale_max: float = field(default=1.25, metadata={"help": "largest random scale of a training view"})
    unet_width: int = field(default=16, metadata={"help": "channels of the U-Net's first level"})
    unet_depth: int = field(default=4, metadata={"help": "stride-2 levels of the U-Net"})
    unet_norm: Literal["group", "instance", "batch", "none"] = field(default="group", metadata={"help": "U-Net normalization: instance|batch|group|none"})
    unet_up: Literal["transpose", "bilinear"] = field(default="transpose", metadata={"help": "U-Net upsampling: transpose|bilinear"})
    vgg_weights: str | None = field(default=None, metadata={
        "help": "VGG16 weights file (torchvision layout, .pth/.safetensors) for the perceptual loss; off when unset"})
    perceptual_weight: float = field(default=0.1, metadata={"help": "weight of the perceptual loss when it is on"})
    backend: Literal["auto", "cpu", "torch", "nvdiffrast", "pytorch3d"] = field(default="auto", metadata={"help": "rasterizer backend: auto|cpu|torch|nvdiffrast|pytorch3d"})
    mesh: str | None = field(default=None, metadata={
        "help": "proxy mesh file to use instead of the dataset's mesh_path ('shared:' allowed)"})
    proxy: Literal["none", "sphere"] = field(default="none", metadata={
        "help": "when there is no mesh: 'sphere' = a UV sphere where the cameras look (see proxy_scale); 'none' = error"})
    proxy_scale: float = field(default=1.0, metadata={
        "help": "sphere proxy radius, relative to what the tightest view sees at the look-at point"})
    atlas: bool = field(default=True, metadata={
        "help": "pack each labelled object's UVs into its own tile of one atlas (objects never share texels)"})


# ---------------------------------------------------------------------------------------------- data
def atlas_uvs(mesh: Mesh) -> tuple[torch.Tensor, torch.Tensor]:
    """(uvs [T',2], face_uvs [F,3]) with each labelled object's UVs squeezed into its own tile of a
    cols x rows grid (cols = ceil(sqrt(n)), rows = ceil(n / cols); tiles shrunk by a 1/32 margin), so that
    objects whose UV charts overlap (every primitive spans [0,1]^2) do not share neural-texture texels.
    One object: unchanged."""
    uvs, fuv = mesh.uvs, mesh.uv_faces()
    labels = mesh.labels if mesh.labels is not None else torch.zeros(mesh.num_faces, dtype=torch.long)
    objs = torch.unique(labels)
    if len(objs) <= 1:
        return uvs, fuv
    cols = math.ceil(math.sqrt(len(objs)))
    rows = math.ceil(len(objs) / cols)
    grid = torch.tensor([cols, rows], dtype=uvs.dtype)
    new_uvs, new_fuv = [], torch.empty_like(fuv)
    base = 0
    for k, lab in enumerate(objs.tolist()):
        fsel = labels == lab
        idx, inv = torch.unique(fuv[fsel], return_inverse=True)
        u = uvs[idx]
        lo, hi = u.min(0).values, u.max(0).values
        u = (u - lo) / (hi - lo).clamp_min(1e-8)
        margin = 1.0 / 32
        tile = torch.tensor([k % cols, k // cols], dtype=u.dtype)
        new_uvs.append((tile + margin + u * (1 - 2 * margin)) / grid)
        new_fuv[fsel] = inv.view(-1, 3) + base
        base += len(idx)
    return torch.cat(new_uvs, 0), new_fuv


class DeferredViews(Dataset):
    """Views of a PosedImageDataset as {"image" [3,h,w], "K" [3,3], "R" [3,3], "t" [3], "index"}.

    augment: a random scale in [scale_min, scale_max] then a random crop of crop x crop (RNG: torch's global
    generator, which the trainer seeds per step). Without augment: the full image and its camera.
    """

    def __init__(self, posed, augment: bool = False, crop: int = 0, scale_min: float = 1.0, scale_max: float = 1.0):
        self.posed, self.augment = posed, augment
        self.crop, self.scale_min, self.scale_max = crop, scale_min, scale_max
        self.cameras: Cameras = posed.cameras

    def __len__(self) -> int:
        return len(self.posed)

    def __getitem__(self, i: int) -> dict:
        img = self.posed[i]["image"]
        cam = self.cameras[i]
        K = cam.K[0].clone()
        if self.augment:
            s = float(torch.empty(()).uniform_(self.scale_min, self.scale_max))
            H, W = img.shape[-2:]
            ch, cw = (min(self.crop, H), min(self.crop, W)) if self.crop else (H, W)
            s = max(s, ch / H, cw / W)  # never smaller than the crop: every item of a batch has the same shape
            h, w = max(ch, round(H * s)), max(cw, round(W * s))
            if (h, w) != (H, W):
                img = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False, antialias=s < 1)[0]
                K[0] *= w / W
                K[1] *= h / H
            y0 = int(torch.randint(0, h - ch + 1, ()))
            x0 = int(torch.randint(0, w - cw + 1, ()))
            img = img[:, y0:y0 + ch, x0:x0 + cw]
            K[0, 2] -= x0
            K[1, 2] -= y0
        return {"image": img.contiguous(), "K": K, "R": cam.R[0], "t": cam.t[0], "index": i}


def load_posed(root: Path, split: str, downscale: int):
    """A split of the dataset, cached in memory; lens distortion is removed (the rasterizer is pinhole)."""
    from neuralrender.data.posed import PosedImageDataset

    return PosedImageDataset(root, split=split, downscale=downscale, undistort=True, cache=True)


def proxy_sphere(cameras: Cameras, scale: float = 1.0) -> Mesh:
    """A UV sphere centred where the cameras' optical axes meet (least squares), with a radius of `scale` times
    what the tightest view sees there: a coarse proxy for captures without geometry (e.g. the fox)."""
    from neuralrender.data.view_pairs import scene_bounds
    from neuralrender.graphics.meshes import uv_sphere

    lo, hi = scene_bounds(cameras)
    m = uv_sphere(32, 64, radius=float((hi - lo).max() / 2) * scale)
    m.verts = m.verts + (lo + hi) / 2
    return m


def build_deferred_data(cfg: DeferredConfig, data: str | None) -> DataBundle:
    from neuralrender.io.meshes import load_mesh
    from neuralrender.paths import resolve_data_path

    root = Path(resolve_posed(data))
    train = load_posed(root, "train", cfg.downscale)
    test = None
    for split in ("test", "val"):
        try:
            test = load_posed(root, split, cfg.downscale)
        except DataError:
            continue
        if len(test):
            break
    if cfg.mesh:
        mesh_path = resolve_data_path(cfg.mesh)
        mesh = load_mesh(mesh_path)
    elif train.data.mesh_path is not None:
        mesh_path = train.data.mesh_path
        mesh = load_mesh(mesh_path)
    elif cfg.proxy == "sphere":
        mesh_path, mesh = "<sphere proxy>", proxy_sphere(train.cameras, cfg.proxy_scale)
    else:
        raise DataError(train.data.json_path, "this method needs a proxy mesh: add \"mesh_path\" to the json, "
                        "or pass --mesh FILE or --proxy sphere", field="mesh_path")
    if mesh.uvs is None:
        raise DataError(mesh_path, "the mesh has no UV coordinates (unwrap it, e.g. with the 'uv' extra)",
                        field="uvs")
    if cfg.atlas:
        uvs, fuv = atlas_uvs(mesh)
    else:
        uvs, fuv = mesh.uvs, mesh.uv_faces()
    mean_color = torch.stack([train[i]["image"].mean((1, 2)) for i in range(len(train))]).mean(0)
    centers = train.cameras.centers
    target = mesh.verts.reshape(-1, 3).mean(0)
    info = {"root": str(root), "verts": mesh.verts.float(), "faces": mesh.faces.long(), "uvs": uvs.float(),
            "face_uvs": fuv.long(), "normals": mesh.vertex_normals().float(),
            "labels": (mesh.labels if mesh.labels is not None else torch.zeros(mesh.num_faces, dtype=torch.long)),
            "mean_color": mean_color, "width": train.cameras.width, "height": train.cameras.height,
            "train_cameras": train.cameras, "target": target,
            "depth_scale": float((centers - target).norm(dim=-1).mean())}
    tr = DeferredViews(train, augment=True, crop=cfg.crop, scale_min=cfg.scale_min, scale_max=cfg.scale_max)
    te = DeferredViews(test) if test is not None and len(test) else None
    return DataBundle(tr, te, info)


# ---------------------------------------------------------------------------------------------- model
class DeferredMethod(Method):
    """Base: rasterize the mesh for the batch's cameras, subclass turns fragments into U-Net inputs -> RGB."""

    in_channels: int = 0  # set by subclasses before super().__init__ builds the U-Net

    train_defaults = {"lr": 1e-3, "batch_size": 4, "steps": 2000, "eval_every": 500, "ckpt_every": 500,
                      "eval_batches": 0}

    @classmethod
    def build_data(cls, cfg, data, seed):
        return build_deferred_data(cfg, data)

    def __init__(self, cfg: DeferredConfig, info: dict):
        super().__init__(cfg, info)
        for k in ("verts", "faces", "uvs", "face_uvs", "normals", "labels", "mean_color"):
            self.register_buffer(k, info[k].clone(), persistent=False)
        self.depth_scale = float(info["depth_scale"])
        self.unet = UNet(self.in_channels + 1, 3, width=cfg.unet_width, depth=cfg.unet_depth, norm=cfg.unet_norm,
                         up=cfg.unet_up, out_act="sigmoid")
        with torch.no_grad():  # start from the training images' mean colour instead of 0.5 gray
            self.unet.head.bias.copy_(torch.logit(info["mean_color"].float().clamp(0.02, 0.98)))
        self.perceptual_note = perceptual_status(cfg.vgg_weights)
        p = PerceptualLoss.from_path(cfg.vgg_weights)  # None unless --vgg-weights or $NR_VGG_WEIGHTS is set
        self._perceptual = [p]  # a list: the frozen VGG is not a submodule, so it stays out of checkpoints

    # ---- geometry ---------------------------------------------------------------------------------
    def set_mesh(self, verts: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor | None = None,
                 face_uvs: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> None:
        """Replace the geometry that is rendered (scene editing). uvs/face_uvs default to the current ones
        (faces must then keep their number); normals are recomputed."""
        from neuralrender.graphics.meshes import vertex_normals

        dev = self.verts.device
        self.verts = verts.to(dev).float()
        self.faces = faces.to(dev).long()
        if uvs is not None:
            self.uvs = uvs.to(dev).float()
        if face_uvs is not None:
            self.face_uvs = face_uvs.to(dev).long()
        if labels is not None:
            self.labels = labels.to(dev).long()
        if self.face_uvs.shape[0] != self.faces.shape[0]:
            raise NeuralRenderError(f"set_mesh: {self.faces.shape[0]} faces but {self.face_uvs.shape[0]} face_uvs rows")
        self.normals = vertex_normals(self.verts, self.faces)

    def cameras_of(self, batch: dict) -> Cameras:
        img = batch["image"]
        return cameras_from_batch(batch["K"].float(), batch["R"].float(), batch["t"].float(), img.shape[-1], img.shape[-2])

    def rasterize(self, cams: Cameras):
        return rasterize(cams, self.verts, self.faces, backend=self.cfg.backend)

    # ---- subclasses -------------------------------------------------------------------------------
    def inputs(self, cams: Cameras, frags) -> tuple[torch.Tensor, dict]:
        """U-Net inputs [B,in_channels,H,W] (without the mask channel) and extras for the loss."""
        raise NotImplementedError

    def forward(self, cams: Cameras) -> dict:
        """Render cams -> {"rgb" [B,3,H,W], "mask" [B,1,H,W], ...subclass extras}."""
        frags = self.rasterize(cams)
        mask = frags.mask.unsqueeze(1).float()
        x, extras = self.inputs(cams, frags)
        rgb = self.unet(torch.cat([x, mask], 1))
        return {"rgb": rgb, "mask": mask, **extras}

    def extra_loss(self, out: dict, target: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return target.new_zeros(()), {}

    def loss(self, phase, batch, step):
        target = batch["image"]
        out = self(self.cameras_of(batch))
        l1 = l1_loss(out["rgb"], target)
        total = l1
        logs = {"l1": l1.item()}
        extra, extra_logs = self.extra_loss(out, target)
        total = total + extra
        logs.update(extra_logs)
        perc = self._perceptual[0]
        if perc is not None:
            perc.to(target.device)
            lp = perc(out["rgb"], target)
            total = total + self.cfg.perceptual_weight * lp
            logs["perceptual"] = lp.item()
        return total, logs

    @torch.no_grad()
    def evaluate(self, batch):
        target = batch["image"]
        out = self(self.cameras_of(batch))
        pred = out["rgb"]
        mean = self.mean_color.view(1, 3, 1, 1).expand_as(target)
        m = {"psnr": psnr(pred, target).mean().item(), "ssim": ssim(pred, target).mean().item(),
             "psnr_object": psnr(pred, target, out["mask"]).mean().item(),
             "psnr_mean_color": psnr(mean, target).mean().item()}
        lp = lpips_metric(pred, target)
        if lp is not None:
            m["lpips"] = lp.mean().item()
        return m

    @torch.no_grad()
    def render(self, batch):
        target = batch["image"]
        out = self(self.cameras_of(batch))
        return {"target_vs_prediction": torch.cat([target, out["rgb"]], 0)}

    @torch.no_grad()
    def render_cameras(self, cams: Cameras, chunk: int = 8) -> torch.Tensor:
        """Images [N,3,H,W] for N cameras, rendered `chunk` at a time on the model's device."""
        dev = self.verts.device
        outs = []
        for s in range(0, cams.batch_size, chunk):
            outs.append(self(cams[s:s + chunk].to(dev))["rgb"].cpu())
        return torch.cat(outs, 0)

    @torch.no_grad()
    def render_run(self, bundle, out, path=None, frames=60):
        """Render a camera path ('orbit' default, 'spiral', or a transforms.json) to an mp4 at `out`
        (a .mp4 file, or a folder that gets <path>.mp4)."""
        from neuralrender.io.video import write_video

        self.eval()
        cams = camera_path(bundle.info["train_cameras"], path, frames, bundle.info["target"])
        video = self.render_cameras(cams)
        out = Path(out)
        name = Path(path).stem if path not in (None, "orbit", "spiral") else (path or "orbit")
        dst = out if out.suffix.lower() == ".mp4" else out / f"{name}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_video(video, dst, fps=24)
        return [dst]
