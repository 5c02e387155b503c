"""Values the TIL benchmark notebook records on the smoke profile (one shared smoke notebook_run)."""

from __future__ import annotations

import pytest

from histolean.core import checkpoints
from histolean.study.claims import VERDICTS

pytestmark = [pytest.mark.notebook, pytest.mark.slow]
VARIANT_METHODS = {"original", "ir", "nar", "resrep"}


BENCHMARK = "til_nar_resrep"


def _variants(rows):
    return [r for r in rows if r["kind"] == "variant" and r["method"] in VARIANT_METHODS]


def test_every_variant_has_auc_ci_paired_comparison_and_test_size(notebook_run):
    rows, _ = notebook_run
    variants = _variants(rows)
    assert {r["method"] for r in variants} == VARIANT_METHODS
    n_test = {r["metrics"]["n_test"] for r in variants}
    assert len(n_test) == 1 and n_test.pop() > 50  # one test set for all, printed beside every AUC
    for r in variants:
        m = r["metrics"]
        assert 0 <= m["auc_ci_lo"] <= m["auc"] <= m["auc_ci_hi"] <= 1, r["variant_id"]
        assert m["auc_diff_ci_lo"] <= m["auc_diff"] <= m["auc_diff_ci_hi"]
        expected = {"reference"} if r["method"] == "original" else {"supported", "lower", "higher", "not resolved"}
        assert m["same_auc"] in expected
        assert r["scale"]["base_input"] == 24 and r["scale"]["epochs"] == 1 and r["scale"]["runs"] == 1
        # every interval resamples source images; the row says how many of them and of windows
        assert m["ci_unit"] == "source image" and m["n_windows"] == m["n_test"] and 2 <= m["n_images"] < m["n_test"]
        assert isinstance(r["one_class"], bool) and len(r["decision_thresholds"]) == 1
        if r["method"] in ("ir", "nar"):
            assert r["flop_reduction_nominal"] > 1
            assert r["nominal_fraction"] == pytest.approx(r["flop_reduction"] / r["flop_reduction_nominal"])
    original = next(r for r in variants if r["method"] == "original")
    vs = original["metrics"]["vs_baseline"]  # the control, paired with the best colour baseline
    assert vs["baseline"] in {"hist_gbt", "logistic_regression"} and vs["lo"] <= vs["diff"] <= vs["hi"]
    assert any(r.get("matched_cost") for r in variants if r["method"] == "nar")  # NAR phi=2 meets IR k=3


def test_costs_and_side_by_side_speed(notebook_run):
    rows, _ = notebook_run
    by_method = {r["method"]: r for r in _variants(rows)}
    original = by_method["original"]
    assert original["speedup"] == 1.0 and original["flop_reduction"] == 1.0
    for method in ("ir", "nar"):
        r = by_method[method]
        assert r["gflops"] < original["gflops"] and r["input_size"] < original["input_size"]
        assert r["flop_reduction"] == pytest.approx(original["gflops"] / r["gflops"])
    assert by_method["nar"]["param_layers"] < original["param_layers"]
    assert by_method["resrep"]["gflops"] <= original["gflops"]
    for r in by_method.values():
        assert r["speed_repeats"] >= 5 and r["throughput_per_s"] > 0 and r["latency_ms"] > 0
        assert r["speedup_min"] <= r["speedup"] <= r["speedup_max"]
    resrep = by_method["resrep"]  # FLOP reductions point one way in every row: original / variant
    assert resrep["predicted_flop_reduction"] >= 1 and resrep["masked_flop_reduction"] >= 1
    assert isinstance(resrep["conversion_exact"], bool) and resrep["conversion_tolerance"] == 1e-4
    assert not any("flops_ratio" in r for r in rows)


def test_checkpoints_carry_what_slide_inference_needs(notebook_run):
    rows, _ = notebook_run
    trainable = [r for r in _variants(rows) if r["method"] in ("original", "ir", "nar")]
    assert len(trainable) == 3  # a loop over nothing would pass silently
    for r in trainable:
        net, info = checkpoints.load_model(r["checkpoint"])
        assert info["input_size"] == r["input_size"] and info["patch_um"] == 50.0
        assert info["mean"] == [0.5] * 3 and info["std"] == [0.5] * 3
        assert info["classes"] == ["TIL-negative", "TIL-positive"] and info["method"] == r["method"]
        assert info["auc"] == pytest.approx(r["metrics"]["auc"])  # one notebook_run: its test AUC
        # what the slide maps read: the threshold chosen on validation, the held-out AUC and its interval
        assert 0 <= info["decision_threshold"] <= 1 and info["decision_threshold"] == r["decision_thresholds"][0]
        assert info["oof_auc"] == pytest.approx(r["metrics"]["auc"])
        assert info["oof_auc_ci"][0] <= info["oof_auc"] <= info["oof_auc_ci"][1]


def test_baselines_grid_search_and_figures(notebook_run):
    rows, out = notebook_run
    baselines = [r for r in rows if r["kind"] == "baseline"]
    assert {r["model"] for r in baselines} == {"hist_gbt", "logistic_regression"}
    assert all(0.5 < r["metrics"]["auc"] <= 1 for r in baselines)  # colour carries signal on this task
    grid = [r for r in rows if r["kind"] == "grid"]
    assert {r["method"] for r in baselines + grid} == {"baseline", "nar_grid"}
    assert any(r["paper_choice"] for r in grid) and all(abs(r["constraint"] - 2) <= 0.15 for r in grid)
    names = {p.name for p in (out / "figures").glob("til_nar_resrep__*.png")}
    assert names == {f"til_nar_resrep__{n}.png" for n in
                     ("grid_search", "auc_vs_gflops", "speedup_vs_flop_reduction", "resrep_kept_by_stage")}


def test_the_closing_cell_records_the_papers_claims(notebook_run):
    rows, _ = notebook_run
    found = [r for r in rows if r["kind"] == "claim"]
    # three "same AUC" claims, resnet50v2's order of the methods (two pairs), the colour control of its original
    assert len(found) == 6, [c["claim"] for c in found]
    assert all(c["verdict"] in VERDICTS and c["rule"] and c["scale"] for c in found)
    inception = next(c for c in found if "Inception V4" in c["claim"])
    assert inception["verdict"] == "not testable at this scale"  # not in the smoke profile
    nar_row = next(r for r in _variants(rows) if r["method"] == "nar")
    nar_claim = next(c for c in found if c["claim"].startswith("NAR phi=2 makes ResNet50V2"))
    expected = {"supported": "holds", "higher": "holds", "lower": "does not hold", "not resolved": "not resolved"}
    control = next(c for c in found if "beats colour alone" in c["claim"])
    if control["verdict"] == "holds":
        assert nar_claim["verdict"] == expected[nar_row["metrics"]["same_auc"]]
    else:  # the gate: an original that does not beat colour leaves its claims untestable, with the numbers
        assert nar_claim["verdict"] == "not testable at this scale" and control["ours"] in nar_claim["note"]
    resrep_row = next(r for r in _variants(rows) if r["method"] == "resrep")
    resrep_claim = next(c for c in found if c["claim"].startswith("ResRep eps=0.90"))
    if not resrep_row["conversion_exact"]:  # a lossy conversion is not ResRep
        assert resrep_claim["verdict"] == "not testable at this scale"
    assert nar_claim["interval"] == [nar_row["metrics"]["auc_diff_ci_lo"], nar_row["metrics"]["auc_diff_ci_hi"]]
