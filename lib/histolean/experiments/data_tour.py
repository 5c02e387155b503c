"""The glue of notebook 01 (``data_tour``): its closing claims, computed from its rows.

The data code the notebook tours lives in :mod:`histolean.data`; this module only decides, from the
rows the notebook recorded, whether the facts the later benchmarks rely on hold on this data root.
"""

from __future__ import annotations

import math

from histolean.data import registry
from histolean.study.claims import NOT_TESTABLE, Claim, within

SOURCE = "histolean.data registry"
MPP_TOLERANCE = 0.01        # um/px: "about 0.25" for a 40x scan (MoNuSeg's XML states 0.2500 or 0.2520)
CLASSES = ("class_0", "class_1")


def _variant_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("kind", "variant") != "claim"]


def _one(rows: list[dict], dataset: str, method: str) -> dict | None:
    return next((r for r in rows if r["dataset"] == dataset and r["method"] == method), None)


def datasets_on_disk(rows: list[dict]) -> Claim:
    expected = registry.folders()
    status = {r["dataset"]: r for r in rows if r["method"] == "data_status"}
    found = [name for name in expected if name in status and status[name]["metrics"].get("found")]
    missing = [name for name in expected if name not in found]
    root = next(iter(status.values()))["setting"].get("root", "?") if status else "?"
    return Claim(
        paper=SOURCE, claim="the datasets of the study are on disk", paper_value=", ".join(expected),
        ours=f"{len(found)} of {len(expected)} found" + (f"; missing: {', '.join(missing)}" if missing else ""),
        rule=f"holds if every one of the {len(expected)} registry folders is found (found count within "
             f"[{len(expected)}, {len(expected)}])",
        verdict=within(len(found), len(expected), len(expected)), scale=f"data root {root}")


def both_classes_load(rows: list[dict]) -> Claim:
    patches = [r for r in rows if r["method"] == "patches"]
    counts = {r["dataset"]: [int(r["metrics"].get(c, 0)) for c in CLASSES] for r in patches}
    generated = [r["dataset"] for r in patches if r["data_kind"] != "real"]
    if not patches or generated:
        verdict = NOT_TESTABLE  # a generated stand-in says nothing about the real dataset's labels
    else:
        verdict = within(min(min(c) for c in counts.values()), 1, math.inf)
    ours = "; ".join(f"{r['dataset']} ({r['data_kind']}): "
                     + ", ".join(f"{c} {n}" for c, n in zip(CLASSES, counts[r["dataset"]])) for r in patches)
    sizes = sorted({r["setting"].get("size") for r in patches})
    return Claim(
        paper=SOURCE, claim="each classification dataset loads with both classes",
        paper_value=", ".join(f"{r['dataset']}: {r.get('native_px')} px patches, 2 classes" for r in patches) or "-",
        ours=ours or "no patch rows",
        rule="holds if every dataset read from real data shows at least 1 patch of each class in a class-balanced "
             "draw; not testable when a dataset was replaced by generated patches",
        verdict=verdict,
        scale=", ".join(f"{r['dataset']} {r['metrics'].get('patches')}" for r in patches) + " train patches, shown at "
              + "/".join(str(s) for s in sizes) + " px",
        note=f"generated in place of: {', '.join(generated)}" if generated else "")


def monuseg_resolution(rows: list[dict]) -> Claim:
    expected = registry.DATASETS["monuseg"].mpp
    tile = _one(rows, "monuseg", "instances")
    if tile is None:
        verdict, ours = NOT_TESTABLE, "no MoNuSeg tile was read"
    else:
        m = tile["metrics"]
        ours = f"{m['mpp']} um/px, {m['instances']} nuclei ({tile['data_kind']})"
        verdict = within(m["mpp"], expected - MPP_TOLERANCE, expected + MPP_TOLERANCE) \
            if tile["data_kind"] == "real" else NOT_TESTABLE
    return Claim(
        paper="MoNuSeg (Kumar et al. 2017)", claim="MoNuSeg is scanned at 40x (about 0.25 um/px)",
        paper_value=f"{expected} um/px", ours=ours,
        rule=f"holds if the tile's own microns per pixel (from its XML) lie within {expected} ± {MPP_TOLERANCE}; "
             "not testable on a generated tile",
        verdict=verdict, scale="one test image")


def patch_side_from_mpp(rows: list[dict]) -> Claim:
    slide = _one(rows, "wsi", "patch_grid")
    if slide is None:
        return Claim(paper="the TIL study's 50 um patches", claim="a patch of patch_um is patch_um / mpp pixels",
                     paper_value="-", ours="no slide was read", rule="holds if the grid's side equals patch_um / mpp "
                     "to the nearest pixel", verdict=NOT_TESTABLE, scale="-")
    m, um = slide["metrics"], slide["setting"]["patch_um"]
    exact = um / m["mpp"]
    return Claim(
        paper="the TIL study's 50 um patches", claim=f"a {um:g} um patch is patch_um / mpp pixels of the slide",
        paper_value=f"{um:g} / {m['mpp']:.3f} = {exact:.1f} px",
        ours=f"{m['patch_px']} px, {m['patches']} tissue patches of {m['grid_cells']} grid cells "
             f"({slide['data_kind']})",
        rule="holds if the grid's patch side equals patch_um / mpp rounded to the nearest pixel "
             "(difference within [-0.5, 0.5] px)",
        verdict=within(m["patch_px"] - exact, -0.5, 0.5), scale=f"one slide: {slide['setting']['slide']}")


def paper_claims(rows: list[dict]) -> list[Claim]:
    """What the later benchmarks rely on, each decided from this run's rows."""
    rows = _variant_rows(rows)
    return [datasets_on_disk(rows), both_classes_load(rows), monuseg_resolution(rows), patch_side_from_mpp(rows)]

