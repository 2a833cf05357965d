"""Rasterizer: agreement with trimesh ray casting on real meshes, conventions, backends, bad inputs."""

import numpy as np
import pytest
import torch

from neuralrender.errors import MissingDependencyError, NeuralRenderError
from neuralrender.graphics.cameras import Cameras, intrinsics_from_fov, look_at, orbit
from neuralrender.graphics.interpolate import interpolate
from neuralrender.graphics.raster import (
    _bary_forward,
    available_backends,
    join_meshes,
    rasterize,
    rasterize_clip,
    resolve_backend,
)
from neuralrender.graphics.raster_cpu import get_extension, rasterize_visibility, rasterize_visibility_torch

BACKENDS = available_backends()
MESHES = {"spot": ("meshes", "spot", "spot_triangulated.obj"), "fuze": ("meshes", "fuze", "fuze.obj"),
          "duck": ("meshes", "duck", "Duck.glb")}


def _load(shared_data, name):
    trimesh = pytest.importorskip("trimesh")
    m = trimesh.load(shared_data.joinpath(*MESHES[name]), force="mesh")
    return m, torch.tensor(np.asarray(m.vertices), dtype=torch.float32), torch.tensor(np.asarray(m.faces))


def _cams_for(v, n=3, w=120, h=96, dev="cpu"):
    c = 0.5 * (v.min(0).values + v.max(0).values)
    r = float((v - c).norm(dim=1).max())
    return orbit(n, radius=2.6 * r, elevation_deg=25.0, target=c, fov_deg=45.0, width=w, height=h,
                 start_azimuth_deg=30.0).to(dev)


def _device(backend):
    return "cuda" if backend in ("nvdiffrast", "pytorch3d") else "cpu"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["spot", "fuze", "duck"])
def test_face_ids_match_ray_casting(shared_data, name, backend):
    m, v, f = _load(shared_data, name)
    dev = _device(backend)
    cams = _cams_for(v, dev=dev)
    fr = rasterize(cams, v.to(dev), f.to(dev), backend=backend)
    origins, dirs = cams.rays()
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    except ImportError:
        from trimesh.ray.ray_triangle import RayMeshIntersector
    hits = RayMeshIntersector(m).intersects_first(origins.reshape(-1, 3).cpu().double().numpy(),
                                                   dirs.reshape(-1, 3).cpu().double().numpy())
    ref = torch.from_numpy(np.asarray(hits)).long().view_as(fr.face_id)
    ours = fr.face_id.cpu()
    covered = (ref >= 0) | (ours >= 0)
    n_cov = int(covered.sum())
    assert n_cov > 0.1 * ours.numel()
    mask_disagree = int(((ref >= 0) != (ours >= 0)).sum())
    id_agree = int(((ref == ours) & covered).sum())
    assert mask_disagree / n_cov < 0.005, f"{name}/{backend}: coverage differs on {mask_disagree}/{n_cov} pixels"
    assert id_agree / n_cov >= 0.995, f"{name}/{backend}: face ids agree on {id_agree}/{n_cov} covered pixels"


def test_cpp_and_torch_paths_agree_exactly(shared_data):
    if get_extension() is None:
        pytest.skip("C++ kernel not built here (no compiler or NR_NO_CPP=1)")
    _, v, f = _load(shared_data, "spot")
    cams = _cams_for(v, n=2, w=64, h=48)
    # a camera inside the mesh: faces cross the near plane and the camera plane
    R, t = look_at(v.mean(0, keepdim=True), v.mean(0, keepdim=True) + torch.tensor([[1.0, 0.0, 0.0]]))
    inside = Cameras(K=intrinsics_from_fov(90.0, 64, 48), R=R, t=t, width=64, height=48)
    for cam in (cams, inside):
        clip = cam.to_clip(v, 0.01, 100.0)
        for cull in (False, True):
            a, da, ba = rasterize_visibility(clip, f, 48, 64, cull)
            b, db = rasterize_visibility_torch(clip, f, 48, 64, cull)
            assert torch.equal(a, b)
            assert torch.equal(da, db)
            assert (a >= 0).any()
            # the kernel's barycentrics equal the torch recomputation
            bt, dt = _bary_forward(clip.double(), f, a)
            assert torch.allclose(ba.double(), bt, atol=1e-5) and torch.allclose(da.double(), dt, rtol=1e-5)


