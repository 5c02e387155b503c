"""Values the monuseg_pruning notebook records on the smoke profile (one run per session)."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


BENCHMARK = "monuseg_pruning"


def _segmentation_rows(rows):
    return [r for r in rows if r["kind"] == "variant" and r["method"] == "iterative magnitude pruning"]


def test_every_scheme_and_cr_is_scored_on_both_datasets(notebook_run):
    rows, _ = notebook_run
    seen = {(r["dataset"], r["setting"]["scheme"], r["setting"]["cr"]) for r in _segmentation_rows(rows)}
    for dataset in ("monuseg", "tnbc"):
        assert (dataset, "unpruned", 1) in seen
        for scheme in ("network-wide", "layer-wise", "dense control"):
            assert {(dataset, scheme, 2), (dataset, scheme, 4)} <= seen
    for r in _segmentation_rows(rows):
        m = r["metrics"]
        for key in ("dice", "aji", "pq"):
            assert 0.0 <= m[key] <= 1.0 and m[f"{key}_q25"] <= m[f"{key}_median"] <= m[f"{key}_q75"]
        assert m["mse"] >= 0
        assert r["n_images"] == 2 and r["scale"]["width"] == 0.125 and r["scale"]["encoder"] == "random"
        assert r["data_kind"] == "real" and len(r["per_image"]["aji"]) == 2
        assert r["epochs_trained"] == 1 + {1: 0, 2: 1, 4: 2}[r["setting"]["cr"]]


def test_recorded_sparsity_and_speedup_follow_the_scheme(notebook_run):
    rows, _ = notebook_run
    for r in _segmentation_rows(rows):
        cr, scheme = r["setting"]["cr"], r["setting"]["scheme"]
        for branch in ("semantic", "regression"):
            if scheme == "dense control":
                assert r["sparsity"][branch] == 0 and r["theoretical_speedup"][branch] == 1
                continue
            # layer-wise keeps the 3x3 head (18 of ~385k weights at x0.125) dense
            assert r["sparsity"][branch] == pytest.approx(1 - 1 / cr, abs=1e-3 if scheme == "layer-wise" else 1e-4)
            if scheme == "layer-wise":
                # below the CR only by the dense head's full-resolution FLOPs (~1% of them at x0.125)
                assert 0.95 * cr < r["theoretical_speedup"][branch] < cr
            elif scheme == "network-wide":
                assert 1.0 < r["theoretical_speedup"][branch] < cr


def test_full_width_table1_matches_the_papers_reach_and_shape(notebook_run):
    rows, _ = notebook_run
    full = {(r["setting"]["scheme"], r["setting"]["cr"]): r for r in rows if r["kind"] == "speedup_table"}
    assert all("untrained" in r["model"] and "formula" in r["speedup_weights"] for r in full.values())
    assert full[("layer-wise", 128)]["reachable"] and not full[("layer-wise", 256)]["reachable"]
    assert full[("layer-wise", 256)]["metrics"]["theoretical_speedup"] is None
    nw = [full[("network-wide", 2 ** k)]["metrics"]["theoretical_speedup"] for k in range(1, 10)]
    assert all(a < b for a, b in zip(nw, nw[1:]))
    # network-wide pruning spares the FLOP-heavy early layers: far below CR (paper: 1.49 at CR 2, 15.0 at 128)
    assert 1.3 < nw[0] < 1.8 and 10 < nw[6] < 25


def test_sparse_storage_and_cpu_time_are_measured(notebook_run):
    rows, out = notebook_run
    cost = [r for r in rows if r["kind"] == "speed" and r["method"].endswith("cost on CPU")]
    assert {(r["setting"]["scheme"], r["setting"]["cr"]) for r in cost} == {
        ("network-wide", 2), ("network-wide", 4), ("layer-wise", 2), ("layer-wise", 4)}
    for r in cost:
        m = r["metrics"]
        assert math.isfinite(m["measured_speedup"]) and m["measured_speedup"] > 0 and r["repeats"] >= 5
        assert "retrained" in r["speedup_weights"] and "dense speed" in r["note"]
        if r["setting"]["cr"] == 4:   # CSR (4-byte value + 4-byte index per kept weight) beats dense at CR 4
            assert m["sparse_bytes"] < 0.7 * m["dense_bytes"]
    for name in ("fig2_monuseg", "fig3_tnbc", "fig4_monuseg", "fig4_tnbc", "table1_speedup"):
        assert (out / "figures" / f"monuseg_pruning__{name}.png").is_file(), name
    assert (out / "tables" / "monuseg_pruning_per_image.csv").is_file()


def test_closing_cell_records_the_papers_claims(notebook_rows):
    from histolean.study.claims import HOLDS, NOT_TESTABLE, VERDICTS

    claims = [r for r in notebook_rows if r["kind"] == "claim"]
    assert len(claims) == 14 and all(r["verdict"] in VERDICTS and r["rule"] for r in claims)
    verdict = {r["claim"]: r["verdict"] for r in claims}
    # the smoke run stops at CR 4: whether 80% of the weights (CR 8) can go, or CRs > 2^5, is not decided
    assert [v for c, v in verdict.items() if "80%" in c] == [NOT_TESTABLE, NOT_TESTABLE]
    assert [v for c, v in verdict.items() if "large CRs" in c] == [NOT_TESTABLE, NOT_TESTABLE]
    # exact counts on the full-width network are decided at any scale
    assert [v for c, v in verdict.items() if "beyond CR 2^7" in c] == [HOLDS]
    # Table 1 is decided by this run's trained weights at CR 2 and 4; the untrained figure is only shown
    [table1] = [r for r in claims if r["claim"].startswith("theoretical speed-up")]
    assert table1["verdict"] != NOT_TESTABLE and "trained + retrained" in table1["ours"] and "formula check" in table1["ours"]
    # the segmentation claims carry their paired interval over images
    assert all(r["interval"] for r in claims if "small CRs" in r["claim"])
