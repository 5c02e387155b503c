"""The closing claims of notebook 08 on constructed rows: every verdict can come out more than one way."""

from __future__ import annotations

import pytest

from histolean.experiments import til_maps
from histolean.experiments.til_maps.classifiers import BENCHMARK_SOURCE, STAND_IN_SOURCE
from histolean.study.claims import FAILS, HOLDS, NOT_RESOLVED, NOT_TESTABLE


def _model(role, gflops, source=BENCHMARK_SOURCE):
    method, setting = ("original", {}) if role == "original" else ("nar", {"phi": 2})
    return {"kind": "model", "model": "resnet50v2", "method": method, "setting": {"role": role, **setting},
            "gflops": gflops, "metrics": {"auc": 0.8}, "source": source, "profile": "smoke"}


def _agreement(slide, kappa, same=0.9):
    return {"kind": "agreement", "dataset": slide, "metrics": {"cohen_kappa": kappa, "same_label_fraction": same,
                                                               "n_patches": 24}}


def _speed(role, backend, speedup=1.0, lo=None, hi=None, share=0.95):
    return {"kind": "speed", "method": backend, "setting": {"role": role, "reference": "torch"}, "threads": 1,
            "scale": {"speed_patches": 8, "speed_repeats": 5},
            "metrics": {"speedup": speedup, "speedup_min": speedup if lo is None else lo,
                        "speedup_max": speedup if hi is None else hi, "end_to_end_share": share,
                        "reading_bound": 0.96, "ms_per_patch": {"model": 2.0, "reading": 0.08, "end_to_end": 2.1},
                        "load_average": 1.5}}


def _speed_row(rows_, role, backend):
    return next(x for x in rows_ if x["kind"] == "speed" and x["method"] == backend and x["setting"]["role"] == role)


def _scale(role, hours):
    return {"kind": "scale", "data_kind": "none", "dataset": "whole slide, 100 mm2 tissue (assumed)",
            "setting": {"role": role, "backend": "onnxruntime"},
            "metrics": {"hours_for_slides": hours, "seconds_per_slide": hours * 3600 / 10000 * 2,
                        "slides": 10000, "slides_at_once": 2}}


def _map(role, backend="onnxruntime"):
    return {"kind": "map", "dataset": "slide0.svs", "method": "map",
            "setting": {"role": role, "backend": backend, "precision": "fp32"}, "backend": backend,
            "precision": "fp32", "metrics": {"n_patches": 24}}


def _check(diff, same=True):
    return {"kind": "check", "dataset": "CMU-1-Small-Region.svs",
            "metrics": {"max_abs_probability_difference": diff, "same_patches": same, "n_patches": 24}}


def rows(*, kappas=(0.8, 0.7), source=BENCHMARK_SOURCE, onnx=(1.5, 1.3, 1.7), share=0.95, diff=0.0,
         hours=(30.0, 12.0)):
    out = [_model("original", 1.0, source), _model("reduced", 0.3, source)]
    out += [_agreement(f"slide{i}.svs", k) for i, k in enumerate(kappas)]
    for role in ("original", "reduced"):
        out.append(_speed(role, "torch", 1.0, share=share))
        out.append(_speed(role, "onnxruntime", onnx[0], onnx[1], onnx[2], share=share))
    out += [_map("original"), _map("reduced")]
    out += [_check(diff), _scale("original", hours[0]), _scale("reduced", hours[1])]
    out.append({"kind": "claim", "claim": "an old claim row is ignored"})
    return out


def claim(all_rows, starts_with):
    [c] = [c for c in til_maps.paper_claims(all_rows) if c.claim.startswith(starts_with)]
    return c


def test_every_claim_states_its_rule_and_scale():
    out = til_maps.paper_claims(rows())
    assert len(out) == 8
    for c in out:
        assert c.rule and c.scale.startswith("smoke profile")


@pytest.mark.parametrize("kappas, source, verdict", [
    ((0.8, 0.7), BENCHMARK_SOURCE, HOLDS),
    ((0.8, 0.3), BENCHMARK_SOURCE, FAILS),
    ((0.8, 0.5), BENCHMARK_SOURCE, NOT_RESOLVED),
    ((0.8, float("nan")), BENCHMARK_SOURCE, NOT_RESOLVED),
    ((0.8, 0.7), STAND_IN_SOURCE, NOT_TESTABLE),
])
def test_same_map_claim(kappas, source, verdict):
    c = claim(rows(kappas=kappas, source=source), "NAR")
    assert c.verdict == verdict
    assert "3.3x fewer" in c.ours and "kappa 0.80" in c.ours


