"""`torchrun -m histolean.cli run`: every rank executes the notebooks, their fits train data-parallel,
rank 0 alone writes the study's outputs.

One launch (about 30 s of two ranks starting four kernels): the resume rule it applies on rank 0
is the local runner's (runner.is_complete), tested in test_study."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from histolean.study import records, runner

pytestmark = pytest.mark.slow

FIT = """
import os, numpy as np, torch
from torch import nn
from histolean import train
from histolean.study.records import Recorder
with open("../executions.log", "a") as f: f.write(f"{NAME}:{os.environ['RANK']}\\n")
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (64, 6, 6, 3), dtype=np.uint8); y = (x[..., 0].mean((1, 2)) > 127).astype(np.int64)
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(108, 2))
res = train.fit(model, train.make_loader(x, y, 16, shuffle=True), train.make_loader(x[:45], y[:45], 32),
                epochs=2, progress=False)
rec = Recorder(NAME, output_dir, profile=profile, seed=seed)
rec.add(dataset="toy", data_kind="synthetic", model="linear", method="fit",
        metrics={"val_auc": res.best_value, "val_n": res.history[-1]["val_n"]})
"""


def test_study_under_torchrun(tmp_path, toy_notebook):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    for name in ("first", "second"):   # two benchmarks: the second one's kernels need a fresh rendezvous
        toy_notebook(tmp_path / "notebooks" / f"{name}.ipynb", f"NAME = {name!r}\n" + FIT)
    # one rank failing fails the benchmark (rank 0's own run went well here)
    toy_notebook(tmp_path / "notebooks" / "lopsided.ipynb",
                 "import os\nif os.environ['RANK'] == '1': raise RuntimeError('rank one ran out of memory')")
    (tmp_path / "params" / "smoke.yaml").write_text("seed: 0\ncell_timeout_s: 120\nbenchmarks:\n  first: {}\n"
                                                    "  lopsided: {}\n  second: {}\n")
    env = {**os.environ, "HISTOLEAN_ROOT": str(tmp_path), "HISTOLEAN_LIBRARY_FINGERPRINT": "pinned",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "histolean.cli", "run", "--profile", "smoke", "--no-report"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count("2 ran, 0 already complete, 1 failed: lopsided") == 1   # printed by rank 0 alone

    out = tmp_path / "outputs" / "smoke"
    log = sorted((tmp_path / "executions.log").read_text().split())
    assert log == ["first:0", "first:1", "second:0", "second:1"]       # every rank ran every notebook
    for name in ("first", "second"):
        [row] = records.read_rows(out, name)                          # one set of rows, from rank 0
        assert row["world_size"] == 2 and row["metrics"]["val_n"] == 45   # metrics over both ranks' samples
        assert runner.read_manifest(out, name)["status"] == "ok"
    assert sorted(p.name for p in (out / "notebooks").iterdir()) == ["first.ipynb", "lopsided.ipynb", "second.ipynb"]
    lopsided = runner.read_manifest(out, "lopsided")
    assert lopsided["status"] == "failed" and "rank 1: RuntimeError: rank one ran out of memory" in lopsided["error"]

