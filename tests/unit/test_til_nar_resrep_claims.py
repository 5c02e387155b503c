"""til_nar_resrep.paper_claims on constructed rows: every verdict can come out either way."""

from __future__ import annotations

import pytest

from histolean.experiments.til_nar_resrep import claims as til_claims
from histolean.experiments.til_nar_resrep import paper_claims
from histolean.study import claims
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE

SCALE = {"profile": "smoke", "base_input": 24, "epochs": 1, "runs": 1, "n_train": 96, "n_test": 200}


def variant(model, method, setting=None, *, gflops, diff=(0.0, -0.01, 0.01), auc=0.80, ci=(0.75, 0.85),
            same_auc=None, paper_gflops=None):
    d, lo, hi = diff
    return {"kind": "variant", "dataset": "crc_windows", "data_kind": "real", "model": model, "method": method,
            "setting": setting or {}, "gflops": gflops, "flop_reduction": 4.0 / gflops, "speedup": 1.0,
            "gflops_paper_scale": paper_gflops, "scale": SCALE,
            "metrics": {"auc": auc, "auc_ci_lo": ci[0], "auc_ci_hi": ci[1], "auc_diff": d, "auc_diff_ci_lo": lo,
                        "auc_diff_ci_hi": hi, "same_auc": same_auc or ("reference" if method == "original" else
                                                                     _same_auc(lo, hi)),
                        "equivalence_margin": 0.02, "n_test": 200}}


def _same_auc(lo, hi, margin=0.02):
    """paired_auc_difference's own labels, so that constructed rows are consistent."""
    if -margin <= lo and hi <= margin:
        return "supported"
    return "lower" if hi < 0 else "higher" if lo > 0 else "not resolved"


def baseline(auc, ci):
    return {"kind": "baseline", "dataset": "crc_windows", "data_kind": "real", "model": "hist_gbt",
            "method": "baseline", "setting": {}, "scale": SCALE,
            "metrics": {"auc": auc, "auc_ci_lo": ci[0], "auc_ci_hi": ci[1]}}


def r50(nar_diff=(0.0, -0.01, 0.01), resrep_diff=(0.0, -0.01, 0.01), costs=(1.0, 2.0, 3.0)):
    nar_g, ir_g, resrep_g = costs
    return [variant("resnet50v2", "original", gflops=4.0, paper_gflops=9.7),
            variant("resnet50v2", "nar", {"phi": 2}, gflops=nar_g, diff=nar_diff, paper_gflops=3.0),
            variant("resnet50v2", "ir", {"k": 3}, gflops=ir_g),
            variant("resnet50v2", "resrep", {"epsilon": 0.9}, gflops=resrep_g, diff=resrep_diff)]


def by_claim(found, text):
    [c] = [c for c in found if text in c.claim]
    return c


@pytest.mark.parametrize("diff, verdict", [
    ((0.005, -0.01, 0.015), HOLDS),            # inside the margin: the same AUC
    ((0.05, 0.03, 0.07), HOLDS),               # significantly higher: no AUC loss
    ((-0.06, -0.09, -0.03), FAILS),            # significantly lower
    ((-0.01, -0.05, 0.03), NOT_RESOLVED),      # the test set cannot tell
])
def test_same_auc_claims_follow_the_paired_interval(diff, verdict):
    found = paper_claims(r50(nar_diff=diff))
    c = by_claim(found, "NAR phi=2 makes ResNet50V2")
    assert c.verdict == verdict and c.interval == (diff[1], diff[2])
    assert "±0.02" in c.rule and c.paper_value.startswith("3.26x")
    assert "3.23x fewer GFLOPs at the paper's 240 px base" in c.note  # 9.7 / 3.0, our count at 240 px
    assert by_claim(found, "ResRep eps=0.90").verdict == HOLDS  # the other claim is decided on its own row


def test_the_claim_verdict_matches_the_rows_same_auc_label():
    for diff in ((0.0, -0.01, 0.01), (0.05, 0.01, 0.09), (-0.05, -0.09, -0.01), (0.0, -0.05, 0.05)):
        row = r50(nar_diff=diff)[1]
        expected = {"supported": HOLDS, "higher": HOLDS, "lower": FAILS, "not resolved": NOT_RESOLVED}
        assert til_claims.no_auc_loss(diff[1], diff[2], 0.02) == expected[row["metrics"]["same_auc"]]


