"""The NAR paper's claims about its TIL experiment, decided on this experiment's rows.

:func:`paper_claims` is pure (rows in, :class:`~histolean.study.claims.Claim` list out), so its verdict
logic is unit-tested on constructed rows; the notebook's closing cell is::

    claims.show(rec.add_claims(til_nar_resrep.paper_claims(rec.rows)))

Three kinds of claim: a variant keeps its original's AUC at a stated cost (decided on the paired AUC
difference), the methods' order at the original's AUC (NAR < IR < ResRep, decided on GFLOPs), and, as
context, that a CNN learns more than colour alone (decided on the two AUC intervals).
"""

from __future__ import annotations

import math

from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE, Claim, directional, equivalent

from .summary import cheapest_not_worse
from .variants import METHODS

PAPER = "Meirelles et al. 2022"
DEFAULT_MARGIN = 0.02

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
    baselines = [r for r in rows if r.get("method") == "baseline"]
    any_row = variants[0] if variants else None
    out = [_same_auc_claim(variants, any_row, *c) for c in SAME_AUC_CLAIMS]
    for model in sorted({r["model"] for r in variants}):
        out.append(_order_claim(variants, model))
    for original in (r for r in variants if r["method"] == "original"):
        if baselines:
            out.append(_colour_claim(original, baselines))
    return out


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
    return (f"paired 95% bootstrap CI of AUC(variant) - AUC(original) on the same test patches: holds if it lies "
            f"inside ±{margin:g} or above 0; fails if below 0 (and not inside ±{margin:g}); else not resolved. "
            "The cost is reported, not decided; a variant no cheaper than its original tests nothing: not resolved")


def _find(rows, model, method, key=None, value=None) -> dict | None:
    for r in rows:
        if r["model"] == model and r["method"] == method and (key is None or r["setting"].get(key) == value):
            return r
    return None


def _same_auc_claim(rows, any_row, where, model, method, key, value, claim, paper_value, paper_reduction) -> Claim:
    r = _find(rows, model, method, key, value)
    if r is None:
        return Claim(where, claim, paper_value, "not run at this scale", no_auc_loss_rule(DEFAULT_MARGIN),
                     NOT_TESTABLE, _scale_text(any_row), note=f"add {method} {key}={value} for {model} to "
                                                             "`architectures` to test it")
    m = r["metrics"]
    margin = m.get("equivalence_margin", DEFAULT_MARGIN)
    lo, hi = m.get("auc_diff_ci_lo"), m.get("auc_diff_ci_hi")
    ours = (f"{r['flop_reduction']:.2f}x fewer GFLOPs, measured speed-up {_num(r.get('speedup'), '.2f')}x; "
            f"AUC {_num(m.get('auc'))} vs {_num(_original_auc(m))}, difference {_num(m.get('auc_diff'), '+.3f')} "
            f"[{_num(lo, '+.3f')}, {_num(hi, '+.3f')}] on {m.get('n_test')} test patches")
    notes = [_cost_note(rows, r, paper_reduction)]
    interval = (float(lo), float(hi)) if _finite(lo) and _finite(hi) else None
    if interval is None:
        verdict = NOT_RESOLVED
        notes.append("the CI is undefined (a single class among the test patches)")
    elif not r["flop_reduction"] > 1:  # e.g. a ResRep run too short to prune anything
        verdict = NOT_RESOLVED
        notes.append("the variant is no cheaper than its original at this scale (nothing removed)")
    else:
        verdict = no_auc_loss(*interval, margin)
    return Claim(where, claim, paper_value, ours, no_auc_loss_rule(margin), verdict, _scale_text(r),
                 interval=interval, note="; ".join(notes))


def _original_auc(m: dict) -> float | None:
    auc, diff = m.get("auc"), m.get("auc_diff")
    return auc - diff if _finite(auc) and _finite(diff) else None


def _cost_note(rows, r, paper_reduction: float) -> str:
    original = _find(rows, r["model"], "original")
    if r.get("gflops_paper_scale") and original and original.get("gflops_paper_scale"):
        at_240 = original["gflops_paper_scale"] / r["gflops_paper_scale"]
        return (f"cost: {at_240:.2f}x fewer GFLOPs at the paper's 240 px base by our count (paper "
                f"{paper_reduction:.2f}x); ours above is at base input {r.get('scale', {}).get('base_input')} px")
    return (f"cost: ResRep's reduction depends on its training (paper {paper_reduction:.2f}x after 180 epochs "
            f"from scratch); ours above is this run's")


# --------------------------------------------------------------------------- the methods' order

