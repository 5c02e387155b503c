"""Whole-slide TIL maps: Dask equals one process, GeoJSON for QuPath, resumable runs, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from histolean import arch, models
from histolean.core import backends, checkpoints, export
from histolean.experiments import til_maps
from histolean.util import cache, cluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    spec = arch.tiny(input_size=32)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return checkpoints.save_model(path, models.build(spec, seed=0), spec, patch_um=50.0, mean=0.5, std=0.5,
                                  classes=["negative", "TIL"])


@pytest.fixture(scope="module")
def small_slide(real_data) -> Path:
    return real_data / "wsi" / "CMU-1-Small-Region.svs"


@pytest.mark.slow
def test_two_worker_local_cluster_gives_the_single_process_predictions(tiny_model, small_slide, tmp_path):
    single = til_maps.map_slides([small_slide], tiny_model, tmp_path / "single", scheduler=None, progress=False)
    dask = til_maps.map_slides([small_slide], tiny_model, tmp_path / "dask", scheduler="local", n_workers=2,
                             progress=False)
    assert [r["status"] for r in single + dask] == ["done", "done"]
    a = til_maps.read_patches(tmp_path / "single" / small_slide.stem)
    b = til_maps.read_patches(tmp_path / "dask" / small_slide.stem)
    assert len(a) == single[0]["n_tissue_patches"] > 100
    np.testing.assert_array_equal(a[["x", "y"]].to_numpy(), b[["x", "y"]].to_numpy())
    np.testing.assert_array_equal(a["probability"].to_numpy(), b["probability"].to_numpy())


@pytest.mark.slow
def test_an_existing_scheduler_address_is_used(tiny_model, small_slide, tmp_path):
    with cluster.local_cluster(1) as local:
        [r] = til_maps.map_slides([small_slide], tiny_model, tmp_path, scheduler=local.scheduler_address,
                                  max_patches=20, progress=False)
    assert r["status"] == "done" and r["n_patches"] == 20


def test_geojson_parses_and_lies_inside_the_slide(tiny_model, small_slide, tmp_path):
    first = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", progress=False)
    probs = til_maps.read_patches(first["folder"])["probability"].to_numpy()
    threshold = float(np.median(probs))  # a random network: put half the patches above the line
    summary = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", threshold=threshold, progress=False)
    assert summary["status"] == "done"  # another threshold is another result, not a skip
    folder = Path(summary["folder"])
    doc = json.loads((folder / "patches.geojson").read_text())
    table = til_maps.read_patches(folder)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(table) == summary["n_patches"]
    classes = [f["properties"]["classification"]["name"] for f in doc["features"]]
    assert classes.count("TIL-positive") == summary["n_positive"] == int((table["probability"] >= threshold).sum()) > 0
    assert doc["properties"]["threshold"] == threshold and "QuPath 0.4" in doc["properties"]["format"]
    width, height = summary["dimensions"]
    for feature, (_, row) in zip(doc["features"], table.iterrows()):
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert feature["geometry"]["type"] == "Polygon" and ring.shape == (5, 2) and (ring[0] == ring[-1]).all()
        assert feature["properties"]["objectType"] == "detection"
        assert (ring[:, 0] >= 0).all() and (ring[:, 0] <= width).all()
        assert (ring[:, 1] >= 0).all() and (ring[:, 1] <= height).all()
        assert (ring[0] == [row["x"], row["y"]]).all() and ring[2, 0] - ring[0, 0] == row["patch_px"] == 100
        assert feature["properties"]["measurements"]["TIL probability"] == pytest.approx(row["probability"], abs=1e-6)
        assert (feature["properties"]["classification"]["name"] == "TIL-positive") == bool(row["til_positive"])
    regions = json.loads((folder / "til_regions.geojson").read_text())["features"]
    assert regions and all(f["properties"]["objectType"] == "annotation" for f in regions)
    # the regions cover exactly the positive patches: their areas (outer minus holes) sum to the patches'
    def area(ring):
        x, y = np.asarray(ring, dtype=float).T
        return 0.5 * abs(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))
    covered = sum(area(f["geometry"]["coordinates"][0]) - sum(area(h) for h in f["geometry"]["coordinates"][1:])
                  for f in regions)
    assert covered == summary["n_positive"] * 100 ** 2
    assert sum(f["properties"]["measurements"]["Patches"] for f in regions) == summary["n_positive"]
    from PIL import Image

    assert Image.open(folder / "map.png").size[0] > 2 * Image.open(folder / "map.png").size[1] * 0.6


@pytest.mark.slow
def test_a_killed_run_resumes(tiny_model, real_data, tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("CMU-1-Small-Region.svs", "tcga-cr-7395-01a-01-ts1.svs"):  # mapped in this (sorted) order
        (slides / name).symlink_to(real_data / "wsi" / name)
    out = tmp_path / "maps"
    cmd = [sys.executable, "-m", "histolean.cli", "tilmap", str(slides), "--model", str(tiny_model), "--out",
           str(out), "--mpp", "1.0", "--scheduler", "none", "--backend", "torch"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "CMU-1-Small-Region" / til_maps.COMPLETE
    deadline = time.monotonic() + 300
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # mid-way through the second slide (about 4,000 patches)
    proc.wait()
    assert first.exists()
    assert not (out / "tcga-cr-7395-01a-01-ts1" / til_maps.COMPLETE).exists(), "the run finished before the kill"
    stamp = first.stat().st_mtime_ns

    results = til_maps.map_slides([slides], tiny_model, out, mpp=1.0, scheduler=None, backend="torch", progress=False)
    assert [r["status"] for r in results] == ["skipped", "done"]
    assert first.stat().st_mtime_ns == stamp
    assert len(til_maps.read_patches(out / "tcga-cr-7395-01a-01-ts1")) == results[1]["n_patches"] > 1000


def test_bad_slides_fail_by_name_while_the_others_finish(tiny_model, small_slide, tmp_path):
    truncated = tmp_path / "truncated.svs"
    truncated.write_bytes(small_slide.read_bytes()[:300_000])
    not_a_slide = tmp_path / "notes.svs"
    not_a_slide.write_text("not a slide")
    no_mpp = small_slide.parent / "tcga-cr-7395-01a-01-ts1.svs"
    results = til_maps.map_slides([truncated, small_slide, not_a_slide, no_mpp], tiny_model, tmp_path / "out",
                                scheduler=None, max_patches=20, progress=False)
    status = {r["name"]: r for r in results}
    assert status[small_slide.name]["status"] == "done" and status[small_slide.name]["n_patches"] == 20
    for bad in (truncated, not_a_slide):
        assert status[bad.name]["status"] == "failed" and str(bad) in status[bad.name]["error"]
    assert "--mpp" in status[no_mpp.name]["error"] and no_mpp.name in status[no_mpp.name]["error"]


def test_missing_mpp_is_a_clear_error_and_mpp_fills_it_only_where_missing(real_data):
    no_mpp = real_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(ValueError, match="--mpp"):
        til_maps.open_slide(no_mpp)
    assert til_maps.open_slide(no_mpp, mpp=1.0).mpp == 1.0
    with_mpp = til_maps.open_slide(real_data / "wsi" / "CMU-1-Small-Region.svs", mpp=1.0)
    assert with_mpp.mpp == pytest.approx(0.499) and with_mpp.mpp_source == "file"


def test_a_mismatched_checkpoint_is_a_clear_error_and_loses_nothing(tiny_model, small_slide, tmp_path):
    done = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, progress=False)
    before = {p.name: p.read_bytes() for p in Path(done["folder"]).iterdir()}
    ckpt = torch.load(tiny_model, weights_only=True)
    ckpt["spec"]["stages"][1]["widths"] = [24]  # the weights no longer fit the network
    bad = tmp_path / "mismatched.pt"
    torch.save(ckpt, bad)
    with pytest.raises(ValueError, match="mismatched.pt.*do not match"):
        til_maps.map_slides([small_slide], bad, tmp_path, scheduler=None, progress=False)
    spec = arch.tiny(num_classes=5, input_size=32)
    five = checkpoints.save_model(tmp_path / "five.pt", models.build(spec), spec)
    with pytest.raises(ValueError, match="five.pt.*2-class"):
        til_maps.load_til_model(five)
    assert {p.name: p.read_bytes() for p in Path(done["folder"]).iterdir()} == before


def test_backends_agree_with_eager_torch(tiny_model, tmp_path):
    model = til_maps.load_til_model(tiny_model)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    eager = til_maps.Predictor(model, "torch")(images)
    assert eager.shape == (5,) and ((eager > 0) & (eager < 1)).all()
    for backend in ("torch_channels_last", "onnxruntime", "openvino:fp32"):
        predictor = til_maps.Predictor(model, backend, onnx_dir=tmp_path)
        assert (predictor.label, predictor.precision) == (backend, "fp32")
        np.testing.assert_allclose(predictor(images), eager, atol=1e-5)
    assert til_maps.onnx_file(model, tmp_path).is_file()
    with pytest.raises(ValueError, match="backend"):
        til_maps.Predictor(model, "tensorrt")
    with pytest.raises(ValueError, match="auto"):
        til_maps.Predictor(model, "auto")
    assert {"auto", "torch", "onnxruntime", "openvino:bf16", "openvino:fp32"} <= set(til_maps.BACKENDS)
    assert til_maps.DEFAULT_BACKEND == "auto"


def test_auto_picks_a_checked_backend_once_and_every_output_names_it(tiny_model, small_slide, tmp_path):
    import pyarrow.parquet as pq

    [done] = til_maps.map_slides([small_slide], tiny_model, tmp_path, scheduler=None, backend="auto",
                                 max_patches=10, progress=False)
    assert done["status"] == "done", done
    assert done["backend"] in backends.available() and done["precision"] in ("fp32", "bf16")
    assert done["check"]["passed"] and done["check"]["max_prob_diff"] <= backends.MAX_PROB_DIFF
    record = json.loads((Path(done["folder"]) / "complete.json").read_text())
    assert (record["value"]["backend"], record["value"]["precision"]) == (done["backend"], done["precision"])
    assert record["value"]["check"] == done["check"]
    meta = pq.read_schema(Path(done["folder"]) / "patches.parquet").metadata
    assert meta[b"backend"].decode() == done["backend"] and meta[b"precision"].decode() == done["precision"]
    assert json.loads(meta[b"check"])["passed"] is True
    assert len(list((tmp_path / ".backend").glob("backend-choice-*.json"))) == 1
    model = til_maps.load_til_model(tiny_model)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    again = til_maps.choose(model, images, cache_dir=tmp_path / "other", onnx_dir=tmp_path,
                            candidates=["torch", "onnxruntime"])
    assert again["label"] in ("torch", "onnxruntime") and not again["from_cache"]
    assert til_maps.choose(model, images, cache_dir=tmp_path / "other", onnx_dir=tmp_path,
                           candidates=["torch", "onnxruntime"])["from_cache"]
    forced = til_maps.map_slide(small_slide, model, tmp_path / "forced", backend="openvino:fp32", max_patches=10,
                                progress=False)
    assert (forced["backend"], forced["precision"]) == ("openvino:fp32", "fp32") and forced["check"]["passed"]
    # auto among given candidates only (the notebook's `backends`); a bad label stops before any work
    [only] = til_maps.map_slides([small_slide], tiny_model, tmp_path / "only", scheduler=None, backend="auto",
                                 candidates=["onnxruntime"], max_patches=10, progress=False)
    assert only["backend"] == "onnxruntime"
    with pytest.raises(ValueError, match="tensorrt"):
        til_maps.map_slides([small_slide], tiny_model, tmp_path / "bad", scheduler=None, candidates=["tensorrt"])
    assert not (tmp_path / "bad" / Path(small_slide).stem).exists()


def test_onnx_session_names_a_damaged_file(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="bad.onnx"):
        export.onnx_session(bad)


def test_subsample_is_even_and_deterministic(real_data):
    from histolean import wsi

    grid = wsi.patch_grid(til_maps.open_slide(real_data / "wsi" / "CMU-1-Small-Region.svs"), patch_um=50, size=8)
    a, b = til_maps.subsample(grid, 50), til_maps.subsample(grid, 50)
    assert len(a) == 50 and (a.coords == b.coords).all()
    assert a.coords[0].tolist() == grid.coords[0].tolist() and a.coords[-1].tolist() == grid.coords[-1].tolist()
    assert til_maps.subsample(grid, None) is grid


def test_positive_probability_softmax_and_sigmoid():
    np.testing.assert_allclose(til_maps.positive_probability(np.array([[0.0, 0.0], [0.0, 1000.0]])), [0.5, 1.0])
    np.testing.assert_allclose(til_maps.positive_probability(np.array([[0.0], [-1000.0]])), [0.5, 0.0])


def test_a_finished_slide_is_a_cache_record_keyed_by_its_settings(tiny_model, small_slide, tmp_path):
    first = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, progress=False)
    record = Path(first["folder"]) / til_maps.COMPLETE
    key = json.loads(record.read_text())[cache.KEY_FIELD]
    assert cache.load(record, key)["n_patches"] == 10
    again = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, progress=False)
    assert again["status"] == "skipped"
    other = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=12, progress=False)
    assert other["status"] == "done" and other["n_patches"] == 12  # other settings: another key, mapped again
    assert json.loads(record.read_text())[cache.KEY_FIELD] != key


def test_a_corrupt_completion_record_is_moved_aside_and_the_slide_mapped_again(tiny_model, small_slide, tmp_path):
    done = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, progress=False)
    record = Path(done["folder"]) / til_maps.COMPLETE
    record.write_text('{"cache_key": "abc", "val')  # a record cut short
    with pytest.warns(cache.CorruptRecordWarning, match="complete.json"):
        again = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, progress=False)
    assert again["status"] == "done"
    assert not (record.parent / "complete.json.corrupt").exists()  # the old folder was replaced as a whole
    assert til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10,
                              progress=False)["status"] == "skipped"


def test_a_re_map_killed_midway_leaves_no_record_to_trust(tiny_model, small_slide, tmp_path, monkeypatch):
    from histolean.experiments.til_maps import outputs

    done = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, progress=False)
    record = Path(done["folder"]) / til_maps.COMPLETE
    assert record.is_file()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for a kill after the table was rewritten, before the map image

    monkeypatch.setattr(outputs, "write_map_image", killed)
    with pytest.raises(KeyboardInterrupt):
        til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, force=True,
                           progress=False)
    assert not record.exists()
    monkeypatch.undo()
    rerun = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, progress=False)
    assert rerun["status"] == "done"


def test_torch_threads_are_set_only_while_the_work_runs(tiny_model, small_slide, tmp_path):
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    model = til_maps.load_til_model(tiny_model)
    til_maps.Predictor(model, "torch", threads=target)
    assert torch.get_num_threads() == before  # a constructor does not touch the process
    seen = []

    class Recording(til_maps.Predictor):
        def __call__(self, images):
            seen.append(torch.get_num_threads())
            return super().__call__(images)

    til_maps.map_slide(small_slide, model, tmp_path, predictor=Recording(model, "torch"), threads=target,
                       max_patches=10, progress=False)
    assert seen and set(seen) == {target}
    assert torch.get_num_threads() == before
    with til_maps.torch_threads(None):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def test_the_gallery_shows_the_highest_and_lowest_scoring_patches(tiny_model, small_slide, tmp_path):
    done = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=30, progress=False)
    e = til_maps.extremes(done["folder"], small_slide, n=4, size=24)
    table = til_maps.read_patches(done["folder"])
    probs = np.sort(table["probability"].to_numpy())
    assert e["top"][0].shape == (4, 24, 24, 3) and e["bottom"][0].shape == (4, 24, 24, 3)
    np.testing.assert_array_equal(e["top"][1], probs[::-1][:4])
    np.testing.assert_array_equal(e["bottom"][1], probs[:4])
    # the images are the patches at those probabilities, read again from the slide
    best = table.loc[table["probability"].idxmax()]
    from histolean import wsi

    with til_maps.open_slide(small_slide) as slide:
        np.testing.assert_array_equal(e["top"][0][0], wsi.read_patch(slide, int(best.x), int(best.y),
                                                                     int(best.patch_px), 24))
    fig = til_maps.extremes_figure({(small_slide.name, "tiny"): e})
    assert len(fig.axes) == 8


def test_macenko_fits_a_slide_stain_and_maps_with_it(tiny_model, small_slide, tmp_path):
    from histolean.experiments.til_maps import mapping, stain

    model = til_maps.load_til_model(tiny_model)
    with til_maps.open_slide(small_slide) as slide:
        patches = mapping.held_out_patches(slide, model)
    fitted = stain.fit(patches)
    he = np.asarray(fitted["he"])
    assert he.shape == (3, 2) and (he > 0).all() and he[0, 0] > he[0, 1]  # haematoxylin absorbs more red
    same = stain.Normaliser(fitted, fitted)(patches)  # to its own stain: the patches come back
    assert same.dtype == np.uint8 and same.shape == patches.shape
    assert np.abs(same.astype(int) - patches.astype(int)).mean() < 3
    other = stain.Normaliser(fitted)(patches)  # to the published reference: changed
    assert np.abs(other.astype(int) - patches.astype(int)).mean() > 3
    with pytest.raises(ValueError, match="too little tissue"):
        stain.fit(np.full((2, 8, 8, 3), 250, dtype=np.uint8))
    plain = til_maps.map_slide(small_slide, model, tmp_path, backend="torch", max_patches=10, progress=False)
    plain_probs = til_maps.read_patches(plain["folder"])["probability"].to_numpy()
    normed = til_maps.map_slide(small_slide, model, tmp_path, backend="torch", max_patches=10, stain="macenko",
                                progress=False)
    assert normed["status"] == "done" and normed["stain"]["method"] == "macenko"  # another key: mapped again
    assert normed["stain"]["reference"] == "published Macenko reference" and plain["stain"] == {"method": "none"}
    assert not np.array_equal(til_maps.read_patches(normed["folder"])["probability"].to_numpy(), plain_probs)
    with pytest.raises(ValueError, match="--stain"):
        til_maps.map_slides([small_slide], tiny_model, tmp_path, scheduler=None, stain="reinhard", progress=False)


@pytest.mark.parametrize("name, mpp", [("CMU-1-Small-Region.svs", None), ("tcga-cr-7395-01a-01-ts1.svs", 1.0),
                                       ("tcga-cr-7395-01a-01-ts1.svs", 0.5)])
def test_strip_reading_gives_the_pixels_of_one_read_per_patch(real_data, name, mpp):
    from histolean import wsi

    with wsi.open_slide(real_data / "wsi" / name, mpp=mpp) as slide:
        grid = wsi.patch_grid(slide, patch_um=50, size=36)
        index = np.r_[0:60, 75, 77:90, len(grid) - 5:len(grid)]  # runs across rows, gaps, the last cells
        one_by_one = np.stack([grid.read(int(i)) for i in index])
        np.testing.assert_array_equal(wsi.read_patches(grid, index), one_by_one)
        assert wsi.read_patches(grid, []).shape == (0, 36, 36, 3)


def test_a_window_read_after_its_lead_in_decodes_the_tiles_a_whole_slide_map_decodes_there(real_data):
    from histolean import wsi
    from histolean.experiments.til_maps.slides import lead_in, window

    with wsi.open_slide(real_data / "wsi" / "CMU-1-Small-Region.svs") as slide:
        whole = wsi.patch_grid(slide, patch_um=50, size=76)
        part = window(whole, 32)
        start = int(np.flatnonzero((whole.cells == part.cells[0]).all(axis=1))[0])
        tiles = slide._level0_tiles()
        decoded = []
        decode = tiles.page.decode
        tiles.page.decode = lambda *a, **k: (decoded.append(1), decode(*a, **k))[1]

        def decodes(before) -> int:
            slide.reset_cache()
            wsi.read_patches(whole, before)
            decoded.clear()
            wsi.read_patches(whole, np.arange(start, start + len(part)))
            return len(decoded)

        in_a_map, after_lead_in, alone = decodes(np.arange(start)), decodes(lead_in(whole, part)), decodes([])
        assert in_a_map == after_lead_in < alone
        lead = lead_in(whole, part)
        assert lead.max() == start - 1 and whole.cells[lead, 0].min() >= part.cells[0, 0] - 3  # 240 px tiles
        assert len(lead_in(whole, whole)) == 0


def test_compare_backends_times_model_reading_and_end_to_end_on_one_core_budget(tiny_model, small_slide, tmp_path):
    model = til_maps.load_til_model(tiny_model)
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with til_maps.open_slide(small_slide, {}) as slide:
        res = til_maps.compare_backends(model, slide, ["torch", "onnxruntime"], n_patches=12, batch_size=4,
                                        repeats=2, threads=1, onnx_dir=tmp_path)
    assert list(res) == ["torch", "onnxruntime"]
    for r in res.values():
        assert r["check"]["passed"] and r["n_patches"] == 12
        model_s, e2e_s = r["timing"]["model"]["times_s"], r["timing"]["end_to_end"]["times_s"]
        shares = [m / e for m, e in zip(model_s, e2e_s)]  # paired round by round
        assert r["end_to_end_share"] == pytest.approx(np.median(shares))
        assert r["end_to_end_share_min"] == min(shares) <= r["end_to_end_share"] <= r["end_to_end_share_max"]
        ms = r["ms_per_patch"]
        assert ms["reading"] == pytest.approx(1e3 / r["read_per_s"]) and ms["model"] > 0
        read_s = [t * 12 / r["n_read_patches"] for t in r["timing"]["reading"]["times_s"]]
        assert r["reading_bound"] == pytest.approx(np.median([m / (m + t) for m, t in zip(model_s, read_s)]))
    assert res["torch"]["read_per_s"] == res["onnxruntime"]["read_per_s"]  # one reader for all
    if before is not None and len(before) > 1:
        assert len(res["torch"]["cores"]) == 1
        assert os.sched_getaffinity(0) == before  # the process is given its CPUs back
