"""histolean.experiments.pcam_idc_zoo: the models as the paper describes them (and as the torch registry builds
B2/B6), their costs by the NAR formula, weights (ImageNet cache, stand-in files, damaged files), resumable runs
through the one cache helper, the notebook's rows, in-domain transfer, Hyperband, Welch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
import keras  # noqa: E402

from histolean import arch, data, flops, models  # noqa: E402
from histolean.core import metrics  # noqa: E402
from histolean.experiments import pcam_idc_zoo as kz  # noqa: E402
from histolean.experiments.pcam_idc_zoo import runs  # noqa: E402
from histolean.study import published  # noqa: E402
from histolean.study.records import Recorder  # noqa: E402
from histolean.util import cache  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _patches(n: int, size: int, seed: int = 0, split: str = "train") -> data.PatchSet:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    images[labels == 1, :, :, 0] = 255  # a learnable difference
    return data.PatchSet(images, labels, np.zeros(n), [f"p{seed}_{i}" for i in range(n)], "test", "synthetic", split)


def test_import_histolean_never_pulls_tensorflow():
    # the zoo package re-exports lazily: its claims and statistics need no Keras
    code = ("import sys, histolean, histolean.study.plots, histolean.study.report, histolean.study.runner, histolean.core.flops, "
            "histolean.study.records, histolean.study.published, histolean.experiments.pcam_idc_zoo, "
            "histolean.experiments.pcam_idc_zoo.claims; "
            "from histolean.experiments.pcam_idc_zoo import paper_claims, welch_t_test; "
            "print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_model_and_small_input_are_clear_errors():
    with pytest.raises(ValueError, match="unknown keras model 'resnet18'.*b2, b6, inception_v3"):
        kz.build("resnet18", 96)
    with pytest.raises(kz.InputTooSmall, match="inception_v3: input 50x50 px is below its minimum of 75x75"):
        kz.build("inception_v3", 50)
    with pytest.raises(kz.InputTooSmall, match="b6: input 35x35"):
        kz.build("b6", 35)
    assert kz.build("b6", 36)(np.zeros((1, 36, 36, 3))).shape == (1, 1)   # the stated minimum runs


def test_b2_b6_match_the_paper_and_the_flop_formula():
    paper = {r["model"]: r for r in published.table("zoo", "table1_models")}
    for name, params in (("b2", 9_491_393), ("b6", 2_386_689)):
        model = kz.build(name, 96)
        info = kz.describe(model)
        assert info["params"] == params
        assert info["params"] / 1e6 == pytest.approx(paper[name]["params_m"], abs=0.1)   # printed truncated: 9.4 M
        assert info["layers"] == paper[name]["depth"]          # len(model.layers), as the paper's code prints
        # the same network as histolean.core.arch's spec, up to the output layer (1 sigmoid unit vs 2 logits)
        spec_flops = flops.flop_count(arch.spec(name, input_size=96))
        assert flops.keras_flop_count(model) == spec_flops - flops.dense_flops(256, 2) + flops.dense_flops(256, 1)


@pytest.mark.parametrize("name", ["b2", "b6"])
@pytest.mark.parametrize("size", [96, 50])
def test_torch_and_keras_b2_b6_train_the_same_parameters(name, size):
    """B2/B6 are written once per framework: with the same head (one output unit) both train the same number of
    parameters (Keras's total also counts BatchNorm moving statistics, so only trainable ones are compared)."""
    torch_net = models.build(arch.spec(name, num_classes=1, input_size=size))
    keras_model = kz.build(name, size)
    assert flops.count_params(torch_net) == flops.keras_param_counts(keras_model)["trainable"] > 0
    # and both builders are the registry's
    entry = arch.model_entry(name)
    assert entry.builder("keras") is kz.build and entry.frameworks == ("torch", "keras")


def test_registry_and_zoo_agree_on_the_twelve_models():
    keras_names = [n for n, e in arch.MODELS.items() if "keras" in e.builders]
    assert len(keras_names) == 12
    assert set(keras_names) == set(kz.APPLICATIONS) | {"b2", "b6"}
    for name in keras_names:
        assert kz.model_entry(name).paper_name == {r["model"]: r["paper"] for r in
                                                     published.table("zoo", "table1_models")}[name]


def test_application_head_and_imagenet_classifier_params():
    model = kz.build("mobilenet", 32)
    names = [layer.name for layer in model.layers[-3:]]
    assert names == ["head_pool", "head_dense", "head_out"]
    info = kz.describe(model)
    assert info["params_imagenet_classifier"] == 4_253_864   # keras.applications.MobileNet(), 1000 classes
    assert info["gflops"] > 0 and info["weight_layers"] < info["layers"]


def test_imagenet_weights_missing_from_cache_is_a_reasoned_skip(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(kz.WeightsUnavailable, match=r"not in the local Keras cache .*mobilenet_1_0_224_tf_no_top\.h5"):
        kz.build("mobilenet", 32, weights="imagenet")
    with pytest.raises(kz.WeightsUnavailable, match="no ImageNet weights"):
        kz.build("b2", 32, weights="imagenet")


def _stand_in(name: str, size: int, seed: int = 3) -> keras.Model:
    return kz.trunk(kz.build(name, size, seed=seed))


def test_stand_in_weights_file_loads_and_freezes_the_trunk(tmp_path):
    source = _stand_in("mobilenet", 32)
    path = tmp_path / "stand_in.weights.h5"
    source.save_weights(str(path))
    model = kz.build("mobilenet", 32, weights=path, seed=0)
    conv = model.get_layer("conv1")
    np.testing.assert_array_equal(conv.get_weights()[0], source.get_layer("conv1").get_weights()[0])
    head = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert head == (1024 + 1) * 256 + 257   # only the new head trains (transfer learning)


def test_stand_in_in_the_keras_cache_goes_through_the_imagenet_path(tmp_path, monkeypatch):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    source = _stand_in("mobilenet", 32)
    cache = tmp_path / "models"
    cache.mkdir()
    # the format of Keras's ImageNet files
    with h5py.File(cache / kz.APPLICATIONS["mobilenet"].imagenet_file, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    model = kz.build("mobilenet", 32, weights="imagenet")
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], source.get_layer("conv1").get_weights()[0])


def test_missing_or_damaged_weights_file_names_the_file(tmp_path):
    with pytest.raises(kz.WeightsError, match="nothere.weights.h5 does not exist"):
        kz.build("mobilenet", 32, weights=tmp_path / "nothere.weights.h5")
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not an hdf5 file")
    with pytest.raises(kz.WeightsError, match="cannot load weights file .*bad.weights.h5"):
        kz.build("mobilenet", 32, weights=bad)
    other = tmp_path / "b2.weights.h5"
    kz.build("b2", 32).save_weights(str(other))
    with pytest.raises(kz.WeightsError, match="b2.weights.h5"):
        kz.build("b6", 40, weights=other)


def test_fit_and_test_keeps_the_best_epoch_and_times_epochs():
    tr, va, te = _patches(32, 16, 0), _patches(16, 16, 1), _patches(16, 16, 2)
    model = kz.build("b2", 16)
    res = kz.fit_and_test(model, (tr.images, tr.labels), (va.images, va.labels), (te.images, te.labels),
                          epochs=2, batch_size=8, lr=1e-3)
    assert len(res["history"]) == 2 and len(res["train_s_per_epoch"]) == 2
    assert res["best_epoch"] in (1, 2)
    best_acc = max(h["val_accuracy"] for h in res["history"])
    assert res["history"][res["best_epoch"] - 1]["val_accuracy"] == best_acc
    assert res["metrics"]["auc"] > 0.9 and res["metrics"]["n_test"] == 16   # the red channel gives class 1 away
    assert res["time_per_epoch_s"] > 0
    assert len(res["valid_probs"]) == 16 and len(res["test_probs"]) == 16   # for the learning check and pairing
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 1"):
        kz.fit_and_test(model, (tr.images, tr.labels), (va.images, va.labels), (te.images, te.labels), epochs=0)


def test_a_dry_run_trains_one_batch_and_logs_the_step_for_the_table(tmp_path):
    from histolean.util import dryrun

    tr, va, te = _patches(40, 16, 0), _patches(16, 16, 1), _patches(16, 16, 2)
    log = tmp_path / "dry.jsonl"
    with dryrun.enabled(log):
        res = kz.fit_and_test(kz.build("b2", 16), (tr.images, tr.labels), (va.images, va.labels),
                              (te.images, te.labels), epochs=15, batch_size=8, lr=1e-3)
    # one epoch of one training batch; the validation and test sets are the caller's, whole (probabilities
    # line up with its labels)
    assert len(res["history"]) == 1 and res["metrics"]["n_test"] == 16 and len(res["valid_probs"]) == 16
    (entry,) = dryrun.read_log(log)
    # the table extrapolates the full run: 15 epochs of ceil(40 / 8) steps
    assert entry["kind"] == "fit" and entry["epochs"] == 15 and entry["steps_per_epoch"] == 5
    assert entry["batch"] == 8 and entry["input_shape"] == [8, 16, 16, 3] and entry["step_s"] > 0
    assert 0 < entry["largest_tensor_bytes"] <= entry["activation_bytes"] and entry["param_bytes"] > 0
    from histolean.experiments.pcam_idc_zoo.training import first_batch

    images, labels = first_batch(tr.images, tr.labels, 5)
    assert len(labels) == 5 and set(labels) == {0, 1}


def test_run_variant_is_resumable_and_retrains_on_new_settings(tmp_path):
    tr, va, te = _patches(16, 16, 0), _patches(8, 16, 1), _patches(8, 16, 2)
    first = kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-3)
    assert not first["reused"] and Path(first["weights_file"]).is_file()
    again = kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-3)
    assert again["reused"] and again["metrics"] == first["metrics"]
    other = kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-2)
    assert not other["reused"]
    stored = json.loads((tmp_path / "b2" / "result.json").read_text())
    assert stored["value"]["settings"]["lr"] == 1e-2 and stored[cache.KEY_FIELD]
    # a result file whose weights were lost is not trusted
    Path(other["weights_file"]).unlink()
    assert not kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-2)["reused"]


