"""Cross-validation by image of the TIL experiment: folds, pooled out-of-fold predictions, resume, errors."""

from __future__ import annotations

import numpy as np
import pytest

from histolean.core import checkpoints
from histolean.data.common import DataError
from histolean.data.crc import image_folds
from histolean.data.til_task import fold_assignment, load_til_task
from histolean.experiments import til_nar_resrep
from histolean.experiments.til_maps import classifiers
from histolean.experiments.til_nar_resrep.crossval import FINAL

# small real windows: 22 um = 40 px at 0.55 um/px, a few random training windows per image
TASK = {"dataset": "crc_windows", "window_um": 22.0, "train_windows_per_image": 4, "n_train": 48, "n_eval": None}


def _labels(n_images, positives_every=2):
    return {f"img{i}": np.array([1, 0] if i % positives_every == 0 else [0, 0]) for i in range(1, n_images + 1)}


def test_image_folds_put_every_image_in_one_fold_with_both_classes():
    labels = _labels(20)
    folds = image_folds(list(labels), labels, n_folds=5, seed=0)
    assert sorted(folds) == sorted(labels) and set(folds.values()) == set(range(5))
    for k in range(5):
        members = [n for n, f in folds.items() if f == k]
        assert len(members) == 4 and set(np.concatenate([labels[n] for n in members])) == {0, 1}
    assert image_folds(list(labels), labels, n_folds=5, seed=0) == folds   # deterministic


@pytest.mark.parametrize("labels, n_folds, message", [
    (_labels(3), 5, r"3 image\(s\) cannot make 5 folds"),
    ({f"img{i}": np.zeros(4) for i in range(1, 11)}, 5, "both classes"),
    (_labels(10), 1, "n_folds must be an integer >= 2"),
])
def test_impossible_folds_are_a_clear_error(labels, n_folds, message):
    with pytest.raises(ValueError, match=message):
        image_folds(list(labels), labels, n_folds=n_folds)


def test_every_image_is_tested_once_and_never_trains_its_own_fold():
    labels = _labels(15)
    tested = []
    for fold in range(5):
        assignment, folds = fold_assignment(list(labels), labels, 5, fold)
        test = {n for n, s in assignment.items() if s == "test"}
        valid = {n for n, s in assignment.items() if s == "valid"}
        assert test == set(folds[fold]) and valid == set(folds[(fold + 1) % 5]) and not test & valid
        tested += sorted(test)
    assert sorted(tested) == sorted(labels)
    final, folds = fold_assignment(list(labels), labels, 5, FINAL)
    assert {n for n, s in final.items() if s == "valid"} == set(folds[0]) and "test" not in final.values()
    with pytest.raises(ValueError, match="fold must be 0..4 or 'final'"):
        fold_assignment(list(labels), labels, 5, 5)


def test_cross_validation_needs_the_real_images(tmp_path):
    with pytest.raises(DataError, match="cross-validation by image needs the CRCHistoPhenotypes images"):
        load_til_task("crc_windows", tmp_path, cv_folds=3, fold=0)
    with pytest.raises(ValueError, match="built for crc_windows"):
        load_til_task("pcam", tmp_path, cv_folds=3, fold=0)


def test_a_dataset_with_too_few_images_for_the_folds_is_a_clear_error(real_data, tmp_path):
    folder = tmp_path / "crchistophenotypes"
    folder.mkdir()
    for name in ("img18", "img34"):   # links, not copies, of two real images
        (folder / name).symlink_to(real_data / "crchistophenotypes" / name)
    with pytest.raises(ValueError, match=r"2 image\(s\) cannot make 5 folds"):
        til_nar_resrep.CrossValidation({**TASK, "root": str(tmp_path)}, {"tiny": {"base_input": 16}}, tmp_path,
                                       til_nar_resrep.TrainConfig(epochs=1), n_folds=5, workers=1)


