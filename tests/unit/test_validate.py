"""Profile validation: the shipped profiles pass; deliberate errors stop the run in seconds, naming the key."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time

import pytest

from histolean.study import runner, validate
from histolean.util.paths import benchmark_name, notebook_path, project_root

ROOT = project_root()


@pytest.fixture(scope="module")
def paper():
    return runner.load_profile("paper", ROOT)


def _problems(cfg, benchmark, **changes):
    cfg = copy.deepcopy(cfg)
    cfg["benchmarks"][benchmark].update(changes)
    with pytest.raises(validate.ProfileError) as err:
        validate.check_profile(cfg, ROOT)
    lines = str(err.value).splitlines()
    assert all(line.startswith(f"params/paper.yaml: benchmark {benchmark!r}, key ") for line in lines), lines
    return lines


@pytest.mark.parametrize("profile", runner.PROFILES)
def test_every_shipped_profile_is_valid(profile):
    cfg = runner.load_profile(profile, ROOT)
    assert set(cfg["benchmarks"]) == {benchmark_name(p) for p in (ROOT / "notebooks").glob("0*_*.ipynb")}
    validate.check_profile(cfg, ROOT)   # raises on any problem


def test_the_parameters_cell_is_parsed_with_defaults_and_listed_choices():
    defaults, choices = validate.declared_parameters(notebook_path(ROOT, "resrep"))
    assert defaults["networks"] == ["tiny"] and defaults["lr"] == pytest.approx(2e-3)
    assert choices["networks"] == ["tiny", "b6", "resnet50v2", "resnet50v2_nar2", "inception_v4"]
    assert choices["optimizer_setting"] == ["nar", "resrep"]


def test_an_unknown_model_name(paper):
    lines = _problems(paper, "pcam_idc_zoo", pcam_models=["b2", "resnet51"])
    assert len(lines) == 1 and "key 'pcam_models': unknown keras model 'resnet51'" in lines[0]
    # a torch-only network in the Keras zoo is as wrong as a typo
    assert "unknown keras model 'inception_v4'" in _problems(paper, "pcam_idc_zoo", tune_models=["inception_v4"])[0]
    assert "'resnet5'" in _problems(paper, "til_nar_resrep", architectures={"resnet5": {"base_input": 240}})[0]
    assert "'vgg' is not one of tiny" in _problems(paper, "resrep", networks=["vgg"])[0]


def test_negative_zero_and_fractional_counts(paper):
    assert _problems(paper, "resrep", epochs=-3) == [
        "params/paper.yaml: benchmark 'resrep', key 'epochs': -3 must not be negative"]
    assert "key 'batch_size': 0 must be positive" in _problems(paper, "monuseg_pruning", batch_size=0)[0]
    assert "key 'resrep.epochs': 2.5 must be a whole number" in _problems(
        paper, "til_nar_resrep", resrep={**paper["benchmarks"]["til_nar_resrep"]["resrep"], "epochs": 2.5})[0]
    assert "key 'e2e_sizes'" in _problems(paper, "streaming_sgd", e2e_sizes=[384, 0])[0]


def test_input_sizes_below_a_networks_minimum(paper):
    lines = _problems(paper, "resrep", input_size=64)
    assert lines == ["params/paper.yaml: benchmark 'resrep', key 'input_size': 64 px is below inception_v4's "
                     "minimum input of 75 px"]
    # the TIL study's IR variants shrink the input: 100 px / 1.15^3 = 66 px < 75 for Inception V4
    archs = {"inception_v4": {"base_input": 100, "ir": [1, 3], "nar": [1]}}
    lines = _problems(paper, "til_nar_resrep", architectures=archs)
    assert len(lines) == 1 and "key 'architectures.inception_v4.ir': level 3 takes 66 px" in lines[0]
    assert "below b6's minimum" in _problems(paper, "pcam_idc_zoo", idc_upscale=32)[0]
    # notebook 02 builds both networks with the paper's IR levels: 128 px / 1.15^4 = 73 px < 75 (Inception V4)
    lines = _problems(paper, "nar_cost", patch_px=128, throughput_models=["resnet50v2"])
    assert lines == ["params/paper.yaml: benchmark 'nar_cost', key 'patch_px': IR k=4 takes 73 px: 73 px is below "
                     "inception_v4's minimum input of 75 px; raise patch_px"]


def test_unknown_keys_wrong_kinds_and_choices(paper):
    assert "key 'epoch': not declared in the parameters cell of 03_resrep.ipynb" in _problems(
        paper, "resrep", epoch=3)[0]
    assert "key 'resrep.epoch': unknown key" in _problems(
        paper, "til_nar_resrep", resrep={**paper["benchmarks"]["til_nar_resrep"]["resrep"], "epoch": 3})[0]
    assert "'ten' is a text, but the notebook's default 1 is a number" in _problems(
        paper, "monuseg_pruning", epochs="ten")[0]
    assert "'crc' is not one of crc_windows, til, pcam, folder:PATH" in _problems(
        paper, "til_nar_resrep", dataset="crc")[0]
    # a user's folder is a choice wherever the cell lists "folder:PATH"; the bare prefix is not a folder
    for benchmark, changes in (("til_nar_resrep", {"dataset": "folder:/data/mine"}),
                               ("pcam_idc_zoo", {"pcam_data": "folder:/data/a", "idc_data": "folder:/data/b"}),
                               ("monuseg_pruning", {"train_data": "folder:/x", "shift_data": "folder:/y"})):
        cfg = copy.deepcopy(paper)
        cfg["benchmarks"][benchmark].update(changes)
        validate.check_profile(cfg, ROOT)   # no ProfileError
    assert "'folder:' is not one of" in _problems(paper, "resrep", dataset="folder:")[0]
    assert "key 'backends': 'openvino:fp8'" in _problems(paper, "til_maps", backends=["torch", "openvino:fp8"])[0]


def test_every_problem_is_reported_one_line_each(paper):
    lines = _problems(paper, "resrep", epochs=-1, input_size=8, networks=["inception_v4", "vgg"])
    # negative epochs; vgg not among the notebook's choices, nor a torch model; 8 px below Inception V4's 75
    assert len(lines) == 4, lines
    assert any("key 'input_size': 8 px is below inception_v4's minimum" in line for line in lines)


@pytest.mark.slow
def test_a_bad_paper_profile_stops_the_dry_run_in_seconds(tmp_path):
    """`histolean run --profile paper --dry-run` exits 2 with one line per problem before any notebook starts."""
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".*", "__pycache__"))
    (tmp_path / "params").mkdir()
    text = (ROOT / "params" / "paper.yaml").read_text(encoding="utf-8")
    text = text.replace("pcam_models: [b2, b6,", "pcam_models: [b2, b66,").replace("epochs: 15,", "epochs: -15,")
    (tmp_path / "params" / "paper.yaml").write_text(text, encoding="utf-8")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "histolean.cli", "run", "--profile", "paper", "--dry-run"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("histolean: error: params/paper.yaml: benchmark 'pcam_idc_zoo', key ")
    assert any("key 'pcam_models': unknown keras model 'b66'" in line for line in lines)
    assert any("key 'epochs': -15 must not be negative" in line for line in lines)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.jsonl"))
    print(f"stopped after {seconds:.1f} s")   # no speed assert: the machine is shared


def test_set_overrides_replace_one_key_and_go_through_the_same_checks(paper):
    cfg = runner.apply_overrides(paper, ["pcam_idc_zoo.pcam_models=[b2]", "til_nar_resrep.cv_folds=2",
                                         "streaming_sgd.memory_sizes=[512, 1024]"])
    assert cfg["benchmarks"]["pcam_idc_zoo"]["pcam_models"] == ["b2"]
    assert cfg["benchmarks"]["til_nar_resrep"]["cv_folds"] == 2
    assert cfg["benchmarks"]["streaming_sgd"]["memory_sizes"] == [512, 1024]
    assert paper["benchmarks"]["til_nar_resrep"]["cv_folds"] == 5   # the profile itself is untouched
    validate.check_profile(cfg, ROOT)
    with pytest.raises(validate.ProfileError, match="key 'epochs': -1 must not be negative"):
        validate.check_profile(runner.apply_overrides(paper, ["resrep.epochs=-1"]), ROOT)
    for bad, why in [("resrep.epochs", "expected BENCHMARK.KEY=VALUE"), ("epochs=3", "expected BENCHMARK.KEY=VALUE"),
                     ("nosuch.epochs=3", "no benchmark 'nosuch'"), ("resrep.networks=[a, b", "not valid YAML")]:
        with pytest.raises(ValueError, match=why):
            runner.apply_overrides(paper, [bad])
