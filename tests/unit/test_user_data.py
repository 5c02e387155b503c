"""A user's own folders: the three patch layouts, nuclei masks / GeoJSON, `histolean data check` and its errors.

Folders are built in tmp_path from the real subsets (PCam patches, TNBC crops, MoNuSeg tiles).
"""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from histolean.cli import main
from histolean.data import DataError, load_nuclei_folder, load_patch_folder
from histolean.data.monuseg import parse_annotation, rasterise
from histolean.data.til_task import load_til_task
from histolean.data.tnbc import instances_from_mask
from histolean.study import records, report

# the loaders warn (no groups, RGBA, binary masks): asserted with pytest.warns where they are the point
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def check(path, kind, capsys, *extra):
    """``histolean data check`` in-process: (exit code, printed text)."""
    code = main(["data", "check", str(path), "--kind", kind, *extra])
    return code, capsys.readouterr().out


def tree(folder):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture()
def quiet_cwd(tmp_path, monkeypatch):
    """An empty working directory and cache: a check must leave both empty."""
    cwd, cache = tmp_path / "cwd", tmp_path / "cache"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HISTOLEAN_CACHE", str(cache))
    return cwd, cache


# ---------------------------------------------------------------- patches: the three layouts


def test_class_subfolders_check_and_load(patch_folder, capsys):
    folder = patch_folder("classes")
    code, out = check(folder, "patches", capsys)
    assert code == 0, out
    assert "class subfolders; 24 patches" in out and "negative -> label 0, positive -> label 1" in out
    assert "no group ids" in out and "mpp unknown" in out and "96x96" in out
    with pytest.warns(UserWarning, match="no group ids"):
        splits, described = load_patch_folder(folder)
    assert described["layout"] == "class subfolders"
    seen = set()
    for name, part in splits.items():
        assert part.data_kind == "user" and part.dataset == f"folder:{folder}" and part.split == name
        assert set(part.labels) == {0, 1} and part.images.shape[1:] == (96, 96, 3)
        assert not seen & set(part.paths)
        seen |= set(part.paths)
    assert len(seen) == 24
    # the labels follow the folder names, pixels are the file's
    i = splits["train"].paths.index(next(p for p in splits["train"].paths if "/positive/" in p))
    assert splits["train"].labels[i] == 1
    assert np.array_equal(splits["train"].images[i], np.asarray(Image.open(splits["train"].paths[i]).convert("RGB")))


def test_split_subfolders_keep_their_splits_and_convert_odd_images(patch_folder, capsys):
    folder = patch_folder("splits", per_class=8)
    grey, rgba, small = (sorted((folder / "train" / "0").glob("*.png"))[i] for i in range(3))
    Image.open(grey).convert("L").save(grey)
    Image.open(rgba).convert("RGBA").save(rgba)
    Image.open(small).resize((80, 80)).save(small)
    code, out = check(folder, "patches", capsys)
    assert code == 0, out
    assert "split subfolders" in out and "train: 16 patches" in out and "test: 8 patches" in out
    assert f"WARNING {small}: patches differ in size" in out and "resized to 96x96" in out
    assert f"WARNING {grey}: 1 patch(es) in mode L" in out and f"WARNING {rgba}: 1 patch(es) in mode RGBA" in out
    with pytest.warns(UserWarning, match="patches differ in size"):
        splits, _ = load_patch_folder(folder, size=64)
    assert {s: len(p) for s, p in splits.items()} == {"train": 16, "valid": 8, "test": 8}
    assert all(p.images.shape[1:] == (64, 64, 3) and p.images.dtype == np.uint8 for p in splits.values())
    assert all(f"/{s}/" in path for s, p in splits.items() for path in p.paths)


