"""Values the ResRep notebook recorded on the smoke profile (one run per session, shared)."""

from __future__ import annotations

import pytest

from histolean.study.claims import HOLDS, NOT_TESTABLE

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


BENCHMARK = "resrep"


@pytest.fixture(scope="module")
def variant_rows(notebook_rows):
    """The recorded rows without the closing claims (rows of kind "claim")."""
    return [r for r in notebook_rows if r["kind"] != "claim"]


def conversions(rows):
    return [r for r in rows if r["setting"]["conversion"] != "none"]


def test_converted_flops_equal_the_prediction_and_the_mask_sits_below_the_original(variant_rows):
    converted = conversions(variant_rows)
    assert {r["setting"]["conversion"] for r in converted} == {"collapsed", "mask", "epsilon"}
    for r in converted:
        assert r["flops_counted"] == r["flops_predicted"] <= r["flops_original"], r["setting"]
        assert r["gflops"] == pytest.approx(r["flops_counted"] / 1e9)
        assert r["flop_reduction"] == pytest.approx(r["flops_original"] / r["flops_counted"])  # original / pruned
    for r in (r for r in converted if r["setting"]["conversion"] == "mask"):
        assert r["flops_counted"] < r["flops_original"]
        # progressive masks reach the FLOPs target (a fraction of the original) in the smoke run (the test of
        # the schedule's length)
        assert r["flop_reduction"] >= 1 / (r["setting"]["flops_target"] + 0.01)


def test_every_row_says_scope_granularity_and_conversion(variant_rows):
    for r in variant_rows:
        assert r["setting"]["scope"] in ("any", "bottleneck")
        assert r["setting"]["granularity"] >= 1
        assert set(r["scale"]) >= {"input_size", "epochs", "n_train", "runs"}


def test_masks_grow_by_at_most_the_granularity(variant_rows):
    for r in variant_rows:
        counts = [0] + [u["masked"] for u in r["mask_updates"]]
        assert counts[-1] > 0
        assert max(b - a for a, b in zip(counts, counts[1:])) <= r["setting"]["granularity"]


def test_conversion_reports_are_honest(variant_rows):
    for r in conversions(variant_rows):
        rep = r["conversion_report"]
        assert rep["mode"] == r["setting"]["conversion"]
        assert rep["exact"] == (rep["max_output_diff"] <= rep["tolerance"] * max(1.0, rep["output_scale"]))
        if rep["mode"] == "collapsed":  # only collapsed rows go: exact by construction
            assert rep["exact"] and rep["max_removed_norm"] < rep["threshold"]
        if rep["mode"] == "epsilon":
            assert rep["max_removed_norm"] < r["setting"]["epsilon"]


def test_the_closing_claims_are_recorded(notebook_rows):
    claims = [c for c in notebook_rows if c["kind"] == "claim"]
    # cost known from the mask, then per network (smoke: tiny): target reached, official conversion lossless,
    # and the paper's epsilon 0.90, not comparable on the tiny CNN at 32 px
    assert [c["verdict"] for c in claims] == [HOLDS, HOLDS, HOLDS, NOT_TESTABLE]
    assert all(c["rule"] and c["scale"] != "-" for c in claims)
