"""`deepvoxels`: a persistent 3D feature grid learned from posed images (Sitzmann et al., CVPR 2019).

Per training step (target view + its nearest training views as sources, data.view_pairs):
  1. feature extraction: a 2D U-Net on each source image (at frustum resolution);
  2. lifting: every voxel centre of the persistent grid is projected into each source view and samples its
     features (graphics.voxels.lift_features); the lifted volumes (averaged over the sources that see the
     voxel) update the grid through a 3D ConvGRU; the updated grid is kept (detached) for the next step
     (as in the paper). By default (grid_lr > 0) the grid is also a parameter: the optimizer then adds a
     gradient step with its own learning rate, which is what makes it learn in a CPU budget; the GRU's update
     gate starts mostly closed (gate_bias) so one step's sources do not overwrite the grid;
  3. "inpainting": a 3D U-Net over the grid;
  4. projection: the grid resampled along every target ray at D depth bins between near and far
     (graphics.voxels.sample_along_rays): the canonical frustum volume;
  5. occlusion network: 3D convs -> softmax over depth -> visibility-weighted feature image and the
     expected depth (never supervised);
  6. rendering network: a 2D U-Net (bilinearly upsampled features -> RGB). Loss: L1 (+ optional PatchGAN).
With `random_target` (the paper's code: two targets per step, the second a random training view) the grid just
written from the sources is also rendered into one random training view and the L1 averages the two targets.
At test time only the stored grid and the target camera are used (steps 3-6): no source image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from neuralrender.data.view_pairs import camera_path, cameras_from_batch, load_view_pairs
from neuralrender.errors import NeuralRenderError
from neuralrender.graphics.cameras import Cameras
from neuralrender.graphics.voxels import lift_features, sample_along_rays, voxel_centers
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr, ssim
from neuralrender.nn.convgru import ConvGRUCell
from neuralrender.nn.occlusion import OcclusionNet
from neuralrender.nn.unet import UNet
from neuralrender.nn.unet3d import UNet3d
from neuralrender.registry import register


@dataclass
class DeepVoxelsConfig:
    image_size: int = field(default=128, metadata={"help": "longer image side to train at (integer downscale of the data)"})
    grid_res: int = field(default=32, metadata={"help": "voxels along the longest side of the grid box (the other "
                                                         "sides get as many as keep the voxels cubic: n^3 for a cube)"})
    grid_channels: int = field(default=16, metadata={"help": "feature channels of the grid (and of the lifted features)"})
    depth_bins: int = field(default=32, metadata={"help": "samples per target ray in the frustum volume"})
    frustum_scale: float = field(default=0.5, metadata={"help": "resolution of source features and of the frustum, relative to the image"})
    n_sources: int = field(default=2, metadata={"help": "nearest training views lifted per training step"})
    extractor_width: int = field(default=16, metadata={"help": "first-level channels of the 2D feature-extraction U-Net"})
    unet3d_width: int = field(default=16, metadata={"help": "first-level channels of the 3D inpainting U-Net"})
    unet3d_depth: int = field(default=2, metadata={"help": "downsamplings of the 3D U-Net"})
    occlusion_hidden: int = field(default=16, metadata={"help": "channels of the occlusion net's 3D convs"})
    render_width: int = field(default=32, metadata={"help": "first-level channels of the 2D rendering U-Net"})
    render_depth: int = field(default=4, metadata={"help": "downsamplings of the rendering U-Net"})
    bounds: str = field(default="scene", metadata={"help": "grid box: 'scene' (the box a built scene carries in its "
                                                           "transforms.json, padded; 'auto' for data without one), "
                                                           "'auto' (from the cameras) or 'xmin,ymin,zmin,xmax,ymax,zmax'"})
    bounds_margin: float = field(default=1.0, metadata={"help": "scale of the auto box"})
    ray_box: bool = field(default=True, metadata={"help": "sample each target ray only where it crosses the grid box "
                                                          "(depth_bins per ray between its box entry and exit) "
                                                          "instead of one near..far for all rays"})
    adv_weight: float = field(default=0.0, metadata={"help": "weight of the PatchGAN loss (0 = L1 only, the CPU default)"})
    gate_bias: float = field(default=-2.0, metadata={"help": "initial bias of the GRU's update gate (negative: each step "
                                                             "changes the persistent grid a little; 0 = a plain GRU)"})
    random_target: bool = field(default=False, metadata={"help": "also render a random training view from the grid "
                                                                 "just written each step (the paper's second "
                                                                 "target), L1 averaged over both targets"})
    grid_lr: float = field(default=0.1, metadata={"help": "Adam learning rate of the persistent grid: it is then also a "
                                                           "parameter, refined by gradient descent on top of the GRU "
                                                           "integration (0 = the paper: a buffer only the GRU writes)"})


class WithRandomTarget(torch.utils.data.Dataset):
    """Training pairs (data.view_pairs.ViewPairs) whose items also carry a second target, a training view drawn
    with torch's global generator (the trainer seeds it per step, so runs and resumes repeat it):
    "rand_image" [3,H,W], "rand_K", "rand_R", "rand_t"."""

    def __init__(self, pairs):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getattr__(self, name):  # cameras, targets, neighbours, ... of the wrapped pairs
        if name == "pairs":
            raise AttributeError(name)
        return getattr(self.pairs, name)

    def __getitem__(self, i: int) -> dict:
        item = self.pairs[i]
        j = int(torch.randint(len(self.pairs), ()))
        other = self.pairs.targets[j]
        cams = self.pairs.targets.cameras
        return {**item, "rand_image": other["image"], "rand_K": cams.K[j].clone(), "rand_R": cams.R[j].clone(),
                "rand_t": cams.t[j].clone()}


def sync_grid(grid: torch.Tensor) -> None:
    """Under torch.distributed (torchrun), average the persistent grid over the processes after each GRU
    write (each integrated different source views), so every process keeps the same grid."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(grid, op=dist.ReduceOp.SUM)
        grid.div_(dist.get_world_size())


