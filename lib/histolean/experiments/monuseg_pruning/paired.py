"""Paired differences over test images between two scored rows (a pruned model and its dense control, or
the two schemes at one CR), with a percentile bootstrap interval over the images
(``core.metrics.mean_with_ci``), and the non-inferiority reading of the paper's "< 2%" drop.

A scored row carries its per-image scores (``per_image``: image names and one list per measure), so the
claims are decided from the rows alone.
"""

from __future__ import annotations

import numpy as np

from histolean.core import metrics
from histolean.study.claims import directional

MEASURES = ("dice", "aji", "pq")
DROP = 0.02            # the paper's "2%"
N_BOOT = 1000


def per_image(scores: list[dict], keys=("dice", "mse", "aji", "pq")) -> dict:
    """What a row keeps of its per-image scores: the image names and each measure, in one order."""
    return {"image": [r["image"] for r in scores]} | {k: [float(r[k]) for r in scores] for k in keys}


def values(row: dict, key: str) -> dict[str, float]:
    """image -> score of ``key`` in a scored row."""
    images = row.get("per_image")
    if not images:
        raise ValueError(f"row {row.get('setting')} on {row.get('dataset')} has no per-image scores")
    return dict(zip(images["image"], images[key]))


def differences(row: dict, ref: dict, key: str) -> np.ndarray:
    """Per image ``row`` minus ``ref`` (same images, in ``ref``'s order); other image sets are an error."""
    a, b = values(row, key), values(ref, key)
    if set(a) != set(b):
        raise ValueError(f"paired difference: {row.get('setting')} and {ref.get('setting')} on {row.get('dataset')} "
                         f"were scored on different images ({len(set(a) ^ set(b))} not in both)")
    return np.array([a[name] - b[name] for name in b])


def difference(row: dict, ref: dict, key: str, seed: int = 0) -> dict:
    """Mean over images of ``row`` minus ``ref`` with its 95% bootstrap interval (``mean``, ``ci_lo``,
    ``ci_hi``, ``n``), and ``ref_mean``, the reference's mean, for a relative reading."""
    d = differences(row, ref, key)
    ref_mean = float(np.mean(list(values(ref, key).values())))
    return metrics.mean_with_ci(d, n_boot=N_BOOT, seed=seed) | {"ref_mean": ref_mean}


def margins(diff: dict, drop: float = DROP) -> dict:
    """The paper's "< 2%" drop in both readings: ``relative`` (2% of the dense control's mean) and
    ``absolute`` (0.02 of the score)."""
    return {"relative": drop * abs(diff["ref_mean"]), "absolute": drop}


def not_worse(diff: dict, margin: float) -> str:
    """Non-inferiority: holds if the interval of (pruned - control) lies above -margin, fails if it lies
    below it, else not resolved (``claims.directional`` on the interval shifted by the margin)."""
    return directional(diff["ci_lo"] + margin, diff["ci_hi"] + margin, "higher")


def shift_difference(tnbc: np.ndarray, monuseg: np.ndarray, seed: int = 0, level: float = 0.95) -> dict:
    """mean(tnbc) - mean(monuseg) of two independent image sets, each resampled on its own
    (``core.metrics.bootstrap_indices``, the same resamplers as ``mean_with_ci``)."""
    a, b = np.asarray(tnbc, float), np.asarray(monuseg, float)
    boots = [a[i].mean() - b[j].mean() for i, j in zip(metrics.bootstrap_indices(a.size, N_BOOT, seed),
                                                        metrics.bootstrap_indices(b.size, N_BOOT, seed + 1))]
    lo, hi = np.percentile(boots, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"mean": float(a.mean() - b.mean()), "ci_lo": float(lo), "ci_hi": float(hi), "n": (a.size, b.size)}
