"""Rasterizer speed, side by side in one run: every available backend and a plain single-thread C++ z-buffer.

For a ~20k-face icosphere and for spot (5856 faces) at 256^2 and 512^2 it prints ms per frame and
triangles per second for
- "fwd":        rasterize() (to_clip + visibility + torch barycentrics/depth) + interpolate of a 3-channel attribute,
- "fwd+bwd":    the same followed by backward to the vertex positions,
- the reference (benchmarks/zbuffer_ref.cpp: face id + depth + perspective-correct barycentrics, forward only),
plus the ratios ours/reference and fwd+bwd/fwd and the peak resident-memory increase during each row.

    python benchmarks/raster.py            # full table
    python benchmarks/raster.py --quick    # fewer repetitions
    python benchmarks/raster.py --threads 1 --torch-fallback   # one thread everywhere, plus the pure-torch path

On a shared, oversubscribed machine wall times swing by 10x; the cpu/ref column (process CPU time of
rasterize over that of the reference, best of the repetitions) is the stable comparison.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neuralrender.graphics.cameras import orbit  # noqa: E402
from neuralrender.graphics.interpolate import interpolate  # noqa: E402
from neuralrender.graphics.raster import available_backends, rasterize  # noqa: E402
from neuralrender.graphics.raster_cpu import build_extension, get_extension  # noqa: E402
from neuralrender.paths import shared_path  # noqa: E402


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Samples the resident set size every millisecond; ``peak_mb`` is the increase over the start."""

    def __enter__(self):
        self.base = _rss_bytes()
        self.peak = self.base
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop = True
        self._t.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _time_interleaved(fns: dict, reps: int, sync) -> dict:
    """Best-of-reps wall time in ms of each function (and, as "<name>_cpu", its process CPU time summed over
    threads), calling them in turn so that load from other processes on a shared machine hits all alike."""
    for fn in fns.values():  # warm-up
        fn()
    sync()
    best = {k: float("inf") for k in fns}
    cpu = {k: float("inf") for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            sync()
            best[k] = min(best[k], time.perf_counter() - t0)
            cpu[k] = min(cpu[k], time.process_time() - c0)
    out = {k: v * 1000.0 for k, v in best.items()}
    out.update({k + "_cpu": v * 1000.0 for k, v in cpu.items()})
    return out


def load_meshes():
    from neuralrender.graphics.meshes import icosphere

    out = {}
    ico = icosphere(5)
    out["icosphere-20k"] = (ico.verts.float(), ico.faces.long())
    spot = shared_path("meshes", "spot", "spot_triangulated.obj")
    if spot.is_file():
        import numpy as np
        import trimesh

        m = trimesh.load(spot, force="mesh")
        v = torch.tensor(np.asarray(m.vertices), dtype=torch.float32)
        v = v - 0.5 * (v.min(0).values + v.max(0).values)
        out["spot"] = (v / v.norm(dim=1).max(), torch.tensor(np.asarray(m.faces)))
    else:
        print(f"(spot not found at {spot}; skipped)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--torch-fallback", action="store_true", help="also time the pure-torch fallback (slow)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (also the CPU kernel's); 0 = default")
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    reps = 3 if args.quick else 10
    sizes = [int(s) for s in args.sizes.split(",")]
    ref = build_extension(Path(__file__).with_name("zbuffer_ref.cpp"), "nr_zbuffer_ref")
    have_cpp = get_extension() is not None
    backends = available_backends()
    if args.torch_fallback:
        backends.append("torch")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu kernel compiled: {have_cpp}, "
          f"backends: {', '.join(backends)}")
    hdr = (f"{'mesh':14s} {'res':>4s} {'backend':10s} {'ref ms':>7s} {'rast ms':>8s} {'Mtri/s':>7s} {'vs ref':>6s} "
           f"{'cpu/ref':>7s} {'+interp':>8s} {'f+b ms':>8s} {'f+b/fwd':>7s} {'peak MB':>8s} {'ids=ref':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for name, (v, f) in load_meshes().items():
        F = f.shape[0]
        colors = (v - v.min(0).values) / (v.max(0).values - v.min(0).values)
        for S in sizes:
            cams = orbit(1, radius=2.5, elevation_deg=20.0, fov_deg=45.0, width=S, height=S, start_azimuth_deg=30.0)
            clip = cams.to_clip(v)[0].contiguous()
            fid_ref = ref.zbuffer_ref(clip, f, S, S)[0]
            for be in backends:
                dev = "cuda" if be in ("nvdiffrast", "pytorch3d") else "cpu"
                sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
                vd, fd, cd, cams_d = v.to(dev), f.to(dev), colors.to(dev), cams.to(dev)
                vg = vd.clone().requires_grad_(True)

                def rast():
                    with torch.no_grad():
                        return rasterize(cams_d, vd, fd, backend=be)

                def fwd():
                    with torch.no_grad():
                        return interpolate(cd, rasterize(cams_d, vd, fd, backend=be))

                def fwd_bwd():
                    out = interpolate(cd, rasterize(cams_d, vg, fd, backend=be))
                    out.sum().backward()
                    vg.grad = None

                fns = {"ref": lambda: ref.zbuffer_ref(clip, f, S, S), "rast": rast, "fwd": fwd, "fb": fwd_bwd}
                with PeakRSS() as mem:
                    t = _time_interleaved(fns, 1 if be == "torch" else reps, sync)
                agree = (rast().face_id[0].cpu() == fid_ref).float().mean().item()
                print(f"{name:14s} {S:4d} {be:10s} {t['ref']:7.2f} {t['rast']:8.2f} {F / t['rast'] / 1e3:7.2f} "
                      f"{t['rast'] / t['ref']:6.2f} {t['rast_cpu'] / max(t['ref_cpu'], 1e-6):7.2f} {t['fwd']:8.2f} {t['fb']:8.2f} {t['fb'] / t['fwd']:7.2f} "
                      f"{mem.peak_mb:8.1f} {100 * agree:7.2f}%")
    print("ref = benchmarks/zbuffer_ref.cpp (1 thread: ids + depth + bary); rast = rasterize() under no_grad; "
          "vs ref = wall-time ratio; cpu/ref = ratio of process CPU time (all threads; robust to a loaded machine); "
          "+interp = rasterize + interpolate(3 ch); f+b = that with backward to the vertices; f+b/fwd = f+b / +interp; "
          "peak MB = resident-memory increase while timing the row; ids=ref = pixels whose face id equals the reference")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"process peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