def order_verdict(costs: dict[str, float | None], order: tuple[str, ...]) -> str:
    """``costs``: method -> GFLOPs of its cheapest variant as good as the original (None: none is).
    Holds when consecutive methods of ``order`` are strictly cheaper; a method with none counts as dearer
    than one with; a pair where neither has one is not resolved; one pair the other way round fails."""
    undecided = False
    for a, b in zip(order, order[1:]):
        ca, cb = costs.get(a), costs.get(b)
        if ca is None and cb is None:
            undecided = True
        elif ca is None or (cb is not None and ca >= cb):
            return FAILS
    return NOT_RESOLVED if undecided else HOLDS


def order_rule(order: tuple[str, ...]) -> str:
    return ("per method, the cheapest variant whose paired AUC CI is not wholly below 0 (same, higher or not "
            f"resolved); holds if their GFLOPs are in the order {' < '.join(NAMES[m] for m in order)}; fails if a "
            "pair is the other way round (a method with no such variant counts as dearer); not resolved if "
            "neither of a pair has one")


def _order_claim(rows, model) -> Claim:
    order, paper_value = PAPER_ORDER.get(model, OTHER_ORDER)
    claim = f"{model}: at the original's AUC, " + ", ".join(f"{NAMES[a]} is cheaper than {NAMES[b]}"
                                                             for a, b in zip(order, order[1:]))
    best = {m: cheapest_not_worse(rows, model, m) for m in order}
    ran = {m for m in order if _find(rows, model, m) is not None}
    parts = [f"{m}: {b['gflops']:.3f} GFLOPs ({_setting_text(b)})" if b else
             (f"{m}: none as good" if m in ran else f"{m}: not run") for m, b in best.items()]
    ours = "cheapest variant not significantly below the original: " + "; ".join(parts)
    note = ("'not significantly below' includes 'not resolved': on a small test set nearly every variant "
            "qualifies and the order is that of the cheapest levels tried (a comparison of GFLOPs, no interval)")
    if ran != set(order):
        verdict = NOT_TESTABLE
        note = f"not run here: {', '.join(m for m in order if m not in ran)}; " + note
    else:
        verdict = order_verdict({m: b["gflops"] if b else None for m, b in best.items()}, order)
    scale_row = next((b for b in best.values() if b), None) or _find(rows, model, "original")
    return Claim(f"{PAPER}, Tables 3-4 and discussion", claim, paper_value, ours, order_rule(order), verdict,
                 _scale_text(scale_row), note=note)


# --------------------------------------------------------------------------- context: colour alone

def _colour_claim(original, baselines) -> Claim:
    best = max(baselines, key=lambda r: r["metrics"]["auc"])
    m, b = original["metrics"], best["metrics"]
    ours = (f"{original['model']} original AUC {_num(m['auc'])} [{_num(m['auc_ci_lo'])}, {_num(m['auc_ci_hi'])}] "
            f"vs colour histograms + {best['model']} {_num(b['auc'])} [{_num(b['auc_ci_lo'])}, {_num(b['auc_ci_hi'])}]")
    rule = ("the two 95% bootstrap CIs (unpaired: conservative): holds if the CNN's lies wholly above the best "
            "colour baseline's, fails if wholly below, else not resolved")
    bounds = (m["auc_ci_lo"], m["auc_ci_hi"], b["auc_ci_lo"], b["auc_ci_hi"])
    if all(_finite(x) for x in bounds):
        # the widest difference the two intervals allow: above 0 only when they do not overlap
        interval = (m["auc_ci_lo"] - b["auc_ci_hi"], m["auc_ci_hi"] - b["auc_ci_lo"])
        verdict = directional(*interval, "higher")
    else:
        interval, verdict = None, NOT_RESOLVED
    return Claim("context (not a claim of the paper)", f"{original['model']} learns more than colour alone",
                 "not reported", ours, rule, verdict, _scale_text(original), interval=interval)


# --------------------------------------------------------------------------- text

def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _num(x, fmt: str = ".3f") -> str:
    return format(x, fmt) if _finite(x) else "n/a"


def _setting_text(r) -> str:
    return ", ".join(f"{k}={v}" for k, v in r["setting"].items()) or "original"


def _scale_text(r) -> str:
    if r is None:
        return "no variant run"
    s = r.get("scale", {})
    return (f"{s.get('profile', '?')} profile: base input {s.get('base_input')} px (paper 240), {s.get('epochs')} "
            f"epochs (paper 50/180), {s.get('runs')} run(s) (paper 3), {s.get('n_train')} training / "
            f"{s.get('n_test')} test patches, {r.get('dataset')} ({r.get('data_kind')})")

