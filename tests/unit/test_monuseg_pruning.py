"""The monuseg_pruning experiment's own helpers: settings, resume key, crops, aggregation of per-image scores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from histolean import data
from histolean.experiments import monuseg_pruning

PARAMETERS = dict(output_dir="out", data_root="", seed=0, train_data="monuseg", shift_data="tnbc", mpp=None,
                  width=0.125, encoder_weights="", n_train=2, crop=64, crops_per_image=2, batch_size=2, lr=1e-3,
                  epochs=1, retrain_epochs=1, max_cr=4,
                  schemes=["network-wide", "layer-wise"], n_test=2, n_tnbc=2, eval_crop=128, tile=128, overlap=32,
                  speed_input=64, speed_repeats=5, resume=True, workers=1)


def images(names=("a", "b")) -> monuseg_pruning.Images:
    tiles = [replace(t, name=n) for t, n in zip(data.synthetic_tiles(len(names), size=64, seed=0), names)]
    return monuseg_pruning.Images(tiles, {"monuseg": tiles, "tnbc": tiles},
                                  {"train": "real", "monuseg": "real", "tnbc": "synthetic"})


def test_config_takes_the_notebook_parameters_and_names_missing_ones():
    namespace = PARAMETERS | {"profile": "smoke", "torch_threads": 1}
    config = monuseg_pruning.Config.from_parameters(namespace)
    assert config.schemes == ("network-wide", "layer-wise") and config.scale["encoder"] == "random"
    assert config.state_dir.as_posix() == "out/checkpoints/monuseg_pruning"
    with pytest.raises(ValueError, match=r"\['tile'\]"):
        monuseg_pruning.Config.from_parameters({k: v for k, v in PARAMETERS.items() if k != "tile"})


def test_resume_key_follows_settings_and_images():
    config = monuseg_pruning.Config.from_parameters(PARAMETERS)
    key = monuseg_pruning.resume_key(config, images())
    assert key == monuseg_pruning.resume_key(config, images())
    longer = monuseg_pruning.Config.from_parameters(PARAMETERS | {"epochs": 2})
    assert key != monuseg_pruning.resume_key(longer, images())
    assert key != monuseg_pruning.resume_key(config, images(names=("a", "c")))
    other = images()
    other.kinds = other.kinds | {"tnbc": "real"}
    assert key != monuseg_pruning.resume_key(config, other)


def test_rows_are_synthetic_whenever_the_training_images_are():
    sets = images()
    assert sets.data_kind("monuseg") == "real" and sets.data_kind("tnbc") == "synthetic"
    sets.kinds["train"] = "synthetic"
    assert sets.data_kind("monuseg") == "synthetic"


def test_center_crop_cuts_image_and_instances_alike():
    [tile] = data.synthetic_tiles(1, size=96, seed=0)
    crop = monuseg_pruning.center_crop(tile, 64)
    assert crop.image.shape == (64, 64, 3) and crop.instances.shape == (64, 64)
    assert np.array_equal(crop.instances, tile.instances[16:80, 16:80])
    assert monuseg_pruning.center_crop(tile, 0) is tile


def test_summarise_gives_mean_median_and_quartiles():
    rows = [{"dice": v, "mse": 0.0, "aji": v, "pq": v} for v in (0.1, 0.2, 0.3, 0.4, 0.5)]
    s = monuseg_pruning.summarise(rows)
    assert s["dice"] == pytest.approx(0.3) and s["aji_median"] == pytest.approx(0.3)
    assert s["pq_q25"] == pytest.approx(0.2) and s["pq_q75"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no rows"):
        monuseg_pruning.summarise([])


def test_a_second_run_with_the_same_settings_resumes_from_the_saved_records(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from histolean.study.records import Recorder

    trained = []

    def fake_train(self, branch, net, epochs, seed):   # the resume logic, not the training, is under test
        trained.append(branch)
        return SimpleNamespace(history=[{"train_loss": 1.0}])

    monkeypatch.setattr(monuseg_pruning.PruningRun, "_train", fake_train)
    config = monuseg_pruning.Config.from_parameters(PARAMETERS | {"output_dir": str(tmp_path), "eval_crop": 32,
                                                                   "tile": 32, "overlap": 0})
    tiles = [replace(t, name=n) for t, n in zip(data.synthetic_tiles(2, size=32, seed=0), "ab")]
    sets = monuseg_pruning.Images(tiles, {"monuseg": tiles[:1], "tnbc": tiles[1:]},
                                  {"train": "synthetic", "monuseg": "synthetic", "tnbc": "synthetic"})

    def run(cfg):
        rec = Recorder("t", tmp_path, profile="smoke")
        monuseg_pruning.PruningRun(cfg, sets, rec, device="cpu").train_base()
        return rec.rows

    first = run(config)
    assert trained == ["semantic", "regression"] and (config.state_dir / "base.pt").is_file()
    again = run(config)
    assert len(trained) == 2 and [r["metrics"] for r in again] == [r["metrics"] for r in first]
    run(replace(config, resume=False))   # resume=False forgets the records (another setting: test_resume_key_...)
    assert len(trained) == 4


def _fake_training(monkeypatch, trained: list):
    from types import SimpleNamespace

    def fake_train(self, branch, net, epochs, seed):   # the schedule, not the training, is under test
        trained.append((branch, epochs, seed))
        return SimpleNamespace(history=[{"train_loss": 1.0}])

    monkeypatch.setattr(monuseg_pruning.PruningRun, "_train", fake_train)


def test_every_pruned_round_has_a_dense_control_with_the_same_retraining(tmp_path, monkeypatch):
    from histolean.study.records import Recorder

    trained = []
    _fake_training(monkeypatch, trained)
    config = monuseg_pruning.Config.from_parameters(PARAMETERS | {"output_dir": str(tmp_path), "eval_crop": 32,
                                                                   "tile": 32, "overlap": 0})
    tiles = [replace(t, name=n) for t, n in zip(data.synthetic_tiles(2, size=32, seed=0), "ab")]
    sets = monuseg_pruning.Images(tiles, {"monuseg": tiles[:1], "tnbc": tiles[1:]},
                                  {"train": "synthetic", "monuseg": "synthetic", "tnbc": "synthetic"})
    rec = Recorder("t", tmp_path, profile="smoke")
    run = monuseg_pruning.PruningRun(config, sets, rec, device="cpu")
    run.train_base()
    run.prune()
    rows = {(r["dataset"], r["setting"]["scheme"], r["setting"]["cr"]): r for r in rec.rows}
    for scheme in (monuseg_pruning.CONTROL, "network-wide", "layer-wise"):
        for cr in (2, 4):
            row = rows[("monuseg", scheme, cr)]
            assert row["epochs_trained"] == 1 + {2: 1, 4: 2}[cr] and row["per_image"]["image"] == ["a"]
    assert rows[("tnbc", monuseg_pruning.CONTROL, 4)]["sparsity"]["semantic"] == 0.0
    assert "retrained" in rows[("monuseg", "layer-wise", 4)]["speedup_weights"]
    # the control retrains with the same epochs and seeds as each pruned round
    assert [seed for _, _, seed in trained] == [0, 0] + [2, 2, 4, 4] * 3     # base, control, two schemes
    # layer-wise leaves the output head whole and halves every other layer twice
    layers = {r["layer"]: r for r in run.runs["layer-wise"][-1]["sparsity"]["semantic"]["layers"]}
    assert layers["head"]["kept"] == layers["head"]["weights"]
    assert all(r["kept"] < r["weights"] / 3 for name, r in layers.items() if name != "head")


def test_a_test_split_that_cannot_be_scored_is_a_clear_error():
    [tile] = data.synthetic_tiles(1, size=64, seed=0)
    with pytest.raises(data.DataError, match="tnbc: the test split holds no images"):
        monuseg_pruning.check_scored([], "tnbc")
    one_label = replace(tile, instances=(tile.instances > 0).astype(np.int32), path="GT_01/01_1.png")
    with pytest.raises(data.DataError, match=r"GT_01/01_1\.png: instance mask has one label \(1\) for all \d+ separate"):
        monuseg_pruning.check_scored([one_label], "tnbc")
    assert monuseg_pruning.check_scored([tile], "tnbc") == [tile]


def test_a_broken_data_folder_is_an_error_not_generated_tiles(tmp_path):
    (tmp_path / "monuseg" / "train" / "images").mkdir(parents=True)   # present but empty
    config = monuseg_pruning.Config.from_parameters(PARAMETERS | {"data_root": str(tmp_path)})
    with pytest.raises(data.DataError, match=r"train/images: holds no"):
        monuseg_pruning.load_data(config)


@pytest.mark.slow
def test_workers_compute_the_independent_trainings_and_the_parent_records_them(tmp_path):
    from histolean.study.records import Recorder

    config = monuseg_pruning.Config.from_parameters(PARAMETERS | {
        "output_dir": str(tmp_path), "eval_crop": 32, "tile": 32, "overlap": 0, "crop": 32, "crops_per_image": 1,
        "max_cr": 2, "workers": 2})
    tiles = [replace(t, name=n) for t, n in zip(data.synthetic_tiles(2, size=64, seed=0), "ab")]
    sets = monuseg_pruning.Images(tiles, {"monuseg": tiles[:1], "tnbc": tiles[1:]},
                                  {"train": "synthetic", "monuseg": "synthetic", "tnbc": "synthetic"})
    rec = Recorder("t", tmp_path, profile="smoke")
    run = monuseg_pruning.PruningRun(config, sets, rec, device="cpu")
    base = run.train_base()
    assert set(base["train"]) == {"semantic", "regression"} and base["train"]["semantic"]["train_time_s"] > 0
    run.prune()
    # every chain was computed and saved by a worker: the parent only loaded the rounds and recorded them
    assert all(r["resumed"] for r in run.control + [r for rs in run.runs.values() for r in rs])
    seen = {(r["dataset"], r["setting"]["scheme"], r["setting"]["cr"]) for r in rec.rows}
    assert {("tnbc", s, 2) for s in (monuseg_pruning.CONTROL, "network-wide", "layer-wise")} <= seen
