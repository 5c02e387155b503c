"""til_nar_resrep.paper_claims on constructed rows: every verdict can come out either way."""

from __future__ import annotations

import pytest

from histolean.experiments.til_nar_resrep import claims as til_claims
from histolean.experiments.til_nar_resrep import paper_claims
from histolean.study import claims
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE

SCALE = {"profile": "smoke", "base_input": 24, "epochs": 1, "runs": 1, "n_train": 96, "n_test": 200,
         "n_test_images": 12}
BEATS_COLOUR = {"baseline": "hist_gbt", "baseline_auc": 0.70, "diff": 0.10, "lo": 0.04, "hi": 0.16, "verdict": "higher"}


def variant(model, method, setting=None, *, gflops, diff=(0.0, -0.01, 0.01), auc=0.80, ci=(0.75, 0.85),
            same_auc=None, paper_gflops=None, matched=(), vs_baseline=BEATS_COLOUR):
    d, lo, hi = diff
    m = {"auc": auc, "auc_ci_lo": ci[0], "auc_ci_hi": ci[1], "auc_diff": d, "auc_diff_ci_lo": lo,
         "auc_diff_ci_hi": hi, "same_auc": same_auc or ("reference" if method == "original" else _same_auc(lo, hi)),
         "equivalence_margin": 0.02, "n_test": 200, "ci_unit": "source image", "n_images": 12, "n_windows": 200}
    if method == "original" and vs_baseline:
        m["vs_baseline"] = dict(vs_baseline)
    row = {"kind": "variant", "dataset": "crc_windows", "data_kind": "real", "model": model, "method": method,
           "setting": setting or {}, "gflops": gflops, "flop_reduction": 4.0 / gflops, "speedup": 1.0,
           "gflops_paper_scale": paper_gflops, "scale": SCALE, "metrics": m, "one_class": False,
           "variant_id": f"{model}__{method}{''.join(str(v) for v in (setting or {}).values())}"}
    if method != "original":
        row["matched_cost"] = [{"method": o, "variant_id": f"{model}__{o}", "gflops": gflops, "cost_ratio": 1.0,
                                "diff": (a + b) / 2, "lo": a, "hi": b, "verdict": "?"} for o, (a, b) in matched]
    if method == "resrep":
        row.update(conversion_exact=True, conversion_tolerance=1e-4,
                   conversion={"max_output_diff": 1e-6, "max_removed_norm": 1e-6})
    return row


def _same_auc(lo, hi, margin=0.02):
    """paired_auc_difference's own labels, so that constructed rows are consistent."""
    if -margin <= lo and hi <= margin:
        return "supported"
    return "lower" if hi < 0 else "higher" if lo > 0 else "not resolved"


