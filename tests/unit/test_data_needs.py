"""Missing and partial datasets reported per benchmark before a run, with the folder and how to get them."""

from __future__ import annotations

from histolean.data.status import DatasetStatus
from histolean.study import data_needs, runner
from histolean.util.paths import project_root

ROOT = project_root()


def test_items_counts_images_for_segmentation_sets_and_patches_otherwise():
    assert data_needs.items(DatasetStatus("monuseg", True, counts={"train": {"images": 4, "nuclei": 900},
                                                                   "test": {"images": 2, "nuclei": 300}})) == 6
    assert data_needs.items(DatasetStatus("pcam", True, counts={"train": {"0": 10, "1": 12}, "test": {"0": 3}})) == 25


def test_an_empty_data_root_reports_every_dataset_missing_per_benchmark(tmp_path):
    cfg = runner.load_profile("paper", ROOT)
    lines = data_needs.report(cfg, list(cfg["benchmarks"]), str(tmp_path))
    assert "fall back to the procedural generator" in lines[0]
    body = lines[1:]
    assert f"resrep: pcam missing (looked for {tmp_path / 'pcam'})" in "\n".join(body)
    assert any(line.startswith("pcam_idc_zoo: idc missing") and "histolean data fetch idc" in line for line in body)
    assert any(line.startswith("til_nar_resrep: crchistophenotypes missing") for line in body)
    assert not any(line.startswith("nar_cost:") for line in body)   # cost rows read no data
    # every benchmark that reads data is named, once per dataset it reads
    assert len(body) == sum(len(data_needs.reads(b, p)) for b, p in cfg["benchmarks"].items())


def test_the_shared_subsets_are_reported_as_subsets(real_data):
    cfg = runner.load_profile("paper", ROOT)
    lines = data_needs.report(cfg, ["resrep", "monuseg_pruning"], str(real_data))
    pcam = [line for line in lines if line.startswith("resrep: pcam is a subset")]
    assert len(pcam) == 1 and "of 327,680 patches" in pcam[0] and "histolean data fetch pcam" in pcam[0]
    assert "fall back" not in pcam[0]
    # the shared TNBC copy is complete (50 images): not reported
    assert not any("tnbc" in line for line in lines)


def test_a_slot_given_a_user_folder_reads_no_shared_dataset():
    assert data_needs.reads("pcam_idc_zoo", {}) == ("pcam", "idc")
    assert data_needs.reads("pcam_idc_zoo", {"idc_data": "folder:/x"}) == ("pcam",)
    assert data_needs.reads("monuseg_pruning", {"train_data": "folder:/x", "shift_data": "folder:/y"}) == ()
    assert data_needs.reads("til_nar_resrep", {"dataset": "folder:/x"}) == ()
    assert data_needs.reads("resrep", {"dataset": "pcam"}) == ("pcam",)
