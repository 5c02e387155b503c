"""The patch notebooks on a user's own folder (``dataset = "folder:PATH"``), smoke profile, through the runner.

The folders are built in tmp_path from real PCam patches (see ``write_patch_folder`` in tests/conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from histolean.study import records, runner

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


def _run(benchmark: str, dataset: str, out):
    cfg = runner.load_profile("smoke", root=REPO)
    cfg["benchmarks"][benchmark] = {**cfg["benchmarks"][benchmark], "dataset": dataset}
    outcome = runner.run_benchmark(benchmark, cfg, REPO, out, force=True)
    assert outcome.status == "ok", f"{benchmark} on {dataset}: {outcome.error}"
    return records.read_rows(out, benchmark)


def test_til_nar_resrep_on_a_csv_folder(patch_folder, tmp_path):
    folder = patch_folder("csv", per_class=40, groups=8)
    (folder / "dataset.json").write_text(json.dumps({"mpp": 0.972}))   # PCam: 50 um = 51 px
    rows = _run("til_nar_resrep", f"folder:{folder}", tmp_path / "out")
    data_rows = [r for r in rows if r["kind"] != "claim"]
    assert data_rows and {r["dataset"] for r in data_rows} == {f"folder:{folder}"}
    assert {r["data_kind"] for r in data_rows} == {"user"}
    assert {r["method"] for r in data_rows} >= {"original", "nar", "ir", "resrep"}
    assert any(r["kind"] == "claim" for r in rows)


def test_resrep_on_a_class_folder(patch_folder, tmp_path):
    folder = patch_folder("classes", per_class=30)
    rows = _run("resrep", f"folder:{folder}", tmp_path / "out")
    data_rows = [r for r in rows if r["kind"] != "claim"]
    assert {(r["dataset"], r["data_kind"]) for r in data_rows} == {(f"folder:{folder}", "user")}
    assert all(r["scale"]["n_train"] == r["n_train"] <= 60 for r in data_rows)


def test_a_blocking_problem_stops_the_notebook_with_the_check_message(patch_folder, tmp_path):
    folder = patch_folder("classes", per_class=30)
    for extra in sorted((folder / "positive").glob("*.png")):
        extra.unlink()
    cfg = runner.load_profile("smoke", root=REPO)
    cfg["benchmarks"]["resrep"] = {**cfg["benchmarks"]["resrep"], "dataset": f"folder:{folder}"}
    outcome = runner.run_benchmark("resrep", cfg, REPO, tmp_path / "out", force=True)
    assert outcome.status == "failed" and "one class only" in outcome.error
    assert not records.read_rows(tmp_path / "out", "resrep")
