"""Faces: the Surrey Face Model, landmarks, Face2Face-style tracking (synthetic round trip, gradients, bad input)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neuralrender.errors import DataError, NeuralRenderError


@pytest.fixture(scope="module")
def model(shared_data):
    from neuralrender.faces.model import FaceModel

    return FaceModel(num_identity=20)


def _synthetic(model, T=6, size=64, seed=0):
    """Known parameters, their rendered frames [T,3,size,size] and 68 landmarks [T,68,2] (contour landmarks on
    fixed contour vertices; 61/65 copied from the mouth corners, never used)."""
    g = torch.Generator().manual_seed(seed)
    p = model.default_params(T, size, size)
    ident = 0.8 * torch.randn(1, model.num_identity, generator=g)
    t = torch.linspace(0, 1, T).unsqueeze(-1)
    expr = torch.zeros(T, model.num_expression)
    expr[:, 3] = 0.6 * t[:, 0]  # happiness grows
    expr[:, 5] = 0.4 * (1 - t[:, 0])
    rot = torch.cat([0.05 * t, 0.25 * (t - 0.5), 0.02 * t], -1)
    trans = p.translation + torch.cat([5 * t, -3 * t, 20 * t], -1)
    sh = p.sh.clone()
    sh[:, 3, 0] = 0.3  # reddish light from +x
    alb = 0.05 * torch.randn(1, model.num_verts, 3, generator=g)
    p = p.replace(identity=ident, expression=expr, rotation=rot, translation=trans, sh=sh, albedo=alb)
    frames = model.render(p, size, size)["image"].clamp(0, 1)
    ids = model.ibug_vertex.clone()
    cr, cl = model.contour_right, model.contour_left
    pick = torch.linspace(0, 15, 8).round().long()
    ids[0:8], ids[9:17] = cr[pick], cl[pick]
    ids[60], ids[64] = ids[48], ids[54]
    v = model.shape(p.identity, p.expression, ids)
    lm = model.project(model.posed(v, p.rotation, p.translation), p.focal, size, size)
    return p, frames, lm


# ------------------------------------------------------------------------------------------ model + mapping
def test_model_loads_and_maps_landmarks(model):
    from neuralrender.faces.model import load_sfm

    d = load_sfm()
    assert model.num_verts == 3448 and model.faces.shape == (6736, 3) and model.num_expression == 6
    assert model.blendshape_names == ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]
    assert int((model.ibug_vertex >= 0).sum()) == 50
    assert int(model.ibug_vertex[30]) == 114 and int(model.ibug_vertex[8]) == 33  # nose tip, chin (ibug 31, 9)
    assert int(model.ibug_vertex[60]) == -1 and int(model.ibug_vertex[64]) == -1  # inner mouth corners undefined
    assert model.contour_right.numel() == 17 and model.contour_left.numel() == 17
    # the scaled basis has the eigenvalues as squared column norms
    assert np.allclose((d["basis"] ** 2).sum(0), d["eigenvalues"], rtol=1e-3)
    # frontal mean face: the subject's right eye is on the image's left, the chin below the nose, nose tip nearest
    p = model.default_params(1, 128, 128)
    lm, mask = model.landmarks_2d(p, 128, 128)
    assert lm[0, 36, 0] < lm[0, 30, 0] < lm[0, 45, 0]
    assert lm[0, 8, 1] > lm[0, 30, 1] > lm[0, 27, 1]
    cam = model.posed(model.shape(p.identity, p.expression), p.rotation, p.translation)
    assert int(cam[0, :, 2].argmin()) == 114 or float(cam[0, 114, 2] - cam[0, :, 2].min()) < 2.0
    r = model.render(p, 64, 64)
    assert r["image"].shape == (1, 3, 64, 64) and 0.05 < float(r["mask"].mean()) < 0.6


def test_axis_angle_rotation():
    from neuralrender.faces.model import axis_angle_to_matrix

    r = torch.tensor([[0.0, 0.0, math.pi / 2], [1e-9, 0, 0], [0.3, -0.2, 0.5]])
    R = axis_angle_to_matrix(r)
    assert torch.allclose(R[0], torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), atol=1e-6)
    assert torch.allclose(R[1], torch.eye(3), atol=1e-6)
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(R), torch.ones(3), atol=1e-5)


def test_bad_model_files(tmp_path, shared_data):
    from neuralrender.faces.model import load_sfm

    with pytest.raises(DataError, match="sfm_shape_3448_export.npz"):
        load_sfm(tmp_path)
    np.savez(tmp_path / "sfm_shape_3448_export.npz", mean=np.zeros((4, 3), np.float32))
    with pytest.raises(DataError, match="basis_orthonormal"):
        load_sfm(tmp_path)


# ------------------------------------------------------------------------------------------ landmarks
def test_shared_landmarks_read_as_given(shared_data):
    from neuralrender.faces.landmarks import inter_ocular, load_landmarks

    p = shared_data / "videos" / "face_talking" / "driving_obama_weekly_address_256_landmarks.npz"
    lm = load_landmarks(p, 265)
    raw = np.load(p)["dlib68_xy_pixels"]
    assert lm.landmarks.shape == (265, 68, 2) and bool(lm.valid.all())
    assert torch.allclose(lm.landmarks, torch.from_numpy(raw) + 0.5)  # dlib integer pixels -> pixel centres
    assert lm.mediapipe is not None and lm.mediapipe.shape == (265, 468, 3)
    assert 40 < float(inter_ocular(lm.landmarks).mean()) < 120
    with pytest.raises(DataError, match="265 frames"):
        load_landmarks(p, 200)


def test_bad_landmark_files_and_missing_frames(tmp_path):
    from neuralrender.faces.landmarks import interpolate_missing, load_landmarks

    np.savez(tmp_path / "a.npz", dlib68_xy_pixels=np.zeros((5, 5, 2), np.float32))
    with pytest.raises(DataError, match="dlib68_xy_pixels"):
        load_landmarks(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", other=np.zeros(3))
    with pytest.raises(DataError, match="b.npz"):
        load_landmarks(tmp_path / "b.npz")
    x = torch.arange(5, dtype=torch.float32).view(5, 1, 1).expand(5, 68, 2).clone()
    x[2] = float("nan")
    np.savez(tmp_path / "c.npz", dlib68_xy_pixels=x.numpy())
    lm = load_landmarks(tmp_path / "c.npz")
    assert lm.valid.tolist() == [True, True, False, True, True]
    assert torch.allclose(lm.landmarks[2], torch.full((68, 2), 2.5))  # interpolated (+0.5 pixel centre)
    assert torch.allclose(interpolate_missing(x, lm.valid), torch.arange(5.0).view(5, 1, 1).expand(5, 68, 2))


def test_dlib_path_missing_dependency(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dlib", None)  # as if the `faces` extra were not installed
    from neuralrender.errors import MissingDependencyError
    from neuralrender.faces.landmarks import landmarks_for_video

    with pytest.raises(MissingDependencyError, match="faces"):
        landmarks_for_video(tmp_path / "clip.mp4", frames=torch.rand(2, 3, 16, 16))


def test_dlib_detects_caches_and_reports_a_frame_without_face(tmp_path, shared_data):
    """A video without a landmarks file: dlib's 68 points on every frame, a blank frame (no face) marked
    invalid and interpolated, the result cached beside the video; it matches the shipped dlib68 array."""
    import importlib.util

    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("dlib / face_recognition_models not installed (extra 'faces')")
    from neuralrender.faces.landmarks import landmarks_for_video, load_landmarks
    from neuralrender.io.video import read_video, write_video

    stem = shared_data / "videos" / "face_talking" / "driving_obama_weekly_address_256"
    frames = read_video(f"{stem}.mp4", count=5).contiguous()  # NCHW in memory (dlib must still see the images)
    frames[2] = 0.0
    lm = landmarks_for_video(tmp_path / "clip.mp4", frames)
    assert lm.source == "dlib" and lm.valid.tolist() == [True, True, False, True, True]
    given = load_landmarks(f"{stem}_landmarks.npz").landmarks[:5]
    ok = lm.valid
    assert float((lm.landmarks[ok] - given[ok]).abs().max()) <= 2.0  # same detector (frames re-read, no re-encode)
    assert torch.allclose(lm.landmarks[2], 0.5 * (lm.landmarks[1] + lm.landmarks[3]))
    cached = load_landmarks(tmp_path / "clip_landmarks.npz", 5)  # the cache, read back with the same convention
    assert torch.allclose(cached.landmarks, lm.landmarks) and cached.valid.tolist() == lm.valid.tolist()
    write_video(frames, tmp_path / "clip2.mp4", fps=25)
    again = landmarks_for_video(tmp_path / "clip2.mp4")  # decoded from the file, detected, cached
    assert again.valid.tolist() == [True, True, False, True, True]


# ------------------------------------------------------------------------------------------ tracking
def test_synthetic_round_trip(model):
    """Render known parameters, track them from the frames + exact landmarks, recover them up to the monocular
    depth / scale ambiguity (absolute depth is off by ~2% at 1 m with a 28 degree field of view, so geometry is
    compared after centring). Measured (64x64, 6 frames): landmarks ~0.1 px, centred vertex error ~3.5 mm,
    depth ~1.8%, rotation <= 0.08 rad; photometric L1 0.047 (landmarks only) -> ~0.02 (+ photometric)."""
    from neuralrender.faces.tracking import TrackConfig, track_video

    p, frames, lm = _synthetic(model)
    cfg = TrackConfig(num_identity=20, focal=float(p.focal[0]), rigid_iters=80, landmark_iters=200,
                      photo_sizes=(64,), photo_epochs=(30,), batch_frames=6, quiet=True)
    tr = track_video(frames, lm, None, cfg, model)
    q = tr.params
    assert float(tr.lm_px.mean()) < 0.5
    v_true = model.posed(model.shape(p.identity, p.expression), p.rotation, p.translation)
    v_est = model.posed(model.shape(q.identity, q.expression), q.rotation, q.translation)
    centred = (v_true - v_true.mean(1, keepdim=True)) - (v_est - v_est.mean(1, keepdim=True))
    assert float(centred.norm(dim=-1).mean()) < 5.0
    assert float(((q.translation[:, 2] - p.translation[:, 2]) / p.translation[:, 2]).abs().max()) < 0.04
    assert float((q.rotation - p.rotation).abs().max()) < 0.12
    assert float((q.expression - p.expression).abs().mean()) < 0.1
    # the expression that grows in the video (happiness) grows in the track
    assert float(q.expression[-1, 3] - q.expression[0, 3]) > 0.3
    # the photometric stage lowers the photometric error compared with landmarks alone
    tr0 = track_video(frames, lm, None, TrackConfig(**{**cfg.__dict__, "photometric": False}), model)
    assert float(tr.photo.mean()) < 0.7 * float(tr0.photo.mean())


def test_gradcheck_photometric_term(model):
    from neuralrender.faces.tracking import photometric_term

    m = model.double()
    try:
        p = m.default_params(1, 16, 16)
        p = p.replace(**{k: v.double() for k, v in p.as_dict().items()})
        p.translation[:, 2] = 450.0  # the face fills the 16x16 image
        target = torch.rand(1, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

        def f(expr, rot):
            r = m.render(p.replace(expression=expr, rotation=rot), 16, 16, backend="torch")
            return photometric_term(r["image"], r["mask"], target)

        expr = (0.2 * torch.rand(1, 6, dtype=torch.float64)).requires_grad_(True)
        rot = torch.tensor([[0.05, -0.1, 0.02]], dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(f, (expr, rot), eps=1e-6, atol=1e-5, rtol=1e-3)
    finally:
        model.float()


def test_missing_frames_are_interpolated_and_reported(model):
    from neuralrender.faces.tracking import TrackConfig, track_video

    p, frames, lm = _synthetic(model, T=5)
    valid = torch.tensor([True, True, False, True, True])
    lm = lm.clone()
    lm[2] = float("nan")
    frames = frames.clone()
    frames[2] = 0.0  # no face in this frame
    cfg = TrackConfig(num_identity=20, focal=float(p.focal[0]), rigid_iters=60, landmark_iters=100,
                      photometric=False, quiet=True)
    tr = track_video(frames, lm, valid, cfg, model)
    assert tr.summary()["missing"] == 1 and not bool(tr.valid[2])
    mid = 0.5 * (tr.params.rotation[1] + tr.params.rotation[3])
    assert torch.allclose(tr.params.rotation[2], mid, atol=1e-5)
    assert torch.isfinite(tr.params.translation).all()


def test_bad_inputs(model, tmp_path):
    from neuralrender.faces.tracking import TrackConfig, load_track, save_track, track_video

    p, frames, lm = _synthetic(model, T=3)
    with pytest.raises(NeuralRenderError, match="68,2"):
        track_video(frames, lm[:, :50], None, TrackConfig(quiet=True), model)
    with pytest.raises(NeuralRenderError, match="68,2"):
        track_video(frames, lm[:2], None, TrackConfig(quiet=True), model)
    cfg = TrackConfig(num_identity=20, rigid_iters=5, landmark_iters=5, photometric=False, quiet=True)
    tr = track_video(frames, lm, None, cfg, model)
    path = save_track(tr, tmp_path / "t.safetensors")
    back = load_track(path, num_frames=3)
    assert torch.equal(back.params.expression, tr.params.expression) and back.width == 64
    with pytest.raises(DataError, match="3 frames"):
        load_track(path, num_frames=10)  # a track from another video length


def test_cli_undecodable_video_and_smoke(tmp_path, shared_data, capsys):
    from neuralrender.faces.cli import cli

    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    assert cli(["track", str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "broken.mp4" in capsys.readouterr().err
    out = tmp_path / "run"
    rc = cli(["track", "shared:videos/face_talking/driving_obama_weekly_address_256.mp4", "--frames", "4",
              "--out", str(out), "--landmark-iters", "30", "--sizes", "32", "--epochs", "1", "--quiet"])
    assert rc == 0
    assert (out / "track.safetensors").is_file() and (out / "overlay.mp4").stat().st_size > 1000
    import json

    rep = json.loads((out / "report.json").read_text())
    assert len(rep["frames"]) == 4 and rep["summary"]["missing"] == 0
