"""Values the ResRep notebook recorded on the smoke profile (one run per session, shared)."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


BENCHMARK = "resrep"


def conversions(notebook_rows):
    return [r for r in notebook_rows if r["setting"]["conversion"] != "none"]


def test_converted_flops_equal_the_prediction_and_the_mask_sits_below_the_original(notebook_rows):
    converted = conversions(notebook_rows)
    assert {r["setting"]["conversion"] for r in converted} == {"collapsed", "mask", "epsilon"}
    for r in converted:
        assert r["flops_counted"] == r["flops_predicted"] <= r["flops_original"], r["setting"]
        assert r["gflops"] == pytest.approx(r["flops_counted"] / 1e9)
    for r in (r for r in converted if r["setting"]["conversion"] == "mask"):
        assert r["flops_counted"] < r["flops_original"]
        # progressive masks reach the FLOPs target in the smoke run (the test of the schedule's length)
        assert r["flops_ratio"] <= r["setting"]["flops_target"] + 0.01


def test_every_row_says_scope_granularity_and_conversion(notebook_rows):
    for r in notebook_rows:
        assert r["setting"]["scope"] in ("any", "bottleneck")
        assert r["setting"]["granularity"] >= 1
        assert set(r["scale"]) >= {"input_size", "epochs", "n_train", "runs"}


def test_masks_grow_by_at_most_the_granularity(notebook_rows):
    for r in notebook_rows:
        counts = [0] + [u["masked"] for u in r["mask_updates"]]
        assert counts[-1] > 0
        assert max(b - a for a, b in zip(counts, counts[1:])) <= r["setting"]["granularity"]


def test_conversion_reports_are_honest(notebook_rows):
    for r in conversions(notebook_rows):
        rep = r["conversion_report"]
        assert rep["mode"] == r["setting"]["conversion"]
        assert rep["exact"] == (rep["max_output_diff"] <= rep["tolerance"] * max(1.0, rep["output_scale"]))
        if rep["mode"] == "collapsed":  # only collapsed notebook_rows go: exact by construction
            assert rep["exact"] and rep["max_removed_norm"] < rep["threshold"]
        if rep["mode"] == "epsilon":
            assert rep["max_removed_norm"] < r["setting"]["epsilon"]
