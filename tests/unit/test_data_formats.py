"""Every loader on the real subsets ($HISTOLEAN_DATA) and on small generated files."""

from __future__ import annotations

import csv
import gzip
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from histolean import data
from histolean.data import crc, idc


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # MoNuSeg instance maps are cached on disk; tests must not depend on (or fill) the user's cache.
    monkeypatch.setenv("HISTOLEAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


# PCam ------------------------------------------------------------------------------------------
def test_pcam_real_folder_is_balanced_and_deterministic(real_data):
    a = data.load_pcam("train", root=real_data, limit=40, seed=3)
    b = data.load_pcam("train", root=real_data, limit=40, seed=3)
    assert a.images.shape == (40, 96, 96, 3) and a.images.dtype == np.uint8
    assert a.class_counts() == {0: 20, 1: 20}
    assert a.data_kind == "real" and a.dataset == "pcam"
    assert np.array_equal(a.images, b.images) and a.paths == b.paths
    assert all(f"/train/{label}/" in p for p, label in zip(a.paths, a.labels))


def test_pcam_generated_folder_and_h5_agree(tmp_path):
    patches = data.synthetic_patches(12, size=96, seed=1)
    root = tmp_path / "folder"
    for i, (img, label) in enumerate(zip(patches.images, patches.labels)):
        _write_png(root / "pcam" / "valid" / str(label) / f"p{i:03d}.png", img)
    from_folder = data.load_pcam("val", root=root)  # "val" is an alias of "valid"
    assert len(from_folder) == 12 and from_folder.split == "valid"

    import h5py

    h5_root = tmp_path / "h5" / "pcam"
    h5_root.mkdir(parents=True)
    with h5py.File(h5_root / "camelyonpatch_level_2_split_test_x.h5", "w") as f:
        f["x"] = patches.images
    with h5py.File(h5_root / "camelyonpatch_level_2_split_test_y.h5", "w") as f:
        f["y"] = patches.labels.reshape(-1, 1, 1, 1).astype(np.uint8)
    (h5_root / "camelyonpatch_level_2_split_test_meta.csv").write_text(
        "coord_y,coord_x,tumor_patch,center_tumor_patch,wsi\n"
        + "".join(f"0,0,False,False,slide_{i // 4}\n" for i in range(12)))
    from_h5 = data.load_pcam("test", root=tmp_path / "h5")
    assert np.array_equal(from_h5.images, patches.images) and np.array_equal(from_h5.labels, patches.labels)
    assert from_h5.groups[0] == "slide_0" and from_h5.groups[-1] == "slide_2"

    # gzipped originals are decompressed once next to themselves
    for kind in ("x", "y"):
        plain = h5_root / f"camelyonpatch_level_2_split_test_{kind}.h5"
        with open(plain, "rb") as src, gzip.open(str(plain) + ".gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
    sub = data.load_pcam("test", root=tmp_path / "h5", limit=6, size=32)
    assert sub.images.shape == (6, 32, 32, 3) and sub.class_counts() == {0: 3, 1: 3}
    assert (h5_root / "camelyonpatch_level_2_split_test_x.h5").is_file()


def test_pcam_tfds_reads_labels_first_and_decodes_only_the_chosen(tmp_path, monkeypatch):
    # A stand-in for tensorflow_datasets (no prepared patch_camelyon here): elements are (image, label) as
    # with as_supervised=True, the image of element i is filled with i, and every decoded image is counted.
    import sys
    import types

    labels = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0, 1, 0, 1, 1, 0, 0] * 2)
    decoded = []

    class FakeDataset:
        def __init__(self, make):
            self.make = make

        def __iter__(self):
            return iter(self.make())

        def map(self, fn):
            return FakeDataset(lambda: (fn(*element) for element in self))

    def elements(skip_decoding):
        for i, label in enumerate(labels):
            if skip_decoding:
                yield b"png bytes", np.int64(label)
            else:
                decoded.append(i)
                yield np.full((96, 96, 3), i, np.uint8), np.int64(label)

    def load(name, *, split, data_dir, download, as_supervised, decoders=None):
        assert (name, split, download, as_supervised) == ("patch_camelyon", "validation", False, True)
        skip = decoders is not None and isinstance(decoders.get("image"), fake.decode.SkipDecoding)
        return FakeDataset(lambda: elements(skip))

    fake = types.ModuleType("tensorflow_datasets")
    fake.load, fake.as_numpy = load, lambda ds: ds
    fake.decode = types.SimpleNamespace(SkipDecoding=type("SkipDecoding", (), {}))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    (tmp_path / "pcam" / "tensorflow_datasets" / "patch_camelyon").mkdir(parents=True)

    chosen = data.balanced_subset(labels, 6, 1)
    assert chosen[-1] < len(labels) - 1  # else streaming could not stop early and the check below is void
    sub = data.load_pcam("valid", root=tmp_path, limit=6, seed=1)
    assert np.array_equal(sub.labels, labels[chosen]) and sub.class_counts() == {0: 3, 1: 3}
    assert [int(img[0, 0, 0]) for img in sub.images] == chosen.tolist()
    assert sub.paths[0] == f"tfds:patch_camelyon/validation#{chosen[0]}" and sub.groups[0] == f"valid_{chosen[0]}"
    assert decoded == list(range(chosen[-1] + 1))  # one pass, stopped after the last chosen image
    decoded.clear()
    everything = data.load_pcam("valid", root=tmp_path, size=32)
    assert everything.images.shape == (40, 32, 32, 3) and np.array_equal(everything.labels, labels)
    assert decoded == list(range(40))


