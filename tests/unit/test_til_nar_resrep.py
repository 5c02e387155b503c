"""til_nar_resrep: variants and their errors, the resumable runner, the grid search cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from histolean import arch, models
from histolean.core import checkpoints
from histolean.data.til_task import load_til_task
from histolean.experiments import til_nar_resrep
from histolean.experiments.til_maps import classifiers
from histolean.util import cache


def test_variants_ids_sizes_and_original_first():
    vs = til_nar_resrep.build_variants({"resnet50v2": {"base_input": 240, "ir": [3], "nar": [2], "resrep": [0.9]}})
    assert [v.id for v in vs] == ["resnet50v2__original", "resnet50v2__ir_k3", "resnet50v2__nar_phi2",
                                  "resnet50v2__resrep_eps0.90"]
    assert [v.spec.input_size for v in vs] == [240, 158, 181, 240]
    assert [v.spec_buildable for v in vs] == [True, True, True, False]


@pytest.mark.parametrize("config, message", [
    ({"vgg16": {}}, "unknown torch model 'vgg16'"),
    ({"inception_v3": {}}, "unknown torch model 'inception_v3'"),  # in the registry, but Keras only
    ({"resnet50v2": {"prune": [1]}}, r"unknown key\(s\) \['prune'\]"),
    ({"resnet50v2": {"nar": [0]}}, "bad level 0"),
    ({"resnet50v2": {"ir": [1.5]}}, "bad level 1.5"),
    ({"resnet50v2": {"resrep": [3.0]}}, "bad level 3.0"),
    ({"inception_v4": {"base_input": 88, "ir": [2]}}, "inception_v4__ir_k2 would take 67 px.*at least 75"),
    ({"inception_v4": {"base_input": 74}}, "inception_v4__original would take 74 px.*at least 75"),
    ({}, "non-empty"),
])
def test_bad_variant_config_is_a_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        til_nar_resrep.build_variants(config)


def test_min_input_of_inception_v4():
    size = arch.model_entry("inception_v4").min_input
    net = models.build(arch.inception_v4(input_size=size)).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, size, size)).shape == (1, 2)
        with pytest.raises(RuntimeError):
            net(torch.rand(1, 3, size - 1, size - 1))


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

    # the slide maps (til_maps) still find the model files among the cache records
    assert classifiers.find_checkpoints(model_dir) == {"original": model_dir / "tiny__original.pt",
                                                                "reduced": model_dir / "tiny__ir_k2.pt"}

    # damaged files, one of each kind: said so (naming the file), kept aside, only that work redone
    (model_dir / "tiny__ir_k2.pt").write_bytes(b"not a checkpoint")
    (model_dir / "tiny__original__run0.json").write_text("{truncated")
    (model_dir / "tiny__resrep__run0.pt").write_bytes(b"not a torch file")
    log.clear()
    with pytest.warns(cache.CorruptRecordWarning) as caught:
        til_nar_resrep.TilRunner(tiny_task, tmp_path, cfg, rcfg, device="cpu", log=log.append).run(variants,
                                                                                                   progress=False)
    named = " ".join(str(w.message) for w in caught)
    for name in ("tiny__ir_k2.pt", "tiny__original__run0.json", "tiny__resrep__run0.pt"):
        assert name in named and (model_dir / f"{name}.corrupt").exists(), (name, named)
    assert sum("trained in" in m for m in log) == 2 and sum("remembered" in m for m in log) == 1, log
    checkpoints.load_model(model_dir / "tiny__ir_k2.pt")

    # changed settings: a different fingerprint, so the run is redone rather than reused, then reused
    changed = til_nar_resrep.TrainConfig(epochs=1, batch_size=8, runs=1, lr=1e-3)
    for expected in (1, 0):
        log.clear()
        til_nar_resrep.TilRunner(tiny_task, tmp_path, changed, rcfg, device="cpu", log=log.append).run(
            variants[:1], progress=False)
        assert sum("trained in" in m for m in log) == expected, log
    assert checkpoints.load_model(model_dir / "tiny__original.pt")[1]["variant_fingerprint"] == \
        til_nar_resrep.TilRunner(tiny_task, tmp_path, changed, rcfg).variant_key(variants[0])


def test_a_lost_model_file_retrains_the_recorded_runs(tiny_task, tmp_path):
    cfg = til_nar_resrep.TrainConfig(epochs=1, batch_size=8, runs=2)
    variants = til_nar_resrep.build_variants({"tiny": {"base_input": 16}})
    log: list[str] = []
    til_nar_resrep.TilRunner(tiny_task, tmp_path, cfg, device="cpu", log=log.append).run(variants, progress=False)
    (tmp_path / "models" / "til_nar_resrep" / "tiny__original.pt").unlink()
    log.clear()
    again = til_nar_resrep.TilRunner(tiny_task, tmp_path, cfg, device="cpu", log=log.append).run(variants,
                                                                                                 progress=False)
    assert "model file" in log[0] and sum("trained in" in m for m in log) == 2, log
    assert not any(run["resumed"] for run in again["tiny__original"].runs)


def test_grid_search_is_cached_per_candidate(tiny_task, tmp_path, monkeypatch):
    grid = {"phi": 1, "epochs": 1, "alphas": [1.2, 1.3], "betas": [1.1], "gammas": [1.15], "target": 2.0, "tol": 0.15}
    cfg = til_nar_resrep.TrainConfig(epochs=1, batch_size=8)
    base = arch.tiny(input_size=16)
    first = til_nar_resrep.nar_grid_search(tiny_task, base, grid, cfg, tmp_path, device="cpu")
    assert len(first) == 2 and sum(r["paper_choice"] for r in first) == 1
    folder = tmp_path / "models" / "til_nar_resrep" / "grid"
    assert len(list(folder.glob("*.json"))) == 2

    def no_training(*args, **kwargs):
        raise AssertionError("a cached candidate was trained again")

    from histolean.core import train

    monkeypatch.setattr(train, "fit", no_training)
    assert til_nar_resrep.nar_grid_search(tiny_task, base, grid, cfg, tmp_path, device="cpu") == first
    monkeypatch.undo()
    (folder / "a1.30_b1.10_g1.15.json").write_text("")
    with pytest.warns(cache.CorruptRecordWarning, match="a1.30_b1.10_g1.15.json"):
        again = til_nar_resrep.nar_grid_search(tiny_task, base, grid, cfg, tmp_path, device="cpu")
    assert [r["val_auc"] for r in again] == pytest.approx([r["val_auc"] for r in first])  # seeded: the same


def test_resrep_flops_targets_follow_the_papers_table_3():
    cfg = til_nar_resrep.ResRepConfig(flops_target="paper", conversion="collapsed")
    assert [cfg.target_for(e) for e in (0.82, 0.84, 0.86, 0.88, 0.90, 0.92, 0.94)] == \
        [0.86, 0.82, 0.79, 0.80, 0.75, 0.63, 0.63]
    assert til_nar_resrep.ResRepConfig(flops_target=0.5).target_for(0.9) == 0.5
    with pytest.raises(ValueError, match="no epsilon 0.83"):
        cfg.target_for(0.83)
    with pytest.raises(ValueError, match="flops_target must be a fraction"):
        til_nar_resrep.ResRepConfig(flops_target=1.5)
    with pytest.raises(ValueError, match="conversion must be"):
        til_nar_resrep.ResRepConfig(conversion="mask")


def test_every_variant_is_timed_on_the_deployment_backend_beside_eager_fp32(tmp_path):
    from histolean.experiments.til_nar_resrep import VariantResult, build_variants, deployed_speed

    variants = build_variants({"tiny": {"base_input": 32, "ir": [1]}})
    group = {v.id: VariantResult(v, net=models.build(v.spec, seed=0).eval()) for v in variants}
    original = next(v.id for v in variants if v.method == "original")
    windows = np.random.default_rng(0).integers(0, 256, (8, 30, 30, 3), dtype=np.uint8)
    speed = deployed_speed(group, original, windows, backend="onnxruntime", batch_size=2, repeats=2,
                           cache_dir=tmp_path)
    assert set(speed) == set(group)
    for row in speed.values():
        assert row["backend"] == "onnxruntime" and row["precision"] == "fp32" and "BatchNorm fused" in row["speed_form"]
        assert row["backend_chosen_by"] == "override" and row["backend_check"]["passed"]
        assert row["speedup_min"] <= row["speedup"] <= row["speedup_max"] and row["latency_ms"] > 0
        assert row["throughput_per_s_eager_fp32"] > 0 and row["speed_repeats"] == 2
    assert speed[original]["speedup"] == speed[original]["speedup_eager_fp32"] == 1.0
    assert "eager PyTorch" in til_nar_resrep.speed.speed_form("torch")
