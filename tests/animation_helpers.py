"""Helpers shared by the animation tests: tiny configs and a synthetic moving-disc video folder."""

import numpy as np

TINY = {"size": 32, "batch_size": 2, "eval_batches": 1, "quiet": True, "threads": 1, "max_features": 16,
        "eval_every": 0, "log_every": 1, "max_frames": 8, "eval_stride": 4}
TINY_MODEL = {
    "fomm": {"num_kp": 3, "kp_width": 4, "motion_width": 4, "gen_width": 4, "kp_blocks": 2, "motion_blocks": 2,
             "gen_res": 1, "kp_scale": 1.0},
    "monkey-net": {"num_kp": 3, "kp_width": 4, "motion_width": 4, "gen_width": 4, "kp_blocks": 2,
                   "motion_blocks": 2, "gen_down": 2, "kp_scale": 1.0},
    "x2face": {"width": 4, "depth": 2},
    "copart": {"num_parts": 3, "seg_width": 4, "seg_blocks": 2, "gen_width": 4, "gen_res": 1, "seg_scale": 1.0},
}


def moving_disc_videos(folder, n=4, frames=32, size=32, seed=0):
    """n GIFs of a coloured disc circling over a fixed gradient background (a known, large motion)."""
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    bg = np.stack([0.2 + 0.3 * xx / size, 0.2 + 0.3 * yy / size, 0.3 * np.ones_like(xx)], -1)
    for v in range(n):
        col = rng.uniform(0.6, 1.0, 3)
        phase = rng.uniform(0, 2 * np.pi)
        out = []
        for t in range(frames):
            a = phase + 2 * np.pi * t / frames
            cx, cy = size / 2 + size * 0.25 * np.cos(a), size / 2 + size * 0.25 * np.sin(a)
            m = np.clip(size * 0.15 + 0.5 - np.hypot(xx - cx, yy - cy), 0, 1)[..., None]
            out.append(((bg * (1 - m) + col * m) * 255).round().astype(np.uint8))
        iio.imwrite(folder / f"clip{v}.gif", np.stack(out), duration=40, loop=0)
    return folder