def test_clip_space_pixel_centres():
    # a square x_ndc, y_ndc in [-0.5, 0.5] on an 8x8 image covers exactly columns/rows 2..5
    verts = torch.tensor([[-0.5, -0.5, 0, 1], [0.5, -0.5, 0, 1], [0.5, 0.5, 0, 1], [-0.5, 0.5, 0, 1]]).float()
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    for backend in BACKENDS:
        dev = _device(backend)
        fr = rasterize_clip(verts.to(dev), faces.to(dev), (8, 8), backend=backend)
        expect = torch.zeros(8, 8, dtype=torch.bool)
        expect[2:6, 2:6] = True
        assert torch.equal(fr.mask[0].cpu(), expect)
    # y_ndc = -1 is the top row: a triangle in y_ndc < 0 covers only the top half
    tri = torch.tensor([[-1, -1, 0, 1], [1, -1, 0, 1], [-1, -0.01, 0, 1]]).float()
    fr = rasterize_clip(tri, torch.tensor([[0, 1, 2]]), (8, 8))
    assert fr.mask[0, :4].any() and not fr.mask[0, 4:].any()


def test_depth_and_perspective_correct_barycentrics():
    # a tilted quad: interpolated world points must project back onto the pixel centres
    verts = torch.tensor([[-1.0, -1, 2], [1, -1, 4], [1, 1, 4], [-1, 1, 2]])
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    cam = Cameras(K=intrinsics_from_fov(60.0, 40, 30), R=torch.eye(3), t=torch.zeros(3), width=40, height=30)
    fr = rasterize(cam, verts, faces)
    pts = interpolate(verts, fr)  # [1,H,W,3]
    m = fr.mask[0]
    assert m.float().mean() > 0.3
    xy, z = cam.project(pts[0][m][None])
    centres = cam.pixel_grid()[m]
    assert torch.allclose(xy[0], centres, atol=2e-3)
    assert torch.allclose(z[0], fr.depth[0][m], rtol=1e-5)
    assert torch.allclose(fr.bary.sum(-1)[fr.mask], torch.ones(int(m.sum())), atol=1e-5)
    assert (fr.bary[fr.mask] >= -1e-6).all()
    assert (fr.depth[~fr.mask] == 0).all() and (fr.bary[~fr.mask] == 0).all()


def test_backface_culling_and_winding():
    # counter-clockwise as seen from the camera (y up in the view) = front facing
    cam = Cameras(K=intrinsics_from_fov(60.0, 16, 16), R=torch.eye(3), t=torch.zeros(3), width=16, height=16)
    # OpenCV camera: y down, so world (x, -y) is "up" in the view; CCW in the view:
    front = torch.tensor([[-1.0, 1, 3], [1, 1, 3], [0, -1, 3]])
    face = torch.tensor([[0, 1, 2]])
    n = torch.cross(front[1] - front[0], front[2] - front[0], dim=0)
    assert n[2] < 0  # normal points towards the camera (-z)
    assert rasterize(cam, front, face, cull_backfaces=True).mask.any()
    back = torch.tensor([[0, 2, 1]])
    assert not rasterize(cam, front, back, cull_backfaces=True).mask.any()
    assert rasterize(cam, front, back, cull_backfaces=False).mask.any()


def test_batch_of_cameras_matches_single(shared_data):
    _, v, f = _load(shared_data, "fuze")
    cams = _cams_for(v, n=3, w=48, h=40)
    fr = rasterize(cams, v, f)
    for i in range(3):
        fi = rasterize(cams[i], v, f)
        assert torch.equal(fr.face_id[i], fi.face_id[0])
        assert torch.allclose(fr.bary[i], fi.bary[0])
    # batched verts [B,V,3]
    vb = torch.stack([v, v + 0.01, v - 0.01])
    frb = rasterize(cams, vb, f)
    assert torch.equal(frb.face_id[0], rasterize(cams[0], v, f).face_id[0])