# IDC -------------------------------------------------------------------------------------------
def test_idc_real_splits_never_share_a_patient(real_data):
    rows = idc.list_idc(real_data)
    patients = {s: {r["patient"] for r in rows if r["split"] == s} for s in ("train", "valid", "test")}
    assert len(patients["train"]) == 66 and len(patients["valid"]) == 14 and len(patients["test"]) == 14
    assert not (patients["train"] & patients["valid"] or patients["train"] & patients["test"]
                or patients["valid"] & patients["test"])
    valid = data.load_idc("valid", root=real_data)
    assert valid.images.shape == (356, 50, 50, 3) and valid.class_counts() == {0: 178, 1: 178}
    assert set(valid.groups) == patients["valid"]


def test_idc_real_undersized_patches_are_white_padded(real_data):
    rows = idc.list_idc(real_data)
    def size(path):
        with Image.open(path) as img:   # closed at once: thousands of files are opened
            return img.size

    small = [r for r in rows if size(r["path"]) != (50, 50)]
    assert len(small) == 9  # as PROVENANCE.md says
    raw = data.read_rgb(small[0]["path"])
    padded = idc.pad_to_patch(raw, str(small[0]["path"]))
    assert padded.shape == (50, 50, 3)
    assert np.array_equal(padded[: raw.shape[0], : raw.shape[1]], raw)
    assert (padded[raw.shape[0]:] == 255).all() and (padded[:, raw.shape[1]:] == 255).all()


def test_idc_generated_patient_folders_split_by_patient(tmp_path):
    rng = np.random.default_rng(0)
    for patient in range(10):
        for k in range(4):
            label = k % 2
            h = 50 if k else 30  # one undersized edge patch per patient
            img = rng.integers(0, 255, (h, 50, 3), dtype=np.uint8)
            _write_png(tmp_path / "idc" / str(8000 + patient) / str(label) /
                       f"{8000 + patient}_idx5_x{k * 50}_y0_class{label}.png", img)
    everything = data.load_idc("all", root=tmp_path)
    assert everything.images.shape == (40, 50, 50, 3)
    splits = {s: set(data.load_idc(s, root=tmp_path).groups) for s in ("train", "valid", "test")}
    assert sum(len(v) for v in splits.values()) == 10
    assert not (splits["train"] & splits["valid"] or splits["train"] & splits["test"]
                or splits["valid"] & splits["test"])
    assert idc.patient_split(range(10), seed=1) == idc.patient_split(range(10), seed=1)


