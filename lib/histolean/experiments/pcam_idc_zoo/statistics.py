"""The statistics the paper draws from its tables, applied the same way to its rows and to ours: the Welch
t-test of transfer against full training (its Fig. 4), AUC against depth, ranks and paired differences; and
ours: :func:`paired_auc`, two models' test AUCs on the same patches with a paired bootstrap interval.

No Keras here: the claims and the notebook's figures use these on plain numbers.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from histolean.core import metrics


def welch_t_test(a, b) -> dict:
    """Welch two-sample t-test (unequal variances) of ``a`` vs ``b``: t, Welch-Satterthwaite df, p."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return {"t": float("nan"), "df": float("nan"), "p": float("nan"), "n_a": len(a), "n_b": len(b)}
    res = stats.ttest_ind(a, b, equal_var=False)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)) if va + vb > 0 else float("nan")
    return {"t": float(res.statistic), "df": float(df), "p": float(res.pvalue), "n_a": len(a), "n_b": len(b)}


def transfer_vs_full(points: Iterable[dict], dataset: str, transfer_method: str = "transfer") -> dict | None:
    """:func:`welch_t_test` of the transfer AUCs against the full-training AUCs of ``dataset``, over points
    with ``dataset``, ``method`` and ``auc`` (the paper's table rows, or ours); None when a side is empty.
    ``transfer_method``: "transfer" (ImageNet, the paper's) or "transfer_pcam" (in-domain): never pooled."""
    points = [p for p in points if p["dataset"] == dataset and p.get("auc") is not None]
    transfer = [p["auc"] for p in points if p["method"] == transfer_method]
    full = [p["auc"] for p in points if p["method"] == "full"]
    if not transfer or not full:
        return None
    return welch_t_test(transfer, full)


def auc_by_model(points: Iterable[dict], dataset: str, method: str) -> dict[str, float]:
    """``model -> AUC`` of one dataset and method (points without an AUC left out)."""
    return {p["model"]: float(p["auc"]) for p in points
            if p["dataset"] == dataset and p["method"] == method and p.get("auc") is not None}


def paired_difference(first: dict[str, float], second: dict[str, float]) -> dict | None:
    """Per model in both: ``first - second``; the mean difference, how many models are higher in ``first``,
    and both means. None when no model is in both."""
    both = sorted(set(first) & set(second))
    if not both:
        return None
    diff = [first[m] - second[m] for m in both]
    return {"models": both, "n": len(both), "mean_diff": float(np.mean(diff)), "wins": int(sum(d > 0 for d in diff)),
            "mean_first": float(np.mean([first[m] for m in both])),
            "mean_second": float(np.mean([second[m] for m in both]))}


def rank_of(model: str, auc: dict[str, float]) -> int:
    """1 + the number of models with a strictly higher AUC (a tie at the top ranks first)."""
    return 1 + sum(v > auc[model] for v in auc.values())


def depth_trend(layers, params, auc) -> dict:
    """Spearman rank correlations of AUC with depth and with parameters, and the R^2 of a line on depth;
    NaN where undefined (a constant input: all AUCs, depths or sizes equal)."""
    from scipy import stats

    layers, params, auc = (np.asarray(v, dtype=float) for v in (layers, params, auc))
    nan = float("nan")

    def defined(x) -> bool:
        return len(x) >= 2 and np.ptp(x) > 0 and np.ptp(auc) > 0

    return {"n": len(auc),
            "rho_layers": float(stats.spearmanr(layers, auc).statistic) if defined(layers) else nan,
            "rho_params": float(stats.spearmanr(params, auc).statistic) if defined(params) else nan,
            "r2_layers": float(stats.linregress(layers, auc).rvalue ** 2) if defined(layers) else nan}


def paired_auc(first: dict, second: dict, *, margin: float = 0.02, n_boot: int = 1000, seed: int = 0) -> dict:
    """AUC(first) - AUC(second) of two result rows scored on the same test patches, with the paired bootstrap
    interval of ``core.metrics.paired_auc_difference``: whole patients are resampled when the rows carry
    ``test_groups`` (IDC), else patches (PCam). Rows need ``test_probs``, ``test_labels``, ``test_groups``."""
    for key in ("test_labels", "test_groups"):
        if first.get(key) != second.get(key):
            raise ValueError(f"paired_auc: {first['model']} ({first['method']}) and {second['model']} "
                             f"({second['method']}) were not scored on the same test patches ({key} differ)")
    y, groups = np.asarray(first["test_labels"]), first.get("test_groups")
    d = metrics.paired_auc_difference(y, first["test_probs"], second["test_probs"], n_boot=n_boot, seed=seed,
                                      margin=margin, groups=None if groups is None else np.asarray(groups))
    return {**d, "auc_first": metrics.auc(y, first["test_probs"]), "auc_second": metrics.auc(y, second["test_probs"])}
