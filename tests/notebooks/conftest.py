"""The notebook tier: each notebook runs once per session on the smoke profile (through the study runner),
and its value tests share that run. A test module names its notebook in ``BENCHMARK`` and asks for
``notebook_rows`` (the recorded rows) or ``notebook_run`` (rows and the output folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """``smoke_run(benchmark)`` runs one notebook on the smoke profile (once per session, through the
    study runner) and returns ``(outcome, rows, out_dir)``; value tests of a notebook share that run."""
    from histolean.study import records, runner

    out = tmp_path_factory.mktemp("smoke")
    done: dict = {}

    def run(benchmark: str):
        if benchmark not in done:
            [outcome] = runner.run("smoke", only=[benchmark], root=REPO, out=out, progress=False, force=True)
            rows = records.read_rows(out, benchmark) if outcome.status == "ok" else []
            done[benchmark] = (outcome, rows, out)
        return done[benchmark]

    return run


@pytest.fixture(scope="module")
def notebook_run(request, smoke_run):
    """``(rows, out_dir)`` of the module's ``BENCHMARK`` notebook on the smoke profile; fails if it failed."""
    outcome, rows, out = smoke_run(request.module.BENCHMARK)
    assert outcome.status == "ok", f"{request.module.BENCHMARK}: {outcome.status}: {outcome.error}"
    assert rows, f"{request.module.BENCHMARK} recorded no rows"
    return rows, out


@pytest.fixture(scope="module")
def notebook_rows(notebook_run):
    return notebook_run[0]