# MoNuSeg ----------------------------------------------------------------------------------------
@pytest.mark.slow  # seconds on an idle 2-core CPU, more under load
def test_monuseg_real_instances_equal_polygon_regions(real_data):
    # The 10 training tiles hold the 2-vertex Region and the XML without a pixel size;
    # `histolean data status` counts all 24 (tests/test_data_status.py). Rasterising is ~0.4 s a tile.
    samples = data.load_monuseg("train", root=real_data)
    for sample in samples:
        xml = Path(sample.path).parent.parent / "annotations" / (sample.name + ".xml")
        n_regions = xml.read_bytes().count(b"<Region ")  # independent of the parser
        n_polygons = n_regions - (1 if sample.name == "TCGA-50-5931-01Z-00-DX1" else 0)
        assert sample.n_instances == n_polygons == int(sample.instances.max()), sample.name
        assert sample.image.shape == (1000, 1000, 3) and sample.instances.shape == (1000, 1000)
        assert not sample.instances.flags.writeable  # shared with the cache
    by_name = {s.name: s for s in samples}
    assert by_name["TCGA-50-5931-01Z-00-DX1"].n_instances == 444
    assert "180" not in by_name["TCGA-50-5931-01Z-00-DX1"].region_ids
    assert by_name["TCGA-NH-A8F7-01A-01-TS1"].mpp is None
    assert by_name["TCGA-50-5931-01Z-00-DX1"].mpp == pytest.approx(0.2468)
    assert sum(s.n_instances for s in samples) == 3818  # 3,819 Regions minus the 2-vertex one


def test_monuseg_default_mpp_fills_the_missing_one_with_a_warning(real_data):
    with pytest.warns(UserWarning, match="TCGA-NH-A8F7.*MicronsPerPixel"):
        samples = data.load_monuseg("train", root=real_data, default_mpp=0.25)
    assert {s.name: s.mpp for s in samples}["TCGA-NH-A8F7-01A-01-TS1"] == 0.25


def _write_monuseg_pair(root: Path, name: str, regions: list[list[tuple[float, float]]], mpp="0.25",
                        shape=(40, 50)) -> None:
    _write_png(root / "monuseg" / "train" / "images" / f"{name}.png", np.full((*shape, 3), 200, np.uint8))
    body = "".join(
        f'<Region Id="{i + 1}"><Vertices>' + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in verts)
        + "</Vertices></Region>" for i, verts in enumerate(regions))
    mpp_attr = f' MicronsPerPixel="{mpp}"' if mpp else ""
    xml = (f'<?xml version="1.0"?><Annotations{mpp_attr}><Annotation Id="1"><Regions>{body}'
           "</Regions></Annotation></Annotations>")
    path = root / "monuseg" / "train" / "annotations" / f"{name}.xml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(xml)


def test_monuseg_generated_rules_clip_skip_and_smaller_wins(tmp_path):
    big = [(5, 5), (25, 5), (25, 25), (5, 25)]
    small = [(15, 15), (30, 15), (30, 30), (15, 30)]            # overlaps big, smaller area
    two_vertex = [(1, 1), (3, 3), (1, 1)]                         # < 3 distinct vertices: skipped
    outside = [(40, -3), (53, -3), (53, 10), (40, 10)]           # clipped to the 50 x 40 image
    _write_monuseg_pair(tmp_path, "tile", [big, small, two_vertex, outside])
    (sample,) = data.load_monuseg("train", root=tmp_path)
    assert sample.n_instances == 3 and sample.region_ids == ["1", "2", "4"]
    assert sample.instances[20, 20] == 2  # the overlap belongs to the smaller Region
    assert sample.instances[10, 10] == 1
    assert sample.instances[0, 49] == 3 and sample.instances[0, 39] == 0
    assert sample.mpp == 0.25


# TNBC -------------------------------------------------------------------------------------------
def test_tnbc_real_counts_and_rgb(real_data):
    samples = data.load_tnbc(root=real_data)
    assert len(samples) == 50
    assert sum(s.n_instances for s in samples) == 4056
    assert all(s.image.shape == (512, 512, 3) for s in samples)
    assert {s.group for s in samples} == {f"{i:02d}" for i in range(1, 12)}
    assert len(data.load_tnbc(root=real_data, slides=["09"])) == 6  # 3 of those are RGB, 3 RGBA


def test_tnbc_generated_instances_are_4_connected_components(tmp_path):
    image = np.zeros((10, 10, 4), np.uint8)
    image[..., 3] = 255
    mask = np.zeros((10, 10), np.uint8)
    mask[1:3, 1:3] = 255
    mask[3:5, 3:5] = 255  # touches the first only diagonally: a separate nucleus
    mask[7:9, 6:9] = 255
    _write_png(tmp_path / "tnbc" / "Slide_01" / "01_1.png", image)
    _write_png(tmp_path / "tnbc" / "GT_01" / "01_1.png", mask)
    (sample,) = data.load_tnbc(root=tmp_path)
    assert sample.image.shape == (10, 10, 3) and sample.n_instances == 3


