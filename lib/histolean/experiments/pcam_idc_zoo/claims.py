"""The closing cell of notebook 07: Bonnet (2024)'s claims against our rows, each decided by a stated rule.

``paper_claims(rows)`` is pure (rows in, claims out; the paper's numbers come from its transcribed tables in
``histolean.study.published``), so every verdict is unit-tested on constructed rows. Most of today's rules
are decided by a sign or by a single number from one run per model, and say so; the interval-based rules
come later (issues 20/21). No Keras here.
"""

from __future__ import annotations

import math

from histolean.experiments.pcam_idc_zoo.statistics import (auc_by_model, depth_trend, paired_difference, rank_of,
                                                           transfer_vs_full)
from histolean.study import published
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE, Claim, within

DATASETS = ("pcam", "idc")
TABLE = {"pcam": "Table 3", "idc": "Table 4"}
PAPER = "Bonnet 2024"
WELCH_LEVEL = 0.05          # the paper's t-tests are read at 5 %
T_TOLERANCE = 0.001         # the printed t has four decimals; a recomputation agrees within a rounding step
EPOCH_TIME_RATIOS = {"b6": "b6", "inception_v3": "inception_v3_full"}   # model -> Table 2 column (vs B2)
PAPER_TABLES = ("table1_models", "table2_epoch_time", "table3_pcam", "table4_idc", "text_tuned_pcam", "text_welch")


def published_tables() -> dict[str, list[dict]]:
    """The paper's tables the claims compare with (transcribed in ``study/published/zoo.yaml``)."""
    return {name: published.table("zoo", name) for name in PAPER_TABLES}


def paper_claims(rows: list[dict], paper: dict[str, list[dict]] | None = None) -> list[Claim]:
    """The paper's claims against the notebook's result rows; ``paper``: its tables (default: the transcribed
    ones; a test may pass others)."""
    paper = paper or published_tables()
    rows = [r for r in rows if r.get("kind", "variant") == "variant" and r.get("method") != "architecture"]
    ours = _points(rows)
    theirs = paper["table3_pcam"] + paper["table4_idc"]
    out = [_full_beats_transfer(rows, ours, theirs, ds) for ds in DATASETS]
    out.append(_full_beats_in_domain_transfer(rows, ours, theirs))
    out += [_welch_ours(rows, ours, paper, ds) for ds in DATASETS]
    out += [_welch_reproduced(theirs, paper, ds) for ds in DATASETS]
    out += [_vgg19_best(rows, ours, theirs, ds) for ds in DATASETS]
    out.append(_depth_does_not_buy_auc(rows, ours, paper))
    out += _tuning_helps(rows, ours, paper)
    out += [_epoch_time_ratio(rows, model, paper) for model in EPOCH_TIME_RATIOS]
    return out


# --------------------------------------------------------------------------- rows -> numbers

def _points(rows: list[dict]) -> list[dict]:
    """The trained variants with a test AUC: one point per (dataset, method, model)."""
    return [{"dataset": r["dataset"], "method": r["method"], "model": r["model"], "auc": r["metrics"]["auc"],
             "layers": r.get("layers"), "params": r.get("params")}
            for r in rows if r.get("status") == "ok" and r.get("metrics", {}).get("auc") is not None]


def _scale(rows: list[dict], ds: str) -> str:
    r = next((r for r in rows if r["dataset"] == ds and r.get("scale")), None)
    if r is None:
        return f"no {ds.upper()} rows at this scale"
    s = r["scale"]
    return (f"{ds.upper()} ({r['data_kind']}): {s['n_train']} train / {s['n_valid']} valid / {s['n_test']} test "
            f"patches at {s['base_input']} px, {s['epochs']} epoch(s) (paper {s.get('paper_epochs', 15)}), "
            f"{s.get('runs', 1)} run")


def _skipped(rows: list[dict], ds: str, method: str) -> str:
    skipped = [r for r in rows if r["dataset"] == ds and r["method"] == method and r.get("status") == "skipped"]
    if not skipped:
        return f"no {method} model run on {ds.upper()} in this profile"
    return f"{len(skipped)} {method} row(s) skipped: {skipped[0]['skip_reason']}"