@pytest.mark.parametrize("onnx, verdict", [
    ((1.5, 1.3, 1.7), HOLDS), ((0.8, 0.7, 0.9), FAILS), ((1.1, 0.9, 1.3), NOT_RESOLVED)])
def test_backend_speedup_claim(onnx, verdict):
    c = claim(rows(onnx=onnx), "onnxruntime runs")
    assert c.verdict == verdict and c.interval == (onnx[1], onnx[2])


def test_backends_not_timed_are_not_testable():
    assert claim(rows(), "torch_compile runs").verdict == NOT_TESTABLE
    other_reference = [dict(r, setting={**r["setting"], "reference": "onnxruntime"}) if r["kind"] == "speed" else r
                       for r in rows()]
    assert claim(other_reference, "onnxruntime runs").verdict == NOT_TESTABLE


@pytest.mark.parametrize("onnx, verdict", [((1.5, 1.3, 1.7), HOLDS), ((0.8, 0.7, 0.9), FAILS)])
def test_default_backend_claim(onnx, verdict):
    c = claim(rows(onnx=onnx), "the backend the maps use")
    assert c.verdict == verdict and "onnxruntime" in c.rule


def test_default_backend_claim_needs_the_maps_backend_timed():
    no_maps = [r for r in rows() if r["kind"] != "map"]
    assert claim(no_maps, "the backend the maps use").verdict == NOT_TESTABLE
    ov = [dict(r, setting={**r["setting"], "backend": "openvino:bf16"}) if r["kind"] == "map" else r for r in rows()]
    assert claim(ov, "the backend the maps use").verdict == NOT_TESTABLE


def test_default_backend_claim_is_per_model():
    # the original's maps on eager torch (slower than onnxruntime there): the choice lost for one model
    mixed = [dict(r, setting={**r["setting"], "backend": "torch"})
             if r["kind"] == "map" and r["setting"]["role"] == "original" else r for r in rows()]
    c = claim(mixed, "the backend the maps use")
    assert c.verdict == NOT_RESOLVED and "original: torch" in c.rule and "reduced: onnxruntime" in c.rule
    both = [dict(r, setting={**r["setting"], "backend": "torch"}) if r["kind"] == "map" else r for r in rows()]
    assert claim(both, "the backend the maps use").verdict == FAILS


@pytest.mark.parametrize("share, verdict", [(0.95, HOLDS), (0.7, FAILS)])
def test_end_to_end_claim(share, verdict):
    assert claim(rows(share=share), "reading overlaps").verdict == verdict


def test_end_to_end_claim_says_where_the_time_goes_below_the_goal():
    r = rows(share=0.95)
    slow = _speed_row(r, "reduced", "onnxruntime")["metrics"]
    slow.update(end_to_end_share=0.8, ms_per_patch={"model": 2.0, "reading": 0.5, "end_to_end": 2.5},
                reading_bound=0.8, cores=[0])
    c = claim(r, "reading overlaps")
    assert c.verdict == FAILS
    assert "onnxruntime reduced model 2.00 ms, reading 0.50 ms over the slide (at best 80% with the two" in c.ours
    assert "torch original model" not in c.ours  # only the ones below the goal


def test_end_to_end_claim_fails_when_reading_the_whole_slide_would_not_keep_up():
    r = rows(share=0.95)  # the timed window kept up ...
    assert claim(r, "reading overlaps").verdict == HOLDS
    _speed_row(r, "original", "onnxruntime")["metrics"]["reading_bound"] = 0.85  # ... but not over the slide
    c = claim(r, "reading overlaps")
    assert c.verdict == FAILS and "at best 85%" in c.ours


@pytest.mark.parametrize("diff, verdict", [(0.0, HOLDS), (1e-7, FAILS), (float("nan"), FAILS)])
def test_dask_claim(diff, verdict):
    assert claim(rows(diff=diff), "Dask").verdict == verdict


@pytest.mark.parametrize("hours, verdict", [((30.0, 12.0), HOLDS), ((12.0, 30.0), FAILS)])
def test_scale_claim(hours, verdict):
    c = claim(rows(hours=hours), "analysing thousands")
    assert c.verdict == verdict and "10000 slides" in c.ours


def test_no_rows_is_not_testable_not_an_error():
    assert {c.verdict for c in til_maps.paper_claims([])} == {NOT_TESTABLE}
