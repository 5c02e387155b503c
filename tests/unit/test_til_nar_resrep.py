"""tilbench: variants and their errors, paired statistics, the resumable runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from histolean import arch, models
from histolean.core import checkpoints
from histolean.experiments import til_nar_resrep
from histolean.data.til_task import load_til_task


def test_variants_ids_sizes_and_original_first():
    vs = til_nar_resrep.build_variants({"resnet50v2": {"base_input": 240, "ir": [3], "nar": [2], "resrep": [0.9]}})
    assert [v.id for v in vs] == ["resnet50v2__original", "resnet50v2__ir_k3", "resnet50v2__nar_phi2",
                                  "resnet50v2__resrep_eps0.90"]
    assert [v.spec.input_size for v in vs] == [240, 158, 181, 240]
    assert [v.spec_buildable for v in vs] == [True, True, True, False]


@pytest.mark.parametrize("config, message", [
    ({"vgg16": {}}, "unknown architecture 'vgg16'"),
    ({"resnet50v2": {"prune": [1]}}, r"unknown key\(s\) \['prune'\]"),
    ({"resnet50v2": {"nar": [0]}}, "bad level 0"),
    ({"resnet50v2": {"ir": [1.5]}}, "bad level 1.5"),
    ({"resnet50v2": {"resrep": [3.0]}}, "bad level 3.0"),
    ({"inception_v4": {"base_input": 88, "ir": [2]}}, "inception_v4__ir_k2 would take 67 px.*at least 75"),
    ({}, "non-empty"),
])
def test_bad_variant_config_is_a_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        til_nar_resrep.build_variants(config)


def test_min_input_of_inception_v4():
    size = til_nar_resrep.MIN_INPUT["inception_v4"]
    net = models.build(arch.inception_v4(input_size=size)).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, size, size)).shape == (1, 2)
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 3, size - 1, size - 1))


def test_rank_auc_matches_sklearn_and_paired_verdicts():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    good = y + rng.normal(0, 0.7, 300)
    noise = rng.normal(0, 1, 300)
    res = til_nar_resrep.auc_with_ci(y, [good, np.round(good, 1)], n_boot=200)
    assert res["auc_runs"][0] == pytest.approx(roc_auc_score(y, good))
    assert res["auc_runs"][1] == pytest.approx(roc_auc_score(y, np.round(good, 1)))  # ties averaged
    assert res["auc_ci_lo"] < res["auc"] < res["auc_ci_hi"] and res["auc_sd"] is not None
    same = til_nar_resrep.paired_auc_difference(y, good, good, n_boot=200)
    assert same["auc_diff"] == 0 and same["same_auc"] == "supported"
    worse = til_nar_resrep.paired_auc_difference(y, noise, good, n_boot=200)
    assert worse["same_auc"] == "lower" and worse["auc_diff_ci_hi"] < 0
    assert til_nar_resrep.paired_auc_difference(y, good, noise, n_boot=200)["same_auc"] == "higher"
    small = til_nar_resrep.paired_auc_difference(y[:20], good[:20] + rng.normal(0, 0.5, 20), good[:20], n_boot=200)
    assert small["same_auc"] == "not resolved"


def test_pareto_front_and_stage_names():
    front = til_nar_resrep.pareto_front([1, 2, 4, 3, 0.5], [0.80, 0.85, 0.84, 0.90, 0.70])
    assert front.tolist() == [4, 0, 1, 3]
    assert til_nar_resrep.stage_of("stages.2.0.conv1") == "stage3" and til_nar_resrep.stage_of("stem.conv") == "stem"


@pytest.fixture()
def tiny_task(tmp_path):
    return load_til_task("crc_windows", tmp_path / "no_data", n_train=24, n_eval=16, window_um=11.0)


def test_runner_trains_saves_and_resumes(tiny_task, tmp_path):
    cfg = til_nar_resrep.TrainConfig(epochs=1, batch_size=8, runs=1)
    variants = til_nar_resrep.build_variants({"tiny": {"base_input": 16, "ir": [2], "resrep": [0.9]}})
    rcfg = til_nar_resrep.ResRepConfig(epochs=1, setting="resrep", lr=0.01, compactor_lr=0.3, lasso_strength=0.01,
                                 flops_target=0.5, warmup_epochs=0.5, mask_interval=1, granularity=None)
    log: list[str] = []
    first = til_nar_resrep.TilRunner(tiny_task, tmp_path, cfg, rcfg, device="cpu", log=log.append).run(variants, progress=False)
    assert sum("trained in" in m for m in log) == 2 and sum("remembered" in m for m in log) == 1
    model_dir = tmp_path / "models" / "til_nar_resrep"
    net, info = checkpoints.load_model(model_dir / "tiny__ir_k2.pt")
    assert info["input_size"] == 12 and info["mean"] == [0.5] * 3 and info["classes"][1] == "TIL-positive"
    assert info["method"] == "ir" and info["setting"] == {"k": 2} and 0 <= info["auc"] <= 1
    rows = til_nar_resrep.summarise(first, tiny_task, {}, {"epochs": 1}, n_boot=50)
    resrep_row = next(r for r in rows if r["method"] == "resrep")
    assert resrep_row["gflops"] <= resrep_row["gflops_original"] and "kept_by_stage" in resrep_row
    assert all(r["metrics"]["n_test"] == len(tiny_task.test) for r in rows)

    log.clear()
    again = til_nar_resrep.TilRunner(tiny_task, tmp_path, cfg, rcfg, device="cpu", log=log.append).run(variants, progress=False)
    assert not log, log  # nothing retrained
    assert all(run["resumed"] for r in again.values() for run in r.runs)
    assert np.allclose(again["tiny__ir_k2"].test_probs, first["tiny__ir_k2"].test_probs)

    # a damaged model file: said so, kept aside, the variant retrained; other variants untouched
    (model_dir / "tiny__ir_k2.pt").write_bytes(b"not a checkpoint")
    log.clear()
    til_nar_resrep.TilRunner(tiny_task, tmp_path, cfg, rcfg, device="cpu", log=log.append).run(variants, progress=False)
    assert any("tiny__ir_k2.pt" in m and "cannot be read" in m for m in log), log
    assert (model_dir / "tiny__ir_k2.pt.corrupt").exists()
    assert sum("trained in" in m for m in log) == 1
    checkpoints.load_model(model_dir / "tiny__ir_k2.pt")

    # changed settings: a different fingerprint, so the run is redone rather than reused
    log.clear()
    changed = til_nar_resrep.TrainConfig(epochs=1, batch_size=8, runs=1, lr=1e-3)
    til_nar_resrep.TilRunner(tiny_task, tmp_path, changed, rcfg, device="cpu", log=log.append).run(variants[:1], progress=False)
    assert sum("trained in" in m for m in log) == 1
    assert json.loads((model_dir / "tiny__original__run0.json").read_text())["resumed"] is False


def test_speed_is_measured_side_by_side():
    a = models.build(arch.tiny(input_size=16))
    b = models.build(arch.tiny(input_size=8))
    out = til_nar_resrep.measure_speed({"a": (a, 16), "b": (b, 8)}, "a", batch_size=2, repeats=5, device="cpu")
    assert out["a"]["speedup"] == 1.0 and out["b"]["speed_repeats"] == 5
    assert out["b"]["latency_ms_min"] <= out["b"]["latency_ms"] <= out["b"]["latency_ms_max"]