def _paired_text(d: dict, first: str, second: str) -> str:
    return (f"{first} > {second} for {d['wins']} of {d['n']} model(s); mean AUC {d['mean_first']:.3f} vs "
            f"{d['mean_second']:.3f} (mean difference {d['mean_diff']:+.3f})")


SIGN_RULE = ("sign of the mean paired test-AUC difference ({first} - {second}) over the models run both ways, one "
             "run each, no interval: holds if > 0, fails if <= 0")


# --------------------------------------------------------------------------- the claims

def _full_beats_transfer(rows, ours, theirs, ds) -> Claim:
    tab = paired_difference(auc_by_model(theirs, ds, "full"), auc_by_model(theirs, ds, "transfer"))
    d = paired_difference(auc_by_model(ours, ds, "full"), auc_by_model(ours, ds, "transfer"))
    if d is None:
        verdict, text = NOT_TESTABLE, (_skipped(rows, ds, "transfer") if not auc_by_model(ours, ds, "transfer")
                                       else "no model both fully trained and transferred")
    else:
        verdict, text = (HOLDS if d["mean_diff"] > 0 else FAILS), _paired_text(d, "full", "transfer")
    return Claim(PAPER + f", {TABLE[ds]} and Fig. 4", f"{ds.upper()}: full training beats ImageNet transfer learning",
                 _paired_text(tab, "full", "transfer") + f" ({TABLE[ds]})", text,
                 SIGN_RULE.format(first="full", second="ImageNet transfer"), verdict, _scale(rows, ds),
                 note="ImageNet weights are read from the local Keras cache only: an offline machine without them "
                      "cannot test this claim" if "skipped" in text else "")


def _full_beats_in_domain_transfer(rows, ours, theirs) -> Claim:
    tab = paired_difference(auc_by_model(theirs, "idc", "full"), auc_by_model(theirs, "idc", "transfer"))
    d = paired_difference(auc_by_model(ours, "idc", "full"), auc_by_model(ours, "idc", "transfer_pcam"))
    if d is None:
        verdict, text = NOT_TESTABLE, (_skipped(rows, "idc", "transfer_pcam")
                                       if not auc_by_model(ours, "idc", "transfer_pcam")
                                       else "no model both fully trained on IDC and transferred from PCam")
    else:
        verdict, text = (HOLDS if d["mean_diff"] > 0 else FAILS), _paired_text(d, "full", "PCam-trunk transfer")
    return Claim(PAPER + " (extended: in-domain transfer is not in the paper)",
                 "IDC: full training beats transfer also when the trunk was trained on PCam (head retrained on IDC)",
                 "not measured; with ImageNet trunks: " + _paired_text(tab, "full", "transfer") + " (Table 4)", text,
                 SIGN_RULE.format(first="full", second="PCam-trunk transfer"), verdict, _scale(rows, "idc"))


def _welch_ours(rows, ours, paper, ds) -> Claim:
    printed = {r["dataset"]: r for r in paper["text_welch"]}[ds]
    t = transfer_vs_full(ours, ds)
    if t is None:
        verdict, text = NOT_TESTABLE, "no transfer row (ImageNet or in-domain) with a full-training row to test against"
    elif not math.isfinite(t["t"]) or not math.isfinite(t["p"]):
        verdict, text = NOT_TESTABLE, f"{t['n_a']} transfer and {t['n_b']} full row(s): too few for a t-test"
    else:
        significant = t["p"] < WELCH_LEVEL
        verdict = HOLDS if significant and t["t"] < 0 else FAILS if significant and t["t"] > 0 else NOT_RESOLVED
        text = (f"Welch t = {t['t']:.2f}, df = {t['df']:.1f}, p = {t['p']:.3g} "
                f"({t['n_a']} transfer vs {t['n_b']} full rows)")
    return Claim(PAPER + ", Fig. 4",
                 f"{ds.upper()}: transfer learning's test AUC is significantly below full training's",
                 f"Welch t = {printed['t']}, df = {printed['df']}, p = {printed['p']}", text,
                 f"Welch two-sample t-test, every transfer row (ImageNet and in-domain) against every full-training "
                 f"row, one run per model: holds if t < 0 and p < {WELCH_LEVEL:g}, fails if t > 0 and "
                 f"p < {WELCH_LEVEL:g}, else not resolved; not testable with fewer than 2 rows on a side",
                 verdict, _scale(rows, ds))


