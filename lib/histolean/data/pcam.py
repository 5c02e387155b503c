"""PatchCamelyon in its three on-disk forms: the original HDF5 files, image folders, tfds.

Looked for in this order inside ``<root>/pcam``:

1. image folders ``<split>/<label>/*.jpg|png|tif`` (optionally with ``labels.csv``);
2. the original ``camelyonpatch_level_2_split_<split>_{x,y}.h5`` (or ``.h5.gz``:
   decompressed once next to itself, since HDF5 needs random access);
3. the tensorflow-datasets ``patch_camelyon`` builder, when it has been prepared in
   ``<root>/pcam/tensorflow_datasets`` or ``$TFDS_DATA_DIR``.

PCam ships no patient ids in the image folders, so ``groups`` is the patch id there;
the HDF5 form uses the ``*_meta.csv`` slide name when present.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
from pathlib import Path

import numpy as np

from histolean.util import atomic
from .common import (
    check_listed_images,
    DataError, PatchSet, balanced_subset, data_error, dataset_dir, normalise_split, read_rgb,
    resize_images, stack_images,
)

SPLITS = ("train", "valid", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
H5_NAME = "camelyonpatch_level_2_split_{split}_{kind}.h5"


def load_pcam(split: str, root=None, limit: int | None = None, seed: int = 0, size: int | None = None) -> PatchSet:
    """PCam patches of one split (train, valid, test or all); label 1 = tumour in the centre 32x32."""
    split = normalise_split(split, SPLITS, "load_pcam")
    folder = dataset_dir("pcam", root)
    if split == "all":
        # With a limit, each split contributes its share: never decode a whole 7 GB split to subsample it.
        shares = [None] * 3 if limit is None else [limit // 3 + (i < limit % 3) for i in range(3)]
        parts = [load_pcam(s, root, n, seed, size) for s, n in zip(SPLITS, shares) if n != 0]
        return _concat(parts, "pcam", None, seed)
    if (folder / split).is_dir():
        return load_image_folder(folder, split, "pcam", limit=limit, seed=seed, size=size)
    x_path = _h5_path(folder, split, "x")
    if x_path is not None:
        return load_pcam_h5(folder, split, limit=limit, seed=seed, size=size)
    tfds_dir = _tfds_dir(folder)
    if tfds_dir is not None:
        return load_pcam_tfds(split, tfds_dir, limit=limit, seed=seed, size=size)
    raise data_error(
        folder, f"no PCam data for split '{split}' (looked for the folder {folder / split}, "
        f"{H5_NAME.format(split=split, kind='x')}[.gz] and a prepared tfds patch_camelyon)",
        "Run `histolean data fetch pcam` or put the files there",
    )


def load_image_folder(folder: Path, split: str, dataset: str, *, limit=None, seed=0, size=None) -> PatchSet:
    """Patches stored as ``<folder>/<split>/<label>/<name>.<jpg|png|tif>``.

    When ``<folder>/labels.csv`` exists (columns path, split, label), it is the
    source of truth and every file it names must exist.
    """
    paths, labels = _list_from_labels_csv(folder, split) if (folder / "labels.csv").is_file() else ([], [])
    if not paths:
        paths, labels = _list_from_folders(folder / split)
    labels_arr = np.asarray(labels, dtype=np.int64)
    chosen = balanced_subset(labels_arr, limit, seed)
    chosen_paths = [str(paths[i]) for i in chosen]
    images = stack_images([read_rgb(p) for p in chosen_paths], chosen_paths) if size is None else \
        np.stack([resize_images(read_rgb(p)[None], size)[0] for p in chosen_paths])
    groups = [Path(p).stem for p in chosen_paths]
    return PatchSet(images, labels_arr[chosen], np.asarray(groups), chosen_paths, dataset, "real", split)


def _list_from_labels_csv(folder: Path, split: str) -> tuple[list[Path], list[int]]:
    csv_path = folder / "labels.csv"
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing_cols = {"path", "label"} - set(reader.fieldnames or [])
        if missing_cols:
            raise data_error(csv_path, f"missing column(s) {sorted(missing_cols)}",
                             "The label file needs at least the columns path,label[,split]")
        has_split = "split" in (reader.fieldnames or [])
        # Without a split column the split is the first folder of the path.
        rows = [r for r in reader if (r["split"] if has_split else Path(r["path"]).parts[0]) == split]
    paths = [folder / r["path"] for r in rows]
    check_listed_images(csv_path, paths)
    try:
        labels = [int(r["label"]) for r in rows]
    except ValueError as exc:
        raise data_error(csv_path, f"a label is not an integer ({exc})", "Fix the label column") from None
    return paths, labels


def _list_from_folders(split_dir: Path) -> tuple[list[Path], list[int]]:
    if not split_dir.is_dir():
        raise data_error(split_dir, "folder does not exist", "Expected <split>/<label>/<image files>")
    paths: list[Path] = []
    labels: list[int] = []
    for label_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if not label_dir.name.isdigit():
            raise data_error(label_dir, "class folder name is not an integer label",
                             "Name class folders 0, 1, ... (the label)")
        files = sorted(p for p in label_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [int(label_dir.name)] * len(files)
    if not paths:
        raise data_error(split_dir, "holds no images (empty folder)",
                         "Expected <split>/<label>/*.jpg|png|tif; re-download the dataset")
    return paths, labels


def _h5_path(folder: Path, split: str, kind: str) -> Path | None:
    plain = folder / H5_NAME.format(split=split, kind=kind)
    if plain.is_file():
        return plain
    gz = plain.with_name(plain.name + ".gz")
    return gz if gz.is_file() else None


def _ungzip_once(gz: Path) -> Path:
    """HDF5 needs random access, so a ``.h5.gz`` is decompressed once next to itself."""
    target = gz.with_suffix("")
    if target.is_file():
        return target
    print(f"histolean.data: decompressing {gz} -> {target} (once)")
    try:
        with atomic.atomic_path(target) as tmp, gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    except (OSError, EOFError) as exc:
        raise data_error(gz, f"cannot decompress ({exc}); the download is truncated or corrupt",
                         "Delete it and run `histolean data fetch pcam` again") from None
    return target


def _open_h5_dataset(path: Path, key: str):
    import h5py

    if path.suffix == ".gz":
        path = _ungzip_once(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise data_error(path, f"cannot open the HDF5 file (truncated or corrupt: {exc})",
                         "Delete it and run `histolean data fetch pcam` again") from None
    if key not in f:
        f.close()
        raise data_error(path, f"has no dataset '{key}' (keys: {list(f.keys())})", "Is this a PCam file?")
    return f, f[key]


def load_pcam_h5(folder: Path, split: str, *, limit=None, seed=0, size=None) -> PatchSet:
    """The original PCam HDF5 pair: ``x`` (N, 96, 96, 3) uint8 and ``y`` (N, 1, 1, 1)."""
    x_path, y_path = _h5_path(folder, split, "x"), _h5_path(folder, split, "y")
    if y_path is None:
        raise data_error(folder / H5_NAME.format(split=split, kind="y"), "label file missing next to the x file",
                         "Download the matching _y.h5 file")
    fy, y = _open_h5_dataset(y_path, "y")
    try:
        labels = np.asarray(y[:]).reshape(-1).astype(np.int64)
    except OSError as exc:
        raise data_error(y_path, f"cannot read labels (truncated: {exc})", "Re-download the file") from None
    finally:
        fy.close()
    chosen = balanced_subset(labels, limit, seed)
    fx, x = _open_h5_dataset(x_path, "x")
    try:
        if len(x) != len(labels):
            raise data_error(x_path, f"has {len(x)} images but the label file has {len(labels)}",
                             "The x and y files are from different splits or one is truncated")
        # h5py point selection wants increasing indices and is slow: read everything in one go when we can
        images = np.asarray(x[:] if len(chosen) == len(labels) else x[np.sort(chosen)], dtype=np.uint8)
    except OSError as exc:
        raise data_error(x_path, f"cannot read images (truncated or corrupt: {exc})", "Re-download the file") from None
    finally:
        fx.close()
    groups = _h5_groups(folder, split, chosen)
    paths = [f"{x_path}#{i}" for i in chosen]
    return PatchSet(resize_images(images, size), labels[chosen], groups, paths, "pcam", "real", split)


def _h5_groups(folder: Path, split: str, chosen: np.ndarray) -> np.ndarray:
    meta = folder / f"camelyonpatch_level_2_split_{split}_meta.csv"
    if meta.is_file():
        with open(meta, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "wsi" in rows[0]:
            return np.asarray([rows[i]["wsi"] for i in chosen])
    return np.asarray([f"{split}_{i}" for i in chosen])


def _tfds_dir(folder: Path) -> Path | None:
    for candidate in (folder / "tensorflow_datasets", Path(os.environ.get("TFDS_DATA_DIR", "") or "/nonexistent")):
        if (candidate / "patch_camelyon").is_dir():
            return candidate
    return None


def load_pcam_tfds(split: str, data_dir: Path, *, limit=None, seed=0, size=None) -> PatchSet:
    """PCam through a prepared tensorflow-datasets ``patch_camelyon`` (no download is triggered)."""
    import tensorflow_datasets as tfds

    tfds_split = {"train": "train", "valid": "validation", "test": "test"}[split]
    try:
        ds = tfds.load("patch_camelyon", split=tfds_split, data_dir=str(data_dir), download=False,
                       as_supervised=True)
        # the same split with the PNG bytes left encoded: reading its labels decodes no image
        encoded = tfds.load("patch_camelyon", split=tfds_split, data_dir=str(data_dir), download=False,
                            as_supervised=True, decoders={"image": tfds.decode.SkipDecoding()})
    except Exception as exc:  # tfds raises many types; the user needs the folder and the fix
        raise data_error(data_dir, f"tensorflow-datasets patch_camelyon is not usable ({exc})",
                         "Prepare it with tfds or use the HDF5 files instead") from None
    # Labels first (no image decoded or held), choose with the same rule as the other PCam loaders,
    # then stream the split once and keep only the chosen images (stopping after the last one).
    labels_arr = np.fromiter((int(label) for label in tfds.as_numpy(encoded.map(lambda image, label: label))),
                             dtype=np.int64)
    chosen = balanced_subset(labels_arr, limit, seed)
    wanted = set(chosen.tolist())  # balanced_subset returns sorted indices: images arrive in chosen order
    images = []
    for i, (image, _label) in enumerate(tfds.as_numpy(ds) if wanted else ()):
        if i in wanted:
            images.append(image)
            if len(images) == len(chosen):
                break
    if len(images) != len(chosen):
        raise data_error(data_dir, f"tensorflow-datasets patch_camelyon/{tfds_split} changed while being read",
                         "Re-prepare it with tfds or use the HDF5 files instead")
    imgs = resize_images(np.stack(images), size)
    paths = [f"tfds:patch_camelyon/{tfds_split}#{i}" for i in chosen]
    return PatchSet(imgs, labels_arr[chosen], np.asarray([f"{split}_{i}" for i in chosen]), paths,
                    "pcam", "real", split)


def _concat(parts: list[PatchSet], dataset: str, limit, seed) -> PatchSet:
    if not parts:
        raise DataError(f"{dataset}: no splits to concatenate")
    merged = PatchSet(
        np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]),
        np.concatenate([p.groups for p in parts]), [q for p in parts for q in p.paths], dataset, "real", "all",
    )
    return merged.subset(balanced_subset(merged.labels, limit, seed)) if limit else merged