def test_a_variant_no_cheaper_than_its_original_does_not_decide_the_claim():
    rows = r50(costs=(1.0, 2.0, 4.0))  # ResRep removed nothing
    c = by_claim(paper_claims(rows), "ResRep eps=0.90")
    assert c.verdict == NOT_RESOLVED and "no cheaper" in c.note
    assert by_claim(paper_claims(r50()), "ResRep eps=0.90").verdict == HOLDS


def test_a_claim_whose_variant_was_not_run_is_not_testable_and_an_undefined_ci_not_resolved():
    found = paper_claims(r50())
    inception = by_claim(found, "Inception V4")
    assert inception.verdict == NOT_TESTABLE and inception.ours == "not run at this scale"
    rows = r50()
    rows[1]["metrics"].update(auc_diff_ci_lo=None, auc_diff_ci_hi=None)  # NaN in the results file
    c = by_claim(paper_claims(rows), "NAR phi=2")
    assert c.verdict == NOT_RESOLVED and c.interval is None and "undefined" in c.note


@pytest.mark.parametrize("costs, diffs, verdict", [
    ((1.0, 2.0, 3.0), {}, HOLDS),
    ((2.5, 2.0, 3.0), {}, FAILS),                                         # NAR dearer than IR
    ((1.0, 2.0, 3.0), {"nar": (-0.1, -0.15, -0.05)}, FAILS),              # no NAR variant as good: dearer
    ((1.0, 2.0, 3.0), {"ir": (-0.1, -0.15, -0.05), "resrep": (-0.1, -0.15, -0.05)}, NOT_RESOLVED),
])
def test_the_methods_order_at_the_originals_auc(costs, diffs, verdict):
    rows = r50(costs=costs)
    for r in rows:
        if r["method"] in diffs:
            d, lo, hi = diffs[r["method"]]
            r["metrics"].update(auc_diff=d, auc_diff_ci_lo=lo, auc_diff_ci_hi=hi, same_auc=_same_auc(lo, hi))
    c = by_claim(paper_claims(rows), "resnet50v2: at the original's AUC")
    assert c.verdict == verdict, c
    assert "NAR < IR < ResRep" in c.rule


def test_the_order_needs_every_method_run_and_inception_has_no_resrep_in_the_paper():
    rows = [r for r in r50() if r["method"] != "resrep"]
    assert by_claim(paper_claims(rows), "resnet50v2: at").verdict == NOT_TESTABLE
    inception = [variant("inception_v4", "original", gflops=8.0), variant("inception_v4", "nar", {"phi": 1}, gflops=4.0),
                 variant("inception_v4", "ir", {"k": 1}, gflops=6.0)]
    c = by_claim(paper_claims(inception), "inception_v4: at")
    assert c.verdict == HOLDS and "ResRep" not in c.claim and "no ResRep" in c.paper_value


@pytest.mark.parametrize("cnn_ci, verdict", [((0.85, 0.95), HOLDS), ((0.40, 0.50), FAILS), ((0.65, 0.80), NOT_RESOLVED)])
def test_colour_context_is_decided_on_the_two_intervals(cnn_ci, verdict):
    rows = r50()
    rows[0]["metrics"].update(auc=sum(cnn_ci) / 2, auc_ci_lo=cnn_ci[0], auc_ci_hi=cnn_ci[1])
    rows += [baseline(0.70, (0.60, 0.78)), {**baseline(0.55, (0.45, 0.65)), "model": "logistic_regression"}]
    c = by_claim(paper_claims(rows), "colour alone")
    assert c.verdict == verdict and "hist_gbt" in c.ours  # the best baseline


def test_claims_are_valid_records_and_ignore_claim_and_grid_rows():
    rows = r50() + [{"kind": "grid", "method": "nar_grid", "model": "resnet50v2", "setting": {}},
                    {"kind": "claim", "claim": "an earlier run's", "verdict": HOLDS}]
    found = paper_claims(rows)
    assert [c.verdict for c in found] == [c.verdict for c in paper_claims(r50())]
    text = claims.markdown(found)
    assert text.count("\n| Meirelles") == len(found) and "smoke profile" in text
    assert paper_claims([])[0].verdict == NOT_TESTABLE
