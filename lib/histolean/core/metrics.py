"""Metrics of the study: classification (AUC, accuracy, loss), their bootstrap statistics, and segmentation.

Classification metrics wrap scikit-learn so the numbers are the ones the
field computes; the bootstrap gives a percentile confidence interval
(:func:`auc_with_ci` / :func:`paired_auc_difference`: over test patches or, with ``groups``,
over their source images or patients, for the mean AUC of several training runs and the paired
difference of two networks; :func:`mean_with_ci` for per-image scores).
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


def bootstrap_indices(n: int, n_boot: int, seed: int = 0, groups=None):
    """Index arrays of ``n_boot`` bootstrap resamples of ``n`` items, yielded one by one.

    Without ``groups`` every item is drawn independently. With ``groups`` (one id per item:
    the source image, slide or patient) whole groups are drawn with replacement and each
    brings all its items (a cluster bootstrap), so items that are alike because they share a
    source do not count as independent evidence. The same ``seed`` gives the same resamples,
    which pairs two networks scored on the same items.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has {groups.size} ids for {n} items")
    codes = np.unique(groups, return_inverse=True)[1].ravel()
    members = [np.flatnonzero(codes == g) for g in range(int(codes.max()) + 1)] if n else []
    for _ in range(n_boot):
        yield np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def bootstrap_ci(y_true, prob, metric=auc, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0, groups=None) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of ``metric(y_true, prob)``.

    ``groups``: resample whole groups (source images, patients), see :func:`bootstrap_indices`.
    Resamples that hold a single class are skipped for AUC (undefined there).
    """
    y_true, prob = _check_binary(y_true, prob)
    values = []
    for idx in bootstrap_indices(y_true.size, n_boot, seed, groups):
        v = metric(y_true[idx], prob[idx])
        if np.isfinite(v):
            values.append(v)
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.percentile(values, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def mean_with_ci(values, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Mean of per-unit values (one per test image: Dice, AJI, a paired difference) with a percentile
    bootstrap CI over the units; NaN values (undefined for that unit) are left out, and counted."""
    values = np.asarray(values, dtype=np.float64).ravel()
    kept = values[np.isfinite(values)]
    if kept.size == 0:
        return {"mean": float("nan"), "ci_lo": float("nan"), "ci_hi": float("nan"), "n": 0,
                "n_undefined": int(values.size)}
    means = [kept[idx].mean() for idx in bootstrap_indices(kept.size, n_boot, seed)]
    lo, hi = np.percentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"mean": float(kept.mean()), "ci_lo": float(lo), "ci_hi": float(hi), "n": int(kept.size),
            "n_undefined": int(values.size - kept.size)}


def units_to_resolve(lo: float, hi: float, n_units: int, margin: float | None = None) -> int | None:
    """A rough number of test units (images, patients) that would resolve an unresolved interval.

    Assumes the interval's half-width shrinks as 1/sqrt(units) around the same point. For a
    directional question (``margin`` None) the half-width must fall below |point|; for "the same
    within +-margin" below ``margin - |point|``. None when no number of units would do it
    (the point itself sits at 0, or outside the margin).
    """
    point, half = (lo + hi) / 2, (hi - lo) / 2
    target = abs(point) if margin is None else margin - abs(point)
    if not np.isfinite(half) or half <= 0 or target <= 0:
        return None
    return int(np.ceil(n_units * (half / target) ** 2))


# --------------------------------------------------------------------------- AUC over runs, paired bootstrap
# Several training runs scored on one test set: the mean-over-runs AUC with a percentile bootstrap CI over
# test patches (or over their source images, ``groups``), and the paired difference of two networks on the
# same resamples.

