"""The study over Dask: a 2-worker LocalCluster runs the notebooks of a tmp project; map_variants.

The cluster uses worker processes (processes=True), like a real one: tasks are pickled, each
notebook's kernel is a child of a worker process, and the test can check that. Threads would
skip the pickling that a real cluster does, which is what most often breaks.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import os
from pathlib import Path

import pytest

from histolean.util import cluster
from histolean.study import records, runner

pytestmark = pytest.mark.slow

GOOD = """
import os, pathlib
from histolean.study.records import Recorder
log = pathlib.Path(output_dir) / "executions.log"; log.parent.mkdir(parents=True, exist_ok=True)
with log.open("a") as f: f.write(f"{NAME}:{os.getppid()}\\n")
rec = Recorder(NAME, output_dir, profile=profile, seed=seed)
rec.add(dataset="toy", data_kind="synthetic", model="m", method="x", setting={"value": value},
        metrics={"auc": 0.5 + value / 10})
import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
fig, ax = plt.subplots(); ax.plot([0, 1], [0, value]); rec.save_figure(fig, "line")
"""


PROFILE = ("seed: 0\ncell_timeout_s: 120\nbenchmarks:\n  alpha: {value: 1}\n  broken: {}\n  garbled: {}\n"
           "  beta: {value: 2}\n")


@pytest.fixture(scope="module")
def dask_cluster():
    """(scheduler address, worker process ids) of a 2-worker LocalCluster shared by this module's tests."""
    from distributed import Client, LocalCluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HISTOLEAN_LIBRARY_FINGERPRINT", "pinned")   # before the workers start: they inherit it
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
                Client(lc) as client:
            yield lc.scheduler_address, set(client.run(os.getpid).values())


@pytest.fixture()
def project(tmp_path, monkeypatch, toy_notebook):
    monkeypatch.setenv("HISTOLEAN_LIBRARY_FINGERPRINT", "pinned")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    for name in ("alpha", "beta"):
        toy_notebook(tmp_path / "notebooks" / f"{name}.ipynb", f"NAME = {name!r}\n" + GOOD, parameters="value = 1")
    toy_notebook(tmp_path / "notebooks" / "broken.ipynb", "raise RuntimeError('the data file x.h5 is truncated')",
                 parameters="value = 1")
    (tmp_path / "notebooks" / "garbled.ipynb").mkdir()   # the task itself raises (the runner reads a folder)
    (tmp_path / "params" / "smoke.yaml").write_text(PROFILE)
    return tmp_path


def _executions(out: Path) -> list[tuple[str, int]]:
    log = out / "executions.log"
    return [(n, int(p)) for n, p in (line.split(":") for line in log.read_text().split())] if log.exists() else []


def _comparable(rows):
    return sorted((r["benchmark"], json.dumps(r["setting"]), json.dumps(r["metrics"]), r["data_kind"]) for r in rows)


def test_study_over_dask_matches_local_records_failures_and_resumes(project, dask_cluster):
    address, worker_pids = dask_cluster
    local_out, remote_out = project / "outputs" / "local", project / "outputs" / "smoke"
    # the local runner's own failure handling is tested in test_study: here it gives the reference rows
    local = runner.run("smoke", root=project, progress=False, out=local_out, only=["alpha", "beta"])
    remote = runner.run("smoke", root=project, progress=False, scheduler=address)

    assert [o.status for o in local] == ["ok", "ok"]
    assert [(o.benchmark, o.status) for o in remote] == [("alpha", "ok"), ("broken", "failed"),
                                                         ("garbled", "failed"), ("beta", "ok")]
    assert _comparable(records.read_rows(remote_out)) == _comparable(records.read_rows(local_out))
    assert len(records.read_rows(remote_out)) == 2
    # a failing notebook, and a task that fails outside its notebook, are recorded with their errors
    assert "x.h5 is truncated" in remote[1].error
    assert runner.read_manifest(remote_out, "broken")["status"] == "failed"
    assert "Dask task failed: IsADirectoryError" in runner.read_manifest(remote_out, "garbled")["error"]
    assert (remote_out / "notebooks" / "broken.ipynb").exists()
    assert (remote_out / "figures" / "beta__line.png").stat().st_size > 0
    # the notebooks ran in kernels started by the Dask workers, not by this process
    assert {pid for _, pid in _executions(remote_out)} <= worker_pids
    assert os.getpid() not in worker_pids

    # resume: complete benchmarks are skipped
    again = runner.run("smoke", root=project, progress=False, scheduler=address, only=["alpha", "beta"])
    assert [o.status for o in again] == ["skipped", "skipped"]
    assert sorted(n for n, _ in _executions(remote_out)) == ["alpha", "beta"]

    # a `scheduler:` key in the profile does the same as the argument
    (project / "params" / "smoke.yaml").write_text(f"scheduler: {address}\n" + PROFILE.replace("value: 2", "value: 3"))
    assert [o.status for o in runner.run("smoke", root=project, progress=False, only=["alpha", "beta"])] \
        == ["skipped", "ok"]
    assert records.read_rows(remote_out, "beta")[0]["setting"] == {"value": 3}
    assert _executions(remote_out)[-1][0] == "beta" and _executions(remote_out)[-1][1] in worker_pids


def test_map_variants_local_and_on_the_cluster(dask_cluster, monkeypatch):
    address, worker_pids = dask_cluster
    monkeypatch.delenv(cluster.SCHEDULER_ENV, raising=False)
    times10 = functools.partial(operator.mul, 10)
    seen = []
    assert cluster.map_variants(times10, [1, 2, 3]) == [10, 20, 30]
    assert cluster.map_variants(times10, range(8), address, on_done=lambda i, r: seen.append((i, r))) \
        == [10 * i for i in range(8)]
    assert sorted(seen) == [(i, 10 * i) for i in range(8)]
    assert cluster.map_variants(lambda v: v * 3, [1, 2], address) == [3, 6]   # a notebook's own function travels
    assert cluster.map_variants(lambda _: os.getpid(), [0, 1]) == [os.getpid()] * 2
    monkeypatch.setenv(cluster.SCHEDULER_ENV, address)    # no scheduler named: the environment's
    assert set(cluster.map_variants(lambda _: os.getpid(), [0, 1])) <= worker_pids
    for scheduler in (None, address):
        out = cluster.map_variants(math.sqrt, [4, -1, 9], scheduler, return_exceptions=True)
        assert out[0] == 2 and out[2] == 3 and isinstance(out[1], ValueError)
        with pytest.raises(ValueError, match="math domain"):
            cluster.map_variants(math.sqrt, [4, -1, 9], scheduler)


def test_unreachable_or_missing_scheduler_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="scheduler file"):
        cluster.map_variants(abs, [1], tmp_path / "nope.json")
    with pytest.raises(ValueError, match="scheduler address"):
        cluster.map_variants(abs, [1], "")
    with pytest.raises(ConnectionError, match="tcp://127.0.0.1:9"):
        with cluster.client("tcp://127.0.0.1:9", timeout_s=1):
            pass