def test_join_meshes():
    v1 = torch.tensor([[-1.0, -1, 3], [1, -1, 3], [0, 1, 3]])
    v2 = v1 + torch.tensor([0.0, 0.0, -1.0])  # closer copy
    v, f, offs = join_meshes([(v1, torch.tensor([[0, 1, 2]])), (v2, torch.tensor([[0, 1, 2]]))])
    assert v.shape == (6, 3) and f.tolist() == [[0, 1, 2], [3, 4, 5]] and offs.tolist() == [0, 1, 2]
    cam = Cameras(K=intrinsics_from_fov(60.0, 16, 16), R=torch.eye(3), t=torch.zeros(3), width=16, height=16)
    fr = rasterize(cam, v, f)
    mesh_of = torch.bucketize(fr.face_id[fr.mask], offs[1:], right=True)
    assert (mesh_of == 1).all()  # the nearer copy hides the other


def test_bad_inputs():
    cam = Cameras(K=intrinsics_from_fov(60.0, 16, 16), R=torch.eye(3), t=torch.zeros(3), width=16, height=16)
    v = torch.tensor([[-1.0, -1, 3], [1, -1, 3], [0, 1, 3]])
    f = torch.tensor([[0, 1, 2]])
    bad = v.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(NeuralRenderError, match="NaN"):
        rasterize(cam, bad, f)
    with pytest.raises(NeuralRenderError, match="out of range"):
        rasterize(cam, v, torch.tensor([[0, 1, 3]]))
    with pytest.raises(NeuralRenderError, match="out of range"):
        rasterize(cam, v, torch.tensor([[0, -1, 2]]))
    with pytest.raises(NeuralRenderError, match="resolution"):
        rasterize_clip(torch.zeros(1, 3, 4), f, (0, 16))
    with pytest.raises(NeuralRenderError, match="resolution"):
        rasterize_clip(torch.zeros(1, 3, 4), f, (20000, 16))
    with pytest.raises(NeuralRenderError, match="faces"):
        rasterize(cam, v, torch.tensor([0, 1, 2]))
    with pytest.raises(NeuralRenderError, match="backend"):
        rasterize(cam, v, f, backend="vulkan")
    # all geometry behind the camera -> empty fragments
    fr = rasterize(cam, v * torch.tensor([1.0, 1.0, -1.0]), f)
    assert not fr.mask.any() and (fr.depth == 0).all()
    # zero-area triangle: not drawn, no crash; empty face list: empty render
    assert not rasterize(cam, torch.tensor([[0.0, 0, 3], [1, 1, 3], [2, 2, 3]]), f).mask.any()
    assert not rasterize(cam, v, torch.zeros(0, 3, dtype=torch.long)).mask.any()
    # a face crossing the camera plane is clipped, not garbled: only the part in front is drawn
    cross = torch.tensor([[-1.0, 0.5, -1], [1, 0.5, -1], [0, 0.5, 5]])
    fr = rasterize(cam, cross, f, near=0.1)
    assert fr.mask.any() and (fr.depth[fr.mask] >= 0.1 - 1e-4).all()
    assert not fr.mask[0, :8].any()  # the plane y = 0.5 is below the horizon: only lower rows


def test_backend_selection():
    assert "cpu" in available_backends()
    assert resolve_backend("auto", "cpu") == "cpu"
    assert resolve_backend("torch", "cpu") == "torch"
    if "nvdiffrast" not in BACKENDS:
        with pytest.raises(NeuralRenderError):
            resolve_backend("nvdiffrast", "cpu")
        try:
            import nvdiffrast  # noqa: F401
        except ImportError:
            with pytest.raises(MissingDependencyError, match=r"neuralrender\[gpu\]"):
                resolve_backend("nvdiffrast", "cpu")
    if "pytorch3d" not in BACKENDS:
        try:
            import pytorch3d  # noqa: F401
        except ImportError:
            with pytest.raises(MissingDependencyError, match=r"neuralrender\[pytorch3d\]"):
                resolve_backend("pytorch3d", "cpu")


