"""monuseg_pruning.paper_claims on constructed rows: every verdict can come out either way, and a claim the
run's scale cannot decide says so."""

from __future__ import annotations

import pytest

from histolean.experiments import monuseg_pruning
from histolean.experiments.monuseg_pruning import COST_METHOD, METHOD, TABLE1_METHOD
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE, VERDICTS, Claim

SCALE = {"width": 0.125, "n_train": 2, "crop": 64, "crops_per_image": 2, "epochs": 1, "retrain_epochs": 1,
         "n_test": 2, "n_tnbc": 2, "eval_crop": 128, "encoder": "random"}
BASE = {"dice": 0.70, "aji": 0.40, "pq": 0.35}


def seg_row(dataset, scheme, cr, **metrics):
    row = {"kind": "variant", "method": METHOD, "dataset": dataset, "data_kind": "real",
           "model": "unet_resnet34 x0.125 (two branches)", "setting": {"scheme": scheme, "cr": cr},
           "metrics": {"mse": 0.01, **BASE, **metrics}, "scale": SCALE, "params": 95_000,
           "theoretical_speedup": {"semantic": float(cr), "regression": float(cr)}}
    if scheme == "unpruned":
        row |= {"training": {"semantic": {"final_loss": 0.5, "train_time_s": 1.0},
                             "regression": {"final_loss": 0.1, "train_time_s": 1.0}}, "layerwise_max_cr": 16}
    return row


def run_rows(crs=(2, 4), scores=None, datasets=("monuseg", "tnbc"), schemes=("network-wide", "layer-wise")):
    """Scored rows: the unpruned model and every (scheme, CR); ``scores(dataset, scheme, cr)`` -> metric overrides."""
    scores = scores or (lambda d, s, cr: {})
    rows = []
    for d in datasets:
        rows.append(seg_row(d, "unpruned", 1))
        rows += [seg_row(d, s, cr, **scores(d, s, cr)) for s in schemes for cr in crs]
    return rows


def table1_rows(nw=(1.53, 4.59, 14.0), lw_max=128):
    """Full-width rows at CR 2, 16, 128 (network-wide as given; layer-wise = CR up to ``lw_max``)."""
    rows = []
    for scheme, values in (("network-wide", nw), ("layer-wise", (2.0, 16.0, 128.0))):
        for cr, v in zip((2, 16, 128), values):
            reachable = scheme == "network-wide" or cr <= lw_max
            rows.append({"kind": "speedup_table", "method": TABLE1_METHOD, "dataset": "none",
                         "setting": {"scheme": scheme, "cr": cr}, "params": 24_400_000, "reachable": reachable,
                         "metrics": {"theoretical_speedup": v if reachable else None}, "layerwise_max_cr": lw_max})
    return rows


def cost_rows(measured=(1.0, 0.95), theory=(1.5, 2.0)):
    return [{"kind": "speed", "method": COST_METHOD, "dataset": "none", "model": "unet_resnet34 x0.125 semantic branch",
             "setting": {"scheme": s, "cr": 2}, "input_size": 64, "repeats": 5, "device": "cpu:x86_64 x2",
             "metrics": {"measured_speedup": m, "theoretical_speedup": t, "size_ratio": 1.1}}
            for s, m, t in zip(("network-wide", "layer-wise"), measured, theory)]


def find(claims, *words) -> Claim:
    hits = [c for c in claims if all(w in c.claim for w in words)]
    assert len(hits) == 1, (words, [c.claim for c in claims])
    return hits[0]


# --------------------------------------------------------------------------- shape

def test_every_claim_is_a_claim_record_with_a_stated_rule_and_scale():
    claims = monuseg_pruning.paper_claims(run_rows() + table1_rows() + cost_rows())
    assert len(claims) == 2 + 4 + 2 + 1 + 3
    for c in claims:
        assert isinstance(c, Claim) and c.verdict in VERDICTS and c.rule and c.scale
    scored = find(claims, "MoNuSeg test", "small CRs")
    assert "x0.125" in scored.scale and "training loss semantic 0.500" in scored.scale
    assert "trained longer" in scored.note


def test_claim_rows_of_an_earlier_call_are_ignored():
    rows = run_rows() + table1_rows() + cost_rows()
    first = monuseg_pruning.paper_claims(rows)
    again = monuseg_pruning.paper_claims(rows + [{"kind": "claim", **c.as_row()} for c in first])
    assert [c.verdict for c in again] == [c.verdict for c in first]


# --------------------------------------------------------------------------- 1. layer-wise small, network-wide large

def _lw_minus_nw(small: dict, large: dict):
    """Scores where layer-wise minus network-wide is ``small`` at CR 2 and ``large`` at CR 4 (per key)."""
    def scores(d, s, cr):
        if s != "layer-wise":
            return {}
        delta = small if cr == 2 else large
        return {k: BASE[k] + v for k, v in delta.items()}
    return scores


@pytest.mark.parametrize("small, large, verdict", [
    ({"aji": 0.02, "pq": 0.01}, {"aji": -0.03, "pq": -0.02}, HOLDS),
    ({"aji": -0.02, "pq": -0.01}, {"aji": -0.03, "pq": -0.02}, FAILS),
    ({"aji": 0.02, "pq": -0.01}, {"aji": -0.03, "pq": -0.02}, NOT_RESOLVED),   # only AJI shows it
])
def test_layerwise_better_at_small_cr_is_decided_by_the_signs(small, large, verdict):
    claims = monuseg_pruning.paper_claims(run_rows(scores=_lw_minus_nw(small, large)))
    c = find(claims, "MoNuSeg test", "small CRs")
    assert c.verdict == verdict and "sign" in c.rule
    assert f"AJI {small['aji']:+.3f}" in c.ours


