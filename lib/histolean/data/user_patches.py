"""A user's own classification patches, in the three layouts people have, checked before anything trains.

Layouts of ``PATH`` (looked for in this order):

* a CSV: ``PATH`` is a ``.csv`` file, or ``PATH/labels.csv``; columns ``path,label[,group][,split]``,
  paths relative to the CSV's folder, labels integers 0..N-1, ``group`` the patient / slide / image id
  (splits and image-level statistics go by it), ``split`` train / valid / test;
* split subfolders: ``PATH/{train,valid,test}/<class>/*.png|jpg|tif``;
* class subfolders: ``PATH/<class>/*.png|jpg|tif``.

Class folders named 0, 1, ... are those labels; other names are sorted and numbered (printed).
Without split information the patches are split by group (:func:`histolean.data.crc.image_split`,
``split_fractions``, ``split_seed``); without group ids each patch is its own group (a warning: patches
of one slide may then sit in train and test). A missing ``valid`` split is the test split (and
vice versa), said in the notes. Microns per pixel: the ``mpp`` argument, else ``PATH/dataset.json``;
with it each patch is centre-cropped to ``patch_um`` (so the GFLOPs stay per 50 um patch).

:func:`check_patches` is what ``histolean data check --kind patches`` prints; the loaders run it first.
Rows made from a folder have ``dataset="folder:PATH"`` and ``data_kind="user"``.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .common import SPLIT_ALIASES, PatchSet, balanced_subset, read_rgb, resize_images
from .crc import image_split, window_px
from .folder_check import IMAGE_SUFFIXES, FolderReport, decodes, header, read_info

SPLITS = ("train", "valid", "test")
MIN_PER_CLASS = 2      # per split and class: AUC needs both classes, a CI a few of each
N_CLASSES = 2          # the patch notebooks score binary AUC
PREFIX = "folder:"


@dataclass
class Listing:
    """The patches as the notebook will see them (split assigned), before any pixel is decoded."""

    folder: Path
    layout: str
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    classes: dict[str, int] = field(default_factory=dict)
    sizes: list = field(default_factory=list)         # (w, h) per patch, None when unreadable
    modes: list = field(default_factory=list)
    mpp: float | None = None
    notes: list[str] = field(default_factory=list)

    def index(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split)


def folder_path(spec: str) -> Path:
    """``folder:PATH`` (or a plain path) -> PATH."""
    return Path(spec[len(PREFIX):] if spec.startswith(PREFIX) else spec).expanduser()


def check_patches(path, *, decode: bool = True, mpp: float | None = None, patch_um: float | None = 50.0,
                  split_fractions=(0.6, 0.2, 0.2), split_seed: int = 0,
                  min_per_class: int = MIN_PER_CLASS) -> tuple[FolderReport, Listing | None]:
    """Read the folder as the loaders do; every problem goes into the report (``decode``: decode each
    image fully, catching truncated files; the loaders skip it and decode only the patches they use)."""
    folder = folder_path(str(path))
    report = FolderReport(str(folder), "patches")
    if not folder.exists():
        report.block(folder, "does not exist", "Check the path")
        return report, None
    listing = _list(folder, report)
    if listing is None or not listing.paths:
        if listing is not None:
            report.block(folder, "holds no images", "Expected <class>/*.png|jpg|tif, {train,valid,test}/<class>/, "
                         "or labels.csv with path,label[,group][,split]")
        return report, None
    _check_labels(listing, report)
    _assign_splits(listing, report, split_fractions, split_seed)
    _check_images(listing, report, decode)
    try:
        listing.mpp = mpp or read_info(listing.folder).get("mpp")
    except ValueError as exc:
        report.block(folder, str(exc), "Fix dataset.json")
    _describe(listing, report, patch_um, min_per_class)
    return report, listing


def _list(folder: Path, report: FolderReport) -> Listing | None:
    csv_path = folder if folder.is_file() else folder / "labels.csv"
    if folder.is_file() and folder.suffix.lower() != ".csv":
        report.block(folder, "is a file but not a .csv", "Pass the folder, or a CSV with path,label[,group][,split]")
        return None
    if csv_path.is_file():
        return _list_csv(csv_path, report)
    found = {SPLIT_ALIASES.get(p.name, p.name): p for p in folder.iterdir() if p.is_dir()}
    if found and set(found) <= set(SPLITS):
        listing = Listing(folder, "split subfolders")
        for split, split_dir in sorted(found.items()):
            _list_classes(split_dir, listing, split, report)
    else:
        listing = Listing(folder, "class subfolders")
        _list_classes(folder, listing, "", report)
    names = sorted({p.parent.name for p in listing.paths})
    classes = ({n: int(n) for n in names} if all(n.isdigit() for n in names)
               else {n: i for i, n in enumerate(names)})
    listing.classes = classes
    listing.labels = [classes[p.parent.name] for p in listing.paths]
    listing.groups = [str(p.relative_to(folder)) for p in listing.paths]
    report.warn(folder, "no group ids (patient / slide / image): each patch is its own group, so patches of "
                "one slide may sit in train and test", "Use labels.csv with a group column")
    return listing


def _list_classes(parent: Path, listing: Listing, split: str, report: FolderReport) -> None:
    entries = list(parent.iterdir())   # one listing: a folder on a network share is slow to list
    for class_dir in sorted(p for p in entries if p.is_dir()):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            report.warn(class_dir, "holds no .png/.jpg/.tif images; ignored", "Remove it or add its patches")
        listing.paths += files
        listing.splits += [split] * len(files)
    stray = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if stray:
        report.warn(stray[0], f"{len(stray)} image(s) outside any class folder are ignored",
                    f"Move them into {parent}/<class>/")


def _list_csv(csv_path: Path, report: FolderReport) -> Listing | None:
    listing = Listing(csv_path.parent, f"CSV {csv_path.name}")
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        report.block(csv_path, f"cannot read the CSV ({exc})", "Save it as UTF-8 CSV")
        return None
    missing = {"path", "label"} - set(columns)
    if missing:
        report.block(csv_path, f"has no column(s) {sorted(missing)} (found {columns})",
                     "The header must be path,label[,group][,split]")
        return None
    has_group, has_split = "group" in columns, "split" in columns
    for line, row in enumerate(rows, start=2):
        image = Path(row["path"]) if Path(row["path"]).is_absolute() else csv_path.parent / row["path"]
        try:
            label = int(row["label"])
        except ValueError:
            report.block(csv_path, f"line {line}: label {row['label']!r} is not an integer",
                         "Labels are 0..N-1 (0 = negative, 1 = positive)")
            continue
        split = SPLIT_ALIASES.get(row.get("split", ""), row.get("split", "")) if has_split else ""
        if has_split and split not in SPLITS:
            report.block(csv_path, f"line {line}: split {row.get('split')!r} is not train, valid or test",
                         "Use train / valid / test, or drop the split column to split by group")
            continue
        if not image.is_file():
            report.block(image, f"listed on line {line} of {csv_path.name} but does not exist",
                         "Restore the file or remove its line")
            continue
        listing.paths.append(image)
        listing.labels.append(label)
        listing.groups.append((row.get("group") or str(row["path"])) if has_group else str(row["path"]))
        listing.splits.append(split)
    listing.classes = {str(v): v for v in sorted(set(listing.labels))}
    if not has_group:
        report.warn(csv_path, "no group column: each patch is its own group, so patches of one slide may sit "
                    "in train and test", "Add a group column (patient / slide / image id)")
    return listing


def _check_labels(listing: Listing, report: FolderReport) -> None:
    values = sorted(set(listing.labels))
    where = listing.folder
    if len(values) < 2:
        report.block(where, f"one class only (label {values[0]}, {len(listing.labels)} patches)",
                     "Add patches of the other class")
    elif values != list(range(len(values))):
        report.block(where, f"labels {values} are not 0..{len(values) - 1}",
                     "Number the classes 0..N-1 (folder names or the label column)")
    elif len(values) > N_CLASSES:
        report.block(where, f"{len(values)} classes; the notebooks score binary AUC (two classes)",
                     "Merge the classes into 0 (negative) and 1 (positive)")


def _assign_splits(listing: Listing, report: FolderReport, fractions, seed: int) -> None:
    given = set(listing.splits) - {""}
    if "" in listing.splits and given:
        report.block(listing.folder, "some patches have a split and some do not", "Give every row a split")
        return
    if given:
        seen: dict[str, tuple[str, Path]] = {}
        clashes = 0
        for path, group, split in zip(listing.paths, listing.groups, listing.splits):
            first = seen.setdefault(group, (split, path))
            if first[0] != split:
                clashes += 1
                if clashes <= 5:
                    report.block(path, f"group {group!r} is in {split} and in {first[0]} (e.g. {first[1]})",
                                 "Put all patches of a patient / slide in one split")
        if "train" not in given:
            report.block(listing.folder, f"splits {sorted(given)} without train", "Add a train split")
        for missing, other in (("valid", "test"), ("test", "valid")):
            if missing not in given and other in given:
                listing.splits = [other if s == other else s for s in listing.splits]
                listing.notes.append(f"no {missing} split: the {other} split is also the {missing} split")
        return
    names = sorted(set(listing.groups))
    key = {g: f"img{i}" for i, g in enumerate(names)}   # image_split sorts names by a number after 3 chars
    labels = np.asarray(listing.labels)
    per_group = {key[g]: labels[[i for i, x in enumerate(listing.groups) if x == g]] for g in names}
    try:
        assignment = image_split(list(per_group), per_group, fractions=tuple(fractions), seed=seed)
    except ValueError:
        report.block(listing.folder, f"{len(names)} group(s), fewer than the notebooks need: no split into train / "
                     "valid / test gives both classes in each", "Add patches of more patients / slides of each class")
        return
    listing.splits = [assignment[key[g]] for g in listing.groups]
    listing.notes.append(f"split by group into train / valid / test ({list(fractions)}, seed {seed})")


def _check_images(listing: Listing, report: FolderReport, decode: bool) -> None:
    for path in listing.paths:
        head = header(path)
        problem = head if isinstance(head, str) else (decodes(path) if decode else None)
        if problem:
            report.block(path, problem, "Re-export or delete this file (and its CSV line)")
            listing.sizes.append(None)
            listing.modes.append(None)
        else:
            listing.sizes.append(head[0])
            listing.modes.append(head[1])
    sizes = Counter(s for s in listing.sizes if s)
    if len(sizes) > 1:
        (w, h), n = sizes.most_common(1)[0]
        odd = next(p for p, s in zip(listing.paths, listing.sizes) if s and s != (w, h))
        report.warn(odd, f"patches differ in size ({len(sizes)} sizes; {n} of {sum(sizes.values())} are {w}x{h}); "
                    f"all are resized to {w}x{h}", "Export the patches at one size to avoid rescaling")
    for mode, n in Counter(m for m in listing.modes if m and m != "RGB").items():
        example = next(p for p, m in zip(listing.paths, listing.modes) if m == mode)
        how = "alpha composited on white" if "A" in mode else "converted"
        report.warn(example, f"{n} patch(es) in mode {mode} (not RGB); {how} to RGB on load",
                    "Export RGB images to be sure of the colours")


def _describe(listing: Listing, report: FolderReport, patch_um: float, min_per_class: int) -> None:
    report.found.append(f"layout: {listing.layout}; {len(listing.paths)} patches")
    report.found.append("classes: " + ", ".join(f"{name} -> label {v}" for name, v in listing.classes.items()))
    labels = np.asarray(listing.labels)
    counts_ok = report.ok   # per-class counts mean something only when the labels and splits do
    for split in SPLITS if any(listing.splits) else ():
        idx = listing.index(split)
        counts = {int(c): int((labels[idx] == c).sum()) for c in sorted(set(listing.labels))}
        report.found.append(f"{split}: {len(idx)} patches, per class {counts}, "
                            f"{len({listing.groups[i] for i in idx})} group(s)")
        if counts_ok and any(n < min_per_class for n in counts.values()):
            report.block(listing.folder, f"split {split} has {counts} patches per class, fewer than the "
                         f"{min_per_class} of each class the notebooks need", "Add patches or change the split")
    sizes = Counter(f"{w}x{h}" for w, h in (s for s in listing.sizes if s))
    report.found.append(f"image sizes: {dict(sizes.most_common(5))}; modes: {dict(Counter(listing.modes))}")
    if listing.mpp:
        common = Counter(s for s in listing.sizes if s).most_common(1)
        side = min(common[0][0]) if common else 0
        crop = f"{patch_um:g} um = {window_px(patch_um, listing.mpp)} px (centre crop)" if patch_um else "used whole"
        report.found.append(f"mpp {listing.mpp:g} um/px: patches cover {side * listing.mpp:.0f} um; {crop}")
    else:
        report.found.append("mpp unknown (no mpp= and no dataset.json): patches are used whole, their physical "
                            "size unstated")
    report.found += listing.notes


def load_patch_folder(path, *, mpp: float | None = None, patch_um: float | None = 50.0, size: int | None = None,
                      limits: dict | None = None, seed: int = 0, split_fractions=(0.6, 0.2, 0.2),
                      split_seed: int = 0, splits=SPLITS) -> tuple[dict[str, PatchSet], dict]:
    """The folder's train / valid / test PatchSets (``data_kind="user"``) and how they were made.

    Runs :func:`check_patches` first (stops with its message); ``limits[split]`` caps a split
    (class-balanced draw with ``seed``); only the patches of ``splits`` that are used are decoded.
    """
    report, listing = check_patches(path, decode=False, mpp=mpp, patch_um=patch_um,
                                    split_fractions=split_fractions, split_seed=split_seed)
    report.raise_or_warn()
    common = Counter(listing.sizes).most_common(1)[0][0]
    side = min(common)
    if listing.mpp and patch_um:   # patch_um None: the patches whole
        side = min(side, window_px(patch_um, listing.mpp))
    spec = PREFIX + str(listing.folder)
    out = {}
    for split in splits:
        idx = listing.index(SPLIT_ALIASES.get(split, split))
        labels = np.asarray(listing.labels, np.int64)[idx]
        idx = idx[balanced_subset(labels, (limits or {}).get(split), seed)]
        images = np.zeros((len(idx), side, side, 3), np.uint8)
        for j, i in enumerate(idx):
            img = read_rgb(listing.paths[i])
            if (img.shape[1], img.shape[0]) != common:
                img = _resize(img, common)
            images[j] = _centre(img, side)
        out[split] = PatchSet(resize_images(images, size), np.asarray(listing.labels, np.int64)[idx],
                              np.asarray(listing.groups)[idx], [str(listing.paths[i]) for i in idx], spec,
                              "user", split, list(listing.notes))
    described = {"folder": str(listing.folder), "layout": listing.layout, "classes": listing.classes,
                 "mpp": listing.mpp, "window_px": side,
                 "notes": list(listing.notes), "warnings": [str(p) for p in report.warnings]}
    if listing.mpp:   # the patches' physical side is known only with mpp
        described["window_um"] = patch_um or side * listing.mpp
    else:
        described["notes"].append("mpp unknown (no mpp= and no dataset.json): patches used whole, their side in "
                                  "microns unstated")
    return out, described


def _resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BILINEAR))


def _centre(img: np.ndarray, side: int) -> np.ndarray:
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    return img[top:top + side, left:left + side]
