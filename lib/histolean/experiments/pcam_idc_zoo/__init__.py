"""The experiment behind notebook 07: Bonnet (2024)'s twelve CNNs on PCam and IDC in Keras, full training
against transfer learning, and its claims against our numbers.

One concern per module:

* ``backend``: the one import of Keras (TensorFlow backend, as the paper);
* ``keras_models``: the twelve models (B2/B6 and ``keras.applications`` trunks with the paper's head), their
  weights (ImageNet cache, files), trunk and head, in-domain transfer, depth/parameters/GFLOPs;
* ``training``: the paper's protocol (``fit_and_test``), BatchNorm recalibration (the Keras copy), threads;
* ``tuning``: KerasTuner Hyperband over the learning rate and the batch size;
* ``runs``: one trained variant, resumable through ``histolean.util.cache`` (``run_variant``), and the
  notebook's rows (``ZooRunner``);
* ``statistics`` and ``claims``: the Welch t-test and the rest of the paper's statistics; ``paper_claims``.

The names below are re-exported lazily: ``statistics`` and ``claims`` (no Keras) import without TensorFlow,
``import histolean`` never imports it, and ``pcam_idc_zoo.build`` imports it on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "keras_models": ("APPLICATIONS", "HEAD_PREFIX", "HEAD_UNITS", "InputTooSmall", "WeightsError",
                     "WeightsUnavailable", "build", "describe", "imagenet_top_params", "imagenet_weights_path",
                     "keras_cache_dir", "load_weights", "model_entry", "resolve_weights", "save_weights", "trunk",
                     "trunk_layers", "with_new_head"),
    "training": ("configure_threads", "fit_and_test", "predict", "recalibrate_batchnorm", "to_inputs"),
    "tuning": ("tune",),
    "runs": ("NOT_RUN", "PCAM_TRAIN_FULL", "ZooRunner", "data_fingerprint", "run_variant"),
    "statistics": ("transfer_vs_full", "welch_t_test"),
    "claims": ("paper_claims",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)  # noqa: PLE0605 (a list built from the export table above)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value   # found once, then a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
