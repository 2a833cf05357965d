"""Every recipe answers a missing input with one line naming it and exit status 2 (errors.script_main), both
called in-process and as a script."""

import importlib.util
import subprocess
import sys

import pytest

from neuralrender.paths import REPO_DIR

MISSING = "/nonexistent/nr_missing"
CASES = {
    "animate_image": ["--run", MISSING, "--source", MISSING + ".png", "--driving", MISSING + ".mp4"],
    "cond2video": ["--run", MISSING, "--out", MISSING + "_out"],
    "edit_scene": ["--run", MISSING],
    "motion_transfer": ["--source-video", MISSING + ".mp4", "--target-video", MISSING + "2.mp4", "--out",
                        MISSING + "_out"],
    "novel_view_synthesis": ["--run", MISSING],
    "reenact_face": ["--source", MISSING + ".mp4", "--target", MISSING + "2.mp4", "--out", MISSING + "_out"],
}


def _load(name):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO_DIR / "recipes" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", sorted(CASES))
def test_missing_input_is_one_line_and_exit_2(name, capsys):
    assert _load(name).main(CASES[name]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "nr_missing" in err and "\n" not in err, err


def test_recipe_as_script_exits_2():
    p = subprocess.run([sys.executable, str(REPO_DIR / "recipes" / "edit_scene.py"), *CASES["edit_scene"]],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: ") and "Traceback" not in p.stderr, p.stderr