def test_csv_with_groups_splits_by_group_and_crops_to_50_um(patch_folder, capsys):
    folder = patch_folder("csv", per_class=12)
    (folder / "dataset.json").write_text(json.dumps({"mpp": 0.972}))
    code, out = check(folder, "patches", capsys)
    assert code == 0 and "no group" not in out, out
    assert "mpp 0.972 um/px: patches cover 93 um; 50 um = 51 px" in out and "split by group" in out
    splits, described = load_patch_folder(folder / "labels.csv", limits={"train": 10})
    groups = {s: set(p.groups) for s, p in splits.items()}
    assert not (groups["train"] & groups["valid"] or groups["train"] & groups["test"] or groups["valid"] & groups["test"])
    assert len(splits["train"]) == 10 and splits["train"].class_counts() == {0: 5, 1: 5}
    assert described["window_px"] == 51 and all(p.images.shape[1:] == (51, 51, 3) for p in splits.values())
    full = np.asarray(Image.open(splits["test"].paths[0]).convert("RGB"))
    assert np.array_equal(splits["test"].images[0], full[22:73, 22:73])   # the centre 51 px of 96


def test_folder_through_load_til_task(patch_folder):
    folder = patch_folder("csv", per_class=12)
    (folder / "dataset.json").write_text(json.dumps({"mpp": 0.972}))
    task = load_til_task(f"folder:{folder}", window_um=50.0, n_train=8, split_fractions=(0.5, 0.25, 0.25))
    assert task.dataset == f"folder:{folder}" and task.data_kind == "user" and task.window_px == 51
    assert len(task.train) == 8 and all(set(task.split(s).labels) == {0, 1} for s in ("train", "valid", "test"))
    assert task.description["n_train_cap"] == 8 and task.fingerprint()
    assert not set(task.train.groups) & set(task.test.groups)


def test_rows_of_a_folder_are_user_rows_in_the_report(tmp_path):
    rec = records.Recorder("toy", tmp_path, profile="smoke")
    rec.add(dataset="folder:/data/mine", data_kind="user", model="m", method="original", metrics={"auc": 0.8})
    [row] = records.read_rows(tmp_path, "toy")
    assert row["data_kind"] == "user" and row["dataset"] == "folder:/data/mine"
    html = report.rows_table([row])
    assert "folder:/data/mine" in html and "<td>user</td>" in html and "SYNTHETIC" not in html


# ---------------------------------------------------------------- patches: each blocking problem


def _truncated(folder):
    victim = sorted((folder / "negative").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:200])
    return victim, "corrupt or truncated"


def _garbage(folder):
    victim = sorted((folder / "positive").glob("*.png"))[0]
    victim.write_text("not an image")
    return victim, "cannot open the image"


def _one_class(folder):
    shutil.rmtree(folder / "positive")
    return folder, "one class only"


def _too_few(folder):
    for name in ("negative", "positive"):
        for extra in sorted((folder / name).glob("*.png"))[2:]:
            extra.unlink()
    return folder, "fewer than the notebooks need"


def _labels_not_0_to_n(folder):
    (folder / "positive").rename(folder / "2")
    (folder / "negative").rename(folder / "0")
    return folder, r"labels \[0, 2\] are not 0..1"


def _group_in_two_splits(folder):
    files = sorted(p.relative_to(folder) for p in folder.rglob("*.png"))
    lines = [f"{p},{int(p.parent.name == 'positive')},slide{i % 4},{('train', 'valid', 'test')[i % 3]}"
             for i, p in enumerate(files)]
    (folder / "labels.csv").write_text("path,label,group,split\n" + "\n".join(lines) + "\n")
    return folder, "group 'slide.' is in .* and in "


@pytest.mark.parametrize("spoil", [_truncated, _garbage, _one_class, _too_few, _labels_not_0_to_n,
                                   _group_in_two_splits], ids=lambda f: f.__name__.strip("_"))