def _welch_reproduced(theirs, paper, ds) -> Claim:
    printed = {r["dataset"]: r for r in paper["text_welch"]}[ds]
    t = transfer_vs_full(theirs, ds)
    if t is None or not math.isfinite(t["t"]):
        verdict, text = NOT_TESTABLE, f"{TABLE[ds]} has too few transfer or full rows for a t-test"
    else:
        verdict = within(t["t"], printed["t"] - T_TOLERANCE, printed["t"] + T_TOLERANCE)
        text = f"recomputed from {TABLE[ds]}'s AUCs: t = {t['t']:.4f}, df = {t['df']:.3f}, p = {t['p']:.4g}"
    return Claim(PAPER + ", Fig. 4 text", f"{ds.upper()}: the paper's Welch t-test follows from its own {TABLE[ds]}",
                 f"t = {printed['t']}, df = {printed['df']}, p = {printed['p']}", text,
                 f"a single, deterministic number: holds if the recomputed t lies within ±{T_TOLERANCE:g} of the "
                 f"printed t", verdict,
                 f"the paper's {TABLE[ds]} ({len([p for p in theirs if p['dataset'] == ds])} rows)")


def _vgg19_best(rows, ours, theirs, ds) -> Claim:
    tab = auc_by_model(theirs, ds, "full")
    auc = auc_by_model(ours, ds, "full")
    if "vgg19" not in auc:
        verdict, text = NOT_TESTABLE, _skipped_model(rows, ds, "full", "vgg19")
    elif len(auc) < 2:
        verdict, text = NOT_TESTABLE, "VGG19 is the only fully trained model: nothing to rank it against"
    else:
        rank = rank_of("vgg19", auc)
        best = max(auc, key=auc.get)
        verdict = HOLDS if rank == 1 else FAILS
        text = f"VGG19 ranks {rank} of {len(auc)} (AUC {auc['vgg19']:.3f}; best {best} {auc[best]:.3f})"
    return Claim(PAPER + f", {TABLE[ds]}", f"{ds.upper()}: VGG19 is the best fully trained model",
                 f"VGG19 AUC {tab['vgg19']:.2f}, rank {rank_of('vgg19', tab)} of {len(tab)}", text,
                 "rank by test AUC among the fully trained models, one run each, no interval: holds if VGG19 ranks "
                 "first (a tie at the top counts as first), else fails", verdict, _scale(rows, ds))


def _skipped_model(rows, ds, method, model) -> str:
    r = next((r for r in rows if (r["dataset"], r["method"], r["model"]) == (ds, method, model)), None)
    if r is None:
        return f"{model} not {'trained' if method != 'transfer' else 'run'} on {ds.upper()} in this profile"
    return f"{model} skipped: {r.get('skip_reason', r.get('status'))}"


def _depth_does_not_buy_auc(rows, ours, paper) -> Claim:
    table1 = {r["model"]: r for r in paper["table1_models"]}
    tab = [r for r in paper["table3_pcam"] if r["method"] == "full" and r["model"] in table1]
    tab_trend = depth_trend([table1[r["model"]]["depth"] for r in tab], [table1[r["model"]]["params_m"] for r in tab],
                            [r["auc"] for r in tab]) if len(tab) >= 3 else None
    pts = [p for p in ours if p["dataset"] == "pcam" and p["method"] == "full" and p["layers"] is not None]
    if len(pts) < 3:
        verdict, text = NOT_TESTABLE, f"{len(pts)} fully trained PCam model(s): no trend to test (3 needed)"
    else:
        trend = depth_trend([p["layers"] for p in pts], [p["params"] for p in pts], [p["auc"] for p in pts])
        rho = trend["rho_layers"]
        verdict = NOT_RESOLVED if not math.isfinite(rho) else HOLDS if rho <= 0 else FAILS
        text = (f"{trend['n']} fully trained models: Spearman rho(AUC, layers) = {rho:.2f}, rho(AUC, params) = "
                f"{trend['rho_params']:.2f}, linear R^2 on layers = {trend['r2_layers']:.2f}")
    paper_value = "VGG19 shallow (25) and best, ENB0 deep (273) and worst"
    if tab_trend is not None:
        paper_value += f"; Spearman rho(AUC, depth) = {tab_trend['rho_layers']:.2f} over Tables 1 and 3"
    return Claim(PAPER + ", Fig. 3", "PCam: depth does not buy AUC (deeper models are not better)", paper_value, text,
                 "sign of Spearman's rho between test AUC and depth (layers) over the fully trained PCam models, "
                 "one run each, no interval: holds if rho <= 0, fails if rho > 0; not resolved if undefined "
                 "(all AUCs or depths equal)", verdict, _scale(rows, "pcam"))


