"""monuseg_pruning.paper_claims on constructed rows: every verdict can come out either way, an interval that
allows both comes out "not resolved", and a claim the run's scale cannot decide says so."""

from __future__ import annotations

import numpy as np
import pytest

from histolean.experiments import monuseg_pruning
from histolean.experiments.monuseg_pruning import CONTROL, COST_METHOD, METHOD, TABLE1_METHOD, paired
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE, VERDICTS, Claim

SCALE = {"width": 0.125, "n_train": 2, "crop": 64, "crops_per_image": 2, "epochs": 1, "retrain_epochs": 1,
         "n_test": 12, "n_tnbc": 12, "eval_crop": 128, "encoder": "random"}
BASE = {"dice": 0.70, "aji": 0.40, "pq": 0.35, "mse": 0.01}
N = 12
SPREAD = np.linspace(-0.1, 0.1, N)            # images differ in difficulty; pairing cancels it
SIGN = np.array([1.0, -1.0] * (N // 2))       # mean-zero per-image noise of a chosen size
PAPER_NW = {2: 1.49, 4: 2.13, 8: 3.07, 16: 4.46, 32: 6.59, 64: 9.90, 128: 15.01}


def seg_row(dataset, scheme, cr, delta=None, speedup=None):
    """A scored row whose per-image scores are the dense ones plus ``delta[key]`` (a number or N numbers)."""
    delta = delta or {}
    values = {k: (v + SPREAD * (k != "mse") + np.broadcast_to(delta.get(k, 0.0), (N,))) for k, v in BASE.items()}
    per_image = {"image": [f"{dataset}_{i}" for i in range(N)]} | {k: v.tolist() for k, v in values.items()}
    pruned = scheme not in ("unpruned", CONTROL)
    row = {"kind": "variant", "method": METHOD, "dataset": dataset, "data_kind": "real",
           "model": "unet_resnet34 x0.125 (two branches)", "setting": {"scheme": scheme, "cr": cr},
           "metrics": {k: float(v.mean()) for k, v in values.items()}, "scale": SCALE, "params": 95_000,
           "per_image": per_image, "epochs_trained": 1 + int(np.log2(cr)),
           "theoretical_speedup": {b: float(speedup or (cr if pruned else 1)) for b in ("semantic", "regression")}}
    if scheme == "unpruned":
        row |= {"training": {"semantic": {"final_loss": 0.5, "train_time_s": 1.0},
                             "regression": {"final_loss": 0.1, "train_time_s": 1.0}},
                "layerwise_max_cr": 16, "layerwise_max_cr_head_dense": 64}
    return row


def run_rows(crs=(2, 4), delta=None, datasets=("monuseg", "tnbc"), schemes=("network-wide", "layer-wise"),
             speedup=None):
    """The unpruned model, the dense control at every CR, and every (scheme, CR); ``delta(dataset, scheme, cr)``
    -> per-image differences from the control, ``speedup(scheme, cr)`` -> the recorded speed-up."""
    delta = delta or (lambda d, s, cr: {})
    rows = []
    for d in datasets:
        rows.append(seg_row(d, "unpruned", 1))
        rows += [seg_row(d, CONTROL, cr) for cr in crs]
        rows += [seg_row(d, s, cr, delta(d, s, cr), speedup(s, cr) if speedup else None) for s in schemes for cr in crs]
    return rows


def table1_rows(nw=(1.53, 4.59, 14.0), lw_max=128):
    """Full-width formula-check rows at CR 2, 16, 128 (network-wide as given; layer-wise = CR up to ``lw_max``)."""
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


def claims_of(**kw):
    return monuseg_pruning.paper_claims(run_rows(**kw))


# --------------------------------------------------------------------------- shape

def test_every_claim_is_a_claim_record_with_a_stated_rule_and_scale():
    claims = monuseg_pruning.paper_claims(run_rows() + table1_rows() + cost_rows())
    assert len(claims) == 4 + 4 + 2 + 1 + 3
    for c in claims:
        assert isinstance(c, Claim) and c.verdict in VERDICTS and c.rule and c.scale
    scored = find(claims, "MoNuSeg test", "small CRs")
    assert "x0.125" in scored.scale and "training loss semantic 0.500" in scored.scale
    assert "dense control" in scored.note and "12 MoNuSeg / 12 TNBC" in scored.scale


def test_claim_rows_of_an_earlier_call_are_ignored():
    rows = run_rows() + table1_rows() + cost_rows()
    first = monuseg_pruning.paper_claims(rows)
    again = monuseg_pruning.paper_claims(rows + [{"kind": "claim", **c.as_row()} for c in first])
    assert [c.verdict for c in again] == [c.verdict for c in first]


def test_paired_difference_needs_the_same_images():
    a, b = seg_row("monuseg", "layer-wise", 2), seg_row("monuseg", CONTROL, 2)
    assert paired.difference(a, b, "aji")["mean"] == pytest.approx(0.0)
    b["per_image"]["image"][0] = "another"
    with pytest.raises(ValueError, match="different images"):
        paired.difference(a, b, "aji")


# --------------------------------------------------------------------------- 1. layer-wise small, network-wide large

def _lw(small, large=0.0, noise=0.002, at=(2,)):
    """Layer-wise per-image AJI and PQ ``small`` above network-wide at the CRs ``at``, ``large`` elsewhere."""
    def delta(d, s, cr):
        if s != "layer-wise":
            return {}
        v = (small if cr in at else large) + noise * SIGN
        return {"aji": v, "pq": v}
    return delta


@pytest.mark.parametrize("small, noise, verdict", [
    (0.03, 0.002, HOLDS),
    (-0.03, 0.002, FAILS),
    (0.01, 0.05, NOT_RESOLVED),      # the interval over images allows both
])
def test_layerwise_better_at_small_cr_is_decided_by_the_paired_interval(small, noise, verdict):
    c = find(claims_of(delta=_lw(small, noise=noise)), "MoNuSeg test", "small CRs")
    assert c.verdict == verdict and "paired" in c.rule and "CR 2" in c.ours
    assert c.interval[0] < small < c.interval[1]


def test_networkwide_better_at_large_crs_needs_a_cr_above_32():
    c = find(claims_of(crs=(2, 4, 8, 16, 32), delta=_lw(0.0, large=-0.2)), "TNBC", "large CRs")
    assert c.verdict == NOT_TESTABLE and "no CR > 32" in c.ours and "narrowing artefact" in c.note
    c = find(claims_of(crs=(2, 64), delta=_lw(0.0, large=-0.2)), "TNBC", "large CRs")
    assert c.verdict == HOLDS and "CR 64" in c.ours
    c = find(claims_of(crs=(2, 64), delta=_lw(0.0, large=0.1)), "TNBC", "large CRs")
    assert c.verdict == FAILS


# --------------------------------------------------------------------------- 2. Dice robust (against the control)

def _dice(drop, noise=0.001, at=None):
    def delta(d, s, cr):
        return {"dice": -(drop if at is None or cr == at else 0.0) + noise * SIGN}
    return delta


def test_dice_robust_holds_only_when_the_papers_cr_is_reached_within_two_percent():
    crs = (2, 4, 8, 16)
    c = find(claims_of(crs=crs, delta=_dice(0.005)), "MoNuSeg", "layer-wise", "Dice")
    assert c.verdict == HOLDS and "CR 16 DICE -0.005" in c.ours and "relative reading" in c.rule
    # network-wide: the paper's CR 128 not reached -> not testable, whatever the drops so far
    assert find(claims_of(crs=crs, delta=_dice(0.005)), "MoNuSeg", "network-wide", "Dice").verdict == NOT_TESTABLE
    for scheme in ("layer-wise", "network-wide"):      # a clear drop at CR 4 fails, reached or not
        assert find(claims_of(crs=crs, delta=_dice(0.05, at=4)), "MoNuSeg", scheme, "Dice").verdict == FAILS


def test_dice_robust_not_resolved_when_the_interval_straddles_the_margin():
    c = find(claims_of(crs=(2, 4, 8, 16), delta=_dice(0.012, noise=0.03)), "TNBC", "layer-wise", "Dice")
    assert c.verdict == NOT_RESOLVED and c.interval[0] < -0.014 < c.interval[1]


def test_relative_and_absolute_readings_of_two_percent_are_both_reported():
    # a 0.017 drop of Dice ~0.70: over 2% of it (0.014), under an absolute 0.02
    c = find(claims_of(crs=(2, 4, 8, 16), delta=_dice(0.017)), "MoNuSeg", "layer-wise", "Dice")
    assert c.verdict == FAILS and "absolute reading (0.02): holds" in c.ours and "= 0.014" in c.ours


def test_dice_drop_beyond_the_papers_cr_does_not_count():
    c = find(claims_of(crs=(2, 4, 8, 16, 32), delta=_dice(0.3, at=32)), "TNBC", "layer-wise", "Dice")
    assert c.verdict == HOLDS


# --------------------------------------------------------------------------- 3. 80% pruned, < 2% AJI/PQ lost

@pytest.mark.parametrize("crs, drop, noise, verdict", [
    ((2, 4, 8), 0.002, 0.001, HOLDS),
    ((2, 4, 8), 0.10, 0.001, FAILS),
    ((2, 4, 8), 0.005, 0.05, NOT_RESOLVED),
    ((2, 4), 0.002, 0.001, NOT_TESTABLE),     # no scheme reached CR 8 (87.5% pruned)
])
def test_eighty_percent_pruned_with_small_loss(crs, drop, noise, verdict):
    delta = lambda d, s, cr: {k: -(drop if cr >= 8 else 0.0) + noise * SIGN for k in ("aji", "pq")}  # noqa: E731
    c = find(claims_of(crs=crs, delta=delta), "MoNuSeg", "80%")
    assert c.verdict == verdict and "CR 8" in c.rule


def test_eighty_percent_holds_if_one_scheme_holds():
    def delta(d, s, cr):
        return {k: -(0.10 if s == "network-wide" else 0.0) + 0.001 * SIGN for k in ("aji", "pq")}
    c = find(claims_of(crs=(2, 4, 8), delta=delta), "TNBC", "80%")
    assert c.verdict == HOLDS and "network-wide CR 8" in c.ours and "does not hold" in c.ours


# --------------------------------------------------------------------------- 4. TNBC shift

def _shift(lw_tnbc: float, lw_monuseg: float, alive: bool = True):
    def delta(d, s, cr):
        if s != "layer-wise":
            return {}
        if not alive:
            return {"aji": -0.39}
        return {"aji": (lw_tnbc if d == "tnbc" else lw_monuseg) + 0.002 * SIGN}
    return delta


@pytest.mark.parametrize("lw_tnbc, lw_monuseg, alive, verdict", [
    (-0.10, -0.02, True, HOLDS),
    (-0.02, -0.10, True, FAILS),
    (-0.03, -0.03, True, NOT_RESOLVED),
    (-0.10, -0.02, False, NOT_TESTABLE),   # a collapsed layer-wise model has no CR to compare
])
def test_layerwise_less_robust_to_the_shift_compares_paired_differences(lw_tnbc, lw_monuseg, alive, verdict):
    c = find(claims_of(delta=_shift(lw_tnbc, lw_monuseg, alive)), "less robust")
    assert c.verdict == verdict and "resampled on its own" in c.rule


# --------------------------------------------------------------------------- 5.-7. cost

def test_table1_is_decided_by_the_trained_speedups_the_formula_check_only_shown():
    trained = lambda s, cr: PAPER_NW[cr] * 1.05 if s == "network-wide" else cr  # noqa: E731
    c = find(monuseg_pruning.paper_claims(run_rows(speedup=trained) + table1_rows(nw=(9.0, 9.0, 9.0))),
             "theoretical speed-up")
    assert c.verdict == HOLDS and "network-wide CR 4: 2.24 vs 2.13" in c.ours
    assert "formula check" in c.ours and "CR 2: 9.00 vs 1.49" in c.ours   # shown, does not decide
    off = lambda s, cr: PAPER_NW[cr] * 0.7 if s == "network-wide" else cr  # noqa: E731
    c = find(monuseg_pruning.paper_claims(run_rows(speedup=off) + table1_rows()), "theoretical speed-up")
    assert c.verdict == FAILS
    assert find(monuseg_pruning.paper_claims(table1_rows()), "theoretical speed-up").verdict == NOT_TESTABLE
    # layer-wise cells are shown, not decided (they equal the CR less the dense head's share)
    lw_low = lambda s, cr: PAPER_NW[cr] if s == "network-wide" else 0.8 * cr  # noqa: E731
    c = find(monuseg_pruning.paper_claims(run_rows(speedup=lw_low)), "theoretical speed-up")
    assert c.verdict == HOLDS and "layer-wise CR 4: 3.20 vs 3.99" in c.ours


def test_layerwise_max_cr_is_an_exact_count():
    assert find(monuseg_pruning.paper_claims(table1_rows()), "beyond CR 2^7").verdict == HOLDS
    assert find(monuseg_pruning.paper_claims(table1_rows(lw_max=64)), "beyond CR 2^7").verdict == FAILS
    c = find(monuseg_pruning.paper_claims(run_rows()), "beyond CR 2^7")
    assert c.verdict == NOT_TESTABLE and "x0.125 (this run): CR 16" in c.ours and "head kept dense" in c.ours


def test_cpu_speed_below_theory():
    c = find(monuseg_pruning.paper_claims(cost_rows()), "skips zero weights")
    assert c.verdict == HOLDS and "dense speed" in c.note
    fast = cost_rows(measured=(1.6, 0.95))        # network-wide beats its theoretical 1.5
    assert find(monuseg_pruning.paper_claims(fast), "skips zero weights").verdict == FAILS
    assert find(monuseg_pruning.paper_claims(run_rows()), "skips zero weights").verdict == NOT_TESTABLE
