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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``smoke_run(benchmark)`` runs one notebook on the smoke profile (once per session, through the
    study runner) and returns ``(outcome, rows, out_dir)``; value tests of a notebook share that run."""
    from histolean import records, study

    out = tmp_path_factory.mktemp("smoke")
    done: dict = {}

    def run(benchmark: str):
        if benchmark not in done:
            [outcome] = study.run("smoke", only=[benchmark], root=REPO, out=out, progress=False, force=True)
            rows = records.read_rows(out, benchmark) if outcome.status == "ok" else []
            done[benchmark] = (outcome, rows, out)
        return done[benchmark]

    return run
