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