def test_each_patch_problem_blocks_with_its_message_and_writes_nothing(patch_folder, capsys, quiet_cwd, spoil):
    folder = patch_folder("classes")
    where, message = spoil(folder)
    before = tree(folder)
    code, out = check(folder, "patches", capsys)
    assert code == 2, out
    assert re.search(f"ERROR   {re.escape(str(where))}.*{message}", out), out
    assert "blocking problem(s)" in out
    assert tree(folder) == before and not any(quiet_cwd[0].iterdir()) and not quiet_cwd[1].exists()
    # the loaders (and so the notebooks) stop with the same message
    with pytest.raises(DataError, match=message):
        load_patch_folder(folder)


def test_missing_csv_file_and_bad_label_are_named(patch_folder, capsys):
    folder = patch_folder("csv", per_class=6)
    with open(folder / "labels.csv", "a") as f:
        f.write("patches/gone.png,1,slide0\npatches/x.png,yes,slide1\n")
    code, out = check(folder, "patches", capsys)
    assert code == 2
    assert f"ERROR   {folder / 'patches/gone.png'}: listed on line" in out
    assert "label 'yes' is not an integer" in out
    code, out = check(folder / "nowhere", "patches", capsys)
    assert code == 2 and "does not exist" in out


# ---------------------------------------------------------------- nuclei


def _tnbc_folder(real_data, dest, n=3, instance_masks=False):
    pairs = sorted((real_data / "tnbc" / "Slide_01").glob("*.png"))[:n]
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    for image in pairs:
        shutil.copy(image, dest / "images" / image.name)
        mask = np.asarray(Image.open(real_data / "tnbc" / "GT_01" / image.name).convert("L"))
        if instance_masks:
            Image.fromarray(instances_from_mask(mask).astype(np.uint16)).save(dest / "masks" / image.name)
        else:
            shutil.copy(real_data / "tnbc" / "GT_01" / image.name, dest / "masks" / image.name)
    return dest, pairs


def test_nuclei_binary_masks_are_labelled_with_a_warning(real_data, tmp_path, capsys):
    folder, pairs = _tnbc_folder(real_data, tmp_path / "binary")
    code, out = check(folder, "nuclei", capsys)
    assert code == 0 and "3 binary mask(s)" in out and "all: 3 image(s)" in out, out
    with pytest.warns(UserWarning, match="binary mask"):
        samples = load_nuclei_folder(folder)
    expected = instances_from_mask(np.asarray(Image.open(real_data / "tnbc" / "GT_01" / pairs[0].name).convert("L")))
    assert samples[0].data_kind == "user" and samples[0].dataset == f"folder:{folder}"
    assert np.array_equal(samples[0].instances, expected) and samples[0].image.shape[2] == 3


def test_nuclei_instance_masks_load_exactly(real_data, tmp_path, capsys):
    folder, pairs = _tnbc_folder(real_data, tmp_path / "instances", instance_masks=True)
    (folder / "dataset.json").write_text('{"mpp": 0.25}')
    code, out = check(folder, "nuclei", capsys)
    assert code == 0 and "binary" not in out and "mpp 0.25" in out, out
    samples = load_nuclei_folder(folder, limit=2, seed=1)
    assert len(samples) == 2 and all(s.mpp == 0.25 and s.n_instances > 5 for s in samples)
    mask = np.asarray(Image.open(real_data / "tnbc" / "GT_01" / f"{samples[0].name}.png").convert("L"))
    assert np.array_equal(samples[0].instances, instances_from_mask(mask))


