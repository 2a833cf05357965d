"""`neuralrender demo --quick`: builds the default scene, trains both methods, writes video, grid and summary."""

import json

import torch

from neuralrender.demo import main


def test_quick_demo(tmp_path, capsys):
    n = torch.get_num_threads()
    try:
        assert main(["--quick", "--out", str(tmp_path), "--threads", "1", "--device", "cpu"]) == 0
    finally:
        torch.set_num_threads(n)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["methods"]) == {"neural-textures", "pix2pix-gbuffer"}
    for m in summary["methods"].values():
        assert m["steps"] == 40
        assert 0 < m["eval"]["psnr"] < 60 and 0 < m["eval"]["ssim"] <= 1
    assert (tmp_path / "orbit.mp4").stat().st_size > 0
    assert (tmp_path / "comparison.png").is_file()
    assert (tmp_path / "data" / "transforms.json").is_file()
    printed = capsys.readouterr().out
    assert "neural-textures" in printed and "PSNR" in printed
    # a second run resumes the finished runs instead of failing on the existing run folders
    assert main(["--quick", "--out", str(tmp_path), "--threads", "1", "--device", "cpu", "--no-baseline"]) == 0
