"""benchmarks/bf16_check.py: paired bf16 - fp32 test AUCs on the TIL task, on a tiny network."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from histolean.data.til_task import load_til_task
from histolean.experiments import til_nar_resrep

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bf16_check.py"


@pytest.fixture(scope="module")
def bf16_check():
    spec = importlib.util.spec_from_file_location("bf16_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_paired_run_records_both_precisions(bf16_check, tmp_path):
    task = load_til_task("crc_windows", tmp_path / "no_data", n_train=24, n_eval=16, window_um=11.0)
    variants = bf16_check.select_variants("tiny", 16, ["original"])
    cfg = til_nar_resrep.TrainConfig(epochs=1, batch_size=8)
    lines = []
    result = bf16_check.run_check(task, variants, cfg, [0], workers=1, log=lines.append)

    assert len(result["runs"]) == 2 and len(lines) == 2
    by = {r["requested"]: r for r in result["runs"]}
    assert by["fp32"]["precision"] == "fp32" and by["bf16"]["precision"] == "bf16"
    assert by["fp32"]["epochs_run"] == by["bf16"]["epochs_run"] == 1
    summary = result["variants"]["tiny__original"]
    assert summary["test_auc"] == {"fp32": [by["fp32"]["test_auc"]], "bf16": [by["bf16"]["test_auc"]]}
    assert summary["paired_diff"] == [pytest.approx(by["bf16"]["test_auc"] - by["fp32"]["test_auc"])]
    assert summary["mean_diff"] == summary["min_diff"] == summary["max_diff"] == pytest.approx(summary["paired_diff"][0])
    assert summary["sd_diff"] is None   # one seed: no spread
    assert summary["precision_recorded"] == {"fp32": ["fp32"], "bf16": ["bf16"]}
    assert summary["epoch_time_s"]["fp32"] > 0 and summary["epoch_time_s"]["bf16"] > 0
    assert "training(s) at a time" in result["timing"]


def test_differences_are_bf16_minus_fp32_per_seed(bf16_check):
    aucs = {(0, "fp32"): 0.70, (0, "bf16"): 0.74, (1, "fp32"): 0.80, (1, "bf16"): 0.78, (2, "fp32"): 0.60,
            (2, "bf16"): 0.60}
    runs = [{"variant": "v", "seed": s, "requested": p, "precision": p, "test_auc": a, "epoch_time_s": 2.0}
            for (s, p), a in aucs.items()]
    v = bf16_check.summarise(runs, ["v"], [0, 1, 2])["v"]
    assert v["paired_diff"] == pytest.approx([0.04, -0.02, 0.0])
    assert v["mean_diff"] == pytest.approx(0.02 / 3)
    assert (v["min_diff"], v["max_diff"]) == (pytest.approx(-0.02), pytest.approx(0.04))
    assert v["sd_diff"] == pytest.approx(0.030550504633)
    assert v["auc_sd_over_seeds"]["fp32"] == pytest.approx(0.1)


def test_settings_follow_the_profile_and_variants_by_short_name(bf16_check):
    params, _ = bf16_check.profile_settings("default")
    cfg = bf16_check.train_config(params)
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (params["epochs"], params["batch_size"], params["lr"])
    assert bf16_check.train_config(params, epochs=1).epochs == 1
    variants = bf16_check.select_variants("resnet50v2", 240, ["original", "nar_phi2"])
    assert [(v.id, v.spec.input_size) for v in variants] == [("resnet50v2__original", 240),
                                                             ("resnet50v2__nar_phi2", 181)]
    with pytest.raises(ValueError, match="unknown variant 'resrep'"):
        bf16_check.select_variants("resnet50v2", 240, ["resrep"])