def test_qupath_geojson_rasterises_like_monuseg(real_data, tmp_path, capsys):
    folder = tmp_path / "geo"
    (folder / "train" / "images").mkdir(parents=True)
    (folder / "train" / "annotations").mkdir()
    xmls = sorted((real_data / "monuseg" / "test" / "annotations").glob("*.xml"))[:2]
    for xml in xmls:
        ann = parse_annotation(xml)
        features = [{"type": "Feature", "id": r.region_id, "properties": {"objectType": "detection"},
                     "geometry": {"type": "Polygon", "coordinates": [r.xy.tolist()]}} for r in ann.regions]
        (folder / "train" / "annotations" / f"{xml.stem}.geojson").write_text(
            json.dumps({"type": "FeatureCollection", "features": features}))
        shutil.copy(real_data / "monuseg" / "test" / "images" / f"{xml.stem}.tif", folder / "train" / "images")
    code, out = check(folder, "nuclei", capsys)
    assert code == 0 and "split folders" in out and "train: 2 image(s)" in out, out
    [sample] = load_nuclei_folder(folder, split="train", limit=1, seed=0)
    xml = real_data / "monuseg" / "test" / "annotations" / f"{sample.name}.xml"
    expected, _ = rasterise(parse_annotation(xml), sample.image.shape[:2])
    assert np.array_equal(sample.instances, expected) and sample.n_instances > 100


def _mask_without_image(folder):
    victim = sorted((folder / "images").glob("*.png"))[0]
    victim.unlink()
    return folder / "masks" / victim.name, "has no image"


def _colour_mask(folder):
    victim = sorted((folder / "masks").glob("*.png"))[0]
    rgb = np.zeros((512, 512, 3), np.uint8)
    rgb[10:20, 10:20] = (255, 0, 0)
    Image.fromarray(rgb).save(victim)
    return victim, r"labels not in \{0..N\}"


def _float_mask(folder):
    victim = sorted((folder / "masks").glob("*.png"))[0]
    victim.unlink()
    Image.fromarray(np.full((512, 512), -1.0, np.float32)).save(victim.with_suffix(".tif"))
    return victim.with_suffix(".tif"), r"labels not in \{0..N\}"


def _corrupt_image(folder):
    victim = sorted((folder / "images").glob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:300])
    return victim, "corrupt or truncated"


def _too_few_images(folder):
    for image in sorted((folder / "images").glob("*.png"))[1:]:
        image.unlink()
        (folder / "masks" / image.name).unlink()
    return folder, "fewer than the 2 the nuclei notebook needs"


@pytest.mark.parametrize("spoil", [_mask_without_image, _colour_mask, _float_mask, _corrupt_image, _too_few_images],
                         ids=lambda f: f.__name__.strip("_"))
def test_each_nuclei_problem_blocks_with_its_message_and_writes_nothing(real_data, tmp_path, capsys, quiet_cwd,
                                                                         spoil):
    folder, _ = _tnbc_folder(real_data, tmp_path / "nuclei", instance_masks=True)
    where, message = spoil(folder)
    before = tree(folder)
    code, out = check(folder, "nuclei", capsys)
    assert code == 2, out
    assert re.search(f"ERROR   {re.escape(str(where))}.*{message}", out), out
    assert tree(folder) == before and not any(quiet_cwd[0].iterdir()) and not quiet_cwd[1].exists()
    with pytest.raises(DataError, match=message):
        load_nuclei_folder(folder)


# ---------------------------------------------------------------- the experiments' slots take a folder

def test_a_patch_folder_fills_a_zoo_slot_and_its_rows_name_it(patch_folder, tmp_path):
    from histolean.data import load_patches
    from histolean.experiments import pcam_idc_zoo as kz

    folder = patch_folder("csv")
    spec = f"folder:{folder}"
    sets = {"pcam": {split: load_patches(spec, split, limit=6, seed=0) for split in ("train", "valid", "test")}}
    assert all(s.data_kind == "user" and s.dataset == spec for s in sets["pcam"].values())
    assert len(sets["pcam"]["train"]) == 6 and set(sets["pcam"]["train"].labels) == {0, 1}
    zoo = kz.ZooRunner(records.Recorder("pcam_idc_zoo", tmp_path, profile="test"), sets, tmp_path / "m", epochs=1,
                       batch_size=4, lr=1e-3, names={"pcam": spec})
    assert zoo.kinds == {"pcam": "user"} and zoo.unit("pcam") == "group"
    test = zoo.test_set("pcam")   # the folder's groups (slide ids of the CSV) are what the bootstrap resamples
    assert test["resampling_unit"] == "group" and set(test["test_groups"]) <= {f"slide{i}" for i in range(6)}
    row = zoo.skip("pcam", "b2", "full", "not trained in this test")
    assert (row["dataset"], row["slot"], row["data_kind"]) == (spec, "pcam", "user")


