"""Hyperparameter tuning as the paper: KerasTuner Hyperband over the Adam learning rate and the batch size."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from histolean.core import arch
from histolean.experiments.pcam_idc_zoo.backend import keras
from histolean.experiments.pcam_idc_zoo.keras_models import build, model_entry
from histolean.experiments.pcam_idc_zoo.runs import data_fingerprint
from histolean.experiments.pcam_idc_zoo.training import RecalibrateBeforeValidation, first_batch, to_inputs
from histolean.util import cache, dryrun


def tune(name: str, train_set, valid_set, *, directory, max_epochs: int = 2, factor: int = 3,
         hyperband_iterations: int = 1, lr_range: tuple[float, float] = (1e-5, 1e-2),
         batch_sizes=(32, 64, 128, 256), seed: int = 0, bn_momentum: float | None = None,
         recalibrate_bn: bool = False) -> dict:
    """Hyperband over the Adam learning rate (log-uniform in ``lr_range``) and the batch size, on two
    PatchSets (objective: validation accuracy, as the paper's tuner).

    The tuner's state lives in ``directory/<model>-<hash of settings and data>``: a re-run with the
    same settings continues it (finished trials are not repeated); other settings start a new one.
    Returns the best ``learning_rate`` and ``batch_size``, the trial count and the search time.
    """
    import keras_tuner as kt  # imported on first use: only tuning needs it

    input_size = int(train_set.images.shape[1])
    key = model_entry(name).name
    arch.check_input_size(key, input_size)
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 1 or not 0 < lr_range[0] < lr_range[1]:
        raise ValueError(f"tune: batch_sizes must be positive integers and lr_range (low, high) with 0 < low < high; "
                         f"got {batch_sizes}, {lr_range}")
    # KerasTuner resumes a project by itself; the project's name carries what must not differ between runs
    settings = [max_epochs, factor, hyperband_iterations, list(lr_range), batch_sizes, seed, bn_momentum,
                recalibrate_bn, data_fingerprint(train_set, valid_set)]
    project = f"{key}-{cache.fingerprint(settings)[:10]}"
    x_tr, y_tr = to_inputs(train_set.images), np.asarray(train_set.labels, dtype=np.float32)
    x_va, y_va = to_inputs(valid_set.images), np.asarray(valid_set.labels, dtype=np.float32)
    if dryrun.active():   # one trial of one epoch on one batch (the profile's model and input size)
        max_epochs, hyperband_iterations = 1, 1
        x_tr, y_tr = first_batch(x_tr, y_tr, min(batch_sizes))
        x_va, y_va = first_batch(x_va, y_va, min(batch_sizes))

    class ZooHyperModel(kt.HyperModel):
        def build(self, hp):
            model = build(name, input_size, seed=seed, bn_momentum=bn_momentum)
            lr = hp.Float("learning_rate", lr_range[0], lr_range[1], sampling="log")
            model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy", metrics=["accuracy"],
                          jit_compile=False)
            return model

        def fit(self, hp, model, *args, **kwargs):
            if recalibrate_bn:
                kwargs["callbacks"] = [*kwargs.get("callbacks", []), RecalibrateBeforeValidation(train_set.images)]
            return model.fit(*args, batch_size=hp.Choice("batch_size", batch_sizes), **kwargs)

    class ZooHyperband(kt.Hyperband):
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            # keras-tuner 1.4 imports tensorboard on every trial under TensorFlow, even without a
            # TensorBoard callback; tensorboard is not a dependency here, and no callback needs it
            if any(type(c).__name__ == "TensorBoard" for c in callbacks):
                super()._configure_tensorboard_dir(callbacks, trial, execution)

    tuner = ZooHyperband(ZooHyperModel(), objective="val_accuracy", max_epochs=int(max_epochs), factor=int(factor),
                         hyperband_iterations=int(hyperband_iterations), seed=int(seed), directory=str(directory),
                         project_name=project, overwrite=False)
    t0 = time.perf_counter()
    tuner.search(x_tr, y_tr, validation_data=(x_va, y_va), verbose=0)
    trials = [t for t in tuner.oracle.get_best_trials(num_trials=10_000) if t.score is not None]
    if not trials:
        raise RuntimeError(f"tune({key}): no Hyperband trial finished (see the trial errors above); the tuner's "
                           f"state is in {Path(directory) / project}")
    best = trials[0].hyperparameters
    return {"learning_rate": float(best.get("learning_rate")), "batch_size": int(best.get("batch_size")),
            "trials": len(trials), "search_s": time.perf_counter() - t0, "project": project,
            "best_val_accuracy": float(trials[0].score)}
