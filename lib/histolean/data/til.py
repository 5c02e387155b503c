"""TIL patch folders in the Saltz et al. (u24_lymphocyte) format.

``<root>/til/<name>_train_data/`` and ``<name>_val_data/`` (or ``_test_data``), each with
PNG patches and a ``label.txt``: one line per patch, space-separated
``<file.png> <label 0|1> <slide file> <x> <y>``. Images are RGBA with alpha 255 (dropped).
``groups`` is the slide name, so grouped splits keep a slide together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histolean.data import wsi
from .common import (
    PatchSet, balanced_subset, check_listed_images, data_error, dataset_dir, normalise_split, read_rgb, resize_images,
)

SPLITS = ("train", "valid", "test")
_SUFFIX_TO_SPLIT = {"_train_data": "train", "_val_data": "valid", "_valid_data": "valid", "_test_data": "test"}


def read_label_file(label_file: Path, require_images: bool = True) -> list[dict]:
    """Rows of a ``label.txt``; every named image must exist (unless patches are cut from slides)."""
    rows = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) < 2 or parts[1] not in ("0", "1"):
            raise data_error(label_file, f"line {number} is not '<file> <0|1> [slide x y]': {line!r}",
                             "Fix the label file")
        rows.append({"path": label_file.parent / parts[0], "label": int(parts[1]),
                     "slide": parts[2] if len(parts) > 2 else label_file.parent.name,
                     "xy": (int(parts[3]), int(parts[4])) if len(parts) > 4 else None})
    if require_images:
        check_listed_images(label_file, [r["path"] for r in rows])
    if not rows:
        raise data_error(label_file, "is empty", "Each patch needs a line '<file> <0|1> <slide> <x> <y>'")
    return rows


def list_til(root=None) -> dict[str, list[dict]]:
    """split -> rows, from every ``*_{train,val,test}_data/label.txt`` under ``<root>/til``."""
    folder = dataset_dir("til", root)
    by_split: dict[str, list[dict]] = {}
    for label_file in sorted(folder.glob("*/label.txt")):
        name = label_file.parent.name
        split = next((s for suffix, s in _SUFFIX_TO_SPLIT.items() if name.endswith(suffix)), None)
        if split is None:
            continue
        by_split.setdefault(split, []).extend(read_label_file(label_file))
    if not by_split:
        raise data_error(folder, "holds no <name>_{train,val}_data/label.txt folders (empty)",
                         "Put the u24_lymphocyte patch folders there")
    return by_split


def load_til(split: str, root=None, limit: int | None = None, seed: int = 0, size: int | None = None) -> PatchSet:
    """TIL patches of one split; label 1 = lymphocyte-infiltrated; groups = slide."""
    split = normalise_split(split, SPLITS, "load_til")
    by_split = list_til(root)
    rows = [r for s, rs in by_split.items() if split in ("all", s) for r in rs]
    if not rows:
        raise data_error(dataset_dir("til", root), f"no patches for split '{split}' (have {sorted(by_split)})",
                         "Pick an existing split")
    labels = np.asarray([r["label"] for r in rows], dtype=np.int64)
    keep = balanced_subset(labels, limit, seed)
    paths = [str(rows[i]["path"]) for i in keep]
    images = np.stack([resize_images(read_rgb(p)[None], size)[0] for p in paths])
    return PatchSet(images, labels[keep], np.asarray([rows[i]["slide"] for i in keep]), paths, "til", "real", split)


def cut_til_patches(label_file: str | Path, slide_dir: str | Path, patch_um: float = 50.0, size: int = 100,
                    mpp: float | None = None) -> PatchSet:
    """TIL patches cut from whole slides: one ``patch_um`` square per label line, centred on its level-0
    (x, y), resized to ``size``. Slides are looked up by the file name in the label file inside
    ``slide_dir``; ``mpp`` overrides slides that lack it. ``groups`` is the slide name.
    """
    label_file, slide_dir = Path(label_file), Path(slide_dir)
    if not label_file.is_file():
        raise data_error(label_file, "label file does not exist", "Point to a '<file> <0|1> <slide> <x> <y>' list")
    rows = read_label_file(label_file, require_images=False)
    if any(r["xy"] is None for r in rows):
        raise data_error(label_file, "a line has no slide x y columns",
                         "Cutting from slides needs '<file> <0|1> <slide> <x> <y>'")
    images, labels, groups, paths = [], [], [], []
    for slide_name in sorted({r["slide"] for r in rows}):
        slide_path = slide_dir / slide_name
        if not slide_path.is_file():
            raise data_error(slide_path, f"slide named in {label_file} is missing", "Put the slide in slide_dir")
        mine = [r for r in rows if r["slide"] == slide_name]
        images.extend(wsi.cut_centred_patches(slide_path, [r["xy"] for r in mine], patch_um, size, mpp))
        labels.extend(r["label"] for r in mine)
        groups.extend([slide_name] * len(mine))
        paths.extend(f"{slide_path}#x{r['xy'][0]}_y{r['xy'][1]}" for r in mine)
    return PatchSet(np.stack(images), np.asarray(labels), np.asarray(groups), paths, "til", "real", "all")
