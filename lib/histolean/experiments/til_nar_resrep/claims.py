"""The NAR paper's claims about its TIL experiment, decided on this experiment's rows.

:func:`paper_claims` is pure (rows in, :class:`~histolean.study.claims.Claim` list out), so its verdict
logic is unit-tested on constructed rows; the notebook's closing cell is::

    claims.show(rec.add_claims(til_nar_resrep.paper_claims(rec.rows)))

Every interval resamples source images (the rows' ``ci_unit``). Three kinds of claim:

* the control (not the paper's): each network's original beats the best colour baseline (paired,
  image-clustered). Where it does not, the network's claims are "not testable at this scale", with the numbers;
* a variant keeps its original's AUC at a stated cost (the paired difference within ±δ, δ ours: the
  paper states none);
* the methods' order (NAR cheaper than IR cheaper than ResRep at the same AUC), one claim per consecutive
  pair, decided at matched cost: the paired AUC difference of the two methods' variants of about the same
  GFLOPs (the rows' ``matched_cost``), never by picking levels.

"Not resolved" never counts as "the same" or "not worse"; it comes with a rough number of test images
that would resolve it (:func:`histolean.core.metrics.units_to_resolve`).
"""

from __future__ import annotations

import math

from histolean.core.metrics import units_to_resolve
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE, Claim, directional, equivalent

from .summary import MATCH_TOLERANCE, usable
from .variants import METHODS

PAPER = "Meirelles et al. 2022"
DEFAULT_MARGIN = 0.02
MARGIN_TEXT = "δ is ours (the paper states no margin)"
CONTEXT = "control (not a claim of the paper)"

# (where in the paper, model, method, setting key, value, the claim, the paper's numbers, its FLOP reduction)
SAME_AUC_CLAIMS = (
    (f"{PAPER}, Table 3 and abstract", "resnet50v2", "nar", "phi", 2,
     "NAR phi=2 makes ResNet50V2 3.26x cheaper at the same AUC",
     "3.26x fewer GFLOPs (9.65 -> 2.96), AUC 0.86 vs 0.86", 3.26),
    (f"{PAPER}, Table 3 and abstract", "resnet50v2", "resrep", "epsilon", 0.9,
     "ResRep eps=0.90 makes ResNet50V2 1.32x cheaper at the same AUC",
     "1.32x fewer GFLOPs (9.65 -> 7.27), AUC 0.86 vs 0.86", 1.32),
    (f"{PAPER}, Table 4 and abstract", "inception_v4", "nar", "phi", 2,
     "NAR makes Inception V4 ~4x cheaper at the same AUC (phi=2)",
     "3.7x fewer GFLOPs (15.48 -> 4.17), AUC 0.92 vs 0.92", 15.48 / 4.17),
)
# the methods' order at the original's AUC the paper reports per network (no ResRep on Inception V4)
PAPER_ORDER = {
    "resnet50v2": (("nar", "ir", "resrep"), "NAR < IR < ResRep (2.96 < 4.24 < 7.27 GFLOPs at AUC 0.86)"),
    "inception_v4": (("nar", "ir"), "NAR < IR (NAR phi=2: 4.17 GFLOPs at AUC 0.92; IR keeps it to k=1, 9.80; "
                                    "the paper ran no ResRep on it)"),
}
OTHER_ORDER = (("nar", "ir", "resrep"), "not in the paper (its order for ResNet50V2: NAR < IR < ResRep)")
NAMES = {"nar": "NAR", "ir": "IR", "resrep": "ResRep"}


def paper_claims(rows: list[dict]) -> list[Claim]:
    """The paper's claims, each with what our rows show and a verdict from the rule it states."""
    variants = [r for r in rows if r.get("kind", "variant") == "variant" and r.get("method") in METHODS]
    any_row = variants[0] if variants else None
    gates = {r["model"]: _control_claim(r) for r in variants if r["method"] == "original"}
    out = [_same_auc_claim(variants, gates, any_row, *c) for c in SAME_AUC_CLAIMS]
    for model in sorted({r["model"] for r in variants}):
        order, paper_value = PAPER_ORDER.get(model, OTHER_ORDER)
        out += [_order_claim(variants, gates, model, a, b, paper_value) for a, b in zip(order, order[1:])]
    return out + list(gates.values())


