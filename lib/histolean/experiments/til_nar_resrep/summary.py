"""The TIL experiment's result rows, and what the notebook reads off them.

Row vocabulary (as everywhere in the study): ``flop_reduction`` = GFLOPs(original) / GFLOPs(variant),
>= 1 for a cheaper variant; ``speedup`` = time(original) / time(variant), >= 1 when faster. The AUC
fields (``metrics``) come from :func:`histolean.core.metrics.auc_with_ci` and, against the variant's
original, :func:`histolean.core.metrics.paired_auc_difference`, both resampling **source images**
(``task.test.groups``: windows of one image are alike, so they are not independent evidence); every
paired comparison draws the same images for both networks. CRCHistoPhenotypes has no slide ids (its 40
images come from about 10 slides of 9 patients): slide-level clustering would widen the intervals further.

Besides the comparison with its original, a row carries ``vs_baseline`` (originals: paired difference with
the best colour baseline, the control the claims are gated on) and ``matched_cost`` (IR / NAR / ResRep:
paired differences with the other methods' variants of about the same GFLOPs, for the order claim).
"""

from __future__ import annotations

import math

import numpy as np

from histolean.core import flops, metrics
from histolean.methods import nar

from .runner import VariantResult
from .variants import PAPER_BASE_INPUT, Variant, base_spec

CI_UNIT = "source image"
EXACT_TOLERANCE = 1e-4     # a ResRep conversion counts as exact within this output difference (relative)
MATCH_TOLERANCE = 1.35     # two variants are "at matched cost" when their GFLOPs differ by at most this factor


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


def nominal_flop_reduction(v: Variant) -> float | None:
    """The reduction the method promises if feature maps did not round: the input pixel ratio for IR
    (1.15^(2k)), the compound factor for NAR ((alpha beta^2 gamma^2)^phi = 1.92^phi); None otherwise."""
    if v.method == "ir":
        return nar.GAMMA ** (2 * v.setting["k"])
    if v.method == "nar":
        return nar.theoretical_flop_ratio(v.setting["phi"])
    return None


def image_counts(task_split) -> dict:
    """The resampling unit and how many of them (images) and of windows the test set holds."""
    return {"ci_unit": CI_UNIT, "n_images": int(np.unique(task_split.groups).size),
            "n_windows": int(len(task_split.labels))}


def check_images(task, min_images: int = 2) -> None:
    """An image-level interval needs several test images, each split both classes: a clear error otherwise."""
    from histolean.data.common import DataError

    for name in ("train", "valid", "test"):
        part = task.split(name)
        n = int(np.unique(part.groups).size)
        if n < min_images:
            raise DataError(f"TIL task: dataset {task.dataset!r}, split {name!r} holds {n} source image(s); "
                            f"image-level statistics need at least {min_images} per split. Use more images")


