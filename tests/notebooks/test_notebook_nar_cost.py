"""Values that 02_nar_cost recorded on the smoke profile: costs against the formula, torch's counter,
Keras and the paper; speed measured side by side (its structure, never its value: timings vary)."""

from __future__ import annotations

import pytest

from histolean.study.claims import HOLDS, VERDICTS

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

RESNET_VARIANTS = [("original", {})] + [("ir", {"k": k}) for k in range(1, 7)] + [("nar", {"phi": p}) for p in (1, 2, 3)]
INCEPTION_VARIANTS = [("original", {})] + [("ir", {"k": k}) for k in range(1, 7)] + [("nar", {"phi": p}) for p in range(1, 7)]


BENCHMARK = "nar_cost"


@pytest.fixture(scope="module")
def variant_rows(notebook_rows):
    """The recorded rows without the closing claims (rows of kind "claim")."""
    return [r for r in notebook_rows if r["kind"] != "claim"]


def _row(rows, model, method, **setting):
    [row] = [r for r in rows if r["model"] == model and r["method"] == method and r["setting"] == setting]
    return row


def _conv(c_in, c_out, k, hw):
    return 2 * c_in * k * k * c_out * hw * hw


def keras_resnet50v2_flops(size: int = 240, classes: int = 2) -> int:
    """The paper's formula worked by hand on Keras ResNet50V2 (stride in each stage's last block)."""
    hw = (size + 6 - 7) // 2 + 1                       # zero-pad 3, 7x7/2 conv
    total = _conv(3, 64, 7, hw)
    hw = (hw + 2 - 3) // 2 + 1                         # zero-pad 1, 3x3/2 max pool
    c_in = 64
    for blocks, width, stride in ((3, 64, 2), (4, 128, 2), (6, 256, 2), (3, 512, 1)):
        for b in range(blocks):
            out = (hw + 2 - 3) // stride + 1 if b == blocks - 1 else hw
            total += _conv(c_in, width, 1, hw) + _conv(width, width, 3, out) + _conv(width, 4 * width, 1, out)
            total += _conv(c_in, 4 * width, 1, hw) if b == 0 else 0   # projection shortcut
            c_in, hw = 4 * width, out
    return total + 2 * 2048 * classes


def test_one_row_per_variant_of_both_networks(variant_rows):
    got = [(r["model"], r["method"], r["setting"]) for r in variant_rows]
    expected = ([("resnet50v2", m, s) for m, s in RESNET_VARIANTS]
                + [("inception_v4", m, s) for m, s in INCEPTION_VARIANTS])
    assert sorted(map(str, got)) == sorted(map(str, expected))
    assert {r["data_kind"] for r in variant_rows} == {"none"}


def test_resnet50v2_gflops_equal_the_formula_and_torchs_counter(variant_rows):
    original = _row(variant_rows, "resnet50v2", "original")
    assert original["input_size"] == 240
    assert round(original["gflops"] * 1e9) == keras_resnet50v2_flops(240) == 8_235_089_920
    assert original["torch_gflops"] == pytest.approx(original["gflops"], rel=1e-12)


def test_the_formula_agrees_with_torchs_counter_on_every_variant(variant_rows):
    for r in variant_rows:
        assert abs(r["gflops"] - r["torch_gflops"]) / r["gflops"] < 0.01, (r["model"], r["method"], r["setting"])


def test_parameters_equal_keras_and_table1_within_half_a_percent(variant_rows):
    original = _row(variant_rows, "resnet50v2", "original")
    assert original["params"] == 23_523_458 and original["params_keras_total"] == 23_568_898  # keras.applications
    table1 = {1: 14_583_140, 2: 11_274_413, 3: 8_514_988}   # the paper's Table 1 (widths swapped in print)
    for phi, params in table1.items():
        nar_row = _row(variant_rows, "resnet50v2", "nar", phi=phi)
        assert nar_row["params_keras_total"] == pytest.approx(params, rel=0.005)


def test_nar_follows_its_theory_and_stride_first_resnet_gives_the_papers_gflops(variant_rows):
    for phi in (1, 2, 3):
        r = _row(variant_rows, "resnet50v2", "nar", phi=phi)
        assert r["flop_reduction"] == pytest.approx(r["theory"], rel=0.07)
        original = _row(variant_rows, "resnet50v2", "original")["gflops"]
        assert r["flop_reduction"] == pytest.approx(original / r["gflops"]) and r["flop_reduction"] > 1
    for r in (r for r in variant_rows if r["model"] == "resnet50v2"):
        assert r["gflops_stride_first"] == pytest.approx(r["paper_gflops"], rel=0.02), (r["method"], r["setting"])
        assert r["gflops"] < r["paper_gflops"]   # the Keras layout strides late: fewer FLOPs
    inception = [r["gflops"] for r in variant_rows if r["model"] == "inception_v4" and r["method"] == "nar"]
    assert inception == sorted(inception, reverse=True)
    assert _row(variant_rows, "inception_v4", "nar", phi=6)["gflops"] == pytest.approx(0.28, rel=0.1)