def _tuning_helps(rows, ours, paper) -> list[Claim]:
    full_tab = auc_by_model(paper["table3_pcam"], "pcam", "full")
    paper_value = ", ".join(f"{r['paper']} {full_tab[r['model']]:.2f} -> {r['auc']:.2f}" if r["model"] in full_tab
                            else f"{r['paper']} tuned {r['auc']:.2f}" for r in paper["text_tuned_pcam"])
    rule = ("sign of the test-AUC difference (tuned - untuned), one run each, no interval: holds if > 0, "
            "fails if <= 0")
    tuned_rows = [r for r in rows if r["dataset"] == "pcam" and r["method"] == "tuned"]
    if not tuned_rows:
        return [Claim(PAPER + ", Results (tuning)", "PCam: Hyperband tuning improves test AUC", paper_value,
                      "no model tuned in this profile", rule, NOT_TESTABLE, _scale(rows, "pcam"))]
    tuned, full = auc_by_model(ours, "pcam", "tuned"), auc_by_model(ours, "pcam", "full")
    out = []
    for r in tuned_rows:
        m = r["model"]
        if m not in tuned:
            verdict, text = NOT_TESTABLE, f"tuned {m} skipped: {r.get('skip_reason', r.get('status'))}"
        elif m not in full:
            verdict, text = NOT_TESTABLE, f"no untuned {m} on PCam to compare with"
        else:
            verdict = HOLDS if tuned[m] - full[m] > 0 else FAILS
            text = f"{r.get('paper_name', m)} {full[m]:.3f} -> {tuned[m]:.3f} ({tuned[m] - full[m]:+.3f})"
        s = r.get("setting", {})
        budget = (f"; tuner budget {s['tune_max_epochs']} max epochs, {s['tune_n_train']} patches"
                  if "tune_max_epochs" in s and "tune_n_train" in s else "")
        out.append(Claim(PAPER + ", Results (tuning)", f"PCam: Hyperband tuning improves {r.get('paper_name', m)}'s "
                         "test AUC", paper_value, text, rule, verdict, _scale(rows, "pcam") + budget))
    return out


def _epoch_time_ratio(rows, model, paper) -> Claim:
    column = EPOCH_TIME_RATIOS[model]
    ratios = [r[column] / r["b2"] for r in paper["table2_epoch_time"]]
    lo, hi = min(ratios), max(ratios)
    name = {"b6": "B6", "inception_v3": "Inception V3 (full training)"}[model]
    tpe = {r["model"]: r["time_per_epoch_s"] for r in rows if r["dataset"] == "pcam" and r["method"] == "full"
           and r.get("status") == "ok" and r.get("time_per_epoch_s")}
    if model not in tpe or "b2" not in tpe:
        verdict, text = NOT_TESTABLE, f"{model} and b2 not both fully trained on PCam in this profile"
    else:
        ratio = tpe[model] / tpe["b2"]
        verdict, text = within(ratio, lo, hi), f"{ratio:.2f}x ({tpe[model]:.2f} s vs {tpe['b2']:.2f} s per epoch)"
    return Claim(PAPER + ", Table 2", f"PCam: one epoch of {name} takes {lo:.1f}-{hi:.1f}x B2's",
                 f"{lo:.2f}-{hi:.2f}x over its four GPUs (K80 to A100)", text,
                 f"one timing each (last epoch), no interval, on a CPU where the paper used GPUs: "
                 f"holds if our ratio lies within "
                 f"the paper's range [{lo:.2f}, {hi:.2f}], else fails", verdict, _scale(rows, "pcam"))