def test_run_variant_moves_a_corrupt_record_aside_and_retrains(tmp_path):
    tr, va, te = _patches(16, 16, 0), _patches(8, 16, 1), _patches(8, 16, 2)
    kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-3)
    (tmp_path / "b2" / "result.json").write_text('{"cache_key": "trunc')   # a record cut short
    with pytest.warns(cache.CorruptRecordWarning, match="result.json"):
        again = kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-3)
    assert not again["reused"] and (tmp_path / "b2" / "result.json.corrupt").is_file()
    assert kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-3)["reused"]


def test_run_variant_writes_the_weights_before_the_result(tmp_path, monkeypatch):
    tr, va, te = _patches(16, 16, 0), _patches(8, 16, 1), _patches(8, 16, 2)
    first = kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-3)
    Path(first["weights_file"]).unlink()   # its result stays, but is not trusted without weights: retrain
    seen = []
    real_save = cache.save

    def save(path, key, value):
        seen.append((tmp_path / "b2" / runs.WEIGHTS_FILE).is_file())
        assert not (tmp_path / "b2" / runs.RESULT_FILE).exists()   # the old result went before new weights came
        return real_save(path, key, value)

    monkeypatch.setattr(runs.cache, "save", save)
    assert not kz.run_variant(tmp_path / "b2", "b2", tr, va, te, epochs=1, batch_size=8, lr=1e-3)["reused"]
    assert seen == [True]


