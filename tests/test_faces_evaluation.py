"""The cross-reenactment checks (neuralrender.faces.evaluation) on real frames of the two talking-head clips:
ground truth against itself passes, the other identity / unrelated mouth motion fails. Needs dlib (extra
`faces`); skipped without it."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from neuralrender.faces.evaluation import mouth_opening, pearson

OBAMA = "videos/face_talking/driving_obama_weekly_address_256"
KATIE = "videos/face_talking/source_katiehill_weekly_address_256"
N = 8


def test_pearson_and_mouth_opening():
    a = torch.tensor([0.0, 1.0, 2.0, float("nan"), 4.0])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert math.isnan(pearson(a[:2], a[:2]))  # fewer than 3 finite pairs
    lm = torch.zeros(2, 68, 2)
    lm[:, 36, 0], lm[:, 45, 0] = 0.0, 100.0  # outer eye corners 100 px apart
    lm[0, 66, 1], lm[1, 66, 1] = 0.0, 25.0  # lower inner lip 0 / 25 px below the upper one
    assert torch.allclose(mouth_opening(lm), torch.tensor([0.0, 0.25]))


@pytest.fixture(scope="module")
def clips(shared_data):
    for mod in ("dlib", "face_recognition_models"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} not installed (extra 'faces')")
    from neuralrender.faces.evaluation import mean_embedding
    from neuralrender.faces.landmarks import load_landmarks
    from neuralrender.io.video import read_video

    out = {}
    for name, stem in (("obama", OBAMA), ("katie", KATIE)):
        frames = read_video(shared_data / f"{stem}.mp4", count=120)
        lm = load_landmarks(shared_data / f"{stem}_landmarks.npz").landmarks[:120]
        ref, n = mean_embedding(frames[4::40])  # identity reference: 3 other frames
        assert n == 3
        out[name] = (frames[::120 // N][:N], lm[::120 // N][:N], ref)  # test frames, their landmarks, identity
    return out


def test_checks_pass_on_ground_truth_and_fail_across_identities(clips):
    from neuralrender.faces.evaluation import reenactment_checks

    ob, ob_lm, ob_ref = clips["obama"]
    ka, ka_lm, ka_ref = clips["katie"]
    # the target's own frames "driven" by themselves: dlib re-detects the given landmarks, same identity
    r = reenactment_checks(ob, ob_lm, ob_ref, ka_ref)
    assert r["mouth_frames_with_face"] == N and r["mouth_corr_dlib"] > 0.99, r
    assert r["identity_dist_to_target"] < 0.5 < r["identity_dist_to_source"], r  # dlib: same person < 0.6
    assert r["identity_frac_nearer_target"] == 1.0 and r["passed_mouth_corr_ge_0.8"]
    assert r["passed_identity_nearer_target"]
    # the SOURCE's frames as output: identity check fails; the target's mouth does not follow the source's
    r = reenactment_checks(ka, ob_lm, ob_ref, ka_ref)
    assert not r["passed_identity_nearer_target"], r
    assert r["identity_dist_to_source"] < 0.5 < r["identity_dist_to_target"], r
    assert r["mouth_corr_dlib"] < 0.8 and not r["passed_mouth_corr_ge_0.8"], r
    assert r["identity_dist_target_to_source"] > 0.6


def test_blurred_low_resolution_frames_still_measured(clips):
    """The checks resize to 256 first: a 128² output (what the renderer makes) keeps the identity and mouth."""
    import torch.nn.functional as F

    from neuralrender.faces.evaluation import reenactment_checks

    ob, ob_lm, ob_ref = clips["obama"]
    _, _, ka_ref = clips["katie"]
    small = F.interpolate(ob, size=(128, 128), mode="area")
    r = reenactment_checks(small, ob_lm, ob_ref, ka_ref)
    assert r["mouth_frames_with_face"] == N and r["mouth_corr_dlib"] > 0.9, r
    assert r["passed_identity_nearer_target"], r