def test_cross_validation_pools_out_of_fold_predictions_stamps_models_and_resumes(real_data, tmp_path):
    cfg = til_nar_resrep.TrainConfig(epochs=1, batch_size=16, runs=1)
    arch_cfg = {"tiny": {"base_input": 16, "ir": [2]}}
    cv = til_nar_resrep.CrossValidation({**TASK, "root": str(real_data)}, arch_cfg, tmp_path, cfg, n_folds=3,
                                        workers=1)
    task = cv.scored_task()
    # the pooled test set holds every usable image once, each fold's test images in fold order
    per_fold = [set(cv.tasks[k].test.groups) for k in range(3)]
    assert not (per_fold[0] & per_fold[1]) and set(task.test.groups) == set.union(*per_fold)
    assert len(task.test) == sum(len(cv.tasks[k].test) for k in range(3))
    assert "3-fold cross-validation by image" in task.description["evaluation"]

    results = cv.run(progress=False)
    for vid in ("tiny__original", "tiny__ir_k2"):
        run = results[vid].runs[0]
        assert len(run["test_probs"]) == len(run["test_decisions"]) == len(task.test)
        assert len(run["fold_thresholds"]) == 3 and 0 <= run["decision_threshold"] <= 1 and not run["resumed"]
        assert (tmp_path / "models" / "til_nar_resrep" / "fold2" / f"{vid}.pt").exists()
    # the fold models' test predictions are those pooled (fold 1 sits after fold 0's windows)
    n0 = len(cv.tasks[0].test)
    runner = til_nar_resrep.TilRunner(cv.tasks[1], tmp_path, cfg, folder=tmp_path / "models" / "til_nar_resrep" /
                                      "fold1", device="cpu", log=lambda *_: None)
    fold1 = runner.run([results["tiny__ir_k2"].variant], progress=False)   # resumed from its record
    assert np.allclose(fold1["tiny__ir_k2"].runs[0]["test_probs"],
                       results["tiny__ir_k2"].runs[0]["test_probs"][n0:n0 + len(cv.tasks[1].test)])

    # the maps' models: out-of-fold threshold and AUC written in, found by the slide maps
    cv.stamp_checkpoints(results, task.test, n_boot=50)
    model_dir = tmp_path / "models" / "til_nar_resrep"
    _, info = checkpoints.load_model(model_dir / "tiny__ir_k2.pt")
    assert info["decision_threshold"] == pytest.approx(results["tiny__ir_k2"].runs[0]["decision_threshold"])
    assert info["oof_auc_ci"][0] <= info["oof_auc"] <= info["oof_auc_ci"][1] and info["auc"] == info["oof_auc"]
    assert "3-fold cross-validation" in info["oof_source"]
    assert classifiers.find_checkpoints(model_dir) == {"original": model_dir / "tiny__original.pt",
                                                       "reduced": model_dir / "tiny__ir_k2.pt"}

    # rows score the pooled predictions; the one-class flag reads each fold's own decisions
    rows = til_nar_resrep.summarise(results, task, {}, {"epochs": 1}, n_boot=50)
    assert all(r["metrics"]["n_images"] == len(set(task.test.groups)) for r in rows)
    assert all(len(r["fold_thresholds"][0]) == 3 for r in rows)

    # a re-run trains nothing (stamped model files included)
    again = til_nar_resrep.CrossValidation({**TASK, "root": str(real_data)}, arch_cfg, tmp_path, cfg, n_folds=3,
                                           workers=1).run(progress=False)
    assert all(run["resumed"] for r in again.values() for run in r.runs)
    assert np.allclose(again["tiny__original"].test_probs, results["tiny__original"].test_probs)


def test_one_class_flag_uses_each_folds_decisions():
    from histolean.experiments.til_nar_resrep.summary import summarise

    class Task:   # the scored task's test set and nothing else
        dataset, data_kind = "crc_windows", "real"
        test = type("T", (), {"labels": np.array([0, 1, 0, 1]), "groups": np.array(["a", "a", "b", "b"])})()

    variant = til_nar_resrep.build_variants({"tiny": {"base_input": 16}})[0]
    run = {"run": 0, "test_probs": [0.1, 0.9, 0.2, 0.8], "val_auc": 1.0, "train_time_s": 1.0, "resumed": False,
           "decision_threshold": 0.5, "fold_thresholds": [0.0, 0.0], "test_decisions": [1, 1, 1, 1]}
    results = {variant.id: til_nar_resrep.VariantResult(variant, runs=[run])}
    row = summarise(results, Task(), {}, {}, n_boot=20)[0]
    assert row["one_class"] and row["predicted_positive_share"] == 1.0   # not what 0.5 on the probabilities gives