@register("deepvoxels")
class DeepVoxels(Method):
    description = "DeepVoxels: persistent 3D feature grid + occlusion-aware projection, from posed images only"
    Config = DeepVoxelsConfig
    phases = ("d", "g")
    # ema: evaluate and render the average of the last ~100 steps' nets and persistent grid (a parameter when
    # grid_lr > 0), not the last training pair's write (docs/methods/deepvoxels.md, session 5)
    train_defaults = {"lr": 4e-4, "batch_size": 1, "steps": 3000, "eval_every": 500, "ckpt_every": 250,
                      "eval_batches": 0, "ema": 0.99}
    legacy_config = {"bounds": "auto", "ray_box": False}  # runs saved before these fields existed

    @classmethod
    def build_data(cls, cfg: DeepVoxelsConfig, data: str | None, seed: int) -> DataBundle:
        train, test, info = load_view_pairs(data, cfg.image_size, cfg.n_sources, cfg.bounds, cfg.bounds_margin)
        return DataBundle(WithRandomTarget(train) if cfg.random_target else train, test, info)

    def __init__(self, cfg: DeepVoxelsConfig, info):
        super().__init__(cfg, info)
        for name in ("grid_res", "grid_channels", "depth_bins", "image_size", "n_sources"):
            if getattr(cfg, name) < 1:
                raise NeuralRenderError(f"deepvoxels: {name} must be >= 1, got {getattr(cfg, name)}")
        if not 0 < cfg.frustum_scale <= 1:
            raise NeuralRenderError(f"deepvoxels: frustum_scale must be in (0, 1], got {cfg.frustum_scale}")
        C = cfg.grid_channels
        self.width, self.height = int(info["width"]), int(info["height"])
        self.fw, self.fh = max(1, round(self.width * cfg.frustum_scale)), max(1, round(self.height * cfg.frustum_scale))
        self.near, self.far = float(info["near"]), float(info["far"])
        self.register_buffer("bounds_min", torch.as_tensor(info["bounds_min"]).float().clone())
        self.register_buffer("bounds_max", torch.as_tensor(info["bounds_max"]).float().clone())
        ext = self.bounds_max - self.bounds_min
        self.grid_shape = tuple(max(1, round(cfg.grid_res * float(e / ext.max()))) for e in ext)  # (nx, ny, nz)
        nx, ny, nz = self.grid_shape
        grid = torch.zeros(1, C, nz, ny, nx)  # the persistent grid (the GRU's hidden state)
        if cfg.grid_lr > 0:
            self.grid = torch.nn.Parameter(grid)
        else:
            self.register_buffer("grid", grid)
        self.register_buffer("mean_image", torch.as_tensor(info["mean_image"]).float().clone())
        self.extractor = UNet(3, C, width=cfg.extractor_width, depth=3, max_width=64, out_act="none")
        self.gru = ConvGRUCell(C, C, kernel=3, dims=3)
        with torch.no_grad():
            self.gru.gates.bias[:C].fill_(cfg.gate_bias)  # the update gate z is the first C gate channels
        self.inpaint = UNet3d(C, C, width=cfg.unet3d_width, depth=cfg.unet3d_depth, residual=True)
        self.occlusion = OcclusionNet(C, hidden=cfg.occlusion_hidden)
        self.renderer = UNet(C, 3, width=cfg.render_width, depth=cfg.render_depth, max_width=256, up="bilinear")
        with torch.no_grad():  # start from the training images' mean colour instead of 0.5 gray
            self.renderer.head.bias.copy_(torch.logit(self.mean_image.mean((1, 2)).clamp(0.02, 0.98)))
        self.disc = None
        if cfg.adv_weight > 0:
            from neuralrender.nn.discriminators import PatchDiscriminator

            self.disc = PatchDiscriminator(3, width=32, n_layers=3)

    # ---- the pipeline ------------------------------------------------------------------------------
    def _cameras(self, batch: dict, prefix: str = "") -> Cameras:
        return cameras_from_batch(batch[prefix + "K"], batch[prefix + "R"], batch[prefix + "t"], self.width, self.height)

    def lift(self, src_images: torch.Tensor, src_cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """Source images [N,3,H,W] and their N cameras -> (mean lifted features [1,C,nz,ny,nx] over the views
        that see each voxel, coverage [1,1,nz,ny,nx] = number of those views)."""
        x = F.interpolate(src_images, size=(self.fh, self.fw), mode="area") if (self.fh, self.fw) != src_images.shape[-2:] else src_images
        feats = self.extractor(x)
        centers = voxel_centers(self.bounds_min, self.bounds_max, self.grid_shape).to(feats)
        vol, valid = lift_features(feats, src_cams, centers)
        cover = valid.sum(0, keepdim=True)
        return (vol * valid).sum(0, keepdim=True) / cover.clamp_min(1.0), cover

    def integrate(self, lifted: torch.Tensor) -> torch.Tensor:
        """One ConvGRU step of the persistent grid with lifted features -> the new grid [1,C,nz,ny,nx]."""
        return self.gru(lifted, self.grid.clone())  # clone: the buffer is overwritten after this step

    def inpainted(self, grid: torch.Tensor) -> torch.Tensor:
        """The 3D U-Net over the grid; at test time (eval mode, no grad, the stored grid) it is computed once
        and reused until the grid or the 3D U-Net's weights change."""
        if self.training or torch.is_grad_enabled() or grid is not self.grid:
            return self.inpaint(grid)
        key = (grid.data_ptr(), grid._version, grid.device, *(p._version for p in self.inpaint.parameters()),
               *(p.data_ptr() for p in self.inpaint.parameters()))
        if getattr(self, "_inpaint_key", None) != key:
            self._inpaint_cache, self._inpaint_key = self.inpaint(grid), key
        return self._inpaint_cache

    def project(self, grid: torch.Tensor, cams: Cameras) -> dict[str, torch.Tensor]:
        """Grid [1,C,nz,ny,nx] (inpainted here) seen by B target cameras -> {"rgb" [B,3,H,W], "depth" [B,1,H,W]
        (expected camera z, upsampled), "weights" [B,1,D,h,w], "features" [B,C,h,w]}."""
        frustum, depths = self.frustum(self.inpainted(grid), cams)
        feats, depth, w = self.occlusion(frustum, depths)
        up = F.interpolate(feats, size=(self.height, self.width), mode="bilinear", align_corners=False)
        rgb = self.renderer(up)
        depth = F.interpolate(depth, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return {"rgb": rgb, "depth": depth, "weights": w, "features": feats}

    def frustum(self, grid: torch.Tensor, cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """The (inpainted) grid [1,C,nz,ny,nx] resampled along B target cameras' rays -> (frustum volume
        [B,C,D,h,w], depths: [D] or, with ray_box, [B,D,h,w])."""
        return sample_along_rays(grid.expand(cams.batch_size, -1, -1, -1, -1), self.bounds_min, self.bounds_max, cams,
                                 self.cfg.depth_bins, self.near, self.far, height=self.fh, width=self.fw,
                                 in_box=self.cfg.ray_box)

    def forward(self, cams: Cameras) -> dict[str, torch.Tensor]:
        """Test time: only the stored grid and the target cameras."""
        return self.project(self.grid, cams)

    # ---- training ----------------------------------------------------------------------------------
    def parameters_for(self, phase: str):
        if phase == "d":
            return list(self.disc.parameters()) if self.disc is not None else [self.bounds_min.new_zeros(1, requires_grad=True)]
        nets = [p for n, p in self.named_parameters() if not n.startswith("disc.") and n != "grid"]
        if isinstance(self.grid, torch.nn.Parameter):
            return [{"params": nets}, {"params": [self.grid], "lr": self.cfg.grid_lr}]
        return nets

    def _step(self, batch: dict) -> dict[str, torch.Tensor]:
        B, S = batch["src_image"].shape[:2]
        src = batch["src_image"].flatten(0, 1)
        src_cams = cameras_from_batch(batch["src_K"].flatten(0, 1), batch["src_R"].flatten(0, 1),
                                      batch["src_t"].flatten(0, 1), self.width, self.height)
        lifted, _ = self.lift(src, src_cams)
        grid = self.integrate(lifted)
        if self.training:
            with torch.no_grad():
                self.grid.copy_(grid.detach())
                sync_grid(self.grid)
        if "rand_image" in batch:  # the paper's second target: a random training view from the same new grid
            cams = cameras_from_batch(*(torch.cat([batch[k], batch["rand_" + k]]) for k in ("K", "R", "t")),
                                      self.width, self.height)
            return self.project(grid, cams)
        return self.project(grid, self._cameras(batch))

    def loss(self, phase, batch, step):
        target = batch["image"]
        if phase == "g" and "rand_image" in batch:
            target = torch.cat([target, batch["rand_image"]])
        if phase == "d":
            if self.disc is None:
                return self.bounds_min.new_zeros((), requires_grad=True), {}
            from neuralrender.losses.gan import discriminator_loss

            with torch.no_grad():
                out = self.project(self.grid, self._cameras(batch))["rgb"]
            d = discriminator_loss(self.disc(target), self.disc(out))
            return d, {"d_loss": d.item()}
        out = self._step(batch)
        l1 = (out["rgb"] - target).abs().mean()
        logs = {"l1": l1.item()}
        loss = l1
        if self.disc is not None:
            from neuralrender.losses.gan import generator_loss

            adv = generator_loss(self.disc(out["rgb"]))
            loss = loss + self.cfg.adv_weight * adv
            logs["g_adv"] = adv.item()
        return loss, logs

    # ---- evaluation and outputs --------------------------------------------------------------------
    def depth_error(self, depth: torch.Tensor, batch: dict) -> dict[str, float]:
        """Mean |expected depth - true camera z| over foreground pixels (true depth > 0, mask > 0.5 when
        given) whose true surface point lies inside the grid box (the grid cannot hold anything else):
        absolute ("depth_mae") and relative to the frustum depth range far - near ("depth_mae_rel")."""
        gt = batch["depth"]
        fg = gt > 0
        if "mask" in batch:
            fg = fg & (batch["mask"] > 0.5)
        cams = self._cameras(batch)
        B, _, H, W = gt.shape
        pix = cams.pixel_grid().reshape(1, H * W, 2).expand(B, -1, -1)
        pts = cams.unproject(pix, gt.reshape(B, H * W))
        inside = ((pts >= self.bounds_min) & (pts <= self.bounds_max)).all(-1).reshape(B, 1, H, W)
        fg = fg & inside
        if not bool(fg.any()):
            return {}
        mae = (depth - gt).abs()[fg].mean().item()
        return {"depth_mae": mae, "depth_mae_rel": mae / (self.far - self.near)}

    @torch.no_grad()
    def evaluate(self, batch):
        target = batch["image"]
        out = self(self._cameras(batch))
        base = self.mean_image.expand_as(target)
        flat = self.mean_image.mean((1, 2), keepdim=True).expand_as(target)
        m = {"psnr": psnr(out["rgb"], target).mean().item(), "ssim": ssim(out["rgb"], target).mean().item(),
             "psnr_mean_image": psnr(base, target).mean().item(), "psnr_mean_color": psnr(flat, target).mean().item()}
        if "depth" in batch:
            m.update(self.depth_error(out["depth"], batch))
        return m

    def depth_image(self, depth: torch.Tensor) -> torch.Tensor:
        """Camera z [B,1,H,W] -> [0,1] gray (near = white, far = black) for PNG/mp4 output."""
        return (1 - (depth - self.near) / (self.far - self.near)).clamp(0, 1)

    @torch.no_grad()
    def render(self, batch):
        out = self(self._cameras(batch))
        r = {"target": batch["image"], "prediction": out["rgb"], "depth": self.depth_image(out["depth"])}
        if "depth" in batch:
            r["depth_true"] = torch.where(batch["depth"] > 0, self.depth_image(batch["depth"]), torch.zeros_like(batch["depth"]))
        return r

    @torch.no_grad()
    def render_run(self, bundle: DataBundle, out, path: str | None = None, frames: int = 60) -> list:
        """Render a camera path (orbit | spiral | train | a transforms.json) -> rgb and depth mp4s."""
        from neuralrender.train.outputs import save_renders

        dev = self.grid.device
        centre = (self.bounds_min + self.bounds_max).cpu() / 2
        cams = camera_path(bundle.info["train_cameras"], path, frames, centre)
        if (cams.width, cams.height) != (self.width, self.height):
            raise NeuralRenderError(f"render path cameras are {cams.width}x{cams.height}, the model renders "
                                    f"{self.width}x{self.height}")
        rgb, depth = self.render_cameras(cams.to(dev))
        name = Path(str(path or "orbit")).stem
        return save_renders({f"{name}_rgb": rgb[None], f"{name}_depth": self.depth_image(depth)[None]}, Path(out), "render")

    @torch.no_grad()
    def render_cameras(self, cams: Cameras, chunk: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """All frames of `cams` -> (rgb [T,3,H,W], depth [T,1,H,W]) on the model's device, `chunk` at a time."""
        rgbs, depths = [], []
        for i in range(0, cams.batch_size, chunk):
            o = self(cams[i:i + chunk])
            rgbs.append(o["rgb"])
            depths.append(o["depth"])
        return torch.cat(rgbs), torch.cat(depths)
