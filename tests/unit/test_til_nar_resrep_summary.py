"""til_nar_resrep.summarise on constructed predictions: image-level intervals, the colour control,
matched-cost comparisons, the one-class flag, nominal vs achieved FLOP reductions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from histolean.core import metrics
from histolean.data.common import DataError
from histolean.experiments import til_nar_resrep
from histolean.experiments.til_nar_resrep import VariantResult


def clustered(n_images=12, per_image=25, seed=0):
    """Windows of one image share its TIL prevalence and a score offset: alike, not independent."""
    rng = np.random.default_rng(seed)
    prevalence = rng.uniform(0.1, 0.9, n_images)
    groups = np.repeat([f"img{i}" for i in range(n_images)], per_image)
    labels = (rng.uniform(size=groups.size) < np.repeat(prevalence, per_image)).astype(np.int64)
    offset = np.repeat(rng.normal(0, 0.3, n_images), per_image)
    return labels, groups, offset, rng


def fake_task(labels, groups):
    test = SimpleNamespace(labels=labels, groups=groups)
    return SimpleNamespace(dataset="crc_windows", data_kind="real", test=test, train=test, valid=test,
                           split=lambda name: test)


def results_for(labels, offset, rng):
    variants = til_nar_resrep.build_variants({"tiny": {"base_input": 32, "ir": [1, 2], "nar": [1]}})
    out = {}
    for v in variants:
        score = 0.5 + 0.25 * (labels - 0.5) + offset + rng.normal(0, 0.25, labels.size)
        if v.id == "tiny__ir_k2":
            score = score - 10  # every window below the decision threshold
        out[v.id] = VariantResult(v, runs=[{"val_auc": 0.7, "train_time_s": 1.0, "resumed": False,
                                            "test_probs": list(1 / (1 + np.exp(-4 * (score - 0.5))))}])
    return out


def test_intervals_resample_source_images_and_are_wider_than_window_level_ones():
    labels, groups, offset, rng = clustered()
    results = results_for(labels, offset, rng)
    colour = {"hist_gbt": {"test_probs": 0.5 + offset + rng.normal(0, 0.4, labels.size), "train_time_s": 0.1}}
    rows = til_nar_resrep.summarise(results, fake_task(labels, groups), {}, {"profile": "test"}, baselines=colour,
                                    n_boot=300)
    by_id = {r["variant_id"]: r for r in rows}
    original = by_id["tiny__original"]
    m = original["metrics"]
    assert (m["ci_unit"], m["n_images"], m["n_windows"]) == ("source image", 12, 300)
    window_level = metrics.auc_with_ci(labels, results["tiny__original"].test_probs, n_boot=300)
    assert m["auc_ci_hi"] - m["auc_ci_lo"] > 1.2 * (window_level["auc_ci_hi"] - window_level["auc_ci_lo"])
    nar_row = by_id["tiny__nar_phi1"]["metrics"]
    assert nar_row["ci_unit"] == "source image" and nar_row["n_groups"] == 12
    # the control: paired with the best colour baseline on the same images
    vs = m["vs_baseline"]
    assert vs["baseline"] == "hist_gbt" and vs["lo"] <= vs["diff"] <= vs["hi"]
    # matched cost: NAR phi=1 (1.9x nominal) meets the IR level nearest in GFLOPs, on the same images
    [match] = by_id["tiny__nar_phi1"]["matched_cost"]
    assert match["method"] == "ir" and 1 / 1.35 <= match["cost_ratio"] <= 1.35 and match["lo"] <= match["hi"]
    # a variant whose decisions are all one class is flagged; the others are not
    assert by_id["tiny__ir_k2"]["one_class"] and by_id["tiny__ir_k2"]["predicted_positive_share"] == 0
    assert not any(r["one_class"] for r in rows if r["variant_id"] != "tiny__ir_k2")
    # nominal (what the method promises) beside achieved (what rounding leaves)
    assert by_id["tiny__ir_k1"]["flop_reduction_nominal"] == pytest.approx(1.15 ** 2)
    assert by_id["tiny__nar_phi1"]["flop_reduction_nominal"] == pytest.approx(1.2 * 1.1 ** 2 * 1.15 ** 2)
    for r in rows:
        if r["method"] in ("ir", "nar"):
            assert r["nominal_fraction"] == pytest.approx(r["flop_reduction"] / r["flop_reduction_nominal"])
    assert original["flop_reduction_nominal"] is None and original["scale"]["n_test_images"] == 12


def test_a_test_split_from_one_image_is_a_clear_error():
    labels, groups, *_ = clustered(n_images=1)
    with pytest.raises(DataError, match="split 'train' holds 1 source image"):
        til_nar_resrep.check_images(fake_task(labels, groups))
    labels, groups, *_ = clustered(n_images=3)
    til_nar_resrep.check_images(fake_task(labels, groups))


def test_the_default_profile_levels_reach_most_of_their_nominal_flop_reduction():
    import yaml

    from histolean.core import flops
    from histolean.experiments.til_nar_resrep import nominal_flop_reduction

    from pathlib import Path

    profile = yaml.safe_load((Path(__file__).parents[2] / "params" / "default.yaml").read_text())
    variants = til_nar_resrep.build_variants(profile["benchmarks"]["til_nar_resrep"]["architectures"])
    originals = {v.model: flops.gflops(v.spec) for v in variants if v.method == "original"}
    reduced = [v for v in variants if v.method in ("ir", "nar")]
    assert {v.method for v in reduced} == {"ir", "nar"}
    for v in reduced:
        achieved = originals[v.model] / flops.gflops(v.spec)
        assert achieved >= 0.8 * nominal_flop_reduction(v), (v.id, achieved, nominal_flop_reduction(v))
