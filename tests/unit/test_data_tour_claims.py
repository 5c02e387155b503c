"""Notebook 01's closing claims (``experiments.data_tour.paper_claims``) decided on constructed rows:
each comes out "holds" on a good run and otherwise when the rows say otherwise."""

from __future__ import annotations

import pytest

from histolean.data import registry
from histolean.experiments import data_tour
from histolean.study.claims import FAILS, HOLDS, NOT_TESTABLE

SETS = ("pcam", "idc", "til_windows", "til")


def make_rows(*, missing=(), class_1=2, generated=(), monuseg_mpp=0.25, monuseg_kind="real",
              patch_px=100) -> list[dict]:
    rows = [{"dataset": name, "method": "data_status", "data_kind": "none" if name in missing else "real",
             "setting": {"root": "/data"}, "metrics": {"found": int(name not in missing)}}
            for name in registry.folders()]
    rows += [{"dataset": name, "method": "patches", "data_kind": "synthetic" if name in generated else "real",
              "setting": {"split": "train", "size": 96}, "metrics": {"patches": 4, "class_0": 2, "class_1": class_1},
              "native_px": registry.DATASETS[name].patch_px} for name in SETS]
    rows.append({"dataset": "monuseg", "method": "instances", "data_kind": monuseg_kind, "setting": {"image": "x"},
                 "metrics": {"instances": 400, "mpp": monuseg_mpp, "height": 1000, "width": 1000}})
    rows.append({"dataset": "wsi", "method": "patch_grid", "data_kind": "real",
                 "setting": {"slide": "CMU-1-Small-Region.svs", "patch_um": 50.0},
                 "metrics": {"patches": 300, "patch_px": patch_px, "mpp": 0.499, "grid_cells": 900}})
    return rows


def verdicts(rows) -> list[str]:
    return [c.verdict for c in data_tour.paper_claims(rows)]


def test_a_complete_real_data_root_makes_every_claim_hold():
    claims = data_tour.paper_claims(make_rows())
    assert [c.verdict for c in claims] == [HOLDS] * 4
    assert all(c.rule and c.scale for c in claims)


def test_a_missing_dataset_fails_the_on_disk_claim():
    claim = data_tour.paper_claims(make_rows(missing=[registry.folders()[0]]))[0]
    assert claim.verdict == FAILS and registry.folders()[0] in claim.ours


def test_a_class_missing_from_the_draw_fails_and_generated_patches_are_not_testable():
    assert verdicts(make_rows(class_1=0))[1] == FAILS
    assert verdicts(make_rows(generated=["idc"]))[1] == NOT_TESTABLE


@pytest.mark.parametrize("mpp, kind, verdict", [(0.252, "real", HOLDS), (0.5, "real", FAILS),
                                                (0.25, "synthetic", NOT_TESTABLE)])
def test_monuseg_resolution(mpp, kind, verdict):
    assert verdicts(make_rows(monuseg_mpp=mpp, monuseg_kind=kind))[2] == verdict


def test_the_patch_side_must_be_patch_um_over_mpp_to_the_pixel():
    assert verdicts(make_rows(patch_px=101))[3] == FAILS   # 50 / 0.499 = 100.2
    assert verdicts(make_rows(patch_px=100))[3] == HOLDS


def test_claim_rows_already_recorded_are_ignored():
    rows = make_rows()
    again = rows + [{"kind": "claim", **c.as_row()} for c in data_tour.paper_claims(rows)]
    assert data_tour.paper_claims(again) == data_tour.paper_claims(rows)
