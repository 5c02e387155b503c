"""`histolean tilmap` fails early and cleanly, loses nothing, and checks the model before it paints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from histolean import arch, cli, models
from histolean.core import checkpoints
from histolean.experiments import til_maps
from histolean.util import cluster

REPO = Path(__file__).resolve().parents[2]
TCGA = "tcga-cr-7395-01a-01-ts1.svs"


def _model(path: Path, **info) -> Path:
    spec = arch.tiny(input_size=32)
    return checkpoints.save_model(path, models.build(spec, seed=0), spec, patch_um=50.0, mean=0.5, std=0.5,
                                  classes=["negative", "TIL"], **info)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return _model(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def small_slide(real_data) -> Path:
    return real_data / "wsi" / "CMU-1-Small-Region.svs"


@pytest.fixture
def no_cluster(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a Dask cluster was started")

    monkeypatch.setattr(cluster, "local_cluster", refuse)


def _tilmap(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(["tilmap", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("bad, named", [
    (["--workers", "0"], "--workers"), (["--workers", "0", "--threads", "1"], "--workers"),
    (["--threads", "0"], "--threads"), (["--mpp", "0"], "--mpp"), (["--max-patches", "-5"], "--max-patches"),
    (["--max-patches", "0"], "--max-patches"), (["--threshold", "1.5"], "--threshold"),
    (["--threshold", "-0.1"], "--threshold"), (["--min-auc", "2"], "--min-auc"),
    (["--batch-size", "0"], "--batch-size"), (["--out", "/etc/hostname/x"], "--out /etc/hostname/x"),
    (["--scheduler", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler at tcp://127.0.0.1:1"),
])
def test_each_bad_argument_is_one_line_and_exit_2_before_any_work(bad, named, tiny_model, small_slide, tmp_path,
                                                                   capsys, no_cluster):
    out = tmp_path / "maps"
    args = [small_slide, small_slide.parent / TCGA, "--model", tiny_model, "--out", out, *bad]
    rc, stdout, stderr = _tilmap(capsys, *args)
    assert rc == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("histolean: error:") and named in lines[0], stderr
    assert not out.exists() or not [p for p in out.iterdir() if p.name != ".backend"]  # nothing mapped


def test_every_bad_argument_is_reported_at_once(tiny_model, small_slide, tmp_path, capsys, no_cluster):
    rc, _, stderr = _tilmap(capsys, small_slide, "--model", tiny_model, "--out", tmp_path, "--workers", "0",
                            "--mpp", "-1", "--threshold", "2")
    assert rc == 2 and [line.split()[2] for line in stderr.strip().splitlines()] == ["--workers", "--mpp", "--threshold"]


def test_one_slide_is_mapped_without_starting_a_cluster(tiny_model, small_slide, tmp_path, capsys, no_cluster):
    rc, stdout, stderr = _tilmap(capsys, small_slide, "--model", tiny_model, "--out", tmp_path, "--max-patches", 10,
                                 "--backend", "torch")
    assert rc == 0, stderr
    assert "1 slide(s) mapped" in stdout


def _corrupt_copy(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose middle level-0 tile is zeroed: the file opens, that tile does not decode."""
    import tifffile

    shutil.copyfile(src, dst)
    with tifffile.TiffFile(dst) as tif:
        page = tif.pages[0]
        i = len(page.dataoffsets) // 2
        offset, count = page.dataoffsets[i], page.databytecounts[i]
    with open(dst, "r+b") as f:
        f.seek(offset)
        f.write(b"\0" * count)
    return dst


@pytest.mark.parametrize("scheduler", [None, pytest.param("local", marks=pytest.mark.slow)])
def test_an_undecodable_tile_fails_its_slide_by_name_while_the_others_finish(scheduler, tiny_model, small_slide,
                                                                            tmp_path):
    import openslide

    slides = tmp_path / "slides"
    slides.mkdir()
    bad = _corrupt_copy(small_slide, slides / "a-corrupt.svs")
    openslide.OpenSlide(str(bad)).close()  # it opens: only its pixels are broken
    (slides / small_slide.name).symlink_to(small_slide)
    results = til_maps.map_slides([slides], tiny_model, tmp_path / "out", scheduler=scheduler, backend="torch",
                                  max_patches=40, threshold=0.5, progress=False)
    status = {r["name"]: r for r in results}
    assert status[bad.name]["status"] == "failed" and str(bad) in status[bad.name]["error"]
    assert "\n" not in status[bad.name]["error"]
    assert status[small_slide.name]["status"] == "done"
    assert not (tmp_path / "out" / bad.stem / til_maps.COMPLETE).exists()


