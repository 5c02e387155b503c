"""Shared fixtures: the real data root and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _real_data_root() -> Path | None:
    for candidate in (os.environ.get("HISTOLEAN_DATA"), REPO.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real data subsets ($HISTOLEAN_DATA); tests that need them skip, saying why, without them."""
    root = _real_data_root()
    if root is None:
        pytest.skip("real data subsets not found: set HISTOLEAN_DATA to the shared data folder")
    return root