def test_layerwise_better_at_small_cr_needs_two_shared_crs():
    rows = [r for r in run_rows(crs=(2,)) if r["setting"]["scheme"] != "layer-wise"]
    rows += [seg_row(d, "layer-wise", 4) for d in ("monuseg", "tnbc")]   # no CR in common
    c = find(monuseg_pruning.paper_claims(rows), "TNBC", "small CRs")
    assert c.verdict == NOT_TESTABLE and "none" in c.ours
    one_shared = run_rows(crs=(2,))
    assert find(monuseg_pruning.paper_claims(one_shared), "TNBC", "small CRs").verdict == NOT_TESTABLE


# --------------------------------------------------------------------------- 2. Dice robust

def test_dice_robust_holds_only_when_the_papers_cr_is_reached_within_the_margin():
    crs = (2, 4, 8, 16)
    small_drop = lambda d, s, cr: {"dice": BASE["dice"] - 0.01}  # noqa: E731
    c = find(monuseg_pruning.paper_claims(run_rows(crs=crs, scores=small_drop)), "MoNuSeg", "layer-wise", "Dice")
    assert c.verdict == HOLDS and "CR 16 +0.010" in c.ours
    # network-wide: the paper's CR 128 not reached -> not testable, whatever the drops so far
    c = find(monuseg_pruning.paper_claims(run_rows(crs=crs, scores=small_drop)), "MoNuSeg", "network-wide", "Dice")
    assert c.verdict == NOT_TESTABLE
    big_drop = lambda d, s, cr: {"dice": BASE["dice"] - (0.05 if cr == 4 else 0.0)}  # noqa: E731
    for scheme in ("layer-wise", "network-wide"):
        c = find(monuseg_pruning.paper_claims(run_rows(crs=crs, scores=big_drop)), "MoNuSeg", scheme, "Dice")
        assert c.verdict == FAILS


def test_dice_drop_beyond_the_papers_cr_does_not_count():
    crs = (2, 4, 8, 16, 32)
    collapse_after_16 = lambda d, s, cr: {"dice": 0.1 if cr > 16 else BASE["dice"]}  # noqa: E731
    c = find(monuseg_pruning.paper_claims(run_rows(crs=crs, scores=collapse_after_16)), "TNBC", "layer-wise", "Dice")
    assert c.verdict == HOLDS


# --------------------------------------------------------------------------- 3. 80% pruned, < 0.02 AJI/PQ lost

@pytest.mark.parametrize("crs, aji_drop, verdict", [
    ((2, 4, 8), 0.01, HOLDS),
    ((2, 4, 8), 0.10, FAILS),
    ((2, 4), 0.01, NOT_TESTABLE),     # no scheme reached CR 8 (87.5% pruned)
])
def test_eighty_percent_pruned_with_small_loss(crs, aji_drop, verdict):
    scores = lambda d, s, cr: {"aji": BASE["aji"] - (aji_drop if cr >= 8 else 0.0)}  # noqa: E731
    c = find(monuseg_pruning.paper_claims(run_rows(crs=crs, scores=scores)), "MoNuSeg", "80%")
    assert c.verdict == verdict and "CR >= 8" in c.rule


# --------------------------------------------------------------------------- 4. TNBC shift

def _shift(lw: float, nw: float, lw_alive: bool = True):
    def scores(d, s, cr):
        if s == "layer-wise" and not lw_alive:
            return {"aji": 0.01}
        if d == "tnbc":
            return {"aji": BASE["aji"] + (lw if s == "layer-wise" else nw)}
        return {}
    return scores


@pytest.mark.parametrize("lw, nw, alive, verdict", [
    (-0.10, -0.02, True, HOLDS),
    (-0.02, -0.10, True, FAILS),
    (-0.10, -0.02, False, NOT_TESTABLE),   # a collapsed layer-wise model has no CR to compare
])
def test_layerwise_less_robust_to_the_shift_compares_the_mean_shifts(lw, nw, alive, verdict):
    c = find(monuseg_pruning.paper_claims(run_rows(scores=_shift(lw, nw, alive))), "less robust")
    assert c.verdict == verdict and "sign comparison" in c.rule


# --------------------------------------------------------------------------- 5.-7. cost

def test_table1_speedups_compared_within_ten_percent():
    assert find(monuseg_pruning.paper_claims(table1_rows()), "theoretical speed-up").verdict == HOLDS
    off = table1_rows(nw=(1.53, 4.59, 11.0))      # 11.0 vs the paper's 15.01: 27% short
    c = find(monuseg_pruning.paper_claims(off), "theoretical speed-up")
    assert c.verdict == FAILS and "11.00 vs 15.01" in c.ours
    assert find(monuseg_pruning.paper_claims(run_rows()), "theoretical speed-up").verdict == NOT_TESTABLE


def test_layerwise_max_cr_is_an_exact_count():
    assert find(monuseg_pruning.paper_claims(table1_rows()), "beyond CR 2^7").verdict == HOLDS
    assert find(monuseg_pruning.paper_claims(table1_rows(lw_max=64)), "beyond CR 2^7").verdict == FAILS
    c = find(monuseg_pruning.paper_claims(run_rows()), "beyond CR 2^7")
    assert c.verdict == NOT_TESTABLE and "x0.125 (this run): CR 16" in c.ours


def test_cpu_speed_below_theory():
    assert find(monuseg_pruning.paper_claims(cost_rows()), "skips zero weights").verdict == HOLDS
    fast = cost_rows(measured=(1.6, 0.95))        # network-wide beats its theoretical 1.5
    assert find(monuseg_pruning.paper_claims(fast), "skips zero weights").verdict == FAILS
    assert find(monuseg_pruning.paper_claims(run_rows()), "skips zero weights").verdict == NOT_TESTABLE