# --------------------------------------------------------------------------- the control: colour alone

def control_rule() -> str:
    return ("paired 95% interval (bootstrap over source images, the same images for both) of AUC(original) - "
            "AUC(best colour-histogram baseline): holds if above 0, fails if below, else not resolved; "
            "where it does not hold, the network's claims are not testable at this scale")


def _control_claim(original: dict) -> Claim:
    model = original["model"]
    claim = f"{model} original beats colour alone (the gate of its claims)"
    vs = original["metrics"].get("vs_baseline")
    if not vs:
        return Claim(CONTEXT, claim, "not reported", "no colour baseline in these rows", control_rule(),
                     NOT_TESTABLE, _scale_text(original))
    interval = (vs["lo"], vs["hi"]) if _finite(vs["lo"]) and _finite(vs["hi"]) else None
    verdict = directional(*interval, "higher") if interval else NOT_RESOLVED
    note = _resolve_note(interval, original, None) if verdict == NOT_RESOLVED else ""
    return Claim(CONTEXT, claim, "not reported", _gate_text(original), control_rule(), verdict,
                 _scale_text(original), interval=interval, note=note)


def _gate_text(original: dict) -> str:
    m, vs = original["metrics"], original["metrics"].get("vs_baseline") or {}
    return (f"{original['model']} original AUC {_num(m.get('auc'))} [{_num(m.get('auc_ci_lo'))}, "
            f"{_num(m.get('auc_ci_hi'))}] vs colour histograms + {vs.get('baseline')} {_num(vs.get('baseline_auc'))}: "
            f"difference {_num(vs.get('diff'), '+.3f')} [{_num(vs.get('lo'), '+.3f')}, {_num(vs.get('hi'), '+.3f')}] "
            f"over {m.get('n_images')} test images ({m.get('n_windows')} windows)")


def _gate_closed(gates: dict, model: str) -> str | None:
    """Why a network's claims cannot be tested (its original does not beat colour), or None."""
    gate = gates.get(model)
    if gate is None or gate.verdict == HOLDS:
        return None
    return f"gate: the original does not beat the colour baseline ({gate.verdict}): {gate.ours}"


# --------------------------------------------------------------------------- a variant keeps the AUC

def no_auc_loss(lo: float, hi: float, margin: float) -> str:
    """The paired comparison's decision: the same AUC (interval inside +-margin) or a higher one holds,
    a significantly lower one fails, anything else is not resolved."""
    if equivalent(lo, hi, margin) == HOLDS or directional(lo, hi, "higher") == HOLDS:
        return HOLDS
    if directional(lo, hi, "lower") == HOLDS:
        return FAILS
    return NOT_RESOLVED


def no_auc_loss_rule(margin: float) -> str:
    return (f"paired 95% interval (bootstrap over source images, the same images for both) of AUC(variant) - "
            f"AUC(original): holds if it lies inside ±δ = ±{margin:g} ({MARGIN_TEXT}) or above 0; fails if "
            "below 0 and not inside ±δ; else not resolved (never counted as the same). The cost is reported, "
            "not decided; a variant no cheaper than its original tests nothing: not resolved")


def _find(rows, model, method, key=None, value=None) -> dict | None:
    for r in rows:
        if r["model"] == model and r["method"] == method and (key is None or r["setting"].get(key) == value):
            return r
    return None


