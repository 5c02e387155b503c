"""Notebook tier: every benchmark notebook runs end to end on the smoke profile, through the study
runner (papermill), on the real data subsets when present; its rows and figures are checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from histolean.data.registry import DATA_KINDS
from histolean.study import report, runner
from histolean.util.paths import benchmark_name

REPO = Path(__file__).resolve().parents[2]
SMOKE = runner.load_profile("smoke", REPO)
pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def test_every_notebook_is_in_every_profile_and_committed_clean():
    notebooks = {benchmark_name(p) for p in (REPO / "notebooks").glob("*.ipynb")}
    for profile in runner.PROFILES:
        assert set(runner.load_profile(profile, REPO)["benchmarks"]) == notebooks, profile
    for path in (REPO / "notebooks").glob("*.ipynb"):
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert not any(c.get("outputs") for c in code), f"{path.name} is committed with outputs"
        assert "parameters" in code[0]["metadata"].get("tags", []), \
            f"{path.name}: first code cell must be tagged 'parameters'"


@pytest.mark.parametrize("benchmark", list(SMOKE["benchmarks"]))
def test_notebook_runs_on_smoke_profile(benchmark, smoke_run):
    outcome, rows, smoke_out = smoke_run(benchmark)
    assert outcome.status == "ok", outcome.error
    assert rows, f"{benchmark} recorded no result rows"
    for row in rows:
        assert row["profile"] == "smoke"
        assert row.get("kind") == "claim" or row["data_kind"] in DATA_KINDS   # claim rows concern no data
    page = report.build("smoke", root=REPO, out=smoke_out).read_text()
    assert f"id='{benchmark}'" in page


@pytest.mark.parametrize("notebook", sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb")))
def test_notebook_runs_as_a_user_opens_it(notebook, tmp_path):
    """nbval (``--nbval-lax``): every cell runs, top to bottom, with the parameters cell as written (the
    smoke values), as Run All in JupyterLab does. A copy runs in a temporary folder, so its outputs
    (``../outputs/interactive``) land there, not in the repository."""
    import os
    import shutil
    import subprocess
    import sys

    (tmp_path / "notebooks").mkdir()
    copy = tmp_path / "notebooks" / notebook
    shutil.copy(REPO / "notebooks" / notebook, copy)
    repo_outputs = sorted((REPO / "outputs" / "interactive").rglob("*"))
    env = {**os.environ, "HISTOLEAN_ROOT": str(REPO)}  # params/ of the checkout; outputs stay in tmp_path
    proc = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider",
                           "--nbval-cell-timeout", "900", str(copy)], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert list((tmp_path / "outputs" / "interactive" / "results").glob("*.jsonl")), "the notebook recorded no rows"
    assert sorted((REPO / "outputs" / "interactive").rglob("*")) == repo_outputs, "nbval wrote into the repository"