def _rank_auc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of ``scores`` (B, N) against labels ``y`` (B, N), ties averaged; NaN if one class."""
    from scipy.stats import rankdata

    ranks = rankdata(scores, axis=1)
    n1 = y.sum(1)
    n0 = y.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * y).sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.where((n1 > 0) & (n0 > 0), auc, np.nan)


def _bootstrap_mean_auc(y, probs, n_boot: int, seed: int, chunk: int = 250, groups=None):
    """Mean-over-runs AUC on ``n_boot`` resamples (same resamples for every call with one seed)."""
    y = np.asarray(y, dtype=np.int64)
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    if groups is not None:  # resamples differ in size: one at a time
        return np.array([np.mean(_rank_auc(np.broadcast_to(y[idx], (len(probs), idx.size)), probs[:, idx]))
                         for idx in bootstrap_indices(y.size, n_boot, seed, groups)])
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, y.size, (min(chunk, n_boot - start), y.size))
        values.append(np.mean([_rank_auc(y[idx], p[idx]) for p in probs], axis=0))
    return np.concatenate(values)


def _resampling(y, groups) -> dict:
    n_groups = None if groups is None else int(np.unique(np.asarray(groups)).size)
    return {"ci_unit": "item" if groups is None else "group", "n_items": int(np.asarray(y).size),
            "n_groups": n_groups}


def auc_with_ci(y, probs, n_boot: int = 1000, level: float = 0.95, seed: int = 0, groups=None) -> dict:
    """Mean AUC over runs (rows of ``probs``), sd over runs, and a percentile bootstrap CI.

    The CI resamples test items, or with ``groups`` their source images / patients
    (:func:`bootstrap_indices`); ``ci_unit``, ``n_items`` and ``n_groups`` say which.
    """
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    y = np.asarray(y, dtype=np.int64)
    per_run = _rank_auc(np.broadcast_to(y, probs.shape), probs)
    boot = _bootstrap_mean_auc(y, probs, n_boot, seed, groups=groups)
    lo, hi = np.nanpercentile(boot, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return {"auc": float(per_run.mean()), "auc_sd": float(per_run.std(ddof=1)) if len(per_run) > 1 else None,
            "auc_runs": [float(a) for a in per_run], "auc_ci_lo": float(lo), "auc_ci_hi": float(hi),
            **_resampling(y, groups)}


def paired_auc_difference(y, probs, reference_probs, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                          margin: float = 0.02, groups=None) -> dict:
    """AUC(variant) - AUC(reference) on the same test items, with a paired bootstrap CI.

    Both networks are scored on the same resamples (same seed; with ``groups``, the same drawn
    source images), so item-to-item difficulty cancels. ``same_auc``: "supported" when the whole
    CI lies within +-``margin``; "lower" / "higher" when it excludes 0 on that side; otherwise
    "not resolved" (the test set cannot tell).
    """
    y = np.asarray(y, dtype=np.int64)
    a = _bootstrap_mean_auc(y, probs, n_boot, seed, groups=groups)
    b = _bootstrap_mean_auc(y, reference_probs, n_boot, seed, groups=groups)
    diff = a - b
    lo, hi = np.nanpercentile(diff, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    point = auc_with_ci(y, probs, n_boot=1)["auc"] - auc_with_ci(y, reference_probs, n_boot=1)["auc"]
    if -margin <= lo and hi <= margin:
        verdict = "supported"
    elif hi < 0:
        verdict = "lower"
    elif lo > 0:
        verdict = "higher"
    else:
        verdict = "not resolved"
    return {"auc_diff": float(point), "auc_diff_ci_lo": float(lo), "auc_diff_ci_hi": float(hi),
            "same_auc": verdict, "equivalence_margin": margin, **_resampling(y, groups)}


# --------------------------------------------------------------------------- segmentation
# Instance label maps: 0 is background, every other integer one nucleus. Definitions follow
# Kumar et al. 2017 (AJI) and Kirillov et al. 2019 / Graham et al. 2019 (PQ, as in hover_net).

def dice(gt, pred) -> float:
    """Binary Dice of the foregrounds (any non-zero label); 1.0 when both are empty."""
    gt, pred = np.asarray(gt) > 0, np.asarray(pred) > 0
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    total = gt.sum() + pred.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(gt, pred).sum() / total)


def mse(target, pred) -> float:
    """Mean squared error, e.g. of a predicted distance map."""
    target, pred = np.asarray(target, dtype=float), np.asarray(pred, dtype=float)
    if target.shape != pred.shape:
        raise ValueError(f"shapes differ: target {target.shape}, prediction {pred.shape}")
    return float(np.mean((target - pred) ** 2))


def _overlaps(gt, pred) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Intersections and unions of every (gt, pred) instance pair, via one contingency table.

    Returns (gt ids, pred ids, intersection matrix, gt areas, pred areas); ids exclude 0.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"shapes differ: ground truth {gt.shape}, prediction {pred.shape}")
    gt_ids, gt_inv = np.unique(gt.ravel(), return_inverse=True)
    pr_ids, pr_inv = np.unique(pred.ravel(), return_inverse=True)
    table = np.bincount(gt_inv.astype(np.int64) * pr_ids.size + pr_inv,
                        minlength=gt_ids.size * pr_ids.size).reshape(gt_ids.size, pr_ids.size)
    gt_area, pr_area = table.sum(1), table.sum(0)
    gt_keep, pr_keep = gt_ids != 0, pr_ids != 0
    return (gt_ids[gt_keep], pr_ids[pr_keep], table[np.ix_(gt_keep, pr_keep)],
            gt_area[gt_keep], pr_area[pr_keep])


def aggregated_jaccard_index(gt, pred) -> float:
    """AJI: each ground-truth nucleus takes the prediction of highest IoU with it; the
    intersections over the unions are summed, and every prediction never taken adds its area
    to the union. 1.0 when both maps are empty."""
    _, _, inter, gt_area, pr_area = _overlaps(gt, pred)
    if inter.shape[0] == 0:
        return 1.0 if inter.shape[1] == 0 else 0.0
    union = gt_area[:, None] + pr_area[None, :] - inter
    used = np.zeros(inter.shape[1], dtype=bool)
    total_inter = total_union = 0
    for i in range(inter.shape[0]):
        if inter.shape[1] == 0 or inter[i].max() == 0:
            total_union += gt_area[i]           # a missed nucleus counts fully in the union
            continue
        j = int(np.argmax(inter[i] / union[i]))
        total_inter += inter[i, j]
        total_union += union[i, j]
        used[j] = True
    total_union += pr_area[~used].sum()
    return float(total_inter / total_union)


def panoptic_quality(gt, pred, iou_threshold: float = 0.5) -> dict:
    """PQ = DQ x SQ with pairs matched at IoU > 0.5 (unique by construction).

    DQ = TP / (TP + FP/2 + FN/2) (an F1 of detection); SQ = mean IoU of the matched pairs.
    Returns dict(pq, dq, sq, tp, fp, fn).
    """
    if iou_threshold < 0.5:
        raise ValueError(f"iou_threshold must be >= 0.5 (matches are unique only then), got {iou_threshold}")
    _, _, inter, gt_area, pr_area = _overlaps(gt, pred)
    iou = inter / np.maximum(gt_area[:, None] + pr_area[None, :] - inter, 1)
    matched = iou > iou_threshold
    tp = int(matched.sum())
    fn, fp = inter.shape[0] - tp, inter.shape[1] - tp
    if tp + fp + fn == 0:
        return {"pq": 1.0, "dq": 1.0, "sq": 1.0, "tp": 0, "fp": 0, "fn": 0}
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    sq = float(iou[matched].sum() / tp) if tp else 0.0
    return {"pq": dq * sq, "dq": dq, "sq": sq, "tp": tp, "fp": fp, "fn": fn}