def baseline_rows(baselines: dict[str, dict], task, scale: dict, *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One row per colour baseline (``colour_histogram_baselines``' output): AUC with an image-level CI."""
    y, groups = task.test.labels, task.test.groups
    rows = []
    for name, b in baselines.items():
        m = metrics.auc_with_ci(y, b["test_probs"], n_boot=n_boot, seed=seed, groups=groups)
        m.update({**image_counts(task.test), "n_test": int(len(y)), "n_test_positive": int(y.sum())})
        rows.append({"dataset": task.dataset, "data_kind": task.data_kind, "model": name, "method": "baseline",
                     "kind": "baseline", "setting": {"features": "RGB histograms, 16 bins + channel mean/sd"},
                     "metrics": m, "train_time_s": b["train_time_s"], "scale": {**scale, "n_test": int(len(y))}})
    return rows


def _paired(y, probs, reference, groups, n_boot, seed, margin) -> dict:
    d = metrics.paired_auc_difference(y, probs, reference, n_boot=n_boot, seed=seed, margin=margin, groups=groups)
    return {"diff": d["auc_diff"], "lo": d["auc_diff_ci_lo"], "hi": d["auc_diff_ci_hi"], "verdict": d["same_auc"]}


def summarise(results: dict[str, VariantResult], task, speed: dict[str, dict], scale: dict, *,
              baselines: dict[str, dict] | None = None, n_boot: int = 1000, margin: float = 0.02,
              seed: int = 0) -> list[dict]:
    """One row (keyword arguments of ``Recorder.add``) per variant: AUC over runs with an image-level CI,
    the paired difference with its architecture's original, costs (achieved and nominal FLOP reduction),
    measured speed, training time, the one-class flag; originals against the best colour baseline
    (``baselines``: ``colour_histogram_baselines``' output), other variants against the other methods at
    matched cost."""
    y, groups = task.test.labels, task.test.groups
    boot = {"n_boot": n_boot, "seed": seed, "groups": groups}
    best_baseline = None
    if baselines:
        name = max(baselines, key=lambda k: metrics.auc(y, baselines[k]["test_probs"]))
        best_baseline = (name, np.asarray(baselines[name]["test_probs"], dtype=float))
    rows = []
    for vid, res in results.items():
        v = res.variant
        probs = res.test_probs
        m = metrics.auc_with_ci(y, probs, **boot)
        thresholds = [float(r.get("decision_threshold", 0.5)) for r in res.runs]  # each run's, from validation
        # cross-validated runs carry each fold's decisions at that fold's own threshold
        decided = np.asarray([np.asarray(r["test_decisions"], bool) if "test_decisions" in r
                              else np.asarray(r["test_probs"]) >= t for r, t in zip(res.runs, thresholds)])
        m.update({"accuracy": float(np.mean([d == y for d in decided])),
                  "val_auc": float(np.mean([r["val_auc"] for r in res.runs])), "n_test": int(len(y)),
                  "n_test_positive": int(y.sum()), **image_counts(task.test)})
        original = results[f"{v.model}__original"]
        if v.method != "original":
            m.update(metrics.paired_auc_difference(y, probs, original.test_probs, margin=margin, **boot))
            m["ci_unit"] = CI_UNIT
        else:
            m.update({"auc_diff": 0.0, "auc_diff_ci_lo": 0.0, "auc_diff_ci_hi": 0.0, "same_auc": "reference",
                      "equivalence_margin": margin})
            if best_baseline is not None:
                name, ref = best_baseline
                m["vs_baseline"] = {"baseline": name, "baseline_auc": metrics.auc(y, ref),
                                    **_paired(y, probs, ref, groups, n_boot, seed, margin)}
        if v.spec_buildable:
            cost = {"gflops": flops.gflops(v.spec), "params": flops.count_params(v.spec), **flops.count_layers(v.spec)}
        else:
            cost = {k: res.extra[k] for k in ("gflops", "params", "param_layers", "layers")}
        gflops_original = flops.gflops(original.variant.spec)
        nominal = nominal_flop_reduction(v)
        achieved = gflops_original / cost["gflops"]
        rows.append({
            "dataset": task.dataset, "data_kind": task.data_kind, "model": v.model, "method": v.method,
            "setting": dict(v.setting), "metrics": m, "variant_id": vid, **cost,
            "gflops_original": gflops_original, "flop_reduction": achieved,
            "flop_reduction_nominal": nominal, "nominal_fraction": None if nominal is None else achieved / nominal,
            "gflops_paper_scale": paper_scale_gflops(v), "input_size": v.spec.input_size,
            # a run whose decisions at the threshold are all one class: its AUC may be defined, its classifier is not
            "one_class": bool(any(d.all() or not d.any() for d in decided)),
            "predicted_positive_share": float(decided.mean()), "decision_thresholds": thresholds,
            **({"fold_thresholds": [r["fold_thresholds"] for r in res.runs]}
               if "fold_thresholds" in res.runs[0] else {}),
            "precision": res.runs[0].get("precision", "fp32"),
            # cross-validated: summed over the folds (the final model's training is not included)
            "train_time_s": float(np.mean([r["train_time_s"] for r in res.runs])),
            "epochs_run": [r.get("epochs_run") for r in res.runs], "resumed": all(r["resumed"] for r in res.runs),
            "checkpoint": res.checkpoint, "scale": {**scale, "base_input": v.base_input, "n_test": int(len(y)),
                                                    "n_test_images": m["n_images"]},
            **{k: v2 for k, v2 in res.extra.items() if k not in cost}, **speed.get(vid, {}),
        })
        if "conversion" in res.extra:
            c = res.extra["conversion"]
            rows[-1]["conversion_exact"] = bool(c["max_output_diff"] <= EXACT_TOLERANCE * max(1.0, c["output_scale"]))
            rows[-1]["conversion_tolerance"] = EXACT_TOLERANCE
    _add_matched_cost(rows, results, y, groups, n_boot, seed, margin)
    return rows


def usable(row: dict) -> bool:
    """A row that measures its method: not a lossy ResRep conversion (that is another method)."""
    return row.get("conversion_exact", True)


def _add_matched_cost(rows, results, y, groups, n_boot, seed, margin) -> None:
    """For each reduced variant, the paired difference with each other method's variant nearest in GFLOPs
    (within a factor MATCH_TOLERANCE): the methods compared at matched cost, on the same test images."""
    reduced = [r for r in rows if r["method"] not in ("original",) and usable(r)]
    for r in reduced:
        matches = []
        for method in sorted({o["method"] for o in reduced if o["model"] == r["model"]} - {r["method"]}):
            others = [o for o in reduced if o["model"] == r["model"] and o["method"] == method]
            o = min(others, key=lambda o: abs(math.log(o["gflops"] / r["gflops"])))
            ratio = o["gflops"] / r["gflops"]
            if max(ratio, 1 / ratio) > MATCH_TOLERANCE:
                continue
            probs, ref = results[r["variant_id"]].test_probs, results[o["variant_id"]].test_probs
            matches.append({"method": method, "variant_id": o["variant_id"], "gflops": o["gflops"],
                            "cost_ratio": ratio, **_paired(y, probs, ref, groups, n_boot, seed, margin)})
        r["matched_cost"] = matches


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
