"""What the CNNs are measured against besides each other: colour alone, and the NAR coefficient search.

* :func:`colour_histogram_baselines`: gradient-boosted trees and logistic regression on RGB histograms.
* :func:`nar_grid_search`: the paper's (alpha, beta, gamma) search, each candidate scored by a short
  training run, cached per candidate with :mod:`histolean.util.cache`.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from histolean.core import checkpoints, flops, models, train
from histolean.core.arch import Spec
from histolean.methods import nar
from histolean.util import cache

from .runner import TRAINING_CODE, TilRunner, TrainConfig
from .variants import BENCHMARK


def colour_features(images: np.ndarray, bins: int = 16) -> np.ndarray:
    """Per-channel RGB histograms (normalised) plus channel means and sds: colour only, no shape."""
    images = np.asarray(images)
    flat = images.reshape(len(images), -1, 3)
    hists = [np.stack([np.histogram(img[:, c], bins=bins, range=(0, 256))[0] for c in range(3)]).ravel()
             for img in flat]
    hists = np.asarray(hists, dtype=np.float64) / flat.shape[1]
    return np.hstack([hists, flat.mean(1) / 255.0, flat.std(1) / 255.0])


def colour_histogram_baselines(task, seed: int = 0) -> dict[str, dict]:
    """Gradient-boosted trees and logistic regression on colour histograms: how far colour alone gets."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = colour_features(task.train.images), colour_features(task.test.images)
    models_ = {"hist_gbt": HistGradientBoostingClassifier(max_iter=200, random_state=seed),
               "logistic_regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))}
    out = {}
    for name, model in models_.items():
        t0 = time.perf_counter()
        model.fit(x_train, task.train.labels)
        out[name] = {"test_probs": model.predict_proba(x_test)[:, 1], "train_time_s": time.perf_counter() - t0}
    return out


def nar_grid_search(task, base: Spec, grid: dict, train_cfg: TrainConfig, output_dir, *, seed: int = 0,
                    device=None, log=print) -> list[dict]:
    """The paper's coefficient search: each (alpha, beta, gamma) with alpha*beta^2*gamma^2 ~ target
    scored by the validation AUC of a short training run of ``nar.reduce(base, phi)``; cached per candidate."""
    folder = Path(output_dir) / "models" / BENCHMARK / "grid"
    phi = grid.get("phi", 1)
    epochs = grid.get("epochs", 1)
    runner = TilRunner(task, output_dir, TrainConfig(**{**asdict(train_cfg), "epochs": epochs, "runs": 1}),
                       seed=seed, device=device, log=log)
    details = {}

    def score(a, b, g):
        spec = nar.reduce(base, phi, alpha=a, beta=b, gamma=g)
        key = cache.fingerprint({"spec": checkpoints.spec_to_dict(spec), "task": task.fingerprint(),
                                 "epochs": epochs, "train": asdict(train_cfg), "seed": seed}, code=TRAINING_CODE)

        def train_candidate() -> dict:
            net = models.build(spec, seed=seed)
            t0 = time.perf_counter()
            fit = train.fit(net, runner.loader("train", spec.input_size, shuffle=True, seed=seed),
                            runner.loader("valid", spec.input_size), epochs=epochs, optimizer="adam",
                            lr=train_cfg.lr, weight_decay=train_cfg.weight_decay, device=runner.device,
                            progress=False, seed=seed)
            return {"val_auc": fit.best_value, "train_time_s": time.perf_counter() - t0,
                    "gflops": flops.gflops(spec), "input_size": spec.input_size, "blocks": list(spec.blocks)}

        stored = cache.cached(folder / f"a{a:.2f}_b{b:.2f}_g{g:.2f}.json", key, train_candidate)
        details[(a, b, g)] = stored
        return stored["val_auc"]

    ranking = nar.grid_search(score, alphas=grid.get("alphas"), betas=grid.get("betas"), gammas=grid.get("gammas"),
                              target=grid.get("target", 2.0), tol=grid.get("tol", 0.1))
    return [{"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma, "constraint": c.constraint, "val_auc": c.score,
             "rank": i + 1, "phi": phi, "epochs": epochs, **details.get((c.alpha, c.beta, c.gamma), {}),
             "paper_choice": (c.alpha, c.beta, c.gamma) == (nar.ALPHA, nar.BETA, nar.GAMMA)}
            for i, c in enumerate(ranking)]