def test_speed_is_measured_side_by_side_with_the_original(variant_rows, notebook_run):
    timed = [r for r in variant_rows if r["scale"]["timed"]]
    assert {r["model"] for r in timed} == {"resnet50v2"}      # the smoke profile times ResNet50V2 only
    for r in timed:
        m = r["metrics"]
        assert r["scale"]["throughput_repeats"] >= 5
        assert m["patches_per_s_min"] <= m["patches_per_s"] <= m["patches_per_s_max"]
        assert m["speedup_min"] <= m["speedup"] <= m["speedup_max"]
    assert _row(variant_rows, "resnet50v2", "original")["metrics"]["speedup"] == 1.0
    assert _row(variant_rows, "resnet50v2", "original")["metrics"]["speedup_eager_fp32"] == 1.0
    assert all(not r["metrics"] for r in variant_rows if not r["scale"]["timed"])
    out = notebook_run[1]
    for figure in ("gflops_vs_level", "speedup_vs_flop_reduction"):
        assert (out / "figures" / f"nar_cost__{figure}.png").stat().st_size > 10_000


def test_every_timed_row_names_its_backend_and_precision_and_its_speed_efficiency(variant_rows):
    from histolean.core import backends

    timed = [r for r in variant_rows if r["scale"]["timed"]]
    assert len({(r["backend"], r["precision"]) for r in timed}) == 1   # chosen once per network family
    for r in timed:
        assert r["backend"] in backends.available(include_compile=True) and r["precision"] in ("fp32", "bf16")
        assert backends.parse_label(r["backend"])[0] in backends.BACKENDS
        assert r["backend_check"]["passed"] is True and r["backend_check"]["max_prob_diff"] <= 0.03
        m = r["metrics"]
        assert m["speed_efficiency"] == pytest.approx(m["speedup"] / r["flop_reduction"])
        assert m["speed_efficiency_eager_fp32"] == pytest.approx(m["speedup_eager_fp32"] / r["flop_reduction"])
        assert m["speedup_eager_fp32_min"] <= m["speedup_eager_fp32"] <= m["speedup_eager_fp32_max"]
        assert m["patches_per_s_eager_fp32"] > 0
    original = _row(variant_rows, "resnet50v2", "original")
    # what the choice measured: patches/s of the original on every backend that passed its check, in one run
    assert original["backend"] in original["backend_per_s"] or original["backend_chosen_by"] == "override"
    assert set(original["backend_per_s"]) <= set(original["backend_checks"])
    assert all(c["passed"] for label, c in original["backend_checks"].items() if label in original["backend_per_s"])


def test_speedup_and_flop_reduction_point_the_same_way(variant_rows):
    """Both are original / variant: a cheaper variant has flop_reduction > 1 and, when faster, speedup > 1."""
    nar3 = _row(variant_rows, "resnet50v2", "nar", phi=3)
    assert nar3["flop_reduction"] > 6 and nar3["paper_flop_reduction"] > 6
    assert nar3["metrics"]["speedup"] > 1    # 7x fewer FLOPs: faster on any machine, whatever its load


def test_the_closing_claims_are_recorded(notebook_rows):
    claims = {c["claim"]: c for c in notebook_rows if c["kind"] == "claim"}
    # four cost claims, one speed claim per timed network (smoke: ResNet50V2), issue 19's speed-efficiency goal
    assert len(claims) == 6
    for c in claims.values():
        assert c["verdict"] in VERDICTS and c["rule"] and c["scale"]
    speed = [c for name, c in claims.items() if name.startswith("fewer FLOPs run faster")]
    [efficiency] = [c for name, c in claims.items() if "speed efficiency" in name]
    assert efficiency["paper"].startswith("issue 19") and "0.8" in efficiency["rule"]
    costs = [c for c in claims.values() if c not in speed and c is not efficiency]
    assert len(speed) == 1 and speed[0]["interval"][0] <= speed[0]["interval"][1]
    for c in costs:    # exact counts: the same on every machine
        assert c["verdict"] == HOLDS, (c["claim"], c["ours"], c["rule"])