# CRCHistoPhenotypes and TIL windows -------------------------------------------------------------------
def test_crc_real_windows_reproduce_the_provenance_csv(real_data):
    images = data.list_crc(real_data)
    ours = {(w["image_id"], w["x0"], w["y0"]): (w["derived_label"], w["n_inflammatory"], w["n_detection"])
            for c in images for w in data.til_windows(c)}
    with open(real_data / "crchistophenotypes" / "til_windows_100px.csv", newline="") as f:
        theirs = {(r["image_id"], int(r["x0"]), int(r["y0"])): (r["derived_label"], int(r["n_inflammatory"]),
                                                                int(r["n_detection"])) for r in csv.DictReader(f)}
    assert ours == theirs and len(ours) == 1000
    # 0-based (x, y) = (column, row): detections sit on dark nuclei
    image = images[0].image().mean(-1)
    xy = np.round(images[0].points["detection"]).astype(int)
    assert image[xy[:, 1], xy[:, 0]].mean() < image.mean() - 30


def test_til_windows_split_by_image_with_both_classes(real_data):
    parts = {s: data.load_til_windows(s, root=real_data) for s in ("train", "valid", "test")}
    assert sum(len(p) for p in parts.values()) == 386 + 307
    for p in parts.values():
        assert set(p.class_counts()) == {0, 1} and p.images.shape[1:] == (100, 100, 3)
    assert not (set(parts["train"].groups) & set(parts["test"].groups))
    assert not (set(parts["valid"].groups) & set(parts["test"].groups))


def test_crc_generated_mat_files_are_one_based_xy(tmp_path):
    import scipy.io

    folder = tmp_path / "crchistophenotypes" / "img1"
    folder.mkdir(parents=True)
    _write_png(folder / "img1.png", np.zeros((4, 4, 3), np.uint8))
    Image.fromarray(np.full((200, 200, 3), 230, np.uint8)).save(folder / "img1.bmp")
    inflammatory = np.array([[1, 1], [100, 100], [101, 1]], dtype=np.uint8)  # MATLAB (x, y), 1-based
    scipy.io.savemat(folder / "img1_inflammatory.mat", {"detection": inflammatory})
    scipy.io.savemat(folder / "img1_epithelial.mat", {"detection": np.array([[150.0, 50.0]])})
    scipy.io.savemat(folder / "img1_others.mat", {"detection": np.zeros((0, 0))})
    scipy.io.savemat(folder / "img1_detection.mat", {"detection": np.vstack([inflammatory, [[150, 50]]]).astype(float)})
    (image,) = data.list_crc(tmp_path)
    assert image.points["inflammatory"].tolist() == [[0, 0], [99, 99], [100, 0]]
    assert image.points["others"].shape == (0, 2) and image.points["fibroblast"].shape == (0, 2)
    windows = {(w["x0"], w["y0"]): w for w in data.til_windows(image, shape=(200, 200))}
    assert windows[(0, 0)]["derived_label"] == "til_positive"       # (0,0) and (99,99)
    assert windows[(100, 0)]["derived_label"] == "ambiguous_1_inflammatory"
    assert windows[(0, 100)]["derived_label"] == "no_nuclei"
    assert crc.window_px(50, 0.55) == 91 and len(data.til_windows(image, shape=(200, 200), window_um=50)) == 4


