"""The study runner: success, a failing notebook, resume, atomic outputs, an interrupted run, the report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from histolean.study import records, report, runner

pytestmark = pytest.mark.slow


TOY_PARAMETERS = "value = 1\nsleep_s = 0.0"
TOY_TITLE = "# Toy\nA toy benchmark for the runner tests."
GOOD = """
import time, pathlib
from histolean.study.records import Recorder
log = pathlib.Path(output_dir) / "executions.log"; log.parent.mkdir(parents=True, exist_ok=True)
with log.open("a") as f: f.write(NAME + "\\n")
time.sleep(sleep_s)
rec = Recorder(NAME, output_dir, profile=profile, seed=seed)
rec.add(dataset="toy", data_kind="synthetic", model="m", method="x", setting={"value": value},
        metrics={"auc": 0.5 + value / 10})
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
fig, ax = plt.subplots(); ax.plot([0, 1], [0, value]); rec.save_figure(fig, "line")
"""


@pytest.fixture()
def project(tmp_path, monkeypatch, toy_notebook):
    """A tiny study: two good benchmarks and one that fails.

    The library's own fingerprint is pinned so that edits to the library while
    the tests run cannot re-trigger benchmarks; test_library_change_reruns checks it separately.
    """
    monkeypatch.setenv("HISTOLEAN_LIBRARY_FINGERPRINT", "pinned")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    for name in ("alpha", "beta"):
        toy_notebook(tmp_path / "notebooks" / f"{name}.ipynb", f"NAME = {name!r}\n" + GOOD, parameters=TOY_PARAMETERS,
                     title=TOY_TITLE)
    toy_notebook(tmp_path / "notebooks" / "broken.ipynb", "raise RuntimeError('the data file x.h5 is truncated')",
                 parameters=TOY_PARAMETERS, title=TOY_TITLE)
    (tmp_path / "params" / "smoke.yaml").write_text(
        "seed: 0\ncell_timeout_s: 120\nbenchmarks:\n  alpha: {value: 1}\n  broken: {}\n  beta: {value: 2}\n")
    return tmp_path


def _executions(out: Path) -> list[str]:
    log = out / "executions.log"
    return log.read_text().split() if log.exists() else []


def test_run_success_failure_and_resume(project):
    out = project / "outputs" / "smoke"
    outcomes = runner.run("smoke", root=project, progress=False)
    assert [(o.benchmark, o.status) for o in outcomes] == [("alpha", "ok"), ("broken", "failed"), ("beta", "ok")]
    assert "x.h5 is truncated" in outcomes[1].error
    # the failing notebook is recorded with its error and the others still ran
    assert json.loads((out / "runs" / "broken.json").read_text())["status"] == "failed"
    assert (out / "notebooks" / "broken.ipynb").exists()
    rows = records.read_rows(out)
    assert {r["benchmark"] for r in rows} == {"alpha", "beta"}
    row = rows[0]
    for key in ("device", "versions", "seed", "profile", "data_kind"):
        assert key in row
    assert row["profile"] == "smoke" and row["setting"] == {"value": 1}
    assert (out / "figures" / "alpha__line.png").stat().st_size > 0

    # resume: complete benchmarks are skipped; the failed one runs again
    again = runner.run("smoke", root=project, progress=False)
    assert [o.status for o in again] == ["skipped", "failed", "skipped"]
    assert _executions(out) == ["alpha", "beta"]

    # a parameter change re-runs only that benchmark; --force re-runs all
    (project / "params" / "smoke.yaml").write_text(
        "seed: 0\ncell_timeout_s: 120\nbenchmarks:\n  alpha: {value: 1}\n  broken: {}\n  beta: {value: 3}\n")
    outcomes = runner.run("smoke", root=project, progress=False, only=["alpha", "beta"])
    assert [o.status for o in outcomes] == ["skipped", "ok"]
    assert records.read_rows(out, "beta")[0]["setting"] == {"value": 3}
    assert len(records.read_rows(out, "beta")) == 1   # re-run replaces rows, never appends duplicates
    assert [o.status for o in runner.run("smoke", root=project, progress=False, only=["alpha"], force=True)] == ["ok"]


def test_code_change_reruns(project):
    runner.run("smoke", root=project, progress=False, only=["alpha"])
    nb = project / "notebooks" / "alpha.ipynb"
    nb.write_text(nb.read_text().replace("sleep_s = 0.0", "sleep_s = 0.01"))
    assert runner.run("smoke", root=project, progress=False, only=["alpha"])[0].status == "ok"


def test_library_change_reruns(project, monkeypatch):
    runner.run("smoke", root=project, progress=False, only=["alpha"])
    assert runner.run("smoke", root=project, progress=False, only=["alpha"])[0].status == "skipped"
    monkeypatch.setenv("HISTOLEAN_LIBRARY_FINGERPRINT", "library edited")
    assert runner.run("smoke", root=project, progress=False, only=["alpha"])[0].status == "ok"


def test_damaged_outputs_are_not_trusted(project):
    out = project / "outputs" / "smoke"
    runner.run("smoke", root=project, progress=False, only=["alpha"])
    (out / "results" / "alpha.jsonl").write_text('{"benchmark": "alpha", "trunc')   # half a line
    assert runner.run("smoke", root=project, progress=False, only=["alpha"])[0].status == "ok"
    assert records.read_rows(out, "alpha")[0]["benchmark"] == "alpha"
    (out / "runs" / "alpha.json").write_text("{not json")
    assert runner.run("smoke", root=project, progress=False, only=["alpha"])[0].status == "ok"


def test_unknown_profile_and_benchmark_are_clear_errors(project):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        runner.run("nope", root=project, progress=False)
    with pytest.raises(ValueError, match="unknown benchmark"):
        runner.run("smoke", root=project, progress=False, only=["gamma"])


def test_interrupted_run_resumes_without_redoing_finished_work(project):
    """Kill `histolean run` while the second notebook runs; the re-run finishes only what is left."""
    (project / "params" / "smoke.yaml").write_text(
        "seed: 0\ncell_timeout_s: 120\nbenchmarks:\n  alpha: {value: 1}\n  beta: {value: 2, sleep_s: 60}\n")
    out = project / "outputs" / "smoke"
    env = {**os.environ, "HISTOLEAN_ROOT": str(project)}
    proc = subprocess.Popen([sys.executable, "-m", "histolean.cli", "run", "--profile", "smoke"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 90
        while _executions(out) != ["alpha", "beta"] and time.time() < deadline:
            time.sleep(0.2)
        assert _executions(out) == ["alpha", "beta"], "the run never reached the second notebook"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # the whole group: runner and kernel, like a power cut
        proc.wait()
    assert runner.read_manifest(out, "alpha")["status"] == "ok"
    assert runner.read_manifest(out, "beta") is None          # nothing claims beta finished
    assert not list((out / "notebooks").glob("beta.ipynb"))  # no half-written executed notebook
    (project / "params" / "smoke.yaml").write_text(
        "seed: 0\ncell_timeout_s: 120\nbenchmarks:\n  alpha: {value: 1}\n  beta: {value: 2, sleep_s: 0}\n")
    # the re-run goes through the command too (same library fingerprint as the killed run)
    done = subprocess.run([sys.executable, "-m", "histolean.cli", "run", "--profile", "smoke"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 ran, 1 already complete, 0 failed" in done.stdout
    assert _executions(out) == ["alpha", "beta", "beta"]
    assert (out / "report.html").exists()


def test_report_has_every_benchmark_marks_synthetic_and_errors(project):
    out = project / "outputs" / "smoke"
    runner.run("smoke", root=project, progress=False)
    page = report.build("smoke", root=project).read_text()
    for name in ("alpha", "beta", "broken"):
        assert f"id='{name}'" in page
    assert "SYNTHETIC" in page
    assert "x.h5 is truncated" in page
    assert "data:image/png;base64," in page
    assert (out / "report.html").exists()
    # rows of a standalone benchmark script appear too, marked as such
    (project / "benchmarks").mkdir()
    (project / "benchmarks" / "memory_script.py").write_text("# a standalone benchmark\n")
    records.Recorder("leftover", out, profile="smoke").add(dataset="none", data_kind="none", model="m", method="x")
    records.Recorder("memory_script", out, profile="smoke").add(dataset="none", data_kind="none", model="m",
                                                                  method="streaming", metrics={"peak_mib": 12.5})
    page = report.build("smoke", root=project).read_text()
    assert "id='memory_script'" in page and "badge script'>script" in page and "12.5" in page
    assert "id='leftover'" not in page   # a results file with no benchmark behind it is not shown


def test_report_marks_stale_results_and_hides_their_rows(project):
    runner.run("smoke", root=project, progress=False, only=["alpha", "beta"])
    (project / "params" / "smoke.yaml").write_text(
        "seed: 0\ncell_timeout_s: 120\nbenchmarks:\n  alpha: {value: 1}\n  broken: {}\n  beta: {value: 5}\n")
    page = report.build("smoke", root=project).read_text()
    beta = page[page.index("id='beta'"):]
    assert "badge stale'>stale" in beta and "--only beta" in beta
    assert "No result rows." in beta          # beta is the last section: its stale rows are hidden
    assert "badge ok'>ok" in page[page.index("id='alpha'"):page.index("id='broken'")]


def test_recorder_validates_and_writes_valid_json(tmp_path):
    rec = records.Recorder("b", tmp_path, profile="smoke")
    with pytest.raises(ValueError, match="data_kind"):
        rec.add(dataset="d", data_kind="fake", model="m", method="x")
    import numpy as np
    rec.add(dataset="d", data_kind="real", model="m", method="x", metrics={"auc": np.float32(0.5), "nan": float("nan")})
    row = records.read_rows(tmp_path, "b")[0]
    assert row["metrics"] == {"auc": 0.5, "nan": None}


def test_a_profile_key_the_notebook_does_not_declare_is_an_error_before_anything_runs(project):
    (project / "params" / "smoke.yaml").write_text(
        "seed: 0\nbenchmarks:\n  alpha: {value: 1}\n  beta: {valeu: 2}\n")
    with pytest.raises(ValueError, match=r"params/smoke\.yaml: benchmark 'beta', key 'valeu': not declared .*beta\.ipynb "
                                         r"\(it declares .*sleep_s, value\)"):
        runner.run("smoke", root=project, progress=False)
    assert not (project / "outputs" / "smoke" / "results").exists()  # alpha, listed first, did not run either


def test_the_runner_talks_to_the_kernel_without_the_tcp_warning(project, capfd):
    (project / "params" / "smoke.yaml").write_text("seed: 0\nbenchmarks:\n  alpha: {value: 1}\n")
    [outcome] = runner.run("smoke", root=project, progress=False)
    assert outcome.status == "ok", outcome.error
    captured = capfd.readouterr()
    assert "without encryption" not in captured.out + captured.err


def test_a_notebook_that_is_not_json_is_recorded_as_failed_and_the_others_run(project):
    (project / "notebooks" / "garbled.ipynb").write_text("{not a notebook")
    (project / "params" / "smoke.yaml").write_text("seed: 0\nbenchmarks:\n  garbled: {}\n  alpha: {value: 1}\n")
    garbled, alpha = runner.run("smoke", root=project, progress=False)
    assert garbled.status == "failed" and "garbled.ipynb is not a readable notebook" in garbled.error
    assert alpha.status == "ok", alpha.error
