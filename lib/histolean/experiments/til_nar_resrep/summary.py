"""The TIL experiment's result rows, and what the notebook reads off them.

Row vocabulary (as everywhere in the study): ``flop_reduction`` = GFLOPs(original) / GFLOPs(variant),
>= 1 for a cheaper variant; ``speedup`` = time(original) / time(variant), >= 1 when faster. The AUC
fields (``metrics``) come from :func:`histolean.core.metrics.auc_with_ci` and, against the variant's
original, :func:`histolean.core.metrics.paired_auc_difference`.
"""

from __future__ import annotations

import numpy as np

from histolean.core import flops, metrics
from histolean.methods import nar

from .runner import VariantResult
from .variants import PAPER_BASE_INPUT, Variant, base_spec

# the paired comparison's verdicts that do not say "significantly below the original"
NOT_WORSE = ("supported", "not resolved", "higher")


def paper_scale_gflops(v: Variant) -> float | None:
    """GFLOPs of the same variant at the paper's 240 px base (None for ResRep: its widths depend on training)."""
    base = base_spec(v.model, PAPER_BASE_INPUT)
    if v.method == "original":
        return flops.gflops(base)
    if v.method == "ir":
        return flops.gflops(nar.input_reduction(base, v.setting["k"]))
    if v.method == "nar":
        return flops.gflops(nar.reduce(base, v.setting["phi"]))
    return None


def summarise(results: dict[str, VariantResult], task, speed: dict[str, dict], scale: dict, *,
              n_boot: int = 1000, margin: float = 0.02, seed: int = 0) -> list[dict]:
    """One row (keyword arguments of ``Recorder.add``) per variant: AUC over runs with a bootstrap CI,
    the paired difference with its architecture's original, costs, measured speed, training time."""
    y = task.test.labels
    rows = []
    for vid, res in results.items():
        v = res.variant
        probs = res.test_probs
        m = metrics.auc_with_ci(y, probs, n_boot=n_boot, seed=seed)
        m.update({"accuracy": float(np.mean([(np.asarray(p) >= 0.5) == y for p in probs])),
                  "val_auc": float(np.mean([r["val_auc"] for r in res.runs])), "n_test": int(len(y)),
                  "n_test_positive": int(y.sum())})
        original = results[f"{v.model}__original"]
        if v.method != "original":
            m.update(metrics.paired_auc_difference(y, probs, original.test_probs, n_boot=n_boot, seed=seed,
                                                   margin=margin))
        else:
            m.update({"auc_diff": 0.0, "auc_diff_ci_lo": 0.0, "auc_diff_ci_hi": 0.0, "same_auc": "reference",
                      "equivalence_margin": margin})
        if v.spec_buildable:
            cost = {"gflops": flops.gflops(v.spec), "params": flops.count_params(v.spec), **flops.count_layers(v.spec)}
        else:
            cost = {k: res.extra[k] for k in ("gflops", "params", "param_layers", "layers")}
        gflops_original = flops.gflops(original.variant.spec)
        rows.append({
            "dataset": task.dataset, "data_kind": task.data_kind, "model": v.model, "method": v.method,
            "setting": dict(v.setting), "metrics": m, "variant_id": vid, **cost,
            "gflops_original": gflops_original, "flop_reduction": gflops_original / cost["gflops"],
            "gflops_paper_scale": paper_scale_gflops(v), "input_size": v.spec.input_size,
            "train_time_s": float(np.mean([r["train_time_s"] for r in res.runs])),
            "epochs_run": [r.get("epochs_run") for r in res.runs], "resumed": all(r["resumed"] for r in res.runs),
            "checkpoint": res.checkpoint, "scale": {**scale, "base_input": v.base_input, "n_test": int(len(y))},
            **{k: v2 for k, v2 in res.extra.items() if k not in cost}, **speed.get(vid, {}),
        })
    return rows


def pareto_front(gflops, auc) -> np.ndarray:
    """Indices of the points no other point beats on both cost (lower) and AUC (higher), by cost."""
    gflops, auc = np.asarray(gflops, float), np.asarray(auc, float)
    order = np.lexsort((-auc, gflops))
    front, best = [], -np.inf
    for i in order:
        if auc[i] > best:
            front.append(i)
            best = auc[i]
    return np.asarray(front, dtype=int)


def cheapest_not_worse(rows, model: str, method: str) -> dict | None:
    """The lowest-GFLOPs variant of ``method`` whose AUC is not significantly below the original's."""
    ok = [r for r in rows if r.get("model") == model and r.get("method") == method
          and r["metrics"].get("same_auc") in NOT_WORSE]
    return min(ok, key=lambda r: r["gflops"]) if ok else None
