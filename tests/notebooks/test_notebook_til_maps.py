"""Values the til_maps notebook records on the smoke profile (one run per session)."""

from __future__ import annotations

import importlib.util
import json

import pytest

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


BENCHMARK = "til_maps"


def _kind(rows, kind):
    return [r for r in rows if r.get("kind") == kind]


def test_both_slides_mapped_by_both_models_on_dask(notebook_run):
    rows, out = notebook_run
    maps = _kind(rows, "map")
    assert {(r["dataset"], r["setting"]["role"]) for r in maps} == {
        (s, role) for s in ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs") for role in ("original", "reduced")}
    for r in maps:
        m = r["metrics"]
        assert 0 < m["n_patches"] <= r["scale"]["max_patches_per_slide"] < m["n_tissue_patches"]
        assert 0 <= m["n_positive"] <= m["n_patches"] and r["setting"]["scheduler"].startswith("dask")
    tcga = [r for r in maps if r["dataset"].startswith("tcga")]
    assert all(r["setting"]["mpp"] == 1.0 and r["setting"]["mpp_source"] == "argument" for r in tcga)
    cmu = [r for r in maps if r["dataset"].startswith("CMU")]
    assert all(r["setting"]["mpp_source"] == "file" for r in cmu)
    for r in maps:  # the outputs on disk match the row
        folder = out / "til_maps" / r["setting"]["role"] / r["dataset"].rsplit(".", 1)[0]
        record = json.loads((folder / "complete.json").read_text())  # a util.cache record: key and summary
        assert record["cache_key"]
        done = record["value"]
        geo = json.loads((folder / "patches.geojson").read_text())
        positive = [f for f in geo["features"] if f["properties"]["classification"]["name"] == "TIL-positive"]
        assert done["n_positive"] == len(positive) == r["metrics"]["n_positive"]
        assert len(geo["features"]) == r["metrics"]["n_patches"]
        # the backend that made the map, its precision and the float32 check that allowed it
        assert r["backend"] == r["setting"]["backend"] == done["backend"] and r["setting"]["requested"] == "auto"
        assert r["precision"] == done["precision"] in ("fp32", "bf16")
        assert done["check"]["passed"] is True and r["backend_check"] == done["check"]
        assert done["check"]["max_prob_diff"] <= 0.03 and done["check"]["label_agreement"] >= 0.98
        # the check that decided whether the map was painted, the threshold it used, any plausibility flag
        assert r["model_check"]["verdict"] == done["model_check"]["verdict"] in ("painted", "unchecked", "refused")
        assert r["model_check"]["forced"] == (r["model_check"]["verdict"] == "refused")
        assert r["threshold"] == done["threshold"] and 0 <= r["threshold"] <= 1
        rate = r["metrics"]["n_positive"] / r["metrics"]["n_patches"]
        assert (r["flag"] is not None) == (rate > 0.95 or rate < 0.005) and r["flag"] == done["flag"]
    for role in ("original", "reduced"):  # chosen once per checkpoint: every slide of a model on it
        assert len({r["backend"] for r in maps if r["setting"]["role"] == role}) == 1


def test_dask_equals_one_process(notebook_run):
    [check] = _kind(notebook_run[0], "check")
    assert check["metrics"]["same_patches"] is True and check["metrics"]["max_abs_probability_difference"] == 0.0


def test_agreement_and_speed_rows_are_consistent(notebook_run):
    rows, out = notebook_run
    agreement = _kind(rows, "agreement")
    assert {r["dataset"] for r in agreement} == {"CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"}
    for r in agreement:
        assert 0.0 <= r["metrics"]["same_label_fraction"] <= 1.0 and r["metrics"]["n_patches"] > 0
    stain = _kind(rows, "stain")  # Macenko: positive rates and agreement with and without it, per slide
    assert {r["dataset"] for r in stain} == {"CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"}
    for r in stain:
        m = r["metrics"]
        assert all(0 <= m[f"positive_fraction_{role}{s}"] <= 1 for role in ("original", "reduced") for s in ("", "_macenko"))
        assert 0 <= m["same_label_fraction_macenko"] <= 1 and r["setting"]["reference"]
        folder = out / "til_maps" / "original-macenko" / r["dataset"].rsplit(".", 1)[0]
        assert json.loads((folder / "complete.json").read_text())["value"]["stain"]["method"] == "macenko"
    speed = _kind(rows, "speed")
    assert {r["setting"]["role"] for r in speed} == {"original", "reduced"}
    for r in speed:
        m = r["metrics"]
        assert m["model_per_s"] > 0 and m["end_to_end_per_s"] > 0 and m["read_per_s"] > 0
        assert 0 < m["reading_bound"] < 1 and m["ms_per_patch"]["reading"] > 0
        assert m["cores"] is None or len(m["cores"]) == r["threads"]  # model and reader on one budget
        assert m["reader"] == "tifffile+imagecodecs, checked against OpenSlide"  # OpenSlide's pixels, decoded fast
        assert m["speedup_min"] <= m["speedup"] <= m["speedup_max"]
        if r["method"] == r["setting"]["reference"]:
            assert m["speedup"] == pytest.approx(1.0)
        assert r["backend"] == r["setting"]["backend"] and r["precision"] in ("fp32", "bf16")
        assert "max_prob_diff" in r["backend_check"] and "passed" in r["backend_check"]
    timed = {r["backend"] for r in speed}
    assert {r["backend"] for r in _kind(rows, "map")} <= timed  # the maps' backend is in the race
    if importlib.util.find_spec("openvino") is not None:  # the OpenVINO labels are in the comparison
        assert "openvino:fp32" in timed
    models = _kind(rows, "model")
    gflops = {r["setting"]["role"]: r["gflops"] for r in models}
    assert gflops["reduced"] < gflops["original"]
    scale = [r for r in _kind(rows, "scale") if r["data_kind"] == "none"]
    assert len(scale) == 2 and all(r["metrics"]["patches"] == 40000 for r in scale)
    assert (out / "figures" / "til_maps__maps.png").is_file() and (out / "figures" / "til_maps__throughput.png").is_file()
    assert (out / "figures" / "til_maps__extremes.png").is_file()  # the highest- and lowest-scoring patches


def test_the_closing_claims_are_recorded_with_rules_and_verdicts(notebook_run):
    from histolean.study.claims import NOT_TESTABLE, VERDICTS

    rows, _ = notebook_run
    claims = _kind(rows, "claim")
    assert len(claims) == 8 and all(c["verdict"] in VERDICTS and c["rule"] for c in claims)
    by_claim = {c["claim"]: c for c in claims}
    assert by_claim["Dask gives the single-process result"]["verdict"] == "holds"
    # the smoke profile times eager torch and onnxruntime only, with stand-in models
    assert by_claim["torch_compile runs model-only inference faster than eager torch"]["verdict"] == NOT_TESTABLE
    stand_ins = any("stand-in" in r.get("source", "") for r in _kind(rows, "model"))
    [same_map] = [c for c in claims if c["claim"].startswith("NAR")]
    assert (same_map["verdict"] == NOT_TESTABLE) == stand_ins
