"""`dvp`: Deep Video Portraits (Kim et al., SIGGRAPH 2018), person-specific, on CPU-sized budgets.

Data: one video of the target actor and its face track (`neuralrender faces track`, or a quick landmark-only
track computed here when --track is empty). Per frame, neuralrender.faces.conditioning rasterizes 5 maps
(mean-face correspondence, diffuse shading under the fitted light, eye blobs + lip blobs and the filled inner-lip
polygon with --mouth / --mouth-fill); a window of `window` frames is stacked into channels (paper: the last 11
frames, 9 channels each; here by default the current frame, one past and one NEXT distinct picture, `--ahead 1`:
reenactment here is offline, the whole driving track is known). Train = the first `train_frac` of the frames, held-out
= the rest, driven by their own tracked parameters (self-reenactment).

Renderer: the project's U-Net on the stacked window (space-time encoder-decoder), a conditional PatchGAN on
(window, image), L1 (up-weighted on the face region) + adversarial (LSGAN by default). Training pairs are
augmented by one random similarity transform per (window, image) pair (--shift px, --rotate degrees, --zoom;
`random_affine`): with ~200 frames the network otherwise memorises frames by where the head is, and reads the
mouth off the head pose instead of off the lip maps.

Held-out metrics (evaluate): face-region L1 and PSNR, and flicker = mean |(out_t - out_t-1) - (gt_t - gt_t-1)|
on the face region (lower = more stable); the same for the nearest-neighbour baseline (the train frame whose
expression + pose parameters are closest) as nn_*. The single-frame (pix2pix-style) baseline is this method with
--window 1 (same data, budget and networks).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.faces.conditioning import (
    COND_CHANNELS,
    cond_to_rgb,
    hold_index,
    repeated_frames,
    stack_window,
    track_maps,
)
from neuralrender.losses.gan import discriminator_loss, generator_loss
from neuralrender.methods.base import DataBundle, Method
from neuralrender.metrics import psnr
from neuralrender.nn.discriminators import PatchDiscriminator
from neuralrender.nn.unet import UNet
from neuralrender.registry import register

DEFAULT_VIDEO = "shared:videos/face_talking/driving_obama_weekly_address_256.mp4"


@dataclass
class DVPConfig:
    track: str = field(default="", metadata={"help": "face track (track.safetensors from `neuralrender faces track`); "
                                                     "empty: a quick landmark-only track is computed"})
    size: int = field(default=128, metadata={"help": "image size (square)"})
    frames: int = field(default=0, metadata={"help": "use the first N frames (0 = all)"})
    window: int = field(default=3, metadata={"help": "frames of conditioning stacked into channels (paper: 11)"})
    mouth: bool = field(default=True, metadata={"help": "lip landmarks (model + detected residual) drawn into the "
                                                        "eye channel: the mouth opening made explicit"})
    mouth_fill: bool = field(default=True, metadata={"help": "with --mouth: also fill the inner-lip polygon in "
                                                             "that channel (the mouth opening as an area)"})
    shift: float = field(default=8.0, metadata={"help": "training augmentation of each (window, image) pair: random "
                                                        "translation in [-shift, shift] px"})
    rotate: float = field(default=10.0, metadata={"help": "training augmentation: random rotation in [-rotate, "
                                                         "rotate] degrees"})
    zoom: float = field(default=0.1, metadata={"help": "training augmentation: random scale in [1-zoom, 1+zoom]"})
    train_frac: float = field(default=0.8, metadata={"help": "first fraction of the frames used for training"})
    width: int = field(default=32, metadata={"help": "U-Net channels of the first level"})
    depth: int = field(default=5, metadata={"help": "U-Net stride-2 levels"})
    d_width: int = field(default=32, metadata={"help": "PatchGAN channels of the first layer"})
    d_layers: int = field(default=3, metadata={"help": "PatchGAN stride-2 layers"})
    gan_mode: Literal["lsgan", "vanilla", "hinge"] = field(default="lsgan", metadata={"help": "adversarial loss"})
    lambda_gan: float = field(default=1.0, metadata={"help": "weight of the adversarial term"})
    lambda_l1: float = field(default=100.0, metadata={"help": "weight of the L1 term"})
    face_weight: float = field(default=2.0, metadata={"help": "extra L1 weight on the face region (0 = plain L1)"})
    landmark_weight: float = field(default=4.0, metadata={"help": "extra L1 weight around the eye and lip landmarks "
                                                                   "(the current frame's landmark map, dilated)"})
    temporal: float = field(default=0.0, metadata={"help": "weight of a temporal L1 between the output's and the "
                                                           "truth's frame differences; > 0: a batch of B items is "
                                                           "trained as B/2 consecutive (t-1, t) pairs, the same "
                                                           "frames per step (with --distinct-window: t and the last "
                                                           "frame of the previous distinct picture)"})
    distinct_window: bool = field(default=True, metadata={"help": "the window's past slots hold the last frames of "
                                                                   "the preceding DISTINCT pictures: repeated "
                                                                   "(duplicated) video frames do not advance it"})
    hold_repeats: bool = field(default=True, metadata={"help": "a repeated (duplicated) video frame keeps the tracked "
                                                               "parameters and landmarks of the first frame of its "
                                                               "picture: same picture, same conditioning (train and "
                                                               "held-out frames, and so the nearest-neighbour "
                                                               "baseline's features)"})
    past_dropout: float = field(default=0.0, metadata={"help": "training: probability per pair that the window's "
                                                               "past frames are replaced by the current frame's maps"})
    diff_window: bool = field(default=False, metadata={"help": "difference-coded window: the past slots hold the "
                                                               "change from one window frame to the next, the last "
                                                               "slot the current frame's maps (same information)"})
    ahead: int = field(default=1, metadata={"help": "offline renderer (ours; the paper's window is past-only, "
                                                    "--ahead 0): this many of the window's slots hold the NEXT "
                                                    "frames' maps (with --distinct-window the next distinct "
                                                    "pictures; the clip's last frame repeated at its end) instead "
                                                    "of past ones; at most window - 1 are used (none at window 1)"})


# ------------------------------------------------------------------------------------------------ data
@functools.lru_cache(maxsize=4)
def _prepare(video: str, track: str, frames: int, size: int, mouth: bool = True, mouth_fill: bool = False,
             hold: bool = False):
    """-> dict of tensors: maps [T,5,S,S], images [T,3,S,S], face masks [T,1,S,S], params features [T,F], repeats
    [T] (frame t shows frame t-1's picture). hold: repeated frames take the parameters and landmarks of the first
    frame of their picture (`hold_index`)."""
    from neuralrender.faces.landmarks import landmarks_for_video
    from neuralrender.faces.model import FaceModel
    from neuralrender.faces.tracking import TrackConfig, load_track, track_video
    from neuralrender.io.video import read_video
    from neuralrender.paths import resolve_data_path

    vpath = resolve_data_path(video)
    imgs = read_video(vpath, count=frames or None)
    T, _, H, W = imgs.shape
    repeats = repeated_frames(imgs)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if track:
            tr = load_track(resolve_data_path(track))
            if tr.num_frames < T:
                raise DataError(track, f"track has {tr.num_frames} frames but {T} video frames are used",
                                field="params.rotation")
            model = FaceModel(num_identity=tr.params.identity.shape[1])
            p = tr.params.index(torch.arange(T))
            lm, fitted = tr.landmarks[:T], (tr.lm_pred[:T] if tr.lm_pred is not None else None)
        else:
            lmk = landmarks_for_video(vpath, imgs if not frames else None)
            cfg = TrackConfig(num_identity=40, rigid_iters=60, landmark_iters=120, photometric=False, quiet=True)
            model = FaceModel(num_identity=cfg.num_identity)
            tr = track_video(imgs, lmk.landmarks[:T], lmk.valid[:T], cfg, model)
            p, lm, fitted = tr.params, tr.landmarks, tr.lm_pred
        if fitted is None:
            fitted, _ = model.landmarks_2d(p, W, H, lm)
        if hold:
            h = hold_index(repeats)
            p, lm, fitted = p.index(h), lm[h], fitted[h]
        maps = track_maps(model, p, lm, fitted, W, H, size, mouth, mouth_fill)
    finally:
        torch.set_num_threads(old)
    mask = (maps[:, :3].amax(1, keepdim=True) > 0).float()
    mask = F.max_pool2d(mask, 5, 1, 2)  # dilate by 2 px: include the face outline
    small = F.interpolate(imgs, size=(size, size), mode="area") if (H, W) != (size, size) else imgs
    feats = torch.cat([p.expression, p.rotation * 10.0, p.translation / 10.0], -1)
    return {"maps": maps, "images": small, "mask": mask, "feats": feats, "repeats": repeats}


class PortraitFrames(Dataset):
    """Frames `indices` of a prepared video: cond [window*5,S,S], image [3,S,S], mask [1,S,S] and the previous
    frame's (cond_prev, image_prev, mask_prev; frame 0's own at frame 0); with `nn_index` (held-out split) also the
    nearest-neighbour baseline's images (nn, nn_prev). prev_picture: "previous" is the last frame of the previous
    distinct picture instead of frame t-1 (the same where the picture changes; the --temporal pairs of training)."""

    def __init__(self, data: dict, window: int, indices: list[int], nn_index: torch.Tensor | None = None,
                 distinct: bool = False, prev_picture: bool = False, diff: bool = False, ahead: int = 0,
                 end: int | None = None):
        maps, rep = data["maps"], data["repeats"]
        if ahead and end is not None:  # the clip ends at `end` (training: no held-out frame in a look-ahead slot)
            maps, rep = maps[:end], rep[:end]
        self.cond = stack_window(maps, window, rep if distinct else None, diff, ahead)
        self.images, self.mask, self.indices, self.nn = data["images"], data["mask"], list(indices), nn_index
        t = torch.arange(self.images.shape[0])
        self.prev = ((hold_index(data["repeats"]) if prev_picture else t) - 1).clamp_min(0).tolist()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        t = self.indices[i]
        tp = self.prev[t]
        out = {"cond": self.cond[t], "image": self.images[t], "mask": self.mask[t], "index": t,
               "cond_prev": self.cond[tp], "image_prev": self.images[tp], "mask_prev": self.mask[tp]}
        if self.nn is not None:
            out.update(nn=self.images[int(self.nn[t])], nn_prev=self.images[int(self.nn[tp])])
        return out


def nearest_frames(feats: torch.Tensor, train_idx: list[int]) -> torch.Tensor:
    """For every frame [T,F] the train frame with the closest standardised expression + pose features -> [T]."""
    tr = feats[train_idx]
    mu, sd = tr.mean(0), tr.std(0).clamp_min(1e-6)
    d = torch.cdist((feats - mu) / sd, (tr - mu) / sd)
    return torch.as_tensor(train_idx)[d.argmin(1)]


def build_portrait_data(cfg: DVPConfig, data: str | None) -> DataBundle:
    d = _prepare(data or DEFAULT_VIDEO, cfg.track, cfg.frames, cfg.size, cfg.mouth, cfg.mouth and cfg.mouth_fill,
                 cfg.hold_repeats)
    T = d["images"].shape[0]
    n_train = int(round(cfg.train_frac * T))
    if not 2 <= n_train <= T - 2:
        raise DataError(data or DEFAULT_VIDEO, f"{T} frames leave no train/held-out split at train_frac "
                        f"{cfg.train_frac}", field="frames")
    train_idx, val_idx = list(range(n_train)), list(range(n_train, T))
    nn = nearest_frames(d["feats"], train_idx)
    info = {"cond_channels": cfg.window * COND_CHANNELS, "mean_image": d["images"][:n_train].mean(0), "frames": T}
    w, dw, df, ah = cfg.window, cfg.distinct_window, cfg.diff_window, min(cfg.ahead, cfg.window - 1)
    train = PortraitFrames(d, w, train_idx, distinct=dw, prev_picture=dw, diff=df, ahead=ah, end=n_train)
    return DataBundle(train, PortraitFrames(d, w, val_idx, nn, dw, diff=df, ahead=ah), info)


# ------------------------------------------------------------------------------------------------ metrics
def face_l1(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean |x - y| over the mask [B,1,H,W] -> [B]."""
    m = mask.expand_as(x)
    return ((x - y).abs() * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)


