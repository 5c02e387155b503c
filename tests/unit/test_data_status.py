"""`histolean data status`: the right counts for every dataset found, and how to get each missing one."""

from __future__ import annotations

import pytest

from histolean import data


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HISTOLEAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.mark.slow  # seconds on an idle 2-core CPU, more under load
def test_status_of_the_real_subsets(real_data):
    statuses = {s.name: s for s in data.dataset_status(real_data)}
    assert all(s.found for s in statuses.values()), [s.name for s in statuses.values() if not s.found]
    assert statuses["pcam"].counts == {"train": {"0": 1250, "1": 1250}, "valid": {"0": 300, "1": 300},
                                       "test": {"0": 300, "1": 300}}
    assert statuses["idc"].counts == {"test": {"0": 184, "1": 184}, "train": {"0": 835, "1": 835},
                                      "valid": {"0": 178, "1": 178}}
    assert not any("WARNING" in n for n in statuses["idc"].notes)  # no patient in two splits
    # MoNuSeg: Regions forming a polygon (one Region of TCGA-50-5931 has two vertices)
    assert statuses["monuseg"].counts == {"train": {"images": 10, "nuclei": 3818},
                                          "test": {"images": 14, "nuclei": 6697}}
    notes = " ".join(statuses["monuseg"].notes)
    assert "TCGA-NH-A8F7-01A-01-TS1" in notes and "1 Region(s)" in notes
    assert statuses["tnbc"].counts["all"] == {"images": 50, "nuclei": 4056, "slides": 11}
    crc = statuses["crchistophenotypes"].counts
    assert crc["all"]["inflammatory"] == 4166 and crc["all"]["detections"] == 12125
    assert crc["til_windows_100px"] == {"ambiguous_1_inflammatory": 112, "no_nuclei": 195,
                                        "til_negative": 307, "til_positive": 386}
    assert statuses["til"].counts == {"train": {"0": 35, "1": 1}, "valid": {"0": 35, "1": 1}}
    assert statuses["wsi"].counts == {"all": {"slides": 2}}
    assert any("tcga-cr-7395" in n and "NO mpp" in n for n in statuses["wsi"].notes)
    table = data.format_status(list(statuses.values()))
    assert "[found]   monuseg" in table and "nuclei=6697" in table


def test_status_of_an_empty_root_says_where_and_how(tmp_path):
    statuses = data.dataset_status(tmp_path)
    assert {s.name for s in statuses} == {"pcam", "idc", "monuseg", "tnbc", "crchistophenotypes", "til", "wsi"}
    for s in statuses:
        assert not s.found and s.looked_for == tmp_path / s.name
        assert "licence" in s.how_to_get and "http" in s.how_to_get
    table = data.format_status(statuses)
    assert table.count("[missing]") == 7 and str(tmp_path / "tnbc") in table


def test_status_reports_a_broken_dataset_instead_of_crashing(tmp_path):
    (tmp_path / "til" / "a_train_data").mkdir(parents=True)
    (tmp_path / "til" / "a_train_data" / "label.txt").write_text("missing.png 1 s.svs 0 0\n")
    (til,) = [s for s in data.dataset_status(tmp_path) if s.name == "til"]
    assert til.found and any("ERROR" in n and "missing.png" in n for n in til.notes)
