import os

import pytest
import torch

from neuralrender.paths import shared_data_dir


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow") or os.environ.get("NR_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or NR_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    # One intra-op thread: small tensor work is many times slower with 2 threads on a busy 2-core machine,
    # and results do not depend on it.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def shared_data():
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data folder not found at {d} (set NR_SHARED_DATA)")
    return d


@pytest.fixture
def load_as_old_run():
    """load(run_dir, *fields): the model of a run loaded after its config.yaml lost `fields` (each must be there),
    i.e. as a run saved before those fields existed."""
    from pathlib import Path

    from neuralrender.train.trainer import load_run

    def load(run_dir, *fields):
        cfg_file = Path(run_dir) / "config.yaml"
        lines = cfg_file.read_text().splitlines(True)
        keys = [ln.strip().split(":", 1)[0] for ln in lines]
        assert all(f in keys for f in fields), (fields, keys)
        cfg_file.write_text("".join(ln for ln, k in zip(lines, keys) if k not in fields))
        return load_run(run_dir, device="cpu")[0]

    return load