def flicker(out: torch.Tensor, out_prev: torch.Tensor, gt: torch.Tensor, gt_prev: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
    """Temporal instability [B]: mean |(out - out_prev) - (gt - gt_prev)| over the mask (x1000 by callers)."""
    return face_l1(out - out_prev, gt - gt_prev, mask)


def random_affine(tensors: list[torch.Tensor], shift: float, rotate: float = 0.0, zoom: float = 0.0
                  ) -> list[torch.Tensor]:
    """The same random similarity transform per item for every tensor [B,C,H,W] of the list: translation uniform
    in [-shift, shift] px, rotation in [-rotate, rotate] degrees, scale in [1 - zoom, 1 + zoom]; bilinear, edges
    replicated (torch's global RNG). All zero: the tensors unchanged."""
    if not (shift or rotate or zoom):
        return tensors
    B, _, H, W = tensors[0].shape
    u = torch.rand(B, 4) * 2 - 1
    ang, sc = torch.deg2rad(u[:, 0] * rotate), 1.0 + u[:, 1] * zoom
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, u[:, 2] * 2 * shift / W], 1),
                         torch.stack([sin, cos, u[:, 3] * 2 * shift / H], 1)], 1)
    grid = F.affine_grid(theta.to(tensors[0]), [B, 1, H, W], align_corners=False)
    return [F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="border", align_corners=False)
            for x in tensors]


