"""Metrics of the study: classification (AUC, accuracy, loss) and segmentation.

Classification metrics wrap scikit-learn so the numbers are the ones the
field computes; the bootstrap gives a percentile confidence interval.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score


def _check_binary(y_true, prob) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(int).ravel()
    prob = np.asarray(prob, dtype=float).ravel()
    if y_true.shape != prob.shape:
        raise ValueError(f"y_true has {y_true.size} labels but prob has {prob.size} scores")
    if y_true.size and not np.isin(y_true, (0, 1)).all():
        raise ValueError(f"labels must be 0/1, got values {np.unique(y_true)[:10]}")
    return y_true, prob


def auc(y_true, prob) -> float:
    """ROC AUC; NaN when only one class is present (undefined, not 0.5)."""
    y_true, prob = _check_binary(y_true, prob)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, prob))


def classification_metrics(y_true, prob, loss: float | None = None, threshold: float = 0.5) -> dict:
    """AUC, accuracy at ``threshold``, binary cross-entropy (or the given loss), n, positives."""
    y_true, prob = _check_binary(y_true, prob)
    out = {
        "auc": auc(y_true, prob),
        "accuracy": float(accuracy_score(y_true, prob >= threshold)) if y_true.size else float("nan"),
        "n": int(y_true.size),
        "positives": int(y_true.sum()),
    }
    if loss is None and y_true.size:
        loss = float(log_loss(y_true, np.clip(prob, 1e-7, 1 - 1e-7), labels=[0, 1]))
    out["loss"] = float("nan") if loss is None else float(loss)
    return out


def bootstrap_ci(y_true, prob, metric=auc, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(y_true, prob)``.

    Resamples that hold a single class are skipped for AUC (undefined there).
    """
    y_true, prob = _check_binary(y_true, prob)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, y_true.size, y_true.size)
        v = metric(y_true[idx], prob[idx])
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
