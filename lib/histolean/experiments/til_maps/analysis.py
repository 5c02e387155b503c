"""What the notebook computes from the maps: agreement of two maps, one process against Dask, and the
time to map one slide and many."""

from __future__ import annotations

import os

import numpy as np


def map_agreement(first, second) -> dict:
    """How far two patch tables of one slide agree (``read_patches`` frames; joined on level-0 x, y):
    ``n_patches`` in both, ``same_label_fraction``, ``cohen_kappa`` (NaN when both maps hold one class
    only: agreement beyond chance is undefined), the TIL-positive fraction of each, and the Pearson
    correlation of the probabilities."""
    from sklearn.metrics import cohen_kappa_score

    both = first.merge(second, on=["x", "y"], suffixes=("_first", "_second"))
    if both.empty:
        raise ValueError("the two maps share no patch (other grids or slides?)")
    a, b = both["til_positive_first"].to_numpy(), both["til_positive_second"].to_numpy()
    kappa = float(cohen_kappa_score(a, b)) if len(set(a) | set(b)) > 1 else float("nan")
    return {"n_patches": len(both), "same_label_fraction": float((a == b).mean()), "cohen_kappa": kappa,
            "positive_fraction_first": float(a.mean()), "positive_fraction_second": float(b.mean()),
            "probability_correlation": float(np.corrcoef(both["probability_first"],
                                                         both["probability_second"])[0, 1])}


def same_predictions(first, second) -> dict:
    """Whether two patch tables hold the same patches in the same order (``same_patches``), and the
    largest probability difference between them (``max_abs_probability_difference``; NaN if not)."""
    same = len(first) == len(second) and bool((first[["x", "y"]].to_numpy() == second[["x", "y"]].to_numpy()).all())
    diff = (float(np.abs(first["probability"].to_numpy() - second["probability"].to_numpy()).max())
            if same and len(first) else float("nan"))
    return {"same_patches": same, "max_abs_probability_difference": diff, "n_patches": len(first)}


def patches_in_tissue(tissue_mm2: float, patch_um: float = 50.0) -> float:
    """Patches of ``patch_um`` square in ``tissue_mm2`` of tissue (100 mm2 of 50 um patches: 40,000)."""
    return tissue_mm2 * 1e6 / patch_um ** 2


def slides_at_once(threads_per_slide: int | None, cores: int | None = None) -> int:
    """Slides mapped at once on a machine of ``cores`` (default: this one's) with ``threads_per_slide``
    threads each (None: all cores for one slide)."""
    cores = cores or os.cpu_count() or 1
    return max(1, cores // (threads_per_slide or cores))


def extrapolate(n_patches: float, end_to_end_per_s: float, overhead_s: float, slides: int,
                parallel: int) -> dict:
    """Time to map a slide of ``n_patches`` (predicting at ``end_to_end_per_s``, plus ``overhead_s`` of
    per-slide work that does not depend on the model: opening, tissue mask, writing) and ``slides`` of
    them, ``parallel`` at a time."""
    if not end_to_end_per_s > 0:
        raise ValueError(f"end_to_end_per_s must be positive, got {end_to_end_per_s!r}")
    one = n_patches / end_to_end_per_s + overhead_s
    return {"seconds_per_slide": one, "hours_for_slides": one * slides / parallel / 3600}
