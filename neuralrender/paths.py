"""Where things live: the shared data folder beside the repository, the package root."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def shared_data_dir() -> Path:
    """The folder of real data made by others: $NR_SHARED_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("NR_SHARED_DATA")
    if env:
        return Path(env)
    for base in (REPO_DIR, Path.cwd()):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return REPO_DIR.parent / "shared" / "data"


def shared_path(*parts: str) -> Path:
    return shared_data_dir().joinpath(*parts)


def resolve_data_path(path: str | os.PathLike) -> Path:
    """Resolve a user path; 'shared:xyz' means a path inside the shared data folder."""
    s = str(path)
    if s.startswith("shared:"):
        return shared_path(s[len("shared:"):])
    return Path(s).expanduser()
