import numpy as np
import pytest
import torch

from neuralrender.data.video import VideoClipDataset
from neuralrender.errors import DataError, NeuralRenderError
from neuralrender.io.images import save_image
from neuralrender.io.video import (
    find_side_data,
    load_side_data,
    read_video,
    read_video_uint8,
    video_info,
    write_video,
)


def _smooth_frames(t=6, h=32, w=48):
    """Frames with large flat blocks (compress well, so mp4 round trips are close)."""
    f = torch.zeros(t, 3, h, w)
    for k in range(t):
        f[k, 0, :, : (k + 1) * 6] = 1.0
        f[k, 1, : h // 2] = 0.5
        f[k, 2] = k / (t - 1)
    return f


def test_mp4_roundtrip(tmp_path):
    f = _smooth_frames()
    write_video(f, tmp_path / "a.mp4", fps=12)
    info = video_info(tmp_path / "a.mp4")
    assert (info.num_frames, info.width, info.height, info.fps) == (6, 48, 32, 12.0)
    back = read_video(tmp_path / "a.mp4")
    assert back.shape == f.shape
    assert (back - f).abs().mean() < 0.02
    sub = read_video(tmp_path / "a.mp4", start=1, count=2, stride=2)
    assert torch.allclose(sub, back[[1, 3]])
    # [T,H,W,3] uint8 input is accepted too
    write_video((f.permute(0, 2, 3, 1) * 255).round().to(torch.uint8), tmp_path / "b.mp4", fps=12)
    # Two separate lossy encodes of (almost) the same frames: close, not bit-equal.
    diff = (read_video(tmp_path / "b.mp4") - back).abs()
    assert diff.mean() < 1 / 255 and diff.max() <= 16 / 255


def test_gif_folder_and_strip(tmp_path):
    f = _smooth_frames(4, 16, 16)
    write_video(f, tmp_path / "a.gif", fps=5)
    assert read_video(tmp_path / "a.gif").shape == (4, 3, 16, 16)
    for k in range(4):
        save_image(f[k], tmp_path / "seq" / f"{k:03d}.png")
    assert torch.equal(read_video(tmp_path / "seq"), (f * 255).round() / 255)
    strip = torch.cat(list(f), dim=2)  # [3,16,64]
    save_image(strip, tmp_path / "x_strip16.png")
    s = read_video(tmp_path / "x_strip16.png")
    assert s.shape == (4, 3, 16, 16) and torch.allclose(s[2], (f[2] * 255).round() / 255)
    with pytest.raises(DataError, match="frame_width"):
        read_video(tmp_path / "x_strip16.png", frame_width=24)


def test_read_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_video(tmp_path / "none.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="bad.mp4"):
        read_video(tmp_path / "bad.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image frames"):
        read_video(tmp_path / "empty")


def test_side_data_alignment(tmp_path):
    f = _smooth_frames(6, 16, 16)
    write_video(f, tmp_path / "clip.mp4", fps=6)
    lm = np.arange(6 * 5 * 2, dtype=np.float32).reshape(6, 5, 2)
    np.savez(tmp_path / "clip_landmarks.npz", kp=lm, fps=np.float32(6), size=np.array([16, 16]))
    assert find_side_data(tmp_path / "clip.mp4") == [tmp_path / "clip_landmarks.npz"]
    sd = load_side_data(tmp_path / "clip_landmarks.npz", 6)
    assert set(sd.per_frame) == {"kp"} and set(sd.meta) == {"fps", "size"}
    with pytest.raises(DataError, match="no array has 7 rows"):
        load_side_data(tmp_path / "clip_landmarks.npz", 7)

    ds = VideoClipDataset(tmp_path / "clip.mp4", clip_len=3, stride=2)
    assert len(ds) == 2  # starts 0 and 1 (span 5 in 6 frames)
    item = ds[1]
    assert item["frames"].shape == (3, 3, 16, 16)
    assert item["frame_index"].tolist() == [1, 3, 5]
    assert torch.equal(item["kp"], torch.from_numpy(lm[[1, 3, 5]]))
    with pytest.raises(NeuralRenderError, match="no clip"):
        VideoClipDataset(tmp_path / "clip.mp4", clip_len=4, stride=2)


def test_label_folder_side_data_and_avi(tmp_path):
    import av

    from neuralrender.io.images import save_labels

    f = _smooth_frames(5, 16, 16)
    a = (f.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    with av.open(str(tmp_path / "v.avi"), mode="w") as c:  # an avi written by another tool (mpeg4)
        s = c.add_stream("mpeg4", rate=5)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        for img in a:
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    assert read_video(tmp_path / "v.avi").shape == (5, 3, 16, 16)
    for k in range(5):
        save_labels(torch.full((16, 16), k), tmp_path / "v_labels" / f"{k:02d}.png")
    ds = VideoClipDataset(tmp_path / "v.avi", clip_len=2, stride=2)
    item = ds[1]
    assert item["v_labels"].shape == (2, 1, 16, 16) and item["v_labels"][:, 0, 0, 0].tolist() == [1, 3]
    save_labels(torch.zeros(16, 16), tmp_path / "v_labels" / "99.png")
    with pytest.raises(DataError, match="6 label images for a video of 5 frames"):
        VideoClipDataset(tmp_path / "v.avi", clip_len=2)


def test_clip_sampling_deterministic(tmp_path):
    write_video(_smooth_frames(10, 16, 16), tmp_path / "v.mp4", fps=10)
    a = VideoClipDataset(tmp_path / "v.mp4", clip_len=2, num_clips=4, seed=1, side_data=False)
    b = VideoClipDataset(tmp_path / "v.mp4", clip_len=2, num_clips=4, seed=1, side_data=False)
    c = VideoClipDataset(tmp_path / "v.mp4", clip_len=2, num_clips=4, seed=2, side_data=False)
    assert a.clips == b.clips and len(a) == 4 and a.clips != c.clips
    assert len(set(a.clips)) == 4


def test_weizmann_strip_and_pose(shared_data):
    d = shared_data / "videos" / "fullbody_weizmann"
    frames = read_video_uint8(d / "wave1_00000002_strip64.png")
    assert frames.shape == (61, 64, 64, 3)
    assert video_info(d / "jack_00000004_strip64.png").num_frames == 103
    ds = VideoClipDataset([d / "wave1_00000002_strip64.png", d / "bend_00000006_strip64.png"],
                          clip_len=4, stride=3, hop=5)
    item = ds[len(ds) - 1]
    assert item["video"] == 1 and item["frames"].shape == (4, 3, 64, 64)
    assert item["pose33_xyzv_normalized"].shape == (4, 33, 4)


def test_talking_face_landmarks(shared_data):
    p = shared_data / "videos" / "face_talking" / "driving_obama_weekly_address_256.mp4"
    info = video_info(p)
    assert (info.num_frames, info.fps) == (265, 30.0)
    ds = VideoClipDataset("shared:videos/face_talking/driving_obama_weekly_address_256.mp4",
                          clip_len=2, stride=10, num_clips=3, seed=0)
    item = ds[0]
    assert item["dlib68_xy_pixels"].shape == (2, 68, 2)
    assert ds.meta[0]["image_size_wh"].tolist() == [256, 256]
    # landmarks lie inside the frame
    xy = item["dlib68_xy_pixels"]
    assert (xy >= 0).all() and (xy < 256).all()


def test_gif_with_rgba_frames_of_mixed_modes(tmp_path):
    """Pillow writes RGBA frames as palette frames whose decoded modes differ; all must load."""
    import numpy as np
    from PIL import Image

    from neuralrender.io.video import read_video

    rng = np.random.default_rng(0)
    frames = [Image.fromarray((rng.random((16, 16, 4)) * 255).astype(np.uint8), "RGBA") for _ in range(3)]
    path = tmp_path / "rgba.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0, disposal=2)
    video = read_video(path)
    assert tuple(video.shape) == (3, 3, 16, 16)
