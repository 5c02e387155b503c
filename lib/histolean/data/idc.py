"""IDC (invasive ductal carcinoma) patches: ``<patient>/<label>/<patient>_idx5_x<X>_y<Y>_class<N>.png``.

Splits are always by patient. When ``<root>/idc/labels.csv`` has a ``split``
column it is used as is; otherwise (the full Kaggle / Janowczyk download)
:func:`patient_split` assigns whole patients to train / valid / test.

Undersized edge patches (the original set has some 50 x h or w x 50 patches cut
at the slide border) are **padded with white (255) at the bottom / right to
50 x 50**: the missing pixels lie outside the scanned slide, where the glass
background is white, and padding keeps every patient's patch count intact.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .common import (
    check_listed_images,
    PatchSet, balanced_subset, data_error, dataset_dir, normalise_split, read_rgb, resize_images,
)

SPLITS = ("train", "valid", "test")
PATCH_SIZE = 50
NAME_PATTERN = re.compile(r"^(?P<patient>[^_/]+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$")


def pad_to_patch(image: np.ndarray, path: str, size: int = PATCH_SIZE) -> np.ndarray:
    """White-pad an undersized edge patch at the bottom/right to ``size`` x ``size``."""
    h, w = image.shape[:2]
    if h == size and w == size:
        return image
    if h > size or w > size:
        raise data_error(path, f"patch is {w}x{h}, larger than the {size}x{size} IDC patch size",
                         "This is not an IDC patch; remove it")
    out = np.full((size, size, 3), 255, dtype=np.uint8)
    out[:h, :w] = image
    return out


def patient_split(patients, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> dict[str, str]:
    """Assign each distinct patient id to train/valid/test; no patient is in two splits.

    Patients are shuffled with ``seed`` and cut by the cumulative ``fractions``
    (each non-empty split gets at least one patient when there are enough).
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"patient_split: fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    unique = sorted(set(str(p) for p in patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    n = len(unique)
    n_valid = max(1, round(fractions[1] * n)) if fractions[1] > 0 and n >= 3 else round(fractions[1] * n)
    n_test = max(1, round(fractions[2] * n)) if fractions[2] > 0 and n >= 3 else round(fractions[2] * n)
    n_train = n - n_valid - n_test
    names = ["train"] * n_train + ["valid"] * n_valid + ["test"] * n_test
    return {unique[i]: names[k] for k, i in enumerate(order)}


def list_idc(root=None, seed: int = 0) -> list[dict]:
    """One row per patch: path, patient, label, split (from labels.csv, else :func:`patient_split`)."""
    folder = dataset_dir("idc", root)
    labels_csv = folder / "labels.csv"
    if labels_csv.is_file():
        rows = _rows_from_csv(folder, labels_csv)
        if all(r["split"] for r in rows):
            _check_patients_in_one_split(labels_csv, rows)
            return rows
    else:
        rows = _rows_from_names(folder)
    assignment = patient_split([r["patient"] for r in rows], seed=seed)
    for r in rows:
        r["split"] = assignment[r["patient"]]
    return rows


def _rows_from_csv(folder: Path, labels_csv: Path) -> list[dict]:
    with open(labels_csv, newline="") as f:
        reader = csv.DictReader(f)
        need = {"path", "patient_id", "label"} - set(reader.fieldnames or [])
        if need:
            raise data_error(labels_csv, f"missing column(s) {sorted(need)}",
                             "The IDC label file needs path, patient_id, label[, split]")
        rows = [{"path": folder / r["path"], "patient": r["patient_id"], "label": int(r["label"]),
                 "split": r.get("split", "")} for r in reader]
    check_listed_images(labels_csv, [r["path"] for r in rows])
    if not rows:
        raise data_error(labels_csv, "has no rows", "Re-download the dataset")
    return rows


def _check_patients_in_one_split(labels_csv: Path, rows: list[dict]) -> None:
    """A split column that puts one patient in two splits would leak that patient between them."""
    splits: dict[str, set[str]] = {}
    for r in rows:
        splits.setdefault(r["patient"], set()).add(r["split"])
    mixed = {p: sorted(s) for p, s in splits.items() if len(s) > 1}
    if mixed:
        patient, names = next(iter(mixed.items()))
        more = f" ({len(mixed) - 1} more patient(s) likewise)" if len(mixed) > 1 else ""
        raise data_error(labels_csv, f"puts patient {patient} in more than one split ({', '.join(names)}){more}",
                         "Give every row of a patient the same split, or remove the split column so that "
                         "histolean assigns whole patients to splits")


def _rows_from_names(folder: Path) -> list[dict]:
    rows = []
    for path in sorted(folder.rglob("*_class[01].png")):
        match = NAME_PATTERN.match(path.name)
        if match is None:
            raise data_error(path, "file name does not follow <patient>_idx5_x<X>_y<Y>_class<0|1>.png",
                             "Rename or remove it")
        rows.append({"path": path, "patient": match["patient"], "label": int(match["label"]), "split": ""})
    if not rows:
        raise data_error(folder, "holds no *_classN.png patches (empty folder)",
                         "Expected <patient>/<label>/<patient>_idx5_x<X>_y<Y>_class<N>.png; run "
                         "`histolean data fetch idc`")
    return rows


def load_idc(split: str, root=None, limit: int | None = None, seed: int = 0, size: int | None = None) -> PatchSet:
    """IDC patches of one split (train, valid, test, all); label 1 = IDC; groups = patient id."""
    split = normalise_split(split, SPLITS, "load_idc")
    rows = [r for r in list_idc(root, seed) if split == "all" or r["split"] == split]
    if not rows:
        raise data_error(dataset_dir("idc", root), f"no patches in split '{split}'", "Check the split name")
    labels = np.asarray([r["label"] for r in rows], dtype=np.int64)
    chosen = balanced_subset(labels, limit, seed)
    paths = [str(rows[i]["path"]) for i in chosen]
    images = np.stack([pad_to_patch(read_rgb(p), p) for p in paths])
    groups = np.asarray([rows[i]["patient"] for i in chosen])
    return PatchSet(resize_images(images, size), labels[chosen], groups, paths, "idc", "real", split)