def landmark_region(cond: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """The eye / lip region of the current frame of a stacked cond [B,window*5,H,W]: its landmark-blob channel
    above 0.1, dilated by `radius` px -> [B,1,H,W] in {0,1}."""
    return F.max_pool2d((cond[:, -1:] > 0.1).float(), 2 * radius + 1, 1, radius)


# ------------------------------------------------------------------------------------------------ method
@register("dvp")
class DeepVideoPortraits(Method):
    description = "Deep Video Portraits: 3DMM conditioning maps over a temporal window -> U-Net + PatchGAN"
    Config = DVPConfig
    phases = ("d", "g")
    train_defaults = {"lr": 2e-4, "betas": (0.5, 0.999), "batch_size": 4, "steps": 1000, "eval_every": 250,
                      "ckpt_every": 250, "eval_batches": 0, "threads": 1}
    # what runs saved before these fields existed were trained and conditioned with
    legacy_config = {"mouth_fill": False, "shift": 0.0, "rotate": 0.0, "zoom": 0.0, "temporal": 0.0,
                     "past_dropout": 0.0, "distinct_window": False, "hold_repeats": False, "diff_window": False,
                     "ahead": 0}

    @classmethod
    def build_data(cls, cfg, data, seed):
        return build_portrait_data(cfg, data)

    def __init__(self, cfg: DVPConfig, info):
        super().__init__(cfg, info)
        for name, ok, want in (("shift", cfg.shift >= 0, ">= 0"), ("rotate", 0 <= cfg.rotate <= 180, "in [0, 180]"),
                               ("zoom", 0 <= cfg.zoom < 1, "in [0, 1)"),
                               ("temporal", cfg.temporal >= 0, ">= 0"),
                               ("past_dropout", 0 <= cfg.past_dropout <= 1, "in [0, 1]"),
                               ("ahead", cfg.ahead >= 0, ">= 0")):
            if not ok:
                raise NeuralRenderError(f"dvp: {name} must be {want}, got {getattr(cfg, name)}")
        c = info["cond_channels"]
        self.generator = UNet(c, 3, width=cfg.width, depth=cfg.depth, norm="instance", act="lrelu",
                              up="transpose", out_act="sigmoid")
        self.discriminator = PatchDiscriminator(c + 3, cfg.d_width, cfg.d_layers)
        self.register_buffer("mean_image", info["mean_image"].float().clone())

    def parameters_for(self, phase):
        return list((self.discriminator if phase == "d" else self.generator).parameters())

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """cond [B,window*5,H,W] -> image [B,3,H,W] in [0,1]."""
        return self.generator(cond)

    def training_pair(self, batch):
        """The (cond, image, mask) trained this step, augmented. With --temporal: the first B/2 items and their
        previous frames, stacked [t items; t-1 items] (one transform per pair); with --past-dropout: the window's
        past frames of a pair replaced by its current frame's maps with that probability."""
        c, r, m = batch["cond"], batch["image"], batch["mask"]
        h = max(c.shape[0] // 2, 1) if self.cfg.temporal else c.shape[0]
        k, c, r, m = c.shape[1], c[:h], r[:h], m[:h]
        pc = batch["cond_prev"][:h] if self.cfg.temporal else None
        if self.cfg.past_dropout and k > COND_CHANNELS:
            drop = (torch.rand(h) < self.cfg.past_dropout).view(h, 1, 1, 1).to(c.device)
            now = lambda x: x[:, -COND_CHANNELS:].repeat(1, k // COND_CHANNELS, 1, 1)  # noqa: E731
            if self.cfg.diff_window:  # a still window: zero changes
                now = lambda x: torch.cat([torch.zeros_like(x[:, :-COND_CHANNELS]), x[:, -COND_CHANNELS:]], 1)  # noqa: E731
            c, pc = torch.where(drop, now(c), c), (None if pc is None else torch.where(drop, now(pc), pc))
        if not self.cfg.temporal:
            return random_affine([c, r, m], self.cfg.shift, self.cfg.rotate, self.cfg.zoom)
        pr, pm = batch["image_prev"][:h], batch["mask_prev"][:h]
        c, r, m = random_affine([torch.cat([c, pc], 1), torch.cat([r, pr], 1), torch.cat([m, pm], 1)],
                                self.cfg.shift, self.cfg.rotate, self.cfg.zoom)
        return torch.cat([c[:, :k], c[:, k:]]), torch.cat([r[:, :3], r[:, 3:]]), torch.cat([m[:, :1], m[:, 1:]])

    def loss(self, phase, batch, step):
        def generate():  # once per step: the d and g phases see the same (augmented) pair
            c, r, m = self.training_pair(batch)
            return c, r, m, self(c)

        cond, real, mask, fake = self.step_output(step, phase, generate)
        if phase == "d":
            d = discriminator_loss(self.discriminator(torch.cat([cond, real], 1)),
                                   self.discriminator(torch.cat([cond, fake.detach()], 1)), self.cfg.gan_mode)
            return d, {"d": d.item()}
        adv = generator_loss(self.discriminator(torch.cat([cond, fake], 1)), self.cfg.gan_mode)
        w = 1.0 + self.cfg.face_weight * mask
        if self.cfg.landmark_weight:
            w = w + self.cfg.landmark_weight * landmark_region(cond)
        l1 = ((fake - real).abs() * w).mean() / w.mean()
        total, logs = self.cfg.lambda_gan * adv + self.cfg.lambda_l1 * l1, {"g_adv": adv.item(), "l1": l1.item()}
        if self.cfg.temporal:
            h = fake.shape[0] // 2
            dt = (fake[:h] - fake[h:]) - (real[:h] - real[h:])
            tl = (dt.abs() * w[:h]).mean() / w[:h].mean()
            total, logs["temporal"] = total + self.cfg.temporal * tl, tl.item()
        return total, logs

    @torch.no_grad()
    def evaluate(self, batch):
        out, prev = self(batch["cond"]), self(batch["cond_prev"])
        real, m = batch["image"], batch["mask"]
        both = m * batch["mask_prev"]
        res = {"face_l1": face_l1(out, real, m).mean().item(), "face_psnr": psnr(out, real, m).mean().item(),
               "flicker": 1000 * flicker(out, prev, real, batch["image_prev"], both).mean().item(),
               "psnr": psnr(out, real).mean().item()}
        nn, nnp = batch["nn"], batch["nn_prev"]
        res.update(nn_face_l1=face_l1(nn, real, m).mean().item(), nn_face_psnr=psnr(nn, real, m).mean().item(),
                   nn_flicker=1000 * flicker(nn, nnp, real, batch["image_prev"], both).mean().item(),
                   mean_face_psnr=psnr(self.mean_image.expand_as(real), real, m).mean().item())
        return res

    @torch.no_grad()
    def render(self, batch):
        out = self(batch["cond"])
        crgb = cond_to_rgb(batch["cond"])
        res = {"compare": torch.cat([crgb, out, batch["image"]], -1)}
        if "nn" in batch:
            res["nn_baseline"] = batch["nn"]
        return res

    @torch.no_grad()
    def generate(self, cond: torch.Tensor, batch: int = 16) -> torch.Tensor:
        """Stacked conditioning [T,window*5,H,W] -> frames [T,3,H,W], in chunks."""
        return torch.cat([self(cond[s:s + batch]) for s in range(0, cond.shape[0], batch)])