def test_zoo_runner_records_trained_and_skipped_variants(tmp_path):
    sets = {"idc": {"train": _patches(16, 20, 0), "valid": _patches(8, 20, 1), "test": _patches(8, 20, 2)}}
    rec = Recorder("pcam_idc_zoo", tmp_path, profile="test")
    zoo = kz.ZooRunner(rec, sets, tmp_path / "models", epochs=1, batch_size=8, lr=1e-3, threads={"intra_op": 1})
    assert zoo.kinds == {"idc": "synthetic"}
    assert zoo.scales["idc"] == {"base_input": 20, "epochs": 1, "paper_epochs": 15, "runs": 1, "n_train": 16,
                                 "n_valid": 8, "n_test": 8}
    ok = zoo.train("idc", "b2", "full")
    assert ok["status"] == "ok" and ok["paper_name"] == "B2" and ok["setting"]["batch_size"] == 8
    assert ok["learned"] and ok["valid_auc_ci"][0] > 0.5 and len(ok["test_probs"]) == len(ok["test_labels"]) == 8
    assert ok["resampling_unit"] == "patient" and ok["setting"]["protocol"]["optimizer"]["value"] == "Adam"
    # constant outputs (a collapsed model) do not beat chance: such a row is "did_not_learn"
    assert not zoo.learning_check("idc", [0.5] * 8)["learned"]
    assert not zoo.learning_check("idc", [0.9, 0.1] * 4)["learned"]   # ranks the classes the wrong way round
    assert ok["params"] == kz.describe(kz.build("b2", 20))["params"] and "full_epoch_s_extrapolated" not in ok
    assert ("idc", "full", "b2") in zoo.results and (tmp_path / "models" / "idc" / "full" / "b2" / "result.json").is_file()
    skipped = zoo.train("idc", "b6", "full")   # 20 px is below B6's 36
    assert skipped["status"] == "skipped" and "minimum of 36x36" in skipped["skip_reason"] and not skipped["metrics"]
    arch_row = zoo.record_architecture("b2", 96)
    assert arch_row["params"] == 9_491_393 and arch_row["paper_depth"] == 10 and arch_row["method"] == "architecture"
    assert [r["method"] for r in rec.rows] == ["full", "full", "architecture"]