def r50(nar_diff=(0.0, -0.01, 0.01), resrep_diff=(0.0, -0.01, 0.01), costs=(1.0, 2.0, 3.0), nar_ir=(0.02, 0.08),
        ir_resrep=(0.02, 0.08), vs_baseline=BEATS_COLOUR):
    """ResNet50V2 rows; ``nar_ir``: the paired interval of AUC(NAR) - AUC(IR) at matched cost."""
    nar_g, ir_g, resrep_g = costs
    return [variant("resnet50v2", "original", gflops=4.0, paper_gflops=9.7, vs_baseline=vs_baseline),
            variant("resnet50v2", "nar", {"phi": 2}, gflops=nar_g, diff=nar_diff, paper_gflops=3.0,
                    matched=[("ir", nar_ir)] if nar_ir else ()),
            variant("resnet50v2", "ir", {"k": 3}, gflops=ir_g,
                    matched=([("nar", (-nar_ir[1], -nar_ir[0]))] if nar_ir else [])
                    + ([("resrep", ir_resrep)] if ir_resrep else [])),
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
    assert "±δ = ±0.02" in c.rule and "ours" in c.rule and "source images" in c.rule
    assert c.paper_value.startswith("3.26x") and "12 test images" in c.ours
    assert "3.23x fewer GFLOPs at the paper's 240 px base" in c.note  # 9.7 / 3.0, our count at 240 px
    assert by_claim(found, "ResRep eps=0.90").verdict == HOLDS  # the other claim is decided on its own row


def test_not_resolved_says_how_many_test_images_would_resolve_it_and_never_counts_as_same():
    c = by_claim(paper_claims(r50(nar_diff=(0.0, -0.03, 0.03))), "NAR phi=2 makes ResNet50V2")
    assert c.verdict == NOT_RESOLVED
    # half-width 0.03 must fall below the margin 0.02: (0.03 / 0.02)^2 * 12 = 27 images
    assert "roughly 27 test images would resolve it" in c.note and "we have 12" in c.note
    # the order claim: a not-resolved matched-cost difference is not "NAR as good as IR at lower cost"
    order = by_claim(paper_claims(r50(nar_ir=(-0.03, 0.05))), "NAR is cheaper than IR")
    assert order.verdict == NOT_RESOLVED and "test images would resolve it" in order.note


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


def test_a_lossy_resrep_conversion_is_not_resrep():
    rows = r50()
    rows[3].update(conversion_exact=False, conversion={"max_output_diff": 0.3, "max_removed_norm": 0.75})
    found = paper_claims(rows)
    c = by_claim(found, "ResRep eps=0.90")
    assert c.verdict == NOT_TESTABLE and "lossy" in c.note and "0.75" in c.note
    assert by_claim(found, "IR is cheaper than ResRep").verdict == NOT_TESTABLE
    assert by_claim(found, "NAR is cheaper than IR").verdict == HOLDS  # decided on its own rows


@pytest.mark.parametrize("gate, verdict", [((0.04, 0.16), HOLDS), ((-0.05, 0.08), NOT_RESOLVED),
                                           ((-0.2, -0.05), FAILS)])
def test_an_original_that_does_not_beat_colour_makes_its_claims_not_testable(gate, verdict):
    vs = {**BEATS_COLOUR, "diff": sum(gate) / 2, "lo": gate[0], "hi": gate[1]}
    found = paper_claims(r50(vs_baseline=vs))
    control = by_claim(found, "original beats colour alone")
    assert control.verdict == verdict and control.interval == gate and "hist_gbt" in control.ours
    assert "12 test images" in control.ours
    gated = [by_claim(found, t) for t in ("NAR phi=2 makes", "ResRep eps=0.90", "NAR is cheaper than IR",
                                          "IR is cheaper than ResRep")]
    if verdict == HOLDS:
        assert all(c.verdict == HOLDS for c in gated)
    else:
        for c in gated:  # the numbers of the gate are in each claim
            assert c.verdict == NOT_TESTABLE and "does not beat the colour baseline" in c.note
            assert f"[{gate[0]:+.3f}, {gate[1]:+.3f}]" in c.note


def test_without_a_baseline_there_is_no_control_and_the_claims_stay_untested():
    found = paper_claims(r50(vs_baseline=None))
    assert by_claim(found, "original beats colour alone").verdict == NOT_TESTABLE
    c = by_claim(found, "NAR phi=2 makes")
    assert c.verdict == NOT_TESTABLE and "no colour baseline" in c.note


def test_a_claim_whose_variant_was_not_run_is_not_testable_and_an_undefined_ci_not_resolved():
    found = paper_claims(r50())
    inception = by_claim(found, "Inception V4")
    assert inception.verdict == NOT_TESTABLE and inception.ours == "not run at this scale"
    rows = r50()
    rows[1]["metrics"].update(auc_diff_ci_lo=None, auc_diff_ci_hi=None)  # NaN in the results file
    c = by_claim(paper_claims(rows), "NAR phi=2")
    assert c.verdict == NOT_RESOLVED and c.interval is None and "undefined" in c.note


@pytest.mark.parametrize("nar_ir, verdict", [
    ((0.02, 0.08), HOLDS),                 # NAR's AUC higher at matched cost
    ((-0.08, -0.02), FAILS),               # lower
    ((-0.01, 0.015), FAILS),               # the same within ±δ: neither is cheaper
    ((-0.03, 0.05), NOT_RESOLVED),         # cannot tell
    (None, NOT_TESTABLE),                  # no levels of matched cost
])
def test_the_methods_order_is_decided_at_matched_cost(nar_ir, verdict):
    c = by_claim(paper_claims(r50(nar_ir=nar_ir)), "resnet50v2: at the same AUC, NAR is cheaper than IR")
    assert c.verdict == verdict, c
    assert "matched cost" in c.rule and "±δ = ±0.02" in c.rule
    if nar_ir:
        assert f"[{nar_ir[0]:+.3f}, {nar_ir[1]:+.3f}]" in c.ours


def test_the_order_does_not_depend_on_the_cheapest_levels_picked():
    # NAR's variant is dearer than IR's, but at matched cost its AUC is higher: the order holds
    c = by_claim(paper_claims(r50(costs=(2.5, 2.0, 3.0))), "NAR is cheaper than IR")
    assert c.verdict == HOLDS


def test_the_order_needs_every_method_run_and_inception_has_no_resrep_in_the_paper():
    rows = [r for r in r50() if r["method"] != "resrep"]
    found = paper_claims(rows)
    c = by_claim(found, "IR is cheaper than ResRep")
    assert c.verdict == NOT_TESTABLE and "not run here: ResRep" in c.note
    assert by_claim(found, "NAR is cheaper than IR").verdict == HOLDS
    inception = [variant("inception_v4", "original", gflops=8.0),
                 variant("inception_v4", "nar", {"phi": 1}, gflops=4.0, matched=[("ir", (0.01, 0.05))]),
                 variant("inception_v4", "ir", {"k": 1}, gflops=6.0)]
    found = paper_claims(inception)
    assert [c.claim for c in found if "inception_v4: at" in c.claim] == \
        ["inception_v4: at the same AUC, NAR is cheaper than IR"]
    c = by_claim(found, "inception_v4: at")
    assert c.verdict == HOLDS and "no ResRep" in c.paper_value


def test_claims_are_valid_records_and_ignore_claim_and_grid_rows():
    rows = r50() + [{"kind": "grid", "method": "nar_grid", "model": "resnet50v2", "setting": {}},
                    {"kind": "claim", "claim": "an earlier run's", "verdict": HOLDS},
                    {"kind": "baseline", "method": "baseline", "model": "hist_gbt", "setting": {}}]
    found = paper_claims(rows)
    assert [c.verdict for c in found] == [c.verdict for c in paper_claims(r50())]
    text = claims.markdown(found)
    assert text.count("\n| Meirelles") + text.count("\n| control") == len(found) and "smoke profile" in text
    assert "12 test images" in text
    assert paper_claims([])[0].verdict == NOT_TESTABLE
