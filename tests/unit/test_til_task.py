"""The TIL task: strict label rule, split by image, fixed test grid, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histolean.data.common import DataError
from histolean.data.til_task import check_both_classes, load_til_task, window_labels


def _points(inflammatory=(), other=()):
    empty = np.zeros((0, 2))
    pts = {c: empty for c in ("detection", "epithelial", "fibroblast", "inflammatory", "others")}
    pts["inflammatory"] = np.asarray(inflammatory, float).reshape(-1, 2)
    pts["epithelial"] = np.asarray(other, float).reshape(-1, 2)
    return pts


def test_window_labels_strict_rule_and_half_open_window():
    pts = _points(inflammatory=[(5, 5), (15, 5), (10, 10), (20, 5)], other=[(25, 25)])
    # window [0, 10): one inflammatory centre -> negative (not dropped); [0, 20): three -> positive
    labels, n_inf, n_cls = window_labels(pts, [0, 0, 20], [0, 0, 0], side=10)
    assert n_inf.tolist() == [1, 1, 1] and labels.tolist() == [0, 0, 0]
    labels, n_inf, _ = window_labels(pts, [0, 10], [0, 0], side=20)
    assert n_inf.tolist() == [3, 3] and labels.tolist() == [1, 1]
    # x = 10 lies outside [0, 10): half-open windows
    labels, n_inf, _ = window_labels(pts, [0], [0], side=10, min_positive=1)
    assert n_inf.tolist() == [1] and labels.tolist() == [1]
    _, _, n_cls = window_labels(pts, [20, 100], [20, 100], side=10)
    assert n_cls.tolist() == [1, 0]


def test_real_task_split_by_image_grid_and_rule(real_data):
    task = load_til_task("crc_windows", real_data, train_windows_per_image=10, seed=0)
    assert task.data_kind == "real" and task.window_px == 91  # 50 um at 0.55 um/px
    groups = {s: set(task.split(s).groups) for s in ("train", "valid", "test")}
    assert not (groups["train"] & groups["valid"]) and not (groups["train"] & groups["test"])
    assert not (groups["valid"] & groups["test"])
    for s in ("train", "valid", "test"):
        assert set(np.unique(task.split(s).labels)) == {0, 1}
        assert task.split(s).images.shape[1:] == (91, 91, 3)
    # test windows lie on the fixed grid; training windows at other offsets too
    def offsets(paths):
        return [tuple(int(v[1:]) for v in p.split("#")[1].split("_")[:2]) for p in paths]
    assert all(x % 91 == 0 and y % 91 == 0 for x, y in offsets(task.test.paths))
    assert any(x % 91 or y % 91 for x, y in offsets(task.train.paths))
    # deterministic for the seed; another seed changes the training windows only
    again = load_til_task("crc_windows", real_data, train_windows_per_image=10, seed=0)
    other = load_til_task("crc_windows", real_data, train_windows_per_image=10, seed=1)
    assert again.fingerprint() == task.fingerprint() != other.fingerprint()
    assert other.test.paths == task.test.paths


def test_one_class_split_is_a_clear_error(tmp_path):
    folder = tmp_path / "til" / "x_train_data"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 100 + i, np.uint8)).save(folder / f"{i}.png")
    (folder / "label.txt").write_text("".join(f"{i}.png 0 s.svs 1 1\n" for i in range(3)))
    val = tmp_path / "til" / "x_val_data"
    val.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(val / "0.png")
    Image.fromarray(np.ones((8, 8, 3), np.uint8)).save(val / "1.png")
    (val / "label.txt").write_text("0.png 0 s.svs 1 1\n1.png 1 s.svs 2 2\n")
    with pytest.raises(DataError, match=r"'til', split 'train'.*both classes"):
        load_til_task("til", tmp_path)


def test_missing_folder_falls_back_to_synthetic(tmp_path):
    task = load_til_task("crc_windows", tmp_path, n_train=16, n_eval=8)
    assert task.data_kind == "synthetic" and len(task.train) == 16 and len(task.test) == 8
    check_both_classes(task.test, "crc_windows", "test")


@pytest.mark.parametrize("kwargs, message", [
    ({"dataset": "camelyon"}, "unknown dataset 'camelyon'"),
    ({"split_fractions": (0.5, 0.5)}, "split_fractions"),
    ({"min_positive": 0}, "min_positive"),
])
def test_bad_arguments_name_the_parameter(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_til_task(root=tmp_path, **kwargs)


def test_image_order_is_numeric_for_imgN_and_never_compares_a_number_with_a_name():
    from histolean.data.crc import image_order

    assert sorted(["img10", "img2", "img1"], key=image_order) == ["img1", "img2", "img10"]
    assert sorted(["patient-b", "img3", "patient-a"], key=image_order) == ["img3", "patient-a", "patient-b"]
