"""One trained variant, resumable, and its result row: what notebook 07 does per model.

* :func:`run_variant` trains and tests one model (full training, ImageNet or in-domain transfer) and keeps
  its result and best weights in a folder of its own, through the one cache helper
  (``histolean.util.cache``): a re-run with the same settings, data and code reuses them.
* :class:`ZooRunner` holds the notebook's protocol settings once and turns each result (or the reason a
  variant could not run) into a result row.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from histolean.core import arch, metrics
from histolean.experiments.pcam_idc_zoo import keras_models, training
from histolean.experiments.pcam_idc_zoo.keras_models import (WeightsError, WeightsUnavailable, build, describe,
                                                             load_weights, model_entry, resolve_weights, save_weights,
                                                             with_new_head)
from histolean.study import published
from histolean.util import cache

RESULT_FILE = "result.json"
WEIGHTS_FILE = "best.weights.h5"
PCAM_TRAIN_FULL = 262_144   # patches in PCam's training split: our epoch time extrapolated to the paper's epoch
NOT_RUN = (arch.InputTooSmall, WeightsUnavailable, WeightsError)   # a variant recorded as skipped, with the reason
DID_NOT_LEARN = "did_not_learn"   # status of a trained model whose validation AUC does not beat chance
# what the bootstrap resamples: IDC's patient ids are in its file names; our PCam copy has no slide ids;
# a user's folder in either slot: its groups (CSV column, else one group per patch)
RESAMPLING_UNIT = {"idc": "patient", "pcam": "patch"}
USER_UNIT = "group"


def data_kind_of(splits: dict) -> str:
    """One kind for a dataset slot: real or user when every split is, else synthetic."""
    kinds = {s.data_kind for s in splits.values()}
    return kinds.pop() if len(kinds) == 1 and kinds <= {"real", "user"} else "synthetic"
# The protocol and where each setting comes from: the paper's text, or our choice where the text is silent.
PROTOCOL = {
    "optimizer": ("Adam", "paper text (the tuned hyperparameter is 'Adam learning rate')"),
    "loss": ("binary cross-entropy, one sigmoid output", "paper text (binary labels, AUC); loss name our choice"),
    "selection": ("best epoch by validation accuracy, ties broken by validation AUC, then tested",
                  "paper text (accuracy); the tie-break is our choice (short runs tie at 0.5)"),
    "augmentation": ("none", "paper text states none (its repository's B6 script flips/rotates: not followed)"),
    "lr": (None, "our choice where untuned: Keras's Adam default 1e-3 (the text gives no untuned rate)"),
    "batch_size": (None, "our choice where untuned (the text tunes it and prints no value)"),
    "epochs": (None, "paper text 15; fewer here at reduced scale (see scale)"),
    "transfer": ("trunk frozen, new head (GAP, dense 256, sigmoid) trained", "paper text"),
    "bn_momentum": (None, "our choice (short runs; Keras's 0.99 is the paper's)"),
    "recalibrate_bn": (None, "our choice (short runs; the paper: none)"),
}


def data_fingerprint(*patch_sets) -> str:
    """A short hash of the patches' paths and labels: a cached model is reused only on the same data."""
    h = hashlib.sha256()
    for s in patch_sets:
        h.update("\n".join(map(str, s.paths)).encode())
        h.update(np.asarray(s.labels, dtype=np.int64).tobytes())
        h.update(str(np.asarray(s.images).shape).encode())
    return h.hexdigest()[:16]


def run_variant(run_dir, name: str, train_set, valid_set, test_set, *, epochs: int, batch_size: int, lr: float,
                seed: int = 0, weights=None, source_weights=None, source_input_size: int | None = None,
                bn_momentum: float | None = None, recalibrate_bn: bool = False) -> dict:
    """Train and test one model variant, resumable, and describe it.

    ``weights``: as :func:`~.keras_models.build` (None: full training; "imagenet" or a path: transfer, head
    only). ``source_weights`` (+ ``source_input_size``): in-domain transfer from a model file trained on
    another dataset (:func:`~.keras_models.with_new_head`). Sets are PatchSets. Returns the result dict
    plus ``reused`` (True when an earlier run's result was taken) and ``weights_file``.
    Raises ``InputTooSmall``, :class:`WeightsUnavailable`, :class:`WeightsError` before training.

    ``run_dir`` holds ``result.json`` (a ``histolean.util.cache`` record keyed by the settings, the data and
    the zoo's model and training code) and ``best.weights.h5``; the weights are written first, so a result
    on disk always has its weights.
    """
    input_size = int(train_set.images.shape[1])
    key = model_entry(name).name
    arch.check_input_size(key, input_size)
    if weights is not None:
        resolve_weights(key, weights)  # fail (or skip) before any training
    settings = {"model": key, "input_size": input_size, "epochs": int(epochs),
                "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed), "bn_momentum": bn_momentum,
                "recalibrate_bn": bool(recalibrate_bn),
                "weights": None if weights is None else str(weights),
                "source_weights": None if source_weights is None else str(source_weights),
                "data": data_fingerprint(train_set, valid_set, test_set)}
    if source_weights is not None:  # a retrained source must invalidate the transfer
        settings["source_mtime"] = Path(source_weights).stat().st_mtime_ns
    cache_key = cache.fingerprint(settings, code=[keras_models, training])
    run_dir = Path(run_dir)
    result_path, weights_path = run_dir / RESULT_FILE, run_dir / WEIGHTS_FILE
    stored = cache.load(result_path, cache_key)
    if stored is not None and weights_path.is_file():
        return {**stored["result"], "reused": True, "weights_file": str(weights_path)}
    # the weights about to be written replace the old ones: the old result must not outlive them
    cache.forget(result_path)

    if source_weights is not None:
        source = build(key, int(source_input_size or input_size), seed=seed)
        load_weights(source, source_weights)
        model = with_new_head(source, key, input_size, seed=seed, bn_momentum=bn_momentum)
    else:
        model = build(key, input_size, weights=weights, seed=seed, bn_momentum=bn_momentum)
    result = training.fit_and_test(model, (train_set.images, train_set.labels), (valid_set.images, valid_set.labels),
                                   (test_set.images, test_set.labels), epochs=epochs, batch_size=batch_size, lr=lr,
                                   seed=seed, recalibrate_bn=recalibrate_bn)
    result["architecture"] = describe(model)
    save_weights(model, weights_path)
    cache.save(result_path, cache_key, {"settings": settings, "result": result})
    return {**result, "reused": False, "weights_file": str(weights_path)}