def test_til_windows_follow_the_image_size_and_drop_partial_windows(tmp_path):
    import scipy.io

    # 250 rows x 320 columns: 100-px windows give a 2 x 3 grid; the partial 4th column (x 300..320)
    # and the partial 3rd row (y 200..250) are dropped.
    for k in (1, 2, 3):
        folder = tmp_path / "crchistophenotypes" / f"img{k}"
        folder.mkdir(parents=True)
        pixels = np.zeros((250, 320, 3), np.uint8)
        pixels[:, :, 0] = np.arange(320) % 256  # red = column, green = row: shows where a window was cut
        pixels[:, :, 1] = np.arange(250)[:, None]
        Image.fromarray(pixels).save(folder / f"img{k}.bmp")
        # MATLAB 1-based (x, y): two lymphocytes in window (0, 0), one in the dropped (300, 0) and (0, 200) ones
        scipy.io.savemat(folder / f"img{k}_inflammatory.mat",
                         {"detection": np.array([[11.0, 11.0], [21.0, 21.0], [311.0, 11.0], [11.0, 211.0]])})
        scipy.io.savemat(folder / f"img{k}_epithelial.mat", {"detection": np.array([[151.0, 51.0]])})
    images = data.list_crc(tmp_path)
    assert images[0].shape() == (250, 320)
    windows = {(w["x0"], w["y0"]): w["derived_label"] for w in data.til_windows(images[0])}
    assert set(windows) == {(x, y) for x in (0, 100, 200) for y in (0, 100)}
    assert windows[(0, 0)] == "til_positive" and windows[(100, 0)] == "til_negative"
    cut = data.load_til_windows("all", root=tmp_path)
    assert cut.images.shape == (6, 100, 100, 3) and cut.class_counts() == {0: 3, 1: 3}
    for image, path in zip(cut.images, cut.paths):
        x0, y0 = (int(v[1:]) for v in path.split("#")[1].split("_"))
        assert image[0, 0, 0] == x0 and image[0, 0, 1] == y0 and image[-1, -1, 1] == y0 + 99


# TIL patch folders --------------------------------------------------------------------------------
def test_til_real_folders(real_data):
    train = data.load_til("train", root=real_data)
    assert train.images.shape == (36, 300, 300, 3) and train.class_counts() == {0: 35, 1: 1}
    assert (set(train.groups) == {"TCGA-05-4244-01Z-00-DX1.svs"}
            or all(g.startswith("TCGA-05-4244") for g in train.groups))
    assert len(data.load_til("valid", root=real_data, size=64)) == 36


def test_til_generated_label_file(tmp_path):
    folder = tmp_path / "til" / "demo_train_data"
    patches = data.synthetic_patches(4, size=40, seed=2)
    lines = []
    for i, (img, label) in enumerate(zip(patches.images, patches.labels)):
        rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
        _write_png(folder / f"{i}.png", rgba)
        lines.append(f"{i}.png {label} slide_{i % 2}.svs {100 * i} 50")
    (folder / "label.txt").write_text("\n".join(lines) + "\n")
    loaded = data.load_til("train", root=tmp_path)
    assert np.array_equal(loaded.images, patches.images) and np.array_equal(loaded.labels, patches.labels)
    assert list(loaded.groups) == ["slide_0.svs", "slide_1.svs", "slide_0.svs", "slide_1.svs"]


def test_til_patches_cut_from_a_generated_slide(tmp_path):
    made = data.synthetic_slide(tmp_path / "slides" / "s1.tif", width=512, height=512, mpp=0.5, seed=4)
    (tmp_path / "label.txt").write_text("a.png 1 s1.tif 200 150\nb.png 0 s1.tif 400 300\n")
    cut = data.cut_til_patches(tmp_path / "label.txt", tmp_path / "slides", patch_um=50, size=100)
    assert cut.images.shape == (2, 100, 100, 3) and cut.labels.tolist() == [1, 0]
    from histolean import wsi

    with wsi.open_slide(made.path) as slide:  # 50 um = 100 px at 0.5 um/px, centred on (x, y)
        assert np.array_equal(cut.images[0], slide.read_region((150, 100), 0, (100, 100)))
    (tmp_path / "label.txt").write_text("a.png 1 gone.svs 1 1\n")
    with pytest.raises(data.DataError, match=r"gone\.svs.*missing"):
        data.cut_til_patches(tmp_path / "label.txt", tmp_path / "slides")


# load_patches fallback ---------------------------------------------------------------------------------
def test_load_patches_falls_back_to_synthetic_with_a_warning(tmp_path, capsys):
    with pytest.warns(UserWarning, match="not found"):
        fake = data.load_patches("idc", "train", root=tmp_path, limit=10)
    assert fake.data_kind == "synthetic" and fake.images.shape == (10, 50, 50, 3)
    assert str(tmp_path / "idc") in capsys.readouterr().out
    with pytest.raises(data.DataError, match="not found"):
        data.load_patches("idc", "train", root=tmp_path, allow_synthetic=False)


def test_load_patches_real(real_data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning when the data is there
        real = data.load_patches("pcam", "test", root=real_data, limit=8, size=32)
    assert real.data_kind == "real" and real.images.shape == (8, 32, 32, 3)
