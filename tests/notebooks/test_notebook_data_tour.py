"""Values that 01_data_tour recorded on the smoke profile: every registry dataset counted, patches and
tiles read from the real subsets, and a 50 um grid computed from the slide's own microns per pixel."""

from __future__ import annotations

import pytest

from histolean.data import registry
from histolean.study.claims import HOLDS

pytestmark = [pytest.mark.notebook, pytest.mark.slow]


BENCHMARK = "data_tour"


@pytest.fixture(scope="module")
def variant_rows(notebook_rows):
    """The recorded rows without the closing claims (rows of kind "claim")."""
    return [r for r in notebook_rows if r["kind"] != "claim"]


def _by(rows, method):
    return {r["dataset"]: r for r in rows if r["method"] == method}


def test_every_dataset_folder_has_a_status_row(variant_rows):
    status = _by(variant_rows, "data_status")
    assert sorted(status) == sorted(registry.folders())
    for name, r in status.items():
        assert r["data_kind"] == ("real" if r["metrics"]["found"] else "none"), name


def test_the_real_subsets_are_read_not_generated(variant_rows, real_data):
    status = _by(variant_rows, "data_status")
    assert all(r["metrics"]["found"] == 1 for r in status.values())
    pcam = status["pcam"]["metrics"]
    assert pcam["train/0"] > 0 and pcam["train/1"] > 0                     # both classes, per split
    for name, r in _by(variant_rows, "patches").items():
        assert r["data_kind"] == "real", name
        assert r["metrics"]["class_0"] > 0 and r["metrics"]["class_1"] > 0, name  # a balanced pick shows both
        assert r["native_px"] == registry.DATASETS[name].patch_px


def test_nucleus_tiles_and_their_resolution(variant_rows, real_data):
    tiles = _by(variant_rows, "instances")
    monuseg, tnbc = tiles["monuseg"], tiles["tnbc"]
    assert monuseg["data_kind"] == tnbc["data_kind"] == "real"
    assert monuseg["metrics"]["mpp"] == pytest.approx(0.25, abs=0.01)        # 40x, from the XML
    assert (monuseg["metrics"]["height"], monuseg["metrics"]["width"]) == (1000, 1000)
    assert monuseg["metrics"]["instances"] > 50 and tnbc["metrics"]["instances"] > 10


def test_the_slide_grid_uses_the_slides_own_mpp(variant_rows, notebook_run, real_data):
    [slide] = [r for r in variant_rows if r["method"] == "patch_grid"]
    m = slide["metrics"]
    assert slide["data_kind"] == "real" and slide["setting"]["slide"] == "CMU-1-Small-Region.svs"
    assert m["mpp"] == pytest.approx(0.499, abs=1e-3)
    assert m["patch_px"] == round(slide["setting"]["patch_um"] / m["mpp"]) == 100
    assert 0 < m["patches"] < m["grid_cells"] and 0.05 < m["tissue_fraction"] < 0.95
    out = notebook_run[1]
    for figure in ("patches", "instances", "slide_grid"):
        assert (out / "figures" / f"data_tour__{figure}.png").stat().st_size > 10_000


def test_the_closing_claims_are_recorded_and_hold_on_the_real_subsets(notebook_rows, real_data):
    claims = [r for r in notebook_rows if r["kind"] == "claim"]
    assert len(claims) == 4
    for c in claims:
        assert c["verdict"] == HOLDS, (c["claim"], c["ours"], c["rule"])
        assert c["rule"] and c["scale"] and c["paper_value"]