def test_torch_backend_matches_cpu_on_small_scene():
    cam = orbit(2, radius=3.0, width=32, height=24)
    v, f = _icosphere(2)
    a = rasterize(cam, v, f, backend="cpu")
    b = rasterize(cam, v, f, backend="torch")
    assert torch.equal(a.face_id, b.face_id)


def test_camera_inside_mesh_matches_ray_casting(shared_data):
    """Near-plane clipping: from inside spot, every pixel sees the first surface along its ray."""
    m, v, f = _load(shared_data, "spot")
    c = 0.5 * (v.min(0).values + v.max(0).values)
    eye = c[None]
    R, t = look_at(eye, eye + torch.tensor([[1.0, 0.1, 0.2]]))
    cam = Cameras(K=intrinsics_from_fov(100.0, 64, 48), R=R, t=t, width=64, height=48)
    fr = rasterize(cam, v, f, near=1e-4)
    assert fr.mask.float().mean() > 0.99  # closed mesh: everything is covered
    try:
        from trimesh.ray.ray_pyembree import RayMeshIntersector
    except ImportError:
        from trimesh.ray.ray_triangle import RayMeshIntersector
    o, d = cam.rays()
    hits = RayMeshIntersector(m).intersects_first(o.reshape(-1, 3).double().numpy(), d.reshape(-1, 3).double().numpy())
    ref = torch.from_numpy(np.asarray(hits)).long().view(48, 64)
    assert (ref == fr.face_id[0]).float().mean() >= 0.995


def test_antialias_blends_by_edge_coverage():
    """A vertical silhouette edge at x = 5.8 / 6.2 pixels covers 0.8 of pixel 5 / 0.2 of pixel 6."""
    from neuralrender.graphics.antialias import antialias

    H, W = 4, 10
    for xe, col, expect in ((5.8, 5, 0.8), (6.2, 6, 0.2)):
        xn = 2 * xe / W - 1
        verts = torch.tensor([[-3.0, -3, 0, 1], [xn, -3, 0, 1], [xn, 3, 0, 1], [-3, 3, 0, 1]])
        faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
        fr = rasterize_clip(verts, faces, (H, W))
        img = antialias(fr.mask[:, None].float(), fr)
        assert torch.allclose(img[0, 0, :, col], torch.full((H,), expect), atol=1e-5)
        assert torch.allclose(img[0, 0, :, :5], torch.ones(H, 5))  # interior: the diagonal edge is shared
        assert (img[0, 0, :, 7:] == 0).all()


def test_import_does_not_pull_optional_dependencies():
    import subprocess
    import sys

    code = ("import sys, neuralrender.graphics.raster, neuralrender.graphics.texture, neuralrender.graphics.antialias, "
            "neuralrender.graphics.cameras, neuralrender.graphics.raster_nvdiffrast, neuralrender.graphics.raster_pytorch3d;"
            "bad=[m for m in ('nvdiffrast','pytorch3d','cv2','open3d','xatlas','embreex') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_cpp_env_forces_torch_fallback():
    import subprocess
    import sys

    code = ("import torch; from neuralrender.graphics.raster_cpu import get_extension;"
            "from neuralrender.graphics.raster import rasterize; from neuralrender.graphics.cameras import orbit;"
            "from neuralrender.graphics.meshes import icosphere; m = icosphere(1);"
            "fr = rasterize(orbit(1, width=16, height=12), m.verts.float(), m.faces);"
            "assert get_extension() is None; print(int(fr.mask.sum()))")
    env = dict(__import__("os").environ, NR_NO_CPP="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    ref = rasterize(orbit(1, width=16, height=12), *_icosphere(1))
    assert int(r.stdout.strip()) == int(ref.mask.sum()) > 0


def _icosphere(n):
    from neuralrender.graphics.meshes import icosphere

    m = icosphere(n)
    return m.verts.float(), m.faces