class ZooRunner:
    """The notebook's protocol, stated once: trains variants with :func:`run_variant` into
    ``models_dir/<dataset>/<method>/<model>`` and records one row per variant in ``rec``.

    ``sets``: ``{slot: {"train" | "valid" | "test": PatchSet}}``, the slots ``pcam`` and ``idc``; ``names``:
    the dataset each slot holds when it is not the slot's own (a user's ``folder:PATH``): rows record it as
    ``dataset`` and the slot as ``slot``. ``kinds`` and ``scales`` (per slot) are what every row of that slot
    carries. ``results``: ``(slot, method, model) -> result``.
    """

    def __init__(self, rec, sets: dict, models_dir, *, epochs: int, batch_size: int, lr: float, seed: int = 0,
                 bn_momentum: float | None = None, recalibrate_bn: bool = False, threads: dict | None = None,
                 model_lr: dict | None = None, names: dict | None = None):
        self.rec, self.sets, self.models_dir = rec, sets, Path(models_dir)
        self.names = {ds: (names or {}).get(ds, ds) for ds in sets}
        # per-model Adam rates where the protocol's collapses a model in a short run (our choice, in each row)
        self.model_lr = {model_entry(k).name: float(v) for k, v in (model_lr or {}).items()}
        self.epochs, self.batch_size, self.lr, self.seed = int(epochs), int(batch_size), float(lr), int(seed)
        self.bn_momentum, self.recalibrate_bn, self.threads = bn_momentum, bool(recalibrate_bn), threads
        self.kinds = {ds: data_kind_of(splits) for ds, splits in sets.items()}
        self.scales = {ds: {"base_input": int(splits["train"].images.shape[1]), "epochs": self.epochs,
                            "paper_epochs": 15, "runs": 1,
                            **{f"n_{split}": len(s.labels) for split, s in splits.items()}}
                       for ds, splits in sets.items()}
        self.results: dict[tuple[str, str, str], dict] = {}

    def _common(self, ds: str, name: str, method: str, setting: dict) -> dict:
        entry = model_entry(name)
        setting = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr, **setting}
        protocol = {k: {"value": setting.get(k, v), "source": src} for k, (v, src) in PROTOCOL.items()
                    if k != "transfer" or method.startswith("transfer")}
        if method == "tuned":
            for k in ("lr", "batch_size"):
                protocol[k]["source"] = "paper text: Hyperband (KerasTuner) on PCam, our budget (see tuner)"
        elif entry.name in self.model_lr:
            protocol["lr"]["source"] = (f"our choice for {entry.name} (model_lr): at the protocol's {self.lr:g} it "
                                        "collapsed to one constant output within a short run")
        return {"dataset": self.names[ds], "slot": ds, "data_kind": self.kinds[ds], "model": entry.name,
                "method": method, "paper_name": entry.paper_name, "scale": self.scales[ds],
                "setting": {**setting, "protocol": protocol}}

    def unit(self, ds: str) -> str:
        """What the bootstrap of slot ``ds`` resamples: the slot's own unit, a user folder's groups."""
        return USER_UNIT if self.kinds[ds] == "user" else RESAMPLING_UNIT[ds]

    def learning_check(self, ds: str, valid_probs) -> dict:
        """Did the model learn? Its validation AUC (the selected epoch) with a bootstrap interval over
        patients (IDC) or patches (PCam); ``learned`` when the interval lies above 0.5 (chance)."""
        valid = self.sets[ds]["valid"]
        groups = valid.groups if self.unit(ds) != "patch" else None
        ci = metrics.auc_with_ci(valid.labels, valid_probs, seed=self.seed, groups=groups)
        return {"valid_auc": ci["auc"], "valid_auc_ci": [ci["auc_ci_lo"], ci["auc_ci_hi"]],
                "learned": bool(ci["auc_ci_lo"] > 0.5)}

    def test_set(self, ds: str) -> dict:
        """What a paired comparison needs of the test patches besides the probabilities (same for every row)."""
        test = self.sets[ds]["test"]
        unit = self.unit(ds)
        return {"test_labels": [int(v) for v in test.labels],
                "test_groups": [str(g) for g in test.groups] if unit != "patch" else None,
                "resampling_unit": unit}

    def skip(self, ds: str, name: str, method: str, reason, **setting) -> dict:
        """Record a variant that could not run (too small an input, weights not to be had), with the reason."""
        common = self._common(ds, name, method, setting)
        print(f"{ds:5s} {method:14s} {common['model']:18s} skipped: {reason}")
        return self.rec.add(**common, metrics={}, status="skipped", skip_reason=str(reason),
                            input_size=self.scales[ds]["base_input"])

    def record(self, ds: str, name: str, method: str, result: dict, **setting) -> dict:
        """Record a trained variant: test metrics, cost, depth, epochs and timing, whether it learned (a model
        that did not is recorded with status ``did_not_learn`` and kept out of every comparison), and its
        per-patch test probabilities for the paired comparisons."""
        common = self._common(ds, name, method, setting)
        self.results[(ds, method, common["model"])] = result
        a, m = result["architecture"], result["metrics"]
        paper_pcam = (ds, self.kinds[ds]) == ("pcam", "real")   # our epoch time scaled to the paper's PCam epoch
        extra = {"full_epoch_s_extrapolated": PCAM_TRAIN_FULL / result["train_patches_per_s"]} if paper_pcam else {}
        check = self.learning_check(ds, result["valid_probs"])
        status = "ok" if check["learned"] else DID_NOT_LEARN
        lo, hi = check["valid_auc_ci"]
        print(f"{ds:5s} {method:14s} {common['model']:18s} test AUC {m['auc']:.3f}, acc {m['accuracy']:.3f}, "
              f"{result['time_per_epoch_s']:.1f} s/epoch{' (reused)' if result['reused'] else ''}; validation AUC "
              f"{check['valid_auc']:.3f} [{lo:.3f}, {hi:.3f}]{'' if check['learned'] else ': DID NOT LEARN'}")
        return self.rec.add(**common, metrics=m, status=status, **check, test_probs=result["test_probs"],
                            **self.test_set(ds), gflops=a["gflops"], params=a["params"],
                            params_trainable=a["params_trainable"], layers=a["layers"],
                            weight_layers=a["weight_layers"], input_size=a["input_size"],
                            best_epoch=result["best_epoch"], history=result["history"],
                            time_per_epoch_s=result["time_per_epoch_s"], train_s_per_epoch=result["train_s_per_epoch"],
                            train_patches_per_s=result["train_patches_per_s"], reused=result["reused"],
                            threads=self.threads, **extra)

    def train(self, ds: str, name: str, method: str, note: dict | None = None, **kw) -> dict:
        """Train ``name`` on ``ds`` (``kw``: ``batch_size``/``lr`` overriding the protocol's, and
        :func:`run_variant`'s ``weights``, ``source_weights``, ``source_input_size``) and record its row;
        a variant that cannot run is recorded as skipped. ``note``: extra settings for the row."""
        bs = kw.pop("batch_size", self.batch_size)
        rate = kw.pop("lr", self.model_lr.get(model_entry(name).name, self.lr))
        setting = {"batch_size": bs, "lr": rate, "bn_momentum": self.bn_momentum,
                   "recalibrate_bn": self.recalibrate_bn, **(note or {})}
        if "weights" in kw:
            setting["weights"] = str(kw["weights"])
        try:
            s = self.sets[ds]
            result = run_variant(self.models_dir / ds / method / model_entry(name).name, name, s["train"], s["valid"],
                                 s["test"], epochs=self.epochs, batch_size=bs, lr=rate, seed=self.seed,
                                 bn_momentum=self.bn_momentum, recalibrate_bn=self.recalibrate_bn, **kw)
        except NOT_RUN as reason:
            return self.skip(ds, name, method, reason, **setting)
        return self.record(ds, name, method, result, **setting)

    def record_architecture(self, name: str, input_size: int = 96, paper_table1: list[dict] | None = None) -> dict:
        """Record one model's depth, parameters and GFLOPs (built, not trained) beside the paper's Table 1."""
        entry = model_entry(name)
        paper = {r["model"]: r for r in (paper_table1 or published.table("zoo", "table1_models"))}[entry.name]
        a = describe(build(entry.name, input_size, seed=self.seed))
        return self.rec.add(dataset="none", data_kind="none", model=entry.name, method="architecture",
                            paper_name=entry.paper_name, setting={"input_size": input_size}, metrics={},
                            gflops=a["gflops"], params=a["params"], input_size=input_size, layers=a["layers"],
                            weight_layers=a["weight_layers"],
                            params_imagenet_classifier=a.get("params_imagenet_classifier"),
                            paper_depth=int(paper["depth"]), paper_params_m=float(paper["params_m"]))