def test_in_domain_transfer_copies_and_freezes_the_trunk(tmp_path):
    source = kz.build("b6", 48, seed=1)
    target = kz.with_new_head(source, "b6", 40, seed=2)
    np.testing.assert_array_equal(target.get_layer("conv3").get_weights()[0], source.get_layer("conv3").get_weights()[0])
    assert all(not layer.trainable for layer in kz.trunk_layers(target) if layer.weights)
    assert target.get_layer("head_dense").trainable
    with pytest.raises(ValueError, match="is not a b6 trunk"):
        kz.with_new_head(kz.build("b2", 48), "b6", 40)
    # through run_variant, from a weights file, across input sizes
    tr, va, te = _patches(16, 40, 0), _patches(8, 40, 1), _patches(8, 40, 2)
    path = kz.save_weights(source, tmp_path / "pcam.weights.h5")
    res = kz.run_variant(tmp_path / "t", "b6", tr, va, te, epochs=1, batch_size=8, lr=1e-3,
                         source_weights=path, source_input_size=48)
    assert res["architecture"]["params_trainable"] < res["architecture"]["params"]


def test_tune_runs_hyperband_and_resumes(tmp_path):
    tr, va = _patches(16, 16, 0), _patches(8, 16, 1)
    best = kz.tune("b2", tr, va, directory=tmp_path, max_epochs=2, factor=3, batch_sizes=[4, 8])
    assert best["batch_size"] in (4, 8) and 1e-5 <= best["learning_rate"] <= 1e-2
    assert best["trials"] >= 1 and (tmp_path / best["project"]).is_dir()
    again = kz.tune("b2", tr, va, directory=tmp_path, max_epochs=2, factor=3, batch_sizes=[4, 8])
    assert again["learning_rate"] == best["learning_rate"] and again["trials"] == best["trials"]
    with pytest.raises(ValueError, match="batch_sizes must be positive"):
        kz.tune("b2", tr, va, directory=tmp_path, batch_sizes=[0])


def test_welch_reproduces_the_papers_t_tests():
    for table, expected in (("table3_pcam", (-2.5527, 16.285, 0.02108)), ("table4_idc", (-3.5998, 8.4843, 0.006335))):
        rows = published.table("zoo", table)
        res = kz.welch_t_test([r["auc"] for r in rows if r["method"] == "transfer"],
                              [r["auc"] for r in rows if r["method"] == "full"])
        assert res["t"] == pytest.approx(expected[0], abs=1e-4)
        assert res["df"] == pytest.approx(expected[1], abs=1e-3)
        assert res["p"] == pytest.approx(expected[2], rel=1e-3)


def test_recalibrated_batchnorm_makes_evaluation_match_training_mode():
    model = kz.build("mobilenet", 32, seed=0)
    images = _patches(16, 32, 0).images
    x = kz.to_inputs(images)
    for layer in model.layers:   # statistics far from the data, as after a few fast-moving steps
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(layer.moving_mean + 5.0)
    assert kz.recalibrate_batchnorm(model, images) == 27
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(model(x, training=True)), atol=1e-4)
    assert all(layer.momentum == 0.99 for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))


def test_an_accuracy_tie_keeps_the_epoch_that_ranks_better():
    # every output below 0.5 in both epochs (accuracy 0.5 twice): the paper's rule alone keeps epoch 1, which
    # here ranks the classes the wrong way round; the AUC tie-break keeps epoch 2 (IDC B2 in the default run)
    from histolean.experiments.pcam_idc_zoo.training import _BestEpoch

    labels = np.arange(16) % 2
    images = np.where(labels[:, None, None, None] == 1, 200, 50).astype(np.uint8) * np.ones((16, 4, 4, 3), np.uint8)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    best = _BestEpoch((images, labels))
    best.set_model(model)
    for epoch, sign in enumerate((-1.0, 1.0)):
        model.layers[-1].set_weights([np.full((48, 1), sign * 0.01, np.float32), np.array([-3.0], np.float32)])
        best.on_epoch_begin(epoch)
        best.on_epoch_end(epoch)
    assert [h["val_accuracy"] for h in best.history] == [0.5, 0.5]
    assert best.history[0]["val_auc"] < 0.5 < best.history[1]["val_auc"] and best.best_epoch == 2
    assert metrics.auc(labels, best.best_probs) == 1.0