def _same_auc_claim(rows, gates, any_row, where, model, method, key, value, claim, paper_value,
                    paper_reduction) -> Claim:
    r = _find(rows, model, method, key, value)
    margin = (r or {}).get("metrics", {}).get("equivalence_margin", DEFAULT_MARGIN)
    if r is None:
        return Claim(where, claim, paper_value, "not run at this scale", no_auc_loss_rule(margin),
                     NOT_TESTABLE, _scale_text(any_row), note=f"add {method} {key}={value} for {model} to "
                                                             "`architectures` to test it (the paper profile does)")
    m = r["metrics"]
    lo, hi = m.get("auc_diff_ci_lo"), m.get("auc_diff_ci_hi")
    ours = (f"{r['flop_reduction']:.2f}x fewer GFLOPs, measured speed-up {_num(r.get('speedup'), '.2f')}x; "
            f"AUC {_num(m.get('auc'))} vs {_num(_original_auc(m))}, difference {_num(m.get('auc_diff'), '+.3f')} "
            f"[{_num(lo, '+.3f')}, {_num(hi, '+.3f')}] over {m.get('n_images')} test images "
            f"({m.get('n_windows', m.get('n_test'))} windows)")
    notes = [_cost_note(rows, r, paper_reduction)]
    if r.get("one_class"):
        notes.append(f"flagged: its decisions at its decision threshold {r.get('decision_thresholds')} (chosen on "
                     "validation predictions) are all one class")
    interval = (float(lo), float(hi)) if _finite(lo) and _finite(hi) else None
    closed = _gate_closed(gates, model)
    if closed:
        verdict = NOT_TESTABLE
        notes.insert(0, closed)
    elif not usable(r):
        verdict = NOT_TESTABLE
        c = r.get("conversion", {})
        notes.insert(0, "the ResRep conversion is lossy (outputs differ by up to "
                        f"{_num(c.get('max_output_diff'), '.3g')}, tolerance {r.get('conversion_tolerance')}; "
                        "removed rows had norms up to "
                        f"{_num(c.get('max_removed_norm'), '.3g')}): masked rows did not collapse in this run, so the "
                        "row is not ResRep")
    elif interval is None:
        verdict = NOT_RESOLVED
        notes.append("the CI is undefined (a single class among the test windows)")
    elif not r["flop_reduction"] > 1:  # e.g. a ResRep run too short to prune anything
        verdict = NOT_RESOLVED
        notes.append("the variant is no cheaper than its original at this scale (nothing removed)")
    else:
        verdict = no_auc_loss(*interval, margin)
        if verdict == NOT_RESOLVED:
            notes.append(_resolve_note(interval, r, margin))
    return Claim(where, claim, paper_value, ours, no_auc_loss_rule(margin), verdict, _scale_text(r),
                 interval=interval, note="; ".join(notes))


def _resolve_note(interval, row, margin) -> str:
    """'Not resolved', with a rough number of test images that would resolve it."""
    n = row.get("metrics", {}).get("n_images")
    if interval is None or not n:
        return "not resolved"
    need = units_to_resolve(*interval, n, margin=margin) if margin is not None else None
    if need is None:
        need = units_to_resolve(*interval, n)
    what = f"roughly {need} test images would resolve it" if need else "no feasible number of test images resolves it"
    return f"not resolved: {what} (we have {n}; half-width taken to shrink as 1/sqrt(images))"


def _original_auc(m: dict) -> float | None:
    auc, diff = m.get("auc"), m.get("auc_diff")
    return auc - diff if _finite(auc) and _finite(diff) else None


def _cost_note(rows, r, paper_reduction: float) -> str:
    original = _find(rows, r["model"], "original")
    if r.get("gflops_paper_scale") and original and original.get("gflops_paper_scale"):
        at_240 = original["gflops_paper_scale"] / r["gflops_paper_scale"]
        nominal = r.get("flop_reduction_nominal")
        return (f"cost: {at_240:.2f}x fewer GFLOPs at the paper's 240 px base by our count (paper "
                f"{paper_reduction:.2f}x); ours above is at base input {r.get('scale', {}).get('base_input')} px"
                + (f" (nominal {nominal:.2f}x)" if _finite(nominal) else ""))
    return (f"cost: ResRep's reduction depends on its training (paper {paper_reduction:.2f}x after 180 epochs "
            f"from scratch); ours above is this run's")


# --------------------------------------------------------------------------- the methods' order, at matched cost

