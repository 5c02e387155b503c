"""The paper profile's dry run, cut further for CI: every notebook through the paper profile's code paths
(its networks at their paper inputs, its method settings, schedules and backends), with each loop cut to its
first step as in `histolean run --profile paper --dry-run`, and the model lists and image sides below cut
further so that all eight notebooks fit in a few minutes. The full dry run is run by hand (README,
"Running the paper profile")."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from histolean.study import runner
from histolean.util.paths import project_root

ROOT = project_root()

# BENCHMARK.KEY=VALUE over params/paper.yaml: fewer models and smaller images, never another code path
CUTS = [
    "nar_cost.throughput_models=[resnet50v2]",
    "resrep.networks=[resnet50v2_nar2]",
    "streaming_sgd.memory_sizes=[512]", "streaming_sgd.memory_tiles=[256]", "streaming_sgd.memory_tile=256",
    "streaming_sgd.memory_tiles_image=512", "streaming_sgd.memory_offdevice_sizes=[512]",
    "streaming_sgd.memory_large=1024", "streaming_sgd.e2e_sizes=[384]",
    "til_nar_resrep.architectures={resnet50v2: {base_input: 128, ir: [1], nar: [1], resrep: [0.90]}}",
    "monuseg_pruning.schemes=[network-wide]", "monuseg_pruning.crop=256", "monuseg_pruning.tile=256",
    "monuseg_pruning.overlap=32", "monuseg_pruning.speed_input=256",
    "pcam_idc_zoo.pcam_models=[b2]", "pcam_idc_zoo.idc_models=[b2]", "pcam_idc_zoo.transfer_models=[mobilenet]",
    "pcam_idc_zoo.indomain_models=[b2]", "pcam_idc_zoo.tune_models=[b2]", "pcam_idc_zoo.cost_models=[b2]",
    "til_maps.backends=[torch]",
]


@pytest.mark.slow
def test_the_paper_dry_run_cut_further_runs_every_notebook(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".*", "__pycache__"))
    shutil.copytree(ROOT / "params", tmp_path / "params")
    args = [sys.executable, "-m", "histolean.cli", "run", "--profile", "paper", "--dry-run"]
    for cut in CUTS:
        args += ["--set", cut]
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    out = tmp_path / "outputs" / "paper-dry-run"
    table = (out / "dry_run.md").read_text() if (out / "dry_run.md").exists() else ""
    assert done.returncode == 0, done.stderr[-3000:] + table
    assert not (tmp_path / "outputs" / "paper").exists()   # never beside real results
    names = list(runner.load_profile("paper", ROOT)["benchmarks"])
    for name in names:
        assert f"## {name}: ok" in table, table
        rows = [json.loads(line) for line in (out / "results" / f"{name}.jsonl").read_text().splitlines()]
        assert rows and all(r.get("dry_run") is True and r["profile"] == "paper" for r in rows), name
    # the trainings report their step, epoch estimate and GPU memory at the paper's inputs
    assert "GPU memory (est.)" in table
    for name in ("til_nar_resrep", "monuseg_pruning", "pcam_idc_zoo", "streaming_sgd"):
        section = table.split(f"## {name}:")[1].split("\n## ")[0]
        assert "trainings measured: 0" not in section, section
    resrep = table.split("## resrep:")[1].split("\n## ")[0]
    assert "240x240" in resrep, resrep   # the paper's input where no cut replaced it
    print(f"cut paper dry run: {seconds:.0f} s")   # no speed assert: the machine is shared
