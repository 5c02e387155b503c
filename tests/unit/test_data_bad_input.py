"""Bad input gets a DataError that names the file and says what to do, never a library traceback."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from histolean import data, wsi
from histolean.data import DataError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HISTOLEAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _png(path, image=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((96, 96, 3), 180, np.uint8) if image is None else image).save(path)
    return path


def test_corrupt_image_names_the_file(tmp_path):
    bad = tmp_path / "pcam" / "train" / "0" / "broken.png"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    _png(tmp_path / "pcam" / "train" / "1" / "ok.png")
    with pytest.raises(DataError, match=r"broken\.png.*cannot decode"):
        data.load_pcam("train", root=tmp_path)


def test_truncated_jpeg_names_the_file(tmp_path):
    good = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut\.jpg.*(truncated|corrupt)"):
        data.read_rgb(cut)


def test_truncated_hdf5_names_the_file(tmp_path):
    import h5py

    folder = tmp_path / "pcam"
    folder.mkdir()
    x_path = folder / "camelyonpatch_level_2_split_train_x.h5"
    with h5py.File(x_path, "w") as f:
        f["x"] = np.zeros((64, 96, 96, 3), np.uint8)
    with h5py.File(folder / "camelyonpatch_level_2_split_train_y.h5", "w") as f:
        f["y"] = np.zeros((64, 1, 1, 1), np.uint8)
    x_path.write_bytes(x_path.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"split_train_x\.h5.*(truncated|corrupt)"):
        data.load_pcam("train", root=tmp_path)


def test_truncated_gzip_hdf5_names_the_file(tmp_path):
    folder = tmp_path / "pcam"
    folder.mkdir()
    import gzip

    payload = gzip.compress(np.random.default_rng(0).bytes(100_000))
    (folder / "camelyonpatch_level_2_split_valid_x.h5.gz").write_bytes(payload[: len(payload) // 2])
    (folder / "camelyonpatch_level_2_split_valid_y.h5.gz").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match=r"\.h5\.gz.*truncated or corrupt"):
        data.load_pcam("valid", root=tmp_path)


def _monuseg_tile(tmp_path, xml_text):
    _png(tmp_path / "monuseg" / "test" / "images" / "t.png")
    xml = tmp_path / "monuseg" / "test" / "annotations" / "t.xml"
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.write_text(xml_text)
    return xml


def test_malformed_xml_names_the_file(tmp_path):
    _monuseg_tile(tmp_path, '<Annotations><Annotation><Regions><Region Id="1"><Vertices>')
    with pytest.raises(DataError, match=r"t\.xml.*malformed XML"):
        data.load_monuseg("test", root=tmp_path)


def test_entity_expansion_is_refused(tmp_path):
    bomb = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
            '<Annotations MicronsPerPixel="&lol2;"></Annotations>')
    _monuseg_tile(tmp_path, bomb)
    with pytest.raises(DataError, match=r"t\.xml.*(DTD|entit)"):
        data.load_monuseg("test", root=tmp_path)


def test_external_entity_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<Annotations MicronsPerPixel="&x;"></Annotations>')
    xml = _monuseg_tile(tmp_path, xxe)
    with pytest.raises(DataError, match="refused"):
        data.parse_annotation(xml)


def test_xml_that_is_not_imagescope(tmp_path):
    xml = _monuseg_tile(tmp_path, "<svg><Region/></svg>")
    with pytest.raises(DataError, match=r"t\.xml.*<svg>"):
        data.parse_annotation(xml)


def test_label_files_naming_missing_images(tmp_path):
    _png(tmp_path / "pcam" / "train" / "0" / "a.png")
    (tmp_path / "pcam" / "labels.csv").write_text("path,split,label\ntrain/0/a.png,train,0\ntrain/1/gone.png,train,1\n")
    with pytest.raises(DataError, match=r"labels\.csv.*1 image\(s\) that do not exist.*gone\.png"):
        data.load_pcam("train", root=tmp_path)

    til = tmp_path / "til" / "x_train_data"
    _png(til / "0.png")
    (til / "label.txt").write_text("0.png 0 s.svs 1 1\n1.png 1 s.svs 2 2\n")
    with pytest.raises(DataError, match=r"label\.txt.*do not exist.*1\.png"):
        data.load_til("train", root=tmp_path)

    _png(tmp_path / "idc" / "9" / "0" / "9_idx5_x0_y0_class0.png", np.zeros((50, 50, 3), np.uint8))
    (tmp_path / "idc" / "labels.csv").write_text(
        "path,patient_id,label,split\n9/0/9_idx5_x0_y0_class0.png,9,0,train\n9/1/9_idx5_x50_y0_class1.png,9,1,train\n")
    with pytest.raises(DataError, match=r"idc/labels\.csv.*do not exist"):
        data.load_idc("train", root=tmp_path)


def test_idc_label_file_putting_a_patient_in_two_splits(tmp_path):
    rows = [("9", 0, "train", 0), ("9", 1, "test", 50), ("10", 0, "valid", 0)]
    lines = ["path,patient_id,label,split"]
    for patient, label, split, x in rows:
        name = f"{patient}/{label}/{patient}_idx5_x{x}_y0_class{label}.png"
        _png(tmp_path / "idc" / name, np.zeros((50, 50, 3), np.uint8))
        lines.append(f"{name},{patient},{label},{split}")
    (tmp_path / "idc" / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError,
                       match=r"idc/labels\.csv.*patient 9 in more than one split \(test, train\).*same split"):
        data.load_idc("train", root=tmp_path)
    # once every row of patient 9 says the same split, it loads
    (tmp_path / "idc" / "labels.csv").write_text("\n".join(lines).replace(",test", ",train") + "\n")
    assert set(data.load_idc("train", root=tmp_path).groups) == {"9"}


def test_malformed_til_label_line(tmp_path):
    til = tmp_path / "til" / "x_val_data"
    _png(til / "0.png")
    (til / "label.txt").write_text("0.png maybe\n")
    with pytest.raises(DataError, match=r"label\.txt.*line 1"):
        data.load_til("valid", root=tmp_path)


def test_monuseg_image_without_annotation(tmp_path):
    _png(tmp_path / "monuseg" / "train" / "images" / "lonely.png")
    with pytest.raises(DataError, match=r"lonely\.xml.*missing"):
        data.load_monuseg("train", root=tmp_path)


def test_tnbc_image_without_mask(tmp_path):
    _png(tmp_path / "tnbc" / "Slide_03" / "03_1.png")
    with pytest.raises(DataError, match=r"GT_03/03_1\.png.*missing"):
        data.load_tnbc(root=tmp_path)


@pytest.mark.parametrize("dataset, loader, layout", [
    ("pcam", lambda r: data.load_pcam("train", root=r), "train"),
    ("idc", lambda r: data.load_idc("train", root=r), ""),
    ("monuseg", lambda r: data.load_monuseg("train", root=r), "train/images"),
    ("tnbc", lambda r: data.load_tnbc(root=r), ""),
    ("crchistophenotypes", lambda r: data.list_crc(r), ""),
    ("til", lambda r: data.load_til("train", root=r), ""),
])
def test_empty_folders(tmp_path, dataset, loader, layout):
    (tmp_path / dataset / layout).mkdir(parents=True)
    with pytest.raises(DataError, match=rf"{dataset}.*(empty|no )"):
        loader(tmp_path)


def test_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as info:
        data.load_idc("train", root=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "idc") in message and "andrewjanowczyk.com" in message and "licence" in message


def test_slide_without_mpp_needs_the_argument(tmp_path, real_data):
    with pytest.raises(DataError, match=r"tcga-cr-7395.*microns per pixel.*mpp="):
        wsi.open_slide(real_data / "wsi" / "tcga-cr-7395-01a-01-ts1.svs")


def test_generated_slide_without_resolution_tags(tmp_path):
    import tifffile

    path = tmp_path / "no_mpp.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    with pytest.raises(DataError, match=r"no_mpp\.tif.*mpp="):
        wsi.open_slide(path)
    assert wsi.open_slide(path, mpp=0.5).mpp == 0.5


def test_corrupt_slide_names_the_file(tmp_path):
    path = tmp_path / "broken.svs"
    path.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(DataError, match=r"broken\.svs.*OpenSlide cannot open"):
        wsi.open_slide(path)


def test_corrupt_mat_file_names_the_file(tmp_path):
    folder = tmp_path / "crchistophenotypes" / "img1"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(folder / "img1.bmp")
    (folder / "img1_inflammatory.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\x00" * 20)
    with pytest.raises(DataError, match=r"img1_inflammatory\.mat.*MATLAB"):
        data.list_crc(tmp_path)


def test_tnbc_mask_of_another_size(tmp_path):
    _png(tmp_path / "tnbc" / "Slide_01" / "01_1.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(_png(tmp_path / "tnbc" / "GT_01" / "01_1.png"))
    with pytest.raises(DataError, match=r"GT_01/01_1\.png.*mask is 10x10 but the image is 96x96"):
        data.load_tnbc(root=tmp_path)


def test_tnbc_mask_folder_that_does_not_match_the_images(tmp_path):
    mask = np.zeros((96, 96), np.uint8)
    _png(tmp_path / "tnbc" / "Slide_01" / "01_1.png")
    Image.fromarray(mask).save(_png(tmp_path / "tnbc" / "GT_01" / "01_1.png"))
    Image.fromarray(mask).save(_png(tmp_path / "tnbc" / "GT_01" / "01_2.png"))    # no Slide_01/01_2.png
    with pytest.raises(DataError, match=r"GT_01/01_2\.png: mask has no image .*Slide_01/01_2\.png.*does not match"):
        data.load_tnbc(root=tmp_path)


def test_monuseg_annotation_folder_that_does_not_match_the_images(tmp_path):
    xml = '<Annotations MicronsPerPixel="0.25"><Annotation><Regions></Regions></Annotation></Annotations>'
    _monuseg_tile(tmp_path, xml)
    (tmp_path / "monuseg" / "test" / "annotations" / "other.xml").write_text(xml)
    with pytest.raises(DataError, match=r"annotations/other\.xml: annotation has no image other\.tif.*does not match"):
        data.load_monuseg("test", root=tmp_path)