def order_verdict(comparisons: list[dict], margin: float) -> str:
    """``comparisons``: paired intervals (lo, hi) of AUC(a) - AUC(b) for a's and b's variants of matched
    cost. Holds if some shows a higher and none lower; fails if some shows a lower and none higher, or
    if every one is the same within ±margin (then neither is cheaper); not testable without any;
    otherwise not resolved."""
    if not comparisons:
        return NOT_TESTABLE
    sides = [directional(c["lo"], c["hi"], "higher") for c in comparisons]
    if HOLDS in sides and FAILS not in sides:
        return HOLDS
    if FAILS in sides and HOLDS not in sides:
        return FAILS
    if all(equivalent(c["lo"], c["hi"], margin) == HOLDS for c in comparisons):
        return FAILS
    return NOT_RESOLVED


def order_rule(a: str, b: str, margin: float) -> str:
    return (f"matched cost: each {NAMES[a]} variant against the {NAMES[b]} variant nearest in GFLOPs (within "
            f"{MATCH_TOLERANCE:g}x), paired 95% interval over source images of the AUC difference; holds if one "
            f"shows {NAMES[a]} higher and none lower; fails if one shows it lower and none higher, or all are "
            f"the same within ±δ = ±{margin:g} ({MARGIN_TEXT}); else not resolved (never counted as the same)")


def _order_claim(rows, gates, model, a, b, paper_value) -> Claim:
    claim = f"{model}: at the same AUC, {NAMES[a]} is cheaper than {NAMES[b]}"
    original = _find(rows, model, "original")
    margin = (original or {}).get("metrics", {}).get("equivalence_margin", DEFAULT_MARGIN)
    ran = {m: [r for r in rows if r["model"] == model and r["method"] == m] for m in (a, b)}
    comparisons = [{**c, "of": r["variant_id"], "gflops_a": r["gflops"]} for r in ran[a] if usable(r)
                   for c in r.get("matched_cost", []) if c["method"] == b]
    parts = [f"{c['of']} ({c['gflops_a']:.3f} GFLOPs) - {c['variant_id']} ({c['gflops']:.3f}): "
             f"{_num(c['diff'], '+.3f')} [{_num(c['lo'], '+.3f')}, {_num(c['hi'], '+.3f')}]" for c in comparisons]
    ours = "; ".join(parts) or "no pair of matched cost"
    notes = []
    closed = _gate_closed(gates, model)
    missing = [m for m in (a, b) if not ran[m]]
    lossy = [m for m in (a, b) if ran[m] and not any(usable(r) for r in ran[m])]
    if closed:
        verdict, notes = NOT_TESTABLE, [closed]
    elif missing or lossy:
        verdict = NOT_TESTABLE
        notes += [f"not run here: {', '.join(NAMES[m] for m in missing)}"] if missing else []
        notes += [f"only lossy (not ResRep) conversions of: {', '.join(NAMES[m] for m in lossy)}"] if lossy else []
    else:
        verdict = order_verdict(comparisons, margin)
        if verdict == NOT_TESTABLE:
            notes.append(f"no {NAMES[a]} and {NAMES[b]} levels within {MATCH_TOLERANCE:g}x of each other's GFLOPs: "
                         "add levels to `architectures`")
        elif verdict == NOT_RESOLVED and comparisons:
            widest = max(comparisons, key=lambda c: c["hi"] - c["lo"])
            notes.append(_resolve_note((widest["lo"], widest["hi"]), original or {}, None))
    return Claim(f"{PAPER}, Tables 3-4 and discussion", claim, paper_value, ours, order_rule(a, b, margin), verdict,
                 _scale_text(original), note="; ".join(notes))


# --------------------------------------------------------------------------- text

def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _num(x, fmt: str = ".3f") -> str:
    return format(x, fmt) if _finite(x) else "n/a"


def _scale_text(r) -> str:
    if r is None:
        return "no variant run"
    s = r.get("scale", {})
    return (f"{s.get('profile', '?')} profile: base input {s.get('base_input')} px (paper 240), {s.get('epochs')} "
            f"epochs (paper 50/180), {s.get('runs')} run(s) (paper 3), {s.get('n_train')} training / "
            f"{s.get('n_test')} test windows from {s.get('n_test_images', '?')} test images, {r.get('dataset')} "
            f"({r.get('data_kind')})")
