"""The dry run: fit cut to one step and measured, rows marked and kept apart, the GPU estimate, the runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch import nn

from histolean.core import probe, train
from histolean.study import dry_run, records, runner
from histolean.util import dryrun

GIB = 2**30


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def _loader(n=40, batch=4, side=16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, side, side, 3), dtype=np.uint8)
    return train.make_loader(images, np.arange(n) % 2, batch_size=batch, shuffle=True)


def test_fit_in_a_dry_run_takes_one_step_of_one_epoch_and_logs_it(tmp_path):
    log = tmp_path / "log.jsonl"
    with dryrun.enabled(log):
        result = train.fit(_net(), _loader(), _loader(n=12), epochs=5, progress=False)
    assert len(result.history) == 1 and result.history[0]["val_n"] == 4   # one epoch, one validation batch
    (entry,) = dryrun.read_log(log)
    assert entry["kind"] == "fit" and entry["batch"] == 4 and entry["input_shape"] == [4, 3, 16, 16]
    assert entry["steps_per_epoch"] == 10 and entry["epochs"] == 5   # the full run's, for the extrapolation
    # the conv's output (4 x 4 x 16 x 16 float32) is the largest tensor
    assert entry["largest_tensor_shape"] == [4, 4, 16, 16] and entry["largest_tensor_bytes"] == 4 * 4 * 16 * 16 * 4
    assert entry["activation_bytes"] > entry["largest_tensor_bytes"] and entry["step_s"] > 0
    # outside a dry run nothing is cut, nothing logged
    full = train.fit(_net(), _loader(), _loader(n=12), epochs=2, progress=False)
    assert len(full.history) == 2 and full.history[0]["val_n"] == 12
    assert len(dryrun.read_log(log)) == 1


def test_gpu_estimate_and_the_batch_that_fits():
    small = probe.gpu_estimate(activation_bytes=1 * GIB, batch=32, param_bytes=GIB / 4)
    assert small["gpu_gib"] == pytest.approx(2.0) and small["fits"] == {16: 32, 80: 32}
    big = probe.gpu_estimate(activation_bytes=64 * GIB, batch=32, param_bytes=GIB)   # 2 GiB a sample + 4 GiB
    assert big["gpu_gib"] == pytest.approx(68.0) and big["fits"] == {16: 6, 80: 32}
    line = dry_run.fit_line({"desc": "train", "model": "Net", "input_shape": [32, 3, 240, 240], "batch": 32,
                             "step_s": 2.0, "steps_per_epoch": 100, "epochs": 50, "param_bytes": GIB,
                             "activation_bytes": 64 * GIB, "largest_tensor_bytes": GIB,
                             "largest_tensor_shape": [32, 64, 120, 120]})
    assert "3.3 min" in line and "2.8 h" in line and "a 16 GiB card would not hold it: batch <= 6" in line
    assert "80 GiB" not in line


def test_a_dry_run_marks_its_rows_and_never_writes_beside_real_results(tmp_path):
    with dryrun.enabled():
        with pytest.raises(ValueError, match="dry run writes its rows to a folder named"):
            records.Recorder("toy", tmp_path / "smoke", profile="smoke")
        rec = records.Recorder("toy", tmp_path / "smoke-dry-run", profile="smoke")
        row = rec.add(dataset="toy", data_kind="synthetic", model="m", method="x")
    assert row["dry_run"] is True
    assert "dry_run" not in records.Recorder("toy", tmp_path / "smoke", profile="smoke").add(
        dataset="toy", data_kind="synthetic", model="m", method="x")


TRAINS = """
import numpy as np
from torch import nn
from histolean.core import train
from histolean.study.records import Recorder
rng = np.random.default_rng(0)
x = rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)
net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
fit = train.fit(net, train.make_loader(x, np.arange(n) % 2, batch_size=4), epochs=epochs, progress=False)
rec = Recorder(NAME, output_dir, profile=profile, seed=seed)
rec.add(dataset="toy", data_kind="synthetic", model="m", method="x", metrics={"epochs_run": len(fit.history)})
"""


@pytest.mark.slow
def test_the_runner_dry_run_goes_to_its_own_folder_and_ends_with_the_table(tmp_path, toy_notebook, monkeypatch):
    monkeypatch.setenv("HISTOLEAN_LIBRARY_FINGERPRINT", "pinned")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    toy_notebook(tmp_path / "notebooks" / "toyfit.ipynb", "NAME = 'toyfit'\n" + TRAINS,
                 parameters="n = 24\nepochs = 3")
    (tmp_path / "params" / "smoke.yaml").write_text("seed: 0\ncell_timeout_s: 300\nbenchmarks:\n  toyfit: {epochs: 7}\n")
    out = tmp_path / "outputs" / "smoke-dry-run"
    stale = out / "models" / "toyfit" / "run0.pt"   # an earlier dry run's training: never resumed
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    outcomes = runner.run("smoke", root=tmp_path, progress=False, dry_run=True)
    assert {o.benchmark: o.status for o in outcomes} == {"toyfit": "ok"}, outcomes
    assert not stale.exists()
    assert not (tmp_path / "outputs" / "smoke").exists()
    (row,) = records.read_rows(out, "toyfit")
    assert row["dry_run"] is True and row["metrics"]["epochs_run"] == 1
    (entry,) = [json.loads(line) for line in dry_run.log_path(out, "toyfit").read_text().splitlines()]
    assert entry["epochs"] == 7 and entry["steps_per_epoch"] == 6
    table = (out / "dry_run.md").read_text()
    assert "## toyfit: ok" in table and "trainings measured: 1" in table and "| 7 |" in table


def test_first_cuts_counts_only_in_a_dry_run(monkeypatch):
    monkeypatch.delenv(dryrun.ENV, raising=False)
    assert dryrun.first(600, 64) == 600 and dryrun.first(None, 64) is None
    monkeypatch.setenv(dryrun.ENV, "1")
    assert dryrun.first(600, 64) == 64 and dryrun.first(3) == 1 and dryrun.first(None, 64) == 64
    assert dryrun.first(10, 64) == 10


def test_image_sides_are_capped_only_in_a_dry_run(monkeypatch):
    monkeypatch.delenv(dryrun.ENV, raising=False)
    assert dryrun.cap_side(16384) == 16384 and dryrun.cap_sides([4096, 1024]) == [4096, 1024]
    monkeypatch.setenv(dryrun.ENV, "1")
    assert dryrun.cap_side(16384) == dryrun.MAX_SIDE == 2048 and dryrun.cap_side(0) == 0
    assert dryrun.cap_sides([1024, 2048, 4096, 8192]) == [1024, 2048]


def test_the_nuclei_pruning_config_runs_one_round_on_two_images_in_a_dry_run(monkeypatch):
    from dataclasses import fields

    from histolean.experiments import monuseg_pruning

    params = {f.name: 1 for f in fields(monuseg_pruning.Config)} | {
        "schemes": ["network-wide"], "n_train": 30, "n_test": 14, "n_tnbc": 50, "max_cr": 512, "speed_repeats": 5}
    monkeypatch.delenv(dryrun.ENV, raising=False)
    full = monuseg_pruning.Config.from_parameters(params)
    monkeypatch.setenv(dryrun.ENV, "1")
    cut = monuseg_pruning.Config.from_parameters(params)
    assert (full.n_test, full.max_cr, full.speed_repeats) == (14, 512, 5)
    assert (cut.n_train, cut.n_test, cut.n_tnbc, cut.max_cr, cut.speed_repeats) == (2, 2, 2, 2, 1)