@pytest.mark.slow
def test_a_re_map_killed_midway_leaves_nothing_a_rerun_trusts(tiny_model, real_data, tmp_path):
    slide, out = real_data / "wsi" / TCGA, tmp_path / "maps"
    first = til_maps.map_slide(slide, tiny_model, out, mpp=1.0, backend="torch", max_patches=20, threshold=0.5,
                               progress=False)
    folder = Path(first["folder"])
    assert (folder / til_maps.COMPLETE).is_file()
    cmd = [sys.executable, "-m", "histolean.cli", "tilmap", str(slide), "--model", str(tiny_model), "--out", str(out),
           "--mpp", "1.0", "--scheduler", "none", "--backend", "torch", "--threshold", "0.5"]  # every patch now
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(REPO / "lib")}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob(f".{folder.name}.partial-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # predicting about 4,000 patches: well inside the run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    assert not (folder / til_maps.COMPLETE).exists()  # the old record went before any work
    # a rerun with the old settings maps again (nothing is trusted), and leaves no leftovers
    again = til_maps.map_slide(slide, tiny_model, out, mpp=1.0, backend="torch", max_patches=20, threshold=0.5,
                               progress=False)
    assert again["status"] == "done" and again["n_patches"] == 20
    assert not list(out.glob(f".{folder.name}.*"))
    assert len(til_maps.read_patches(folder)) == 20


def test_a_weak_model_is_refused_before_any_inference_unless_forced(small_slide, tmp_path, capsys, no_cluster):
    weak = _model(tmp_path / "weak.pt", oof_auc=0.6, oof_auc_ci=[0.5, 0.7], decision_threshold=0.4)
    out = tmp_path / "maps"
    rc, stdout, stderr = _tilmap(capsys, small_slide, "--model", weak, "--out", out, "--backend", "torch",
                                 "--max-patches", 10)
    assert rc == 2 and "Traceback" not in stderr and "0.600" in stderr and "--min-auc" in stderr
    assert not (out / small_slide.stem).exists() and not (out / ".onnx").exists()
    rc, stdout, stderr = _tilmap(capsys, small_slide, "--model", weak, "--out", out, "--backend", "torch",
                                 "--max-patches", 10, "--force")
    assert rc == 0, stderr
    done = json.loads((out / small_slide.stem / til_maps.COMPLETE).read_text())["value"]
    assert done["model_check"]["verdict"] == til_maps.REFUSED and done["model_check"]["forced"] is True
    assert done["threshold"] == 0.4 and done["threshold_source"] == "checkpoint"
    assert "mapped anyway" in stderr


def test_a_model_without_an_auc_is_mapped_at_0_5_and_says_so(tiny_model, small_slide, tmp_path):
    done = til_maps.map_slide(small_slide, tiny_model, tmp_path, backend="torch", max_patches=10, progress=False)
    assert done["model_check"]["verdict"] == til_maps.UNCHECKED and done["model_check"]["oof_auc"] is None
    assert done["threshold"] == 0.5 and done["threshold_source"].startswith("default 0.5")


def test_an_implausible_positive_rate_is_written_but_flagged_everywhere(tiny_model, small_slide, tmp_path, capsys,
                                                                        no_cluster):
    import pyarrow.parquet as pq

    args = [small_slide, "--model", tiny_model, "--out", tmp_path, "--backend", "torch", "--max-patches", 30,
            "--threshold", "0"]  # every patch positive: 100 %
    rc, stdout, stderr = _tilmap(capsys, *args)
    assert rc == 0 and "warning" in stderr and "30/30 patches (100.0%)" in stderr
    folder = tmp_path / small_slide.stem
    done = json.loads((folder / til_maps.COMPLETE).read_text())["value"]
    assert done["flag"].startswith("implausible") and done["plausibility"]["positive_rate"] == 1.0
    assert json.loads((folder / "patches.geojson").read_text())["properties"]["flag"] == done["flag"]
    assert json.loads((folder / "til_regions.geojson").read_text())["properties"]["flag"] == done["flag"]
    assert pq.read_schema(folder / "patches.parquet").metadata[b"flag"].decode() == done["flag"]
    rc, _, stderr = _tilmap(capsys, *args, "--strict")  # skipped, but the record keeps the flag
    assert rc == 1 and "implausible" in stderr
    assert til_maps.plausibility(50, 1000)["flag"] is None
    assert "below" in til_maps.plausibility(0, 1000)["flag"]


def test_a_flag_is_warned_once_by_map_slides_not_by_each_slide(tiny_model, small_slide, tmp_path):
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        [r] = til_maps.map_slides([small_slide], tiny_model, tmp_path, scheduler=None, backend="torch",
                                  max_patches=10, threshold=0.0, progress=False)
    flagged = [w for w in seen if issubclass(w.category, til_maps.ImplausibleMapWarning)]
    assert r["flag"] and len(flagged) == 1 and "10/10 patches (100.0%)" in str(flagged[0].message)