def test_a_bad_patch_folder_stops_load_patches_with_the_checks_message(patch_folder):
    from histolean.data import load_patches

    folder = patch_folder("classes")
    shutil.rmtree(folder / "positive")
    with pytest.raises(DataError, match="one class"):
        load_patches(f"folder:{folder}", "train")


def _nuclei_config(tmp_path, **overrides):
    from histolean.experiments import monuseg_pruning

    parameters = dict(output_dir=str(tmp_path / "out"), data_root="", seed=0, train_data="monuseg",
                      shift_data="tnbc", mpp=None, width=0.125, encoder_weights="", n_train=4, crop=64,
                      crops_per_image=1, batch_size=2, lr=1e-3, epochs=1, retrain_epochs=1, max_cr=2,
                      schemes=["network-wide"], n_test=1, n_tnbc=2, eval_crop=64, tile=64, overlap=0, speed_input=64,
                      speed_repeats=5, resume=True, workers=1)
    return monuseg_pruning.Config.from_parameters(parameters | overrides)


def test_nuclei_folders_fill_the_training_and_the_shift_slot(real_data, tmp_path):
    from histolean.experiments import monuseg_pruning

    flat, _ = _tnbc_folder(real_data, tmp_path / "flat", n=3, instance_masks=True)
    split = tmp_path / "split"
    for part, n in (("train", 2), ("test", 2)):
        _tnbc_folder(real_data, split / part, n=n, instance_masks=True)
    config = _nuclei_config(tmp_path, train_data=f"folder:{flat}", shift_data=f"folder:{split}")
    images = monuseg_pruning.load_data(config)
    # flat folder: n_test images drawn for scoring, the others trained on; no image in both
    assert len(images.scored["monuseg"]) == 1 and len(images.train) == 2
    assert not {s.name for s in images.train} & {s.name for s in images.scored["monuseg"]}
    assert images.kinds == {"train": "user", "monuseg": "user", "tnbc": "user"}
    assert images.name("monuseg") == f"folder:{flat}" and images.data_kind("tnbc") == "user"
    assert len(images.scored["tnbc"]) == 2 and "folder:" in images.describe()
    # a folder with train/ and test/ split folders trains on train/ and scores test/
    by_split = monuseg_pruning.load_data(_nuclei_config(tmp_path, train_data=f"folder:{split}"))
    assert len(by_split.train) == 2 and len(by_split.scored["monuseg"]) == 1 and by_split.name("tnbc") == "tnbc"
    with pytest.raises(DataError, match=r"3 images, but n_test = 3 are scored"):
        monuseg_pruning.load_data(_nuclei_config(tmp_path, train_data=f"folder:{flat}", n_test=3))
    with pytest.raises(ValueError, match="shift_data 'tnbcx'"):
        monuseg_pruning.load_data(_nuclei_config(tmp_path, shift_data="tnbcx"))


def test_nuclei_claims_name_the_folder_in_the_slot():
    from histolean.experiments import monuseg_pruning

    row = {"kind": "variant", "method": monuseg_pruning.METHOD, "dataset": "folder:/data/mine", "slot": "monuseg",
           "data_kind": "user", "setting": {"scheme": "unpruned", "cr": 1}, "metrics": {}, "scale": {}}
    scores = monuseg_pruning.paper._Scores([row])
    assert scores.row("monuseg", "unpruned", 1) is row
    assert scores.label("monuseg") == "folder:/data/mine (in the MoNuSeg test slot)" and scores.label("tnbc") == \
        "TNBC (distribution shift)"
